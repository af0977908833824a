"""Sampling weights: base weights, non-response adjustment, trimming,
benchmarking, variance zones and replicate weights.

The weight of a participating student k in school s of county c is

    w_k = 1/(pi_c pi_{s|c} pi_{k|s})  x  f_school  x  f_student  x  t_k  x  g_k

* **Base weight** 1/(pi_c pi_{s|c} pi_{k|s}), the inverse of the product of
  the stage probabilities (a replacement school carries the probability of
  the school it replaces, as in TIMSS and PISA).
* **School non-response** (:func:`nonresponse_adjustment`): within cells
  (plan ``school_nr_cells``, default grade x county x locale) the factor is

      f_school = sum_{sampled originals} w_s E_s / sum_{covered originals} w_s E_s,

  w_s = 1/(pi_c pi_{s|c}) the school base weight, E_s the school's grade
  enrolment (PISA's enrolment-weighted factor), "covered" meaning that the
  original school or one of its replacements took part.  A school takes
  part when it agreed and at least ``min_student_response`` of its sampled
  students were tested (TIMSS/PISA: 50 %).
* **Student non-response**: within cells (``student_nr_cells``, default
  grade x school x gender), f_student = sum_{sampled} w / sum_{tested} w with
  w = base weight x f_school.
* Cells are listed from coarse to fine.  A cell with no respondent, or a
  factor above ``max_nr_factor``, is collapsed with all its siblings into
  its parent cell (the finest variable is dropped), repeatedly; the weighted
  total of the eligible units is preserved within every final cell.
* **Trimming** (:func:`trim_weights`): weights above k x median (k =
  ``trim_factor``, PISA: 4) within a cell (grade x weighting class) are cut to
  the cap and the excess is spread over the other weights of the cell in
  proportion to them (repeated until none exceeds the cap), so the cell's
  total is unchanged.
* **Benchmark** (:func:`benchmark_factors`): g = T_c / sum_{k in c} w_k in cells
  c = grade x weighting class (x ``benchmark_by``), T_c the frame's grade
  enrolment.  Weighting classes: each certainty county (tracked, certainty
  or national-forced) is its own class, whose total is its own enrolment;
  all probability-sampled counties form one class, whose total is the
  enrolment of every other county of the frame (national-sample counties
  left out under ``national="exclude"`` included: their enrolment is carried
  by the probability sample, i.e. the NAEQ sample is treated as ignorable).
  So the final weights of grade g sum to the frame's grade-g enrolment.

Replicate weights (:func:`zone_factors`) use *variance units* paired into
*zones* (TIMSS/PISA): the probability-sampled counties (the primary units)
in the order of the county frame sort; within a certainty county the
sampled schools of a grade in frame order; within a certainty school of a
certainty county the sampled students.  Units are paired in that order; an
odd unit out makes the last zone a triple.  Then

* **Fay** (PISA, rho = 0.5, 80 replicates): zone z uses row 1 + (z mod
  (R-1)) of a Hadamard matrix H of order R; in replicate r the first unit of
  a pair gets 1 + (1-rho) H, the second 1 - (1-rho) H; in a triple one unit
  chosen at random gets 1 + sqrt(2)(1-rho) H and the other two
  1 - (1-rho) H / sqrt(2) (Judkins 1990; 1.7071 / 0.6464 at rho = 0.5, as
  PISA).  V = sum_r (theta_r - theta)^2 / (R (1-rho)^2).  ``BRR`` is rho = 0,
  with the two last units of a triple joined into one half (R's survey
  would refuse triples).
* **JK2** (TIMSS): one replicate per pair, a randomly chosen unit doubled
  and the other dropped; two replicates per triple (drop one of the first
  two units, the others x 1.5: NAEP's rule); zones share the ``replicates``
  columns cyclically when there are more; V = sum_r (theta_r - theta)^2.
* **JKn** (zones as strata, R's ``jknweights``), **JK1** over all units, and
  R's **bootstrap** within variance strata, from
  :mod:`qualmon.sampling.replicates`.

With the plan's ``fpc`` (default) every zone's factor deviations from 1
are multiplied by sqrt(1 - f), f the zone's mean inclusion probability at
its stage (yearly county probability; school probability within a
certainty county; m/M for students), i.e. a finite population correction:
the county stage takes 10-33 % of a county's chance a year, much more than
the school stage of PISA or TIMSS, and without it the variance is
overstated (by about 15 % in the synthetic province).

The non-response adjustments and the benchmark are recomputed within every
replicate (as PISA does); the cells and their collapsing are those of the
full sample, and the trimming factors of the full sample are carried over.
(A cell lying inside one variance unit has the same factor in every
replicate, so it is not recomputed.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from qualmon.sampling import replicates as _rep

__all__ = [
    "WeightError",
    "base_weights",
    "nonresponse_adjustment",
    "trim_weights",
    "benchmark_factors",
    "form_zones",
    "zone_factors",
    "ZoneFactors",
]


class WeightError(ValueError):
    """Bad input to a weighting step."""


# --------------------------------------------------------------------------- small helpers
def _col(df: pd.DataFrame, name: str, what: str) -> pd.Series:
    if name not in df.columns:
        raise WeightError(f"{what}: column {name!r} is not in the data (columns: {list(df.columns)})")
    return df[name]


def _codes(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Group codes 0..G-1 of the combinations of ``cols`` in sorted order (0 for no column)."""
    if not cols:
        return np.zeros(len(df), dtype=np.int64)
    key = np.zeros(len(df), dtype=np.int64)
    for c in cols:
        v = df[c]
        codes, uniq = pd.factorize(v.to_numpy(dtype=object) if v.dtype == object else v, sort=True)
        key = key * (len(uniq) + 1) + (codes.astype(np.int64) + 1)
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def _rows(mask) -> list[int]:
    return np.flatnonzero(mask)[:10].tolist()


