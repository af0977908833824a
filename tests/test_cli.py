"""The qualmon command: verbs, exit codes, files written."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from qualmon.cli import main
from qualmon.schema import contract_names


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["--quiet", "synth", "--seed", "2", "--years", "2024-2025", "--scale", "0.03", "--out", str(out)]) == 0
    return out


def test_synth_writes_every_table_and_the_truth(synth_dir):
    written = {p.stem for p in synth_dir.glob("*.parquet")}
    expected = {"county_frame", "school_frame", "student_roster", "item_bank", "responses",
                "questionnaire_student", "questionnaire_teacher", "questionnaire_principal"}
    assert expected == written and written <= set(contract_names())
    truth = pd.read_parquet(synth_dir / "truth" / "counties.parquet")
    assert {"county_id", "declining"} <= set(truth.columns)
    assert truth["declining"].dtype == bool and truth["declining"].any()
    assert sorted(pd.read_parquet(synth_dir / "county_frame.parquet")["year"].unique()) == [2024, 2025]


def test_validate_good_file_exits_0(synth_dir, capsys):
    assert main(["validate", "student_roster", str(synth_dir / "student_roster.parquet")]) == 0
    out = capsys.readouterr().out
    assert "meet the contract 'student_roster'" in out and "school_frame" in out  # foreign key checked


def test_validate_bad_file_exits_1_and_names_the_problem(synth_dir, tmp_path, capsys):
    ros = pd.read_parquet(synth_dir / "student_roster.parquet")
    ros.loc[3, "grade"] = 6
    bad = tmp_path / "student_roster.csv"
    ros.to_csv(bad, index=False)
    assert main(["validate", "student_roster", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "column 'grade' [enum]" in err and "1 row" in err and "student_id=" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", "x"])  # --seed missing
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["synth", "--seed", "1", "--years", "twenty", "--out", "x"])
    assert e.value.code == 2
    assert main(["validate", "no_such_table", "x.parquet"]) == 2
    assert main(["validate", "student_roster", "missing.parquet"]) == 1


def test_help_everywhere():
    for args in (["--help"], ["synth", "--help"], ["validate", "--help"], ["sample", "--help"], ["score", "--help"], ["demo", "--help"]):
        r = subprocess.run([sys.executable, "-m", "qualmon.cli", *args], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: qualmon" in r.stdout


def test_demo_writes_inputs_under_data(tmp_path):
    out = tmp_path / "out"
    assert main(["--quiet", "demo", "--out", str(out), "--years", "2024", "--scale", "0.03"]) == 0
    assert (out / "data" / "student_roster.parquet").is_file()
    assert (out / "data" / "truth" / "counties.parquet").is_file()
    assert (out / "sample" / "2024" / "sample_students.parquet").is_file()
    scores = pd.read_parquet(out / "scores" / "2024" / "scores.parquet")
    tested = pd.read_parquet(out / "data" / "questionnaire_student.parquet")
    assert set(scores["student_id"]) == set(tested["student_id"])
    est = pd.read_csv(out / "estimates.csv")
    assert set(est["subject"]) == {"science", "arts", "labour"} and (est["se"] > 0).all()


def test_sample_verb_is_reproducible(synth_dir, tmp_path, capsys):
    from qualmon.sampling import SamplingPlan

    plan = tmp_path / "plan.toml"
    SamplingPlan(year=2024, seed=7, cycle_start=2024).to_toml(plan)
    for run in ("a", "b"):
        assert main(["--quiet", "sample", str(plan), "--frames", str(synth_dir), "--out", str(tmp_path / run)]) == 0
    for name in ("sample_counties", "sample_schools", "sample_students"):
        a, b = (tmp_path / r / f"{name}.parquet" for r in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
    st = pd.read_parquet(tmp_path / "a" / "sample_students.parquet")
    assert {"prob_county", "prob_school", "prob_student", "prob", "weight"} <= set(st.columns)
    bad = tmp_path / "bad.toml"
    bad.write_text(plan.read_text().replace("fraction = 0.1", "fraction = 7"))
    assert main(["sample", str(bad), "--frames", str(synth_dir), "--out", str(tmp_path / "c")]) == 1
    assert "fraction" in capsys.readouterr().err
