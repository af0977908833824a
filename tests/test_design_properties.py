"""Invariants (hypothesis) and recovery of known truth by simulation for qualmon.design."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualmon.design import Design, ReplicateDesign


@st.composite
def stratified_cluster_samples(draw, min_psu=2, max_psu=5, pairs=False, min_rows=1):
    """A stratified two-stage sample: strata, PSUs (2..max per stratum), rows per PSU."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    H = draw(st.integers(1, 6))
    rows = []
    for h in range(H):
        n_psu = 2 if pairs else draw(st.integers(min_psu, max_psu))
        for p in range(n_psu):
            m = int(rng.integers(min_rows, 6))
            rows.append(pd.DataFrame({
                "h": h, "psu": p, "y": rng.normal(10 + h, 3, m) + rng.normal(0, 2),
                "x": rng.uniform(1, 5, m), "w": rng.uniform(1, 10) * rng.uniform(0.8, 1.2, m),
                "g": rng.choice(["a", "b", "c"], m),
            }))
    return pd.concat(rows, ignore_index=True)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# a domain can be absent from a replicate (its only PSU deleted or out of the
# half-sample); that replicate is dropped with a warning, as R's svrVar does
pytestmark = pytest.mark.filterwarnings("ignore:.*replicate.*NaN results")


@SETTINGS
@given(df=stratified_cluster_samples())
def test_jkn_total_equals_taylor(df):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    a = d.total(["y", "x"])["se"].to_numpy()
    b = d.replicate("JKn").total(["y", "x"])["se"].to_numpy()
    np.testing.assert_allclose(b, a, rtol=1e-9)


@SETTINGS
@given(df=stratified_cluster_samples(pairs=True), rho=st.sampled_from([0.0, 0.5]))
def test_brr_fay_total_equals_taylor_with_two_psus(df, rho):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    r = d.replicate("Fay", rho=rho) if rho else d.replicate("BRR")
    np.testing.assert_allclose(r.total("y")["se"], d.total("y")["se"], rtol=1e-9)
    full = d.replicate("JK2", variant="full")
    np.testing.assert_allclose(full.mean("y")["se"], d.replicate("JKn").mean("y")["se"], rtol=1e-9)


@SETTINGS
@given(df=stratified_cluster_samples(), c=st.floats(0.01, 1000))
def test_weight_scale_invariance(df, c):
    d1 = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    d2 = Design(df.assign(w=df.w * c), weights="w", strata="h", clusters="psu", nest=True)
    for f in (lambda d: d.mean("y", by="g"), lambda d: d.ratio("y", "x"), lambda d: d.regress("y ~ x"),
              lambda d: d.replicate("JKn").mean("y")):
        a, b = f(d1), f(d2)
        np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-7)  # regressions on nearly equal x are ill-conditioned
        # atol: where the true SE is 0 (zero-variance domains, a regression fitted exactly by
        # two points) both sides are roundoff of the estimate's magnitude
        np.testing.assert_allclose(a["se"], b["se"], rtol=1e-7, atol=1e-6 * (1 + np.abs(a["estimate"]).max()))
    np.testing.assert_allclose(d2.total("y")["estimate"], c * d1.total("y")["estimate"], rtol=1e-9)
    np.testing.assert_allclose(d2.total("y")["se"], c * d1.total("y")["se"], rtol=1e-7)


@SETTINGS
@given(df=stratified_cluster_samples())
def test_domains_add_up_and_equal_subsets(df):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    by = d.total("y", by="g")
    assert by["estimate"].sum() == pytest.approx(d.total("y")["estimate"].iloc[0], rel=1e-10)
    # the domain mean is the ratio of domain totals; the by= estimate equals a subset estimate
    m = d.mean("y", by="g").set_index("g")
    for g in m.index:
        sub = d.subset(df.g == g).mean("y")
        assert sub["estimate"].iloc[0] == pytest.approx(m.loc[g, "estimate"], rel=1e-12)
        assert sub["se"].iloc[0] == pytest.approx(m.loc[g, "se"], rel=1e-9, abs=1e-12)
        ind = (df.g == g).astype(float)
        r = Design(df.assign(yg=df.y * ind, ind=ind), weights="w", strata="h", clusters="psu",
                   nest=True).ratio("yg", "ind")
        assert r["se"].iloc[0] == pytest.approx(m.loc[g, "se"], rel=1e-9, abs=1e-12)
    rd = d.replicate("JKn")
    mr = rd.mean("y", by="g").set_index("g")
    for g in mr.index:
        assert rd.subset(df.g == g).mean("y")["se"].iloc[0] == pytest.approx(mr.loc[g, "se"], rel=1e-9, abs=1e-12)


@SETTINGS
@given(df=stratified_cluster_samples(min_rows=2))
def test_calibration_reproduces_totals(df):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    tx = 1000.0 * (df.x.min() + df.x.max()) / 2  # inside the range of x: raking is feasible
    pop = {"(Intercept)": 1000.0, "x": tx}
    for calfun in ("linear", "raking"):
        g = d.calibrate("~x", pop, calfun=calfun)
        assert g.total("x")["estimate"].iloc[0] == pytest.approx(tx, rel=1e-6)
        assert g.weights.sum() == pytest.approx(1000.0, rel=1e-6)
        # the calibration variable's total has (near) zero variance afterwards
        assert g.total("x")["se"].iloc[0] < 1e-6 * tx
    r = d.replicate("JKn").calibrate("~x", pop)
    W = r.weight_matrix
    np.testing.assert_allclose(W.sum(axis=0), 1000.0, rtol=1e-9)
    np.testing.assert_allclose(df.x.to_numpy() @ W, tx, rtol=1e-9)


