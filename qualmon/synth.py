"""A synthetic province: the built-in data of qualmon.

:func:`province` builds, from a seed, a province shaped like a large Chinese
one (183 county-level units in 21 prefectures, as in the provincial plan):

* **Counties** with skewed population and economy: a metropolitan prefecture
  of urban districts and development zones, plains and hill prefectures, and
  three sparsely populated ethnic prefectures of small mountain counties.
* **Schools** per county as in a real province: many small rural primary
  schools and teaching points (a large share of grade cohorts under 30), town
  central schools, a few large urban schools; primary, junior-secondary and
  nine-year schools; urban, town and rural locales.  Enrolment drifts from year
  to year (rural cohorts shrink, urban ones grow).
* **Students** of grades 4 and 8 with pseudonymous identifiers.  Students are
  followed as cohorts: the grade-4 cohort of year *c* is the grade-8 cohort of
  year *c + 4* (with movers out and in), so records link across years.
* **Ability** from a multilevel model (prefecture, county, school, student):
  the county effect depends on the economy and education development, the
  school effect on the locale, the student's on SES, gender and left-behind
  status; grade-8 ability grows from grade-4 ability plus county and school
  value added.  Some counties are **tracked** and some truly **decline**.
* **Tests** for the subjects of each year's rotation (by default the
  provincial plan's three-year cycle: science, arts, labour; mathematics;
  Chinese, moral education, English), matrix-sampled into 6 booklets of 2
  blocks, with 2PL/3PL dichotomous and GRM/GPCM polytomous items whose
  parameters are known; blocks chain each administration to the previous and
  the next one (anchor items); omitted and not-reached responses.
* **Questionnaires** for students, teachers and principals related to
  ability (SES items, homework time, sleep time, attitude scales).

Responses and questionnaires exist only for tested students.  By default
:func:`province` tests a simple field sample of each year (tracked counties
plus about 10 % of counties, up to 18 primary and 12 junior schools per
county, 30 students per school); in a monitoring cycle the PPS sample from
``qualmon.sampling`` is tested instead with :meth:`Province.administer`.  A
student's responses are a deterministic function of the seed and the student
(counter-based random numbers), so they do not depend on who else is tested.

Everything returned is also in ``Province.truth`` so that tests can check
recovery: county, school and student effects, abilities, item parameters and
which counties decline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import special

__all__ = ["Province", "Truth", "province", "DEFAULT_ROTATION", "SUBJECT_CODES"]

#: Subjects tested in each year of the three-year cycle (provincial plan §5).
DEFAULT_ROTATION: dict[int, tuple[str, ...]] = {
    1: ("science", "arts", "labour"),
    2: ("mathematics",),
    3: ("chinese", "moral", "english"),
}
SUBJECT_CODES = {
    "chinese": "CHI",
    "mathematics": "MAT",
    "science": "SCI",
    "english": "ENG",
    "moral": "MOR",
    "arts": "ART",
    "labour": "LAB",
}
_DOMAINS = {
    "chinese": ("积累与运用", "阅读", "写作"),
    "mathematics": ("数与代数", "图形与几何", "统计与概率", "综合与实践"),
    "science": ("物质科学", "生命科学", "地球与宇宙", "技术与工程"),
    "english": ("听力", "阅读", "语言运用"),
    "moral": ("道德修养", "法治观念", "历史"),
    "arts": ("音乐", "美术"),
    "labour": ("劳动观念", "劳动技能"),
}
# gender gap in favour of girls, by subject (theta units)
_GIRL_ADVANTAGE = {"chinese": 0.20, "english": 0.22, "moral": 0.10, "arts": 0.15, "labour": 0.05, "science": -0.02, "mathematics": 0.0}

# prefectures: (number of counties, type); 183 counties in 21 prefectures
_PREFECTURES = [
    (20, "metro"), (18, "ethnic"), (17, "ethnic"), (13, "ethnic"), (11, "plain"), (10, "plain"), (10, "hill"),
    (9, "hill"), (9, "plain"), (8, "hill"), (8, "hill"), (7, "plain"), (7, "hill"), (7, "hill"), (6, "plain"),
    (6, "hill"), (5, "hill"), (5, "plain"), (3, "hill"), (2, "plain"), (2, "hill"),
]
_PREF_LOG_GDP = {"metro": 11.55, "plain": 11.0, "hill": 10.8, "ethnic": 10.45}
_LOCALES = ("urban", "town", "rural")
# school-size distributions: (mean log size, sd log size) of the grade cohort
_PRIMARY_SIZE = {"urban": (5.0, 0.45), "town": (4.1, 0.6), "rural": (2.6, 0.95)}
_JUNIOR_SIZE = {"urban": (5.6, 0.4), "town": (4.9, 0.5), "rural": (3.9, 0.6)}
_REF_YEAR = 2021  # reference year of all time trends (effects are those of this year)
_LOCALE_GROWTH = {"urban": 0.02, "town": -0.01, "rural": -0.045}
_CHARS = list("青金龙安平永宁江华兴福东新马石白云峨乐雅通巴广达蓬武隆丰宜合美昭德阳泸遂绵资内眉凉甘松茂理汶康泉源崇邛")


# --------------------------------------------------------------------------- counter-based randomness
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014), vectorised on uint64."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLD
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _hash(*parts) -> np.ndarray:
    """Hash several integer arrays (broadcast) into one uint64 array."""
    h = np.uint64(0x51ED270B5A3F1C2D)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(np.bitwise_xor(np.asarray(h, dtype=np.uint64), np.asarray(p).astype(np.uint64)))
    return h


def _uniform(*parts) -> np.ndarray:
    """Uniform (0, 1) numbers from a hash of ``parts``."""
    return ((_hash(*parts) >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _normal(*parts) -> np.ndarray:
    return special.ndtri(_uniform(*parts))


def _hex_ids(values: np.ndarray, width: int, prefix: str) -> pd.array:
    """Upper-case hexadecimal strings ``prefix + hex(value)`` of fixed width, as a
    pandas string array built straight from Arrow buffers (vectorised)."""
    values = np.asarray(values, dtype=np.uint64)
    n, w = len(values), width + len(prefix)
    digits = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    nib = ((values[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.intp)
    chars = np.empty((n, w), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chars[:, len(prefix):] = digits[nib]
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))
    return pd.array(arr, dtype=pd.StringDtype(na_value=np.nan))


_HEX_VALUE = np.zeros(256, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789ABCDEF", np.uint8)] = np.arange(16, dtype=np.uint8)


def _parse_hex_ids(ids: Sequence[str] | pd.Series, prefix_len: int = 1) -> np.ndarray:
    """Inverse of :func:`_hex_ids`: the integer value of each identifier (vectorised:
    hexadecimal digits are read from the Arrow buffer, packed into bytes and
    viewed as big-endian 64-bit integers)."""
    arr = pa.array(ids if isinstance(ids, pd.Series) else pd.Series(list(ids), dtype=object), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        raise ValueError("identifiers must not be missing")
    if arr.type not in (pa.string(), pa.large_string()):
        arr = arr.cast(pa.string())
    odt = np.int32 if arr.type == pa.string() else np.int64
    offsets = np.frombuffer(arr.buffers()[1], dtype=odt, count=n + 1, offset=arr.offset * np.dtype(odt).itemsize)
    width = int(offsets[1] - offsets[0])
    if not np.all(np.diff(offsets) == width):
        raise ValueError("identifiers must all have the same length")
    digits = width - prefix_len
    if digits > 16:
        raise ValueError(f"identifiers carry {digits} hexadecimal digits; at most 16 fit in 64 bits")
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=n * width, offset=int(offsets[0])).reshape(n, width)
    nib = np.zeros((n, 16), dtype=np.uint8)
    nib[:, 16 - digits :] = _HEX_VALUE[data[:, prefix_len:]]
    packed = (nib[:, 0::2] << 4) | nib[:, 1::2]
    return np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)


def _stag(text: str) -> int:
    """A stable integer tag of a string (Python's ``hash`` is salted per process)."""
    return sum(ord(ch) * 31**i for i, ch in enumerate(text)) & 0xFFFFF


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(t) & 0xFFFFFFFF for t in tags]]))


