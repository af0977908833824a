"""Parameter recovery on simulated data, exact equivalences and input handling.

Recovery checks use the estimated standard errors: z = (estimate - truth) / se
pooled over the parameters of a design should have mean ~ 0 and SD ~ 1 and the
95% intervals should cover ~95%.  The tolerances are sampling bounds for P
parameters: |mean z| < 3.5 / sqrt(P), |SD z - 1| < 3.5 / sqrt(2 P) and coverage
within 3.5 binomial SDs of 0.95 -- not tuned to the results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qualmon.scoring import _data as rd
from qualmon.scoring.calibration import CalibrationError, ConvergenceError, calibrate
from qualmon.scoring.models import simulate
from qualmon.scoring.persons import score

DATA = Path("/work/shared/datasets/irt")


def z_checks(est, true, se, label=""):
    est, true, se = (np.asarray(v, float).ravel() for v in (est, true, se))
    z = (est - true) / se
    P = z.size
    cover = np.mean(np.abs(z) < 1.959964)
    assert abs(z.mean()) < 3.5 / np.sqrt(P), (label, z.mean())
    assert abs(z.std(ddof=1) - 1) < 3.5 / np.sqrt(2 * P), (label, z.std(ddof=1))
    assert abs(cover - 0.95) < 3.5 * np.sqrt(0.95 * 0.05 / P), (label, cover)
    return z


def eap_checks(theta_true, sc):
    """RMSE^2 of EAP equals the mean posterior variance in expectation (law of total variance)."""
    err2 = (sc["theta"].to_numpy() - theta_true) ** 2
    pv = sc["se"].to_numpy() ** 2
    d = err2 - pv
    assert abs(d.mean()) < 4 * d.std(ddof=1) / np.sqrt(len(d))
    r = np.corrcoef(sc["theta"], theta_true)[0, 1]
    rel = 1 - pv.mean() / np.var(theta_true)
    assert abs(r**2 - rel) < 0.03
    return r


def items_2pl(J, rng, model="2PL"):
    return pd.DataFrame(
        {"model": model, "a": rng.lognormal(0.0, 0.3, J) if model != "Rasch" else 1.0, "b": rng.normal(0, 0.9, J)},
        index=[f"i{j:02d}" for j in range(J)],
    )


def items_poly(J, K, rng, model):
    b = np.sort(rng.normal(0, 1.0, (J, K - 1)), axis=1) + np.linspace(-0.6, 0.6, K - 1)[None, :]
    df = pd.DataFrame({"model": model, "a": rng.lognormal(0.0, 0.25, J)}, index=[f"p{j:02d}" for j in range(J)])
    for k in range(K - 1):
        df[f"b{k + 1}"] = b[:, k]
    return df


# ----------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("seed", [11, 12])
def test_2pl_recovery(seed):
    rng = np.random.default_rng(seed)
    tr = items_2pl(20, rng)
    th = rng.normal(size=3000)
    X = simulate(tr, th, rng)
    r = calibrate(X, "2PL")
    it = r.items
    z_checks(it[["a", "d"]], np.column_stack([tr["a"], -tr["a"] * tr["b"]]), it[["se_a", "se_d"]], "2PL")
    assert np.corrcoef(it["b"], tr["b"])[0, 1] > 0.97
    eap_checks(th, score(X, r))


def test_rasch_recovery_with_latent_variance():
    rng = np.random.default_rng(3)
    tr = items_2pl(15, rng, "Rasch")
    th = rng.normal(0, np.sqrt(0.8), 4000)
    X = simulate(tr, th, rng)
    r = calibrate(X, "Rasch")
    est = np.r_[r.items["d"], r.latent_var]
    true = np.r_[-tr["b"], 0.8]
    se = np.r_[r.items["se_d"], r.latent.loc["variance", "se"]]
    z_checks(est, true, se, "Rasch")


def test_3pl_recovery_with_guessing_prior():
    rng = np.random.default_rng(5)
    J = 20
    tr = pd.DataFrame(
        {"model": "3PL", "a": rng.lognormal(0.2, 0.25, J), "b": rng.normal(0.3, 0.8, J), "c": rng.beta(5, 17, J)},
        index=[f"m{j}" for j in range(J)],
    )
    th = rng.normal(size=6000)
    X = simulate(tr, th, rng)
    r = calibrate(X, "3PL", priors={"c": ("beta", 5, 17)})
    assert r.converged
    it = r.items
    # slopes and difficulties: frequentist z checks; c is shrunk by its prior (MAP)
    z_checks(it[["a", "b"]], tr[["a", "b"]], it[["se_a", "se_b"]], "3PL")
    assert np.sqrt(np.mean((it["c"] - tr["c"]) ** 2)) < np.sqrt(np.mean((0.2 - tr["c"]) ** 2)) + 0.02
    # the prior keeps every guessing parameter inside (0, 1) and away from the boundary
    assert (it["c"] > 0.02).all() and (it["c"] < 0.6).all()
    # without the prior the fit is at least as good in log-likelihood (MAP vs ML)
    r0 = calibrate(X, "3PL", se=None, start=it)
    assert r0.loglik >= r.loglik - 1e-6


@pytest.mark.parametrize("model", ["GRM", "GPCM"])
def test_polytomous_recovery(model):
    rng = np.random.default_rng(21 if model == "GRM" else 22)
    tr = items_poly(10, 4, rng, model)
    th = rng.normal(size=3000)
    X = simulate(tr, th, rng)
    r = calibrate(X, model)
    it = r.items
    cols = ["a", "b1", "b2", "b3"]
    z_checks(it[cols], tr[cols], it[[f"se_{c}" for c in cols]], model)
    eap_checks(th, score(X, r))


def test_mixed_test_recovery():
    rng = np.random.default_rng(31)
    t1 = items_2pl(12, rng)
    t2 = items_poly(4, 3, rng, "GRM")
    t3 = items_poly(4, 4, rng, "GPCM").rename(index=lambda s: "q" + s[1:])
    tr = pd.concat([t1, t2, t3])
    th = rng.normal(size=4000)
    X = simulate(tr, th, rng)
    r = calibrate(X, tr["model"].to_dict())
    assert list(r.items["model"]) == list(tr["model"])
    est, true, se = [], [], []
    for it, row in tr.iterrows():
        for c in ["a", "b", "b1", "b2", "b3"]:
            if c in row and pd.notna(row[c]):
                est.append(r.items.loc[it, c])
                true.append(row[c])
                se.append(r.items.loc[it, f"se_{c}"])
    z_checks(est, true, se, "mixed")


def test_booklet_design_with_30_percent_missing():
    rng = np.random.default_rng(41)
    J = 24
    tr = items_2pl(J, rng)
    n = 4000
    th = rng.normal(size=n)
    X = simulate(tr, th, rng)
    booklet = rng.integers(0, 4, n)
    for b in range(4):  # each booklet leaves out a different 30% of the items
        cols = [c for j, c in enumerate(tr.index) if (j + 2 * b) % 10 < 3]
        X.loc[booklet == b, cols] = np.nan
    assert X.isna().to_numpy().mean() == pytest.approx(0.3, abs=0.02)
    r = calibrate(X, "2PL")
    it = r.items
    z_checks(it[["a", "b"]], tr[["a", "b"]], it[["se_a", "se_b"]], "booklets")
    eap_checks(th, score(X, r))


def test_weighted_calibration_recovers_population_scale():
    """Informative sampling: students above the mean are 3x as likely to be sampled.
    With weights 1/pi the pseudo-likelihood targets the N(0,1) population (sandwich SEs);
    unweighted estimates are on the sample's scale and visibly shifted."""
    rng = np.random.default_rng(51)
    tr = items_2pl(16, rng)
    N = 40_000
    th_pop = rng.normal(size=N)
    pi = np.where(th_pop > 0, 0.3, 0.1)
    take = rng.random(N) < pi
    th = th_pop[take]
    X = simulate(tr, th, rng)
    w = 1 / pi[take]
    rw = calibrate(X, "2PL", weights=w / w.mean(), se="sandwich")
    z_checks(rw.items[["a", "b"]], tr[["a", "b"]], rw.items[["se_a", "se_b"]], "weighted")
    ru = calibrate(X, "2PL", se=None)
    shift_u = (ru.items["b"] - tr["b"]).mean()
    shift_w = (rw.items["b"] - tr["b"]).mean()
    assert shift_u < -0.2  # unweighted: sample mean ~ +0.37 becomes the scale origin
    assert abs(shift_w) < 3 * rw.items["se_b"].mean() / np.sqrt(len(tr)) + 0.02