def _grouped_median(values: np.ndarray, groups: np.ndarray, G: int) -> np.ndarray:
    """Median of ``values`` within each group code (NaN for empty groups)."""
    o = np.lexsort((values, groups))
    g = groups[o]
    v = values[o]
    cnt = np.bincount(g, minlength=G)
    start = np.r_[0, np.cumsum(cnt)[:-1]]
    med = np.full(G, np.nan)
    ok = cnt > 0
    lo = start + (cnt - 1) // 2
    hi = start + cnt // 2
    med[ok] = 0.5 * (v[lo[ok]] + v[hi[ok]])
    return med


def _cell_matrix(codes: np.ndarray, C: int) -> sparse.csr_matrix:
    n = codes.size
    return sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(C, n))


# --------------------------------------------------------------------------- base weights
def base_weights(data: pd.DataFrame, probs: Sequence[str] = ("prob_county", "prob_school", "prob_student")) -> np.ndarray:
    """Inverse of the product of the stage probabilities (each in (0, 1])."""
    p = np.ones(len(data))
    for c in probs:
        v = _col(data, c, "base_weights").to_numpy(dtype=np.float64)
        bad = ~((v > 0) & (v <= 1))
        if bad.any():
            raise WeightError(f"base_weights: column {c!r} has values outside (0, 1] in rows {_rows(bad)} "
                              f"({v[bad][:5].tolist()})")
        p = p * v
    return 1.0 / p


# --------------------------------------------------------------------------- non-response
@dataclass
class Adjustment:
    """Result of :func:`nonresponse_adjustment`.

    factor : per row; cell : code of the final (collapsed) cell per row;
    level : number of cell variables kept for the row (0 = all rows in one
    cell); cells : DataFrame, one row per final cell (variables kept,
    eligible and respondent weight, factor, collapsed flag).
    """

    factor: np.ndarray
    cell: np.ndarray
    level: np.ndarray
    cells: pd.DataFrame

    def replicate(self, weights_rep: np.ndarray, respondent: np.ndarray) -> np.ndarray:
        """(n x R) factors recomputed from replicate weights (n x R) in the same cells."""
        C = int(self.cell.max()) + 1 if self.cell.size else 0
        S = _cell_matrix(self.cell, C)
        num = np.asarray(S @ weights_rep)
        den = np.asarray(S @ (weights_rep * respondent[:, None]))
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(den > 0, num / den, np.where(num > 0, 0.0, 1.0))
        return f[self.cell]


