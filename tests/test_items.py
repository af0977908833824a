"""Tests for qualmon.scoring.items: classical item analysis and DIF.

Published reference values:
* mirt's ``itemstats()`` output in its pkgdown reference pages (repository
  philchalmers/mirt, ``reference/LSAT7.md``, ``reference/LSAT6.md``,
  ``reference/itemstats.md`` at commit d19e1ab / 05e0e95), printed to 3 decimals.
* R's ``mantelhaen.test`` examples, ``tests/Examples/stats-Ex.Rout.save`` in
  wch/r-source (Agresti's penicillin/rabbits data and UCBAdmissions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from qualmon.scoring.items import (
    DIFError,
    ItemAnalysisError,
    _ets_dich,
    _ets_poly,
    cronbach_alpha,
    dif,
    dif_by,
    item_analysis,
    mantel_haenszel,
)

DATA = "/work/shared/datasets/irt/"
R3 = 5.1e-4  # published values are rounded to 3 decimals


@pytest.fixture(scope="module")
def lsat7():
    return pd.read_csv(DATA + "LSAT7.csv")


@pytest.fixture(scope="module")
def sat12():
    return pd.read_csv(DATA + "SAT12.csv"), pd.read_csv(DATA + "SAT12_scored.csv")


# --------------------------------------------------------------------------
# published values
# --------------------------------------------------------------------------


def test_lsat7_matches_mirt_itemstats(lsat7):
    r = item_analysis(lsat7)
    rel = r.reliability.loc["all"]
    # mirt reference/itemstats.md: itemstats(LSAT7full) $overall
    assert rel["n"] == 1000
    assert rel["mean_total"] == pytest.approx(3.707, abs=R3)
    assert rel["sd_total"] == pytest.approx(1.199, abs=R3)
    assert rel["alpha"] == pytest.approx(0.453, abs=R3)
    assert rel["sem"] == pytest.approx(0.886, abs=R3)
    it = r.items
    # $itemstats mean, sd, cor_if_rm, alpha_if_rm
    np.testing.assert_allclose(it["mean"], [0.828, 0.658, 0.772, 0.606, 0.843], atol=R3)
    np.testing.assert_allclose(it["sd"], [0.378, 0.475, 0.420, 0.489, 0.364], atol=R3)
    np.testing.assert_allclose(it["item_rest_r"], [0.246, 0.247, 0.313, 0.223, 0.175], atol=R3)
    np.testing.assert_allclose(it["alpha_if_deleted"], [0.396, 0.394, 0.345, 0.415, 0.438], atol=R3)
    # mirt reference/LSAT7.md (older itemstats output with total.r)
    np.testing.assert_allclose(it["item_total_r"], [0.530, 0.600, 0.611, 0.592, 0.461], atol=R3)
    assert np.allclose(it["p_value"], it["mean"])  # max score 1
    assert list(r.summary().index) == list(lsat7.columns)
    assert "Item analysis" in r._repr_html_() and "alpha = 0.453" in r._repr_html_()


def test_lsat6_matches_mirt_and_ltm():
    X = pd.read_csv(DATA + "LSAT6.csv")
    r = item_analysis(X)
    # mirt reference/LSAT6.md: alpha 0.295, SEM.alpha 0.869; ltm descript(LSAT) prints 0.2950
    # (KDE/rkward tests/item_response_theory/RKTestStandard.Cronbach_alpha.rkout: alpha 0.295)
    assert r.alpha == pytest.approx(0.2950, abs=5.1e-5)
    assert r.reliability.loc["all", "sem"] == pytest.approx(0.869, abs=R3)
    np.testing.assert_allclose(r.items["item_rest_r"], [0.113, 0.153, 0.173, 0.144, 0.122], atol=R3)
    np.testing.assert_allclose(r.items["alpha_if_deleted"], [0.275, 0.238, 0.217, 0.246, 0.266], atol=R3)
    np.testing.assert_allclose(r.items["item_total_r"], [0.362, 0.567, 0.618, 0.534, 0.435], atol=R3)


def test_deayala_matches_mirt():
    X = pd.read_csv(DATA + "deAyala.csv")
    r = item_analysis(X)
    # mirt reference/deAyala.md itemstats(dat): alpha 0.608, SEM.alpha 0.898
    assert r.alpha == pytest.approx(0.608, abs=R3)
    assert r.reliability.loc["all", "sem"] == pytest.approx(0.898, abs=R3)
    np.testing.assert_allclose(r.items["item_rest_r"], [0.246, 0.439, 0.416, 0.405, 0.312], atol=R3)
    np.testing.assert_allclose(r.items["alpha_if_deleted"], [0.605, 0.510, 0.523, 0.529, 0.581], atol=R3)


def test_science_polytomous_matches_mirt():
    X = pd.read_csv(DATA + "Science.csv") - 1  # categories 1..4 -> scores 0..3
    r = item_analysis(X, max_scores=3)
    # mirt reference/itemstats.md: itemstats(Science)
    assert r.alpha == pytest.approx(0.598, abs=R3)
    assert r.reliability.loc["all", "sem"] == pytest.approx(1.27, abs=5.1e-3)
    np.testing.assert_allclose(r.items["mean"] + 1, [3.120, 2.722, 2.990, 2.837], atol=R3)
    np.testing.assert_allclose(r.items["item_rest_r"], [0.352, 0.332, 0.488, 0.363], atol=R3)
    np.testing.assert_allclose(r.items["alpha_if_deleted"], [0.552, 0.567, 0.437, 0.541], atol=R3)
    np.testing.assert_allclose(r.items["p_value"], r.items["mean"] / 3)


SAT12_COR_IF_RM = [0.300, 0.464, 0.371, 0.235, 0.340, 0.351, 0.289, 0.233, 0.127, 0.383, 0.156, 0.076, 0.358,
                   0.333, 0.325, 0.278, 0.202, 0.508, 0.314, 0.318, 0.136, 0.238, 0.253, 0.346, 0.297, 0.489,
                   0.367, 0.383, 0.324, 0.159, 0.419, 0.037]
SAT12_ALPHA_IF_RM = [0.793, 0.785, 0.789, 0.796, 0.791, 0.791, 0.793, 0.795, 0.798, 0.789, 0.797, 0.803, 0.790,
                     0.791, 0.792, 0.794, 0.796, 0.783, 0.792, 0.792, 0.798, 0.795, 0.795, 0.791, 0.793, 0.783,
                     0.791, 0.789, 0.791, 0.799, 0.788, 0.802]
# $total.score_means column "1": mean total score of students answering the item correctly
SAT12_KEY_MEAN_TOTAL = [21.25294, 20.57478, 21.81548, 20.30396, 19.87634, 22.98958, 19.23904, 21.28926,
                        18.54614, 20.95257, 18.32034, 19.23695, 19.78338, 19.48387, 19.14082, 20.40726,
                        18.43599, 22.15166, 20.03951, 18.92557, 18.49362, 18.57932, 20.72872, 19.50343,
                        20.69778, 21.27899, 19.06190, 20.41509, 21.06373, 19.65152, 19.28400, 19.46392]
SAT12_KEY = [1, 4, 5, 2, 3, 1, 2, 1, 3, 1, 2, 4, 2, 1, 5, 3, 4, 4, 1, 4, 3, 3, 4, 1, 3, 5, 1, 3, 1, 5, 4, 5]


def test_sat12_scored_and_distractors_match_mirt(sat12):
    raw, scored = sat12
    options = raw.where(raw != 8)  # 8 = omitted
    status = pd.DataFrame(np.where(raw == 8, "omitted", "scored"), index=raw.index, columns=raw.columns)
    key = dict(zip(raw.columns, SAT12_KEY))
    r = item_analysis(scored, options=options, key=key, status=status)
    # mirt reference/itemstats.md: itemstats(dat, ts.tables=TRUE)
    assert r.alpha == pytest.approx(0.798, abs=R3)
    assert r.reliability.loc["all", "sem"] == pytest.approx(2.272, abs=R3)
    assert r.reliability.loc["all", "mean_total"] == pytest.approx(18.202, abs=R3)
    np.testing.assert_allclose(r.items["item_rest_r"], SAT12_COR_IF_RM, atol=R3)
    np.testing.assert_allclose(r.items["alpha_if_deleted"], SAT12_ALPHA_IF_RM, atol=R3)
    d = r.distractors
    keyrows = d[d["is_key"]].set_index("item").reindex(raw.columns)
    np.testing.assert_allclose(keyrows["mean_total"], SAT12_KEY_MEAN_TOTAL, atol=5.1e-6)
    # omit rate = share of code 8, mirt $proportions column "8" (itemstats(SAT12, use_ts=FALSE))
    omit8 = {"Item.1": 0.002, "Item.3": 0.013, "Item.4": 0.008, "Item.12": 0.008, "Item.30": 0.010,
             "Item.32": 0.012, "Item.9": 0.0}
    for item, v in omit8.items():
        assert r.items.loc[item, "omit_rate"] == pytest.approx(v, abs=R3)
    # option counts = 600 x published option proportions (Item.1: 0.283 0.203 0.267 0.232 0.013)
    it1 = d[d["item"] == "Item.1"].set_index("option")["n"]
    np.testing.assert_allclose(it1.to_numpy(), 600 * np.array([0.283, 0.203, 0.267, 0.232, 0.013]), atol=0.31)


def test_scores_derived_from_options_equal_scored_file(sat12):
    raw, scored = sat12
    options = raw.where(raw != 8)
    key = dict(zip(raw.columns, SAT12_KEY))
    r1 = item_analysis(None, options=options.fillna(-1), key=key)  # omitted = a wrong "option" -1
    r2 = item_analysis(scored)
    np.testing.assert_allclose(r1.items["p_value"], r2.items["p_value"])
    assert r1.alpha == pytest.approx(r2.alpha)


# --------------------------------------------------------------------------
# closed forms and simulation
# --------------------------------------------------------------------------


def test_alpha_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    # identical items: alpha = 1
    same = pd.DataFrame({"a": x, "b": x, "c": x})
    assert cronbach_alpha(same)["alpha"].iloc[0] == pytest.approx(1.0)
    # definition k/(k-1)(1 - sum var / var total) with sample variances
    X = pd.DataFrame(rng.integers(0, 4, size=(50, 4)).astype(float), columns=list("abcd"))
    C = np.cov(X.to_numpy(), rowvar=False)
    expected = 4 / 3 * (1 - np.trace(C) / C.sum())
    res = cronbach_alpha(X)
    assert res["alpha"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert res["sd_total"].iloc[0] == pytest.approx(X.sum(axis=1).std(ddof=1), rel=1e-12)
    # integer weights give the point estimates of duplicated rows
    w = rng.integers(1, 4, size=50)
    dup = X.loc[np.repeat(X.index, w)].reset_index(drop=True)
    assert cronbach_alpha(X, weights=w)["alpha"].iloc[0] == pytest.approx(cronbach_alpha(dup)["alpha"].iloc[0])


def test_alpha_se_and_feldt_ci_calibrated():
    # compound symmetry: alpha = k rho / (1 + (k - 1) rho); normal data, n = 200, 400 replications
    rng = np.random.default_rng(7)
    k, rho, n, R = 6, 0.3, 200, 400
    Sigma = np.full((k, k), rho) + (1 - rho) * np.eye(k)
    true = k * rho / (1 + (k - 1) * rho)
    L = np.linalg.cholesky(Sigma)
    est, se, cover = [], [], []
    for _ in range(R):
        X = pd.DataFrame(rng.normal(size=(n, k)) @ L.T)
        row = cronbach_alpha(X).iloc[0]
        est.append(row["alpha"])
        se.append(row["alpha_se"])
        cover.append(row["ci_low"] <= true <= row["ci_high"])
    est = np.array(est)
    # bias within 4 Monte Carlo SEs
    assert abs(est.mean() - true) < 4 * est.std(ddof=1) / np.sqrt(R)
    # asymptotic SE vs Monte Carlo SD: relative SE of an SD from R draws is 1/sqrt(2(R-1))
    assert abs(np.mean(se) / est.std(ddof=1) - 1) < 4 / np.sqrt(2 * (R - 1))
    # Feldt 95% CI coverage within 4 binomial SEs
    assert abs(np.mean(cover) - 0.95) < 4 * np.sqrt(0.95 * 0.05 / R)


def test_polyserial_recovers_latent_correlation():
    rng = np.random.default_rng(11)
    rho, n, R = 0.6, 1500, 40
    ests = []
    for _ in range(R):
        z1 = rng.normal(size=n)
        z2 = rho * z1 + np.sqrt(1 - rho**2) * rng.normal(size=n)
        item = np.digitize(z2, [-0.8, 0.1, 1.0]).astype(float)  # 4 ordered categories
        # the rest score of "poly" is the other column: the latent z1 itself (shifted to be >= 0)
        X = pd.DataFrame({"poly": item, "x": z1 + 10.0})
        ests.append(item_analysis(X).items.loc["poly", "polyserial"])
    ests = np.array(ests)
    assert abs(ests.mean() - rho) < 4 * ests.std(ddof=1) / np.sqrt(R)


def _booklet_data(rng, n=3000):
    J = 12
    a = rng.uniform(0.8, 2.0, J)
    b = rng.normal(0, 1, J)
    theta = rng.normal(size=n)
    X = (rng.random((n, J)) < 1 / (1 + np.exp(-a * (theta[:, None] - b)))).astype(float)
    blocks = [range(0, 4), range(4, 8), range(8, 12)]
    book = rng.integers(0, 3, n)
    mask = np.zeros((n, J), bool)
    for bk, (b1, b2) in enumerate([(0, 1), (1, 2), (2, 0)]):
        rows = book == bk
        for blk in (b1, b2):
            mask[np.ix_(rows, list(blocks[blk]))] = True
    X[~mask] = np.nan
    return pd.DataFrame(X, columns=[f"I{j:02d}" for j in range(J)]), pd.Series(book)


def test_matrix_sampled_design():
    rng = np.random.default_rng(3)
    X, book = _booklet_data(rng)
    r = item_analysis(X)
    assert r.rest_score == "proportion"
    assert len(r.reliability) == 3
    # explicit booklets give the same booklet alphas
    r2 = item_analysis(X, booklets=book)
    np.testing.assert_allclose(np.sort(r.reliability["alpha"]), np.sort(r2.reliability["alpha"]))
    # each booklet alpha equals cronbach_alpha on that booklet's items
    for bk in range(3):
        sub = X[book.to_numpy() == bk].dropna(axis=1, how="all")
        assert r2.reliability.loc[bk, "alpha"] == pytest.approx(cronbach_alpha(sub)["alpha"].iloc[0])
    # p-values over the students who saw the item
    np.testing.assert_allclose(r.items["p_value"], X.mean())
    # item alpha-if-deleted is the n-weighted mean over booklets
    bi = r2.booklet_items
    for item in ["I00", "I05"]:
        rows = bi[bi["item"] == item]
        assert r2.items.loc[item, "alpha_if_deleted"] == pytest.approx(np.average(rows["alpha_if_deleted"], weights=rows["n"]))
    # rest-score correlation with the proportion score on the other presented items, by hand for one item
    j = "I00"
    P = X.notna()
    S = X.fillna(0).sum(axis=1)
    M = P.sum(axis=1)
    rest = (S - X[j].fillna(0)) / (M - P[j])
    seen = P[j]
    assert r.items.loc[j, "item_rest_r"] == pytest.approx(np.corrcoef(X.loc[seen, j], rest[seen])[0, 1])
    assert (r.items["item_rest_r"] > 0.2).all()


def test_status_rates_and_omitted_scoring():
    X = pd.DataFrame({"a": [1, 0, np.nan, 1, np.nan, 1], "b": [1, 1, 0, np.nan, np.nan, 0], "c": [0, 1, 1, 1, 0, 1]},
                     dtype=float)
    status = pd.DataFrame({
        "a": ["scored", "scored", "omitted", "scored", "not_reached", "scored"],
        "b": ["scored", "scored", "scored", "omitted", "not_presented", "scored"],
        "c": ["scored"] * 6,
    })
    r = item_analysis(X, status=status)
    assert r.items.loc["a", "omit_rate"] == pytest.approx(1 / 6)
    assert r.items.loc["a", "not_reached_rate"] == pytest.approx(1 / 6)
    assert r.items.loc["b", "omit_rate"] == pytest.approx(1 / 5)  # one cell not presented
    # omitted scored 0, not reached left out: item a has 5 scores: 1,0,0,1,1
    assert r.items.loc["a", "n"] == 5
    assert r.items.loc["a", "p_value"] == pytest.approx(3 / 5)
    r2 = item_analysis(X, status=status, not_reached_as_wrong=True)
    assert r2.items.loc["a", "p_value"] == pytest.approx(3 / 6)


def test_flags():
    rng = np.random.default_rng(5)
    n = 2000
    theta = rng.normal(size=n)
    b = np.linspace(-1, 1, 8)
    X = pd.DataFrame((rng.random((n, 8)) < 1 / (1 + np.exp(-1.7 * (theta[:, None] - b)))).astype(float),
                     columns=[f"I{j}" for j in range(8)])
    X["rev"] = (rng.random(n) < 1 / (1 + np.exp(1.5 * theta))).astype(float)  # negatively discriminating
    X["easy"] = (rng.random(n) < 0.99).astype(float)
    # options for I0 (key "A"): distractor "C" is chosen by high scorers among those who miss
    opts = pd.DataFrame({"I0": np.where(X["I0"] == 1, "A", np.where(theta > 0.5, "C", "B"))})
    opts.loc[(X["I0"] == 0).to_numpy() & (theta > 1.5), "I0"] = "C"
    r = item_analysis(X, options=opts, key={"I0": "A"})
    flags = r.items["flags"]
    assert {"r_negative", "r_low", "alpha_up"} <= set(flags["rev"].split(","))
    assert "p_high" in flags["easy"].split(",")
    assert "distractor" in flags["I0"].split(",")  # "C" has a positive point-biserial
    assert all(flags[f"I{j}"] == "" for j in range(1, 8))
    d = r.distractors
    assert d.loc[(d["item"] == "I0") & (d["option"] == "A"), "pbis_rest"].iloc[0] > 0
    assert d.groupby("item")["proportion"].sum().iloc[0] == pytest.approx(1.0)
    # thresholds are configurable
    r2 = item_analysis(X, flag_rules={"p_high": 0.999})
    assert "p_high" not in r2.items.loc["easy", "flags"]


def test_item_analysis_errors():
    X = pd.DataFrame({"a": [1, 0, 1], "b": ["1", "x", "0"]})
    with pytest.raises(ItemAnalysisError, match=r"column 'b'.*rows 1"):
        item_analysis(X)
    with pytest.raises(ItemAnalysisError, match=r"column .a.*>= 0.*rows 2"):
        item_analysis(pd.DataFrame({"a": [1.0, 0.0, -1.0]}))
    with pytest.raises(ItemAnalysisError, match=r"'a' has scores above its max_score 1.*rows 0"):
        item_analysis(pd.DataFrame({"a": [2.0, 0.0, 1.0], "b": [1.0, 0.0, 1.0]}), max_scores={"a": 1, "b": 1})
    with pytest.raises(ItemAnalysisError, match="weights must be finite"):
        item_analysis(pd.DataFrame({"a": [1.0, 0.0], "b": [0.0, 1.0]}), weights=[1.0, -1.0])
    with pytest.raises(ItemAnalysisError, match="status column 'a'"):
        item_analysis(pd.DataFrame({"a": [1.0, 0.0]}), status=pd.DataFrame({"a": ["scored", "skipped"]}))
    with pytest.raises(ItemAnalysisError, match="without key"):
        item_analysis(pd.DataFrame({"a": [1.0, 0.0]}), options=pd.DataFrame({"a": ["A", "B"]}))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(5, 40), st.integers(2, 6)), elements=st.integers(0, 3)),
       st.floats(0.1, 10))
def test_item_analysis_invariants(arr, scale):
    X = pd.DataFrame(arr.astype(float), columns=[f"i{j}" for j in range(arr.shape[1])])
    r = item_analysis(X, max_scores=3)
    p = r.items["p_value"]
    assert ((p >= 0) & (p <= 1)).all()
    a = r.reliability["alpha"].iloc[0]
    assert np.isnan(a) or a <= 1 + 1e-12
    lo, hi = r.reliability[["ci_low", "ci_high"]].iloc[0]
    assert np.isnan(a) or (lo <= a <= hi)
    # a constant weight changes no statistic (flags compare values near 0 and are left out)
    rw = item_analysis(X, max_scores=3, weights=np.full(len(X), scale))
    num = r.items.columns.drop("flags")
    pd.testing.assert_frame_equal(r.items[num], rw.items[num], check_exact=False, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------
# DIF: published 2 x 2 x K results
# --------------------------------------------------------------------------

RABBITS = np.array([[[0, 6], [0, 5]], [[3, 3], [0, 6]], [[6, 0], [2, 4]], [[5, 1], [6, 0]], [[2, 0], [5, 0]]])
# UCBAdmissions[Admit, Gender, Dept]: rows Admitted/Rejected, columns Male/Female
UCB = np.array([[[512, 89], [313, 19]], [[353, 17], [207, 8]], [[120, 202], [205, 391]],
                [[138, 131], [279, 244]], [[53, 94], [138, 299]], [[22, 24], [351, 317]]])
Z975 = stats.norm.ppf(0.975)


def test_mantel_haenszel_matches_r():
    # r-source tests/Examples/stats-Ex.Rout.save, mantelhaen.test(Rabbits):
    # X-squared = 3.9286, p = 0.04747, 95% CI 1.026713 47.725133, common odds ratio 7
    r = mantel_haenszel(RABBITS)
    assert r["alpha_mh"] == pytest.approx(7.0)
    assert r["mh_chi2"] == pytest.approx(3.9286, abs=5e-5)
    assert r["mh_p"] == pytest.approx(0.04747, abs=5e-6)
    ci = np.exp(r["ln_alpha"] + np.array([-1, 1]) * Z975 * r["ln_alpha_se"])  # R's CI uses the RBG variance
    np.testing.assert_allclose(ci, [1.026713, 47.725133], rtol=1e-6)
    # mantelhaen.test(UCBAdmissions): X-squared = 1.4269, p = 0.2323, CI 0.7719074 1.0603298, OR 0.9046968
    u = mantel_haenszel(UCB)
    assert u["alpha_mh"] == pytest.approx(0.9046968, abs=5e-8)
    assert u["mh_chi2"] == pytest.approx(1.4269, abs=5e-5)
    assert u["mh_p"] == pytest.approx(0.2323, abs=5e-5)
    ci = np.exp(u["ln_alpha"] + np.array([-1, 1]) * Z975 * u["ln_alpha_se"])
    np.testing.assert_allclose(ci, [0.7719074, 1.0603298], rtol=1e-6)
    assert u["mh_d"] == pytest.approx(-2.35 * np.log(0.9046968), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.just(2), st.just(2)), elements=st.integers(0, 40)))
def test_mantel_haenszel_agrees_with_statsmodels(tables):
    # peer: statsmodels StratifiedTable (pooled odds ratio, RBG SE of its log, MH test with correction)
    from statsmodels.stats.contingency_tables import StratifiedTable

    t = tables[tables.sum(axis=(1, 2)) > 1].astype(float)
    A, B, C, D = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    T = t.sum(axis=(1, 2))
    if t.shape[0] == 0 or np.sum(A * D / T) == 0 or np.sum(B * C / T) == 0:
        return
    st_ = StratifiedTable(np.moveaxis(t, 0, 2))
    r = mantel_haenszel(t)
    assert r["alpha_mh"] == pytest.approx(st_.oddsratio_pooled, rel=1e-10)
    assert r["ln_alpha_se"] == pytest.approx(st_.logodds_pooled_se, rel=1e-10)
    test = st_.test_null_odds(correction=True)
    # statsmodels subtracts 0.5 even when |sum A - sum E(A)| < 0.5; R (and qualmon) then skip the correction
    if np.isfinite(test.statistic) and abs(r["observed_a"] - r["expected_a"]) >= 0.5:
        assert r["mh_chi2"] == pytest.approx(test.statistic, rel=1e-10, abs=1e-12)


def _students_from_tables(tables):
    """Expand K x 2 x 2 (group x right/wrong) tables into one row per student."""
    rows = []
    for k, t in enumerate(tables):
        for g, lab in enumerate(["R", "F"]):
            rows += [(k, lab, 1.0)] * int(t[g, 0]) + [(k, lab, 0.0)] * int(t[g, 1])
    return pd.DataFrame(rows, columns=["stratum", "group", "y"])


def test_dif_with_user_matching_reproduces_tables():
    df = _students_from_tables(UCB)
    res = dif(df[["y"]], df["group"], focal="F", reference="R", matching=df["stratum"])
    row = res.items.loc["y"]
    ref = mantel_haenszel(UCB)
    for k in ("alpha_mh", "mh_chi2", "ln_alpha_se", "mh_d", "mh_d_se"):
        assert row[k] == pytest.approx(ref[k], rel=1e-12)


def test_mh_textbook_formulas_by_hand():
    t = np.array([[[10, 5], [8, 9]], [[20, 6], [15, 12]], [[4, 9], [2, 11]]], float)
    A, B, C, D = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    T = A + B + C + D
    alpha = np.sum(A * D / T) / np.sum(B * C / T)
    EA = (A + B) * (A + C) / T
    VA = (A + B) * (C + D) * (A + C) * (B + D) / (T**2 * (T - 1))
    chi2 = (abs(A.sum() - EA.sum()) - 0.5) ** 2 / VA.sum()
    R_, S_ = A * D / T, B * C / T
    P_, Q_ = (A + D) / T, (B + C) / T
    var = (np.sum(P_ * R_) / (2 * R_.sum() ** 2) + np.sum(P_ * S_ + Q_ * R_) / (2 * R_.sum() * S_.sum())
           + np.sum(Q_ * S_) / (2 * S_.sum() ** 2))
    r = mantel_haenszel(t)
    assert r["alpha_mh"] == pytest.approx(alpha)
    assert r["mh_chi2"] == pytest.approx(chi2)
    assert r["ln_alpha_se"] == pytest.approx(np.sqrt(var))
    assert r["mh_d"] == pytest.approx(-2.35 * np.log(alpha))
    # without continuity correction Mantel's (1963) statistic for a 0/1 item is the MH chi-square
    df = _students_from_tables(t)
    row = dif(df[["y"]], df["group"], "F", "R", matching=df["stratum"]).items.loc["y"]
    assert row["mantel_chi2"] == pytest.approx(mantel_haenszel(t, correct=False)["mh_chi2"])
    # the Liu-Agresti cumulative odds ratio reduces to alpha_MH for two categories
    assert row["liu_agresti"] == pytest.approx(alpha)


def test_ets_rules():
    a = 0.05
    assert _ets_dich(-0.9, 0.1, 1e-6, a) == "A"  # |D| < 1
    assert _ets_dich(-1.6, 0.5, 0.2, a) == "A"  # not significant
    assert _ets_dich(-1.6, 0.5, 1e-4, a) == "B"  # (1.6 - 1)/0.5 = 1.2 < 1.645
    assert _ets_dich(1.6, 0.3, 1e-4, a) == "C"  # (1.6 - 1)/0.3 = 2.0 > 1.645
    assert _ets_dich(1.2, 0.05, 1e-4, a) == "B"
    assert _ets_poly(0.17, 1e-4, a) == "AA"
    assert _ets_poly(0.20, 1e-4, a) == "BB"
    assert _ets_poly(-0.26, 1e-4, a) == "CC"
    assert _ets_poly(0.5, 0.2, a) == "AA"


# --------------------------------------------------------------------------
# DIF: simulations
# --------------------------------------------------------------------------


def _rasch(rng, theta, b):
    return (rng.random((theta.size, b.size)) < 1 / (1 + np.exp(-(theta[:, None] - b)))).astype(float)


def test_mh_recovers_rasch_uniform_dif_and_purification():
    # Under the Rasch model, matching on the total score (studied item included), the conditional
    # odds of success given the score are eps_j gamma_(s-1)^(-j) / gamma_s^(-j) (elementary symmetric
    # functions of the other items), so the reference/focal odds ratio is exp(b_F - b_R) in every
    # stratum (Holland & Thayer 1988): alpha_MH -> exp(delta), MH D-DIF -> -2.35 delta, whatever the
    # groups' ability distributions. Other items are exact only when the DIF item leaves the matching
    # score (purification).
    rng = np.random.default_rng(2024)
    J, n, delta = 20, 6000, 0.8
    b = np.linspace(-1.5, 1.5, J)
    bF = b.copy()
    bF[5] += delta
    XR = _rasch(rng, rng.normal(0.0, 1.0, n), b)
    XF = _rasch(rng, rng.normal(-0.5, 1.0, n), bF)
    X = pd.DataFrame(np.vstack([XR, XF]), columns=[f"I{j:02d}" for j in range(J)])
    g = np.array(["M"] * n + ["F"] * n)
    res = dif(X, g, focal="F", reference="M", purify=True)
    it = res.items
    expected = -2.35 * delta
    assert abs(it.loc["I05", "mh_d"] - expected) < 4 * it.loc["I05", "mh_d_se"]
    assert it.loc["I05", "ets_class"] == "C"
    assert res.purified_out == ["I05"]
    others = it.drop(index="I05")
    assert (others["ets_class"] == "A").all()
    z2 = (others["mh_d"] / others["mh_d_se"]) ** 2
    assert z2.sum() < stats.chi2.ppf(0.999, len(others))


def test_dif_free_2pl_without_impact_is_class_a():
    rng = np.random.default_rng(99)
    J, n = 15, 2500
    a = rng.uniform(0.6, 2.0, J)
    b = rng.normal(0, 1, J)
    theta = rng.normal(size=2 * n)
    X = pd.DataFrame((rng.random((2 * n, J)) < 1 / (1 + np.exp(-a * (theta[:, None] - b)))).astype(float))
    g = pd.Series(np.repeat(["urban", "rural"], n))
    it = dif(X, g, focal="rural", reference="urban").items
    assert (it["ets_class"] == "A").all()
    assert ((it["mh_d"] / it["mh_d_se"]) ** 2).sum() < stats.chi2.ppf(0.999, J)


def test_mh_and_smd_standard_errors_calibrated():
    # Direct stratified simulation with known truth: 5 strata; 300 independent dichotomous "items"
    # with common odds ratio 1.8 (reference vs focal), and 300 polytomous items (0..3) with a known
    # SMD. z-scores (estimate - truth)/SE should be ~ N(0, 1).
    rng = np.random.default_rng(17)
    K, nk, m = 5, 120, 300
    strata = np.repeat(np.arange(K), 2 * nk)
    grp = np.tile(np.repeat(["R", "F"], nk), K)
    isF = grp == "F"
    base_logit = np.linspace(-1.5, 1.5, K)[strata]
    lor = np.log(1.8)
    pR = 1 / (1 + np.exp(-base_logit))
    pF = 1 / (1 + np.exp(-(base_logit - lor)))
    p = np.where(isF, pF, pR)
    Y = (rng.random((strata.size, m)) < p[:, None]).astype(float)
    # polytomous: binomial(3, q) with q shifted by 0.08 in the focal group
    q = np.where(isF, 0.5 + 0.05 * np.linspace(-2, 2, K)[strata] - 0.08, 0.5 + 0.05 * np.linspace(-2, 2, K)[strata])
    Z = rng.binomial(3, q[:, None], size=(strata.size, m)).astype(float)
    X = pd.DataFrame(np.hstack([Y, Z]), columns=[f"d{j}" for j in range(m)] + [f"p{j}" for j in range(m)])
    it = dif(X, grp, "F", "R", matching=strata).items
    d = it.iloc[:m]
    zd = (d["ln_alpha"] - lor) / d["ln_alpha_se"]
    pp = it.iloc[m:]
    true_smd = -3 * 0.08  # equal focal shares per stratum: SMD = mean over strata of 3 (qF - qR)
    zs = (pp["smd"] - true_smd) / pp["smd_se"]
    for z in (zd, zs):
        assert abs(z.mean()) < 4 / np.sqrt(m)
        assert abs(z.std(ddof=1) - 1) < 4 / np.sqrt(2 * (m - 1))
    assert (pp["kind"] == "polytomous").all() and (d["kind"] == "dichotomous").all()
    assert set(pp["ets_class"]) <= {"AA", "BB", "CC"}


def test_weighted_mh():
    df = _students_from_tables(RABBITS * 3)
    base = dif(df[["y"]], df["group"], "F", "R", matching=df["stratum"]).items.loc["y"]
    const = dif(df[["y"]], df["group"], "F", "R", matching=df["stratum"], weights=np.full(len(df), 7.5)).items.loc["y"]
    pd.testing.assert_series_equal(base, const)
    # integer weights = duplicated rows for the odds ratio, D and SMD
    rng = np.random.default_rng(4)
    w = rng.integers(1, 4, len(df))
    dup = df.loc[np.repeat(df.index, w)].reset_index(drop=True)
    a = dif(df[["y"]], df["group"], "F", "R", matching=df["stratum"], weights=w).items.loc["y"]
    b = dif(dup[["y"]], dup["group"], "F", "R", matching=dup["stratum"]).items.loc["y"]
    for k in ("alpha_mh", "mh_d", "smd", "liu_agresti"):
        assert a[k] == pytest.approx(b[k])


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.int64, (4, 2, 2), elements=st.integers(1, 30)))
def test_swapping_groups_inverts_alpha(tables):
    df = _students_from_tables(tables)
    X = df[["y"]]
    r1 = dif(X, df["group"], "F", "R", matching=df["stratum"]).items.loc["y"]
    r2 = dif(X, df["group"], "R", "F", matching=df["stratum"]).items.loc["y"]
    assert r2["alpha_mh"] == pytest.approx(1 / r1["alpha_mh"])
    assert r2["mh_d"] == pytest.approx(-r1["mh_d"], abs=1e-9)
    assert r2["mh_chi2"] == pytest.approx(r1["mh_chi2"])
    assert r2["mh_d_se"] == pytest.approx(r1["mh_d_se"])
    assert r1["ets_class"] == r2["ets_class"]


def test_dif_matrix_sampled_and_dif_by():
    # booklets with missing-by-design items: the matching score is the proportion of the attainable
    # score on the items presented, in 20 quantile strata; a planted uniform DIF item is still found
    rng = np.random.default_rng(8)
    J, n = 18, 8000
    b = np.linspace(-1.5, 1.5, J)
    g = np.repeat(["M", "F"], n // 2)
    loc = rng.choice(["urban", "rural"], n)
    bb = np.where((g == "F")[:, None], b + np.eye(J)[4] * 0.9, b)
    theta = rng.normal(size=n)
    X = (rng.random((n, J)) < 1 / (1 + np.exp(-(theta[:, None] - bb)))).astype(float)
    book = rng.integers(0, 3, n)
    blocks = np.array_split(np.arange(J), 3)
    for bk in range(3):
        X[np.ix_(book == bk, blocks[bk])] = np.nan
    X = pd.DataFrame(X, columns=[f"I{j:02d}" for j in range(J)])
    res = dif(X, g, "F", "M")
    assert res.matching == "proportion of attainable score"
    assert "DIF" in res._repr_html_() and list(res.summary().index) == list(X.columns)
    assert res.items.loc["I04", "mh_d"] < -1.0 and res.items.loc["I04", "ets_class"] in ("B", "C")
    both = dif_by(X, {"gender": (g, "F", "M"), "locale": (loc, "rural", "urban")})
    assert list(both.index.get_level_values(0).unique()) == ["gender", "locale"]
    assert both.loc[("gender", "I04"), "ets_class"] == res.items.loc["I04", "ets_class"]
    assert (both.loc["locale", "ets_class"] == "A").all()  # no DIF by locale was built in


def test_dif_errors():
    X = pd.DataFrame({"a": [1.0, 0.0, 1.0, 0.0], "b": [1.0, 1.0, 0.0, 0.0]})
    g = pd.Series(["M", "F", "M", "F"])
    with pytest.raises(DIFError, match="no student has group in focal"):
        dif(X, g, focal="X")
    with pytest.raises(DIFError, match="overlap"):
        dif(X, g, focal="F", reference=["F", "M"])
    with pytest.raises(DIFError, match="purify=True needs"):
        dif(X, g, focal="F", matching=X.sum(axis=1), purify=True)
    with pytest.raises(DIFError, match="group has 3 values"):
        dif(X, ["M", "F", "M"], focal="F")
    with pytest.raises(DIFError, match="items not in responses"):
        dif(X, g, focal="F", items=["zz"])