@SETTINGS
@given(df=stratified_cluster_samples(), q=st.lists(st.floats(0.01, 0.99), min_size=2, max_size=5))
def test_quantiles_monotone_and_in_range(df, q):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True, lonely_psu="adjust")
    qs = np.sort(np.asarray(q))
    est = d.quantile("y", qs)["estimate"].to_numpy()
    assert np.all(np.diff(est) >= 0)
    assert est.min() >= df.y.min() and est.max() <= df.y.max()
    assert np.isin(est, df.y).all()  # qrule "math" returns an observed value


@SETTINGS
@given(df=stratified_cluster_samples(pairs=True))
def test_replicate_design_from_columns_round_trip(df):
    d = Design(df, weights="w", strata="h", clusters="psu", nest=True)
    r = d.replicate("BRR")
    cols = pd.DataFrame(r.replicate_weights, columns=[f"r{i}" for i in range(r.n_replicates)])
    rd = ReplicateDesign(pd.concat([df, cols], axis=1), "w", list(cols.columns), "BRR")
    np.testing.assert_allclose(rd.mean("y", by="g")["se"], r.mean("y", by="g")["se"], rtol=1e-12)
    assert rd.weight_matrix.flags.c_contiguous


# ------------------------------------------------------- recovery by simulation
def _population(rng, H=6, psu_per_h=40):
    rows = []
    for h in range(H):
        for p in range(psu_per_h):
            M = int(rng.integers(20, 60))
            mu = 500 + 20 * h + rng.normal(0, 30)
            rows.append(pd.DataFrame({"h": h, "psu": p, "y": rng.normal(mu, 80, M), "M": M}))
    return pd.concat(rows, ignore_index=True)


def test_two_stage_variance_recovers_sampling_variance():
    """Stratified two-stage sampling from a known population, repeated S times.

    The estimator is design-unbiased; its Monte Carlo variance must agree with
    the average estimated (Taylor, full multistage) variance within the Monte
    Carlo error of both, and the 95% intervals must cover the true mean at a
    rate consistent with 0.95 (binomial SE).  Tolerances are derived from these
    Monte Carlo standard errors (4 SE), not tuned.
    """
    rng = np.random.default_rng(2024)
    pop = _population(rng)
    truth = pop.y.mean()
    H, Npsu, n_psu, m = 6, 40, 4, 8
    S = 250
    est = np.empty(S)
    var = np.empty(S)
    cover = np.empty(S, dtype=bool)
    groups = {k: g for k, g in pop.groupby(["h", "psu"])}
    for s in range(S):
        parts = []
        for h in range(H):
            for p in rng.choice(Npsu, n_psu, replace=False):
                g = groups[(h, p)]
                take = g.iloc[rng.choice(len(g), m, replace=False)]
                parts.append(take.assign(N1=Npsu, N2=len(g)))
        smp = pd.concat(parts, ignore_index=True)
        d = Design(smp, strata="h", clusters=["psu", "y"], fpc=["N1", "N2"], nest=True)
        r = d.mean("y").iloc[0]
        est[s], var[s] = r.estimate, r.se**2
        cover[s] = r.ci_low <= truth <= r.ci_high
    # the ratio (mean) estimator is nearly unbiased: |bias| < 4 MC SE
    mc_se = est.std(ddof=1) / np.sqrt(S)
    assert abs(est.mean() - truth) < 4 * mc_se
    # E[v_hat] = Var(est) (to O(1/n)); MC SE of the empirical variance ~ var*sqrt(2/(S-1))
    emp = est.var(ddof=1)
    tol = 4 * np.sqrt(emp**2 * 2 / (S - 1) + var.var(ddof=1) / S)
    assert abs(var.mean() - emp) < tol
    assert abs(cover.mean() - 0.95) < 4 * np.sqrt(0.95 * 0.05 / S)


def test_replicate_variance_recovers_sampling_variance():
    """Same check for Fay-BRR replicates on a design with two PSUs per stratum."""
    rng = np.random.default_rng(7)
    H, Npsu = 20, 30
    psu_means = rng.normal(0, 1, (H, Npsu)) + np.arange(H)[:, None] * 0.2
    S = 250
    est, var = np.empty(S), np.empty(S)
    for s in range(S):
        parts = []
        for h in range(H):
            for j, p in enumerate(rng.choice(Npsu, 2, replace=False)):
                parts.append(pd.DataFrame({"h": h, "psu": j, "y": psu_means[h, p] + rng.normal(0, 1, 5)}))
        smp = pd.concat(parts, ignore_index=True).assign(w=Npsu / 2 * 10)
        d = Design(smp, weights="w", strata="h", clusters="psu", nest=True)
        r = d.replicate("Fay", rho=0.5).mean("y").iloc[0]
        est[s], var[s] = r.estimate, r.se**2
    emp = est.var(ddof=1)
    tol = 4 * np.sqrt(emp**2 * 2 / (S - 1) + var.var(ddof=1) / S)
    # with-replacement variance overstates by about 1/(1-f) = 1/(1-2/30); allow for it
    assert abs(var.mean() * (1 - 2 / Npsu) - emp) < tol
