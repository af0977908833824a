"""Replicate-weight builders (qualmon.sampling.replicates).

R references: api_pps_sample.csv's fay1..fay80 are the factors R's
``as.svrepdesign(type="Fay", fay.rho=0.5)`` built from ``hadamard(75)`` with
zones as strata (README of the data set); man/hadamard.Rd documents the
orders R picks (59 -> 60 Paley, 63 -> 64 Sylvester, 27 -> 28 stored, 90 -> 96);
man/scd.Rd / srvyr's tests: ``as.svrepdesign(scdnofpc, type="BRR")`` has 4
replicates for 3 strata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualmon.design import Design
from qualmon.sampling import replicates as rep

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "survey_api"


@pytest.fixture(scope="module")
def pps():
    path = DATA / "api_pps_sample.csv"
    if not path.exists():  # pragma: no cover
        pytest.skip("api_pps_sample.csv not available")
    return pd.read_csv(path, dtype={"cds": str})


# ------------------------------------------------------------------ Hadamard
@pytest.mark.parametrize("order", list(range(4, 132, 4)) + [1, 2, 136, 148, 164, 200, 256])
def test_hadamard_orders(order):
    H = rep.hadamard(order)
    assert H.shape == (order, order)
    assert set(np.unique(H)) <= {-1, 1}
    np.testing.assert_array_equal(H @ H.T, order * np.eye(order, dtype=int))
    assert (H[0] == 1).all() and (H[:, 0] == 1).all()  # normalised


def test_hadamard_bad_order():
    with pytest.raises(rep.ReplicateError, match="order 6"):
        rep.hadamard(6)


@pytest.mark.parametrize("n, order", [(3, 4), (27, 28), (59, 60), (63, 64), (75, 80), (90, 96)])
def test_hadamard_order_r_rule(n, order):
    # man/hadamard.Rd: hadamard(59) Paley 60, hadamard(63) Sylvester 64, hadamard(27) stored 28,
    # hadamard(90) gives 96; api_pps_sample README: hadamard(75) has order 80; man/scd.Rd: 3 strata, 4 replicates
    assert rep.hadamard_order(n) == order
    assert rep.hadamard_order(75, rule="smallest") == 76


def test_paley_matches_r_form():
    """R's paley(p) for p=7 written out (quadratic residues mod 7: 1, 2, 4)."""
    H = rep._paley1_01(7)
    # row i>=1, column j>=1: 0 if (i-1)+(j-1) mod 7 in {0,1,2,4} else 1
    expect = np.ones((8, 8), dtype=int)
    for i in range(7):
        for j in range(7):
            expect[i + 1, j + 1] = 0 if (i + j) % 7 in (0, 1, 2, 4) else 1
    np.testing.assert_array_equal(H, expect)


# ---------------------------------------------------------------- Fay vs R
def test_fay_factors_reproduce_r(pps):
    f = rep.fay(pps, "zone", "zone_unit", rho=0.5)
    r_factors = pps[[f"fay{i}" for i in range(1, 81)]].to_numpy()
    assert f.n_replicates == 80
    np.testing.assert_array_equal(f.expand(), r_factors)  # api_pps_sample.csv fay1..fay80
    assert f.scale == pytest.approx(1 / (80 * 0.25))
    W = f.weight_matrix(pps["w"].to_numpy())
    assert W.flags.c_contiguous and W.shape == (150, 81)
    np.testing.assert_allclose(W[:, 0], pps["w"])
    np.testing.assert_allclose(W[:, 1:], r_factors * pps["w"].to_numpy()[:, None])


def test_fay_total_equals_taylor_with_replacement(pps):
    """Full orthogonal balance: for a total, Fay's variance equals the with-replacement
    Taylor variance of the zones x units design, sum_h (z_h1 - z_h2)^2."""
    d = Design(pps, weights="w", strata="zone", clusters="zone_unit", nest=True)
    fay = d.replicate("Fay", rho=0.5)
    brr = d.replicate("BRR")
    t = d.total(["api00", "api.stu"])
    for r in (fay, brr):
        np.testing.assert_allclose(r.total(["api00", "api.stu"])["se"], t["se"], rtol=1e-10)
    z = pps.assign(z=pps.w * pps.api00).pivot(index="zone", columns="zone_unit", values="z")
    assert t["se"].iloc[0] == pytest.approx(np.sqrt(((z[1] - z[2]) ** 2).sum()), rel=1e-12)


