"""Sampling: the three-stage PPS sample of counties, schools and students.

* :class:`SamplingPlan` — the plan (TOML file or Python object; defaults are
  the provincial plan);
* :func:`draw` — the sample of a year (:class:`Sample`: counties, schools,
  students with each stage's probability, weights and replicate weights);
* :func:`inclusion_probabilities` — exact PPS probabilities with certainty units;
* weights (base, non-response, trimming, benchmarking) and replicate weights
  (JK1, JKn, JK2, BRR, Fay, bootstrap).

Names are loaded lazily from the modules ``plan``, ``pps``, ``stages``,
``weights``, ``replicates`` and ``report``.
"""

from __future__ import annotations

import importlib

_MODULES = ("plan", "pps", "stages", "weights", "replicates", "report")


def _names() -> dict[str, str]:
    out = {}
    for m in _MODULES:
        mod = importlib.import_module(f"qualmon.sampling.{m}")
        for n in getattr(mod, "__all__", ()):
            out.setdefault(n, m)
    return out


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    where = _names().get(name)
    if where is None:
        raise AttributeError(f"module 'qualmon.sampling' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qualmon.sampling.{where}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_names()))
