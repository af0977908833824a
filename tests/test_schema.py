"""Data contracts and validation: good and bad inputs, every problem at once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qualmon
from qualmon.io import read_table, write_table, write_tables
from qualmon.schema import contract, contract_names, validate_tables

REQUIRED_TABLES = {
    "county_frame": ["county_id", "county_name", "prefecture_id", "prefecture_name", "population", "gdp_per_capita", "urbanisation", "grade4_enrolment", "grade8_enrolment"],
    "school_frame": ["school_id", "county_id", "school_name", "stage", "locale", "grade4_enrolment", "grade8_enrolment"],
    "student_roster": ["student_id", "school_id", "grade", "gender", "left_behind"],
    "item_bank": ["item_id", "subject", "grade", "year", "item_type", "max_score", "is_anchor"],
    "responses": ["student_id", "item_id", "year", "score"],
    "questionnaire_student": [],
    "questionnaire_teacher": [],
    "questionnaire_principal": [],
    "sample_counties": ["county_id", "prob_county", "weight"],
    "sample_schools": ["school_id", "prob_school", "prob", "weight"],
    "sample_students": ["student_id", "school_id", "grade", "prob_student", "prob", "weight"],
    "scores": ["student_id", "theta", "se"],
}


def test_every_required_contract_exists_with_its_columns():
    names = set(contract_names())
    for table, cols in REQUIRED_TABLES.items():
        assert table in names
        assert set(cols) <= set(contract(table).columns), table
    assert contract("school_frame").field("stage").constraints["enum"] == ["primary", "junior", "nine_year"]
    assert contract("school_frame").field("locale").constraints["enum"] == ["urban", "town", "rural"]
    assert contract("item_bank").field("item_type").constraints["enum"] == ["dichotomous", "polytomous"]


@pytest.mark.parametrize("name", contract_names())
def test_contract_is_well_formed(name):
    c = contract(name)
    raw = json.loads(open(c.path, encoding="utf-8").read())
    assert raw["name"] == name
    assert c.title["zh"] and c.title["en"] and c.description["zh"] and c.description["en"]
    for f in c.fields:
        assert f.description.get("zh") and f.description.get("en"), (name, f.name)
        assert f.arrow_type in {"int8", "int16", "int32", "int64", "float64", "string", "bool"}
    assert set(c.primary_key) <= set(c.columns)
    for fk in c.foreign_keys:
        assert set(fk["fields"]) <= set(c.columns)
        ref = contract(fk["reference"]["resource"])
        assert set(fk["reference"]["fields"]) <= set(ref.columns)
    schema = c.arrow_schema()
    assert schema.names == c.columns


def test_synthetic_tables_meet_their_contracts(small_province):
    typed = validate_tables(small_province.tables)
    assert set(typed) == set(small_province.tables)
    ros = typed["student_roster"]
    assert ros["year"].dtype == np.int16 and ros["grade"].dtype == np.int8
    assert typed["responses"]["score"].dtype == "Int8"


def _roster(n=6):
    return pd.DataFrame(
        {
            "year": np.full(n, 2024),
            "student_id": [f"S{i:015X}" for i in range(1, n + 1)],
            "school_id": ["5101010001"] * n,
            "grade": [4, 8] * (n // 2),
            "gender": ["F", "M"] * (n // 2),
            "left_behind": [True, False] * (n // 2),
            "migrant": [False] * n,
        }
    )


def test_every_problem_is_reported_at_once():
    df = _roster()
    df.loc[1, "grade"] = 5  # not allowed
    df.loc[2, "gender"] = None  # required
    df.loc[3, "student_id"] = df.loc[4, "student_id"]  # duplicate key
    df.loc[5, "student_id"] = "12345"  # pattern
    df = df.drop(columns="migrant")  # missing column
    with pytest.raises(qualmon.ContractError) as err:
        qualmon.validate("student_roster", df)
    probs = err.value.problems
    got = set(zip(probs["column"], probs["check"]))
    assert ("grade", "enum") in got
    assert ("gender", "required") in got
    assert ("(year, student_id)", "primary_key") in got
    assert ("student_id", "pattern") in got
    assert ("migrant", "missing") in got
    msg = str(err.value)
    assert "student_roster" in msg and "'grade'" in msg and "one of {4, 8}" in msg
    # the offending rows are named by their key and counted
    row = probs[(probs["column"] == "grade") & (probs["check"] == "enum")].iloc[0]
    assert row["n_rows"] == 1 and "student_id=S000000000000002" in row["rows"] and row["found"] == "5"
    dup = probs[probs["check"] == "primary_key"].iloc[0]
    assert dup["n_rows"] == 2


def test_wrong_types_are_reported_and_lossless_coercion_is_done():
    df = _roster()
    df["grade"] = df["grade"].astype(float)  # integral floats: fine, coerced
    out = qualmon.validate("student_roster", df)
    assert out["grade"].dtype == np.int8
    df.loc[0, "grade"] = 4.5
    df["left_behind"] = ["yes"] * len(df)
    with pytest.raises(qualmon.ContractError) as err:
        qualmon.validate("student_roster", df)
    p = err.value.problems
    assert set(p.loc[p["check"] == "type", "column"]) == {"grade", "left_behind"}


def test_broken_foreign_keys_are_reported():
    df = _roster()
    schools = pd.DataFrame({"year": [2024], "school_id": ["5101010002"], "county_id": ["510101"]})
    with pytest.raises(qualmon.ContractError) as err:
        qualmon.validate("student_roster", df, references={"school_frame": schools})
    p = err.value.problems.iloc[0]
    assert p["check"] == "foreign_key" and p["n_rows"] == len(df) and "school_frame" in p["expected"]
    schools.loc[0, "school_id"] = "5101010001"
    qualmon.validate("student_roster", df, references={"school_frame": schools})


def test_row_rules_are_checked(small_province):
    sf = small_province.tables["school_frame"].head(50).copy()
    prim = sf.index[sf["stage"] == "primary"][:2]
    sf.loc[prim, "grade8_enrolment"] = 7
    with pytest.raises(qualmon.ContractError) as err:
        qualmon.validate("school_frame", sf)
    p = err.value.problems
    assert p.loc[p["column"] == "primary_has_no_grade8", "n_rows"].iloc[0] == 2


# --- hypothesis: any single bad value in any constrained column is caught and located
def _bad_values(field):
    c = field.constraints
    out = []
    if "enum" in c:
        out.append("zz" if field.type == "string" else 99 if field.type == "integer" else None)
    if "minimum" in c:
        out.append(c["minimum"] - (1 if field.type == "integer" else 0.5))
    if "maximum" in c:
        out.append(c["maximum"] + 1)
    if "pattern" in c:
        out.append("!bad!")
    if field.required:
        out.append(None)
    return [v for v in out if v is not None or field.required]


_CASES = [
    (t, f.name, v)
    for t in ("county_frame", "school_frame", "student_roster", "item_bank", "responses", "questionnaire_student")
    for f in contract(t).fields
    for v in _bad_values(f)
    if not (f.name == "year")
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(_CASES), rows=st.sets(st.integers(0, 19), min_size=1, max_size=5))
def test_hypothesis_bad_values_are_caught(small_province, case, rows):
    table, column, bad = case
    df = small_province.tables[table].head(20).copy()
    rows = sorted(rows)
    if bad is None:
        df[column] = df[column].astype(object)
    elif isinstance(bad, str) and not pd.api.types.is_string_dtype(df[column].dtype):
        df[column] = df[column].astype(object)
    elif isinstance(bad, float) and pd.api.types.is_integer_dtype(df[column].dtype):
        df[column] = df[column].astype("float64")
    df.loc[df.index[rows], column] = bad
    with pytest.raises(qualmon.ContractError) as err:
        qualmon.validate(table, df)
    p = err.value.problems
    hit = p[p["column"] == column]
    assert len(hit), (table, column, bad, p)
    # the bad cells are counted (a pattern-breaking key may also duplicate the primary key)
    assert hit["n_rows"].max() == len(rows) or (bad is not None and hit["check"].isin(["type"]).any())


# --- I/O: validate on read, atomic writes, nothing half-written
def test_nothing_is_written_when_validation_fails(tmp_path):
    good = _roster()
    target = tmp_path / "student_roster.parquet"
    write_table("student_roster", good, target)
    before = target.read_bytes()
    bad = good.copy()
    bad.loc[0, "grade"] = 7
    with pytest.raises(qualmon.ContractError):
        write_table("student_roster", bad, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student_roster.parquet"]
    with pytest.raises(qualmon.ContractError):
        write_tables({"student_roster": good, "school_frame": pd.DataFrame({"year": [2024]})}, tmp_path / "two")
    assert not (tmp_path / "two").exists() or not any((tmp_path / "two").iterdir())


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_table("student_roster", _roster(), tmp_path / "r.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".xlsx"])
def test_round_trip_keeps_types_and_leading_zeros(tmp_path, suffix, small_province):
    sf = small_province.tables["school_frame"].head(30)
    path = tmp_path / f"school_frame{suffix}"
    write_table("school_frame", sf, path)
    back = read_table("school_frame", path)
    assert back["school_id"].tolist() == sf["school_id"].tolist()
    assert back["grade4_enrolment"].dtype == np.int32
    pd.testing.assert_frame_equal(back.reset_index(drop=True), qualmon.validate("school_frame", sf).reset_index(drop=True), check_dtype=True)
    qualmon.validate("school_frame", path)  # a path works too


def test_parquet_has_the_contract_arrow_types(tmp_path, small_province):
    import pyarrow.parquet as pq

    path = tmp_path / "responses.parquet"
    write_table("responses", small_province.tables["responses"].head(100), path)
    schema = pq.read_schema(path)
    assert str(schema.field("score").type) == "int8" and str(schema.field("year").type) == "int16"
    assert str(schema.field("status").type) == "string"


def test_unknown_table_and_file_errors(tmp_path):
    with pytest.raises(KeyError, match="no contract named"):
        qualmon.validate("nope", pd.DataFrame())
    with pytest.raises(FileNotFoundError):
        qualmon.validate("student_roster", tmp_path / "missing.parquet")


# --- the key checks agree with plain set logic on any keys (mixed widths, nulls, dtypes)
_keys = st.tuples(st.integers(2020, 2022), st.one_of(st.none(), st.text(alphabet="AB0", min_size=0, max_size=4)))


@settings(max_examples=150, deadline=None)
@given(left=st.lists(_keys, max_size=30), right=st.lists(_keys, max_size=30))
def test_key_checks_match_set_logic(left, right):
    from qualmon.schema import _broken_foreign_keys, _duplicate_positions

    ldf = pd.DataFrame(left, columns=["year", "id"]).astype({"year": "int16", "id": "str"}) if left else pd.DataFrame({"year": pd.Series([], dtype="int16"), "id": pd.Series([], dtype="str")})
    rdf = pd.DataFrame(right, columns=["y", "k"]).astype({"y": "int64", "k": object}) if right else pd.DataFrame({"y": [], "k": []})
    ref = {(y, k) for y, k in right if k is not None}
    expected = [i for i, (y, k) in enumerate(left) if k is not None and (y, k) not in ref]
    assert _broken_foreign_keys(ldf, ["year", "id"], rdf, ["y", "k"]).tolist() == expected
    seen = pd.Series([f"{y}|{k}" for y, k in left], dtype=object)
    dup_expected = np.flatnonzero(seen.duplicated(keep=False).to_numpy()).tolist() if left else []
    assert _duplicate_positions(ldf, ["year", "id"]).tolist() == dup_expected
