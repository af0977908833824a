"""Tests for qualmon.scoring.linking: scale linking through anchor items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from qualmon.scoring.levels import ReportingScale
from qualmon.scoring.linking import (
    METHODS,
    LinkingError,
    anchor_drift,
    fixed_anchor,
    link,
    linking_constants,
    shift_linking_error,
    transform_items,
)
from qualmon.scoring.models import probabilities


def _bank(rng, L, families=("2PL",)):
    rows = {}
    for i in range(L):
        fam = families[i % len(families)]
        a = float(rng.lognormal(0, 0.25))
        if fam in ("2PL", "3PL", "Rasch"):
            b = float(rng.normal())
            rows[f"A{i:02d}"] = {"model": fam, "a": 1.0 if fam == "Rasch" else a, "d": -(1.0 if fam == "Rasch" else a) * b,
                                 "c": 0.2 if fam == "3PL" else 0.0}
        else:
            bs = np.sort(rng.normal(0, 1, 3))
            if fam == "GRM":
                d = -a * bs
            else:  # GPCM: d_k = -a sum_{v<=k} b_v
                d = -np.cumsum(a * bs)
            rows[f"A{i:02d}"] = {"model": fam, "a": a, "c": 0.0, "d1": d[0], "d2": d[1], "d3": d[2]}
    return pd.DataFrame.from_dict(rows, orient="index")


def _to_new_scale(base, A, B):
    """Parameters of the same items on a scale with theta_base = A theta_new + B."""
    return transform_items(base, 1.0 / A, -B / A)


def _noisy(tab, rng, sb, sa):
    """Estimation noise: b + N(0, sb^2), log a + N(0, sa^2) (dichotomous items)."""
    out = tab.copy()
    b = -out["d"] / out["a"]
    a = out["a"] * np.exp(rng.normal(0, sa, len(out)))
    out["a"] = a
    out["d"] = -a * (b + rng.normal(0, sb, len(out)))
    return out.drop(columns=[c for c in ("b",) if c in out.columns])


# --------------------------------------------------------------------------
# exactness and closed forms
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_exact_without_noise(method, symmetric):
    rng = np.random.default_rng(1)
    base = _bank(rng, 16, families=("2PL", "3PL", "GRM", "GPCM"))
    A, B = 1.3, -0.4
    new = _to_new_scale(base, A, B)
    # start the curve methods far from the answer so the optimiser has work to do
    res = link(new, base, method=method, symmetric=symmetric, start=(0.6, 0.8))
    assert res.A == pytest.approx(A, abs=1e-7)
    assert res.B == pytest.approx(B, abs=1e-7)
    back = res.transform_items(new)
    for col in ["a", "d", "d1", "d2", "d3", "c"]:
        np.testing.assert_allclose(back[col].astype(float), base[col].astype(float), atol=1e-6)
    assert res.drift["flag"].sum() == 0


def test_mean_sigma_and_mean_mean_closed_forms():
    base = pd.DataFrame({"model": "2PL", "a": [1.0, 1.5, 0.8, 1.2], "b": [-1.0, 0.0, 0.5, 1.5], "c": 0.0},
                        index=list("wxyz"))
    new = pd.DataFrame({"model": "2PL", "a": [1.1, 1.9, 0.9, 1.3], "b": [-1.2, -0.1, 0.2, 1.0], "c": 0.0},
                       index=list("wxyz"))
    ms = link(new, base, method="mean_sigma", jackknife=False)
    A = np.std(base["b"]) / np.std(new["b"])
    assert ms.A == pytest.approx(A)
    assert ms.B == pytest.approx(base["b"].mean() - A * new["b"].mean())
    mm = link(new, base, method="mean/mean", jackknife=False)
    A = new["a"].mean() / base["a"].mean()
    assert mm.A == pytest.approx(A)
    assert mm.B == pytest.approx(base["b"].mean() - A * new["b"].mean())
    # transformed items: a / A, A b + B
    out = mm.transform_items(new)
    np.testing.assert_allclose(out["a"], new["a"] / mm.A)
    np.testing.assert_allclose(out["b"], mm.A * new["b"] + mm.B)
    np.testing.assert_allclose(out["d"], -out["a"] * out["b"])


@settings(max_examples=40, deadline=None)
@given(st.floats(0.3, 3.0), st.floats(-2, 2), st.integers(0, 2**32 - 1))
def test_transformation_preserves_response_functions(A, B, seed):
    # P_j(theta_new; new) = P_j(A theta_new + B; new transformed to the base scale), every family
    rng = np.random.default_rng(seed)
    new = _bank(rng, 8, families=("2PL", "3PL", "GRM", "GPCM", "Rasch"))
    new.loc["A09"] = {"model": "PCM", "a": 1.0, "c": 0.0, "d1": 0.4, "d2": 0.9, "d3": 0.1}
    on_base = transform_items(new, A, B)
    th = np.linspace(-3, 3, 7)
    p_new = probabilities(new, th)
    p_base = probabilities(on_base, A * th + B)
    for it in new.index:
        np.testing.assert_allclose(p_new[it], p_base[it], atol=1e-10)


# --------------------------------------------------------------------------
# recovery with estimation noise; linking error
# --------------------------------------------------------------------------


def test_rasch_shift_jackknife_equals_pisa_formula():
    rng = np.random.default_rng(2)
    L, B, sb = 30, 0.35, 0.08
    base = _bank(rng, L, families=("Rasch",))
    new = _to_new_scale(base, 1.0, B)
    b_new = -new["d"] + rng.normal(0, sb, L)  # noisy new-year difficulties (a = 1)
    new["d"] = -b_new
    res = link(new, base, method="mean_mean")
    assert res.fix_A and res.A == 1.0
    shift = (-base["d"]) - b_new
    assert res.B == pytest.approx(shift.mean())
    # B_hat - B = -mean(noise): SE sigma / sqrt(L)
    assert abs(res.B - B) < 4 * sb / np.sqrt(L)
    # the delete-one jackknife SE of a mean is exactly sd(shift) / sqrt(L), the PISA shift formula
    pisa = shift_linking_error(new, base, res)
    assert res.se_B == pytest.approx(shift.std(ddof=1) / np.sqrt(L))
    assert pisa == pytest.approx(res.se_B)
    assert res.linking_error() == pytest.approx(res.se_B)
    sc = ReportingScale(slope=100.0, intercept=500.0)
    assert res.linking_error(scale=sc) == pytest.approx(100 * res.se_B)
    assert shift_linking_error(new, base, res, scale=sc) == pytest.approx(100 * pisa)
    # jackknife over units (pairs of anchors): delete one unit at a time
    units = {a: i // 2 for i, a in enumerate(base.index)}
    ru = link(new, base, method="mean_mean", units=units)
    assert len(ru.jackknife) == L // 2
    G = L // 2
    unit_means = shift.groupby(np.arange(L) // 2).mean()
    loo = (shift.sum() - 2 * unit_means) / (L - 2)
    assert ru.se_B == pytest.approx(np.sqrt((G - 1) / G * np.sum((loo - loo.mean()) ** 2)))


@pytest.mark.parametrize("method", METHODS)
def test_recovers_known_constants_with_noise(method):
    rng = np.random.default_rng(11)
    L, A, B = 25, 1.25, -0.35
    base_true = _bank(rng, L)
    new_true = _to_new_scale(base_true, A, B)
    res = link(_noisy(new_true, rng, 0.1, 0.05), _noisy(base_true, rng, 0.1, 0.05), method=method)
    assert abs(res.A - A) < 4 * res.se_A
    assert abs(res.B - B) < 4 * res.se_B


def test_stocking_lord_monte_carlo_bias_and_jackknife_calibration():
    rng = np.random.default_rng(12)
    L, A, B, R = 25, 1.25, -0.35, 40
    base_true = _bank(rng, L)
    new_true = _to_new_scale(base_true, A, B)
    est, se = [], []
    for _ in range(R):
        r = link(_noisy(new_true, rng, 0.1, 0.05), _noisy(base_true, rng, 0.1, 0.05))
        est.append((r.A, r.B))
        se.append((r.se_A, r.se_B))
    est, se = np.array(est), np.array(se)
    sd = est.std(0, ddof=1)
    assert np.all(np.abs(est.mean(0) - [A, B]) < 4 * sd / np.sqrt(R))
    # the jackknife SE tracks the Monte Carlo SD (relative SE of an SD from R draws: 1/sqrt(2(R-1)))
    assert np.all(np.abs(se.mean(0) / sd - 1) < 4 / np.sqrt(2 * (R - 1)))
    # linking error at theta: jackknife of A theta + B
    r = link(_noisy(new_true, rng, 0.1, 0.05), _noisy(base_true, rng, 0.1, 0.05))
    th = 1.5
    assert r.linking_error(th) == pytest.approx(np.sqrt(r.se_A**2 * th**2 + 2 * th * r.cov_AB + r.se_B**2))


def test_separate_calibrations_then_link_and_fixed_anchor():
    # two years calibrated separately (each standardised N(0, 1)); year 2 population is N(0.4, 1.2^2)
    # on the year-1 scale, so theta_base = 1.2 theta_new + 0.4
    from qualmon.scoring.calibration import calibrate

    rng = np.random.default_rng(21)
    J, n = 24, 3000
    a = rng.uniform(0.8, 2.0, J)
    b = rng.normal(0, 1, J)
    items = pd.DataFrame({"model": "2PL", "a": a, "d": -a * b, "c": 0.0}, index=[f"I{j:02d}" for j in range(J)])

    def sim(theta):
        return pd.DataFrame((rng.random((theta.size, J)) < 1 / (1 + np.exp(-(a * theta[:, None] + items["d"].to_numpy())))
                             ).astype(float), columns=items.index)

    X1, X2 = sim(rng.normal(0, 1, n)), sim(rng.normal(0.4, 1.2, n))
    c1 = calibrate(X1, "2PL")
    c2 = calibrate(X2, "2PL")
    res = link(c2.items, c1.items, method="stocking_lord")
    assert abs(res.A - 1.2) < 4 * res.se_A
    assert abs(res.B - 0.4) < 4 * res.se_B
    # fixed-anchor calibration of year 2 with the first 12 items at their year-1 estimates
    fa = fixed_anchor(X2, c1.items, anchors=list(items.index[:12]))
    lat = fa.latent
    assert abs(lat.loc["mean", "estimate"] - 0.4) < 4 * np.hypot(lat.loc["mean", "se"], res.se_B)
    assert abs(lat.loc["variance", "estimate"] - 1.44) < 4 * np.hypot(lat.loc["variance", "se"], 2 * 1.2 * res.se_A)
    assert fa.settings["fixed_items"] == list(items.index[:12])


# --------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------


def test_drift_detection_and_relinking():
    rng = np.random.default_rng(31)
    L, A, B, sb = 20, 1.1, 0.3, 0.05
    base_true = _bank(rng, L)
    new = _noisy(_to_new_scale(base_true, A, B), rng, sb, 0.02)
    base = _noisy(base_true, rng, sb, 0.02)
    drifter = "A07"
    new.loc[drifter, "d"] -= new.loc[drifter, "a"] * 0.9  # item became 0.9 (new-scale units) harder
    res_all = link(new, base, method="mean_sigma")
    flagged = list(res_all.drift.index[res_all.drift["flag"]])
    assert flagged == [drifter]
    assert abs(res_all.drift.loc[drifter, "z_b"]) > 2.7
    res = link(new, base, method="mean_sigma", drop_drift=True)
    assert res.dropped == [drifter]
    assert drifter not in res.anchors and not res.drift.loc[drifter, "used"]
    # after dropping, the constants are back within the noise-implied error
    assert abs(res.B - B) < 4 * res.se_B
    assert abs(res_all.B - B) > abs(res.B - B)
    # RMSD criterion flags the same item
    d = anchor_drift(new, base, res.A, res.B, z_threshold=np.inf, rmsd_threshold=0.05)
    assert list(d.index[d["flag"]]) == [drifter]


def test_constants_table_and_summary():
    rng = np.random.default_rng(41)
    base = _bank(rng, 12)
    new = _to_new_scale(base, 0.9, 0.2)
    tab = linking_constants(new, base, jackknife=False)
    assert list(tab.index) == list(METHODS)
    np.testing.assert_allclose(tab["A"], 0.9, atol=1e-7)
    r = link(new, base)
    s = r.summary()
    assert list(s.index) == ["A", "B"] and s.loc["A", "estimate"] == pytest.approx(0.9)
    assert "Linking" in r._repr_html_()
    th = pd.Series([0.0, 1.0])
    assert r.transform_theta(th).tolist() == pytest.approx([0.2, 1.1])
    assert r.transform_se(np.array([0.5]))[0] == pytest.approx(0.45)


def test_transform_items_standard_errors():
    tab = pd.DataFrame({"model": ["2PL", "Rasch"], "a": [1.2, 1.0], "d": [0.3, -0.5], "c": 0.0,
                        "se_a": [0.1, np.nan], "se_d": [0.05, 0.04], "se_b": [0.08, 0.04]}, index=["x", "y"])
    out = transform_items(tab, 2.0, 0.5)
    assert out.loc["x", "se_a"] == pytest.approx(0.05)
    assert out.loc["x", "se_b"] == pytest.approx(0.16)
    assert np.isnan(out.loc["x", "se_d"])  # needs the a-d covariance
    assert out.loc["y", "se_d"] == pytest.approx(0.04)  # fixed slope: a pure shift


def test_linking_errors():
    rng = np.random.default_rng(51)
    base = _bank(rng, 5)
    new = _to_new_scale(base, 1.0, 0.0)
    with pytest.raises(LinkingError, match="at least 2 anchor"):
        link(new, base, anchors=["A00"])
    with pytest.raises(LinkingError, match="missing from new_items"):
        link(new, base, anchors=["A00", "zz"])
    with pytest.raises(LinkingError, match="method must be one of"):
        link(new, base, method="equipercentile")
    poly = base.copy()
    poly.loc["A00", ["d", "d1", "d2"]] = [np.nan, 0.5, -0.5]
    poly.loc["A00", "model"] = "GRM"
    with pytest.raises(LinkingError, match="differ in number of categories"):
        link(new, poly)
    with pytest.raises(LinkingError, match="no anchor items"):
        fixed_anchor(pd.DataFrame({"q": [0.0, 1.0]}), base)