# --------------------------------------------------------------------------- containers
@dataclass
class Truth:
    """What generated the synthetic province (unknown in real monitoring).

    Attributes
    ----------
    counties : DataFrame
        ``county_id``, ``prefecture_id``, ``effect`` (county ability effect in
        the base year), ``trend`` (change per year), ``declining``,
        ``tracked``, ``value_added`` (grade 4 -> 8 county value added).
    schools : DataFrame
        ``school_id``, ``county_id``, ``stage``, ``locale``, ``effect``
        (grade-4 school effect), ``value_added`` (junior value added),
        ``ses_mean``.
    students : DataFrame
        One row per student and year: ``year``, ``student_id``, ``grade``,
        ``school_id``, ``ses``, ``general`` (general ability), ``prior``
        (grade-4 general ability of grade-8 students), ``linked`` (the grade-4
        record is in the province's rosters).
    abilities : DataFrame
        ``year``, ``student_id``, ``grade``, ``subject``, ``theta`` for every
        subject tested that year.
    items : DataFrame
        True item parameters (mirt's slope-intercept form and IRT form):
        ``year``, ``item_id``, ``subject``, ``grade``, ``model``, ``a``, ``d``
        (dichotomous) or ``d1..d3``, ``b`` or ``b1..b3``, ``c``.
    params : dict
        The generating constants.
    """

    counties: pd.DataFrame
    schools: pd.DataFrame
    students: pd.DataFrame
    abilities: pd.DataFrame
    items: pd.DataFrame
    params: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "counties": self.counties,
            "schools": self.schools,
            "students": self.students,
            "abilities": self.abilities,
            "items": self.items,
        }


