"""The three-stage draw (qualmon.sampling.stages) on the synthetic province."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import qualmon
from qualmon.design import ReplicateDesign
from qualmon.io import write_tables
from qualmon.sampling import pps
from qualmon.sampling.stages import (SamplingError, cycle_sample, draw, draw_counties, read_design,
                                   simulate_participation)
from qualmon.sampling.plan import SamplingPlan

YEAR = 2024


@pytest.fixture(scope="module")
def prov():
    return qualmon.synth.province(seed=11, years=(YEAR,), scale=0.2, tested=None)


@pytest.fixture(scope="module")
def plan():
    return SamplingPlan(year=YEAR, seed=5, cycle_start=YEAR)


@pytest.fixture(scope="module")
def sample(prov, plan):
    return draw(plan, prov)


@pytest.fixture(scope="module")
def county_frames(prov):
    """The county frame repeated for the three years of the cycle (national flags kept)."""
    cf = prov.tables["county_frame"]
    return pd.concat([cf.assign(year=np.int16(y)) for y in (YEAR, YEAR + 1, YEAR + 2)], ignore_index=True)


# ------------------------------------------------------------------ contracts
@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")
def test_tables_meet_the_contracts(sample, prov):
    typed = qualmon.schema.validate_tables(sample.tables(), references={
        "county_frame": prov.tables["county_frame"], "school_frame": prov.tables["school_frame"],
        "student_roster": prov.tables["student_roster"]})
    stu = typed["sample_students"]
    assert stu["student_id"].str.fullmatch(r"S[0-9A-F]{15}").all()  # pseudonymous roster ids only
    p = stu["prob_county"] * stu["prob_school"] * stu["prob_student"]
    np.testing.assert_allclose(stu["prob"], p, rtol=1e-14)
    np.testing.assert_allclose(stu["base_weight"], 1 / p, rtol=1e-14)
    assert [f"rw{r}" for r in range(1, 81)] == [c for c in stu.columns if c.startswith("rw")]


# ------------------------------------------------------------------ counties
def test_county_probabilities(sample, prov):
    c = sample.counties
    assert set(c["selection"]) == {"sampled"}
    np.testing.assert_allclose(c["prob_county"], c["prob_cycle"] / 3, rtol=1e-15)
    nat = set(prov.tables["county_frame"].query("national_sample")["county_id"])
    assert not nat & set(c["county_id"])  # national="exclude" (default)
    assert set(sample.excluded["county_id"]) == nat
    # about 10 % of 183 counties a year: 54 in the cycle split 18/18/18 up to the per-prefecture rounding
    cyc = sample.cycle
    assert cyc["cycle_selected"].sum() == 3 * 18
    assert cyc.groupby("stratum")["cycle_selected"].sum().min() >= 1


def test_national_force_and_tracked(prov, plan):
    tracked = ("511105", "511108")
    c = draw_counties(plan.replace(national="force", tracked_counties=tracked), prov.tables["county_frame"])
    nat = set(prov.tables["county_frame"].query("national_sample")["county_id"]) - set(tracked)
    got = c.set_index("county_id")
    assert nat <= set(got.index) and (got.loc[sorted(nat), "selection"] == "national").all()
    assert (got.loc[list(tracked), "selection"] == "tracked").all()
    assert (got.loc[list(nat) + list(tracked), "prob_county"] == 1.0).all()
    samp = got[got["selection"] == "sampled"]
    np.testing.assert_allclose(samp["prob_county"], samp["prob_cycle"] / 3)
    with pytest.raises(SamplingError, match="'tracked_counties'.*999999"):
        draw_counties(plan.replace(tracked_counties=("999999",)), prov.tables["county_frame"])


def test_cycle_covers_every_prefecture_and_never_repeats(county_frames):
    tracked = ("511105",)
    prefectures = set(county_frames["prefecture_id"])
    for seed in range(60):
        years = []
        for y in (YEAR, YEAR + 1, YEAR + 2):
            p = SamplingPlan(year=y, seed=seed, cycle_start=YEAR, national="ignore", tracked_counties=tracked)
            years.append(draw_counties(p, county_frames))
        allc = pd.concat(years)
        assert set(allc["prefecture_id"]) == prefectures, seed  # 21 prefectures covered in the cycle
        counts = allc["county_id"].value_counts()
        assert counts.loc[list(tracked)].eq(3).all()
        assert counts.drop(list(tracked)).max() == 1, seed  # no county twice in a cycle unless tracked


def test_county_inclusion_probabilities_monte_carlo(county_frames):
    """P(county i in year y) = pi_cyc_i / 3 for every cycle year: per-county
    binomial tests over 500 cycles, Bonferroni at family-wise level 0.001."""
    R = 500
    base = SamplingPlan(year=YEAR, seed=0, cycle_start=YEAR, national="ignore")
    ref = cycle_sample(base, county_frames).set_index("county_id")
    counts = np.zeros((len(ref), 3))
    for seed in range(R):
        cyc = cycle_sample(base.replace(seed=seed), county_frames).set_index("county_id").loc[ref.index]
        a = cyc["assigned_cycle_year"].to_numpy()
        for y in (1, 2, 3):
            counts[:, y - 1] += a == y
    p = np.repeat((ref["prob_cycle"].to_numpy() / 3)[:, None], 3, axis=1)
    lo = stats.binom.cdf(counts, R, p)
    hi = stats.binom.sf(counts - 1, R, p)
    pval = np.minimum(1, 2 * np.minimum(lo, hi))
    assert np.all(pval > 0.001 / pval.size), np.argwhere(pval <= 0.001 / pval.size)
    # and the cycle sample itself: exactly n_h counties per stratum every time
    assert cycle_sample(base.replace(seed=3), county_frames).groupby("stratum").apply(
        lambda d: d["cycle_selected"].sum() == d["n_stratum"].max()).all()


# ------------------------------------------------------------------ schools
def test_school_stage_probabilities_and_caps(sample, prov, plan):
    sf = prov.tables["school_frame"]
    o = sample.schools[sample.schools["role"] == "original"]
    for (cid, g), d in o.groupby(["county_id", "grade"]):
        fr = sf[(sf["county_id"] == cid) & sf["stage"].isin(plan.school_stages[g]) & (sf[f"grade{g}_enrolment"] > 0)]
        n = min(plan.max_schools[g], len(fr))
        assert len(d) == n  # cap respected; all schools when the county has no more than the cap
        mos = np.maximum(fr[f"grade{g}_enrolment"].to_numpy(), 30).astype(float)
        pik = pd.Series(pps.inclusion_probabilities(mos, n), index=fr["school_id"].to_numpy())
        np.testing.assert_allclose(d["prob_school"].to_numpy(), pik.loc[d["school_id"]].to_numpy(), rtol=1e-12)
        cert = pik[pik == 1.0].index
        assert set(cert) <= set(d["school_id"])  # certainty schools always taken
        if len(fr) <= plan.max_schools[g]:
            assert (d["prob_school"] == 1.0).all()
        else:
            rest = pik < 1
            interval = mos[rest.to_numpy()].sum() / (n - (~rest).sum())
            assert np.all(mos[~rest.to_numpy()] >= interval * (1 - 1e-12))
    assert (o.groupby(["county_id", "grade"]).size().unstack()[4] <= 18).all()
    assert (o.groupby(["county_id", "grade"]).size().unstack()[8] <= 12).all()


def test_replacement_schools(sample):
    s = sample.schools
    assert not s.duplicated(["grade", "school_id"]).any()  # never sampled twice, never two roles
    orig = s[s["role"] == "original"].set_index(["grade", "school_id"])
    for role, step in (("replacement1", 1), ("replacement2", -1)):
        r = s[s["role"] == role]
        o = orig.loc[list(zip(r["grade"], r["replaces"]))]
        np.testing.assert_array_equal(r["frame_pos"].to_numpy(), o["frame_pos"].to_numpy() + step)
        np.testing.assert_array_equal(r["prob_school"].to_numpy(), o["prob_school"].to_numpy())  # inherited
        assert (r["county_id"].to_numpy() == o["county_id"].to_numpy()).all()
        assert not r["participated"].any()
    assert s.loc[s["role"] == "original", "replaces"].isna().all()


# ------------------------------------------------------------------ students
def test_students_per_school(sample, prov, plan):
    stu = sample.students
    ro = prov.tables["student_roster"]
    M = ro.groupby(["school_id", "grade"]).size()
    per = stu.groupby(["school_id", "grade"]).agg(n=("student_id", "size"), cohort=("cohort", "first"),
                                                  m=("sampled_in_school", "first"))
    np.testing.assert_array_equal(per["cohort"].to_numpy(), M.loc[per.index].to_numpy())
    np.testing.assert_array_equal(per["n"].to_numpy(), per["m"].to_numpy())
    np.testing.assert_array_equal(per["m"].to_numpy(), plan.students_to_sample(per["cohort"].to_numpy()))
    assert ((per["n"] % 30 == 0) | (per["n"] == per["cohort"])).all()  # 30 or multiples of 30, or everyone
    assert (per.loc[per["cohort"] < 30, "n"] == per.loc[per["cohort"] < 30, "cohort"]).all()
    np.testing.assert_allclose(stu["prob_student"], stu["sampled_in_school"] / stu["cohort"])
    key = ro.set_index("student_id").loc[stu["student_id"], ["school_id", "grade"]]
    assert (key["school_id"].to_numpy() == stu["school_id"].to_numpy()).all()
    assert (key["grade"].to_numpy() == stu["grade"].to_numpy()).all()


# ------------------------------------------------------------------ reproducibility
def test_same_plan_same_bytes(prov, plan, tmp_path):
    a = draw(plan, prov).write(tmp_path / "a")
    b = draw(plan, prov).write(tmp_path / "b")
    for k in a:
        assert a[k].read_bytes() == b[k].read_bytes(), k
    c = draw(plan.replace(seed=6), prov)
    assert set(c.students["student_id"]) != set(pd.read_parquet(a["sample_students"])["student_id"])


def test_frames_folder_gives_the_same_sample(prov, plan, sample, tmp_path):
    write_tables({k: prov.tables[k] for k in ("county_frame", "school_frame", "student_roster")}, tmp_path)
    s2 = draw(plan, tmp_path)
    pd.testing.assert_frame_equal(s2.students.astype({"student_id": str}), sample.students.astype({"student_id": str}),
                                  check_dtype=False)
    np.testing.assert_array_equal(s2.replicate_weights, sample.replicate_weights)


def test_design_and_read_back(sample, prov, tmp_path):
    truth = prov.truth.students[["year", "student_id", "general"]]
    d = sample.design(truth)
    assert isinstance(d, ReplicateDesign) and d.n_replicates == 80
    est = d.mean("general", by="grade")
    assert est["se"].gt(0).all()
    tot = d.total("general", by="grade")
    # the ones-total is the benchmarked enrolment, with no replicate variation
    ones = sample.design(truth.assign(one=1.0)[["year", "student_id", "one"]]).total("one", by="grade")
    frame = prov.tables["school_frame"]
    np.testing.assert_allclose(ones["estimate"], [frame["grade4_enrolment"].sum(), frame["grade8_enrolment"].sum()])
    assert ones["se"].max() < 1e-6 * ones["estimate"].min()
    sample.write(tmp_path)
    back = read_design(tmp_path, truth).mean("general", by="grade")
    np.testing.assert_allclose(back["estimate"], est["estimate"], rtol=1e-12)
    np.testing.assert_allclose(back["se"], est["se"], rtol=1e-12)
    assert np.isfinite(tot["estimate"]).all()


# ------------------------------------------------------------------ participation
def test_replacements_step_in(sample):
    s = sample.schools
    o = s[(s["role"] == "original") & s["school_id"].isin(s.loc[s["role"] == "replacement1", "replaces"])].iloc[0]
    r1 = s[(s["role"] == "replacement1") & (s["replaces"] == o["school_id"]) & (s["grade"] == o["grade"])].iloc[0]
    refuse = pd.DataFrame({"school_id": [o["school_id"], r1["school_id"]], "grade": [o["grade"]] * 2,
                           "participated": [False, True]})
    s2 = sample.with_participation(schools=refuse)
    got = s2.students[s2.students["school_id"] == r1["school_id"]]
    assert len(got) > 0 and (got["school_role"] == "replacement1").all()
    assert (got["prob_school"] == o["prob_school"]).all()
    assert not (s2.students["school_id"] == o["school_id"]).any()
    with pytest.raises(SamplingError, match="replacement schools"):
        sample.with_participation(schools=refuse.assign(participated=[True, True]))
    with pytest.raises(SamplingError, match="not sampled or replacement"):
        sample.with_participation(schools=pd.DataFrame({"school_id": ["0000000000"], "grade": [4],
                                                        "participated": [True]}))


def test_simulated_participation_is_deterministic(sample):
    a = simulate_participation(sample, 0.9, 0.9, seed=3)
    b = simulate_participation(sample, 0.9, 0.9, seed=3)
    pd.testing.assert_frame_equal(a.students, b.students)
    part = a.report.participation
    assert (part["school_before_weighted"] <= part["school_after_weighted"] + 1e-12).all()
    assert part["student_unweighted"].between(0.85, 0.95).all()
    assert (a.students.loc[~a.students["participated"], "weight"] == 0).all()
    assert a.students.groupby("grade")["weight"].sum().to_numpy() == pytest.approx(
        sample.students.groupby("grade")["weight"].sum().to_numpy())


# ------------------------------------------------------------------ report and errors
def test_report(sample):
    rep = sample.report
    sizes = rep.sizes.set_index(["stage", "grade", "quantity"])
    assert sizes.loc[("counties", 0, "number"), "realised"] == len(sample.counties)
    for g in (4, 8):
        assert sizes.loc[("schools", g, "number"), "realised"] == ((sample.schools["role"] == "original")
                                                                   & (sample.schools["grade"] == g)).sum()
        assert sizes.loc[("enrolment", g, "sum of final weights"), "realised"] == pytest.approx(
            sizes.loc[("enrolment", g, "sum of final weights"), "expected"])
    assert (rep.participation["school_after_weighted"] == 1).all()
    assert rep.allocation["cycle_selected"].sum() == 54
    assert set(rep.design_effects["variable"]) == {"urban_school", "school_enrolment"}
    assert (rep.design_effects["deff"] > 1).all()  # clustered school-level variables
    assert {"measure", "grade", "realised"} <= set(rep.summary().columns)
    assert "Sample report" in rep._repr_html_() and "qualmon sample" in sample._repr_html_()
    assert len(sample.summary()) == 2


def test_errors(prov, plan):
    with pytest.raises(SamplingError, match="must be a SamplingPlan"):
        draw({"year": 2024}, prov)
    with pytest.raises(SamplingError, match="student_roster"):
        draw(plan, {k: prov.tables[k] for k in ("county_frame", "school_frame")})
    with pytest.raises(SamplingError, match="columns \\['locale'\\]"):
        draw(plan, {**prov.tables, "school_frame": prov.tables["school_frame"].drop(columns="locale")})
    with pytest.raises(SamplingError, match="no rows for year 2030"):
        draw(plan.replace(year=2030), prov)
    ro = prov.tables["student_roster"]
    with pytest.raises(SamplingError, match="no students of the sampled grade"):
        draw(plan, {**prov.tables, "student_roster": ro[ro["grade"] == 8]})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), cap4=st.integers(1, 25), cap8=st.integers(1, 15),
       small=st.sampled_from([0, 30]), order=st.sampled_from(["serpentine", "random", "frame"]),
       national=st.sampled_from(["exclude", "force", "ignore"]))
def test_caps_and_multiples_of_30_always_hold(prov, seed, cap4, cap8, small, order, national):
    plan = SamplingPlan(year=YEAR, seed=seed, max_schools={4: cap4, 8: cap8}, small_school_mos=small,
                        school_order=order, national=national)
    s = draw(plan, prov)
    o = s.schools[s.schools["role"] == "original"]
    per = o.groupby(["county_id", "grade"]).size().unstack(fill_value=0)
    assert (per.get(4, 0) <= cap4).all() and (per.get(8, 0) <= cap8).all()
    st_ = s.students.groupby(["school_id", "grade"]).agg(n=("student_id", "size"), M=("cohort", "first"))
    assert ((st_["n"] % 30 == 0) | (st_["n"] == st_["M"])).all()
    assert (st_.loc[st_["M"] <= 30, "n"] == st_.loc[st_["M"] <= 30, "M"]).all()
    np.testing.assert_allclose(s.students.groupby("grade")["weight"].sum().to_numpy(),
                               [prov.tables["school_frame"]["grade4_enrolment"].sum(),
                                prov.tables["school_frame"]["grade8_enrolment"].sum()], rtol=1e-9)


def test_design_joins_outcomes_without_year(sample, prov):
    truth = prov.truth.students[["student_id", "general"]]
    a = sample.design(truth).mean("general", by="grade")
    b = sample.design(prov.truth.students[["year", "student_id", "general"]]).mean("general", by="grade")
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(SamplingError, match="'student_id' is missing"):
        sample.design(truth.rename(columns={"student_id": "sid"}))


def test_report_design_effect_of_true_ability(sample, prov):
    from qualmon.sampling.report import sample_report

    truth = prov.truth.students[["year", "student_id", "general"]]
    de = sample_report(sample, outcome=truth).design_effects.set_index(["variable", "grade"])
    est = sample.design(truth).mean("general", by="grade")
    np.testing.assert_allclose(de.loc["general", "estimate"].to_numpy(), est["estimate"].to_numpy())
    np.testing.assert_allclose(de.loc["general", "deff"].to_numpy(), est["deff"].to_numpy())
    assert (de.loc["general", "deff"] > 1).all()  # counties are clusters: the design effect exceeds 1
