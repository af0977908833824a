"""Benchmark: the three-stage provincial sample at full scale.

Frame: the synthetic province at scale 1 (183 counties, ~16,000 schools,
~1.5 million grade-4 and grade-8 students), one year.

Measured (best of several runs, wall clock, same process):
  1. qualmon's full provincial draw (``draw(plan, frames)``): counties
     (cycle PPS), schools (PPS systematic with certainty, replacements),
     students (SRS in multiples of 30), weights and 80 Fay replicate
     weights; with the time of each stage;
  2. the comparable piece for the peers, the school stage: systematic PPS
     within 366 strata (183 counties x 2 grades, ~16,000 school-grade rows,
     n = min(18 or 12, schools)), measure of size max(enrolment, 30):
     qualmon ``pps.pps_systematic`` (serpentine implicit stratification and
     iterative certainty), ``svy`` ``sample.sampling.pps_sys`` and
     ``samplics`` ``SampleSelection(PPS systematic)`` (PyPI; not project
     dependencies: ``pip install svy samplics``).  samplics refuses
     certainty units ("Some clusters are certainties"), so it gets the frame
     without qualmon's certainty schools and the sample sizes reduced
     accordingly (the same remaining selection problem).  The largest
     difference between the peers' inclusion probabilities and qualmon's is
     printed.
  3. building 80 Fay replicate weights for 300,000 students is benchmarked in
     ``benchmarks/bench_design.py`` (run it, or pass ``--design`` here).

Run: ``python benchmarks/bench_sampling.py [--design]``.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import qualmon
import qualmon.design  # noqa: F401  (imported up front, outside every timing)
from qualmon.sampling import pps
from qualmon.sampling.plan import SamplingPlan

D = importlib.import_module("qualmon.sampling.stages")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _timing  # noqa: E402

REPEATS = 5


def best(f, repeats=REPEATS):
    return _timing.best(f, repeats)


def main():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    prov = qualmon.synth.province(seed=20240501, years=(2024,), scale=1.0, tested=None)
    print(f"synthetic province (scale 1) built in {time.perf_counter() - t0:.1f} s: "
          f"{len(prov.tables['county_frame'])} counties, {len(prov.tables['school_frame']):,} schools, "
          f"{len(prov.tables['student_roster']):,} students")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}")
    plan = SamplingPlan(year=2024, seed=7)

    # ------------------------------------------------------------ 1. full draw
    t_draw, smp = best(lambda: D.draw(plan, prov))
    print(f"\n1. full provincial draw: {t_draw * 1000:.0f} ms "
          f"({len(smp.counties)} counties, {int((smp.schools['role'] == 'original').sum())} schools, "
          f"{len(smp.students):,} students, {smp.n_replicates} {smp.replicate_method} replicates)")
    cf, sf, ro = D._load_frames(prov, plan)
    t_c, (counties, excluded, cyc) = best(lambda: D._county_stage(plan, cf))
    t_s, (schools, universe) = best(lambda: D._school_stage(plan, counties, sf))
    t_t, reserve = best(lambda: D._student_stage(plan, schools, ro))
    universe["prob_county_year"] = 0.0
    universe["students_expected"] = 0
    t_w, _ = best(lambda: D._assemble(plan, counties, schools, reserve, universe, excluded, cyc))
    print(f"   counties {t_c * 1000:.0f} ms, schools {t_s * 1000:.0f} ms, students {t_t * 1000:.0f} ms, "
          f"weights + replicates {t_w * 1000:.0f} ms (goal < 200 ms in all)")
    t_r, _ = best(lambda: D.draw(plan, prov).report, 1)
    t_r -= t_draw
    print(f"   sample report (built on first use): {t_r * 1000:.0f} ms")

    # ------------------------------------------------------------ 2. school stage against the peers
    u = D._school_universe(plan, sf)
    u["cg"] = u["county_id"].astype(str) + "-" + u["grade"].astype(str)
    u["unit"] = u["school_id"].astype(str) + "-" + u["grade"].astype(str)
    N = u.groupby("cg").size()
    n = {k: int(min(plan.max_schools[int(k[-1])], v)) for k, v in N.items()}
    print(f"\n2. school stage: {len(u):,} school-grade rows in {len(n)} strata, {sum(n.values()):,} schools to select")
    rng = np.random.default_rng(1)
    t_q, q = best(lambda: pps.pps_systematic(u, "mos", n, strata="cg", sort=["locale", "stage", "township_id", "mos"],
                                             rng=rng), 10)
    pik_q = q.set_index("unit")["pik"]
    results = {"qualmon pps_systematic": (t_q, 0.0)}
    try:
        import polars as pl
        import svy

        pdf = pl.DataFrame({"unit": u["unit"].to_numpy(dtype=str), "cg": u["cg"].to_numpy(dtype=str),
                            "mos": u["mos"].to_numpy(), "locale": u["locale"].to_numpy(dtype=str)})
        def run_svy():  # a fresh Sample each time: pps_sys adds its columns to the sample
            s = svy.Sample(pdf, design=svy.Design(mos="mos"))
            return s.sampling.pps_sys(n, by="cg", certainty_threshold=1.0, order_by="locale",
                                      rstate=np.random.default_rng(1))

        t_svy, r = best(run_svy, 10)
        got = r.data.to_pandas().set_index("unit")["svy_prob_selection"]
        results[f"svy {svy.__version__} pps_sys"] = (t_svy, float(np.abs(got - pik_q.loc[got.index]).max()))
    except Exception as exc:  # pragma: no cover - peer missing or failing
        print(f"   svy: not run ({type(exc).__name__}: {exc})")
    try:
        import samplics
        from samplics import SampleSelection
        from samplics.utils.types import SelectMethod

        rest = q[~q["certainty"]]
        n_rest = {k: n[k] - int(v) for k, v in q.groupby("cg")["certainty"].sum().items()}
        n_rest = {k: v for k, v in n_rest.items() if v > 0}
        rest = rest[rest["cg"].isin(list(n_rest))]
        sel = SampleSelection(method=SelectMethod.pps_sys, strat=True, wr=False)

        def run_samplics():
            return sel.select(samp_unit=rest["unit"].to_numpy(), samp_size=n_rest, stratum=rest["cg"].to_numpy(),
                              mos=rest["mos"].to_numpy())

        t_sp, out = best(run_samplics, 5)
        pr = pd.Series(out[2], index=rest["unit"].to_numpy())
        results[f"samplics {samplics.__version__} (certainty removed)"] = (
            t_sp, float(np.abs(pr - pik_q.loc[pr.index]).max()))
    except Exception as exc:  # pragma: no cover
        print(f"   samplics: not run ({type(exc).__name__}: {exc})")
    print(f"   {'':42s}{'time':>10s}{'ratio':>9s}{'max |pik diff|':>16s}")
    for k, (t, d) in results.items():
        print(f"   {k:42s}{t * 1000:8.1f} ms{t / t_q:8.2f}x{d:16.2e}")
    print("   (ratio = peer time / qualmon time; the peers only select, qualmon also sorts serpentine)")

    # ------------------------------------------------------------ 3. replicate weights
    print("\n3. 80 Fay replicate weights for 300,000 students: see benchmarks/bench_design.py")
    if "--design" in sys.argv:
        runpy.run_path(str(Path(__file__).with_name("bench_design.py")), run_name="__main__")


if __name__ == "__main__":
    main()
