"""Person scores (EAP/MAP/ML/WLE) and plausible values.

mirt fscores agreement is in test_calibrate_mirt.py; here: exact identities,
fast-path vs direct computation, invariants (hypothesis) and plausible values on
simulated data with a latent regression.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualmon.scoring.calibration import Calibration, calibrate, latent_log_weights
from qualmon.scoring.models import simulate
from qualmon.scoring.persons import ScoringError, plausible_values, score


def bank(rng, J=20, poly=0):
    t = pd.DataFrame(
        {"model": "2PL", "a": rng.lognormal(0, 0.3, J), "b": rng.normal(0, 1, J)}, index=[f"i{j:02d}" for j in range(J)]
    )
    if poly:
        b = np.sort(rng.normal(0, 1, (poly, 3)), axis=1)
        p = pd.DataFrame({"model": "GPCM", "a": rng.lognormal(0, 0.2, poly), "b1": b[:, 0], "b2": b[:, 1], "b3": b[:, 2]},
                         index=[f"p{j}" for j in range(poly)])
        t = pd.concat([t, p])
    return t


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(2024)
    tab = bank(rng, 16, poly=3)
    th = rng.normal(size=2500)
    X = simulate(tab, th, rng)
    X.iloc[::4, :5] = np.nan  # a second booklet
    X.iloc[7] = np.nan  # one student without responses
    return tab, th, X, Calibration.from_items(tab)


# ----------------------------------------------------------------------------- fast vs direct
@pytest.mark.parametrize("method", ["EAP", "MAP", "ML", "WLE"])
def test_sufficient_statistic_path_equals_direct_computation(sim, method):
    _, _, X, cal = sim
    a = score(X, cal, method)
    b = score(X, cal, method, exact=True)
    fin = np.isfinite(a["theta"]) & np.isfinite(b["theta"])
    assert (np.isfinite(a["theta"]) == np.isfinite(b["theta"])).all()
    np.testing.assert_allclose(a.loc[fin, "theta"], b.loc[fin, "theta"], atol=1e-7)
    np.testing.assert_allclose(a.loc[fin, "se"], b.loc[fin, "se"], rtol=1e-4)
    assert (a["n_items"] == b["n_items"]).all()


def test_grm_scores_and_missing_rows(sim):
    rng = np.random.default_rng(5)
    tab = pd.DataFrame({"model": "GRM", "a": [1.2, 0.8, 1.5], "b1": [-1, -0.5, 0], "b2": [0.5, 0.4, 1.1]}, index=list("xyz"))
    X = simulate(tab, rng.normal(size=50), rng)
    X.iloc[0] = np.nan
    cal = Calibration.from_items(tab)
    e = score(X, cal)
    assert e["theta"].iloc[0] == pytest.approx(0.0, abs=1e-12) and e["se"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    w = score(X, cal, "WLE")
    assert np.isnan(w["theta"].iloc[0]) and np.isfinite(w["theta"].iloc[1:]).all()


def test_extreme_patterns(sim):
    tab, _, _, cal = sim
    J = len(tab)
    K = np.array([2 if m == "2PL" else 4 for m in tab["model"]])
    pats = pd.DataFrame([np.zeros(J), K - 1, np.where(np.arange(J) % 2 == 0, K - 1, 0)], columns=tab.index)
    ml = score(pats, cal, "ML")
    assert ml["theta"].iloc[0] == -np.inf and ml["theta"].iloc[1] == np.inf and np.isfinite(ml["theta"].iloc[2])
    assert ml["se"].iloc[:2].isna().all()
    wle = score(pats, cal, "WLE")
    assert np.isfinite(wle["theta"]).all() and np.isfinite(wle["se"]).all()
    assert wle["theta"].iloc[0] < wle["theta"].iloc[2] < wle["theta"].iloc[1]
    assert -20 < wle["theta"].iloc[0] and wle["theta"].iloc[1] < 20
    # WLE is less extreme than... nothing: but it is finite where ML is infinite, and
    # MAP with a very flat prior approaches ML for the mixed pattern
    mp = score(pats.iloc[2:], cal, "MAP", prior_var=1e8)
    assert mp["theta"].iloc[0] == pytest.approx(ml["theta"].iloc[2], abs=1e-5)


# ----------------------------------------------------------------------------- identities
@st.composite
def small_bank(draw):
    J = draw(st.integers(3, 6))
    a = draw(st.lists(st.floats(0.3, 2.5), min_size=J, max_size=J))
    b = draw(st.lists(st.floats(-2, 2), min_size=J, max_size=J))
    mu = draw(st.floats(-1, 1))
    var = draw(st.floats(0.3, 2.0))
    return pd.DataFrame({"model": "2PL", "a": a, "b": b}, index=[f"i{j}" for j in range(J)]), mu, var


@settings(max_examples=25, deadline=None)
@given(small_bank())
def test_eaps_average_to_the_prior_mean_and_shrink_its_variance(spec):
    """Over all 2^J patterns weighted by their marginal probabilities (same grid and
    prior), E[EAP] = mu and E[EAP^2 + PSD^2] = mu^2 + sigma^2: the EAPs' variance is
    sigma^2 - E[PSD^2] < sigma^2 (shrinkage toward the prior mean)."""
    tab, mu, var = spec
    cal = Calibration.from_items(tab, mean=mu, variance=var)
    J = len(tab)
    pats = pd.DataFrame(list(itertools.product([0, 1], repeat=J)), columns=tab.index, dtype=float)
    sc = score(pats, cal, "EAP")
    theta = np.linspace(-6, 6, 121)
    lw = latent_log_weights(theta, mu, var)
    pi = np.exp(lw)
    like = np.ones((len(pats), len(theta)))
    for it in tab.index:
        P = cal.models[it].prob(cal.params[it], theta)
        like *= np.where(pats[it].to_numpy()[:, None] == 1, P[:, 1][None, :], P[:, 0][None, :])
    px = like @ pi
    assert px.sum() == pytest.approx(1.0, abs=1e-12)
    m_grid, v_grid = pi @ theta, pi @ theta**2 - (pi @ theta) ** 2
    eap, psd = sc["theta"].to_numpy(), sc["se"].to_numpy()
    assert px @ eap == pytest.approx(m_grid, abs=1e-9)
    assert px @ (eap**2 + psd**2) == pytest.approx(v_grid + m_grid**2, abs=1e-9)
    assert px @ (eap - m_grid) ** 2 < v_grid


@settings(max_examples=20, deadline=None)
@given(small_bank(), st.integers(0, 10_000))
def test_eap_moves_with_the_prior_mean_by_posterior_over_prior_variance(spec, seed):
    """d EAP / d mu = Var(theta | x) / sigma^2 for a normal prior (exact)."""
    tab, mu, var = spec
    rng = np.random.default_rng(seed)
    X = simulate(tab, rng.normal(size=5), rng)
    cal = Calibration.from_items(tab, mean=mu, variance=var)
    h = 1e-4
    up = score(X, cal, prior_mean=mu + h)["theta"].to_numpy()
    dn = score(X, cal, prior_mean=mu - h)["theta"].to_numpy()
    psd = score(X, cal)["se"].to_numpy()
    np.testing.assert_allclose((up - dn) / (2 * h), psd**2 / var, rtol=1e-5, atol=1e-8)
    assert np.all((up - dn) > 0)


@settings(max_examples=25, deadline=None)
@given(small_bank())
def test_wle_finite_and_monotone_in_the_sum_score_for_rasch(spec):
    tab, _, _ = spec
    tab = tab.assign(model="Rasch", a=1.0)
    cal = Calibration.from_items(tab)
    J = len(tab)
    pats = pd.DataFrame([[1.0] * k + [0.0] * (J - k) for k in range(J + 1)], columns=tab.index)
    w = score(pats, cal, "WLE")
    assert np.isfinite(w["theta"]).all() and np.isfinite(w["se"]).all()
    assert np.all(np.diff(w["theta"]) > 0)
    # Rasch: the WLE depends on the pattern only through the sum score
    rev = pats.iloc[:, ::-1].copy()
    rev.columns = tab.index
    np.testing.assert_allclose(score(rev, cal, "WLE")["theta"], w["theta"], atol=1e-7)


# ----------------------------------------------------------------------------- plausible values
@pytest.fixture(scope="module")
def lr_sim():
    rng = np.random.default_rng(77)
    n = 20_000
    girl = rng.integers(0, 2, n)
    locale = rng.choice(["urban", "town", "rural"], n)
    ses = rng.normal(size=n)
    mu = 0.2 * girl + np.select([locale == "urban", locale == "town"], [0.3, 0.1], -0.2) + 0.4 * ses
    th = mu + rng.normal(scale=0.8, size=n)
    tab = bank(rng, 20)
    X = simulate(tab, th, rng)
    bg = pd.DataFrame({"girl": girl, "locale": locale, "ses": ses})
    return tab, th, X, bg


def test_latent_regression_recovers_the_conditioning_model(lr_sim):
    tab, th, X, bg = lr_sim
    cal = Calibration.from_items(tab)
    pv = plausible_values(X, cal, n=5, background=bg, seed=1)
    assert pv.attrs["converged"]
    beta = pv.attrs["beta"]
    n = len(X)
    se_b = 0.8 / np.sqrt(n) * 3  # generous: ~sigma / sqrt(n var(x)), var(x) >= 1/9
    assert beta["girl"] == pytest.approx(0.2, abs=4 * se_b)
    assert beta["ses"] == pytest.approx(0.4, abs=4 * se_b)
    assert beta["locale_urban"] - beta["locale_town"] == pytest.approx(0.2, abs=6 * se_b)
    assert pv.attrs["sigma2"] == pytest.approx(0.64, abs=0.03)


def test_plausible_values_give_unbiased_group_statistics_and_level_shares(lr_sim):
    tab, th, X, bg = lr_sim
    cal = Calibration.from_items(tab)
    pv = plausible_values(X, cal, n=5, background=bg, seed=3)
    eap = score(X, cal)["theta"].to_numpy()
    n = len(th)
    for g in (0, 1):
        m = bg["girl"].to_numpy() == g
        # PV means per group vs the true thetas of the same students: the difference is
        # pure imputation noise, far below the sampling SE of the group mean
        assert pv[m].mean().mean() == pytest.approx(th[m].mean(), abs=3 * th[m].std() / np.sqrt(m.sum()))
    v_pv = pv.var().mean()
    assert v_pv == pytest.approx(th.var(), abs=4 * th.var() * np.sqrt(2 / n))
    assert eap.var() < th.var() - 0.05  # EAPs are shrunk
    cuts = [-1.0, 0.0, 1.0]
    true_sh = np.histogram(th, [-np.inf, *cuts, np.inf])[0] / n
    pv_sh = np.mean([np.histogram(pv[c], [-np.inf, *cuts, np.inf])[0] / n for c in pv.columns], axis=0)
    eap_sh = np.histogram(eap, [-np.inf, *cuts, np.inf])[0] / n
    se = np.sqrt(true_sh * (1 - true_sh) / n)
    assert np.all(np.abs(pv_sh - true_sh) < 3 * se)  # unbiased
    assert np.all(np.abs(eap_sh - true_sh)[[0, 3]] > 3 * se[[0, 3]])  # EAP under-fills both tails (z > 3)


def test_plausible_values_reproducible_and_draw_kinds(lr_sim):
    tab, th, X, bg = lr_sim
    cal = Calibration.from_items(tab)
    Xs, bgs = X.iloc[:3000], bg.iloc[:3000]
    a = plausible_values(Xs, cal, n=3, background=bgs, seed=11)
    b = plausible_values(Xs, cal, n=3, background=bgs, seed=11)
    c = plausible_values(Xs, cal, n=3, background=bgs, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    assert list(a.columns) == ["pv1", "pv2", "pv3"] and a.index.equals(Xs.index)
    nrm = plausible_values(Xs, cal, n=20, background=bgs, seed=4, draw="normal")
    pst = plausible_values(Xs, cal, n=20, background=bgs, seed=4, draw="posterior")
    # both reproduce each student's posterior mean (average over 20 draws)
    sc = score(Xs, cal, prior_mean=0.0)  # different prior; compare draws with each other
    d = (nrm.mean(axis=1) - pst.mean(axis=1)).to_numpy()
    assert abs(d.mean()) < 4 * d.std() / np.sqrt(len(d))
    assert sc.shape[0] == len(Xs)
    # principal components of the background
    pc = plausible_values(Xs, cal, n=2, background=pd.get_dummies(bgs, dtype=float), n_components=0.99, seed=1)
    assert pc.attrs["beta"].index[0] == "(intercept)" and pc.attrs["beta"].index[1] == "PC1"


def test_plausible_values_for_graded_items():
    rng = np.random.default_rng(8)
    tab = pd.DataFrame({"model": "GRM", "a": rng.lognormal(0, 0.2, 8)}, index=[f"g{j}" for j in range(8)])
    b = np.sort(rng.normal(0, 1, (8, 3)), axis=1)
    for k in range(3):
        tab[f"b{k + 1}"] = b[:, k]
    n = 6000
    grp = rng.integers(0, 2, n)
    th = 0.5 * grp + rng.normal(size=n)
    X = simulate(tab, th, rng)
    cal = Calibration.from_items(tab)
    pv = plausible_values(X, cal, n=5, background=pd.DataFrame({"grp": grp}), seed=2)
    diff = pv[grp == 1].mean().mean() - pv[grp == 0].mean().mean()
    assert diff == pytest.approx(th[grp == 1].mean() - th[grp == 0].mean(), abs=0.05)


def test_background_and_input_errors(lr_sim):
    tab, th, X, bg = lr_sim
    cal = Calibration.from_items(tab)
    Xs = X.iloc[:200]
    bad = bg.iloc[:200].copy()
    bad.loc[bad.index[3], "ses"] = np.nan
    with pytest.raises(ScoringError, match="'ses' has missing values"):
        plausible_values(Xs, cal, background=bad)
    col = bg.iloc[:200].assign(ses2=lambda d: 2 * d["ses"])
    with pytest.raises(ScoringError, match="collinear"):
        plausible_values(Xs, cal, background=col)
    with pytest.raises(ScoringError, match="method"):
        score(Xs, cal, method="BLUP")
    wrong = Xs.copy()
    wrong.iloc[0, 0] = 3
    with pytest.raises(ValueError, match=r"item 'i00': values \[3.0\] were not seen"):
        score(wrong, cal)
    with pytest.raises(ValueError, match="not in the calibration"):
        score(Xs.assign(extra=1), cal)
    # items missing from the responses are simply not presented
    part = score(Xs.iloc[:, :10], cal)
    assert (part["n_items"] <= 10).all()


def test_score_uses_the_calibration_coding():
    sc = pd.read_csv("/work/shared/datasets/irt/Science.csv")
    r = calibrate(sc, "GRM", se=None)
    s1 = score(sc, r)
    # the same responses coded 0..3 need a calibration with that coding
    with pytest.raises(ValueError, match="not seen in calibration"):
        score(sc - 1, r)
    assert s1.index.equals(sc.index) and s1["theta"].notna().all()