@dataclass
class Province:
    """A synthetic province: contract tables, years and the generating truth."""

    tables: dict[str, pd.DataFrame]
    years: tuple[int, ...]
    truth: Truth
    seed: int
    rotation: dict[int, tuple[str, ...]]
    cycle_start: int

    def subjects(self, year: int) -> tuple[str, ...]:
        """Subjects tested in ``year`` (by the rotation)."""
        return self.rotation[(year - self.cycle_start) % 3 + 1]

    def cycle_year(self, year: int) -> int:
        """Position of ``year`` in the three-year cycle (1, 2 or 3)."""
        return (year - self.cycle_start) % 3 + 1

    def administer(self, students: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Test ``students`` (a frame with ``year`` and ``student_id``, e.g. the
        sampled students): returns ``responses``, ``questionnaire_student``,
        ``questionnaire_teacher`` and ``questionnaire_principal`` for them."""
        return _administer(self, students)

    def with_tested(self, students: pd.DataFrame) -> "Province":
        """A copy whose response and questionnaire tables are those of ``students``."""
        tables = dict(self.tables)
        tables.update(self.administer(students))
        return Province(tables, self.years, self.truth, self.seed, self.rotation, self.cycle_start)

    def write(self, directory: str | Path, *, full_truth: bool = False) -> dict[str, Path]:
        """Validate and write every table as ``<dir>/<table>.parquet`` and the
        truth under ``<dir>/truth/`` (atomic writes; nothing written if a table
        fails its contract).  The truth of students and abilities covers the
        tested students only, unless ``full_truth`` (the whole population: large)."""
        from qualmon.io import write_parquet, write_tables

        directory = Path(directory)
        paths = write_tables(self.tables, directory)
        truth = self.truth.tables()
        if not full_truth:
            tested = self.tables["questionnaire_student"][["year", "student_id"]]
            for name in ("students", "abilities"):
                truth[name] = truth[name][_is_tested(truth[name], tested)].reset_index(drop=True)
        for name, df in truth.items():
            paths[f"truth/{name}"] = write_parquet(df, directory / "truth" / f"{name}.parquet")
        return paths

    def summary(self) -> pd.DataFrame:
        """Counts per year: counties, schools, students, tested students, responses."""
        rows = []
        for y in self.years:
            sf = self.tables["school_frame"]
            sf = sf[sf["year"] == y]
            ros = self.tables["student_roster"]
            ros = ros[ros["year"] == y]
            tested = self.tables["questionnaire_student"]
            rows.append(
                {
                    "year": y,
                    "cycle_year": self.cycle_year(y),
                    "subjects": ", ".join(self.subjects(y)),
                    "counties": int((self.tables["county_frame"]["year"] == y).sum()),
                    "schools": len(sf),
                    "grade4_students": int((ros["grade"] == 4).sum()),
                    "grade8_students": int((ros["grade"] == 8).sum()),
                    "tested_students": int((tested["year"] == y).sum()),
                    "responses": int((self.tables["responses"]["year"] == y).sum()),
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"Province(seed={self.seed}, years={list(self.years)}, tables={sorted(self.tables)})"

    def _repr_html_(self) -> str:  # pragma: no cover - display only
        return f"<b>Synthetic province</b> seed={self.seed}" + self.summary().to_html(index=False)


# --------------------------------------------------------------------------- generator
def province(
    seed: int = 20240501,
    years: Iterable[int] = (2021, 2022, 2023, 2024, 2025, 2026),
    *,
    scale: float = 1.0,
    rotation: Mapping[int, Sequence[str]] | None = None,
    cycle_start: int = 2021,
    tested: str | pd.DataFrame | None = "field",
    n_tracked: int = 3,
    n_declining: int = 2,
) -> Province:
    """Build a synthetic province from a seed.

    Parameters
    ----------
    seed : int
        Everything is a deterministic function of the seed: the same seed and
        arguments give identical tables (and identical Parquet bytes).  A year
        is generated the same way whatever other years are asked for.
    years : iterable of int
        Monitoring years.  The default, two full three-year cycles, lets every
        subject be measured twice and links the grade-4 students of the first
        years to their grade-8 records four years later.
    scale : float
        Multiplies the number of students (and so of schools) per county; 1.0
        gives about 0.8 million students per grade, like a large province.
        The number of counties and prefectures does not change.
    rotation : mapping, optional
        Cycle year (1, 2, 3) -> tested subjects; default :data:`DEFAULT_ROTATION`.
    cycle_start : int
        A year that is year 1 of a three-year cycle.
    tested : "field", "all", None or DataFrame
        Who sits the tests: ``"field"`` a simple field sample (see module
        docstring), ``"all"`` every student (small provinces only), ``None``
        nobody (empty response tables; call :meth:`Province.administer`
        later), or a frame with ``year`` and ``student_id``.
    n_tracked, n_declining : int
        Number of tracked counties and of counties whose quality truly
        declines (the first declining county is also tracked).
    """
    years = tuple(sorted({int(y) for y in years}))
    if not years:
        raise ValueError("province(): 'years' is empty; expected at least one year")
    if scale <= 0:
        raise ValueError(f"province(): scale must be positive, got {scale}")
    rotation = {int(k): tuple(v) for k, v in (rotation or DEFAULT_ROTATION).items()}
    if sorted(rotation) != [1, 2, 3]:
        raise ValueError(f"province(): rotation must map cycle years 1, 2, 3 to subjects, got keys {sorted(rotation)}")
    unknown = {s for v in rotation.values() for s in v} - set(SUBJECT_CODES)
    if unknown:
        raise ValueError(f"province(): unknown subjects {sorted(unknown)}; expected some of {sorted(SUBJECT_CODES)}")
    base_year = _REF_YEAR  # trends are anchored to a fixed year, so a year never depends on the others generated

    counties = _make_counties(seed, n_tracked, n_declining)
    schools = _make_schools(seed, counties, scale)
    params = {
        "seed": seed,
        "scale": scale,
        "base_year": base_year,
        "cycle_start": cycle_start,
        "sd_prefecture": 0.10,
        "sd_county": 0.15,
        "gdp_slope": 0.22,
        "edu_slope": 0.10,
        "sd_school": 0.25,
        "locale_effect": {"urban": 0.20, "town": 0.0, "rural": -0.25},
        "ses_slope_within": 0.30,
        "left_behind_effect": -0.15,
        "sd_student": 0.70,
        "sd_subject": 0.35,
        "girl_advantage": dict(_GIRL_ADVANTAGE),
        "growth_slope": 0.75,
        "sd_growth": 0.50,
        "declining_trend": -0.08,
        "province_trend": 0.02,
    }

    county_rows, school_rows, roster_parts, truth_parts, ability_parts = [], [], [], [], []
    cohorts = sorted({y for y in years} | {y - 4 for y in years})
    grade8_counts: dict[int, np.ndarray] = {}
    for c in cohorts:
        state = _ordered(_grade4_cohort(seed, c, counties, schools, params))
        if c in years:
            roster_parts.append(_roster(state, c, 4, schools))
            t, a = _truth_students(state, c, 4, schools, rotation, cycle_start, params, linked=None)
            truth_parts.append(t)
            ability_parts.append(a)
        if c + 4 in years:
            g8 = _ordered(_grade8(seed, c + 4, state, counties, schools, params, linked_years=years))
            grade8_counts[c + 4] = np.bincount(g8["school"], minlength=len(schools))
            roster_parts.append(_roster(g8, c + 4, 8, schools))
            t, a = _truth_students(g8, c + 4, 8, schools, rotation, cycle_start, params, linked=g8["linked"])
            truth_parts.append(t)
            ability_parts.append(a)

    for y in years:
        g4 = _primary_sizes(seed, y, schools)
        g8 = grade8_counts[y]
        sf = pd.DataFrame(
            {
                "year": np.int16(y),
                "school_id": schools["school_id"],
                "county_id": schools["county_id"],
                "school_name": schools["school_name"],
                "stage": schools["stage"],
                "locale": schools["locale"],
                "ownership": schools["ownership"],
                "township_id": schools["township_id"],
                "grade4_enrolment": g4.astype(np.int32),
                "grade8_enrolment": g8.astype(np.int32),
            }
        )
        school_rows.append(sf)
        t = y - base_year
        cf = pd.DataFrame(
            {
                "year": np.int16(y),
                "county_id": counties["county_id"],
                "county_name": counties["county_name"],
                "county_type": counties["county_type"],
                "prefecture_id": counties["prefecture_id"],
                "prefecture_name": counties["prefecture_name"],
                "population": np.round(counties["population"] * (1 + counties["pop_growth"]) ** t).astype(np.int64),
                "gdp_per_capita": np.round(counties["gdp_per_capita"] * 1.05**t, 0),
                "urbanisation": np.clip(counties["urbanisation"] + 0.008 * t, 0, 1).round(4),
                "edu_index": np.clip(counties["edu_index"] + 0.6 * t, 0, 100).round(1),
                "national_sample": _national_sample(seed, y, len(counties)),
                "grade4_enrolment": np.bincount(schools["county_idx"], weights=g4, minlength=len(counties)).astype(np.int32),
                "grade8_enrolment": np.bincount(schools["county_idx"], weights=g8, minlength=len(counties)).astype(np.int32),
            }
        )
        county_rows.append(cf)

    items_truth = pd.concat([_items(seed, y, s, g, cycle_start) for y in years for s in rotation[(y - cycle_start) % 3 + 1] for g in (4, 8)], ignore_index=True)
    item_bank = items_truth[["year", "item_id", "subject", "grade", "item_type", "max_score", "is_anchor", "model", "block", "domain"]].copy()

    # parts are each sorted by school and key; order the parts by (year, grade)
    order = sorted(range(len(roster_parts)), key=lambda i: (int(roster_parts[i]["year"].iat[0]), int(roster_parts[i]["grade"].iat[0])) if len(roster_parts[i]) else (0, 0))
    roster = pd.concat([roster_parts[i] for i in order], ignore_index=True)
    students_truth = pd.concat([truth_parts[i] for i in order], ignore_index=True)
    abilities = pd.concat([ability_parts[i] for i in order], ignore_index=True)

    truth = Truth(
        counties=counties[["county_id", "prefecture_id", "effect", "trend", "declining", "tracked", "value_added"]].copy(),
        schools=schools[["school_id", "county_id", "stage", "locale", "effect", "value_added", "ses_mean"]].copy(),
        students=students_truth,
        abilities=abilities,
        items=items_truth,
        params=params,
    )
    tables = {
        "county_frame": pd.concat(county_rows, ignore_index=True),
        "school_frame": pd.concat(school_rows, ignore_index=True),
        "student_roster": roster,
        "item_bank": item_bank,
    }
    prov = Province(tables, years, truth, int(seed), rotation, int(cycle_start))
    if isinstance(tested, str) and tested == "field":
        who = _field_sample(prov)
    elif isinstance(tested, str) and tested == "all":
        who = roster[["year", "student_id"]]
    elif tested is None:
        who = roster[["year", "student_id"]].iloc[:0]
    elif isinstance(tested, pd.DataFrame):
        who = tested
    else:
        raise ValueError(f"province(): tested must be 'field', 'all', None or a DataFrame, got {tested!r}")
    prov.tables.update(prov.administer(who))
    return prov


# --------------------------------------------------------------------------- counties
def _make_counties(seed: int, n_tracked: int, n_declining: int) -> pd.DataFrame:
    rng = _rng(seed, 1)
    rows = []
    names = set()

    def name(rng) -> str:
        while True:
            n = "".join(rng.choice(_CHARS, 2, replace=False))
            if n not in names:
                names.add(n)
                return n

    dev_zone_budget = {0: 3, 4: 1, 5: 1, 8: 1, 11: 1}
    for p, (n_c, kind) in enumerate(_PREFECTURES):
        pref_id = f"51{p + 1:02d}"
        pname = name(rng) + ("自治州" if kind == "ethnic" else "市")
        pref_gdp = _PREF_LOG_GDP[kind] + rng.normal(0, 0.08)
        pref_eff = rng.normal(0, 0.10)
        n_dev = dev_zone_budget.get(p, 0)
        n_dist = {"metro": 11, "plain": 2, "hill": 2, "ethnic": 0}[kind]
        n_dist = min(n_dist, n_c - n_dev - 1) if n_c > 2 else 1
        n_city = {"metro": 4, "plain": 1, "hill": 1, "ethnic": 1}[kind] if n_c > 3 else 0
        types = ["district"] * n_dist + ["city"] * n_city + ["dev_zone"] * n_dev
        types += ["county"] * (n_c - len(types))
        for j, t in enumerate(types[:n_c]):
            suffix = {"district": "区", "county": "县", "city": "市", "dev_zone": "高新区" if j % 2 else "经济开发区"}[t]
            log_gdp = pref_gdp + rng.normal(0, 0.25) + {"district": 0.35, "city": 0.15, "county": -0.1, "dev_zone": 0.6}[t]
            if kind == "metro":
                mean_pop, sd_pop = (13.55, 0.5) if t == "district" else (13.0, 0.4)
            elif kind == "ethnic":
                mean_pop, sd_pop = (11.3, 0.75)
            else:
                mean_pop, sd_pop = (12.85, 0.6) if t != "district" else (13.1, 0.45)
            if t == "dev_zone":
                mean_pop, sd_pop = (11.9, 0.4)
            pop = int(round(math.exp(rng.normal(mean_pop, sd_pop)), -2))
            urb = special.expit(
                {"district": 1.9, "city": 0.2, "county": -0.55, "dev_zone": 1.2}[t] + 0.9 * (log_gdp - 10.9) + rng.normal(0, 0.25)
            )
            rows.append(
                {
                    "county_id": f"{pref_id}{j + 1:02d}",
                    "county_name": name(rng) + suffix,
                    "county_type": t,
                    "prefecture_id": pref_id,
                    "prefecture_name": pname,
                    "prefecture_kind": kind,
                    "pref_effect": pref_eff,
                    "population": pop,
                    "log_gdp": log_gdp,
                    "urbanisation": round(float(urb), 4),
                    "cohort_share": {"ethnic": 0.0135, "metro": 0.0090}.get(kind, 0.0105) * math.exp(rng.normal(0, 0.08)),
                    "pop_growth": {"metro": 0.012, "ethnic": 0.004}.get(kind, -0.006) + rng.normal(0, 0.004),
                }
            )
    df = pd.DataFrame(rows)
    df["gdp_per_capita"] = np.round(np.exp(df["log_gdp"]), 0)
    z_gdp = (df["log_gdp"] - df["log_gdp"].mean()) / df["log_gdp"].std()
    edu = 62 + 12 * z_gdp + rng.normal(0, 7, len(df))
    df["edu_index"] = np.clip(edu, 5, 98).round(1)
    z_edu = (df["edu_index"] - df["edu_index"].mean()) / df["edu_index"].std()
    df["z_gdp"] = z_gdp
    df["effect"] = 0.22 * z_gdp + 0.10 * z_edu + df["pref_effect"] + rng.normal(0, 0.15, len(df))
    df["trend"] = rng.normal(0, 0.01, len(df))
    df["value_added"] = 0.05 * z_gdp + rng.normal(0, 0.12, len(df))
    # tracked and declining counties: ordinary counties (not zones), spread over prefectures
    candidates = df.index[(df["county_type"] == "county") & (df["prefecture_kind"] != "ethnic")].to_numpy()
    chosen = rng.choice(candidates, size=max(n_tracked, n_declining) + n_tracked, replace=False)
    declining = chosen[:n_declining]
    tracked = np.concatenate([declining[:1], chosen[n_declining : n_declining + max(n_tracked - 1, 0)]])[:n_tracked]
    df["declining"] = False
    df.loc[declining, "declining"] = True
    df.loc[declining, "trend"] = -0.08
    df["tracked"] = False
    df.loc[tracked, "tracked"] = True
    return df


def _national_sample(seed: int, year: int, n: int) -> np.ndarray:
    rng = _rng(seed, 2, year)
    out = np.zeros(n, dtype=bool)
    out[rng.choice(n, size=8, replace=False)] = True
    return out


# --------------------------------------------------------------------------- schools
def _make_schools(seed: int, counties: pd.DataFrame, scale: float) -> pd.DataFrame:
    rng = _rng(seed, 3)
    parts = []
    for k, cty in enumerate(counties.itertuples(index=False)):
        cohort = cty.population * cty.cohort_share * scale
        urb = cty.urbanisation
        shares = {"urban": urb, "town": (1 - urb) * 0.55, "rural": (1 - urb) * 0.45}
        serial = 0
        county_rows = []
        for stage_kind, sizes in (("primary", _PRIMARY_SIZE), ("junior", _JUNIOR_SIZE)):
            target_total = cohort * (1.0 if stage_kind == "primary" else 0.96)
            for loc in _LOCALES:
                target = target_total * shares[loc]
                mu, sd = sizes[loc]
                if cty.prefecture_kind == "ethnic":
                    mu -= 0.35
                # draw sizes until the locale's cohort is covered
                n_guess = max(1, int(target / math.exp(mu + sd * sd / 2) * 1.6) + 3)
                draws = np.maximum(1, np.round(np.exp(rng.normal(mu, sd, n_guess)))).astype(int)
                cum = np.cumsum(draws)
                m = int(np.searchsorted(cum, target)) + 1
                if target < 0.5:
                    m = 0
                draws = draws[: min(m, len(draws))]
                if len(draws) and draws.sum() > target and len(draws) > 1:
                    draws[-1] = max(1, int(round(target - draws[:-1].sum())))
                for s in draws:
                    serial += 1
                    county_rows.append((k, stage_kind, loc, int(s), serial))
        # every county needs at least one primary and one junior school
        stages = {r[1] for r in county_rows}
        for need in ("primary", "junior"):
            if need not in stages:
                serial += 1
                county_rows.append((k, need, "town", 20, serial))
        parts.extend(county_rows)

    df = pd.DataFrame(parts, columns=["county_idx", "kind", "locale", "size", "serial"])
    n = len(df)
    # some juniors are nine-year schools (they keep their own primary section)
    nine = (df["kind"] == "junior") & (rng.random(n) < np.where(df["locale"] == "urban", 0.12, 0.25))
    df["stage"] = np.where(nine, "nine_year", df["kind"])
    df["base4"] = np.where(df["kind"] == "primary", df["size"], np.where(nine, np.round(df["size"] * rng.uniform(0.5, 0.9, n)), 0)).astype(float)
    df["cap8"] = np.where(df["kind"] == "junior", df["size"], 0).astype(float)
    df["ownership"] = np.where((df["locale"] != "rural") & (rng.random(n) < 0.07), "private", "public")
    cid = counties["county_id"].to_numpy()
    df["county_id"] = cid[df["county_idx"]]
    df["school_id"] = [f"{c}{s:04d}" for c, s in zip(df["county_id"], df["serial"])]
    # township: urban schools in a few street offices, rural ones spread out
    n_town = np.maximum(3, np.round(counties["population"].to_numpy() / 30000)).astype(int)
    tw = np.where(
        df["locale"] == "urban",
        rng.integers(1, 4, n),
        np.floor(rng.random(n) * n_town[df["county_idx"]]).astype(int) + 1,
    )
    df["township_id"] = [f"{c}{t:03d}" for c, t in zip(df["county_id"], tw)]
    cname = counties["county_name"].to_numpy()
    label = {"primary": "小学", "junior": "中学", "nine_year": "九年一贯制学校"}
    loc_word = {"urban": "实验", "town": "镇中心", "rural": "村"}
    df["school_name"] = [
        f"{cname[k]}{loc_word[l]}{label[s]}（{ser}）" for k, l, s, ser in zip(df["county_idx"], df["locale"], df["stage"], df["serial"])
    ]
    z = counties["z_gdp"].to_numpy()[df["county_idx"]]
    loc_eff = df["locale"].map({"urban": 0.20, "town": 0.0, "rural": -0.25}).to_numpy(dtype=float)
    df["effect"] = loc_eff + rng.normal(0, 0.25, n)
    df["value_added"] = np.where(df["kind"] == "junior", rng.normal(0, 0.15, n), 0.0)
    df["ses_mean"] = 0.45 * z + df["locale"].map({"urban": 0.6, "town": 0.0, "rural": -0.5}).to_numpy(dtype=float) + rng.normal(0, 0.3, n)
    df["growth"] = df["locale"].map(_LOCALE_GROWTH).to_numpy(dtype=float) + rng.normal(0, 0.01, n)
    df["uid"] = np.arange(n, dtype=np.int64)
    return df


def _primary_sizes(seed: int, year: int, schools: pd.DataFrame) -> np.ndarray:
    """Grade-4 enrolment of every school in ``year`` (0 for junior schools)."""
    noise = _normal(seed, 11, year, schools["uid"].to_numpy()) * 0.08
    size = schools["base4"].to_numpy() * np.exp(schools["growth"].to_numpy() * (year - _REF_YEAR) + noise)
    size = np.where(schools["base4"].to_numpy() > 0, np.maximum(1, np.round(size)), 0)
    return size.astype(np.int64)


# --------------------------------------------------------------------------- students
def _county_mean(counties: pd.DataFrame, year: int, params: dict) -> np.ndarray:
    return counties["effect"].to_numpy() + counties["trend"].to_numpy() * (year - params["base_year"]) + params["province_trend"] * (year - params["base_year"])


_MASK60 = np.uint64((1 << 60) - 1)


def _new_ids(seed: int, tag: int, n: int) -> np.ndarray:
    """``n`` pseudonymous 60-bit keys for group ``tag`` (a cohort year, or
    transfer-ins of a year): a keyed bijection of (tag, serial) on [0, 2**60),
    so keys never collide and reveal neither the tag nor the serial without
    the seed."""
    if not 0 <= tag < (1 << 24):
        raise ValueError(f"identifier group tag out of range: {tag}")
    v = (np.uint64(tag) << np.uint64(36)) | np.arange(n, dtype=np.uint64)
    k = _hash(seed, 1001, np.arange(4))
    with np.errstate(over="ignore"):
        for r in range(4):
            v = (v * (k[r] | np.uint64(1)) + (k[(r + 1) % 4] >> np.uint64(4))) & _MASK60
            v ^= v >> np.uint64(29)
    return v


def _grade4_cohort(seed: int, c: int, counties: pd.DataFrame, schools: pd.DataFrame, params: dict) -> dict:
    """Students of the grade-4 cohort of year ``c`` with their latent state."""
    rng = _rng(seed, 4, c)
    sizes = _primary_sizes(seed, c, schools)
    school = np.repeat(np.arange(len(schools)), sizes)
    n = len(school)
    county = schools["county_idx"].to_numpy()[school]
    locale = schools["locale"].to_numpy()[school]
    rural, urban = locale == "rural", locale == "urban"
    gender = np.where(rng.random(n) < 0.53, "M", "F")
    poor = (counties["prefecture_kind"].to_numpy()[county] != "metro") & (counties["z_gdp"].to_numpy()[county] < 0.3)
    p_lb = np.where(rural, 0.34, np.where(urban, 0.05, 0.2)) * np.where(poor, 1.2, 0.7)
    left_behind = rng.random(n) < p_lb
    migrant = (~left_behind) & (rng.random(n) < np.where(urban, 0.22, np.where(rural, 0.01, 0.08)))
    ses = schools["ses_mean"].to_numpy()[school] + rng.normal(0, 0.8, n) - 0.25 * left_behind
    ses_within = ses - schools["ses_mean"].to_numpy()[school]
    general = (
        _county_mean(counties, c, params)[county]
        + schools["effect"].to_numpy()[school]
        + params["ses_slope_within"] * ses_within
        + params["left_behind_effect"] * left_behind
        + rng.normal(0, params["sd_student"], n)
    )
    return {
        "key": _new_ids(seed, c, n),
        "school": school,
        "county": county,
        "gender": gender,
        "left_behind": left_behind,
        "migrant": migrant,
        "ses": ses,
        "general": general,
        "prior": np.full(n, np.nan),
        "linked": np.zeros(n, dtype=bool),
    }


def _grade8(seed: int, year: int, g4: dict, counties: pd.DataFrame, schools: pd.DataFrame, params: dict, linked_years) -> dict:
    """The grade-4 cohort four years on: movers out and in, junior school, grown ability."""
    rng = _rng(seed, 5, year)
    n4 = len(g4["key"])
    stay = rng.random(n4) >= 0.07  # moved away or left the system
    idx = np.flatnonzero(stay)
    county = g4["county"][idx]
    from_school = g4["school"][idx]
    # transfer-ins from outside: new students with a fresh prior drawn in the county
    n_in = int(round(0.06 * n4))
    in_county = rng.choice(len(counties), size=n_in, p=np.bincount(county, minlength=len(counties)) / max(len(county), 1))
    # assign a junior school within the county, by capacity and locale affinity
    sch_county = schools["county_idx"].to_numpy()
    sch_loc = pd.Categorical(schools["locale"], categories=list(_LOCALES)).codes
    cap = schools["cap8"].to_numpy()
    affinity = np.array([[1.0, 0.35, 0.1], [0.3, 1.0, 0.5], [0.1, 0.6, 1.0]])
    stu_loc = np.concatenate([sch_loc[from_school], np.full(n_in, 1)])
    stu_county = np.concatenate([county, in_county])
    nine = (schools["stage"].to_numpy() == "nine_year")
    stays_nine = np.concatenate([nine[from_school] & (rng.random(len(idx)) < 0.85), np.zeros(n_in, bool)])
    junior = np.empty(len(stu_county), dtype=np.int64)
    junior[: len(idx)][stays_nine[: len(idx)]] = from_school[stays_nine[: len(idx)]]
    order = np.lexsort((stu_loc, stu_county))
    sc, sl = stu_county[order], stu_loc[order]
    bounds = np.flatnonzero(np.diff(sc * 3 + sl, prepend=-1, append=-1))
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = order[a:b]
        members = members[~stays_nine[members]]
        if not len(members):
            continue
        cands = np.flatnonzero((sch_county == sc[a]) & (cap > 0))
        w = cap[cands] * affinity[sl[a], sch_loc[cands]]
        junior[members] = cands[rng.choice(len(cands), size=len(members), p=w / w.sum())]
    n = len(junior)
    prior = np.concatenate([g4["general"][idx], _county_mean(counties, year - 4, params)[in_county] + rng.normal(0, 0.8, n_in)])
    ses = np.concatenate([g4["ses"][idx], rng.normal(0, 1, n_in)])
    left_behind = np.concatenate([g4["left_behind"][idx], rng.random(n_in) < 0.1])
    county_all = stu_county
    trend = (counties["trend"].to_numpy()[county_all] + params["province_trend"]) * (year - params["base_year"])
    general = (
        params["growth_slope"] * prior
        + counties["value_added"].to_numpy()[county_all]
        + schools["value_added"].to_numpy()[junior]
        + trend
        + 0.1 * (ses - schools["ses_mean"].to_numpy()[junior])
        + rng.normal(0, params["sd_growth"], n)
    )
    linked = np.concatenate([np.full(len(idx), (year - 4) in linked_years), np.zeros(n_in, bool)])
    return {
        "key": np.concatenate([g4["key"][idx], _new_ids(seed, 100000 + year, n_in)]),
        "school": junior,
        "county": county_all,
        "gender": np.concatenate([g4["gender"][idx], np.where(rng.random(n_in) < 0.53, "M", "F")]),
        "left_behind": left_behind,
        "migrant": np.concatenate([g4["migrant"][idx], rng.random(n_in) < 0.3]),
        "ses": ses,
        "general": general,
        "prior": prior,
        "linked": linked,
    }


def _ordered(state: dict) -> dict:
    """Sort a cohort's arrays by school, then by pseudonymous key (the order of the rosters)."""
    order = np.lexsort((state["key"], state["school"]))
    return {k: v[order] for k, v in state.items()}


def _roster(state: dict, year: int, grade: int, schools: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "year": np.int16(year),
            "student_id": _hex_ids(state["key"], 15, "S"),
            "school_id": schools["school_id"].array.take(state["school"]),
            "grade": np.int8(grade),
            "gender": state["gender"],
            "left_behind": state["left_behind"],
            "migrant": state["migrant"],
        }
    )


