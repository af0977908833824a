"""PPS inclusion probabilities and systematic selection (qualmon.sampling.pps).

References
----------
* R package *sampling* (Tillé & Matei), man/inclusionprobabilities.Rd:
  Example 1 ``inclusionprobabilities(1:20, 12)``; Example 2
  ``inclusionprobabilities(belgianmunicipalities$Tot04, 200)`` (31 certainty
  units: /work/shared/datasets/survey_api/README.md).
* /work/shared/datasets/survey_api/api_pps_sample.csv: ``pik`` and the
  selected schools of a stratified systematic PPS sample drawn with the
  fixed start u = 0.5 (rule documented in the data set's README, R's
  ``sampling::UPsystematic`` with ``runif(1)`` replaced by 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from qualmon.sampling import pps

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "survey_api"


def _data(name: str) -> Path:
    path = DATA / name
    if not path.exists():  # pragma: no cover
        pytest.skip(f"{name} not available")
    return path


# ---------------------------------------------------------------- closed form
def test_inclusionprobabilities_example1_closed_form():
    # man/inclusionprobabilities.Rd, Example 1: a = 1:20, n = 12.  By hand: 12 a / 210 >= 1 for
    # a >= 18; then 9 a / 153 = 1 for a = 17 (certain too); then 8 a / 136 = a / 17 < 1 for a <= 16.
    a = np.arange(1, 21)
    pik = pps.inclusion_probabilities(a, 12)
    expect = np.where(a >= 17, 1.0, a / 17.0)
    np.testing.assert_allclose(pik, expect, rtol=1e-14)
    assert pik.sum() == pytest.approx(12.0, rel=1e-14)


def test_inclusion_probabilities_series_keeps_index_and_zero_sizes():
    s = pd.Series([0.0, 1.0, 3.0], index=["a", "b", "c"])
    pik = pps.inclusion_probabilities(s, 1)
    assert list(pik.index) == ["a", "b", "c"]
    np.testing.assert_allclose(pik.to_numpy(), [0.0, 0.25, 0.75])


def test_belgian_municipalities_31_certainty_units():
    b = pd.read_csv(_data("belgianmunicipalities.csv"))
    pik = pps.inclusion_probabilities(b["Tot04"].to_numpy(), 200)
    assert int((pik == 1.0).sum()) == 31  # survey_api/README.md (sampling's man page example 2)
    assert pik.sum() == pytest.approx(200.0, rel=1e-12)
    rest = pik < 1
    ratio = pik[rest] / b["Tot04"].to_numpy()[rest]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # proportional to size below certainty
    interval = b["Tot04"].to_numpy()[rest].sum() / (200 - 31)
    assert np.all(b["Tot04"].to_numpy()[~rest] >= interval)
    assert np.all(b["Tot04"].to_numpy()[rest] < interval)


@pytest.fixture(scope="module")
def api_frame():
    pop = pd.read_csv(_data("apipop.csv"), dtype={"cds": str})
    pop = pop[pop["enroll"].notna()].copy()
    pop["st"] = pop["stype"].map({"E": 0, "M": 1, "H": 2})
    return pop.sort_values(["st", "cnum", "dnum", "snum"], kind="stable").reset_index(drop=True)


def test_api_pps_sample_reproduced_exactly(api_frame):
    ref = pd.read_csv(_data("api_pps_sample.csv"), dtype={"cds": str})
    pik = pps.grouped_inclusion_probabilities(api_frame["enroll"].to_numpy(), api_frame["st"].to_numpy(),
                                              np.array([90.0, 30.0, 30.0]))
    sel = pps.grouped_systematic(pik, api_frame["st"].to_numpy(), 0.5)
    chosen = api_frame.loc[sel, "cds"].tolist()
    assert chosen == ref["cds"].tolist()  # same 150 schools, in frame order (api_pps_sample.csv)
    np.testing.assert_allclose(pik[sel], ref["pik"].to_numpy(), rtol=1e-13)  # api_pps_sample.csv pik


def test_pps_systematic_dataframe_matches_api_sample(api_frame):
    ref = pd.read_csv(_data("api_pps_sample.csv"), dtype={"cds": str})
    df = pps.pps_systematic(api_frame, "enroll", {"E": 90, "M": 30, "H": 30}, strata="stype",
                            sort=["cnum", "dnum", "snum"], u={"E": 0.5, "M": 0.5, "H": 0.5}, serpentine=False)
    got = df[df["selected"]]
    assert sorted(got["cds"]) == sorted(ref["cds"])
    np.testing.assert_allclose(got.set_index("cds").loc[ref["cds"], "pik"].to_numpy(), ref["pik"].to_numpy(), rtol=1e-13)
    assert not df["certainty"].any()


def test_systematic_closed_form():
    # pik = 0.5 each, u = 0.25: frac(C - u) = 0.75, 0.25, 0.75, 0.25, 0.75 -> units 1 and 3 (1-based)
    sel = pps.systematic([0.5, 0.5, 0.5, 0.5], u=0.25)
    assert sel.tolist() == [True, False, True, False]
    # a certainty unit is always taken and skipped by the cumulation
    sel = pps.systematic([1.0, 0.5, 0.5], u=0.9)
    assert sel.tolist() == [True, False, True]


# ---------------------------------------------------------------- properties
sizes_st = st.lists(st.one_of(st.floats(0.01, 10.0), st.floats(10.0, 1e4)), min_size=2, max_size=60)


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st, frac=st.floats(0.01, 1.0))
def test_inclusion_probability_properties(sizes, frac):
    a = np.array(sizes)
    n = max(1, int(round(frac * a.size)))
    pik = pps.inclusion_probabilities(a, n)
    assert np.all(pik > 0) and np.all(pik <= 1.0)
    assert pik.sum() == pytest.approx(n, rel=1e-9, abs=1e-9)
    cert = pik == 1.0
    rest = ~cert
    if rest.any():
        interval = a[rest].sum() / (n - cert.sum())
        # certainty units are exactly those at or above the final sampling interval
        assert np.all(a[cert] >= interval * (1 - 1e-12))
        assert np.all(a[rest] < interval * (1 + 1e-12))
        r = pik[rest] / a[rest]
        np.testing.assert_allclose(r, 1.0 / interval, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, groups=st.integers(1, 4), data=st.data())
def test_grouped_equals_separate(sizes, groups, data):
    a = np.array(sizes)
    g = np.arange(a.size) % groups
    G = int(g.max()) + 1
    n = np.array([data.draw(st.integers(1, int((g == h).sum()))) for h in range(G)])
    pik = pps.grouped_inclusion_probabilities(a, g, n.astype(float))
    for h in range(G):
        np.testing.assert_allclose(pik[g == h], pps.inclusion_probabilities(a[g == h], n[h]), rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st, frac=st.floats(0.01, 1.0), u=st.floats(1e-9, 1 - 1e-9))
def test_systematic_sample_size_and_certainty(sizes, frac, u):
    # a start within ~1e-15 of a cumulated boundary can gain or lose a unit by rounding, in R
    # (UPsystematic) as here: probability ~1e-16 per draw, kept out of the property
    a = np.array(sizes)
    n = max(1, int(round(frac * a.size)))
    pik = pps.inclusion_probabilities(a, n)
    sel = pps.systematic(pik, u=u)
    assert sel.sum() == n  # sum of pik is the integer n: the systematic sample has exactly n units
    assert np.all(sel[pik >= 1 - 1e-6])


def test_allocate_bounds_and_proportionality():
    s = np.array([1000.0, 10.0, 5.0, 400.0, 1.0])
    n_h = pps.allocate(s, 30, minimum=1, maximum=[20, 3, 3, 20, 1])
    assert n_h.sum() == 30 and np.all(n_h >= 1) and np.all(n_h <= [20, 3, 3, 20, 1])
    # largest remainder: |n_h - ideal| < 1 for the strata not held at a bound
    ideal = 30 * s / s.sum()
    free = (n_h > 1) & (n_h < np.array([20, 3, 3, 20, 1]))
    assert np.all(np.abs(n_h[free] - ideal[free]) < 1 + 1e-9 + (ideal[~free].sum() - n_h[~free].sum()) ** 2)
    with pytest.raises(pps.PPSError, match="minimum"):
        pps.allocate(s, 3, minimum=1)


def test_serpentine_order():
    df = pd.DataFrame({"a": [1, 1, 1, 2, 2, 2], "b": [1, 2, 3, 1, 2, 3]})
    o = pps.serpentine_order(df, ["a", "b"])
    assert df.iloc[o]["b"].tolist() == [1, 2, 3, 3, 2, 1]
    # within groups the serpentine restarts
    o = pps.serpentine_order(df, ["b"], groups="a")
    assert df.iloc[o]["b"].tolist() == [1, 2, 3, 1, 2, 3]


def test_bad_input_errors():
    with pytest.raises(pps.PPSError, match="negative values at positions \\[1\\]"):
        pps.inclusion_probabilities([1.0, -2.0, 3.0], 1)
    with pytest.raises(pps.PPSError, match="impossible"):
        pps.inclusion_probabilities([1.0, 0.0, 3.0], 3)
    with pytest.raises(pps.PPSError, match="random start"):
        pps.systematic([0.5, 0.5])
    with pytest.raises(pps.PPSError, match="above 1"):
        pps.systematic([1.5, 0.5], u=0.1)


# ---------------------------------------------------------------- Monte Carlo
def test_systematic_monte_carlo_frequencies_match_pik():
    """Empirical selection frequencies of systematic PPS with a random start
    and a random order within implicit strata equal pik: per-unit binomial
    tests with a Bonferroni correction (family-wise level 0.001)."""
    rng = np.random.default_rng(20240501)
    a = np.r_[rng.lognormal(3, 1, 37), 900.0, 1200.0]  # two certainty units
    implicit = rng.integers(0, 4, a.size)
    n = 8
    pik = pps.inclusion_probabilities(a, n)
    R = 20000
    # each replicate is one group: its own order (implicit stratum, then a random key) and its own start
    key = rng.random((R, a.size))
    order = np.lexsort((key, np.broadcast_to(implicit, (R, a.size))), axis=1)
    p_rep = pik[order]
    sel_sorted = pps.grouped_systematic(p_rep.ravel(), np.repeat(np.arange(R), a.size), rng.random(R))
    sel = np.zeros((R, a.size), dtype=bool)
    np.put_along_axis(sel, order, sel_sorted.reshape(R, a.size), axis=1)
    assert np.all(sel.sum(axis=1) == n)
    counts = sel.sum(axis=0)
    lo = stats.binom.cdf(counts, R, pik)
    hi = stats.binom.sf(counts - 1, R, pik)
    p = np.minimum(1.0, 2 * np.minimum(lo, hi))
    assert np.all(p[pik < 1] > 0.001 / a.size), (counts / R - pik)[p < 0.001 / a.size]
    assert np.all(counts[pik == 1] == R)