def test_jk2_variants(pps):
    d = Design(pps, weights="w", strata="zone", clusters="zone_unit", nest=True)
    timss = rep.jk2(pps, "zone", "zone_unit")
    full = rep.jk2(pps, "zone", "zone_unit", variant="full")
    assert timss.n_replicates == 75 and full.n_replicates == 150
    assert full.scale == 0.5
    # TIMSS: unit 1 doubled, unit 2 dropped in its zone's replicate, 1 elsewhere
    F = timss.expand()
    z = pps["zone"].to_numpy() - 1
    assert (F[np.arange(150), z] == np.where(pps.zone_unit == 1, 2.0, 0.0)).all()
    assert ((F == 1) | (np.arange(75)[None, :] == z[:, None])).all()
    jkn = d.replicate("JKn")
    r_full = d.replicate("JK2", variant="full")
    r_timss = d.replicate("JK2", mse=True)  # the TIMSS variant is centred on the full estimate
    for v in ("api00", "api.stu"):
        a = jkn.mean(v)["se"].iloc[0]
        assert r_full.mean(v)["se"].iloc[0] == pytest.approx(a, rel=1e-12)  # full JK2 == JKn on zones
        assert r_timss.total(v)["se"].iloc[0] == pytest.approx(d.total(v)["se"].iloc[0], rel=1e-12)
    padded = rep.jk2(pps, "zone", "zone_unit", n_replicates=80)
    assert padded.n_replicates == 80 and (padded.factors[:, 75:] == 1).all()


def test_brr_order_of_strata_is_rs(pps):
    """Zones are ordered as R orders their labels as text: zone 2 uses row 12 of H."""
    f = rep.brr(pps, "zone", "zone_unit")
    H = rep._paley1_01(79)
    first_unit_zone2 = np.flatnonzero((pps.zone == 2) & (pps.zone_unit == 1))[0]
    sorted_labels = sorted(str(z) for z in pps.zone.unique())
    row = sorted_labels.index("2") + 1
    assert row == 12
    np.testing.assert_array_equal(f.expand()[first_unit_zone2], np.where(H[row] == 1, 2.0, 0.0))


# ---------------------------------------------------------------- jackknives
def test_jk1_structure():
    df = pd.DataFrame({"psu": [1, 1, 2, 3, 3, 4], "N": 40})
    f = rep.jk1(df, "psu", fpc="N")
    n = 4
    assert f.n_replicates == n
    assert f.scale == pytest.approx((40 - n) / 40 * (n - 1) / n)
    F = f.factors
    np.testing.assert_allclose(np.diag(F), 0)
    np.testing.assert_allclose(F[~np.eye(n, dtype=bool)], n / (n - 1))
    np.testing.assert_array_equal(f.index, [0, 0, 1, 2, 2, 3])


def test_jkn_structure_certainty_and_lonely():
    df = pd.DataFrame({"h": ["a", "a", "a", "b", "b", "c"], "psu": [1, 2, 3, 1, 2, 1],
                       "N": [10, 10, 10, 2, 2, 5]})
    with pytest.raises(rep.ReplicateError, match="'c' has only one PSU"):
        rep.jkn(df, "h", "psu")
    f = rep.jkn(df, "h", "psu", fpc="N", lonely_psu="remove")
    # stratum b is exhaustive (N = n): no replicate; c is lonely: removed
    assert f.n_replicates == 3
    np.testing.assert_allclose(f.rscales, (1 - 3 / 10) * 2 / 3)
    F = f.expand()
    assert (F[:3][np.eye(3, dtype=bool)] == 0).all() and (F[3:] == 1).all()
    fa = rep.jkn(df, "h", "psu", lonely_psu="adjust")
    # R's jknweights 'adjust': one more replicate zeroing the lonely stratum, others nstrat/(nstrat-1)
    assert fa.n_replicates == 3 + 2 + 1
    last = fa.expand()[:, -1]
    np.testing.assert_allclose(last, [1.5, 1.5, 1.5, 1.5, 1.5, 0.0])
    assert fa.rscales[-1] == pytest.approx(2 / 3)