def _truth_students(state: dict, year: int, grade: int, schools: pd.DataFrame, rotation, cycle_start, params, linked) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = _hex_ids(state["key"], 15, "S")
    students = pd.DataFrame(
        {
            "year": np.int16(year),
            "student_id": ids,
            "grade": np.int8(grade),
            "school_id": schools["school_id"].array.take(state["school"]),
            "gender": state["gender"],
            "left_behind": state["left_behind"],
            "ses": state["ses"],
            "general": state["general"],
            "prior": state["prior"],
            "linked": state["linked"] if linked is not None else np.zeros(len(ids), bool),
        }
    )
    parts = []
    girl = state["gender"] == "F"
    for s in rotation[(year - cycle_start) % 3 + 1]:
        dev = _normal(params["seed"], 31, year, _stag(s), state["key"]) * params["sd_subject"]
        theta = state["general"] + dev + params["girl_advantage"][s] * (girl - 0.47)
        students[f"theta_{s}"] = theta
        parts.append(pd.DataFrame({"year": np.int16(year), "student_id": ids, "grade": np.int8(grade), "subject": s, "theta": theta}))
    return students, pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- items
_BLOCKS, _BLOCK_LEN, _N_BOOKLETS = 6, 12, 6


def _items(seed: int, year: int, subject: str, grade: int, cycle_start: int) -> pd.DataFrame:
    """The test of ``subject`` and ``grade`` in ``year``: 6 blocks of 12 items.

    Administration k = (year - cycle_start) // 3.  Blocks 1-2 are blocks 3-4
    of administration k - 1 (anchors to the previous test), blocks 3-4 are new
    and will be reused by administration k + 1, blocks 5-6 are new and unique.
    Item parameters are a function of (seed, subject, grade, item serial), so an
    anchor item has the same parameters in both years.
    """
    k = (year - cycle_start) // 3 + 20
    uid = np.array([4 * (k - 1) + 0, 4 * (k - 1) + 1, 4 * k + 0, 4 * k + 1, 4 * k + 2, 4 * k + 3])
    serial = (uid[:, None] * _BLOCK_LEN + np.arange(_BLOCK_LEN)[None, :]).ravel()
    block = np.repeat(np.arange(1, _BLOCKS + 1), _BLOCK_LEN)
    stag = _stag(subject)
    u = lambda stream: _uniform(seed, 41, stag, grade, stream, serial)  # noqa: E731
    z = lambda stream: _normal(seed, 41, stag, grade, stream, serial)  # noqa: E731
    poly = u(1) < 0.2
    max_score = np.where(poly, np.where(u(2) < 0.6, 2, 3), 1)
    three_pl = (~poly) & (u(3) < 0.4)
    model = np.where(poly, np.where(u(4) < 0.5, "GRM", "GPCM"), np.where(three_pl, "3PL", "2PL"))
    a = np.exp(0.25 * z(5)) * np.where(poly, 0.9, 1.1)
    b = np.clip(z(6) * 0.9 + (0.15 if grade == 8 else -0.1), -2.5, 2.6)
    c = np.where(three_pl, special.betaincinv(5, 17, u(7)), 0.0)
    n = len(serial)
    out = pd.DataFrame(
        {
            "year": np.int16(year),
            "item_id": [f"{SUBJECT_CODES[subject]}{grade}-{s:04d}" for s in serial],
            "subject": subject,
            "grade": np.int8(grade),
            "item_type": np.where(poly, "polytomous", "dichotomous"),
            "max_score": max_score.astype(np.int8),
            "is_anchor": block <= 4,
            "model": model,
            "block": block.astype(np.int8),
            "domain": np.asarray(_DOMAINS[subject])[(serial * 7 + 3) % len(_DOMAINS[subject])],
            "a": a,
            "b": np.where(poly, np.nan, b),
            "c": c,
            "d": np.where(poly, np.nan, -a * b),
        }
    )
    # polytomous thresholds: ordered around b, spread ~0.8 (GRM: b1 < b2 < b3)
    steps = np.sort(np.stack([z(10 + j) * 0.35 + (j - 1) * 0.8 for j in range(3)], axis=1), axis=1)
    for j in range(3):
        has = poly & (max_score > j)
        bj = np.where(has, b + steps[:, j] - np.where(max_score == 2, 0.4, 0.0), np.nan)
        out[f"b{j + 1}"] = bj
        out[f"d{j + 1}"] = -a * bj
    assert n == _BLOCKS * _BLOCK_LEN
    return out


