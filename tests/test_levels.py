"""Tests for qualmon.scoring.levels: reporting scale, levels, shares, bookmark, accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from qualmon.scoring.levels import (
    DEFAULT_CUTS,
    LEVEL_DTYPE,
    LEVEL_LABELS,
    LevelError,
    ReportingScale,
    assign_levels,
    bookmark_cuts,
    classification_accuracy,
    level_descriptors,
    level_numbers,
    level_shares,
    level_table,
    ordered_item_booklet,
    rp_locations,
)
from qualmon.scoring.models import probabilities

finite = st.floats(-1e4, 1e4, allow_nan=False)


# --------------------------------------------------------------------------
# reporting scale
# --------------------------------------------------------------------------


def test_scale_fit_weighted_moments():
    rng = np.random.default_rng(0)
    th = pd.Series(rng.normal(0.3, 1.4, 5000))
    w = pd.Series(rng.uniform(0.5, 3.0, 5000))
    sc = ReportingScale.fit(th, weights=w, mean=500, sd=100, base_year=2024)
    s = sc.transform(th)
    m = np.average(s, weights=w)
    sd = np.sqrt(np.average((s - m) ** 2, weights=w))
    assert m == pytest.approx(500)
    assert sd == pytest.approx(100)
    assert isinstance(s, pd.Series) and s.index.equals(th.index)
    np.testing.assert_allclose(sc.inverse(s), th)
    assert sc.transform_se(np.array([0.3]))[0] == pytest.approx(0.3 * sc.slope)


def test_scale_pools_plausible_values():
    rng = np.random.default_rng(1)
    pv = pd.DataFrame(rng.normal(0, 1, (400, 5)) + np.arange(5) * 0.1, columns=[f"pv{i}" for i in range(1, 6)])
    sc = ReportingScale.fit(pv)
    means = pv.mean()
    within = pv.var(ddof=0)
    pooled_var = within.mean() + means.var(ddof=0)  # law of total variance over equally weighted PVs
    assert sc.theta_mean == pytest.approx(means.mean())
    assert sc.theta_sd == pytest.approx(np.sqrt(pooled_var))
    out = sc.transform(pv)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(pv.columns)


def test_scale_serialisation():
    sc = ReportingScale.fit(np.linspace(-2, 2, 101), mean=200, sd=50, base_year=2023, label="数学 八年级")
    d = sc.to_dict()
    assert all(isinstance(v, (int, float, str)) for v in d.values())
    assert ReportingScale.from_dict(d) == sc
    assert "Reporting scale" in sc._repr_html_() and sc.summary().shape[0] == 1
    with pytest.raises(LevelError, match="unknown reporting-scale keys"):
        ReportingScale.from_dict({**d, "foo": 1})
    with pytest.raises(LevelError, match="lacks"):
        ReportingScale.from_dict({"slope": 1.0})


def test_scale_errors():
    with pytest.raises(LevelError, match="zero variance"):
        ReportingScale.fit(np.ones(10))
    with pytest.raises(LevelError, match="weights must be finite"):
        ReportingScale.fit(np.arange(3.0), weights=[1, -1, 1])
    with pytest.raises(LevelError, match="slope must be positive"):
        ReportingScale(slope=-1.0, intercept=0.0)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.01, 100), finite, hnp.arrays(float, st.integers(1, 20), elements=finite))
def test_scale_round_trip(slope, intercept, x):
    sc = ReportingScale(slope=slope, intercept=intercept)
    np.testing.assert_allclose(sc.inverse(sc.transform(x)), x, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(sc.inverse_se(sc.transform_se(np.abs(x))), np.abs(x), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------
# levels
# --------------------------------------------------------------------------


def test_labels_and_dtype():
    assert LEVEL_LABELS == ("水平Ⅰ", "水平Ⅱ", "水平Ⅲ", "水平Ⅳ")
    s = pd.Series([399.99, 400.0, 500.0, 599.9, 600.0, np.nan], index=list("abcdef"))
    lv = assign_levels(s)
    assert lv.dtype == LEVEL_DTYPE and lv.cat.ordered
    assert list(lv.cat.categories) == list(LEVEL_LABELS)
    assert lv.iloc[:5].tolist() == ["水平Ⅰ", "水平Ⅱ", "水平Ⅲ", "水平Ⅲ", "水平Ⅳ"]  # a score at a cut is in the higher level
    assert pd.isna(lv.iloc[5])
    assert lv.index.equals(s.index)
    assert lv.iloc[0] < lv.iloc[4]
    assert level_numbers(lv).tolist()[:5] == [1, 2, 3, 3, 4] and pd.isna(level_numbers(lv).iloc[5])
    assert level_descriptors(lv).tolist()[:5] == ["待提高", "中等", "良好", "良好", "优秀"]
    assert level_descriptors(lv, "en").iloc[4] == "excellent"
    assert level_descriptors(lv, "full").iloc[0] == "水平Ⅰ（待提高）"
    t = level_table()
    assert t["descriptor"].tolist() == ["待提高", "中等", "良好", "优秀"]
    assert t.loc["水平Ⅱ", "lower"] == DEFAULT_CUTS[0]
    cat = assign_levels(np.array([1.0, 2.0]), cuts={"水平Ⅱ": 0, "水平Ⅲ": 1.5, "水平Ⅳ": 3})
    assert isinstance(cat, pd.Categorical) and cat.tolist() == ["水平Ⅱ", "水平Ⅲ"]
    pv = assign_levels(pd.DataFrame({"pv1": [350.0, 650.0], "pv2": [450.0, 550.0]}))
    assert (pv.dtypes == LEVEL_DTYPE).all()


def test_bad_cuts():
    for bad in [(1, 2), (3, 2, 4), (1, np.nan, 3), {"水平Ⅱ": 1, "水平Ⅲ": 2}]:
        with pytest.raises(LevelError):
            assign_levels(np.array([1.0]), cuts=bad)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(float, st.integers(2, 50), elements=finite),
       st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3, unique=True))
def test_levels_monotone(x, cuts):
    cuts = sorted(cuts)
    lv = assign_levels(pd.Series(x), cuts)
    order = np.argsort(x, kind="stable")
    codes = lv.cat.codes.to_numpy()[order]
    assert np.all(np.diff(codes) >= 0)


# --------------------------------------------------------------------------
# level shares
# --------------------------------------------------------------------------


def test_shares_point_estimate_and_rubin():
    rng = np.random.default_rng(2)
    n, M = 800, 5
    pv = pd.DataFrame(rng.normal(500, 100, (n, M)))
    w = rng.uniform(0.5, 2, n)
    out = level_shares(pv, weights=w)
    per_pv = np.array([[np.sum(w * (assign_levels(pv[m]) == lab)) / w.sum() for lab in LEVEL_LABELS] for m in range(M)])
    np.testing.assert_allclose(out["share"], per_pv.mean(0))
    np.testing.assert_allclose(out["imputation_var"], per_pv.var(0, ddof=1))
    assert out["se"].isna().all()
    assert out["share"].sum() == pytest.approx(1.0)
    # with replicate weights: Rubin's rules by hand
    R = rng.uniform(0, 2, (n, 8)) * w[:, None]
    f = 0.3
    out2 = level_shares(pv, weights=w, replicate_weights=R, variance_factor=f)
    U = []
    for m in range(M):
        lv = assign_levels(pv[m])
        full = np.array([np.sum(w * (lv == lab)) / w.sum() for lab in LEVEL_LABELS])
        reps = np.array([[np.sum(R[:, r] * (lv == lab)) / R[:, r].sum() for lab in LEVEL_LABELS] for r in range(8)])
        U.append(f * ((reps - full) ** 2).sum(0))
    total = np.mean(U, 0) + (1 + 1 / M) * per_pv.var(0, ddof=1)
    np.testing.assert_allclose(out2["se"], np.sqrt(total))


def test_shares_jackknife_closed_form():
    # one PV, unit weights, delete-one jackknife replicates with factor (n-1)/n:
    # the jackknife variance of a proportion is p(1-p)/(n-1)
    rng = np.random.default_rng(3)
    n = 60
    s = pd.Series(rng.normal(500, 100, n))
    R = np.ones((n, n)) - np.eye(n)
    out = level_shares(s, replicate_weights=R * n / (n - 1), variance_factor=(n - 1) / n)
    p = out["share"].to_numpy()
    np.testing.assert_allclose(out["se"], np.sqrt(p * (1 - p) / (n - 1)))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(float, st.tuples(st.integers(3, 60), st.integers(1, 4)), elements=st.floats(200, 800)),
       st.integers(1, 4))
def test_shares_sum_to_one(x, ngroups):
    n = x.shape[0]
    by = pd.Series(np.arange(n) % ngroups, name="county")
    out = level_shares(pd.DataFrame(x), by=by)
    sums = out["share"].groupby(level="county").sum()
    np.testing.assert_allclose(sums, 1.0)
    assert ((out["share"] >= 0) & (out["share"] <= 1)).all()


def test_shares_errors():
    with pytest.raises(LevelError, match="variance_factor"):
        level_shares(pd.Series([400.0, 500.0]), replicate_weights=np.ones((2, 3)))
    with pytest.raises(LevelError, match="replicate_weights must be"):
        level_shares(pd.Series([400.0, 500.0]), replicate_weights=np.ones((3, 3)), variance_factor=1.0)


# --------------------------------------------------------------------------
# classification accuracy
# --------------------------------------------------------------------------


def test_accuracy_closed_forms():
    cuts = (-1.0, 0.0, 1.0)
    th = np.array([-2.0, -0.5, 0.4, 2.2])
    ca = classification_accuracy(th, np.zeros(4), cuts)
    assert ca.accuracy == pytest.approx(1.0)
    assert ca.consistency == pytest.approx(1.0)
    assert "Rudner" in ca._repr_html_() and list(ca.summary().index) == [*LEVEL_LABELS, "overall"]
    tiny = classification_accuracy(th, np.full(4, 1e-6), cuts)
    assert tiny.accuracy == pytest.approx(1.0)
    # one examinee exactly at a cut, far from the others: half the mass on each side
    at = classification_accuracy(np.array([0.0]), np.array([0.05]), (-5.0, 0.0, 5.0))
    assert at.accuracy == pytest.approx(0.5)
    assert at.consistency == pytest.approx(0.5)  # 0.5^2 + 0.5^2
    c = at.cuts.loc["水平Ⅲ"]
    assert c["false_positive"] == pytest.approx(0.5) and c["false_negative"] == pytest.approx(0.0)
    assert at.matrix.to_numpy().sum() == pytest.approx(1.0)
    # Rudner's probabilities by hand for one examinee
    one = classification_accuracy(np.array([0.3]), np.array([0.5]), cuts)
    p = np.diff(stats.norm.cdf((np.array([-np.inf, -1, 0, 1, np.inf]) - 0.3) / 0.5))
    assert one.accuracy == pytest.approx(p[2])
    assert one.consistency == pytest.approx(np.sum(p**2))


def test_accuracy_matches_simulated_agreement():
    # With a flat ability distribution (uniform, far wider than the cuts) the posterior of theta given
    # theta_hat ~ N(theta, se^2) is N(theta_hat, se^2), so Rudner's expected accuracy equals the expected
    # agreement rate; the difference of the two sums has variance sum_i p_i (1 - p_i).
    rng = np.random.default_rng(5)
    n = 20000
    theta = rng.uniform(-5, 5, n)
    se = rng.uniform(0.2, 0.6, n)
    th_hat = theta + se * rng.normal(size=n)
    cuts = (-1.0, 0.0, 1.2)
    ca = classification_accuracy(th_hat, se, cuts)
    true_lv = np.searchsorted(cuts, theta, side="right")
    obs_lv = np.searchsorted(cuts, th_hat, side="right")
    empirical = np.mean(true_lv == obs_lv)
    edges = np.array([-np.inf, *cuts, np.inf])
    p_i = np.diff(stats.norm.cdf((edges[None, :] - th_hat[:, None]) / se[:, None]), axis=1)[np.arange(n), obs_lv]
    mc_se = np.sqrt(np.sum(p_i * (1 - p_i))) / n
    assert abs(ca.accuracy - empirical) < 4 * mc_se


def test_accuracy_weights_and_errors():
    th = np.array([-0.2, 0.1, 0.7])
    se = np.array([0.3, 0.3, 0.3])
    a = classification_accuracy(th, se, (-1, 0, 1), weights=[2, 1, 1])
    b = classification_accuracy(np.r_[th[0], th], np.r_[se[0], se], (-1, 0, 1))
    pd.testing.assert_frame_equal(a.levels.drop(columns="n"), b.levels.drop(columns="n"))
    with pytest.raises(LevelError, match="se finite and >= 0"):
        classification_accuracy(th, np.array([0.3, -1, 0.3]), (-1, 0, 1))


# --------------------------------------------------------------------------
# bookmark
# --------------------------------------------------------------------------


@pytest.fixture
def bank():
    return pd.DataFrame(
        {"model": ["2PL", "3PL", "Rasch", "GRM", "GPCM", "2PL"],
         "a": [1.2, 1.5, 1.0, 1.1, 0.8, 0.9],
         "d": [0.5, -0.3, 1.0, np.nan, np.nan, -1.2],
         "c": [0.0, 0.2, 0.0, 0.0, 0.0, 0.0],
         "d1": [np.nan, np.nan, np.nan, 1.5, 1.0, np.nan],
         "d2": [np.nan, np.nan, np.nan, -0.5, 0.6, np.nan]},
        index=["m1", "m2", "m3", "g1", "p1", "m4"])


def test_rp_locations(bank):
    loc = rp_locations(bank, rp=0.67)
    assert len(loc) == 4 + 2 * 2
    for r in loc.itertuples():
        P = probabilities(bank.loc[[r.item]], np.array([r.theta_rp]))[r.item][0]
        assert P[r.category:].sum() == pytest.approx(0.67, abs=1e-8)
    # closed form for a 2PL
    row = loc[(loc["item"] == "m1")].iloc[0]
    assert row["theta_rp"] == pytest.approx((np.log(0.67 / 0.33) - 0.5) / 1.2)
    # a 3PL with c >= rp has no RP location
    hi_c = bank.loc[["m2"]].assign(c=0.7)
    assert np.isnan(rp_locations(hi_c)["theta_rp"].iloc[0])


def test_booklet_and_bookmark_cuts(bank):
    sc = ReportingScale(slope=100.0, intercept=500.0)
    book = ordered_item_booklet(bank, scale=sc)
    assert list(book.index) == list(range(1, len(book) + 1))
    assert book["theta_rp"].is_monotonic_increasing
    np.testing.assert_allclose(book["scale_rp"], 500 + 100 * book["theta_rp"])
    marks = {"水平Ⅱ": [3, 3, 4], "水平Ⅲ": [5, 6, 5], "水平Ⅳ": [8, 8, 7]}
    cuts = bookmark_cuts(book, marks, scale=sc)
    loc = book["theta_rp"].to_numpy()
    assert cuts.loc["水平Ⅱ", "theta_cut"] == pytest.approx(np.median(loc[[1, 1, 2]]))  # page p -> page p-1
    assert cuts.loc["水平Ⅳ", "scale_cut"] == pytest.approx(500 + 100 * np.median(loc[[6, 6, 5]]))
    mid = bookmark_cuts(book, {"水平Ⅱ": 3, "水平Ⅲ": 5, "水平Ⅳ": 8}, rule="midpoint")
    assert mid.loc["水平Ⅲ", "theta_cut"] == pytest.approx((loc[3] + loc[4]) / 2)
    levels = assign_levels(np.array([loc[2], loc[5]]), cuts["theta_cut"].to_numpy())
    assert levels.tolist() == ["水平Ⅱ", "水平Ⅲ"]
    with pytest.raises(LevelError, match="integers in 1..8"):
        bookmark_cuts(book, {"水平Ⅱ": 0, "水平Ⅲ": 5, "水平Ⅳ": 9})
    with pytest.raises(LevelError, match="not increasing"):
        bookmark_cuts(book, {"水平Ⅱ": 6, "水平Ⅲ": 5, "水平Ⅳ": 8})
