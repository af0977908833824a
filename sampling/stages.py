"""The three-stage sample (县—校—学生): counties, schools, students.

:func:`draw` turns a :class:`~qualmon.sampling.plan.SamplingPlan` and the
frames (``county_frame``, ``school_frame``, ``student_roster``) into a
:class:`Sample` with exact inclusion probabilities at every stage, base and
final weights, replicate weights and a sample report.

Stage 1 — counties, coordinated over the three-year cycle
----------------------------------------------------------
Tracked and certainty counties (plan lists) are taken every year with
probability 1 and are left out of the probability frame: a purposive
inclusion cannot carry a design weight, so each of them represents itself
only (weight 1 at the county stage), and the probability sample represents
all the other counties.

The probability sample of a whole cycle of L = 3 years is drawn at once,
from the county frame of the cycle's first year (the measure of size must
not change within the cycle) with the random stream of (seed, first year):

1. explicit strata h (prefectures, plus optional bands); n_cycle = L x n
   counties, n = round(10 % x counties) minus the certainty counties,
   allocated proportionally to the strata's measure of size with at least
   one per prefecture and at most the stratum's size (:func:`pps.allocate`);
2. within h, counties sorted in serpentine order by the tertile bands of
   population, GDP per head and education index and then by size
   (implicit stratification), pi^cyc_i = inclusion probability with
   certainty units for n_h out of the stratum (:func:`pps.inclusion_probabilities`),
   and a systematic PPS selection with a random start u_h;
3. the k-th selected county of stratum h (k = 0, 1, ... in frame order)
   goes to cycle year ((k + o_h) mod L) + 1, with o_h uniform on
   {0, ..., L-1}, independent of u_h.

Whatever k is, P(year y | selected) = 1/L, so the first-order inclusion
probability of county i in a given year is exactly

    pi_i(year) = pi^cyc_i / L,

each yearly subsample is a probability sample (of size floor or ceil of
n_h/L per stratum), no county is drawn in two years of a cycle, and every
stratum (prefecture) with n_h >= 1 is covered within the cycle.  A county
with pi^cyc = 1 (a large county) is in exactly one year of each cycle, with
yearly probability 1/L.  The national NAEQ sample of the year is then
handled as the plan says: "ignore"; "force" — national-sample counties are
added (or relabelled) with probability 1 (a take-all stratum of the year:
the other counties keep pi^cyc/L, so the Horvitz–Thompson estimator stays
unbiased); "exclude" — national-sample counties are not tested by the
province that year (probability 0 that year; they are listed in the report
and their enrolment is carried by the probability sample at the benchmark
step).  Under "exclude" a prefecture whose only cycle county is in the
national sample of its assigned year goes untested by the province in that
cycle (the report's ``allocation`` shows it in ``counties_excluded``).

Stage 2 — schools
-----------------
In each sampled county, for grade 4 (primary and nine-year schools) and
grade 8 (junior and nine-year schools) separately: schools with a positive
grade enrolment E, measure of size max(E, 30) (PISA: small schools get the
target cluster size, so that with all their students taken the student
probabilities stay close to self-weighting), n = min(cap, number of
schools) with cap 18 (grade 4) and 12 (grade 8) — all schools with
probability 1 when the county has no more than the cap — inclusion
probabilities with iterative certainty (schools whose size reaches the
sampling interval are taken with probability 1 and the others re-drawn),
frame sorted by locale, school type and township and then by size in
serpentine order, systematic PPS with a random start.  Each sampled school
gets up to two replacement schools, its neighbours in the sorted frame: the
next school first, then the previous one, never a sampled school nor the
replacement of another; replacements carry the probability of the school
they replace (TIMSS, PISA) and are flagged by ``role``.

Stage 3 — students
------------------
A simple random sample without replacement within the grade of each
school: 30 students for cohorts up to 150, 60 up to 300, 90 above (plan
``student_bands``), everyone in smaller cohorts; pi_{k|s} = m/M with M the
roster count.  Student samples are drawn for replacement schools too and
used when a replacement steps in.

Weights and variance
--------------------
See :mod:`qualmon.sampling.weights`: base weights, non-response
adjustment re-done in every replicate, trimming, benchmark to the frame's
grade enrolment; replicate weights on zones of variance units (the
probability-sampled counties are the primary units; within certainty
counties the schools, within their certainty schools the students), with
finite population corrections.  On the synthetic province (200 samples,
tests/test_sampling_montecarlo.py) the estimates are unbiased and the mean
Fay replicate variance of the provincial mean is 1.14-1.21 times the
Monte-Carlo variance: conservative, because pairs of counties do not
capture all of the gain from the implicit stratification of the counties.

Reproducibility
---------------
Every random number comes from ``numpy.random.Generator`` streams seeded by
(plan seed, cycle or year, stage).  The county and school frames are put in
a canonical order (by code) first; within a school the roster's row order
is kept.  So the same plan, seed and frames give the same sample, byte for
byte.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qualmon.sampling import pps as _pps
from qualmon.sampling import weights as _w
from qualmon.sampling.plan import SamplingPlan

__all__ = [
    "SamplingError",
    "SamplingWarning",
    "Sample",
    "draw",
    "cycle_sample",
    "draw_counties",
    "simulate_participation",
    "read_design",
]

_COUNTY_STREAM, _SCHOOL_STREAM, _STUDENT_STREAM, _REPLICATE_STREAM = 1, 2, 3, 4
_CERTAIN = ("tracked", "certainty", "national")


class SamplingError(ValueError):
    """The frames or the plan do not allow the draw (the message says why and where)."""


class SamplingWarning(UserWarning):
    """Something in the draw deserves attention but does not stop it."""


# =========================================================================== frames
_NEED = {
    "county_frame": ["year", "county_id", "prefecture_id", "national_sample"],
    "school_frame": ["year", "school_id", "county_id", "stage", "locale", "township_id"],
    "student_roster": ["year", "student_id", "school_id", "grade"],
}


def _load_frames(frames, plan: SamplingPlan) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(county frame of all years given, school frame of the year, roster of the year)."""
    year = plan.year
    if hasattr(frames, "tables") and isinstance(getattr(frames, "tables"), Mapping):
        frames = frames.tables
    if isinstance(frames, (str, os.PathLike)):
        import pyarrow.parquet as pq

        from qualmon.schema import validate

        d = Path(frames)
        if not d.is_dir():
            raise FileNotFoundError(f"no such frames folder: {d}")
        out = {}
        for name in _NEED:
            p = d / f"{name}.parquet"
            if not p.is_file():
                raise SamplingError(f"frames folder {d}: {name}.parquet is missing")
            filt = None if name == "county_frame" else [("year", "=", year)]
            out[name] = validate(name, pq.read_table(p, filters=filt).to_pandas())
        frames = out
    if not isinstance(frames, Mapping):
        raise SamplingError(f"frames must be a folder of contract Parquet files, a dict of tables or a Province; "
                            f"got {type(frames).__name__}")
    missing = [n for n in _NEED if n not in frames]
    if missing:
        raise SamplingError(f"frames: tables {missing} are missing (need {list(_NEED)})")
    cf, sf, ro = (frames[n] for n in _NEED)
    for name, df in zip(_NEED, (cf, sf, ro)):
        if not isinstance(df, pd.DataFrame):
            raise SamplingError(f"frames[{name!r}] must be a DataFrame, got {type(df).__name__}")
        cols = list(_NEED[name])
        if name == "school_frame":
            cols += [f"grade{g}_enrolment" for g in plan.grades] + list(plan.school_sort)
        if name == "county_frame":
            cols += list(plan.county_mos) + list(plan.county_strata) + list(plan.county_sort)
        if name == "student_roster" and "gender" in plan.student_nr_cells:
            cols.append("gender")
        absent = [c for c in dict.fromkeys(cols) if c not in df.columns]
        if absent:
            raise SamplingError(f"frames[{name!r}]: columns {absent} are missing (needed by the plan)")
    # keep the year's rows (no copy when the table holds that year only)
    m = (sf["year"] == year).to_numpy()
    sf = sf if m.all() else sf[m]
    m = (ro["year"] == year).to_numpy()
    ro = ro if m.all() else ro[m]
    if not (cf["year"] == year).any():
        raise SamplingError(f"county_frame has no rows for year {year} (years: {sorted(cf['year'].unique().tolist())})")
    if sf.empty:
        raise SamplingError(f"school_frame has no rows for year {year}")
    if ro.empty:
        raise SamplingError(f"student_roster has no rows for year {year}")
    return cf, sf, ro