def test_fixed_anchor_items_estimate_latent_mean_and_variance():
    rng = np.random.default_rng(61)
    tr = items_2pl(20, rng)
    th = rng.normal(0.5, 1.2, 5000)
    X = simulate(tr, th, rng)
    anchors = tr.iloc[:8]
    r = calibrate(X, "2PL", fixed=anchors)
    assert r.latent.loc["mean", "estimated"] and r.latent.loc["variance", "estimated"]
    lat = r.latent
    assert abs(lat.loc["mean", "estimate"] - 0.5) < 3.5 * lat.loc["mean", "se"]
    assert abs(lat.loc["variance", "estimate"] - 1.44) < 3.5 * lat.loc["variance", "se"]
    np.testing.assert_allclose(r.items.loc[anchors.index, "a"], anchors["a"])
    free = tr.index[8:]
    z_checks(r.items.loc[free, ["a", "b"]], tr.loc[free, ["a", "b"]], r.items.loc[free, ["se_a", "se_b"]], "FIPC")


# ----------------------------------------------------------------------------- exact equivalences
def test_frequency_weights_equal_expanded_rows():
    freq = pd.read_csv(DATA / "LSAT7_freq.csv")
    full = pd.read_csv(DATA / "LSAT7.csv")
    a = calibrate(freq.drop(columns="freq"), "2PL", weights=freq["freq"], collapse=False)
    b = calibrate(full, "2PL", collapse=False)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    cols = ["a", "d", "se_a", "se_d"]
    np.testing.assert_allclose(a.items[cols].to_numpy(), b.items[cols].to_numpy(), atol=1e-6)
    assert a.n_obs == 32 and b.n_obs == 1000