def test_jkn_total_equals_taylor_closed_form():
    """Delete-one jackknife of a stratified total reproduces the Taylor variance
    sum_h (1-f_h) n_h/(n_h-1) sum_i (z_hi - zbar_h)^2 exactly."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"h": np.repeat([1, 2, 3], [4, 3, 5]), "y": rng.normal(10, 3, 12),
                       "w": rng.uniform(1, 5, 12), "N": np.repeat([20, 9, 50], [4, 3, 5])})
    d = Design(df, weights="w", strata="h", fpc="N")
    z = df.w * df.y
    v = 0.0
    for h, g in z.groupby(df.h):
        n = len(g)
        N = df.N[df.h == h].iloc[0]
        v += (1 - n / N) * n / (n - 1) * ((g - g.mean()) ** 2).sum()
    assert d.total("y")["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)
    assert d.replicate("JKn").total("y")["se"].iloc[0] == pytest.approx(np.sqrt(v), rel=1e-12)


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_counts_and_scale():
    df = pd.DataFrame({"h": np.repeat([1, 2], [3, 5]), "psu": np.arange(8)})
    b = rep.bootstrap(df, "h", "psu", replicates=200, seed=1)
    F = b.factors
    np.testing.assert_array_equal(F[:3].sum(axis=0), 3)  # n_h PSUs drawn per stratum
    np.testing.assert_array_equal(F[3:].sum(axis=0), 5)
    assert np.all(F == np.round(F)) and F.min() >= 0
    nbar = 1 / np.mean([1 / 3, 1 / 5])
    assert b.scale == pytest.approx(nbar / ((nbar - 1) * 199))
    rw = rep.rao_wu(df, "h", "psu", replicates=200, seed=1)
    np.testing.assert_allclose((rw.factors[:3] * 2 / 3).sum(axis=0), 2 * 2 / 3 * 3 / 2)  # (n-1) draws * n/(n-1)
    np.testing.assert_allclose(rw.factors[:3].sum(axis=0), 3.0)
    assert rw.scale == pytest.approx(1 / 199)
    # reproducible from a seed or a Generator
    np.testing.assert_array_equal(rep.bootstrap(df, "h", "psu", 50, seed=7).factors,
                                  rep.bootstrap(df, "h", "psu", 50, seed=np.random.default_rng(7)).factors)


def test_bootstrap_variance_recovers_taylor():
    """With many replicates the bootstrap variance of a total approaches the
    with-replacement Taylor variance; tolerance from the bootstrap's own Monte
    Carlo error (relative SD of a variance estimate from R draws ~ sqrt(2/R),
    inflated by the kurtosis of the PSU totals; 5 such SDs)."""
    rng = np.random.default_rng(11)
    n = 60
    df = pd.DataFrame({"h": np.repeat([1, 2, 3], 20), "y": rng.gamma(2, 10, n), "w": 5.0})
    d = Design(df, weights="w", strata="h")
    R = 4000
    taylor = d.total("y")["se"].iloc[0] ** 2
    for method in ("bootstrap", "rao_wu"):
        b = d.replicate(method, replicates=R, seed=5).total("y")["se"].iloc[0] ** 2
        assert abs(b / taylor - 1) < 5 * np.sqrt(3.0 / R)


# -------------------------------------------------------------------- errors
def test_builder_errors():
    df = pd.DataFrame({"h": [1, 1, 2, 2, 2], "psu": [1, 2, 1, 2, 3]})
    with pytest.raises(rep.ReplicateError, match="odd number"):
        rep.brr(df, "h", "psu")
    with pytest.raises(rep.ReplicateError, match="missing"):
        rep.jkn(df.assign(h=[1, None, 2, 2, 2]), "h", "psu")
    with pytest.raises(rep.ReplicateError, match="not in the data"):
        rep.jk1(df, "nope")
    with pytest.raises(rep.ReplicateError, match="rho"):
        rep.brr(df.iloc[:4], "h", "psu", rho=1.2)
    with pytest.raises(rep.ReplicateError, match="exactly two units"):
        rep.jk2(df, "h", "psu")
    # the builder refuses a PSU label shared by two strata when nesting is off
    with pytest.raises(rep.ReplicateError, match="not nested"):
        rep._unit_structure(np.array([1, 2]), np.array([5, 5]), 2, nest=False)


def test_brr_large_strata_split_into_pairs():
    df = pd.DataFrame({"h": [1, 1, 1, 1, 2, 2], "psu": [1, 2, 3, 4, 1, 2], "y": [1.0, 4, 2, 8, 3, 5]})
    f = rep.brr(df, "h", "psu")
    # stratum 1 is split into two pairs, so 3 pseudo-strata and a 4 x 4 Hadamard matrix
    assert f.n_replicates == 4
    F = f.expand()
    np.testing.assert_array_equal(F[0] + F[1], 2)  # a pair: one PSU in, one out
    np.testing.assert_array_equal(F[2] + F[3], 2)
    np.testing.assert_array_equal(F[4] + F[5], 2)


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(n_strata=st.integers(1, 20), rho=st.sampled_from([0.0, 0.3, 0.5]), seed=st.integers(0, 10_000))
def test_brr_full_orthogonal_balance(n_strata, rho, seed):
    rng = np.random.default_rng(seed)
    h = np.repeat(np.arange(n_strata), 2)
    perm = rng.permutation(h.size)
    df = pd.DataFrame({"h": h[perm], "psu": np.tile([1, 2], n_strata)[perm]})
    f = rep.brr(df, "h", "psu", rho=rho)
    F = f.factors
    # every replicate: within a stratum the two factors add to 2, and each PSU is
    # "in" in exactly half of the replicates
    s = pd.DataFrame(F).groupby(f.units["stratum"].to_numpy()).sum().to_numpy()
    np.testing.assert_allclose(s, 2.0)
    np.testing.assert_allclose((F > 1).mean(axis=1), 0.5)
    # deviations of different strata are orthogonal over replicates
    dev = (F[f.units.groupby("stratum").head(1).index] - 1) / (1 - rho)
    np.testing.assert_allclose(dev @ dev.T, f.n_replicates * np.eye(n_strata), atol=1e-9)