def _obj(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


# =========================================================================== stage 1
def cycle_sample(plan: SamplingPlan, frames) -> pd.DataFrame:
    """The county sample of the whole cycle that ``plan.year`` belongs to.

    ``frames``: a county frame (DataFrame), or anything :func:`draw` takes.
    One row per county of the cycle frame: ``county_id``, ``prefecture_id``,
    ``stratum``, ``county_class`` ("frame", "tracked", "certainty"),
    ``mos``, ``mos_year``, ``prob_cycle`` (pi^cyc; NaN outside the
    probability frame), ``cycle_selected``, ``assigned_cycle_year`` (0 if not
    selected), ``prob_year`` (pi^cyc / L; 1 for tracked and certainty
    counties), ``cycle_order`` (position in the sorted frame), the band
    columns of the stratification variables, and ``n_stratum`` (the
    stratum's cycle allocation).
    """
    cf = frames if isinstance(frames, pd.DataFrame) else _load_frames(frames, plan)[0]
    for c in ["year", "county_id", "prefecture_id", *plan.county_mos, *plan.county_strata, *plan.county_sort]:
        if c not in cf.columns:
            raise SamplingError(f"county_frame: column {c!r} is missing (needed by the plan)")
    base = plan.cycle_first_year
    years = set(cf["year"].astype(int).unique().tolist())
    if base in years:
        mos_year = base
    elif plan.year in years:
        mos_year = plan.year
        if plan.year != base:
            warnings.warn(
                f"county_frame has no rows for {base}, the first year of the cycle of {plan.year}: the cycle's county "
                f"sample is drawn from the {plan.year} frame, so it may not fit the other years of the cycle "
                "(give the county frame of every year of the cycle)", SamplingWarning, stacklevel=2)
    else:
        raise SamplingError(f"county_frame has no rows for {plan.year} nor for {base}")
    cf = cf[cf["year"] == mos_year].copy()
    dup = cf["county_id"].duplicated(keep=False)
    if dup.any():
        raise SamplingError(f"county_frame {mos_year}: county_id repeated: {sorted(cf.loc[dup, 'county_id'].unique())[:10]}")
    cf = cf.sort_values("county_id", kind="stable").reset_index(drop=True)
    ids = cf["county_id"].astype(str).to_numpy()
    known = set(ids)
    for fld in ("tracked_counties", "certainty_counties"):
        unknown = [c for c in getattr(plan, fld) if c not in known]
        if unknown:
            raise SamplingError(f"plan field {fld!r}: counties {unknown} are not in the {mos_year} county frame")
    cls = np.where(np.isin(ids, plan.tracked_counties), "tracked",
                   np.where(np.isin(ids, plan.certainty_counties), "certainty", "frame"))
    # measure of size
    if plan.county_method == "pps":
        mos = np.zeros(len(cf))
        for c in plan.county_mos:
            v = pd.to_numeric(cf[c], errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(v) | (v < 0)
            if bad.any():
                raise SamplingError(f"county_frame {mos_year}: column {c!r} is missing or negative for counties "
                                    f"{ids[bad][:10].tolist()}; expected enrolments >= 0")
            mos += v
    else:
        mos = np.ones(len(cf))
    elig = (cls == "frame") & (mos > 0)
    # stratification variables: numeric ones cut into quantile bands over the probability frame
    band_cols = {}
    for v in dict.fromkeys([*plan.county_strata, *plan.county_sort]):
        if _numeric(cf[v]):
            x = cf[v].to_numpy(dtype=np.float64)
            if np.isnan(x).any():
                raise SamplingError(f"county_frame: column {v!r} is missing for counties {ids[np.isnan(x)][:10].tolist()}")
            k = plan.county_bands
            cuts = np.quantile(x[elig], np.arange(1, k) / k) if (k > 1 and elig.any()) else np.array([])
            band_cols[v] = np.searchsorted(cuts, x, side="right") + 1
        else:
            band_cols[v] = cf[v].astype(str).to_numpy()
    if plan.county_strata:
        parts = [np.char.add(v, band_cols[v].astype(str)).astype(object) if _numeric(cf[v])
                 else band_cols[v].astype(str).astype(object) for v in plan.county_strata]
        stratum = parts[0] if len(parts) == 1 else np.array(["|".join(t) for t in zip(*parts)], dtype=object)
    else:
        stratum = np.full(len(cf), "all", dtype=object)
    work = pd.DataFrame({"county_id": ids, "stratum": stratum, "_mos": mos})
    sort_keys = []
    for j, v in enumerate(plan.county_sort):
        work[f"_k{j}"] = band_cols[v]
        sort_keys.append(f"_k{j}")
    sort_keys.append("_mos")
    # sample sizes
    N_all = len(cf)
    n_year = plan.county_n if plan.county_n is not None else max(1, int(math.floor(plan.county_fraction * N_all + 0.5)))
    n_cert = int((cls != "frame").sum())
    n_prob = n_year - n_cert
    if n_prob < 0:
        raise SamplingError(f"plan: {n_cert} tracked/certainty counties exceed the {n_year} counties of the year "
                            "(raise county_fraction or county_n)")
    L = plan.cycle_length
    n_cycle = L * n_prob
    ew = work[elig].reset_index()
    strata_labels = sorted(pd.unique(ew["stratum"]).tolist())
    H = len(strata_labels)
    s_code = pd.Categorical(ew["stratum"], categories=strata_labels).codes.astype(np.int64)
    size_h = np.bincount(s_code, weights=ew["_mos"].to_numpy(), minlength=H)
    N_h = np.bincount(s_code, minlength=H)
    alloc_basis = size_h if plan.county_method == "pps" else N_h.astype(float)
    if n_cycle > N_h.sum():
        raise SamplingError(f"plan asks for {n_cycle} counties in the cycle but the probability frame has {int(N_h.sum())}")
    minimum = np.minimum(plan.county_min_per_stratum, N_h)
    if n_cycle < minimum.sum():
        raise SamplingError(
            f"plan: {n_cycle} counties per cycle cannot cover the {H} strata with at least "
            f"{plan.county_min_per_stratum} each (need {int(minimum.sum())}); raise county_fraction or county_n")
    n_h = _pps.allocate(alloc_basis, n_cycle, minimum=minimum, maximum=N_h) if H else np.zeros(0, dtype=np.int64)
    # sort (serpentine within strata), probabilities, systematic selection
    ew["_s"] = s_code
    order = _pps.serpentine_order(ew, sort_keys, groups="_s")
    ew = ew.iloc[order].reset_index(drop=True)
    g = ew["_s"].to_numpy()
    pik = _pps.grouped_inclusion_probabilities(ew["_mos"].to_numpy(), g, n_h.astype(float))
    rng = np.random.default_rng([plan.seed, plan.cycle_first_year, _COUNTY_STREAM])
    u = rng.random(H)
    offset = rng.integers(0, L, H)
    sel = _pps.grouped_systematic(pik, g, u)
    # position among the selected of the stratum -> cycle year
    k = np.zeros(len(ew), dtype=np.int64)
    if sel.any():
        si = np.flatnonzero(sel)
        gs = g[si]
        starts = np.r_[0, np.flatnonzero(np.diff(gs)) + 1]
        pos = np.arange(si.size) - np.repeat(starts, np.diff(np.r_[starts, si.size]))
        k[si] = pos
    assigned = np.where(sel, (k + offset[g]) % L + 1, 0)
    res = pd.DataFrame({
        "county_id": ids,
        "prefecture_id": cf["prefecture_id"].astype(str).to_numpy(),
        "stratum": stratum.astype(str),
        "county_class": cls,
        "mos": mos,
        "mos_year": mos_year,
    })
    for v in dict.fromkeys([*plan.county_strata, *plan.county_sort]):
        if _numeric(cf[v]):
            res[f"{v}_band"] = band_cols[v].astype(np.int64)
    pos_of = pd.Series(np.arange(len(ids)), index=ids)
    rows = pos_of.loc[ew["county_id"].to_numpy()].to_numpy()
    prob_cycle = np.full(len(ids), np.nan)
    prob_cycle[rows] = pik
    selected = np.zeros(len(ids), dtype=bool)
    selected[rows] = sel
    assigned_all = np.zeros(len(ids), dtype=np.int64)
    assigned_all[rows] = assigned
    corder = np.full(len(ids), -1, dtype=np.int64)
    corder[rows] = np.arange(len(ew))
    rest = np.flatnonzero(corder < 0)
    corder[rest] = len(ew) + np.arange(rest.size)
    nst = np.zeros(len(ids), dtype=np.int64)
    nst[rows] = n_h[g]
    res["prob_cycle"] = prob_cycle
    res["cycle_selected"] = selected
    res["assigned_cycle_year"] = assigned_all
    res["prob_year"] = np.where(cls != "frame", 1.0, np.nan_to_num(prob_cycle) / L)
    res["cycle_order"] = corder
    res["n_stratum"] = nst
    res["cycle_start"] = plan.cycle_first_year
    return res.sort_values("cycle_order", kind="stable").reset_index(drop=True)


def _county_stage(plan: SamplingPlan, cf_all: pd.DataFrame):
    """(sample_counties of the year, excluded national counties, cycle table)."""
    cyc = cycle_sample(plan, cf_all)
    cfy = cf_all[cf_all["year"] == plan.year].copy()
    cfy["county_id"] = cfy["county_id"].astype(str)
    dup = cfy["county_id"].duplicated(keep=False)
    if dup.any():
        raise SamplingError(f"county_frame {plan.year}: county_id repeated: {sorted(cfy.loc[dup, 'county_id'].unique())[:10]}")
    cfy = cfy.set_index("county_id")
    missing = sorted(set(cyc["county_id"]) - set(cfy.index))
    if missing:
        raise SamplingError(f"county_frame {plan.year}: counties {missing[:10]} of the cycle frame are missing")
    nat = cfy["national_sample"].reindex(cyc["county_id"]).fillna(False).to_numpy(dtype=bool)
    cls = cyc["county_class"].to_numpy()
    sampled = cyc["cycle_selected"].to_numpy() & (cyc["assigned_cycle_year"].to_numpy() == plan.cycle_year)
    selection = np.where(cls == "tracked", "tracked", np.where(cls == "certainty", "certainty",
                                                                np.where(sampled, "sampled", "")))
    prob = np.where(cls != "frame", 1.0, cyc["prob_year"].to_numpy())
    frame_class = cls == "frame"
    excluded = np.zeros(len(cyc), dtype=bool)
    if plan.national == "force":
        forced = nat & frame_class
        selection = np.where(forced, "national", selection)
        prob = np.where(forced, 1.0, prob)
    elif plan.national == "exclude":
        excluded = nat & frame_class
        selection = np.where(excluded, "", selection)
    prob_year = np.where(excluded, 0.0, prob)
    cyc = cyc.assign(national_sample=nat, selection=selection, prob_county=prob_year, excluded=excluded,
                     dropped=excluded & sampled)
    take = selection != ""
    c = cyc[take].copy()
    out = pd.DataFrame({
        "year": np.int16(plan.year),
        "county_id": c["county_id"].to_numpy(),
        "prefecture_id": c["prefecture_id"].to_numpy(),
        "stratum": c["stratum"].to_numpy(),
        "selection": c["selection"].to_numpy(),
        "cycle_year": np.int8(plan.cycle_year),
        "prob_county": c["prob_county"].to_numpy(dtype=np.float64),
        "weight": 1.0 / c["prob_county"].to_numpy(dtype=np.float64),
    })
    if "county_name" in cfy.columns:
        out["county_name"] = cfy["county_name"].reindex(out["county_id"]).astype(str).to_numpy()
    out["prob_cycle"] = c["prob_cycle"].to_numpy()
    out["national_sample"] = c["national_sample"].to_numpy()
    out["mos"] = c["mos"].to_numpy()
    out["cycle_order"] = c["cycle_order"].to_numpy()
    out = out.sort_values("county_id", kind="stable").reset_index(drop=True)
    excl = cyc[excluded][["county_id", "prefecture_id", "stratum", "prob_cycle", "assigned_cycle_year", "dropped"]].copy()
    excl["reason"] = "national sample (national='exclude')"
    return out, excl.reset_index(drop=True), cyc


def draw_counties(plan: SamplingPlan, frames) -> pd.DataFrame:
    """The year's county sample (the ``sample_counties`` table) alone."""
    cf = frames if isinstance(frames, pd.DataFrame) else _load_frames(frames, plan)[0]
    return _county_stage(plan, cf)[0]


# =========================================================================== stage 2
def _school_universe(plan: SamplingPlan, sf: pd.DataFrame) -> pd.DataFrame:
    """One row per (school, grade) eligible for the grade (stage listed for
    the grade, positive grade enrolment), ordered by county, grade, school."""
    extra = [c for c in dict.fromkeys([*plan.school_sort, *plan.benchmark_by])
             if c not in ("school_id", "county_id", "stage", "locale", "township_id")]
    base_cols = ["school_id", "county_id", "stage", "locale", "township_id", *extra]
    cols = {c: (sf[c].to_numpy(dtype=object) if not _numeric(sf[c]) else sf[c].to_numpy()) for c in base_cols}
    stage = sf["stage"]
    parts = []
    for g in plan.grades:
        e = pd.to_numeric(sf[f"grade{g}_enrolment"], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(e) | (e < 0)
        if bad.any():
            raise SamplingError(f"school_frame {plan.year}: grade{g}_enrolment is missing or negative for schools "
                                f"{cols['school_id'][bad][:10].tolist()}")
        m = stage.isin(list(plan.school_stages[g])).to_numpy() & (e > 0)
        d = {c: v[m] for c, v in cols.items()}
        d["grade"] = np.full(int(m.sum()), g, dtype=np.int8)
        d["enrolment"] = e[m].astype(np.int64)
        parts.append(d)
    u = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    c_codes, _ = pd.factorize(u["county_id"], sort=True)
    s_codes, _ = pd.factorize(u["school_id"], sort=True)
    o = np.lexsort((s_codes, u["grade"], c_codes))
    key = s_codes[o].astype(np.int64) * 100 + u["grade"][o]
    if np.unique(key).size != key.size:
        d = pd.Series(key).duplicated(keep=False).to_numpy()
        raise SamplingError(f"school_frame {plan.year}: school_id repeated: {sorted(set(u['school_id'][o][d]))[:10]}")
    df = pd.DataFrame({c: (pd.Series(v[o], dtype=object) if v.dtype == object else v[o]) for c, v in u.items()})
    df["mos"] = np.maximum(df["enrolment"].to_numpy(), plan.small_school_mos).astype(np.float64)
    cc = c_codes[o].astype(np.int64)
    df["_cg"] = np.unique(cc * 100 + u["grade"][o], return_inverse=True)[1].astype(np.int64)
    df["_ccode"] = cc
    return df


def _school_stage(plan: SamplingPlan, counties: pd.DataFrame, sf: pd.DataFrame):
    """(internal schools table: originals and replacements; universe with
    the inclusion probabilities of every school of every county)."""
    u = _school_universe(plan, sf)
    rng = np.random.default_rng([plan.seed, plan.year, _SCHOOL_STREAM])
    G = int(u["_cg"].max()) + 1
    keys = list(plan.school_sort)
    if plan.school_order == "random":
        u["_tie"] = rng.random(len(u))
        keys.append("_tie")
    elif plan.school_order == "serpentine":
        keys.append("mos")
    order = _pps.serpentine_order(u, keys, groups="_cg")
    u = u.iloc[order].reset_index(drop=True)
    g = u["_cg"].to_numpy()
    N_cg = np.bincount(g, minlength=G)
    grade_of = np.zeros(G, dtype=np.int64)
    grade_of[g] = u["grade"].to_numpy()
    cap = np.array([plan.max_schools[int(x)] for x in grade_of], dtype=np.int64)
    n_cg = np.minimum(cap, N_cg)
    pik = _pps.grouped_inclusion_probabilities(u["mos"].to_numpy(), g, n_cg.astype(float))
    starts = rng.random(G)
    sel = _pps.grouped_systematic(pik, g, starts)
    u["pik"] = pik
    u["n_cg"] = n_cg[g]
    u["frame_pos"] = np.arange(len(u)) - np.r_[0, np.cumsum(N_cg)][g]
    u["selected"] = sel
    in_sample = u["county_id"].isin(counties["county_id"]).to_numpy()
    # replacements: the next school of the sorted county-grade frame first, then the previous one
    n = len(u)
    nxt = np.r_[np.arange(1, n), n - 1]
    prv = np.r_[0, np.arange(n - 1)]
    same_next = np.r_[g[1:] == g[:-1], False]
    same_prev = np.r_[False, g[1:] == g[:-1]]
    orig = np.flatnonzero(sel & in_sample)
    rep1 = np.full(orig.size, -1)
    rep2 = np.full(orig.size, -1)
    if plan.replacements >= 1:
        rep1 = np.where(same_next[orig] & ~sel[nxt[orig]], nxt[orig], -1)
    if plan.replacements >= 2:
        taken = np.zeros(n, dtype=bool)
        taken[rep1[rep1 >= 0]] = True
        cand = prv[orig]
        rep2 = np.where(same_prev[orig] & ~sel[cand] & ~taken[cand], cand, -1)
    idx = np.r_[orig, rep1[rep1 >= 0], rep2[rep2 >= 0]]
    oi = np.r_[orig, orig[rep1 >= 0], orig[rep2 >= 0]]
    rr = np.r_[np.zeros(orig.size, dtype=np.int64), np.ones(int((rep1 >= 0).sum()), dtype=np.int64),
               np.full(int((rep2 >= 0).sum()), 2, dtype=np.int64)]
    srt = np.lexsort((rr, u["frame_pos"].to_numpy()[oi], g[oi]))
    idx, oi, rr = idx[srt], oi[srt], rr[srt]
    cols = list(dict.fromkeys(["school_id", "county_id", "grade", "stage", "locale", "township_id", *plan.school_sort,
                               *plan.benchmark_by, "enrolment", "mos", "n_cg", "frame_pos", "_cg", "_ccode"]))
    s = u.iloc[idx][cols].reset_index(drop=True)
    s["role"] = pd.Series(np.array(["original", "replacement1", "replacement2"], dtype=object)[rr], dtype=object)
    s["_rr"] = rr
    pos_of_orig = np.full(n, -1, dtype=np.int64)
    pos_of_orig[idx[rr == 0]] = np.flatnonzero(rr == 0)
    s["_orow"] = pos_of_orig[oi]
    orig_ids = u["school_id"].to_numpy()[oi]
    s["original_id"] = pd.Series(orig_ids, dtype=object)
    s["replaces"] = pd.Series(np.where(rr > 0, orig_ids, None), dtype=object)
    s["prob_school"] = pik[oi]
    s["certainty"] = pik[oi] >= 1.0
    s["original_frame_pos"] = u["frame_pos"].to_numpy()[oi]
    s["original_enrolment"] = u["enrolment"].to_numpy()[oi]
    s["year"] = np.int16(plan.year)
    ci = counties.set_index("county_id")
    s["prob_county"] = ci["prob_county"].reindex(s["county_id"]).to_numpy(dtype=np.float64)
    s["county_selection"] = pd.Series(ci["selection"].reindex(s["county_id"]).to_numpy(dtype=object), dtype=object)
    s["county_cycle_order"] = ci["cycle_order"].reindex(s["county_id"]).to_numpy(dtype=np.float64)
    s["stratum"] = pd.Series(np.char.add(np.char.add(s["county_id"].to_numpy().astype(str), "-G"),
                                         s["grade"].to_numpy().astype(str)).astype(object), dtype=object)
    s["participated"] = rr == 0
    return s, u


# =========================================================================== stage 3
def _arrow(col: pd.Series):
    import pyarrow as pa

    arr = pa.array(col)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return arr


def _student_stage(plan: SamplingPlan, schools: pd.DataFrame, ro: pd.DataFrame) -> pd.DataFrame:
    """Students sampled in every school of ``schools`` (originals and
    replacements): ``srow`` (row of ``schools``), ``student_id``, ``gender``,
    ``key_rank`` (rank of the student's random key in the school), ``cohort``
    (roster count M), ``sampled_in_school`` (m) and ``prob_student`` (m/M).
    Within a school the roster's row order is kept before the keys are drawn
    (it is part of "the same frames")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = schools["school_id"].to_numpy(dtype=object)
    grades = schools["grade"].to_numpy().astype(np.int64)
    uniq = pd.unique(ids)
    code = pc.index_in(_arrow(ro["school_id"]), value_set=pa.array(uniq.astype(str)))
    valid = pc.is_valid(code)
    rows = np.flatnonzero(valid.to_numpy(zero_copy_only=False))
    sc = code.filter(valid).to_numpy().astype(np.int64)
    table = np.full((uniq.size, 13), -1, dtype=np.int64)
    table[pd.Index(uniq).get_indexer(ids), grades] = np.arange(len(schools))
    gr = ro["grade"].to_numpy()[rows].astype(np.int64)
    srow = np.where((gr >= 0) & (gr < 13), table[sc, np.clip(gr, 0, 12)], -1)
    keep = srow >= 0
    rows, srow = rows[keep], srow[keep]
    M = np.bincount(srow, minlength=len(schools))
    empty = (M == 0) & (schools["_rr"].to_numpy() == 0)
    if empty.any():
        bad = [f"{a}/G{b}" for a, b in zip(ids[empty][:10], grades[empty][:10])]
        raise SamplingError(f"student_roster {plan.year}: no students of the sampled grade in schools {bad} "
                            "(the school frame gives them a positive enrolment)")
    m = plan.students_to_sample(M)
    o = np.argsort(srow, kind="stable")  # by school row, roster order within school
    srow, rows = srow[o], rows[o]
    rng = np.random.default_rng([plan.seed, plan.year, _STUDENT_STREAM])
    key_u = rng.random(srow.size)
    # order by school row, then by the key (one float sort: school row + key, key in [0, 1))
    o2 = np.argsort(srow + key_u, kind="stable")
    s2 = srow[o2]
    starts = np.r_[0, np.flatnonzero(np.diff(s2)) + 1]
    rank = np.empty(srow.size, dtype=np.int64)
    rank[o2] = np.arange(srow.size) - np.repeat(starts, np.diff(np.r_[starts, srow.size]))
    take = np.flatnonzero(rank < m[srow])
    take = take[np.argsort(srow[take] * (int(m.max(initial=0)) + 1) + rank[take], kind="stable")]
    r = srow[take]
    picked = rows[take]
    out = pd.DataFrame({
        "srow": r,
        "student_id": _obj(_arrow(ro["student_id"]).take(pa.array(picked)).to_numpy(zero_copy_only=False)),
        "key_rank": rank[take],
        "cohort": M[r],
        "sampled_in_school": m[r],
        "prob_student": m[r] / M[r],
    })
    if "gender" in ro.columns:
        out["gender"] = _obj(_arrow(ro["gender"]).take(pa.array(picked)).to_numpy(zero_copy_only=False))
    return out


# =========================================================================== the sample
@dataclass
class Sample:
    """A drawn sample: ``counties``, ``schools`` and ``students`` (the
    ``sample_*`` contract tables, with extra columns), the replicate
    weights (``replicate_weights``: students x R array, ``replicate_method``,
    ``rho``, ``scale``, ``rscales``, ``mse``), the ``report``
    (:class:`~qualmon.sampling.report.SampleReport`) and the ``plan``.

    ``students`` holds every sampled student of the schools taking part
    (original schools, or the replacements standing in for them), with
    ``participated``; non-participants have weight 0.
    """

    plan: SamplingPlan
    counties: pd.DataFrame
    schools: pd.DataFrame
    students: pd.DataFrame
    replicate_weights: np.ndarray
    replicate_method: str
    rho: float
    scale: float
    rscales: np.ndarray
    mse: bool
    excluded: pd.DataFrame = field(default=None, repr=False)
    cycle: pd.DataFrame = field(default=None, repr=False)
    _reserve: pd.DataFrame = field(default=None, repr=False)
    _sch: pd.DataFrame = field(default=None, repr=False)
    _universe: pd.DataFrame = field(default=None, repr=False)
    _cells: dict = field(default_factory=dict, repr=False)
    _report: object = field(default=None, repr=False)

    @property
    def report(self):
        """The :class:`~qualmon.sampling.report.SampleReport` (built on first use)."""
        if self._report is None:
            from qualmon.sampling.report import sample_report

            self._report = sample_report(self)
        return self._report

    # ------------------------------------------------------------------ estimation
    def design(self, data: pd.DataFrame | None = None):
        """A :class:`qualmon.ReplicateDesign` over the participating students,
        optionally joined (left join on ``year`` and ``student_id``) to a frame
        of outcomes ``data``."""
        from qualmon.design import ReplicateDesign

        part = self.students["participated"].to_numpy(dtype=bool) & (self.students["weight"].to_numpy() > 0)
        d = self.students[part].reset_index(drop=True)
        if data is not None:
            if not isinstance(data, pd.DataFrame):
                raise SamplingError(f"design(data=...): expected a DataFrame, got {type(data).__name__}")
            d = _join_outcomes(d, data, "design(data=...)")
        W = self.replicate_weights[part]
        return ReplicateDesign(d, "weight", W, self.replicate_method, rho=self.rho if self.replicate_method == "Fay" else None,
                               scale=self.scale, mse=self.mse, rscales=self.rscales)

    @property
    def n_replicates(self) -> int:
        return int(self.replicate_weights.shape[1])

    def replicate_frame(self, prefix: str = "rw") -> pd.DataFrame:
        """The replicate weights as columns ``rw1..rwR`` (one row per student)."""
        cols = [f"{prefix}{r + 1}" for r in range(self.n_replicates)]
        return pd.DataFrame(self.replicate_weights, columns=cols)

    def with_participation(self, schools: pd.DataFrame | None = None, students: pd.DataFrame | None = None) -> "Sample":
        """Record who took part and recompute the weights.

        ``schools``: ``school_id``, ``grade``, ``participated`` for original
        and replacement schools (rows not given keep their value: originals
        True, replacements False).  A replacement counts only when the
        school it replaces did not take part (the first replacement before
        the second).  ``students``: ``student_id``, ``participated`` (default
        True for every student of a school taking part).
        """
        sch = self._sch.copy()
        if schools is not None:
            for c in ("school_id", "grade", "participated"):
                if c not in schools.columns:
                    raise SamplingError(f"with_participation(schools=...): column {c!r} is missing")
            def keys(df):
                return np.char.add(np.char.add(df["school_id"].to_numpy(dtype=object).astype(str), "/"),
                                   df["grade"].to_numpy().astype(np.int64).astype(str))

            k_given = keys(schools)
            if pd.Series(k_given).duplicated().any():
                raise SamplingError("with_participation(schools=...): (school_id, grade) repeated")
            pos = pd.Index(keys(sch)).get_indexer(k_given)
            if (pos < 0).any():
                raise SamplingError(f"with_participation(schools=...): schools {k_given[pos < 0][:10].tolist()} "
                                    "(school_id/grade) are not sampled or replacement schools of this sample")
            vals = schools["participated"]
            if vals.isna().any():
                raise SamplingError(f"with_participation(schools=...): participated is missing in rows "
                                    f"{np.flatnonzero(vals.isna().to_numpy())[:10].tolist()}")
            part = sch["participated"].to_numpy(dtype=bool).copy()
            part[pos] = vals.to_numpy(dtype=bool)
            sch["participated"] = part
        stu_part = None
        if students is not None:
            for c in ("student_id", "participated"):
                if c not in students.columns:
                    raise SamplingError(f"with_participation(students=...): column {c!r} is missing")
            stu_part = pd.DataFrame({"student_id": students["student_id"].to_numpy(dtype=object),
                                     "participated": students["participated"].to_numpy(dtype=bool)})
            if stu_part["student_id"].duplicated().any():
                raise SamplingError("with_participation(students=...): student_id repeated")
            known = pd.Index(self._reserve["student_id"].to_numpy(dtype=object)).get_indexer(stu_part["student_id"])
            if (known < 0).any():
                raise SamplingError(f"with_participation(students=...): students "
                                    f"{stu_part['student_id'][known < 0].tolist()[:10]} were not sampled")
        return _assemble(self.plan, self.counties, sch, self._reserve, self._universe, self.excluded, self.cycle, stu_part)

    # ------------------------------------------------------------------ output
    def tables(self) -> dict[str, pd.DataFrame]:
        """The three contract tables (students with ``rw1..rwR`` columns)."""
        stu = pd.concat([self.students.reset_index(drop=True), self.replicate_frame()], axis=1).copy()
        return {"sample_counties": self.counties, "sample_schools": self.schools, "sample_students": stu}

    def write(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``sample_counties``, ``sample_schools``, ``sample_students``
        (with the replicate weights ``rw1..rwR``) as contract Parquet files
        (validated, atomic), the plan as ``sampling_plan.toml`` and the
        replicate-variance constants as ``replicates.json``."""
        from qualmon.io import atomic_path, write_parquet, write_table

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # qualmon.schema.validate inserts the 80 replicate columns one by one (pandas PerformanceWarning)
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            paths = {name: write_table(name, df, d / f"{name}.parquet") for name, df in self.tables().items()}
        paths["plan"] = d / "sampling_plan.toml"
        self.plan.to_toml(paths["plan"])
        meta = {"method": self.replicate_method, "rho": self.rho, "scale": self.scale,
                "rscales": [float(x) for x in self.rscales], "mse": self.mse, "replicates": self.n_replicates,
                "prefix": "rw"}
        paths["replicates"] = d / "replicates.json"
        with atomic_path(paths["replicates"]) as tmp:
            Path(tmp).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        if True:
            for name, df in self.report.tables().items():
                paths[f"report/{name}"] = write_parquet(df, d / "report" / f"{name}.parquet")
        return paths

    def summary(self) -> pd.DataFrame:
        """Counts and weight sums by grade."""
        s = self.students
        rows = []
        for g in self.plan.grades:
            sg = s[s["grade"] == g]
            og = self.schools[(self.schools["grade"] == g) & (self.schools["role"] == "original")]
            rows.append({
                "year": self.plan.year, "grade": g, "counties": int(og["county_id"].nunique()),
                "schools_sampled": len(og),
                "schools_participating": int(self.schools[(self.schools["grade"] == g) & self.schools["counted"]].shape[0]),
                "students_sampled": len(sg), "students_participating": int(sg["participated"].sum()),
                "sum_weights": float(sg["weight"].sum()),
                "frame_enrolment": float(self._universe.loc[self._universe["grade"] == g, "enrolment"].sum()),
                "replicate_method": self.replicate_method, "replicates": self.n_replicates,
            })
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"Sample(year={self.plan.year}, cycle_year={self.plan.cycle_year}, counties={len(self.counties)}, "
                f"schools={int((self.schools['role'] == 'original').sum())}, students={len(self.students)}, "
                f"replicates={self.replicate_method}x{self.n_replicates})")

    def _repr_html_(self) -> str:
        return (f"<b>qualmon sample {self.plan.year}</b> (cycle year {self.plan.cycle_year}, seed {self.plan.seed})"
                + self.summary().to_html(index=False))


# =========================================================================== assembly and weights
def _assemble(plan, counties, sch, reserve, universe, excluded, cycle, stu_part=None) -> Sample:
    """Apply participation (who stands for each original school, which
    students took part) and compute weights and replicate weights."""
    sch = sch.copy()
    part = sch["participated"].to_numpy(dtype=bool)
    rr = sch["_rr"].to_numpy()
    orow = sch["_orow"].to_numpy()
    best = np.full(len(sch), 9, dtype=np.int64)
    np.minimum.at(best, orow, np.where(part, rr, 9))
    active = part & (rr == best[orow])
    bad = (rr > 0) & part & ~active
    if bad.any():
        raise SamplingError(
            f"replacement schools {sch.loc[bad, 'school_id'].tolist()[:10]} are marked as participating although the "
            "school they replace (or its first replacement) took part")
    sch["active"] = active
    stu = reserve[active[reserve["srow"].to_numpy()]].reset_index(drop=True)
    sr = stu["srow"].to_numpy()
    took = np.ones(len(stu), dtype=bool)
    if stu_part is not None:
        pos = pd.Index(stu_part["student_id"].to_numpy(dtype=object)).get_indexer(stu["student_id"].to_numpy(dtype=object))
        given = pos >= 0
        took[given] = stu_part["participated"].to_numpy(dtype=bool)[pos[given]]
    stu["participated"] = took
    n_samp = np.bincount(sr, minlength=len(sch))
    n_part = np.bincount(sr, weights=took.astype(float), minlength=len(sch))
    rate = n_part / np.maximum(n_samp, 1)
    counted = active & (n_samp > 0) & (n_part > 0) & (rate >= plan.min_student_response)
    sch["students_sampled"] = n_samp.astype(np.int64)
    sch["students_participated"] = n_part.astype(np.int64)
    sch["counted"] = counted
    return _weights_and_replicates(plan, counties, sch, stu, reserve, universe, excluded, cycle)


def _weights_and_replicates(plan, counties, sch, stu, reserve, universe, excluded, cycle) -> Sample:
    rng = np.random.default_rng([plan.seed, plan.year, _REPLICATE_STREAM])
    rr = sch["_rr"].to_numpy()
    orow = sch["_orow"].to_numpy()
    counted = sch["counted"].to_numpy(dtype=bool)
    o_pos = np.flatnonzero(rr == 0)
    oidx = np.full(len(sch), -1, dtype=np.int64)
    oidx[o_pos] = np.arange(o_pos.size)
    sch_o = oidx[orow]  # original of every row
    orig = sch.iloc[o_pos].reset_index(drop=True)
    cov = np.zeros(len(sch), dtype=np.int64)
    np.maximum.at(cov, orow, counted.astype(np.int64))
    orig_cov = cov[o_pos].astype(bool)
    # ---------------------------------------------------------------- school non-response
    w_sch = 1.0 / (orig["prob_county"].to_numpy() * orig["prob_school"].to_numpy())
    meas = w_sch * orig["enrolment"].to_numpy(dtype=np.float64)
    for c in plan.school_nr_cells:
        if c not in orig.columns:
            raise SamplingError(f"plan field 'school_nr_cells': {c!r} is not a school column "
                                "(use grade, county_id, locale, stage, township_id or a school_sort column)")
    adj_s = _w.nonresponse_adjustment(orig, list(plan.school_nr_cells), meas, orig_cov, plan.max_nr_factor)
    f_orig = adj_s.factor
    sch["prob"] = sch["prob_county"].to_numpy() * sch["prob_school"].to_numpy()
    sch["school_nr_factor"] = np.where(counted, f_orig[sch_o], 0.0)
    sch["weight"] = np.where(counted, sch["school_nr_factor"].to_numpy() / sch["prob"].to_numpy(), 0.0)
    # ---------------------------------------------------------------- students
    sr = stu["srow"].to_numpy()
    stu_o = sch_o[sr]
    for c in ("school_id", "county_id", "role", "original_id", "county_selection", "stratum", "locale", "stage",
              *plan.benchmark_by):
        if c not in stu.columns:
            stu[c] = _obj(sch[c].to_numpy(dtype=object)[sr])
    stu["grade"] = sch["grade"].to_numpy().astype(np.int8)[sr]
    stu["prob_county"] = sch["prob_county"].to_numpy()[sr]
    stu["prob_school"] = sch["prob_school"].to_numpy()[sr]
    stu["year"] = np.int16(plan.year)
    in_counted = counted[sr]
    prob = stu["prob_county"].to_numpy() * stu["prob_school"].to_numpy() * stu["prob_student"].to_numpy()
    base = 1.0 / prob
    stu["prob"] = prob
    stu["base_weight"] = base
    fs = np.where(in_counted, f_orig[stu_o], 0.0)
    for c in plan.student_nr_cells:
        if c not in stu.columns:
            raise SamplingError(f"plan field 'student_nr_cells': {c!r} is not a student column "
                                "(use grade, school_id, gender, county_id, locale or stage)")
    resp = stu["participated"].to_numpy(dtype=bool) & in_counted
    adj_t = _w.nonresponse_adjustment(stu, list(plan.student_nr_cells), base * fs, resp, plan.max_nr_factor,
                                      eligible=in_counted)
    ft = np.where(resp, adj_t.factor, 0.0)
    w1 = base * fs * ft
    # weighting classes: each certainty county on its own (its county code), probability counties together (-1)
    certain = np.isin(stu["county_selection"].to_numpy(dtype=object), _CERTAIN)
    ccode = sch["_ccode"].to_numpy()[sr]
    wcode = np.where(certain, ccode, -1)
    grade = stu["grade"].to_numpy().astype(np.int64)
    tcell = np.unique(grade * (int(ccode.max(initial=0)) + 2) + wcode + 1, return_inverse=True)[1]
    trim = _w.trim_weights(w1, tcell, plan.trim_factor) if plan.trim_factor else np.ones(len(stu))
    w2 = w1 * trim
    bench_cell, totals, bench_table = _benchmark_cells(plan, counties, stu, universe, wcode, w2)
    g_b = _w.benchmark_factors(w2, bench_cell, totals) if plan.benchmark else np.ones(len(stu))
    stu["school_participating"] = in_counted
    stu["school_nr_factor"] = fs
    stu["student_nr_factor"] = ft
    stu["trim_factor"] = trim
    stu["benchmark_factor"] = g_b
    stu["weight"] = w2 * g_b
    # ---------------------------------------------------------------- replicates
    unit_o, unit_t, zones, zf = _replicate_structure(plan, orig, stu, sch_o, rng)
    F = np.vstack([zf.factors, np.ones((1, zf.n_replicates))])  # last row: rows outside every variance unit
    # the non-response factors are recomputed in every replicate; a cell lying inside one variance
    # unit has the same factor in every replicate (its rows share the replicate factor), so only
    # cells spanning units need the (rows x R) recomputation
    row_mult = base.copy()
    school_nested = _nested(adj_s.cell, unit_o)
    student_nested = _nested(adj_t.cell, unit_t)
    if school_nested:
        row_mult *= fs
    if student_nested:
        row_mult *= ft
    if school_nested and student_nested:
        row_mult *= trim
    wr = F[unit_t]
    wr *= row_mult[:, None]
    if not school_nested:
        fsr = adj_s.replicate(meas[:, None] * F[unit_o], orig_cov)  # (originals x R)
        wr *= np.where(in_counted[:, None], fsr[stu_o], 0.0)
    if not student_nested:
        ftr = adj_t.replicate(wr, resp)  # eligible weights: base x school factor, by replicate
        wr *= np.where(resp[:, None], ftr, 0.0)
    if not (school_nested and student_nested):
        wr *= trim[:, None]
    if plan.benchmark:
        S = _w._cell_matrix(bench_cell, totals.size)
        tot_r = np.asarray(S @ wr)
        with np.errstate(divide="ignore", invalid="ignore"):
            gr = np.where(tot_r > 0, totals[:, None] / tot_r, 0.0)
        wr *= gr[bench_cell]
    zone_of_unit = np.r_[zones["zone"].to_numpy() + 1, 0]
    zu_of_unit = np.r_[zones["zone_unit"].to_numpy(), 0]
    vs_of_unit = np.append(zones["stratum"].to_numpy(dtype=object), "certain")
    stu["var_stratum"] = _obj(vs_of_unit[unit_t])
    stu["var_zone"] = zone_of_unit[unit_t].astype(np.int64)
    stu["var_unit"] = zu_of_unit[unit_t].astype(np.int64)
    return Sample(plan=plan, counties=counties, schools=_school_columns(sch), students=_student_columns(stu),
                  replicate_weights=np.ascontiguousarray(wr), replicate_method=zf.method, rho=zf.rho,
                  scale=zf.scale, rscales=zf.rscales, mse=zf.mse, excluded=excluded, cycle=cycle,
                  _reserve=reserve, _sch=sch, _universe=universe,
                  _cells={"school_nr": adj_s.cells, "student_nr": adj_t.cells, "benchmark": bench_table,
                          "zones": zones})


def _nested(cell: np.ndarray, unit: np.ndarray) -> bool:
    """True when every cell's rows lie in a single variance unit."""
    if cell.size == 0:
        return True
    key = cell.astype(np.int64) * (int(unit.max()) + 1) + unit
    return np.unique(key).size == np.unique(cell).size


def _benchmark_cells(plan, counties, stu, universe, wcode, w2):
    """Benchmark cell of each student, frame total of each cell and the cell table.

    Cells: grade x weighting class (each certainty county alone; -1: the
    probability counties) x ``benchmark_by``.  A certainty county without
    any weight in a grade is merged into the probability class (warning);
    where a ``benchmark_by`` cell of a (grade, class) has a frame total but
    no sample weight, that (grade, class) is benchmarked without the
    ``benchmark_by`` variables.
    """
    u = universe
    u_cc = u["_ccode"].to_numpy()
    county_ids = np.empty(int(u_cc.max()) + 1, dtype=object)
    county_ids[u_cc] = u["county_id"].to_numpy(dtype=object)
    cert_ids = counties.loc[counties["selection"].isin(_CERTAIN), "county_id"].to_numpy(dtype=object)
    cert_codes = pd.Index(county_ids).get_indexer(cert_ids)
    u_w = np.where(np.isin(u_cc, cert_codes), u_cc, -1)
    u_g = u["grade"].to_numpy().astype(np.int64)
    s_g = stu["grade"].to_numpy().astype(np.int64)
    s_w = wcode.copy()
    # certainty counties without weight in a grade -> probability class
    W = int(len(county_ids)) + 2
    have = np.unique((s_g * W + s_w + 1)[w2 > 0])
    lost = (u_w >= 0) & ~np.isin(u_g * W + u_w + 1, have)
    if lost.any():
        lost_ids = sorted(set(np.asarray(county_ids)[u_cc[lost]]))
        warnings.warn(f"benchmark: certainty counties {lost_ids} have no participating student in some grade; their "
                      "enrolment is carried by the probability sample", SamplingWarning, stacklevel=4)
        lost_keys = np.unique((u_g * W + u_w + 1)[lost])
        u_w = np.where(lost, -1, u_w)
        s_w = np.where(np.isin(s_g * W + s_w + 1, lost_keys), -1, s_w)
    gw_u = u_g * W + u_w + 1
    gw_s = s_g * W + s_w + 1
    by = list(plan.benchmark_by)
    bu, bs, labels = [], [], []
    for c in by:
        if c not in u.columns or c not in stu.columns:
            raise SamplingError(f"plan field 'benchmark_by': {c!r} must be a school-frame column")
        allv = np.r_[u[c].to_numpy(dtype=object), stu[c].to_numpy(dtype=object)].astype(str)
        codes, uniq = pd.factorize(allv, sort=True)
        bu.append(codes[: len(u)])
        bs.append(codes[len(u):])
        labels.append(np.asarray(uniq, dtype=object))

    def keys(gw, bcodes):
        k = gw.astype(np.int64)
        for b, lab in zip(bcodes, labels):
            k = k * (len(lab) + 1) + (b + 1)
        return k

    ku, ks = keys(gw_u, bu), keys(gw_s, bs)
    if by:
        T = pd.Series(u["enrolment"].to_numpy(dtype=float)).groupby(ku).sum()
        got = pd.Series(w2).groupby(ks).sum()
        gap = T.index[~T.index.isin(got.index[got > 0])]
        if gap.size:
            gap_gw = np.unique(gw_u[np.isin(ku, gap.to_numpy())])
            cu = np.isin(gw_u, gap_gw)
            cs = np.isin(gw_s, gap_gw)
            bu = [np.where(cu, -1, b) for b in bu]
            bs = [np.where(cs, -1, b) for b in bs]
            ku, ks = keys(gw_u, bu), keys(gw_s, bs)
    cells, inv = np.unique(ku, return_inverse=True)
    totals = np.bincount(inv, weights=u["enrolment"].to_numpy(dtype=float), minlength=cells.size)
    cell = np.searchsorted(cells, ks)
    bad = (cell >= cells.size) | (cells[np.minimum(cell, cells.size - 1)] != ks)
    if bad.any():
        raise SamplingError("benchmark: sampled students outside every frame cell (school frame and sample disagree)")
    first = np.zeros(cells.size, dtype=np.int64)
    first[inv[::-1]] = np.arange(len(u))[::-1]
    wc = u_w[first]
    table = pd.DataFrame({"grade": u_g[first],
                          "weighting_class": np.where(wc >= 0, np.asarray(county_ids, dtype=object)[np.maximum(wc, 0)],
                                                      "probability counties")})
    for c, b, lab in zip(by, bu, labels):
        v = b[first]
        table[c] = np.where(v >= 0, lab[np.maximum(v, 0)], "*")
    table["frame_total"] = totals
    table["sample_weight"] = np.bincount(cell, weights=w2, minlength=cells.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["factor"] = totals / table["sample_weight"].to_numpy()
    return cell.astype(np.int64), totals, table


def _replicate_structure(plan, orig, stu, sch_o, rng):
    """Variance units of the original schools and of the students, their
    zones and replicate factors.

    Units: a probability-sampled county (stratum "counties", in the cycle
    sort order); in a certainty county, a non-certainty sampled school
    (stratum county-grade, frame order); in a certainty school of a
    certainty county, a sampled student (stratum county-grade-school, random
    order).  Rows in none of these (certainty everywhere) get factor 1.
    """
    o_sel = orig["county_selection"].to_numpy(dtype=object)
    o_cert_c = np.isin(o_sel, _CERTAIN)
    o_cnty = ~o_cert_c
    o_school = o_cert_c & (orig["prob_school"].to_numpy() < 1.0)
    o_has = o_cnty | o_school
    o_strat = np.where(o_cnty, "counties", orig["stratum"].to_numpy(dtype=object))
    o_unit = np.where(o_cnty, orig["county_id"].to_numpy(dtype=object), orig["school_id"].to_numpy(dtype=object))
    o_order = np.where(o_cnty, orig["county_cycle_order"].to_numpy(dtype=np.float64),
                       orig["frame_pos"].to_numpy(dtype=np.float64))
    t_cert = np.isin(stu["county_selection"].to_numpy(dtype=object), _CERTAIN) & (stu["prob_school"].to_numpy() >= 1.0)
    t_has = t_cert & (stu["prob_student"].to_numpy() < 1.0)
    ti = np.flatnonzero(t_has)
    t_strat = np.char.add(np.char.add(stu["stratum"].to_numpy(dtype=object)[ti].astype(str), "-"),
                          stu["original_id"].to_numpy(dtype=object)[ti].astype(str)).astype(object)
    strata = np.r_[o_strat[o_has], t_strat]
    units = np.r_[o_unit[o_has], stu["student_id"].to_numpy(dtype=object)[ti]]
    order = np.r_[o_order[o_has], stu["key_rank"].to_numpy(dtype=np.float64)[ti]]
    if strata.size == 0:
        raise SamplingError("replicate weights: the sample has no sampling variance (every unit taken with certainty)")
    frac = np.r_[np.where(o_cnty, orig["prob_county"].to_numpy(), orig["prob_school"].to_numpy())[o_has],
                 stu["prob_student"].to_numpy()[ti]]
    zones, row_unit = _w.form_zones(strata, units, order)
    U = len(zones)
    n_o = int(o_has.sum())
    unit_o = np.full(len(orig), U, dtype=np.int64)
    unit_o[o_has] = row_unit[:n_o]
    unit_t = unit_o[sch_o[stu["srow"].to_numpy()]]
    unit_t[ti] = row_unit[n_o:]
    fu = np.zeros(U)
    fu[row_unit] = frac
    zf = _w.zone_factors(zones, plan.replicate_method, plan.replicates, plan.rho, rng,
                         fraction=fu if plan.fpc else None)
    return unit_o, unit_t, zones, zf


_STUDENT_ORDER = ["year", "student_id", "school_id", "county_id", "grade", "participated", "prob_county",
                  "prob_school", "prob_student", "prob", "base_weight", "weight"]
_SCHOOL_ORDER = ["year", "school_id", "county_id", "grade", "stratum", "role", "replaces", "certainty",
                 "participated", "prob_county", "prob_school", "prob", "weight"]


_STR = pd.StringDtype(na_value=np.nan)  # pandas' default "str" dtype


def _as_str(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns held as object during the draw -> pandas' "str" dtype."""
    import pyarrow as pa

    for c in df.columns:
        if df[c].dtype == object:
            arr = pa.array(df[c].to_numpy(dtype=object), type=pa.string(), from_pandas=True)  # None/NaN -> null
            df[c] = pd.array(arr, dtype=_STR)  # via Arrow: ~10x faster than from Python objects
    return df


def _student_columns(stu: pd.DataFrame) -> pd.DataFrame:
    extra = ["stratum", "county_selection", "role", "original_id", "gender", "locale", "stage", "cohort",
             "sampled_in_school", "key_rank", "school_participating", "school_nr_factor", "student_nr_factor", "trim_factor", "benchmark_factor",
             "var_stratum", "var_zone", "var_unit"]
    out = stu[_STUDENT_ORDER + [c for c in extra if c in stu.columns]]
    return _as_str(out.rename(columns={"role": "school_role", "original_id": "original_school_id"}))


def _school_columns(sch: pd.DataFrame) -> pd.DataFrame:
    extra = ["county_selection", "original_id", "stage", "locale", "township_id", "enrolment", "mos", "n_cg",
             "frame_pos", "active", "counted", "students_sampled", "students_participated", "school_nr_factor"]
    out = sch[_SCHOOL_ORDER + [c for c in extra if c in sch.columns]].reset_index(drop=True)
    return _as_str(out.rename(columns={"n_cg": "schools_in_county_sample", "original_id": "original_school_id"}))


# =========================================================================== entry point
def draw(plan: SamplingPlan, frames) -> Sample:
    """Draw the three-stage sample of ``plan.year``.

    ``frames``: a folder of contract Parquet files (``county_frame``,
    ``school_frame``, ``student_roster``), a dict of those tables, or a
    :class:`qualmon.synth.Province`.  Only the plan's year of the school
    frame and roster is used; the county frame of the cycle's first year is
    used for the cycle's county sample when present.

    Every original school and student takes part (``participated``) until
    told otherwise with :meth:`Sample.with_participation` (or
    :func:`simulate_participation`).
    """
    if not isinstance(plan, SamplingPlan):
        raise SamplingError(f"draw(): plan must be a SamplingPlan, got {type(plan).__name__}")
    cf_all, sf, ro = _load_frames(frames, plan)
    counties, excluded, cyc = _county_stage(plan, cf_all)
    schools, universe = _school_stage(plan, counties, sf)
    # expected sizes over the design (for the report)
    universe["prob_county_year"] = cyc.set_index("county_id")["prob_county"].reindex(
        universe["county_id"].to_numpy()).fillna(0.0).to_numpy()
    universe["students_expected"] = plan.students_to_sample(universe["enrolment"].to_numpy())
    reserve = _student_stage(plan, schools, ro)
    return _assemble(plan, counties, schools, reserve, universe, excluded, cyc)


# =========================================================================== participation
def simulate_participation(sample: Sample, rate_school: float = 0.97, rate_student: float = 0.95, seed: int = 0,
                           related_to: pd.DataFrame | pd.Series | None = None, strength: float = 0.5) -> Sample:
    """Simulate who takes part (for tests and demonstrations); deterministic from ``seed``.

    Original and replacement schools agree with probability ``rate_school``,
    students with probability ``rate_student``; a replacement is used when
    the school before it refused.  With ``related_to`` (a DataFrame with
    ``student_id`` and one numeric column, or a Series indexed by
    ``student_id``, e.g. true ability) the log-odds of taking part rise by
    ``strength`` per standard deviation of that variable (students) and of
    its school mean (schools): non-response that is not at random.
    """
    for name, r in (("rate_school", rate_school), ("rate_student", rate_student)):
        if not 0 < r <= 1:
            raise SamplingError(f"simulate_participation: {name} must be in (0, 1], got {r}")
    rng = np.random.default_rng([int(seed), sample.plan.year, 5])
    sch = sample._sch
    res = sample._reserve
    r_srow = res["srow"].to_numpy()
    z_student = None
    if related_to is not None:
        if isinstance(related_to, pd.DataFrame):
            num = [c for c in related_to.columns if c not in ("student_id", "year") and _numeric(related_to[c])]
            if "student_id" not in related_to.columns or len(num) != 1:
                raise SamplingError("simulate_participation(related_to=...): give student_id and exactly one numeric column")
            zs_ = pd.Series(related_to[num[0]].to_numpy(dtype=float), index=related_to["student_id"].to_numpy(dtype=object))
        elif isinstance(related_to, pd.Series):
            zs_ = pd.Series(related_to.to_numpy(dtype=float), index=related_to.index.to_numpy(dtype=object))
        else:
            raise SamplingError("simulate_participation(related_to=...): expected a DataFrame or a Series indexed by student_id")
        zs_ = zs_[~zs_.index.duplicated()]
        sd = zs_.std(ddof=0)
        z_student = (zs_ - zs_.mean()) / (sd if sd > 0 else 1.0)

    def logit(p):
        return math.log(p / (1 - p))

    # schools: agreement probability from the school mean of the related variable
    zsch = np.zeros(len(sch))
    zr = None
    if z_student is not None:
        zr = z_student.reindex(res["student_id"].to_numpy(dtype=object)).fillna(0.0).to_numpy()
        cnt = np.bincount(r_srow, minlength=len(sch))
        zsch = np.bincount(r_srow, weights=zr, minlength=len(sch)) / np.maximum(cnt, 1)
        sd = zsch[cnt > 0].std() if (cnt > 0).sum() > 1 else 1.0
        zsch = zsch / (sd if sd > 0 else 1.0)
    ps = 1.0 / (1.0 + np.exp(-(logit(rate_school) + strength * zsch))) if rate_school < 1 else np.ones(len(sch))
    agree = rng.random(len(sch)) < ps
    rr = sch["_rr"].to_numpy()
    orow = sch["_orow"].to_numpy()
    best = np.full(len(sch), 9, dtype=np.int64)
    np.minimum.at(best, orow, np.where(agree, rr, 9))
    part = agree & (rr == best[orow])
    schools = pd.DataFrame({"school_id": sch["school_id"].to_numpy(dtype=object), "grade": sch["grade"].to_numpy(),
                            "participated": part})
    # students of the schools taking part
    w = part[r_srow]
    zt = zr[w] if zr is not None else 0.0
    pt = 1.0 / (1.0 + np.exp(-(logit(rate_student) + strength * zt))) if rate_student < 1 else np.ones(int(w.sum()))
    tested = rng.random(int(w.sum())) < pt
    students = pd.DataFrame({"student_id": res["student_id"].to_numpy(dtype=object)[w], "participated": tested})
    return sample.with_participation(schools=schools, students=students)


def _join_outcomes(d: pd.DataFrame, data: pd.DataFrame, what: str) -> pd.DataFrame:
    """Left join of outcomes on (year, student_id), or on student_id when
    ``data`` has no year (the sample is of one year)."""
    if not isinstance(data, pd.DataFrame):
        raise SamplingError(f"{what}: expected a DataFrame, got {type(data).__name__}")
    if "student_id" not in data.columns:
        raise SamplingError(f"{what}: column 'student_id' is missing; outcomes are joined on (year and) student_id")
    on = ["year", "student_id"] if "year" in data.columns else ["student_id"]
    extra = data.drop(columns=[c for c in data.columns if c in d.columns and c not in on])
    if "year" in on:
        years = set(pd.unique(d["year"]).tolist())
        extra = extra[extra["year"].isin(years)]
    key = pd.Index(d["student_id"].to_numpy(dtype=object))
    ek = extra["student_id"].to_numpy(dtype=object)
    pos = key.get_indexer(ek)
    extra = extra[pos >= 0]
    dup = extra.duplicated(on)
    if dup.any():
        raise SamplingError(f"{what}: {tuple(on)} repeated for students "
                            f"{extra.loc[dup, 'student_id'].astype(str).tolist()[:10]}")
    pos = key.get_indexer(extra["student_id"].to_numpy(dtype=object))
    out = d.copy()
    for c in extra.columns:
        if c in on:
            continue
        col = extra[c]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            vals = np.full(len(d), np.nan)
            vals[pos] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            vals = np.full(len(d), None, dtype=object)
            vals[pos] = col.to_numpy(dtype=object)
        out[c] = vals
    return out


# =========================================================================== reading back
def read_design(directory: str | os.PathLike, data: pd.DataFrame | None = None):
    """A :class:`qualmon.ReplicateDesign` from a folder written by
    :meth:`Sample.write` (participating students, optionally joined to
    ``data`` on ``year`` and ``student_id``)."""
    from qualmon.design import ReplicateDesign
    from qualmon.io import read_table

    d = Path(directory)
    meta_path = d / "replicates.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} is missing: not a folder written by Sample.write")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        stu = read_table("sample_students", d / "sample_students.parquet")
    cols = [f"{meta['prefix']}{r + 1}" for r in range(meta["replicates"])]
    part = stu["participated"].to_numpy(dtype=bool) & (stu["weight"].to_numpy() > 0)
    stu = stu[part].reset_index(drop=True)
    W = stu[cols].to_numpy(dtype=np.float64)
    stu = stu.drop(columns=cols)
    if data is not None:
        stu = _join_outcomes(stu, data, "read_design(data=...)")
    return ReplicateDesign(stu, "weight", W, meta["method"], rho=meta["rho"] if meta["method"] == "Fay" else None,
                           scale=meta["scale"], mse=meta["mse"], rscales=np.asarray(meta["rscales"]))