def nonresponse_adjustment(data: pd.DataFrame, cells: Sequence[str], weight, respondent,
                           max_factor: float = 2.0, eligible=None) -> Adjustment:
    """Weighting-class non-response adjustment with cell collapsing.

    f_c = sum_{eligible in c} w / sum_{respondents in c} w.  ``cells`` lists
    the class variables from coarse to fine; a cell without respondents or
    with f_c > ``max_factor`` is merged with its siblings into the parent
    cell (the finest variable dropped), repeatedly, down to one cell for all
    rows (where a factor above the cap is kept and flagged).  The weighted
    total of the eligible rows is preserved in every final cell:
    sum_{respondents in c} f_c w = sum_{eligible in c} w.
    """
    cells = list(cells)
    for c in cells:
        _col(data, c, "nonresponse_adjustment cells")
    n = len(data)
    w = np.asarray(data[weight] if isinstance(weight, str) else weight, dtype=np.float64)
    r = np.asarray(data[respondent] if isinstance(respondent, str) else respondent, dtype=bool)
    e = np.ones(n, dtype=bool) if eligible is None else np.asarray(
        data[eligible] if isinstance(eligible, str) else eligible, dtype=bool)
    if w.shape != (n,) or r.shape != (n,) or e.shape != (n,):
        raise WeightError("nonresponse_adjustment: weight, respondent and eligible need one value per row")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise WeightError(f"nonresponse_adjustment: weights missing or negative in rows {_rows(bad)}")
    bad = r & ~e
    if bad.any():
        raise WeightError(f"nonresponse_adjustment: rows {_rows(bad)} are respondents but not eligible")
    L = len(cells)
    codes = [_codes(data, cells[:k]) for k in range(L + 1)]
    level = np.full(n, L, dtype=np.int64)
    we = np.where(e, w, 0.0)
    wr = np.where(r, w, 0.0)
    for k in range(L, 0, -1):
        at = level == k
        if not at.any():
            continue
        ck = codes[k]
        Ck = int(ck.max()) + 1
        num = np.bincount(ck[at], weights=we[at], minlength=Ck)
        den = np.bincount(ck[at], weights=wr[at], minlength=Ck)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = num / den
        bad_cell = (num > 0) & ((den <= 0) | (f > max_factor))
        if bad_cell.any():
            parents = np.unique(codes[k - 1][at & bad_cell[ck]])
            move = (level >= k) & np.isin(codes[k - 1], parents)  # the whole parent cell, finer cells included
            level[move] = k - 1
    # final cells: (level, code at that level)
    code_at = np.take_along_axis(np.column_stack(codes), level[:, None], axis=1)[:, 0]
    key = level * (n + 1) + code_at
    cell, uniq = pd.factorize(key, sort=True)
    cell = cell.astype(np.int64)
    C = uniq.size
    num = np.bincount(cell, weights=we, minlength=C)
    den = np.bincount(cell, weights=wr, minlength=C)
    if np.any((num > 0) & (den <= 0)):
        raise WeightError("nonresponse_adjustment: no respondent at all among the eligible rows "
                          f"(cells {cells}); the adjustment is impossible")
    with np.errstate(divide="ignore", invalid="ignore"):
        fc = np.where(den > 0, num / den, 1.0)
    first = np.full(C, n, dtype=np.int64)
    np.minimum.at(first, cell, np.arange(n))
    lev_c = level[first]
    table = {"level": lev_c}
    for j, c in enumerate(cells):
        vals = data[c].to_numpy()[first]
        table[c] = pd.array(np.where(lev_c > j, vals, None), dtype=object)
    table.update({
        "eligible": np.bincount(cell, weights=e.astype(float), minlength=C),
        "respondents": np.bincount(cell, weights=r.astype(float), minlength=C),
        "eligible_weight": num,
        "respondent_weight": den,
        "factor": fc,
        "collapsed": lev_c < L,
        "above_cap": fc > max_factor,
    })
    return Adjustment(fc[cell], cell, level, pd.DataFrame(table))