def test_integer_weights_equal_duplicated_rows_polytomous():
    rng = np.random.default_rng(71)
    tr = items_poly(5, 3, rng, "GRM")
    X = simulate(tr, rng.normal(size=600), rng)
    w = rng.integers(1, 4, len(X))
    dup = X.loc[X.index.repeat(w)].reset_index(drop=True)
    a = calibrate(X, "GRM", weights=w, se=None, tol=1e-7)
    b = calibrate(dup, "GRM", se=None, tol=1e-7)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)
    np.testing.assert_allclose(a.items[["a", "d1", "d2"]], b.items[["a", "d1", "d2"]], atol=1e-5)


def test_squarem_and_plain_em_reach_the_same_optimum():
    X = pd.read_csv(DATA / "Science.csv")
    a = calibrate(X, "GRM", se=None, tol=1e-7)
    b = calibrate(X, "GRM", se=None, tol=1e-7, accelerate=None, max_iter=20000)
    assert b.iterations > a.iterations
    np.testing.assert_allclose(a.items[["a", "d1", "d2", "d3"]], b.items[["a", "d1", "d2", "d3"]], atol=1e-4)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)
    assert np.all(np.diff(b.history) > -1e-8)  # EM is monotone


def test_estep_paths_agree():
    """Fast path (hull maxima + rank-1 GEMM), general path, booklet and dense designs."""
    rng = np.random.default_rng(81)
    tr = pd.concat([items_2pl(6, rng), items_poly(3, 4, rng, "GPCM")])
    X = simulate(tr, rng.normal(size=3000), rng)
    X.iloc[::3, :4] = np.nan
    r = calibrate(X, tr["model"].to_dict(), se=None)
    prob = r._prob
    x = prob.pack(prob.W, prob.mean, prob.var)
    t = prob.terms(x)
    assert t.fast
    ref = rd.estep(prob.design, t)
    t_slow = rd.Terms(t.coef, t.Dn, t.base, t.bpart, t.log_prior, t.theta, hull=None)
    slow = rd.estep(prob.design, t_slow)
    d = prob.design
    dense = rd.build_design(d.x, d.w, d.n_cat, d.linear, collapse=False, max_booklets=0)
    t_dense = rd.make_terms(dense, prob.item_logp(prob.W), [
        (m.logit_linear(r.params[it])[0], m.logit_linear(r.params[it])[1]) if m.logit_linear(r.params[it]) else None
        for it, m in r.models.items()], prob.theta, t.log_prior)
    dn = rd.estep(dense, t_dense)
    for other in (slow, dn):
        assert other[0] == pytest.approx(ref[0], rel=1e-12)
        np.testing.assert_allclose(other[4], ref[4], rtol=1e-9, atol=1e-9)
    c_ref = rd.item_counts(d, ref[1], ref[2], ref[3])
    c_dn = rd.item_counts(dense, dn[1], dn[2], dn[3])
    for a, b in zip(c_ref, c_dn):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-8)