def _booklet_items(items: pd.DataFrame) -> list[np.ndarray]:
    """Row positions (into ``items``) of each booklet: blocks (b, b+1 mod 6)."""
    blocks = items["block"].to_numpy()
    out = []
    for bk in range(_N_BOOKLETS):
        first, second = bk % _BLOCKS + 1, (bk + 1) % _BLOCKS + 1
        out.append(np.concatenate([np.flatnonzero(blocks == first), np.flatnonzero(blocks == second)]))
    return out


# --------------------------------------------------------------------------- administration
def _field_sample(prov: Province) -> pd.DataFrame:
    """A simple field sample per year: tracked counties plus ~10 % of counties
    (at least one per prefecture, equal probability), up to 18 primary and 12
    junior schools per county, 30 students per school and grade (all if fewer)."""
    ros = prov.tables["student_roster"]
    sf = prov.tables["school_frame"]
    tracked = set(prov.truth.counties.loc[prov.truth.counties["tracked"], "county_id"])
    cf = prov.tables["county_frame"]
    out = []
    for y in prov.years:
        rng = _rng(prov.seed, 51, y)
        c_y = cf[cf["year"] == y]
        picks = set(tracked)
        for _, grp in c_y.groupby("prefecture_id", sort=True):
            m = max(1, int(round(0.1 * len(grp))))
            picks.update(rng.choice(grp["county_id"].to_numpy(), size=m, replace=False))
        s_y = sf[(sf["year"] == y) & sf["county_id"].isin(sorted(picks))]
        r_y = ros[ros["year"] == y]
        keep = np.zeros(len(r_y), dtype=bool)
        for grade, cap in ((4, 18), (8, 12)):
            cand = s_y[s_y[f"grade{grade}_enrolment"] > 0]
            chosen = []
            for _, grp in cand.groupby("county_id", sort=True):
                take = grp if len(grp) <= cap else grp.iloc[np.sort(rng.choice(len(grp), size=cap, replace=False))]
                chosen.extend(take["school_id"])
            keep |= (r_y["grade"].to_numpy() == grade) & r_y["school_id"].isin(chosen).to_numpy()
        r_y = r_y[keep]
        u = _uniform(prov.seed, 52, y, _parse_hex_ids(r_y["student_id"]))
        r_y = r_y.assign(_u=u).sort_values(["school_id", "grade", "_u"])
        r_y = r_y[r_y.groupby(["school_id", "grade"]).cumcount() < 30]
        out.append(r_y[["year", "student_id"]])
    return pd.concat(out, ignore_index=True)


