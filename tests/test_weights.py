"""Weights (qualmon.sampling.weights): non-response adjustment, trimming,
benchmarking, zones and replicate factors; and the weights of a drawn sample.

PISA's triple factors (1.7071 / 0.6464 and 0.2929 / 1.3536 at rho = 0.5) are
those of the PISA technical reports' chapter on survey weights (Judkins 1990).
The pair factors are cross-checked against ``replicates.fay``, which
reproduces R's ``as.svrepdesign(type="Fay")`` (tests/test_replicates.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qualmon
from qualmon.sampling import replicates as rep
from qualmon.sampling import weights as W
from qualmon.sampling.stages import draw, simulate_participation
from qualmon.sampling.plan import SamplingPlan


# ------------------------------------------------------------------ non-response
def test_nonresponse_closed_form_and_collapsing():
    df = pd.DataFrame({"county": ["a", "a", "a", "b", "b", "c", "c"],
                       "locale": ["u", "u", "r", "u", "r", "u", "u"]})
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    r = np.array([True, False, True, True, False, True, True])
    adj = W.nonresponse_adjustment(df, ["county", "locale"], w, r, max_factor=10.0)
    # cell (a,u): 3/1; (a,r): 3/3; county b: cell (b,r) has no respondent -> b collapsed: 9/4; (c,u): 13/13
    np.testing.assert_allclose(adj.factor, [3.0, 3.0, 1.0, 9 / 4, 9 / 4, 1.0, 1.0])
    assert adj.level.tolist() == [2, 2, 2, 1, 1, 2, 2]
    # a factor above the cap collapses too: (a,u) = 3 > 2.5 -> county a: 6/4
    adj = W.nonresponse_adjustment(df, ["county", "locale"], w, r, max_factor=2.5)
    np.testing.assert_allclose(adj.factor[:3], [1.5, 1.5, 1.5])
    assert adj.cells["collapsed"].sum() == 2


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(2, 40))
def test_nonresponse_preserves_eligible_totals(data, n):
    a = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    b = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    w = np.array(data.draw(st.lists(st.floats(0.1, 100.0), min_size=n, max_size=n)))
    r = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if not r.any():
        r[0] = True
    df = pd.DataFrame({"a": a, "b": b})
    adj = W.nonresponse_adjustment(df, ["a", "b"], w, r, max_factor=3.0)
    for c in np.unique(adj.cell):
        m = adj.cell == c
        assert (w[m & r] * adj.factor[m & r]).sum() == pytest.approx(w[m].sum(), rel=1e-12)


def test_nonresponse_errors():
    df = pd.DataFrame({"a": [1, 1]})
    with pytest.raises(W.WeightError, match="no respondent at all"):
        W.nonresponse_adjustment(df, ["a"], [1.0, 1.0], [False, False])
    with pytest.raises(W.WeightError, match="column 'zz'"):
        W.nonresponse_adjustment(df, ["zz"], [1.0, 1.0], [True, True])
    with pytest.raises(W.WeightError, match="negative in rows \\[1\\]"):
        W.nonresponse_adjustment(df, ["a"], [1.0, -1.0], [True, True])


# ------------------------------------------------------------------ trimming and benchmark
def test_trimming_closed_form():
    w = np.array([1.0, 1.0, 1.0, 1.0, 20.0])
    t = W.trim_weights(w, np.zeros(5, dtype=int), k=4.0)
    # cap = 4 x median 1 = 4; excess 16 spread over the four others: each 1 + 4 = 5 > 4 -> capped too:
    # every weight would exceed the cap, so the cell is left untrimmed
    np.testing.assert_allclose(t, 1.0)
    w = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0])
    t = W.trim_weights(w, np.zeros(9, dtype=int), k=4.0)
    new = w * t
    assert new[-1] == pytest.approx(4.0) and new.sum() == pytest.approx(w.sum())
    np.testing.assert_allclose(new[:-1], 1.0 + 6.0 / 8.0)


@settings(max_examples=150, deadline=None)
@given(w=st.lists(st.floats(0.5, 1000.0), min_size=3, max_size=50), k=st.floats(2.0, 6.0), groups=st.integers(1, 3))
def test_trimming_conserves_totals(w, k, groups):
    w = np.array(w)
    g = np.arange(w.size) % groups
    new = w * W.trim_weights(w, g, k)
    for h in range(groups):
        m = g == h
        assert new[m].sum() == pytest.approx(w[m].sum(), rel=1e-10)
        med = np.median(w[m])
        untouched = np.allclose(new[m], w[m])
        assert untouched or new[m].max() <= k * med * (1 + 1e-9)


def test_benchmark_factors():
    w = np.array([1.0, 2.0, 3.0, 4.0])
    g = W.benchmark_factors(w, [0, 0, 1, 1], [30.0, 14.0])
    assert (w * g)[:2].sum() == pytest.approx(30.0) and (w * g)[2:].sum() == pytest.approx(14.0)
    with pytest.raises(W.WeightError, match="no sample weight"):
        W.benchmark_factors(w, [0, 0, 0, 0], [1.0, 2.0])


# ------------------------------------------------------------------ zones and factors
def test_form_zones_pairs_and_triples():
    units, row_unit = W.form_zones(["s"] * 7 + ["t"] * 2, list("gfedcbaxy"), [7, 6, 5, 4, 3, 2, 1, 1, 2])
    assert units["unit"].tolist() == list("abcdefgxy")  # by order within stratum
    assert units["zone"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert units["zone_unit"].tolist() == [1, 2, 1, 2, 1, 2, 3, 1, 2]
    assert units["zone_size"].tolist() == [2, 2, 2, 2, 3, 3, 3, 2, 2]
    assert units["unit"].to_numpy()[row_unit].tolist() == list("gfedcbaxy")


def _pairs(n_zones):
    z = np.repeat(np.arange(n_zones), 2)
    return pd.DataFrame({"stratum": "s", "unit": np.arange(2 * n_zones), "zone": z,
                         "zone_unit": np.tile([1, 2], n_zones), "zone_size": 2})


def test_fay_pairs_equal_replicates_fay():
    zones = _pairs(12)
    zf = W.zone_factors(zones, "Fay", 80, 0.5)
    data = pd.DataFrame({"zone": [f"{z:03d}" for z in zones["zone"]], "unit": zones["zone_unit"]})
    ref = rep.fay(data, "zone", "unit", rho=0.5, hadamard_matrix=rep.hadamard(80))
    np.testing.assert_array_equal(zf.factors, ref.expand())
    assert zf.scale == pytest.approx(ref.scale)


def test_fay_triple_factors_are_pisas():
    zones = pd.DataFrame({"stratum": "s", "unit": [0, 1, 2], "zone": 0, "zone_unit": [1, 2, 3], "zone_size": 3})
    F = W.zone_factors(zones, "Fay", 80, 0.5, rng=np.random.default_rng(1)).factors
    vals = sorted(set(np.round(F.ravel(), 4)))
    assert vals == [0.2929, 0.6464, 1.3536, 1.7071]  # PISA technical report (Judkins 1990)
    np.testing.assert_allclose(F.sum(axis=0), 3.0)


@pytest.mark.parametrize("method", ["Fay", "JK2", "BRR"])
def test_zone_variance_of_a_total_closed_form(method):
    """For a total: Fay/BRR with all zones on distinct Hadamard rows give
    sum over pairs of (t1 - t2)^2 exactly; JK2 the same (one replicate per pair)."""
    rng = np.random.default_rng(3)
    zones = _pairs(20)
    t = rng.normal(100, 20, len(zones))
    zf = W.zone_factors(zones, method, 80 if method != "JK2" else 75, 0.5 if method == "Fay" else 0.0, rng=rng)
    reps = t @ zf.factors
    v = zf.scale * np.sum(zf.rscales * (reps - t.sum()) ** 2)
    expect = np.sum((t[0::2] - t[1::2]) ** 2)
    assert v == pytest.approx(expect, rel=1e-10)


def test_triple_variance_is_unbiased_over_the_designation():
    """Fay triples: 2 (t_A - (t_B + t_C)/2)^2 for the designated unit A;
    averaged over A it is (3/2) sum (t - mean)^2, the with-replacement
    variance of three units.  JK2 triples: the same average."""
    t = np.array([3.0, 7.0, 11.5])
    target = 1.5 * np.sum((t - t.mean()) ** 2)
    zones = pd.DataFrame({"stratum": "s", "unit": [0, 1, 2], "zone": 0, "zone_unit": [1, 2, 3], "zone_size": 3})
    for method, R in (("Fay", 80), ("JK2", 75)):
        vs = set()
        for seed in range(60):
            zf = W.zone_factors(zones, method, R, 0.5, rng=np.random.default_rng(seed))
            reps = t @ zf.factors
            vs.add(round(zf.scale * np.sum(zf.rscales * (reps - t.sum()) ** 2), 9))
        assert len(vs) == 3  # one value per designated unit, each met over 60 seeds
        assert np.mean(sorted(vs)) == pytest.approx(target, rel=1e-9)


def test_fpc_scales_the_variance():
    rng = np.random.default_rng(4)
    zones = _pairs(10)
    t = rng.normal(50, 10, len(zones))
    f = np.repeat(rng.uniform(0, 0.5, 10), 2)
    for method in ("Fay", "JK2", "JKn"):
        a = W.zone_factors(zones, method, 80 if method == "Fay" else 75, 0.5, rng=np.random.default_rng(0))
        b = W.zone_factors(zones, method, 80 if method == "Fay" else 75, 0.5, rng=np.random.default_rng(0), fraction=f)
        va = a.scale * np.sum(a.rscales * (t @ a.factors - t.sum()) ** 2)
        vb = b.scale * np.sum(b.rscales * (t @ b.factors - t.sum()) ** 2)
        per_zone = (t[0::2] - t[1::2]) ** 2
        assert va == pytest.approx(per_zone.sum(), rel=1e-10)
        assert vb == pytest.approx(np.sum((1 - f[0::2]) * per_zone), rel=1e-10)


# ------------------------------------------------------------------ a drawn sample
@pytest.fixture(scope="module")
def prov():
    return qualmon.synth.province(seed=21, years=(2024,), scale=0.15, tested=None)


@pytest.fixture(scope="module", params=["Fay", "JK2"])
def sample_nr(prov, request):
    plan = SamplingPlan(year=2024, seed=8, replicate_method=request.param,
                        replicates=80 if request.param == "Fay" else 75, tracked_counties=("511105",))
    return simulate_participation(draw(plan, prov), 0.85, 0.85, seed=2)


def test_final_and_replicate_weights_sum_to_frame_totals(sample_nr, prov):
    sf = prov.tables["school_frame"]
    frame = np.array([sf["grade4_enrolment"].sum(), sf["grade8_enrolment"].sum()], dtype=float)
    stu = sample_nr.students
    np.testing.assert_allclose(stu.groupby("grade")["weight"].sum().to_numpy(), frame, rtol=1e-10)
    for g, tot in zip((4, 8), frame):
        m = (stu["grade"] == g).to_numpy()
        np.testing.assert_allclose(sample_nr.replicate_weights[m].sum(axis=0), tot, rtol=1e-10)
    # the tracked county is benchmarked to its own enrolment
    cf = sf[sf["county_id"] == "511105"]
    t = stu[stu["county_id"] == "511105"].groupby("grade")["weight"].sum()
    np.testing.assert_allclose(t.to_numpy(), [cf["grade4_enrolment"].sum(), cf["grade8_enrolment"].sum()], rtol=1e-10)


def test_nonresponse_adjustments_preserve_cell_totals(sample_nr):
    for name in ("school_nr", "student_nr"):
        cells = sample_nr._cells[name]
        np.testing.assert_allclose(cells["respondent_weight"] * cells["factor"], cells["eligible_weight"], rtol=1e-12)
    stu = sample_nr.students
    took = (stu["participated"] & stu["school_participating"]).to_numpy()
    assert (stu.loc[took, "weight"] > 0).all()  # tested students of participating schools
    assert (stu.loc[~took, "weight"] == 0).all()  # (a school under 50 % student response does not count)
    assert (sample_nr.replicate_weights[~took] == 0).all()
    # school and student factors: >= 1 where they apply, recorded on the rows
    part = stu[stu["weight"] > 0]
    assert (part["school_nr_factor"] >= 1).all() and (part["student_nr_factor"] >= 1).all()
    w = part["base_weight"] * part["school_nr_factor"] * part["student_nr_factor"] * part["trim_factor"] \
        * part["benchmark_factor"]
    np.testing.assert_allclose(w, part["weight"], rtol=1e-12)


def test_trimming_in_sample_conserves_totals(sample_nr):
    stu = sample_nr.students
    part = stu[stu["weight"] > 0]
    w1 = part["base_weight"] * part["school_nr_factor"] * part["student_nr_factor"]
    w2 = w1 * part["trim_factor"]
    key = [part["grade"], np.where(part["county_selection"] == "tracked", part["county_id"], "P")]
    np.testing.assert_allclose(w1.groupby(key).sum().to_numpy(), w2.groupby(key).sum().to_numpy(), rtol=1e-10)


def test_variance_units(sample_nr):
    stu = sample_nr.students
    sampled = stu[stu["county_selection"] == "sampled"]
    # probability counties are the units of the "counties" stratum: one unit per county
    assert (sampled["var_stratum"] == "counties").all()
    assert sampled.groupby("county_id")[["var_zone", "var_unit"]].nunique().max().max() == 1
    tracked = stu[stu["county_selection"] == "tracked"]
    assert tracked["var_stratum"].str.startswith("511105-G").all()
    # zones hold two or three units
    z = stu.drop_duplicates(["var_stratum", "var_zone", "var_unit"]).groupby("var_zone").size()
    assert z.isin([2, 3]).all()


def test_single_unit_strata_join_a_neighbouring_pair():
    units, _ = W.form_zones(["a", "a", "b", "c", "c", "c"], list("pqrstu"), [1, 2, 1, 1, 2, 3])
    assert units["zone"].tolist() == [0, 0, 0, 1, 1, 1]
    assert units["zone_size"].tolist() == [3, 3, 3, 3, 3, 3]
    assert units["zone_unit"].tolist() == [1, 2, 3, 1, 2, 3]
    units, _ = W.form_zones(["b", "a", "a"], list("rpq"), [1, 1, 2])
    assert units["zone"].tolist() == [0, 0, 0] and units["zone_unit"].tolist() == [3, 1, 2]
