"""The monitoring cycle end to end, as ``qualmon demo`` runs it.

Stages, data flowing one way:

1. **frames**: the synthetic province (county and school frames, rosters);
2. **sample**: each year's three-stage PPS sample from the provincial plan
   (``SamplingPlan(year, seed)`` with the province's tracked counties), with
   simulated participation (school 97 %, student 95 %, slightly related to
   ability: non-response that the weights must correct), final weights and
   80 Fay replicate weights;
3. **responses**: the participating students sit the year's tests and fill
   in the questionnaires;
4. **scores**: every test calibrated with the sampling weights, linked to the
   previous administration through anchor items, EAP scores, plausible
   values and levels;
5. **estimates**: provincial means and level shares by grade and subject
   with replicate standard errors, combined over plausible values by Rubin's
   rules (and the linking error for trends).

Everything is written under the output folder with atomic writes; the same
seed gives the same bytes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["run_demo", "provincial_estimates"]


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def provincial_estimates(sample, scores: pd.DataFrame, *, cuts: Sequence[float], scales: dict) -> pd.DataFrame:
    """Mean reporting-scale score and level shares by grade and subject.

    Design-based: the sample's replicate design over the participating
    students, plausible values combined by Rubin's rules
    (:meth:`qualmon.ReplicateDesign.mean` with ``pv=True``).
    """
    pv = [c for c in scores.columns if c.startswith("pv")]
    rows = []
    for (subject, grade), s in scores.groupby(["subject", "grade"], sort=True):
        scale = scales[(subject, int(grade))]
        data = s[["student_id"]].copy()
        for c in pv:
            data[c] = scale.transform(s[c]).to_numpy()
        bins = [-np.inf, *cuts, np.inf]
        for k in range(len(cuts) + 1):
            for i, c in enumerate(pv):
                data[f"L{k + 1}_{i + 1}"] = ((data[c] >= bins[k]) & (data[c] < bins[k + 1])).astype(float)
        design = sample.design(data)
        design = design.subset(design.data["student_id"].isin(set(s["student_id"])).to_numpy())
        est = design.mean(pv, pv=True)
        rows.append({"subject": subject, "grade": int(grade), "indicator": "mean", "estimate": float(est["estimate"].iloc[0]),
                     "se": float(est["se"].iloc[0]), "n": int(len(s))})
        for k in range(len(cuts) + 1):
            e = design.mean([f"L{k + 1}_{i + 1}" for i in range(len(pv))], pv=True)
            rows.append({"subject": subject, "grade": int(grade), "indicator": f"level{k + 1}", "estimate": float(e["estimate"].iloc[0]),
                         "se": float(e["se"].iloc[0]), "n": int(len(s))})
    return pd.DataFrame(rows)


def run_demo(out: Path | str = "out", *, seed: int = 20240501, years: Sequence[int] | None = None, scale: float = 1.0, quiet: bool = False) -> dict:
    """Run the monitoring cycle on the synthetic province and write it under ``out``.

    ``out/data/``: the inputs and truth, as ``qualmon synth`` writes them (the
    responses and questionnaires are those of the sampled students);
    ``out/sample/<year>/``: the sample tables, replicate weights and sample
    report; ``out/scores/<year>/``: scores, item parameters, reporting scales
    and the item report; ``out/estimates.csv``: provincial estimates with
    standard errors; ``out/run.json``: what ran.
    """
    from qualmon.io import atomic_path
    from qualmon.sampling import SamplingPlan, draw, simulate_participation
    from qualmon.scoring.workflow import ScoringSpec, score_year, write_year
    from qualmon.synth import province

    out = Path(out)
    t0 = time.perf_counter()
    kw = {"years": years} if years else {}
    prov = province(seed=seed, scale=scale, tested=None, **kw)
    _log(f"[1/5] synthetic province: {len(prov.years)} years, {len(prov.tables['student_roster']):,} students on the rosters ({time.perf_counter() - t0:.1f} s)", quiet)

    tracked = tuple(prov.truth.counties.loc[prov.truth.counties["tracked"], "county_id"])
    samples = {}
    for y in prov.years:
        plan = SamplingPlan(year=y, seed=seed, cycle_start=prov.cycle_start, tracked_counties=tracked)
        ability = prov.truth.students.loc[prov.truth.students["year"] == y, ["student_id", "general"]]
        samples[y] = simulate_participation(draw(plan, prov.tables), seed=seed, related_to=ability)
        samples[y].write(out / "sample" / str(y))
    tested = pd.concat([s.students.loc[s.students["participated"], ["year", "student_id"]] for s in samples.values()], ignore_index=True)
    n_sch = sum(int(s.schools["participated"].sum()) for s in samples.values())
    _log(f"[2/5] samples drawn: {n_sch:,} schools, {len(tested):,} participating students over {len(samples)} years ({time.perf_counter() - t0:.1f} s)", quiet)

    prov = prov.with_tested(tested)
    paths = prov.write(out / "data")
    _log(f"[3/5] tests administered: {len(prov.tables['responses']):,} responses; validated and wrote {len(paths)} tables under {out / 'data'} ({time.perf_counter() - t0:.1f} s)", quiet)

    spec = ScoringSpec()
    latest: dict = {}
    estimates = []
    for y in prov.years:
        w = samples[y].students.set_index("student_id")["weight"]
        ys = score_year(prov.tables, y, weights=w[w > 0], previous=latest, spec=spec, seed=seed + y)
        write_year(ys, out / "scores" / str(y), tables=prov.tables)
        latest.update(ys.tests)
        est = provincial_estimates(samples[y], ys.scores, cuts=spec.cuts, scales={k: t.scale for k, t in ys.tests.items()})
        link_err = {k: t.linking_error for k, t in ys.tests.items()}
        est["linking_error"] = [link_err[(s, g)] if i == "mean" else np.nan for s, g, i in zip(est["subject"], est["grade"], est["indicator"])]
        est.insert(0, "year", y)
        estimates.append(est)
        _log(f"[4/5] scored {y}: {', '.join(f'{s} G{g}' for s, g in ys.tests)} ({time.perf_counter() - t0:.1f} s)", quiet)
    estimates = pd.concat(estimates, ignore_index=True)
    with atomic_path(out / "estimates.csv") as tmp:
        estimates.to_csv(tmp, index=False, float_format="%.6g")
    run = {"seed": seed, "years": list(prov.years), "scale": scale, "tracked_counties": list(tracked),
           "students_tested": int(len(tested)), "seconds": round(time.perf_counter() - t0, 1)}
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps({k: v for k, v in run.items() if k != "seconds"}, ensure_ascii=False, indent=2), encoding="utf-8")
    _log(f"[5/5] provincial estimates written to {out / 'estimates.csv'} ({time.perf_counter() - t0:.1f} s)", quiet)
    if not quiet:
        means = estimates[estimates["indicator"] == "mean"][["year", "subject", "grade", "estimate", "se", "linking_error"]]
        print(means.to_string(index=False, float_format=lambda v: f"{v:.1f}"), file=sys.stderr)
    return {"data": paths, "estimates": estimates, "samples": samples}