def _is_tested(df: pd.DataFrame, tested: pd.DataFrame) -> np.ndarray:
    """Mask of the rows of ``df`` whose (year, student_id) is in ``tested``."""
    keys, years = _parse_hex_ids(df["student_id"]), df["year"].to_numpy()
    t_keys, t_years = _parse_hex_ids(tested["student_id"]), tested["year"].to_numpy()
    mask = np.zeros(len(df), dtype=bool)
    for y in np.unique(t_years):
        rows = years == y
        mask[rows] = np.isin(keys[rows], t_keys[t_years == y])
    return mask


def _student_rows(prov: Province, who: pd.DataFrame) -> np.ndarray:
    """Row positions in ``prov.truth.students`` of the (year, student_id) pairs in ``who``."""
    ts = prov.truth.students
    if not hasattr(prov, "_key_cache"):
        prov._key_cache = _parse_hex_ids(ts["student_id"])
    keys = prov._key_cache
    t_year = ts["year"].to_numpy()
    w_year = who["year"].to_numpy()
    w_key = _parse_hex_ids(who["student_id"]) if len(who) else np.zeros(0, np.uint64)
    pos = np.full(len(who), -1, dtype=np.int64)
    for y in np.unique(w_year):
        idx = np.flatnonzero(t_year == y)
        order = np.argsort(keys[idx], kind="stable")
        sk = keys[idx][order]
        m = np.flatnonzero(w_year == y)
        j = np.searchsorted(sk, w_key[m])
        j = np.minimum(j, max(len(sk) - 1, 0))
        hit = (len(sk) > 0) & (sk[j] == w_key[m]) if len(sk) else np.zeros(len(m), bool)
        pos[m[hit]] = idx[order[j[hit]]]
    return pos


