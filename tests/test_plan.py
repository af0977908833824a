"""The sampling plan (qualmon.sampling.plan): defaults, validation, TOML."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualmon.sampling.plan import DEFAULT_PLAN_PATH, PlanError, SamplingPlan


def test_defaults_are_the_provincial_plan():
    p = SamplingPlan(year=2024, seed=1)
    # provincial plan §二: ~10 % of counties a year, <= 18 primary / 12 junior schools, 30 or multiples of 30
    assert p.county_fraction == 0.10
    assert p.max_schools == {4: 18, 8: 12}
    assert p.grades == (4, 8)
    assert p.county_strata == ("prefecture_id",)
    assert p.county_sort == ("population", "gdp_per_capita", "edu_index") and p.county_bands == 3
    assert p.school_sort == ("locale", "stage", "township_id")
    assert all(n % 30 == 0 for _, n in p.student_bands)
    assert p.replicate_method == "Fay" and p.replicates == 80 and p.rho == 0.5  # PISA
    assert p.cycle_length == 3 and p.cycle_start == 2021 and p.cycle_year == 1  # 2024 - 2021 = 3 -> year 1
    assert p.replace(year=2025).cycle_year == 2 and p.replace(year=2026).cycle_year == 3
    assert p.cycle_first_year == 2024


def test_cycle_year_and_start_consistency():
    assert SamplingPlan(year=2025, seed=1, cycle_year=2).cycle_start == 2024
    assert SamplingPlan(year=2025, seed=1, cycle_start=2023).cycle_year == 3
    with pytest.raises(PlanError, match="'cycle_year'.*contradicts"):
        SamplingPlan(year=2025, seed=1, cycle_start=2024, cycle_year=1)


@pytest.mark.parametrize("cohort, expect", [(1, 1), (12, 12), (29, 29), (30, 30), (31, 30), (150, 30),
                                            (151, 60), (300, 60), (301, 90), (2000, 90)])
def test_students_to_sample_rule(cohort, expect):
    assert int(SamplingPlan(year=2024, seed=1).students_to_sample([cohort])[0]) == expect


@settings(max_examples=200, deadline=None)
@given(M=st.integers(1, 5000))
def test_students_always_all_or_multiple_of_30(M):
    m = int(SamplingPlan(year=2024, seed=1).students_to_sample([M])[0])
    assert m == M or (m % 30 == 0 and m < M)
    assert m <= M and (M > 30 or m == M)


def test_toml_round_trip(tmp_path):
    p = SamplingPlan(year=2025, seed=99, tracked_counties=("511105", "511108"), national="force",
                     max_schools={4: 15, 8: 10}, student_bands=((120, 30), (math.inf, 60)),
                     replicate_method="jk2", replicates=75, trim_factor=None, benchmark_by=("locale",))
    path = tmp_path / "plan.toml"
    text = p.to_toml(path)
    assert path.read_text(encoding="utf-8") == text
    q = SamplingPlan.from_toml(path)
    assert q == p
    assert q.replicate_method == "JK2" and q.trim_factor is None and q.max_schools == {4: 15, 8: 10}
    assert SamplingPlan.loads(q.to_toml()) == p


def test_default_plan_file_is_the_default_plan():
    p = SamplingPlan.from_toml(DEFAULT_PLAN_PATH)
    assert p == SamplingPlan(year=2024, seed=20240501, cycle_start=2024)


@pytest.mark.parametrize("kw, field", [
    ({"county_fraction": 0}, "county_fraction"),
    ({"county_fraction": 1.5}, "county_fraction"),
    ({"national": "maybe"}, "national"),
    ({"county_method": "srs"}, "county_method"),
    ({"student_bands": ((150, 25), (math.inf, 60))}, "student_bands"),
    ({"student_bands": ((150, 30), (300, 60))}, "student_bands"),
    ({"student_bands": ((300, 30), (150, 60), (math.inf, 90))}, "student_bands"),
    ({"replicates": 81}, "replicates"),
    ({"replicate_method": "magic"}, "replicate_method"),
    ({"rho": 1.0}, "rho"),
    ({"tracked_counties": ("511105",), "certainty_counties": ("511105",)}, "tracked_counties"),
    ({"max_schools": {4: 18}}, "max_schools"),
    ({"max_schools": {4: 0, 8: 12}}, "max_schools"),
    ({"school_order": "alphabetical"}, "school_order"),
    ({"replacements": 3}, "replacements"),
    ({"trim_factor": 0.5}, "trim_factor"),
    ({"benchmark": "yes"}, "benchmark"),
    ({"grades": (4, 4)}, "grades"),
    ({"seed": -1}, "seed"),
    ({"year": 1999}, "year"),
    ({"county_strata": ("prefecture_id", "prefecture_id")}, "county_strata"),
])
def test_validation_names_the_field(kw, field):
    with pytest.raises(PlanError, match=f"'{field}"):
        SamplingPlan(**{"year": 2024, "seed": 1, **kw})


def test_toml_errors():
    with pytest.raises(PlanError, match="unknown key 'fractoin' in \\[counties\\]"):
        SamplingPlan.loads("[cycle]\nyear = 2024\nseed = 1\n[counties]\nfractoin = 0.1\n")
    with pytest.raises(PlanError, match="'seed': missing"):
        SamplingPlan.loads("[cycle]\nyear = 2024\n")
    with pytest.raises(PlanError, match="invalid TOML"):
        SamplingPlan.loads("[cycle\nyear = 2024\n")
    with pytest.raises(FileNotFoundError):
        SamplingPlan.from_toml("/nonexistent/plan.toml")


@settings(max_examples=50, deadline=None)
@given(year=st.integers(2000, 2100), seed=st.integers(0, 2**32), frac=st.floats(0.01, 1.0),
       cap4=st.integers(1, 40), cap8=st.integers(1, 40), method=st.sampled_from(["Fay", "JK2", "JKn", "bootstrap"]),
       national=st.sampled_from(["exclude", "force", "ignore"]), trim=st.one_of(st.none(), st.floats(1.5, 10)))
def test_any_valid_plan_round_trips(year, seed, frac, cap4, cap8, method, national, trim):
    p = SamplingPlan(year=year, seed=seed, county_fraction=frac, max_schools={4: cap4, 8: cap8},
                     replicate_method=method, replicates=80 if method == "Fay" else 75, national=national,
                     trim_factor=trim)
    assert SamplingPlan.loads(p.to_toml()) == p


def test_summary_and_html():
    p = SamplingPlan(year=2024, seed=1)
    s = p.summary()
    assert {"section", "setting", "value"} <= set(s.columns)
    assert s.loc[s["setting"] == "fraction", "value"].item() == "0.1"
    assert "SamplingPlan" in p._repr_html_()
