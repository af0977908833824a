"""The synthetic province: determinism, realism, and correlations with the truth."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from qualmon.synth import DEFAULT_ROTATION, province


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path):
    a = province(seed=3, years=(2024, 2025), scale=0.03)
    b = province(seed=3, years=(2024, 2025), scale=0.03)
    pa_, pb_ = a.write(tmp_path / "a"), b.write(tmp_path / "b")
    assert pa_.keys() == pb_.keys()
    for k in pa_:
        assert _digest(pa_[k]) == _digest(pb_[k]), k
    c = province(seed=4, years=(2024, 2025), scale=0.03)
    assert not c.tables["student_roster"]["student_id"].equals(a.tables["student_roster"]["student_id"])


def test_a_year_does_not_depend_on_the_other_years_generated():
    alone = province(seed=9, years=(2025,), scale=0.03, tested=None)
    both = province(seed=9, years=(2024, 2025), scale=0.03, tested=None)
    for name in ("county_frame", "school_frame", "student_roster", "item_bank"):
        x = both.tables[name][both.tables[name]["year"] == 2025].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone.tables[name].reset_index(drop=True), x)


def test_counts_and_shape_of_the_province(full_year):
    cf, sf, ros = (full_year.tables[k] for k in ("county_frame", "school_frame", "student_roster"))
    assert len(cf) == 183 and cf["county_id"].is_unique
    per_pref = cf.groupby("prefecture_id").size()
    assert len(per_pref) == 21 and per_pref.min() >= 2 and per_pref.max() == 20
    assert set(cf["county_type"]) == {"district", "county", "city", "dev_zone"}
    # skewed population and economy
    pop = cf["population"]
    assert pop.mean() > 1.1 * pop.median() and pop.max() / pop.min() > 20
    assert cf["gdp_per_capita"].max() / cf["gdp_per_capita"].min() > 4
    assert 60e6 < pop.sum() < 90e6
    # a large province: 0.6-1.2 million students per grade
    for g in (4, 8):
        assert 6e5 < cf[f"grade{g}_enrolment"].sum() < 1.2e6
    # schools: all stages and locales, many small rural schools
    assert set(sf["stage"]) == {"primary", "junior", "nine_year"}
    assert set(sf["locale"]) == {"urban", "town", "rural"}
    prim = sf[sf["grade4_enrolment"] > 0]
    small = (prim["grade4_enrolment"] < 30).mean()
    assert 0.25 < small < 0.70, small
    rural = prim[prim["locale"] == "rural"]["grade4_enrolment"].median()
    urban = prim[prim["locale"] == "urban"]["grade4_enrolment"].median()
    assert urban > 5 * rural
    assert (sf.groupby("county_id")["grade8_enrolment"].sum() > 0).all()
    # frames agree with the roster: enrolment = number of students on the roster
    counts = ros.groupby(["school_id", "grade"]).size().unstack(fill_value=0)
    sfi = sf.set_index("school_id")
    assert (counts.reindex(sfi.index, fill_value=0)[4] == sfi["grade4_enrolment"]).all()
    assert (counts.reindex(sfi.index, fill_value=0)[8] == sfi["grade8_enrolment"]).all()
    cty = sf.groupby("county_id")[["grade4_enrolment", "grade8_enrolment"]].sum()
    assert (cty.reindex(cf["county_id"]).to_numpy() == cf[["grade4_enrolment", "grade8_enrolment"]].to_numpy()).all()
    # pseudonymous identifiers, unique within a year
    assert ros["student_id"].str.fullmatch(r"S[0-9A-F]{15}").all() and ros["student_id"].is_unique
    assert 0.50 < (ros["gender"] == "M").mean() < 0.56
    rural_lb = ros.merge(sf[["school_id", "locale"]]).groupby("locale")["left_behind"].mean()
    assert rural_lb["rural"] > rural_lb["urban"] * 3


def test_ability_follows_the_multilevel_model(full_year):
    t = full_year.truth
    st = t.students.merge(full_year.tables["school_frame"][["school_id", "county_id", "locale"]], on="school_id")
    st = st.merge(full_year.tables["county_frame"][["county_id", "gdp_per_capita"]], on="county_id")
    g4 = st[st["grade"] == 4]
    cm = g4.groupby("county_id").agg(mean=("general", "mean"), gdp=("gdp_per_capita", "first"))
    assert np.corrcoef(cm["mean"], np.log(cm["gdp"]))[0, 1] > 0.4
    loc = g4.groupby("locale")["general"].mean()
    assert loc["urban"] > loc["town"] > loc["rural"]
    assert np.corrcoef(g4["ses"], g4["general"])[0, 1] > 0.2
    assert g4.loc[g4["left_behind"], "general"].mean() < g4.loc[~g4["left_behind"], "general"].mean()
    # variance components: a plausible intra-class correlation for schools
    school_means = g4.groupby("school_id")["general"].agg(["mean", "size"])
    icc = np.average((school_means["mean"] - g4["general"].mean()) ** 2, weights=school_means["size"]) / g4["general"].var()
    assert 0.1 < icc < 0.5, icc
    # subject abilities correlate with the general one, girls ahead in Chinese-type subjects
    for s in full_year.subjects(2024):
        assert np.corrcoef(st[f"theta_{s}"], st["general"])[0, 1] > 0.85


def test_responses_follow_the_item_parameters(full_year):
    r = full_year.tables["responses"]
    assert set(r["status"]) == {"scored", "omitted", "not_reached"}
    assert (r["score"].isna() == (r["status"] != "scored")).all()
    share = r["status"].value_counts(normalize=True)
    assert 0.01 < share["omitted"] < 0.10 and 0.005 < share["not_reached"] < 0.08
    items = full_year.tables["item_bank"]
    # 6 booklets of 24 items per test, every item in exactly 2 booklets
    one = r[r["item_id"].str.startswith("SCI4")]
    per_booklet = one.groupby("booklet")["item_id"].nunique()
    assert len(per_booklet) == 6 and (per_booklet == 24).all()
    assert (one.groupby("item_id")["booklet"].nunique() == 2).all()
    assert set(items["model"]) == {"2PL", "3PL", "GRM", "GPCM"}
    # a student's proportion of the maximum correlates with the true theta
    m = r.merge(items[["year", "item_id", "max_score", "subject"]], on=["year", "item_id"])
    m = m[m["status"] == "scored"]
    pc = m.groupby(["student_id", "subject"]).apply(lambda g: g["score"].sum() / g["max_score"].sum(), include_groups=False).rename("pc").reset_index()
    ab = full_year.truth.abilities
    pc = pc.merge(ab, on=["student_id", "subject"])
    assert np.corrcoef(pc["pc"].astype(float), pc["theta"])[0, 1] > 0.6
    # classical difficulty agrees with the IRT difficulty of 2PL items
    it = full_year.truth.items
    d2 = it[(it["model"] == "2PL") & (it["grade"] == 4)]
    p = m.groupby("item_id")["score"].mean().rename("p")
    d2 = d2.merge(p, left_on="item_id", right_index=True)
    assert np.corrcoef(d2["p"].astype(float), d2["b"])[0, 1] < -0.7


def test_questionnaires_relate_to_the_truth(full_year):
    q = full_year.tables["questionnaire_student"].merge(full_year.truth.students, on=["year", "student_id"])
    ok = q["parent_education"].notna()
    assert np.corrcoef(q.loc[ok, "parent_education"].astype(float), q.loc[ok, "ses"])[0, 1] > 0.5
    ok = q["homework_minutes"].notna() & q["sleep_hours"].notna()
    assert np.corrcoef(q.loc[ok, "homework_minutes"].astype(float), q.loc[ok, "sleep_hours"])[0, 1] < -0.1
    assert q.loc[q["grade"] == 8, "homework_minutes"].mean() > q.loc[q["grade"] == 4, "homework_minutes"].mean()
    assert q.loc[q["grade"] == 8, "sleep_hours"].mean() < q.loc[q["grade"] == 4, "sleep_hours"].mean()
    ok = q["confidence_1"].notna()
    assert np.corrcoef(q.loc[ok, "confidence_1"].astype(float), q.loc[ok, "general"])[0, 1] > 0.2
    assert 0.01 < q["books_at_home"].isna().mean() < 0.04
    t = full_year.tables["questionnaire_teacher"]
    p = full_year.tables["questionnaire_principal"]
    tested_schools = set(full_year.tables["student_roster"].merge(q[["year", "student_id"]])["school_id"])
    assert set(p["school_id"]) == tested_schools and set(t["school_id"]) == tested_schools


def test_cohorts_link_across_years_and_a_county_declines(small_province):
    prov = small_province
    ros = prov.tables["student_roster"]
    ts = prov.truth.students
    g8 = ts[(ts["year"] == 2025) & (ts["grade"] == 8)]
    g4 = ros[(ros["year"] == 2021) & (ros["grade"] == 4)]
    linked = g8[g8["linked"]]
    assert 0.85 < len(linked) / len(g8) < 0.95
    assert set(linked["student_id"]) <= set(g4["student_id"])
    assert not set(g8.loc[~g8["linked"], "student_id"]) & set(g4["student_id"])
    # prior attainment predicts grade-8 ability
    assert np.corrcoef(linked["prior"], linked["general"])[0, 1] > 0.6
    # anchors: the same item with the same parameters three years apart
    it = prov.truth.items
    a21 = it[(it["year"] == 2021) & (it["block"].isin([3, 4]))].set_index("item_id")
    a24 = it[(it["year"] == 2024) & (it["block"].isin([1, 2]))].set_index("item_id")
    assert set(a21.index) == set(a24.index) and len(a21) == 2 * 24 * 3
    pd.testing.assert_series_equal(a21["a"].sort_index(), a24["a"].sort_index())
    # declining counties: their mean ability falls year after year
    tc = prov.truth.counties
    assert tc["declining"].sum() >= 1 and tc["tracked"].sum() >= 1
    assert (tc["declining"] & tc["tracked"]).any()
    st = ts[ts["grade"] == 4].merge(prov.tables["school_frame"][["year", "school_id", "county_id"]], on=["year", "school_id"])
    means = st.groupby(["county_id", "year"])["general"].mean().unstack()
    for cid in tc.loc[tc["declining"], "county_id"]:
        slope = np.polyfit(means.columns, means.loc[cid], 1)[0]
        assert slope < -0.04, (cid, slope)
    others = means.loc[tc.loc[~tc["declining"], "county_id"]]
    assert np.median(np.polyfit(means.columns, others.T.to_numpy(), 1)[0]) > -0.02
    # tracked counties are tested every year
    tested = prov.tables["questionnaire_student"].merge(ros, on=["year", "student_id"]).merge(
        prov.tables["school_frame"][["year", "school_id", "county_id"]], on=["year", "school_id"])
    for cid in tc.loc[tc["tracked"], "county_id"]:
        assert set(tested.loc[tested["county_id"] == cid, "year"]) == set(prov.years)


def test_rotation_and_administer(small_province):
    prov = small_province
    assert prov.subjects(2021) == DEFAULT_ROTATION[1] and prov.subjects(2025) == DEFAULT_ROTATION[2]
    items = prov.tables["item_bank"]
    assert set(items.loc[items["year"] == 2023, "subject"]) == set(DEFAULT_ROTATION[3])
    # a student's responses do not depend on who else is tested
    ros = prov.tables["student_roster"]
    some = ros[ros["year"] == 2022].iloc[[5, 500, 5000]]
    alone = prov.administer(some.iloc[[1]])["responses"]
    together = prov.administer(some)["responses"]
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), together[together["student_id"] == some["student_id"].iloc[1]].reset_index(drop=True))
    with pytest.raises(ValueError, match="not in the province's roster"):
        prov.administer(pd.DataFrame({"year": [2022], "student_id": ["S000000000000000"]}))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="years"):
        province(seed=1, years=())
    with pytest.raises(ValueError, match="unknown subjects"):
        province(seed=1, years=(2024,), rotation={1: ("physics",), 2: (), 3: ()})