def _administer(prov: Province, students: pd.DataFrame) -> dict[str, pd.DataFrame]:
    for col in ("year", "student_id"):
        if col not in students.columns:
            raise ValueError(f"administer(): the students frame needs a {col!r} column (year and pseudonymous student_id)")
    who = students[["year", "student_id"]].drop_duplicates().astype({"year": np.int16})
    bad_id = ~who["student_id"].astype(str).str.fullmatch(r"S[0-9A-F]{15}")
    pos = np.full(len(who), -1, np.int64)
    pos[~bad_id.to_numpy()] = _student_rows(prov, who[~bad_id])
    if (pos < 0).any():
        bad = who[pos < 0].head(5)
        raise ValueError(
            f"administer(): {int((pos < 0).sum())} students are not in the province's roster, e.g. "
            + ", ".join(f"(year={r.year}, student_id={r.student_id})" for r in bad.itertuples())
        )
    truth = prov.truth.students.iloc[np.sort(pos)].reset_index(drop=True)
    key = _parse_hex_ids(truth["student_id"])
    seed = prov.seed
    responses = []
    items_truth = prov.truth.items
    for (year, grade), grp in truth.groupby(["year", "grade"], sort=True):
        kk = key[grp.index.to_numpy()]
        for subject in prov.subjects(int(year)):
            th = grp[f"theta_{subject}"].to_numpy()
            it = items_truth[(items_truth["year"] == year) & (items_truth["subject"] == subject) & (items_truth["grade"] == grade)].reset_index(drop=True)
            responses.append(_responses(seed, int(year), int(grade), subject, grp["student_id"].to_numpy(), kk, th, it))
    resp = pd.concat(responses, ignore_index=True) if responses else _empty("responses")
    q_s = _questionnaire_student(prov, truth, key)
    q_t, q_p = _questionnaire_schools(prov, truth)
    return {"responses": resp, "questionnaire_student": q_s, "questionnaire_teacher": q_t, "questionnaire_principal": q_p}


def _empty(name: str) -> pd.DataFrame:
    from qualmon.schema import contract

    return contract(name).empty()


def _category_probs(it: pd.DataFrame, theta: np.ndarray) -> np.ndarray:
    """P(score = k | theta) for every student x item x category (k = 0..3), small tests only."""
    n, J = len(theta), len(it)
    P = np.zeros((n, J, 4))
    a = it["a"].to_numpy()
    model = it["model"].to_numpy()
    for j in range(J):
        if model[j] in ("2PL", "3PL"):
            p1 = it["c"].iat[j] + (1 - it["c"].iat[j]) * special.expit(a[j] * theta + it["d"].iat[j])
            P[:, j, 0], P[:, j, 1] = 1 - p1, p1
        else:
            d = np.array([it[f"d{k}"].iat[j] for k in (1, 2, 3) if not np.isnan(it[f"d{k}"].iat[j])])
            if model[j] == "GRM":
                star = np.concatenate([np.ones((n, 1)), special.expit(a[j] * theta[:, None] + d[None, :]), np.zeros((n, 1))], axis=1)
                P[:, j, : len(d) + 1] = star[:, :-1] - star[:, 1:]
            else:  # GPCM, mirt form: exp(k a theta + sum_{v<=k} d_v) with d_0 = 0
                ks = np.arange(len(d) + 1)
                z = ks[None, :] * a[j] * theta[:, None] + np.concatenate([[0.0], np.cumsum(d)])[None, :]
                P[:, j, : len(d) + 1] = special.softmax(z, axis=1)
    return P