# --------------------------------------------------------------------------- trimming
def trim_weights(weights, cells, k: float = 4.0, max_iter: int = 100) -> np.ndarray:
    """Trimming factors t (new weight = t x weight) with redistribution.

    In each cell the cap is k x the median of the positive weights; weights
    above it are set to the cap and the excess is shared among the untrimmed
    positive weights of the cell in proportion to them, repeated until none
    exceeds the cap, so each cell's total is unchanged.  When every positive
    weight of a cell would exceed the cap no trimming is done in that cell.
    """
    w = np.asarray(weights, dtype=np.float64)
    g = np.asarray(cells)
    g = pd.factorize(g, sort=True)[0].astype(np.int64) if g.dtype.kind not in "iu" else g.astype(np.int64)
    if w.shape != g.shape:
        raise WeightError("trim_weights: one cell per weight needed")
    if k <= 1:
        raise WeightError(f"trim_weights: k must be > 1, got {k}")
    G = int(g.max()) + 1 if g.size else 0
    pos = w > 0
    med = _grouped_median(w[pos], g[pos], G)
    cap = k * med[g]
    new = w.copy()
    trimmed = np.zeros(w.size, dtype=bool)
    for _ in range(max_iter):
        over = pos & (new > cap * (1 + 1e-12))
        if not over.any():
            break
        trimmed |= over
        excess = np.bincount(g[over], weights=new[over] - cap[over], minlength=G)
        new[over] = cap[over]
        free = pos & ~trimmed
        base = np.bincount(g[free], weights=new[free], minlength=G)
        ok = base > 0
        scale = np.where(ok, 1.0 + excess / np.where(ok, base, 1.0), 1.0)
        if np.any(~ok & (excess > 0)):
            # a cell where everything is trimmed: give up trimming there
            stuck = np.flatnonzero(~ok & (excess > 0))
            rows = np.isin(g, stuck)
            new[rows] = w[rows]
            trimmed[rows] = False
            cap[rows] = np.inf
        new[free] = new[free] * scale[g[free]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, new / w, 1.0)