def test_long_format_with_status_equals_wide():
    rng = np.random.default_rng(91)
    tr = items_2pl(6, rng)
    X = simulate(tr, rng.normal(size=500), rng)
    X.index = [f"s{i}" for i in range(len(X))]
    long = X.stack().rename("score").reset_index()
    long.columns = ["student_id", "item_id", "score"]
    long["status"] = "scored"
    # mark some responses omitted (scored wrong) and some not reached (missing)
    om = long.sample(frac=0.05, random_state=1).index
    nr = long.drop(om).sample(frac=0.05, random_state=2).index
    long.loc[om, "status"] = "omitted"
    long.loc[om, "score"] = np.nan
    long.loc[nr, "status"] = "not_reached"
    wide = X.copy()
    for i in om:
        wide.loc[long.at[i, "student_id"], long.at[i, "item_id"]] = 0.0
    for i in nr:
        wide.loc[long.at[i, "student_id"], long.at[i, "item_id"]] = np.nan
    a = calibrate(long, "2PL", se=None)
    b = calibrate(wide, "2PL", se=None)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-9)
    np.testing.assert_allclose(a.items.loc[b.items.index, ["a", "d"]], b.items[["a", "d"]], atol=1e-9)
    # omitted treated as not presented instead
    c = calibrate(long, "2PL", se=None, omitted="not_presented")
    assert c.loglik > a.loglik  # fewer observed responses


# ----------------------------------------------------------------------------- errors and reporting
def test_convergence_failure_is_reported():
    X = pd.read_csv(DATA / "Science.csv")
    with pytest.raises(ConvergenceError, match="did not converge"):
        calibrate(X, "GRM", max_iter=2, se=None)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        r = calibrate(X, "GRM", max_iter=2, se=None, on_nonconvergence="warn")
    assert not r.converged and r.iterations == 2 and r.max_change > r.settings["tol"]


def test_bad_inputs_raise_clear_errors():
    X = pd.DataFrame({"i1": [0, 1, 1, 0], "i2": [1, 1, 1, 1], "i3": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match="'i2' has 1 observed category"):
        calibrate(X, "2PL")
    Y = pd.DataFrame({"i1": [0, 1, 0.5, 0], "i3": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"'i1' must hold finite integer.*rows 2"):
        calibrate(Y, "2PL")
    Z = pd.DataFrame({"i1": [0, 1, 2, 0], "i3": [0, 1, 0, 1]})
    with pytest.raises(CalibrationError, match="polytomous="):
        calibrate(Z, "2PL")
    r = calibrate(Z, "2PL", polytomous="GRM", se=None)
    assert list(r.items["model"]) == ["GRM", "2PL"]
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        calibrate(X.drop(columns="i2"), "2PL", weights=[1, -1, 1, 1])
    long = pd.DataFrame({"student_id": [1, 1], "item_id": ["a", "a"], "score": [0, 1]})
    with pytest.raises(ValueError, match="must appear once"):
        calibrate(long)
    with pytest.raises(ValueError, match="status"):
        calibrate(pd.DataFrame({"student_id": [1], "item_id": ["a"], "score": [1], "status": ["skipped"]}))


def test_result_object_reporting():
    r = calibrate(pd.read_csv(DATA / "LSAT7.csv"), "2PL")
    s = r.summary()
    assert list(s.index) == list(r.items.index)
    assert {"a", "b", "se_a", "se_b", "S_X2", "infit"} <= set(s.columns)
    assert s.attrs["loglik"] == r.loglik
    html = r._repr_html_()
    assert "<table" in html and "loglik" in html
    assert "converged" in repr(r)
    assert r.vcov.shape == (10, 10)
    np.testing.assert_allclose(np.sqrt(np.diag(r.vcov.to_numpy()))[::2], r.items["se_a"])


def test_infit_outfit_match_the_defining_sums():
    """Wright & Masters mean squares recomputed student by student from the EAPs."""
    X = pd.read_csv(DATA / "Science.csv")
    r = calibrate(X, "GPCM", se=None)
    th = score(X, r, "EAP", quadpts=len(r.theta))["theta"].to_numpy()  # EAP on the calibration grid
    f = r.fit
    for it in X.columns:
        m, p = r.models[it], r.params[it]
        P = m.prob(p, th)
        k = np.arange(m.n_cat)
        E = P @ k
        W = P @ k**2 - E**2
        x = X[it].to_numpy() - 1  # categories 1..4 -> 0..3
        outfit = np.mean((x - E) ** 2 / W)
        infit = np.sum((x - E) ** 2) / np.sum(W)
        assert f.loc[it, "outfit"] == pytest.approx(outfit, rel=1e-8)
        assert f.loc[it, "infit"] == pytest.approx(infit, rel=1e-8)