def _responses(seed, year, grade, subject, ids, key, theta, it) -> pd.DataFrame:
    booklets = _booklet_items(it)
    bk = (_hash(seed, 61, year, key) % np.uint64(_N_BOOKLETS)).astype(np.int64)
    stag = _stag(subject)
    slow = _uniform(seed, 62, year, stag, key) < 0.08
    stop = np.where(slow, 16 + np.floor(_uniform(seed, 63, year, stag, key) * 8).astype(int), 99)
    parts = []
    for b, rows in enumerate(booklets):
        who = np.flatnonzero(bk == b)
        if not len(who):
            continue
        sub = it.iloc[rows].reset_index(drop=True)
        P = _category_probs(sub, theta[who])  # (n_b, 24, 4)
        item_serial = np.array([int(x.split("-")[1]) for x in sub["item_id"]])
        u = _uniform(seed, 64, year, stag, key[who][:, None], item_serial[None, :])
        score = (np.cumsum(P, axis=2) < u[:, :, None]).sum(axis=2).clip(max=sub["max_score"].to_numpy()[None, :])
        # omissions: more for polytomous items and low ability
        p_omit = special.expit(-4.0 + 1.2 * (sub["item_type"].to_numpy() == "polytomous")[None, :] - 0.6 * theta[who][:, None])
        omitted = _uniform(seed, 65, year, stag, key[who][:, None], item_serial[None, :]) < p_omit
        position = np.arange(1, len(rows) + 1)
        not_reached = position[None, :] > stop[who][:, None]
        status = np.where(not_reached, "not_reached", np.where(omitted, "omitted", "scored"))
        nb, J = score.shape
        parts.append(
            pd.DataFrame(
                {
                    "year": np.int16(year),
                    "student_id": np.repeat(ids[who], J),
                    "item_id": np.tile(sub["item_id"].to_numpy(), nb),
                    "booklet": np.int8(b + 1),
                    "position": np.tile(position.astype(np.int16), nb),
                    "score": pd.array(np.where(status == "scored", score, 0).ravel().astype(np.int8), dtype="Int8"),
                    "status": status.ravel(),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    df.loc[df["status"] != "scored", "score"] = pd.NA
    return df


def _likert(latent: np.ndarray, u: np.ndarray, cuts=(-1.2, 0.0, 1.1)) -> np.ndarray:
    """Four-category Likert answer from a latent value and a uniform draw (graded model, a = 1.5)."""
    z = 1.5 * latent[:, None] - 1.5 * np.asarray(cuts)[None, :]
    pstar = special.expit(z)
    return 1 + (u[:, None] < pstar).sum(axis=1)


def _questionnaire_student(prov: Province, truth: pd.DataFrame, key: np.ndarray) -> pd.DataFrame:
    if not len(truth):
        return _empty("questionnaire_student")
    seed = prov.seed
    n = len(truth)
    year = truth["year"].to_numpy().astype(np.int64)
    grade = truth["grade"].to_numpy()
    g8 = grade == 8
    ses = truth["ses"].to_numpy()
    gen = truth["general"].to_numpy()
    sch = prov.truth.schools.set_index("school_id")
    locale = sch["locale"].reindex(truth["school_id"]).to_numpy()
    rural = locale == "rural"
    N = lambda s: _normal(seed, 71, s, year, key)  # noqa: E731
    U = lambda s: _uniform(seed, 72, s, year, key)  # noqa: E731
    parent_edu = np.clip(np.round(3.0 + 1.1 * ses + 0.6 * N(1)), 1, 6)
    books = np.clip(np.round(2.6 + 0.9 * ses + 0.6 * N(2)), 1, 5)
    poss = np.clip(np.round(4.5 + 1.5 * ses + 1.0 * N(3)), 0, 8)
    dual_reduction = np.clip(year - 2021, 0, None) * 4.0  # 双减 (2021): homework falls year by year
    homework = np.clip(np.round(np.where(g8, 95, 55) - dual_reduction + 12 * (locale == "town") + 25 * N(4)), 0, 600)
    sleep = np.clip(np.round(np.where(g8, 8.6, 9.6) - 0.012 * (homework - 60) + 0.6 * N(5), 1), 3, 14)
    tutoring = U(6) < special.expit(-1.6 + 0.7 * ses + 0.3 * g8 - 0.15 * np.clip(year - 2021, 0, None))
    reading = np.clip(np.round(np.exp(3.2 + 0.25 * ses + 0.15 * gen + 0.5 * N(7))), 0, 600)
    exercise = np.clip(np.round(np.exp(3.7 + 0.1 * rural + 0.4 * N(8))), 0, 600)
    interest = 0.35 * gen + 0.8 * N(9)
    confidence = 0.5 * gen + 0.7 * N(10)
    burden = 0.012 * (homework - 60) - 0.2 * gen + 0.8 * N(11)
    relation = 0.2 * gen + 0.8 * N(12)
    wellbeing = 0.25 * (sleep - 9) + 0.15 * gen - 0.3 * truth["left_behind"].to_numpy() + 0.85 * N(13)
    out = {
        "year": truth["year"].to_numpy(),
        "student_id": truth["student_id"].to_numpy(),
        "parent_education": parent_edu,
        "books_at_home": books,
        "possessions": poss,
        "homework_minutes": homework,
        "sleep_hours": sleep,
        "tutoring": tutoring,
        "reading_minutes": reading,
        "exercise_minutes": exercise,
    }
    for name, lat, base in (("interest", interest, 20), ("confidence", confidence, 30), ("burden", burden, 40), ("relationship", relation, 50)):
        for j in range(1, 4):
            out[f"{name}_{j}"] = _likert(lat, U(base + j))
    for j in range(1, 5):
        out[f"wellbeing_{j}"] = _likert(wellbeing, U(60 + j))
    df = pd.DataFrame(out)
    # item non-response (about 2 %)
    for j, col in enumerate(df.columns[2:]):
        miss = U(100 + j) < 0.02
        if col == "tutoring":
            df[col] = pd.array(np.where(miss, False, df[col].to_numpy()), dtype="boolean")
            df.loc[miss, col] = pd.NA
        elif col == "sleep_hours":
            df[col] = np.where(miss, np.nan, df[col].to_numpy())
        else:
            vals = df[col].to_numpy()
            df[col] = pd.array(np.where(miss, 0, vals).astype(np.int64), dtype="Int64")
            df.loc[miss, col] = pd.NA
    return df


def _questionnaire_schools(prov: Province, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not len(truth):
        return _empty("questionnaire_teacher"), _empty("questionnaire_principal")
    seed = prov.seed
    sch = prov.truth.schools.set_index("school_id")
    uid = pd.Series(np.arange(len(sch)), index=sch.index)
    tested = truth[["year", "school_id", "grade"]].drop_duplicates().sort_values(["year", "school_id", "grade"], ignore_index=True)
    rows = []
    for year, grp in tested.groupby("year", sort=True):
        subjects = prov.subjects(int(year))
        for j, s in enumerate(subjects):
            for t in (0, 1):
                rows.append(grp.assign(subject=s, slot=j * 2 + t))
    tch = pd.concat(rows, ignore_index=True)
    su = uid.reindex(tch["school_id"]).to_numpy()
    yr = tch["year"].to_numpy().astype(np.int64)
    slot = tch["slot"].to_numpy()
    gr = tch["grade"].to_numpy().astype(np.int64)
    N = lambda s: _normal(seed, 81, s, yr, su, gr, slot)  # noqa: E731
    U = lambda s: _uniform(seed, 82, s, yr, su, gr, slot)  # noqa: E731
    school_eff = sch["effect"].reindex(tch["school_id"]).to_numpy()
    rural = (sch["locale"].reindex(tch["school_id"]).to_numpy() == "rural")
    key = _hash(seed, 83, yr, su, gr, slot) >> np.uint64(20)
    teacher = pd.DataFrame(
        {
            "year": tch["year"].to_numpy(),
            "teacher_id": _hex_ids(key, 11, "T"),
            "school_id": tch["school_id"].to_numpy(),
            "grade": tch["grade"].to_numpy(),
            "subject": tch["subject"].to_numpy(),
            "gender": np.where(U(1) < 0.7, "F", "M"),
            "experience_years": np.clip(np.round(np.exp(2.5 + 0.6 * N(2))), 0, 45).astype(np.int64),
            "education": np.where(U(3) < np.where(rural, 0.45, 0.15), "college", np.where(U(4) < 0.1, "master", "bachelor")),
            "training_hours": np.clip(np.round(np.exp(3.6 + 0.5 * N(5))), 0, 1000).astype(np.int64),
        }
    )
    inquiry = 0.6 * school_eff + 0.8 * N(6)
    lecture = -0.4 * school_eff + 0.3 * rural + 0.8 * N(7)
    satisfaction = 0.2 * school_eff + 0.9 * N(8)
    for j in (1, 2, 3):
        teacher[f"inquiry_{j}"] = _likert(inquiry, U(10 + j))
    for j in (1, 2):
        teacher[f"lecture_{j}"] = _likert(lecture, U(20 + j))
        teacher[f"satisfaction_{j}"] = _likert(satisfaction, U(30 + j))
    teacher = teacher.drop_duplicates(["year", "teacher_id"])

    pr = tested[["year", "school_id"]].drop_duplicates().reset_index(drop=True)
    su = uid.reindex(pr["school_id"]).to_numpy()
    yr = pr["year"].to_numpy().astype(np.int64)
    N = lambda s: _normal(seed, 91, s, yr, su)  # noqa: E731
    U = lambda s: _uniform(seed, 92, s, yr, su)  # noqa: E731
    eff = sch["effect"].reindex(pr["school_id"]).to_numpy()
    rural = sch["locale"].reindex(pr["school_id"]).to_numpy() == "rural"
    principal = pd.DataFrame(
        {
            "year": pr["year"].to_numpy(),
            "school_id": pr["school_id"].to_numpy(),
            "pe_lessons_week": np.clip(np.round(3 + 0.3 * eff + 0.5 * N(1) - 0.4 * rural), 0, 10).astype(np.int64),
            "arts_lessons_week": np.clip(np.round(2 + 0.3 * eff + 0.6 * N(2) - 0.5 * rural), 0, 10).astype(np.int64),
            "labour_lessons_week": np.clip(np.round(1 + 0.2 * eff + 0.4 * N(3)), 0, 10).astype(np.int64),
            "class_size": np.clip(np.round(np.where(rural, 28, 45) + 6 * N(4), 1), 1, 100),
            "student_teacher_ratio": np.clip(np.round(np.where(rural, 11, 17) + 3 * N(5), 1), 1, 60),
            "computers_per_100": np.clip(np.round(np.exp(2.2 + 0.3 * eff + 0.4 * N(6)), 1), 0, 200),
        }
    )
    lead = 0.7 * eff + 0.8 * N(7)
    res = 0.5 * eff - 0.4 * rural + 0.8 * N(8)
    for j in (1, 2, 3):
        principal[f"leadership_{j}"] = _likert(lead, U(10 + j))
        principal[f"resources_{j}"] = _likert(res, U(20 + j))
    return teacher, principal
