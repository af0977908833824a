"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time


def best(f, repeats: int = 5):
    """Best wall time of ``repeats`` calls of ``f`` and the last result."""
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out
