"""The sampling plan: every choice of the three-stage sample, with the
provincial plan's defaults, validated on construction and stored as TOML.

``SamplingPlan(year=2024, seed=...)`` with nothing else given *is* the
provincial plan (省义务教育质量监测方案 §二):

* **Cycle.** Three-year monitoring cycles; ``cycle_year`` (1, 2, 3) is the
  position of ``year`` in its cycle, derived from ``cycle_start`` (a year
  that opens a cycle; default 2021) when not given.  The county sample of a
  whole cycle is drawn at once, from the county frame of the cycle's first
  year, with a random number stream fixed by ``seed`` and the cycle, so that
  the three yearly samples fit together (see :mod:`qualmon.sampling.stages`).
  Keep ``seed``, the county settings and the tracked/certainty lists the
  same for the three years of a cycle.
* **Counties (样本县).** About ``county_fraction`` = 10 % of the county-level
  units a year (``county_n`` overrides), tracked and certainty counties
  included.  Explicit strata ``county_strata`` (prefecture), implicit
  strata ``county_sort`` (population, GDP per head and education
  development, each cut into ``county_bands`` = 3 quantile bands: tertiles),
  at least ``county_min_per_stratum`` = 1 county per prefecture in each cycle
  (so that all 21 prefectures are covered), PPS on the grade enrolment
  (``county_method="pps"``, measure of size = sum of ``county_mos``) or equal
  probability (``"equal"``).  ``certainty_counties`` and ``tracked_counties``
  (追踪监测) are taken every year with probability 1.  ``national``:
  coordination with the national NAEQ sample of the year ("exclude": the
  national sample counties of the year are not tested by the province that
  year; "force": they are taken with probability 1; "ignore").
* **Schools (样本校).** PPS systematic within each sampled county, for
  grade 4 (primary and nine-year schools) and grade 8 (junior and nine-year
  schools) separately, at most ``max_schools`` = 18 / 12 schools per county,
  implicit stratification by ``school_sort`` (locale, school type, township)
  and then by size in serpentine order (``school_order``), measure of size
  max(enrolment, ``small_school_mos`` = 30) (PISA's rule for small schools),
  ``replacements`` = 2 replacement schools per sampled school.
* **Students (样本学生).** Simple random sample within the grade:
  ``student_bands`` ((150, 30), (300, 60), (inf, 90)) gives 30 students for
  cohorts up to 150, 60 up to 300, 90 above: 30 or a multiple of 30
  (``student_multiple``); everyone in cohorts not larger than that number
  (so all students of schools under 30).
* **Weights.** Non-response adjustment cells ``school_nr_cells`` (grade,
  county, locale) and ``student_nr_cells`` (grade, school, gender), ordered
  from coarse to fine, collapsed from the finest variable when a cell has no
  respondent or a factor above ``max_nr_factor``; a school counts as
  participating when at least ``min_student_response`` of its sampled
  students took part (TIMSS and PISA: 50 %); trimming of weights above
  ``trim_factor`` x median (PISA: 4) with redistribution; ``benchmark`` of
  the final weights to the frame's grade enrolment (cells ``benchmark_by``).
* **Replicates.** ``replicate_method`` "Fay" with ``rho`` = 0.5 and
  ``replicates`` = 80 (PISA); "JK2" (TIMSS, 75 replicates), "BRR", "JKn",
  "JK1" or "bootstrap".  ``fpc``: finite population corrections in the
  replicate factors (the county stage samples 10-33 % of the counties'
  enrolment a year, far more than PISA's or TIMSS's school stage, so
  ignoring it would overstate the variance).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["PlanError", "SamplingPlan", "DEFAULT_PLAN_PATH"]

DEFAULT_PLAN_PATH = Path(__file__).resolve().parent / "plans" / "provincial.toml"

_NATIONAL = ("exclude", "force", "ignore")
_COUNTY_METHODS = ("pps", "equal")
_SCHOOL_ORDERS = ("serpentine", "random", "frame")
_REP_METHODS = {"fay": "Fay", "brr": "BRR", "jk2": "JK2", "jkn": "JKn", "jk1": "JK1", "bootstrap": "bootstrap"}


class PlanError(ValueError):
    """A sampling plan field has a bad value (the message names the field)."""


# field -> TOML section; the key inside the section is the field name
# without the section prefix where one is listed here
_SECTIONS: dict[str, tuple[str, str]] = {
    "year": ("cycle", "year"),
    "seed": ("cycle", "seed"),
    "cycle_start": ("cycle", "cycle_start"),
    "cycle_year": ("cycle", "cycle_year"),
    "cycle_length": ("cycle", "cycle_length"),
    "grades": ("cycle", "grades"),
    "county_fraction": ("counties", "fraction"),
    "county_n": ("counties", "n"),
    "county_method": ("counties", "method"),
    "county_mos": ("counties", "mos"),
    "county_strata": ("counties", "strata"),
    "county_sort": ("counties", "sort"),
    "county_bands": ("counties", "bands"),
    "county_min_per_stratum": ("counties", "min_per_stratum"),
    "certainty_counties": ("counties", "certainty"),
    "tracked_counties": ("counties", "tracked"),
    "national": ("counties", "national"),
    "max_schools": ("schools", "max_per_county"),
    "school_stages": ("schools", "stages"),
    "school_sort": ("schools", "sort"),
    "school_order": ("schools", "order"),
    "small_school_mos": ("schools", "small_school_mos"),
    "replacements": ("schools", "replacements"),
    "student_bands": ("students", "bands"),
    "student_multiple": ("students", "multiple"),
    "school_nr_cells": ("weights", "school_nr_cells"),
    "student_nr_cells": ("weights", "student_nr_cells"),
    "max_nr_factor": ("weights", "max_nr_factor"),
    "min_student_response": ("weights", "min_student_response"),
    "trim_factor": ("weights", "trim_factor"),
    "benchmark": ("weights", "benchmark"),
    "benchmark_by": ("weights", "benchmark_by"),
    "replicate_method": ("replicates", "method"),
    "replicates": ("replicates", "n"),
    "rho": ("replicates", "rho"),
    "fpc": ("replicates", "fpc"),
}


def _err(name: str, msg: str) -> PlanError:
    return PlanError(f"sampling plan field {name!r}: {msg}")


def _int(name: str, v, lo: int | None = None, hi: int | None = None, none: bool = False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _err(name, f"expected an integer, got {v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise _err(name, f"expected an integer >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise _err(name, f"expected an integer <= {hi}, got {v}")
    return v


def _float(name: str, v, lo: float | None = None, hi: float | None = None, none: bool = False,
           open_lo: bool = False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _err(name, f"expected a number, got {v!r}")
    v = float(v)
    if math.isnan(v):
        raise _err(name, "expected a number, got NaN")
    if lo is not None and (v < lo or (open_lo and v == lo)):
        raise _err(name, f"expected a number {'>' if open_lo else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise _err(name, f"expected a number <= {hi}, got {v}")
    return v


def _strs(name: str, v, allow_empty: bool = True) -> tuple[str, ...]:
    if isinstance(v, str):
        v = (v,)
    try:
        out = tuple(v)
    except TypeError:
        raise _err(name, f"expected a list of names, got {v!r}") from None
    for x in out:
        if not isinstance(x, str) or not x:
            raise _err(name, f"expected non-empty strings, got {x!r}")
    if len(set(out)) != len(out):
        raise _err(name, f"names repeat: {list(out)}")
    if not allow_empty and not out:
        raise _err(name, "expected at least one name")
    return out


def _grade_map(name: str, v, grades, conv) -> dict[int, Any]:
    if not isinstance(v, Mapping):
        raise _err(name, f"expected a mapping grade -> value, got {v!r}")
    out = {}
    for k, x in v.items():
        try:
            g = int(k)
        except (TypeError, ValueError):
            raise _err(name, f"keys must be grades, got {k!r}") from None
        out[g] = conv(f"{name}[{g}]", x)
    missing = [g for g in grades if g not in out]
    if missing:
        raise _err(name, f"no value for grade(s) {missing}")
    return {g: out[g] for g in sorted(out)}


@dataclass(frozen=True)
class SamplingPlan:
    """A three-stage sampling plan (see the module docstring for every field).

    Construct with ``SamplingPlan(year=..., seed=...)`` for the provincial
    plan, change fields with ``plan.replace(...)``, store with
    :meth:`to_toml` and read back with :meth:`from_toml`.
    """

    year: int
    seed: int
    cycle_start: int | None = None
    cycle_year: int | None = None
    cycle_length: int = 3
    grades: tuple[int, ...] = (4, 8)
    # stage 1: counties
    county_fraction: float = 0.10
    county_n: int | None = None
    county_method: str = "pps"
    county_mos: tuple[str, ...] = ("grade4_enrolment", "grade8_enrolment")
    county_strata: tuple[str, ...] = ("prefecture_id",)
    county_sort: tuple[str, ...] = ("population", "gdp_per_capita", "edu_index")
    county_bands: int = 3
    county_min_per_stratum: int = 1
    certainty_counties: tuple[str, ...] = ()
    tracked_counties: tuple[str, ...] = ()
    national: str = "exclude"
    # stage 2: schools
    max_schools: dict = field(default_factory=lambda: {4: 18, 8: 12})
    school_stages: dict = field(default_factory=lambda: {4: ("primary", "nine_year"), 8: ("junior", "nine_year")})
    school_sort: tuple[str, ...] = ("locale", "stage", "township_id")
    school_order: str = "serpentine"
    small_school_mos: int = 30
    replacements: int = 2
    # stage 3: students
    student_bands: tuple = ((150.0, 30), (300.0, 60), (math.inf, 90))
    student_multiple: int = 30
    # weights
    school_nr_cells: tuple[str, ...] = ("grade", "county_id", "locale")
    student_nr_cells: tuple[str, ...] = ("grade", "school_id", "gender")
    max_nr_factor: float = 2.0
    min_student_response: float = 0.5
    trim_factor: float | None = 4.0
    benchmark: bool = True
    benchmark_by: tuple[str, ...] = ()
    # replicate weights
    replicate_method: str = "Fay"
    replicates: int = 80
    rho: float = 0.5
    fpc: bool = True

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        s("year", _int("year", self.year, 2000, 2100))
        s("seed", _int("seed", self.seed, 0))
        s("cycle_length", _int("cycle_length", self.cycle_length, 1, 10))
        L = self.cycle_length
        cs = _int("cycle_start", self.cycle_start, 2000, 2100, none=True)
        cy = _int("cycle_year", self.cycle_year, 1, L, none=True)
        if cs is None and cy is None:
            cs = 2021
        if cy is None:
            cy = (self.year - cs) % L + 1
        elif cs is not None and (self.year - cs) % L + 1 != cy:
            raise _err("cycle_year", f"{cy} contradicts cycle_start = {cs} for year {self.year} "
                       f"(that gives cycle year {(self.year - cs) % L + 1})")
        if cs is None:
            cs = self.year - cy + 1
        s("cycle_start", cs)
        s("cycle_year", cy)
        grades = tuple(_int("grades", g, 1, 12) for g in (self.grades if not isinstance(self.grades, int) else (self.grades,)))
        if not grades or len(set(grades)) != len(grades):
            raise _err("grades", f"expected distinct grades, got {list(grades)}")
        s("grades", tuple(sorted(grades)))
        # counties
        s("county_fraction", _float("county_fraction", self.county_fraction, 0.0, 1.0, open_lo=True))
        s("county_n", _int("county_n", self.county_n, 1, none=True))
        m = str(self.county_method).lower()
        if m not in _COUNTY_METHODS:
            raise _err("county_method", f"expected one of {list(_COUNTY_METHODS)}, got {self.county_method!r}")
        s("county_method", m)
        s("county_mos", _strs("county_mos", self.county_mos, allow_empty=False))
        s("county_strata", _strs("county_strata", self.county_strata))
        s("county_sort", _strs("county_sort", self.county_sort))
        s("county_bands", _int("county_bands", self.county_bands, 1, 20))
        s("county_min_per_stratum", _int("county_min_per_stratum", self.county_min_per_stratum, 0))
        s("certainty_counties", _strs("certainty_counties", self.certainty_counties))
        s("tracked_counties", _strs("tracked_counties", self.tracked_counties))
        both = set(self.certainty_counties) & set(self.tracked_counties)
        if both:
            raise _err("tracked_counties", f"counties {sorted(both)} are also listed as certainty counties")
        nat = str(self.national).lower()
        if nat not in _NATIONAL:
            raise _err("national", f"expected one of {list(_NATIONAL)}, got {self.national!r}")
        s("national", nat)
        # schools
        s("max_schools", _grade_map("max_schools", self.max_schools, self.grades,
                                    lambda n, v: _int(n, v, 1)))
        s("school_stages", _grade_map("school_stages", self.school_stages, self.grades,
                                      lambda n, v: _strs(n, v, allow_empty=False)))
        s("school_sort", _strs("school_sort", self.school_sort))
        o = str(self.school_order).lower()
        if o not in _SCHOOL_ORDERS:
            raise _err("school_order", f"expected one of {list(_SCHOOL_ORDERS)}, got {self.school_order!r}")
        s("school_order", o)
        s("small_school_mos", _int("small_school_mos", self.small_school_mos, 0))
        s("replacements", _int("replacements", self.replacements, 0, 2))
        # students
        s("student_multiple", _int("student_multiple", self.student_multiple, 1))
        s("student_bands", self._check_bands(self.student_bands))
        # weights
        s("school_nr_cells", _strs("school_nr_cells", self.school_nr_cells))
        s("student_nr_cells", _strs("student_nr_cells", self.student_nr_cells))
        s("max_nr_factor", _float("max_nr_factor", self.max_nr_factor, 1.0))
        s("min_student_response", _float("min_student_response", self.min_student_response, 0.0, 1.0))
        tf = self.trim_factor
        if tf is False or tf == 0:
            tf = None
        s("trim_factor", _float("trim_factor", tf, 1.0, none=True, open_lo=True))
        if not isinstance(self.benchmark, (bool, np.bool_)):
            raise _err("benchmark", f"expected true or false, got {self.benchmark!r}")
        s("benchmark", bool(self.benchmark))
        s("benchmark_by", _strs("benchmark_by", self.benchmark_by))
        # replicates
        key = str(self.replicate_method).lower().replace("-", "").replace("_", "")
        if key not in _REP_METHODS:
            raise _err("replicate_method", f"expected one of {sorted(_REP_METHODS.values())}, got {self.replicate_method!r}")
        s("replicate_method", _REP_METHODS[key])
        s("replicates", _int("replicates", self.replicates, 2, 10000))
        s("rho", _float("rho", self.rho, 0.0, 1.0))
        if not isinstance(self.fpc, (bool, np.bool_)):
            raise _err("fpc", f"expected true or false, got {self.fpc!r}")
        s("fpc", bool(self.fpc))
        if self.replicate_method == "Fay" and not 0 < self.rho < 1:
            raise _err("rho", f"Fay's method needs 0 < rho < 1, got {self.rho}")
        if self.replicate_method in ("Fay", "BRR"):
            from qualmon.sampling.replicates import ReplicateError, hadamard

            if self.replicates % 4 and self.replicates > 2:
                raise _err("replicates", f"{self.replicate_method} needs a Hadamard order (a multiple of 4), got {self.replicates}")
            try:
                hadamard(self.replicates)
            except ReplicateError as exc:
                raise _err("replicates", str(exc)) from None

    def _check_bands(self, bands) -> tuple:
        name = "student_bands"
        try:
            rows = [tuple(b) for b in bands]
        except TypeError:
            raise _err(name, f"expected a list of [max cohort size, students] pairs, got {bands!r}") from None
        if not rows:
            raise _err(name, "expected at least one [max cohort size, students] pair")
        out = []
        for i, r in enumerate(rows):
            if len(r) != 2:
                raise _err(name, f"entry {i} is {list(r)}; expected [max cohort size, students]")
            mx = _float(f"{name}[{i}][0]", r[0], 0.0, open_lo=True)
            n = _int(f"{name}[{i}][1]", r[1], 1)
            if n % self.student_multiple:
                raise _err(name, f"entry {i}: {n} students is not a multiple of {self.student_multiple}")
            out.append((mx, n))
        mxs = [r[0] for r in out]
        ns = [r[1] for r in out]
        if any(b <= a for a, b in zip(mxs, mxs[1:])):
            raise _err(name, f"max cohort sizes must increase, got {mxs}")
        if any(b < a for a, b in zip(ns, ns[1:])):
            raise _err(name, f"students per school must not decrease with school size, got {ns}")
        if not math.isinf(mxs[-1]):
            raise _err(name, f"the last band must be open-ended (max cohort size inf), got {mxs[-1]}")
        return tuple(out)

    # ------------------------------------------------------------------ derived
    @property
    def cycle_first_year(self) -> int:
        """First year of the cycle that ``year`` belongs to."""
        return self.year - self.cycle_year + 1

    def students_to_sample(self, cohort) -> np.ndarray:
        """Students to sample from cohorts of the given sizes: the band's
        number (30 or a multiple of 30), or the whole cohort when it is not
        larger than that number."""
        M = np.asarray(cohort, dtype=np.int64)
        mx = np.array([b[0] for b in self.student_bands])
        ns = np.array([b[1] for b in self.student_bands], dtype=np.int64)
        band = np.minimum(np.searchsorted(mx, M, side="left"), len(ns) - 1)
        return np.minimum(ns[band], M)

    def replace(self, **changes) -> "SamplingPlan":
        """A copy with some fields changed (validated again)."""
        if "year" in changes and "cycle_year" not in changes:
            changes["cycle_year"] = None
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ TOML
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested dict by TOML section (None values left out)."""
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(self):
            sec, key = _SECTIONS[f.name]
            v = getattr(self, f.name)
            if v is None and f.name == "trim_factor":
                v = False  # no trimming (the default is 4)
            if v is None:
                continue
            if isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            if isinstance(v, dict):
                v = {str(k): (list(x) if isinstance(x, tuple) else x) for k, x in v.items()}
            out.setdefault(sec, {})[key] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SamplingPlan":
        """From the nested dict of :meth:`to_dict` (unknown keys are errors)."""
        reverse = {v: k for k, v in _SECTIONS.items()}
        kw = {}
        for sec, body in d.items():
            if not isinstance(body, Mapping):
                raise PlanError(f"sampling plan: [{sec}] must be a table, got {body!r}")
            for key, v in body.items():
                name = reverse.get((sec, key))
                if name is None:
                    known = sorted(k for s, k in _SECTIONS.values() if s == sec)
                    raise PlanError(f"sampling plan: unknown key {key!r} in [{sec}]"
                                    + (f"; known keys: {known}" if known else
                                       f"; known sections: {sorted({s for s, _ in _SECTIONS.values()})}"))
                kw[name] = v
        for req in ("year", "seed"):
            if req not in kw:
                raise PlanError(f"sampling plan field {req!r}: missing (put it in [cycle])")
        return cls(**kw)

    def to_toml(self, path: str | os.PathLike | None = None) -> str:
        """The plan as TOML text; also written atomically to ``path`` if given."""
        lines = ["# qualmon sampling plan (义务教育质量监测抽样方案)", ""]
        for sec, body in self.to_dict().items():
            lines.append(f"[{sec}]")
            for k, v in body.items():
                lines.append(f"{k} = {_toml_value(v)}")
            lines.append("")
        text = "\n".join(lines)
        if path is not None:
            from qualmon.io import atomic_path

            with atomic_path(path) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def loads(cls, text: str) -> "SamplingPlan":
        """From TOML text."""
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"sampling plan: invalid TOML: {exc}") from None
        return cls.from_dict(d)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "SamplingPlan":
        """Read a plan from a TOML file (see ``sampling/plans/provincial.toml``)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no such sampling plan file: {p}")
        return cls.loads(p.read_text(encoding="utf-8"))

    def summary(self):
        import pandas as pd

        rows = [(sec, k, _toml_value(v)) for sec, body in self.to_dict().items() for k, v in body.items()]
        return pd.DataFrame(rows, columns=["section", "setting", "value"])

    def _repr_html_(self) -> str:
        return "<b>SamplingPlan</b>" + self.summary().to_html(index=False)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise PlanError(f"cannot write {v!r} to TOML")
