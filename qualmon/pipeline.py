"""The monitoring cycle end to end, as ``qualmon demo`` runs it.

Stages, data flowing one way: synthetic province (frames) -> sample ->
responses -> scores -> estimates -> reports.  Each stage writes its tables
under the output folder with atomic writes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["run_demo"]


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run_demo(out: Path | str = "out", *, seed: int = 20240501, years: Sequence[int] | None = None, scale: float = 1.0, quiet: bool = False) -> dict:
    """Run the monitoring cycle on the synthetic province and write it under ``out``.

    ``out/data/`` holds the inputs (each contract table as Parquet) and the
    truth (``out/data/truth/``), exactly as ``qualmon synth`` writes them.
    Returns a dict of what was written.
    """
    from qualmon.synth import province

    out = Path(out)
    t0 = time.perf_counter()
    kw = {"years": years} if years else {}
    prov = province(seed=seed, scale=scale, **kw)
    _log(f"[1/1] synthetic province: {len(prov.years)} years, {len(prov.tables['student_roster']):,} roster rows, "
         f"{len(prov.tables['responses']):,} responses ({time.perf_counter() - t0:.1f} s)", quiet)
    paths = prov.write(out / "data")
    _log(f"      validated and wrote {len(paths)} tables under {out / 'data'} ({time.perf_counter() - t0:.1f} s)", quiet)
    return {"data": paths}
