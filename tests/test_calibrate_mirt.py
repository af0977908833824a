"""Agreement with R's mirt on its own public data sets (/work/shared/datasets/irt).

Every expected value is copied from a mirt source file, cited next to it:

* T01 = philchalmers/mirt tests/testthat/test-01-mirtOne.R (commit 7cec2c91)
* T02 = philchalmers/mirt tests/testthat/test-02-mirtTwo.R (commit 099d6d7e)
* T10 = philchalmers/mirt tests/testthat/test-10-extras.R (commit 1ca08efe)
* T15 = philchalmers/mirt tests/testthat/test-15-IRTpars.R (commit 2a4179fc)
* ANOVA = philchalmers/mirt reference/anova-method.md (rendered example output)
* SAT12MD = philchalmers/mirt reference/SAT12.md (rendered example output)

mirt stops its EM when parameters change by < 1e-4 (TOL), so its published values
sit a few thousandths from the exact optimum; we converge more tightly (tol 1e-5),
hence parameter tolerances of 0.01 (mirt's own test tolerance), log-likelihoods
within 0.01, and standard errors compared to two significant digits (relative
difference < 3%; SEM/Richardson-type SEs are themselves numerical approximations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qualmon.scoring.calibration import Calibration, calibrate
from qualmon.scoring.models import expected_scores, information, test_characteristic_curve
from qualmon.scoring.persons import eap_sum_score_table, score

DATA = Path("/work/shared/datasets/irt")
Z975 = 1.959963984540054


def ci_se(lo, hi):
    """SE implied by a printed 95% Wald interval."""
    return (np.asarray(hi) - np.asarray(lo)) / (2 * Z975)


def assert_se(ours, published, rel=0.03):
    ours, published = np.asarray(ours, float), np.asarray(published, float)
    np.testing.assert_allclose(ours, published, rtol=rel)


@pytest.fixture(scope="module")
def lsat7():
    return pd.read_csv(DATA / "LSAT7.csv")


@pytest.fixture(scope="module")
def science():
    return pd.read_csv(DATA / "Science.csv")


@pytest.fixture(scope="module")
def lsat7_2pl(lsat7):
    return calibrate(lsat7, "2PL")


# ----------------------------------------------------------------------------- LSAT7 2PL
def test_lsat7_2pl_parameters_loglik_and_se(lsat7_2pl):
    r = lsat7_2pl
    assert r.converged
    # T01: cfs <- coef(mirt(data, 1)): a, d per item
    a_pub = [0.988, 1.081, 1.706, 0.7651, 0.7358]
    d_pub = [1.8561, 0.808, 1.8043, 0.486, 1.8545]
    np.testing.assert_allclose(r.items["a"], a_pub, atol=0.01)
    np.testing.assert_allclose(r.items["d"], d_pub, atol=0.01)
    # ANOVA: mod <- mirt(dat, 1); logLik -2658.805, AIC 5337.610, BIC 5386.688
    assert r.loglik == pytest.approx(-2658.805, abs=0.01)
    assert r.aic == pytest.approx(5337.610, abs=0.02)
    assert r.bic == pytest.approx(5386.688, abs=0.02)
    assert r.n_par == 10
    # T01: modm2 (SE.type='Richardson', numerical observed information) 95% CIs
    a_ci = [(0.6406, 1.3354), (0.7501, 1.4119), (1.0779, 2.334), (0.5022, 1.028), (0.4395, 1.032)]
    d_ci = [(1.5984, 2.1138), (0.6291, 0.9869), (1.4036, 2.205), (0.3392, 0.6328), (1.6302, 2.0787)]
    assert_se(r.items["se_a"], ci_se(*zip(*a_ci)))
    assert_se(r.items["se_d"], ci_se(*zip(*d_ci)))
    # IRT difficulty b = -d/a with delta-method SE
    np.testing.assert_allclose(r.items["b"], -r.items["d"] / r.items["a"])


def test_lsat7_2pl_item_fit_sx2(lsat7_2pl):
    f = lsat7_2pl.fit
    # T01: itemfit(modm1, c('S_X2', ...)): S_X2 and df.S_X2
    np.testing.assert_allclose(f["S_X2"], [4.749440, 14.451071, 1.270381, 5.237400, 0.941125], atol=0.01)
    np.testing.assert_array_equal(f["df_S_X2"], [2, 2, 2, 2, 2])
    assert ((f["p_S_X2"] > 0) & (f["p_S_X2"] < 1)).all()
    assert {"infit", "outfit", "z_infit", "z_outfit"} <= set(f.columns)


def test_lsat7_2pl_person_scores(lsat7, lsat7_2pl):
    pats = pd.read_csv(DATA / "LSAT7_freq.csv").drop(columns="freq")  # mirt's pattern order
    eap = score(pats.head(6), lsat7_2pl, "EAP")
    # T01: fm1 <- fscores(modm1, full.scores=FALSE); fm1[1:6, 'F1'] (tolerance 1e-2 there)
    np.testing.assert_allclose(
        eap["theta"], [-1.8665957, -1.5266920, -1.5134024, -1.1852276, -1.0946830, -0.7666992], atol=0.01
    )
    mapv = score(pats.head(6), lsat7_2pl, "MAP")
    # T01: fm2 <- fscores(modm2, method='MAP', full.scores=FALSE)
    np.testing.assert_allclose(
        mapv["theta"], [-1.8165552, -1.4946906, -1.4822982, -1.1789899, -1.0958928, -0.7951026], atol=0.01
    )
    tab = eap_sum_score_table(lsat7_2pl)
    # T01: fm6 <- fscores(modm1, method='EAPsum', full.scores=FALSE): F1, SE_F1, expected
    np.testing.assert_allclose(
        tab["theta"], [-1.86979, -1.431861, -0.9488463, -0.4131963, 0.1517289, 0.7271877], atol=1e-3
    )
    np.testing.assert_allclose(
        tab["se"], [0.6927032, 0.6838697, 0.6942298, 0.7210951, 0.758772, 0.8009335], atol=1e-3
    )
    np.testing.assert_allclose(
        tab["prob"] * len(lsat7), [10.08994, 44.65882, 109.773, 207.7391, 319.1854, 308.5536], rtol=2e-3
    )


def test_lsat7_2pl_trace_lines(lsat7_2pl):
    th = np.linspace(-6, 6, 200)[:3]
    it = lsat7_2pl.items
    # T10: mod1 fitted to LSAT7 stacked twice (same MLE); values at the grid's
    # extreme end are sensitive to the 1e-4 EM stopping point, hence rtol 2e-3
    np.testing.assert_allclose(
        lsat7_2pl.models["Item.2"].prob(lsat7_2pl.params["Item.2"], th)[:, 0], [0.9965890, 0.9963601, 0.9961159], rtol=2e-3
    )  # probtrace(extract.item(mod1, 2), Theta)[1:3, 1]
    np.testing.assert_allclose(
        expected_scores(it, th)["Item.2"], [0.003411029, 0.003639925, 0.003884122], rtol=2e-3
    )  # expected.item
    np.testing.assert_allclose(test_characteristic_curve(it, th), [0.1083150, 0.1133415, 0.1185956], rtol=2e-3)
    np.testing.assert_allclose(information(it, th).sum(axis=1), [0.06607895, 0.06918330, 0.07242870], rtol=2e-3)


# ----------------------------------------------------------------------------- Rasch
def test_lsat7_rasch(lsat7):
    r = calibrate(lsat7, "Rasch")
    # T15: coef(mirt(dat, 1, 'Rasch'), simplify=TRUE)$items[, 'd'] and IRTpars b = -d
    d_pub = [1.8680155, 0.7908857, 1.4607798, 0.5214175, 1.9927099]
    np.testing.assert_allclose(r.items["d"], d_pub, atol=0.01)
    np.testing.assert_allclose(r.items["b"], -np.array(d_pub), atol=0.01)
    assert (r.items["a"] == 1).all()
    assert r.latent.loc["variance", "estimated"]
    # T15: coef(mod3, printSE=TRUE)[[1]][, 'd'] = (1.868016, 0.100416)  (SE.type Oakes)
    assert_se(r.items["se_d"].iloc[0], 0.100416, rel=0.01)
    assert_se(r.items["se_b"].iloc[0], 0.100416, rel=0.01)
    # df = 2^5 - 1 - 6 = 25 (T01: extract.mirt(modm3, 'df'))
    assert 2**5 - 1 - r.n_par == 25


def test_lsat6_rasch_and_2pl():
    d6 = pd.read_csv(DATA / "LSAT6.csv")
    r = calibrate(d6, "Rasch")
    # T01: modm3 <- mirt(LSAT6, 1, 'Rasch', SE=TRUE, SE.type='SEM'): d, CI and latent COV_11
    np.testing.assert_allclose(r.items["d"], [2.73, 0.999, 0.24, 1.306, 2.099], atol=0.01)
    assert r.latent_var == pytest.approx(0.57, abs=0.01)
    se_pub = ci_se([2.478, 0.845, 0.1, 1.143, 1.896], [2.983, 1.152, 0.38, 1.47, 2.303])
    # SEM standard errors approximate the observed information; CIs printed to 3 decimals
    assert_se(r.items["se_d"], se_pub, rel=0.04)
    assert_se(r.latent.loc["variance", "se"], ci_se(0.371, 0.77), rel=0.04)
    # T01: mod <- mirt(LSAT6, 1, method='QMCEM') logLik -2466.653 (2PL)
    r2 = calibrate(d6, "2PL", se=None)
    assert r2.loglik == pytest.approx(-2466.653, abs=0.01)


# ----------------------------------------------------------------------------- 3PL
def test_lsat7_3pl(lsat7):
    r = calibrate(lsat7, "3PL")
    assert r.converged
    # T15: coef(mirt(dat, 1, '3PL'), simplify=TRUE)$items[, 'd'] and IRTpars b
    d_pub = np.array([1.86562047, 0.09404091, 1.78051762, 0.48189021, 1.86845282])
    b_pub = np.array([-1.85291884, -0.04877029, -1.06840017, -0.65462572, -2.43551721])
    np.testing.assert_allclose(r.items["b"], b_pub, atol=0.01)
    ok = [0, 2, 3, 4]
    np.testing.assert_allclose(r.items["d"].to_numpy()[ok], d_pub[ok], atol=0.01)
    # Item 2 sits on a flat ridge of the 3PL likelihood (SE of logit g = 0.67): mirt's
    # 1e-4 stopping point has d = 0.094; the tighter optimum is 0.012 away -- well inside
    # one SE -- and has a higher log-likelihood than mirt's published point.
    d2 = r.items["d"].iloc[1]
    assert abs(d2 - d_pub[1]) < 0.2 * r.items["se_d"].iloc[1]
    pub_items = r.items.copy()
    pub_items["d"] = d_pub
    pub_items["a"] = -d_pub / b_pub
    pub_items.loc["Item.2", "c"] = 0.2950545  # T15: IRTpars g of item 2
    pub_items = pub_items.drop(columns=[c for c in pub_items.columns if c.startswith("se_") or c == "b"])
    at_pub = calibrate(lsat7, "3PL", fixed=pub_items, latent="fixed", se=None)  # loglik at mirt's point
    assert at_pub.n_par == 0
    assert r.loglik >= at_pub.loglik
    # T15: coef(mod1, printSE=TRUE): SE of d (item 1) 0.1345818, of g (item 2) 0.1398565
    assert_se(r.items["se_d"].iloc[0], 0.1345818)
    assert_se(r.items["se_c"].iloc[1], 0.1398565)


def test_lsat7_mixed_2pl_3pl_and_priors(lsat7):
    m = {c: "2PL" for c in lsat7.columns}
    m["Item.5"] = "3PL"
    # ANOVA: mod2 <- mirt(dat, 1, itemtype=c(rep('2PL', 4), '3PL')); logLik -2658.794.
    # Without a prior the 3PL likelihood is multimodal here: from the default start we
    # reach the boundary mode (c -> 0, logLik -2658.805); from c = 0.5 a mode with a
    # higher logLik than mirt's.  The best of the two must not be below mirt's value.
    r1 = calibrate(lsat7, m, se=None)
    st = r1.items.copy()
    st.loc["Item.5", ["c", "d"]] = [0.5, 0.5]
    r2 = calibrate(lsat7, m, se=None, start=st)
    assert max(r1.loglik, r2.loglik) >= -2658.794 - 1e-3
    # ANOVA: PRIOR = (5, g, norm, -1, 1) -> logLik -2658.786, logPost -2659.705
    rp = calibrate(lsat7, m, priors={"Item.5": {"c": ("logitnorm", -1, 1)}}, se=None)
    assert rp.loglik == pytest.approx(-2658.786, abs=0.005)
    assert rp.logpost == pytest.approx(-2659.705, abs=0.005)
    # ANOVA: PRIOR = (1-5, g, norm, -1, 1), itemtype='3PL' -> -2659.153, logPost -2664.008
    rp2 = calibrate(lsat7, "3PL", priors={"c": ("logitnorm", -1, 1)}, se=None)
    assert rp2.loglik == pytest.approx(-2659.153, abs=0.005)
    assert rp2.logpost == pytest.approx(-2664.008, abs=0.005)
    # ANOVA: AIC of mod2 5339.587 uses 11 parameters
    assert r1.n_par == 11


# ----------------------------------------------------------------------------- SAT12
def test_sat12_2pl_with_key_32_equal_3():
    # SAT12MD: dat <- key2binary(SAT12, key=c(..., 3)); mod <- mirt(dat); itemfit(mod);
    # anova(mod, ...) logLik -9622.389, AIC 19372.78, BIC 19654.18
    raw = pd.read_csv(DATA / "SAT12.csv")
    key = [1, 4, 5, 2, 3, 1, 2, 1, 3, 1, 2, 4, 2, 1, 5, 3, 4, 4, 1, 4, 3, 3, 4, 1, 3, 5, 1, 3, 1, 5, 4, 3]
    dat = pd.DataFrame((raw.to_numpy() == np.array(key)[None, :]).astype(float), columns=raw.columns)
    r = calibrate(dat, "2PL", se=None)
    assert r.loglik == pytest.approx(-9622.389, abs=0.01)
    assert r.aic == pytest.approx(19372.78, abs=0.02)
    assert r.bic == pytest.approx(19654.18, abs=0.02)
    sx2 = [22.083, 19.864, 9.966, 31.479, 27.275, 31.832, 18.125, 19.515, 12.968, 18.951, 1.434, 13.756,
           20.770, 20.995, 21.586, 14.872, 13.111, 18.183, 19.950, 14.831, 21.598, 12.706, 26.228, 14.767,
           19.590, 11.548, 9.354, 20.872, 22.654, 24.891, 13.107, 23.509]
    df = [18, 17, 17, 19, 19, 16, 18, 17, 19, 18, 3, 21, 18, 18, 16, 19, 10, 15, 19, 14, 17, 12, 19, 16,
          19, 16, 13, 18, 19, 20, 12, 20]
    np.testing.assert_allclose(r.fit["S_X2"], sx2, atol=0.01)
    np.testing.assert_array_equal(r.fit["df_S_X2"].astype(int), df)


def test_sat12_scored_2pl_is_a_stationary_point():
    # No published 2PL estimates exist for the key-5 scoring of SAT12_scored.csv; check
    # that the solution is a maximum: zero marginal score, negative-definite Hessian.
    dat = pd.read_csv(DATA / "SAT12_scored.csv")
    r = calibrate(dat, "2PL")
    prob = r._prob
    x = prob.pack(prob.W, prob.mean, prob.var)
    g, ll = prob.gradient(x)
    assert ll == pytest.approx(r.loglik)
    assert np.abs(g).max() < 1e-3
    assert np.isfinite(r.items["se_a"]).all() and (r.items["se_a"] > 0).all()
    assert np.linalg.eigvalsh(np.linalg.inv(r.vcov.to_numpy())).min() > 0


# ----------------------------------------------------------------------------- Science
def test_science_grm(science):
    r = calibrate(science, "GRM")  # 1..4 recoded to 0..3 as mirt does
    assert r.converged
    assert list(r.categories["Comfort"]) == [1, 2, 3, 4]
    # T02: modp1 <- mirt(Science, 1); coef: a1, d1, d2, d3 per item
    pub = np.array([1.041, 4.864, 2.64, -1.466, 1.226, 2.924, 0.901, -2.266, 2.296, 5.238, 2.216, -1.965,
                    1.095, 3.348, 0.992, -1.688]).reshape(4, 4)
    np.testing.assert_allclose(r.items[["a", "d1", "d2", "d3"]].to_numpy(), pub, atol=0.01)
    # ANOVA: x <- mirt(Science, 1): AIC 3249.739, BIC 3313.279, logLik -1608.870
    assert r.loglik == pytest.approx(-1608.870, abs=0.01)
    assert r.aic == pytest.approx(3249.739, abs=0.02)
    assert r.bic == pytest.approx(3313.279, abs=0.02)
    # T02: modLouis <- mirt(Science, 1, SE=T, SE.type='Louis'): SEs (exact observed information)
    se_pub = np.array([0.18838, 0.49088, 0.22267, 0.15868, 0.18189, 0.23928, 0.14289, 0.20308, 0.48269,
                       0.72817, 0.3564, 0.32209, 0.18336, 0.27659, 0.14053, 0.16864]).reshape(4, 4)
    assert_se(r.items[["se_a", "se_d1", "se_d2", "se_d3"]].to_numpy(), se_pub)


def test_science_gpcm_and_mixed(science):
    r = calibrate(science, "GPCM")
    # ANOVA: x3 <- mirt(Science, 1, 'gpcm'): AIC 3257.366, BIC 3320.906, logLik -1612.683
    assert r.loglik == pytest.approx(-1612.683, abs=0.01)
    assert r.aic == pytest.approx(3257.366, abs=0.02)
    assert r.bic == pytest.approx(3320.906, abs=0.02)
    # conventional thresholds b_k = -(d_k - d_{k-1}) / a
    d = np.column_stack([np.zeros(4), r.items[["d1", "d2", "d3"]].to_numpy()])
    np.testing.assert_allclose(r.items[["b1", "b2", "b3"]].to_numpy(), -np.diff(d, axis=1) / r.items[["a"]].to_numpy())
    m = {c: "GRM" for c in science.columns}
    m["Benefit"] = "GPCM"
    rm = calibrate(science, m, se=None)
    # T02: modp5 <- mirt(Science, 1, itemtype=c(rep('graded',3), 'gpcm')): estimates
    grm = np.array([1.057, 4.876, 2.65, -1.472, 1.219, 2.918, 0.9, -2.263, 2.254, 5.177, 2.19, -1.942]).reshape(3, 4)
    np.testing.assert_allclose(rm.items.iloc[:3][["a", "d1", "d2", "d3"]].to_numpy(), grm, atol=0.01)
    np.testing.assert_allclose(rm.items.loc["Benefit", ["a", "d1", "d2", "d3"]].astype(float), [0.771, 2.16, 2.973, 1.767], atol=0.01)
    # T02: fm5 <- fscores(modp5, full.scores=FALSE)[1:6, 'F1'] (patterns in sorted order)
    pats = science.drop_duplicates().sort_values(list(science.columns)).head(6)
    np.testing.assert_allclose(
        score(pats, rm)["theta"], [-2.7249561, -1.4446593, -0.7364399, -0.5627047, -2.5174376, -1.1732461], atol=0.01
    )


def test_science_person_scores_against_fscores(science):
    # T02 scores come from modp1 <- mirt(Science, 1, SE=TRUE, SE.type='SEM'); its printed
    # estimates (3 decimals) define the calibration so that only the scoring is compared.
    pub = pd.DataFrame(
        {"model": "GRM", "a": [1.041, 1.226, 2.3, 1.094], "d1": [4.863, 2.924, 5.244, 3.347],
         "d2": [2.639, 0.901, 2.218, 0.991], "d3": [-1.466, -2.266, -1.967, -1.688]},
        index=science.columns,
    )
    cal = Calibration.from_items(pub, categories={c: [1, 2, 3, 4] for c in science.columns})
    one = pd.DataFrame([[1, 2, 3, 4]], columns=science.columns)
    e = score(one, cal, "EAP")
    # T02: fscores(modp1, method='EAP', response.pattern=c(1,2,3,4)): F1, SE_F1 (tol 1e-4)
    assert e["theta"].iloc[0] == pytest.approx(-0.3494903, abs=2e-4)
    assert e["se"].iloc[0] == pytest.approx(0.6004922, abs=2e-4)
    pats = science.drop_duplicates().sort_values(list(science.columns)).head(6)
    # T02: fm1 <- fscores(modp1, full.scores=FALSE)[1:6, 'F1']
    np.testing.assert_allclose(
        score(pats, cal)["theta"], [-2.7488324, -1.4190140, -0.7154329, -0.4453752, -2.5438490, -1.2481072], atol=5e-4
    )
    # T02: fs <- fscores(modp1, method='WLE', full.scores=FALSE); fs[1:3, 5:6] (F1 and SE_F1)
    w = score(pats.head(3), cal, "WLE")
    np.testing.assert_allclose(w["theta"], [-5.7024116, -2.1162737, -1.1386969], atol=2e-3)
    np.testing.assert_allclose(w["se"], [1.5797286, 0.6321478, 0.6544024], rtol=2e-3)
    # and with our own estimates, within mirt's 1e-2 test tolerance
    own = calibrate(science, "GRM", se=None)
    np.testing.assert_allclose(
        score(pats, own)["theta"], [-2.7488324, -1.4190140, -0.7154329, -0.4453752, -2.5438490, -1.2481072], atol=0.01
    )


def test_lsat7_equal_slopes_crossprod_se_and_ml_scores(lsat7):
    """mirt's modm4 constrains the five slopes to be equal with N(0, 1); our Rasch fit
    (a = 1, variance free) is the same model reparameterised: a = sqrt(variance), the
    intercepts are identical, and their SEs are invariant to the reparameterisation."""
    r = calibrate(lsat7, "Rasch", se="crossprod")
    # T01: modm4 <- mirt(data, 'F = 1-5 CONSTRAIN = (1-5, a1)', SE=T, SE.type='crossprod')
    assert np.sqrt(r.latent_var) == pytest.approx(1.011, abs=0.01)
    np.testing.assert_allclose(r.items["d"], [1.868, 0.791, 1.461, 0.521, 1.993], atol=0.01)
    d_ci = [(1.67, 2.067), (0.631, 0.951), (1.277, 1.644), (0.367, 0.676), (1.793, 2.193)]
    assert_se(r.items["se_d"], ci_se(*zip(*d_ci)), rel=0.03)
    # T01: fm3 <- fscores(modm4, method='ML', full.scores=TRUE): rows 1 and 1000 are -Inf/Inf,
    # rows 13, 34, 40 = -2.783489, -1.750890, -2.783489 (theta on the N(0, 1) scale of modm4)
    ml = score(lsat7, r, "ML")
    assert ml["theta"].iloc[0] == -np.inf and ml["theta"].iloc[999] == np.inf
    np.testing.assert_allclose(
        ml["theta"].iloc[[12, 33, 39]] / np.sqrt(r.latent_var), [-2.783489, -1.750890, -2.783489], atol=0.01
    )