# --------------------------------------------------------------------------- benchmark
def benchmark_factors(weights, cells, totals) -> np.ndarray:
    """g = T_c / sum_{k in c} w_k for each row (cells: integer codes 0..C-1;
    totals: array of C targets).  A cell with positive total but no weight
    raises (collapse it first)."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(cells, dtype=np.int64)
    T = np.asarray(totals, dtype=np.float64)
    s = np.bincount(c, weights=w, minlength=T.size)
    bad = (T > 0) & (s <= 0)
    if bad.any():
        raise WeightError(f"benchmark: cells {np.flatnonzero(bad)[:10].tolist()} have a frame total but no sample weight")
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(s > 0, T / s, 1.0)
    return g[c]


# --------------------------------------------------------------------------- zones
def form_zones(stratum, unit, order) -> tuple[pd.DataFrame, np.ndarray]:
    """Pair the variance units of each variance stratum into zones.

    ``stratum``, ``unit``, ``order``: one value per data row (units nested in
    strata; ``order`` gives the units' sort position).  Within each stratum
    (strata in order of first appearance) units are taken in ``order`` and
    paired; with an odd number the last zone holds three units.  A stratum
    with a single unit is collapsed with its neighbour: the unit joins the
    pair just before it (else just after it) as a third unit; only when no
    pair is at hand does it stay alone (a zone of one, no variance).

    Returns (units, row_unit): one row per unit with ``stratum``, ``unit``,
    ``zone`` (0, 1, ... over all strata), ``zone_unit`` (1, 2, 3) and
    ``zone_size``; and the unit (row of ``units``) of each data row.
    """
    strat = np.asarray(stratum, dtype=object)
    unit_v = np.asarray(unit, dtype=object)
    order_v = np.asarray(order, dtype=np.float64)
    n = strat.size
    if unit_v.shape != (n,) or order_v.shape != (n,):
        raise WeightError("form_zones: stratum, unit and order need one value per row")
    s_codes, _ = pd.factorize(strat, sort=False, use_na_sentinel=True)
    p_codes, _ = pd.factorize(unit_v, sort=False, use_na_sentinel=True)
    bad = (s_codes < 0) | (p_codes < 0)
    if bad.any():
        raise WeightError(f"form_zones: rows {_rows(bad)} have no variance stratum or unit")
    u_codes, _ = pd.factorize(s_codes.astype(np.int64) * (int(p_codes.max()) + 1 if n else 1) + p_codes, sort=False)
    n_units = int(u_codes.max()) + 1 if n else 0
    first = np.full(n_units, n, dtype=np.int64)
    np.minimum.at(first, u_codes, np.arange(n))
    o_min = np.full(n_units, np.inf)
    np.minimum.at(o_min, u_codes, order_v)
    us = s_codes[first]
    srt = np.lexsort((np.arange(n_units), o_min, us))
    s_sorted = us[srt]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    size_h = np.diff(np.r_[starts, n_units])
    pos = np.arange(n_units) - np.repeat(starts, size_h)
    n_h = np.repeat(size_h, size_h)
    npairs = n_h // 2
    zone_in = np.where(n_h == 1, 0, np.minimum(pos // 2, np.maximum(npairs - 1, 0)))
    zsize = np.where(n_h == 1, 1, np.where((n_h % 2 == 1) & (zone_in == npairs - 1), 3, 2))
    zunit = pos - 2 * zone_in + 1
    zones_h = np.where(size_h == 1, 1, size_h // 2)
    zone_base = np.repeat(np.r_[0, np.cumsum(zones_h)[:-1]], size_h)
    zone = zone_base + zone_in
    # a stratum with a single unit joins the nearest pair (the one before it, else the one after it)
    # as its third unit: collapsed strata, as PISA and TIMSS treat singletons
    for i in np.flatnonzero(n_h == 1):
        for j in (i - 1, i + 1):
            if 0 <= j < n_units and zsize[j] == 2:
                zmerge = zone[j]
                members = zone == zmerge
                zone[i] = zmerge
                zsize[members | (np.arange(n_units) == i)] = 3
                zunit[i] = 3
                break
    zone = np.unique(zone, return_inverse=True)[1].astype(np.int64)
    out = pd.DataFrame({
        "stratum": pd.Series(strat[first[srt]], dtype=object),
        "unit": pd.Series(unit_v[first[srt]], dtype=object),
        "zone": zone,
        "zone_unit": zunit,
        "zone_size": zsize,
    })
    unit_pos = np.empty(n_units, dtype=np.int64)
    unit_pos[srt] = np.arange(n_units)
    return out, unit_pos[u_codes]


@dataclass(frozen=True)
class ZoneFactors:
    """Replicate factors per variance unit (``factors``: units x R), with the
    variance constants: V = scale * sum_r rscales_r (theta_r - centre)^2,
    centre the full-sample estimate when ``mse``."""

    factors: np.ndarray
    scale: float
    rscales: np.ndarray
    method: str
    rho: float
    mse: bool

    @property
    def n_replicates(self) -> int:
        return int(self.factors.shape[1])


def zone_factors(zones: pd.DataFrame, method: str = "Fay", replicates: int = 80, rho: float = 0.5,
                 rng: np.random.Generator | None = None, fraction=None) -> ZoneFactors:
    """Replicate factors for the units of :func:`form_zones` (see the module docstring).

    ``fraction``: optional sampling fraction f of each unit (its inclusion
    probability at its stage).  With it every factor's deviation from 1 is
    multiplied by sqrt(1 - f_z), f_z the mean fraction of the unit's zone,
    so that each zone's contribution to the variance carries the finite
    population correction (1 - f_z) (for a county pair, Brewer's
    approximation of the PPS without-replacement variance with the pair's
    mean probability; for students of a school, the exact SRS correction
    1 - m/M).
    """
    zf = _zone_factors(zones, method, replicates, rho, rng if rng is not None else np.random.default_rng(0))
    if fraction is None:
        return zf
    f = np.asarray(fraction, dtype=np.float64)
    if f.shape != (len(zones),) or np.any((f < 0) | (f > 1) | ~np.isfinite(f)):
        raise WeightError("zone_factors: fraction needs one value in [0, 1] per unit")
    z = zones["zone"].to_numpy(dtype=np.int64)
    Z = int(z.max()) + 1 if z.size else 0
    fz = np.bincount(z, weights=f, minlength=Z) / np.maximum(np.bincount(z, minlength=Z), 1)
    c = np.sqrt(1.0 - fz[z])
    F = 1.0 + (zf.factors - 1.0) * c[:, None]
    return ZoneFactors(F, zf.scale, zf.rscales, zf.method, zf.rho, zf.mse)


def _zone_factors(zones: pd.DataFrame, method: str, replicates: int, rho: float,
                  rng: np.random.Generator) -> ZoneFactors:
    m = method.lower()
    U = len(zones)
    z = zones["zone"].to_numpy(dtype=np.int64)
    zu = zones["zone_unit"].to_numpy(dtype=np.int64)
    zs = zones["zone_size"].to_numpy(dtype=np.int64)
    Z = int(z.max()) + 1 if U else 0
    real = zs > 1
    if U and not real.any():
        raise WeightError("replicate weights: no zone has two units; there is no sampling variance to replicate")
    if (zs == 1).any():
        warnings.warn(f"{int((zs == 1).sum())} variance unit(s) without any partner contribute no variance "
                      "(lonely units)", stacklevel=3)
    zsize = np.zeros(Z, dtype=np.int64)
    zsize[z] = zs
    # designated unit of each zone (random): unit doubled in JK2, the "+sqrt 2" unit of a Fay triple
    desig = np.minimum((rng.random(Z) * np.maximum(zsize, 1)).astype(np.int64) + 1, np.maximum(zsize, 1))
    if m in ("fay", "brr"):
        R = int(replicates)
        r = float(rho) if m == "fay" else 0.0
        H = _rep.hadamard(R).astype(np.float64)
        row = 1 + (np.arange(Z) % (R - 1))
        h = H[row[z], :]  # (U, R)
        F = np.ones((U, R))
        pair = real & (zs == 2)
        F[pair] = 1.0 + (1.0 - r) * np.where(zu[pair] == 1, 1.0, -1.0)[:, None] * h[pair]
        tri = real & (zs == 3)
        if tri.any():
            if m == "fay":
                d = zu[tri] == desig[z[tri]]
                a = (1.0 - r) * math.sqrt(2.0)
                F[tri] = 1.0 + np.where(d, a, -a / 2.0)[:, None] * h[tri]
            else:  # BRR: the designated unit is one half, the two others the other half
                d = zu[tri] == desig[z[tri]]
                F[tri] = 1.0 + np.where(d, 1.0, -1.0)[:, None] * h[tri]
        return ZoneFactors(F, 1.0 / (R * (1.0 - r) ** 2), np.ones(R), "Fay" if m == "fay" else "BRR", r, True)
    if m == "jk2":
        R = int(replicates)
        need = np.where(zsize == 3, 2, np.where(zsize == 2, 1, 0))
        first_col = np.r_[0, np.cumsum(need)[:-1]] % R
        F = np.ones((U, R))
        pair = real & (zs == 2)
        col = first_col[z]
        idx = np.flatnonzero(pair)
        F[idx, col[idx]] = np.where(zu[idx] == desig[z[idx]], 2.0, 0.0)
        tri = np.flatnonzero(real & (zs == 3))
        if tri.size:
            # replicate 1 of the triple drops unit a, replicate 2 drops unit b (a, b: the two
            # units other than the designated one), the others x 1.5
            zt = z[tri]
            drop_order = (zu[tri] - desig[zt]) % 3  # 0 for the designated unit, 1 and 2 for the others
            for j, c_off in ((1, 0), (2, 1)):
                c = (first_col[zt] + c_off) % R
                F[tri, c] = np.where(drop_order == j, 0.0, 1.5)
        return ZoneFactors(F, 1.0, np.ones(R), "JK2", 0.0, True)
    units = pd.DataFrame({"zone": z, "unit": np.arange(U), "stratum": zones["stratum"].to_numpy()})
    if m == "jkn":
        keep = real
        rf = _rep.jkn(units[keep].reset_index(drop=True), "zone", "unit")
        F = np.ones((U, rf.n_replicates))
        F[np.flatnonzero(keep)] = rf.expand()
        return ZoneFactors(F, rf.scale, np.asarray(rf.rscales), "JKn", 0.0, False)
    if m == "jk1":
        rf = _rep.jk1(units, psu="unit")
        return ZoneFactors(rf.expand(), rf.scale, np.asarray(rf.rscales), "JK1", 0.0, False)
    if m == "bootstrap":
        s = units["stratum"].astype(str)
        n_h = s.map(s.value_counts())
        keep = (n_h > 1).to_numpy()
        rf = _rep.bootstrap(units[keep].reset_index(drop=True), "stratum", "unit", replicates=int(replicates), seed=rng)
        F = np.ones((U, rf.n_replicates))
        F[np.flatnonzero(keep)] = rf.expand()
        return ZoneFactors(F, rf.scale, np.asarray(rf.rscales), "bootstrap", 0.0, False)
    raise WeightError(f"unknown replicate method {method!r}; use Fay, BRR, JK2, JKn, JK1 or bootstrap")
