"""Synthetic province: time and peak memory of one year at several scales.

Each run is a fresh process (peak RSS via getrusage). Memory should grow
linearly with the number of students: the script prints the marginal bytes
per student between scales.

    python benchmarks/bench_synth.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, time, sys
from qualmon.synth import province
scale = float(sys.argv[1])
t = time.perf_counter()
p = province(seed=1, years=(2024,), scale=scale)
dt = time.perf_counter() - t
n = len(p.tables["student_roster"])
print(json.dumps({"scale": scale, "seconds": dt, "students": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    rows = []
    for scale in (0.25, 0.5, 1.0):
        out = subprocess.run([sys.executable, "-c", CHILD, str(scale)], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"scale {r['scale']:4}: {r['students']:>9,} students  {r['seconds']:5.1f} s  peak {r['peak_mb']:7.0f} MB")
    for a, b in zip(rows, rows[1:]):
        per = (b["peak_mb"] - a["peak_mb"]) * 2**20 / (b["students"] - a["students"])
        print(f"marginal memory {a['scale']} -> {b['scale']}: {per:,.0f} bytes per student; time ratio {b['seconds'] / a['seconds']:.2f} for {b['students'] / a['students']:.2f}x students")


if __name__ == "__main__":
    main()
