"""Scoring the synthetic province: recovery of the truth, plausible values vs EAP,
trends through anchor items, questionnaire indices, and the score verb."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import qualmon
from qualmon.scoring.questionnaire import scale_indices
from qualmon.scoring.workflow import read_bases, score_year, write_year


@pytest.fixture(scope="module")
def scored(small_province):
    y1 = score_year(small_province.tables, 2022, seed=1)
    y2 = score_year(small_province.tables, 2025, previous=y1.tests, seed=2)
    return y1, y2


def _with_truth(prov, ys):
    m = ys.scores.merge(prov.truth.abilities, on=["year", "student_id", "grade", "subject"], suffixes=("", "_true"))
    return m.merge(prov.truth.students[["year", "student_id", "gender", "left_behind"]], on=["year", "student_id"])


def test_scores_meet_the_contract_and_cover_every_tested_student(small_province, scored):
    for ys in scored:
        s = qualmon.validate("scores", ys.scores, references={"student_roster": small_province.tables["student_roster"]})
        tested = small_province.tables["questionnaire_student"]
        assert set(s["student_id"]) == set(tested.loc[tested["year"] == ys.year, "student_id"])
        assert s.groupby(["student_id", "subject"]).size().max() == 1
        assert set(s["level"]) == {1, 2, 3, 4}
        assert (s["se"] > 0).all() and s[[f"pv{i}" for i in range(1, 6)]].notna().all().all()


def test_eap_recovers_true_ability(small_province, scored):
    for ys in scored:
        m = _with_truth(small_province, ys)
        for _, g in m.groupby("grade"):
            r = np.corrcoef(g["theta"], g["theta_true"])[0, 1]
            # the reliability implied by the posterior variances: var(EAP) / (var(EAP) + mean se^2)
            rel = g["theta"].var() / (g["theta"].var() + (g["se"] ** 2).mean())
            assert r > 0.85 and abs(r - np.sqrt(rel)) < 0.05, (r, rel)


def _aligned_truth(g):
    """Truth on the calibration's metric: the base-year calibration fixes N(0, 1)
    on the tested students, so standardise the truth on the same students."""
    return (g["theta_true"] - g["theta_true"].mean()) / g["theta_true"].std()


def test_plausible_values_reproduce_group_means_and_variance(small_province, scored):
    y1, _ = scored
    m = _with_truth(small_province, y1)
    pvs = [f"pv{i}" for i in range(1, 6)]
    for _, g in m.groupby("grade"):
        truth = _aligned_truth(g)
        for name, mask in (("girls-boys", g["gender"] == "F"), ("left-behind", g["left_behind"].astype(bool))):
            true_diff = truth[mask].mean() - truth[~mask].mean()
            per_pv = np.array([g.loc[mask, p].mean() - g.loc[~mask, p].mean() for p in pvs])
            # error of a PV difference about the same students' true difference:
            # posterior variance / n per group, plus Rubin's between-PV variance
            post = (g["se"] ** 2).mean()
            se = np.sqrt(post * (1 / mask.sum() + 1 / (~mask).sum()) + (1 + 1 / 5) * per_pv.var(ddof=1))
            assert abs(per_pv.mean() - true_diff) < 4 * se + 0.03 * abs(true_diff), (name, per_pv.mean(), true_diff, se)
        # variance: PVs keep the population variance, EAPs shrink it
        pv_var = np.mean([g[p].var() for p in pvs])
        assert abs(pv_var - 1.0) < 0.06
        assert g["theta"].var() < pv_var - 0.05


def test_level_shares_from_pvs_are_unbiased_where_eap_shares_are_not(small_province, scored):
    y1, _ = scored
    m = _with_truth(small_province, y1)
    cuts = (400.0, 500.0, 600.0)
    bins = [-np.inf, *cuts, np.inf]
    pvs = [f"pv{i}" for i in range(1, 6)]
    rows = []
    for grade, g in m.groupby("grade"):
        scale = y1.tests[("mathematics", grade)].scale
        pv_mean = np.mean([g[p].mean() for p in pvs])
        pv_sd = np.sqrt(np.mean([g[p].var() for p in pvs]))
        true_level = np.digitize(scale.transform(_aligned_truth(g) * pv_sd + pv_mean), cuts)
        eap_level = np.digitize(g["scale_score"], cuts)
        pv_level = [np.digitize(scale.transform(g[p]), cuts) for p in pvs]
        tails_true = np.isin(true_level, (0, 3)).astype(float)
        # paired differences of tail membership, student by student: their mean is the
        # bias of the tail share and sd / sqrt(n) its standard error
        d_eap = np.isin(eap_level, (0, 3)) - tails_true
        d_pv = np.mean([np.isin(lv, (0, 3)) - tails_true for lv in pv_level], axis=0)
        se_eap, se_pv = d_eap.std(ddof=1) / np.sqrt(len(g)), d_pv.std(ddof=1) / np.sqrt(len(g))
        between = np.var([np.isin(lv, (0, 3)).mean() for lv in pv_level], ddof=1)
        assert abs(d_pv.mean()) < 4 * np.sqrt(se_pv**2 + (1 + 1 / 5) * between), (grade, d_pv.mean(), se_pv)
        assert d_eap.mean() < -3 * se_eap, (grade, d_eap.mean(), se_eap)  # EAPs under-fill the tails (one-sided, p < 0.002)
        for k in range(4):
            rows.append({"grade": grade, "level": k + 1, "truth": np.mean(true_level == k), "pv": np.mean([np.mean(lv == k) for lv in pv_level]), "eap": np.mean(eap_level == k)})
    shown = pd.DataFrame(rows)  # both, side by side
    assert np.allclose(shown.groupby("grade")[["truth", "pv", "eap"]].sum(), 1)


def test_trend_between_cycles_is_recovered_through_anchors(small_province, scored):
    y1, y2 = scored
    for grade in (4, 8):
        m1 = _with_truth(small_province, y1).query("grade == @grade")
        m2 = _with_truth(small_province, y2).query("grade == @grade")
        mu, sd = m1["theta_true"].mean(), m1["theta_true"].std()
        true_change = (m2["theta_true"].mean() - mu) / sd  # in base-year SD units of the tested students
        pv1 = np.mean([m1[f"pv{i}"].mean() for i in range(1, 6)])
        pv2 = np.mean([m2[f"pv{i}"].mean() for i in range(1, 6)])
        test = y2.tests[("mathematics", grade)]
        assert test.linking is not None and len(test.linking.anchors) >= 12
        link_se = test.linking_error / 100.0  # reporting-scale points -> SD units
        meas = np.sqrt((m1["se"] ** 2).mean() / len(m1) + (m2["se"] ** 2).mean() / len(m2))
        assert abs((pv2 - pv1) - true_change) < 4 * np.hypot(link_se, meas) + 0.03 * abs(true_change), (pv2 - pv1, true_change)
        assert y2.tests[("mathematics", grade)].scale.to_dict() == y1.tests[("mathematics", grade)].scale.to_dict()


def test_scored_year_round_trips_for_linking(tmp_path, small_province, scored):
    y1, y2 = scored
    write_year(y1, tmp_path / "y1", tables=small_province.tables)
    bases = read_bases(tmp_path / "y1")
    again = score_year(small_province.tables, 2025, previous=bases, seed=2)
    pd.testing.assert_frame_equal(again.scores, y2.scores)


def test_questionnaire_indices(small_province):
    q = small_province.tables["questionnaire_student"]
    q = q[q["year"] == 2022].reset_index(drop=True)
    res = scale_indices(q)
    idx = res.indices.merge(small_province.truth.students, on=["year", "student_id"])
    assert abs(res.indices["interest"].mean()) < 1e-6 and abs(res.indices["interest"].std(ddof=0) - 1) < 1e-3
    assert np.corrcoef(idx["confidence"].fillna(0), idx["general"])[0, 1] > 0.3
    both = idx.merge(q[["student_id", "homework_minutes"]], on="student_id").dropna(subset=["burden", "homework_minutes"])
    assert np.corrcoef(both["burden"], both["homework_minutes"].astype(float))[0, 1] > 0.2
    assert res.summary()["converged"].all()


def test_score_verb(tmp_path):
    from qualmon.cli import main

    data = tmp_path / "data"
    assert main(["--quiet", "synth", "--seed", "8", "--years", "2022,2025", "--scale", "0.03", "--out", str(data)]) == 0
    assert main(["--quiet", "score", "--data", str(data), "--year", "2022", "--out", str(tmp_path / "s22")]) == 0
    assert main(["--quiet", "score", "--data", str(data), "--year", "2025", "--out", str(tmp_path / "s25"), "--previous", str(tmp_path / "s22")]) == 0
    s = qualmon.validate("scores", tmp_path / "s25" / "scores.parquet")
    assert set(s["year"]) == {2025}
    assert main(["--quiet", "score", "--data", str(data), "--year", "2019", "--out", str(tmp_path / "x")]) == 1
