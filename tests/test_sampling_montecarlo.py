"""Monte-Carlo checks of the whole design on the synthetic province.

Over 200 independent samples (different seeds, scale 0.2) of one year:

* the Horvitz-Thompson totals with the base weights (enrolment and true
  ability, ``truth.students.general``) are unbiased: |bias| < 3 Monte-Carlo
  standard errors -- the inclusion probabilities of all three stages are
  exact;
* the weighted mean of true ability with the final weights is unbiased
  (|bias| < 3 MC SE);
* the Fay replicate variance agrees with the Monte-Carlo variance of the
  estimate: the mean replicate variance lies inside the interval in which
  the true variance lies with 99 % confidence given the Monte-Carlo
  variance (chi-square with 199 df), widened by 3 standard errors of the
  mean replicate variance;

and the same with simulated non-response at random (schools and students
90 %, replacements used).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import qualmon
from qualmon.sampling.stages import draw, simulate_participation
from qualmon.sampling.plan import SamplingPlan

pytestmark = pytest.mark.slow
R = 200


@pytest.fixture(scope="module")
def prov():
    return qualmon.synth.province(seed=1, years=(2024,), scale=0.2, tested=None)


def _stats(smp, y_all, ids, prefix: str, row: dict) -> None:
    st = smp.students
    keep = (st["weight"] > 0).to_numpy()
    y = y_all[ids.get_indexer(st["student_id"].to_numpy(dtype=object))]
    g = st["grade"].to_numpy()
    bw = st["base_weight"].to_numpy()
    w = st["weight"].to_numpy()
    for grade in (4, 8):
        m0 = g == grade
        # Horvitz-Thompson with the base weights over every sampled student (before non-response)
        row[f"{prefix}ht_y{grade}"] = np.sum(bw[m0] * y[m0])
        row[f"{prefix}ht_n{grade}"] = np.sum(bw[m0])
        m = m0 & keep
        est = np.sum(w[m] * y[m]) / np.sum(w[m])
        Wr = smp.replicate_weights[m]
        reps = (Wr * y[m][:, None]).sum(axis=0) / Wr.sum(axis=0)
        centre = est if smp.mse else reps.mean()
        row[f"{prefix}mean{grade}"] = est
        row[f"{prefix}var{grade}"] = smp.scale * np.sum(smp.rscales * (reps - centre) ** 2)


@pytest.fixture(scope="module")
def results(prov):
    """One pass over R seeds: the full-response sample and the same sample
    after simulated non-response (schools and students 90 %, at random)."""
    ts = prov.truth.students
    ids = pd.Index(ts["student_id"].to_numpy(dtype=object))
    y_all = ts["general"].to_numpy()
    rows = []
    for seed in range(R):
        smp = draw(SamplingPlan(year=2024, seed=seed, national="ignore"), prov)
        row: dict = {}
        _stats(smp, y_all, ids, "", row)
        _stats(simulate_participation(smp, 0.9, 0.9, seed=1000 + seed), y_all, ids, "nr_", row)
        rows.append(row)
    return pd.DataFrame(rows)


def _check(res: pd.DataFrame, prov, prefix: str, check_ht: bool):
    ts = prov.truth.students
    for grade in (4, 8):
        t = ts[ts["grade"] == grade]
        targets = {"mean": t["general"].mean()}
        if check_ht:
            targets.update({"ht_y": t["general"].sum(), "ht_n": float(len(t))})
        for k, truth in targets.items():
            x = res[f"{prefix}{k}{grade}"]
            z = (x.mean() - truth) / (x.std(ddof=1) / np.sqrt(len(x)))
            assert abs(z) < 3, (k, grade, z)
        # replicate variance against the Monte-Carlo variance
        s2 = res[f"{prefix}mean{grade}"].var(ddof=1)
        lo = s2 * (R - 1) / stats.chi2.ppf(0.995, R - 1)
        hi = s2 * (R - 1) / stats.chi2.ppf(0.005, R - 1)
        v = res[f"{prefix}var{grade}"]
        se_v = v.std(ddof=1) / np.sqrt(len(v))
        assert lo - 3 * se_v < v.mean() < hi + 3 * se_v, (grade, v.mean() / s2, lo / s2, hi / s2)


def test_design_unbiased_and_replicate_variance(results, prov):
    _check(results, prov, "", check_ht=True)


def test_with_nonresponse_and_replacements(results, prov):
    _check(results, prov, "nr_", check_ht=False)
