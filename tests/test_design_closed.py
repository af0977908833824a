"""Closed-form checks of qualmon.design: textbook formulas written out by hand.

References: Cochran, *Sampling Techniques* (3rd ed., 1977) eq. 2.12 (SRS mean),
5.6 (stratified), 11.24 (two-stage, unequal cluster sizes); Levy & Lemeshow,
*Sampling of Populations* s.12.2 (the scd ambulance data and its BRR
half-samples, as in survey's man/scd.Rd); Rubin (1987) for plausible values;
Woodruff (1952) for quantile intervals.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qualmon.design import Design, DesignError, ReplicateDesign, combine_plausible

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "survey_api"


@pytest.fixture(scope="module")
def scd():
    path = DATA / "scd.csv"
    if not path.exists():  # pragma: no cover
        pytest.skip("scd.csv not available")
    return pd.read_csv(path)


def test_srs_mean_se():
    rng = np.random.default_rng(1)
    n, N = 40, 500
    y = rng.normal(50, 10, n)
    df = pd.DataFrame({"y": y, "N": N})
    d = Design(df, fpc="N")  # weights N/n implied by the fpc, as R
    r = d.mean("y")
    assert r["estimate"].iloc[0] == pytest.approx(y.mean(), rel=1e-14)
    assert r["se"].iloc[0] == pytest.approx(np.sqrt((1 - n / N) * y.var(ddof=1) / n), rel=1e-12)
    # deff of an SRS against SRS without replacement is exactly 1
    assert r["deff"].iloc[0] == pytest.approx(1.0, rel=1e-12)
    t = d.total("y")
    assert t["se"].iloc[0] == pytest.approx(N * np.sqrt((1 - n / N) * y.var(ddof=1) / n), rel=1e-12)
    z = stats.norm.ppf(0.975)
    assert r["ci_low"].iloc[0] == pytest.approx(y.mean() - z * r["se"].iloc[0])


def test_stratified_total():
    rng = np.random.default_rng(2)
    parts, v = [], 0.0
    for h, (n, N) in enumerate([(5, 50), (8, 400), (3, 9)]):
        y = rng.gamma(3, 2, n)
        parts.append(pd.DataFrame({"h": h, "y": y, "N": N}))
        v += N**2 * (1 - n / N) * y.var(ddof=1) / n
    df = pd.concat(parts, ignore_index=True)
    d = Design(df, strata="h", fpc="N")
    assert d.total("y")["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)


def test_two_stage_cochran():
    """Two-stage without replacement (Cochran 11.24):
    V(Y_hat) = N^2 (1-f1) s_b^2 / n + (N/n) sum_i M_i^2 (1-f2i) s_2i^2 / m_i."""
    rng = np.random.default_rng(3)
    N, n = 30, 5
    M = np.array([12, 20, 7, 15, 9])
    m = np.array([4, 5, 3, 6, 2])
    rows = []
    for i in range(n):
        y = rng.normal(20 + i, 4, m[i])
        rows.append(pd.DataFrame({"psu": i, "ssu": np.arange(m[i]), "y": y, "N1": N, "N2": M[i]}))
    df = pd.concat(rows, ignore_index=True)
    d = Design(df, clusters=["psu", "ssu"], fpc=["N1", "N2"])
    Yi = np.array([M[i] * df.y[df.psu == i].mean() for i in range(n)])
    s2 = np.array([df.y[df.psu == i].var(ddof=1) for i in range(n)])
    v = N**2 * (1 - n / N) * Yi.var(ddof=1) / n + (N / n) * np.sum(M**2 * (1 - m / M) * s2 / m)
    r = d.total("y")
    assert r["estimate"].iloc[0] == pytest.approx(N / n * Yi.sum(), rel=1e-12)
    assert r["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)
    # without the fpc: ultimate-cluster (with replacement) variance N^2 s_b^2 / n
    dw = Design(df, clusters=["psu", "ssu"], weights=d.weights)
    assert dw.total("y")["se"].iloc[0] == pytest.approx(np.sqrt(N**2 * Yi.var(ddof=1) / n), rel=1e-12)


def test_certainty_psu_contributes_only_second_stage():
    """A PSU with N = n at stage 1 (certainty) adds no first-stage variance; its
    second stage counts in full (multiplier n/N = 1)."""
    df = pd.DataFrame({"h": ["c", "c", "c", "c", "s", "s", "s", "s"], "psu": [1, 1, 2, 2, 3, 3, 4, 4],
                       "ssu": [1, 2, 1, 2, 1, 2, 1, 2], "y": [3.0, 5, 4, 9, 2, 7, 1, 6],
                       "N1": [2, 2, 2, 2, 10, 10, 10, 10], "N2": [6, 6, 4, 4, 5, 5, 8, 8]})
    d = Design(df, strata="h", clusters=["psu", "ssu"], fpc=["N1", "N2"], nest=True)
    w = d.weights
    # stage 1: only stratum s, PSU totals of w*y
    z = pd.Series(w * df.y).groupby(df.psu).sum()
    v1 = (1 - 2 / 10) * 2 / 1 * ((z.loc[[3, 4]] - z.loc[[3, 4]].mean()) ** 2).sum()
    v2 = 0.0
    for p, g in df.groupby("psu"):
        mult = 1.0 if g.h.iloc[0] == "c" else 2 / 10  # n/N of the stage above
        M = g.N2.iloc[0]
        zz = (M / 2) * g.y  # second-stage weights relative to the PSU
        v2 += mult * (1 - 2 / M) * 2 * ((zz - zz.mean()) ** 2).sum() * (w[g.index[0]] / (M / 2)) ** 2
    assert d.total("y")["se"].iloc[0] ** 2 == pytest.approx(v1 + v2, rel=1e-12)


# ------------------------------------------------------------------- scd data
def test_scd_ratio_taylor(scd):
    """Linearised ratio variance with two PSUs per stratum: sum_h (d_h1 - d_h2)^2 / X^2
    with d = y - R x (with replacement), times (1 - 2/5) with the fpc (man/scd.Rd designs)."""
    R = scd.alive.sum() / scd.arrests.sum()
    dd = scd.alive - R * scd.arrests
    v = sum((g.iloc[0] - g.iloc[1]) ** 2 for _, g in dd.groupby(scd.ESA)) / scd.arrests.sum() ** 2
    nofpc = Design(scd, probs=np.ones(6), clusters="ambulance", strata="ESA", nest=True)
    withfpc = Design(scd, probs=np.ones(6), clusters="ambulance", strata="ESA", nest=True, fpc=np.full(6, 5))
    r0 = nofpc.ratio("alive", "arrests")
    r1 = withfpc.ratio("alive", "arrests")
    assert r0["estimate"].iloc[0] == pytest.approx(R, rel=1e-14)
    assert r0["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)
    assert r1["se"].iloc[0] == pytest.approx(np.sqrt(0.6 * v), rel=1e-12)
    # deff without replacement does not exist here (N = n = 6): R says use deff="replace"
    assert np.isinf(r0["deff"].iloc[0]) or np.isnan(r0["deff"].iloc[0])


def test_scd_levy_lemeshow_brr(scd):
    """BRR with Levy & Lemeshow's four half-samples (man/scd.Rd `repweights`):
    v = (1/4) sum_r (R_r - mean R_r)^2."""
    rw = 2 * np.column_stack([[1, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1], [0, 1, 1, 0, 0, 1], [0, 1, 0, 1, 1, 0]])
    d = ReplicateDesign(scd, np.ones(6), rw, "BRR")
    Rr = (rw * scd.alive.to_numpy()[:, None]).sum(0) / (rw * scd.arrests.to_numpy()[:, None]).sum(0)
    v = ((Rr - Rr.mean()) ** 2).sum() / 4
    assert d.ratio("alive", "arrests")["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)
    dm = ReplicateDesign(scd, np.ones(6), rw, "BRR", mse=True)
    R = scd.alive.sum() / scd.arrests.sum()
    assert dm.ratio("alive", "arrests")["se"].iloc[0] == pytest.approx(np.sqrt(((Rr - R) ** 2).sum() / 4), rel=1e-12)
    # converted BRR and Fay designs: totals equal the with-replacement Taylor variance
    nofpc = Design(scd, probs=np.ones(6), clusters="ambulance", strata="ESA", nest=True)
    t = nofpc.total(["alive", "arrests"])["se"].to_numpy()
    for r in (nofpc.replicate("BRR"), nofpc.replicate("Fay", rho=0.3)):
        assert r.n_replicates == 4
        np.testing.assert_allclose(r.total(["alive", "arrests"])["se"], t, rtol=1e-12)


# ------------------------------------------------------------------ quantiles
def test_quantile_rules_small():
    df = pd.DataFrame({"x": [1.0, 2, 3, 4, 5]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = Design(df)
    # cumulative weights 1..5: p = 0.4 hits cumw = 2 exactly -> math 2, school (2+3)/2
    assert d.quantile("x", 0.4)["estimate"].iloc[0] == 2
    assert d.quantile("x", 0.4, qrule="school")["estimate"].iloc[0] == 2.5
    assert d.quantile("x", 0.41)["estimate"].iloc[0] == 3
    assert d.quantile("x", 0.25)["estimate"].iloc[0] == 2
    # survey's qs(): below the first cumulative weight the rule returns x[2]
    assert d.quantile("x", 0.1)["estimate"].iloc[0] == 2
    assert d.quantile("x", 1.0)["estimate"].iloc[0] == 5


def test_quantile_woodruff_by_hand():
    rng = np.random.default_rng(4)
    n, N = 50, 1000
    x = np.round(rng.normal(100, 15, n))
    df = pd.DataFrame({"x": x, "N": N})
    d = Design(df, fpc="N")
    p = 0.5
    r = d.quantile("x", p).iloc[0]
    xs = np.sort(x)
    cum = np.arange(1, n + 1) / n

    def qmath(pp):
        pos = np.flatnonzero(cum <= pp)
        pos = pos[-1] if pos.size else 0
        return xs[pos] if pp - cum[pos] == 0 else xs[min(pos + 1, n - 1)]

    q = qmath(p)
    m = np.mean(x <= q)
    se_m = np.sqrt((1 - n / N) * m * (1 - m) * n / (n - 1) / n)
    t = stats.t.ppf(0.975, n - 1)  # design df = n - 1
    lo, hi = qmath(m - t * se_m), qmath(m + t * se_m)
    assert (r.estimate, r.ci_low, r.ci_high) == (q, lo, hi)
    assert r.se == pytest.approx((hi - lo) / (2 * t), rel=1e-12)


# ----------------------------------------------------------------- regression
def test_regression_srs_sandwich():
    """Unstratified, unclustered, no fpc: V = n/(n-1) A^-1 (sum z z') A^-1 with
    z_i = w_i e_i x_i (the svyglm sandwich); beta equals statsmodels' WLS."""
    import statsmodels.api as sm

    rng = np.random.default_rng(5)
    n = 80
    x1 = rng.normal(size=n)
    x2 = rng.uniform(size=n)
    y = 1 + 2 * x1 - x2 + rng.normal(size=n)
    w = rng.uniform(1, 3, n)
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "w": w})
    r = Design(df, weights="w").regress("y ~ x1 + x2")
    X = np.column_stack([np.ones(n), x1, x2])
    fit = sm.WLS(y, X, weights=w).fit()
    np.testing.assert_allclose(r["estimate"], fit.params, rtol=1e-10)
    A = X.T @ (w[:, None] * X)
    e = y - X @ fit.params
    Z = (w * e)[:, None] * X
    Zc = Z - Z.mean(axis=0)
    V = np.linalg.inv(A) @ (n / (n - 1) * Zc.T @ Zc) @ np.linalg.inv(A)
    np.testing.assert_allclose(r["se"], np.sqrt(np.diag(V)), rtol=1e-10)
    assert (r["df"] == n - 1 + 1 - 3).all()
    np.testing.assert_allclose(r.attrs["vcov"][0], V, rtol=1e-10)


def test_regression_terms_match_weighted_least_squares():
    """Factors (treatment coding, R's names), interactions and I() terms: the point
    estimates are weighted least squares, as statsmodels' WLS with the same formula."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(8)
    n = 120
    df = pd.DataFrame({"f": rng.choice(["a", "b", "c"], n), "x": rng.normal(size=n), "z": rng.uniform(size=n),
                       "w": rng.uniform(1, 3, n)})
    df["y"] = 2 + df.x * (df.f == "b") + 3 * df.z + rng.normal(size=n)
    r = Design(df, weights="w").regress("y ~ f*x + I(z > 0.5)").set_index("variable")["estimate"]
    m = smf.wls("y ~ f*x + I(z > 0.5)", data=df, weights=df.w).fit().params
    names = {"Intercept": "(Intercept)", "f[T.b]": "fb", "f[T.c]": "fc", "x": "x", "f[T.b]:x": "fb:x",
             "f[T.c]:x": "fc:x", "I(z > 0.5)[T.True]": "I(z>0.5)TRUE"}
    for k, v in names.items():
        assert r[v] == pytest.approx(m[k], rel=1e-9, abs=1e-12)


def test_regression_replicate_matches_refits():
    rng = np.random.default_rng(6)
    n = 60
    df = pd.DataFrame({"h": np.repeat(np.arange(6), 10), "x": rng.normal(size=n)})
    df["y"] = 3 - df.x + rng.normal(size=n)
    df["w"] = rng.uniform(1, 2, n)
    r = Design(df, weights="w", strata="h").replicate("JKn")
    out = r.regress("y ~ x")
    W = r.weight_matrix
    betas = []
    X = np.column_stack([np.ones(n), df.x])
    for c in range(W.shape[1]):
        A = X.T @ (W[:, c, None] * X)
        betas.append(np.linalg.solve(A, X.T @ (W[:, c] * df.y)))
    betas = np.array(betas)
    reps = betas[1:]
    v = r.scale * (r.rscales[:, None] * (reps - reps.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(out["estimate"], betas[0], rtol=1e-10)
    np.testing.assert_allclose(out["se"], np.sqrt(v), rtol=1e-10)


# ----------------------------------------------------------- plausible values
def test_rubin_rules():
    a = pd.DataFrame({"variable": ["pv1"], "estimate": [500.0], "se": [4.0], "ci_low": [0.0], "ci_high": [0.0],
                      "n": [100], "deff": [2.0]})
    b = a.assign(variable="pv2", estimate=506.0, se=5.0)
    c = a.assign(variable="pv3", estimate=503.0, se=3.0)
    out = combine_plausible([a, b, c], variable="math")
    U = (16 + 25 + 9) / 3
    B = np.var([500, 506, 503], ddof=1)
    T = U + (1 + 1 / 3) * B
    assert out["estimate"].iloc[0] == pytest.approx(503.0)
    assert out["se"].iloc[0] == pytest.approx(np.sqrt(T))
    assert out["fmi"].iloc[0] == pytest.approx((4 / 3) * B / T)
    assert out["variable"].iloc[0] == "math"
    with pytest.raises(DesignError, match="two or more"):
        combine_plausible([a])


def test_pv_option_equals_manual_combination():
    rng = np.random.default_rng(7)
    n = 100
    df = pd.DataFrame({"h": np.repeat([1, 2], 50), "w": rng.uniform(1, 4, n)})
    for m in range(5):
        df[f"pv{m + 1}"] = rng.normal(500, 100, n)
    d = Design(df, weights="w", strata="h")
    pvs = [f"pv{m + 1}" for m in range(5)]
    auto = d.mean(pvs, pv=True, by="h")
    manual = combine_plausible([d.mean(v, by="h") for v in pvs])
    np.testing.assert_allclose(auto["estimate"], manual["estimate"])
    np.testing.assert_allclose(auto["se"], manual["se"])
    assert len(auto) == 2 and auto["variable"].iloc[0] == "pv1..pv5"


# -------------------------------------------------------------------- errors
def test_input_errors():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "w": [1.0, -1, 1, 1], "s": ["a", "a", None, "b"],
                       "c": [1, 2, 3, 4]})
    with pytest.raises(DesignError, match=r"weights.*rows \[1\]"):
        Design(df, weights="w")
    with pytest.raises(DesignError, match=r"column 's' has missing values in rows \[2\]"):
        Design(df.assign(w=1.0), weights="w", strata="s")
    with pytest.raises(DesignError, match="not in the data"):
        Design(df.assign(w=1.0), weights="nope")
    with pytest.raises(DesignError, match="lonely_psu"):
        Design(df.assign(w=1.0), weights="w", lonely_psu="drop")
    with pytest.raises(DesignError, match="100% sampling"):
        Design(df.assign(w=1.0, N=2), weights="w", fpc="N")
    with pytest.raises(DesignError, match="one fpc per stage"):
        Design(df.assign(w=1.0, N=10), weights="w", clusters=["c", "y"], fpc="N")
    d = Design(df.assign(w=1.0), weights="w")
    with pytest.raises(DesignError, match="variable 'z' is not in the data"):
        d.mean("z")
    with pytest.raises(DesignError, match="probabilities must be in"):
        d.quantile("y", 1.5)
    with pytest.raises(DesignError, match="population totals missing"):
        d.calibrate("~y", {"(Intercept)": 10})


def test_missing_values_and_na_rm():
    df = pd.DataFrame({"y": [1.0, np.nan, 3, 5], "w": 2.0, "g": ["a", "a", "b", "b"]})
    d = Design(df, weights="w")
    r = d.mean("y")
    assert np.isnan(r["estimate"].iloc[0])  # R: NA without na.rm
    r = d.mean("y", na_rm=True)
    assert r["estimate"].iloc[0] == pytest.approx(3.0) and r["n"].iloc[0] == 3
    by = d.mean("y", by="g")
    assert np.isnan(by["estimate"].iloc[0]) and by["estimate"].iloc[1] == pytest.approx(4.0)
