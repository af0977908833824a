"""Probability-proportional-to-size (PPS) selection: inclusion probabilities,
systematic PPS, allocation and implicit stratification by sorting.

Inclusion probabilities (:func:`inclusion_probabilities`) follow Tillé and
Matei's R package *sampling* (``inclusionprobabilities``): for sizes a_i and
sample size n,

    pi_i = n a_i / sum_j a_j,

and while some pi_i >= 1 those units are set to 1 (certainty units) and the
others rescaled to n - (number of certainty units):

    pi_i = (n - c) a_i / sum_{j not certain} a_j.

The loop stops when no further unit reaches 1 (within 1e-12: rounding of
the sums must not turn a certainty unit into 0.9999999999999998, which R's
exact comparison can do).  At the end the certainty
units are exactly those with a_i >= I, the final *sampling interval*
I = sum_{j not certain} a_j / (n - c) (the interval only decreases from one
iteration to the next), every probability lies in (0, 1] for a_i > 0 and
they sum to n.

Systematic PPS (:func:`systematic`) is Madow's (1949) method in the form of
R's ``sampling::UPsystematic``: units with pi >= 1 - eps are taken, units
with pi <= eps are not (eps = 1e-12), and with C_0 = 0 and C_k the cumulated pi of the
other units in frame order and a random start u ~ U(0, 1), unit k is taken
iff frac(C_{k-1} - u) > frac(C_k - u), i.e. iff an integer lies in
(C_{k-1} - u, C_k - u].  Every unit then has inclusion probability exactly
pi_k whatever the order of the frame, which is why the order can carry
*implicit stratification* (sorting by locale, school type, geography and
size), as in PISA, TIMSS and NAEP.  Cumulated sums are taken in extended
precision, as R's ``cumsum`` does.

Allocation to explicit strata (:func:`allocate`) is proportional to a
measure of size with a minimum and a maximum per stratum (largest-remainder
rounding, Hamilton's method).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PPSError",
    "inclusion_probabilities",
    "grouped_inclusion_probabilities",
    "systematic",
    "grouped_systematic",
    "pps_systematic",
    "allocate",
    "serpentine_order",
    "bands",
]


class PPSError(ValueError):
    """Bad input to a PPS function."""


# --------------------------------------------------------------------------- helpers
def _sizes(sizes, what: str = "sizes") -> np.ndarray:
    a = np.asarray(sizes, dtype=np.float64)
    if a.ndim != 1:
        raise PPSError(f"{what} must be one-dimensional, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise PPSError(f"{what}: missing or infinite values at positions {bad[:10].tolist()}; expected finite sizes >= 0")
    bad = np.flatnonzero(a < 0)
    if bad.size:
        raise PPSError(f"{what}: negative values at positions {bad[:10].tolist()} ({a[bad[:5]].tolist()}); expected sizes >= 0")
    return a


def _group_codes(groups, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.zeros(n, dtype=np.int64), 1
    g = np.asarray(groups)
    if g.shape != (n,):
        raise PPSError(f"groups has shape {g.shape}, expected ({n},): one group per unit")
    if g.dtype.kind in "iu" and (n == 0 or g.min() >= 0):
        codes = g.astype(np.int64)
        return codes, int(codes.max()) + 1 if n else 0
    codes, uniq = pd.factorize(pd.Series(g), sort=False)
    return codes.astype(np.int64), len(uniq)


# a probability within 1e-12 of 1 is 1 (floating rounding of sums); R compares with 1 exactly
_ONE = 1.0 - 1e-12


# --------------------------------------------------------------------------- inclusion probabilities
def inclusion_probabilities(sizes, n: float):
    """Exact first-order PPS inclusion probabilities with certainty units.

    Parameters
    ----------
    sizes : array-like or Series of sizes a_i >= 0 (measure of size).
    n : sample size (0 <= n <= number of units with a_i > 0).

    Returns
    -------
    ndarray (a Series with the same index when ``sizes`` is a Series) of
    probabilities: 0 where a_i = 0, otherwise in (0, 1], summing to n.  Same
    result as R's ``sampling::inclusionprobabilities(a, n)``.
    """
    index = sizes.index if isinstance(sizes, pd.Series) else None
    a = _sizes(sizes)
    pik = grouped_inclusion_probabilities(a, None, n)
    return pd.Series(pik, index=index, name="pik") if index is not None else pik


def grouped_inclusion_probabilities(sizes, groups, n) -> np.ndarray:
    """:func:`inclusion_probabilities` within each group at once (vectorised).

    ``groups``: one label per unit (or None: one group); ``n``: one sample
    size for all groups, or an array with one size per group code (groups
    coded in order of first appearance, or given as integer codes 0..G-1).
    """
    a = _sizes(sizes)
    N = a.size
    g, G = _group_codes(groups, N)
    n_g = np.asarray(n, dtype=np.float64)
    if n_g.ndim == 0:
        n_g = np.full(G, float(n_g))
    if n_g.shape != (G,):
        raise PPSError(f"n has {n_g.size} values for {G} groups; give one sample size per group")
    pos = a > 0
    n_pos = np.bincount(g[pos], minlength=G)
    bad = np.flatnonzero((n_g < 0) | (n_g > n_pos) | ~np.isfinite(n_g))
    if bad.size:
        raise PPSError(
            f"sample size n = {n_g[bad[:5]].tolist()} impossible for group(s) {bad[:5].tolist()} with "
            f"{n_pos[bad[:5]].tolist()} units of positive size; expected 0 <= n <= units with size > 0"
        )
    total = np.bincount(g, weights=a, minlength=G)
    with np.errstate(divide="ignore", invalid="ignore"):
        pik1 = np.where(total[g] > 0, n_g[g] * a / total[g], 0.0)
    pik = pik1.copy()
    cert = pos & (pik >= _ONE)
    l_g = np.bincount(g[cert], minlength=G)
    l_old = np.full(G, -1)
    # R: x = pik1[!cert] / sum(pik1[!cert]); pik[!cert] = (n - l) * x; repeat until l is stable
    while np.any(l_g != l_old):
        rest = pos & ~cert
        s_rest = np.bincount(g[rest], weights=pik1[rest], minlength=G)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(s_rest[g] > 0, pik1 / s_rest[g], 0.0)
        pik = np.where(cert, 1.0, np.where(rest, (n_g[g] - l_g[g]) * x, 0.0))
        l_old = l_g
        cert = pos & (pik >= _ONE)
        l_g = np.bincount(g[cert], minlength=G)
    pik[cert] = 1.0
    full = (n_g == n_pos)[g] & pos  # n = number of units: all taken (no rounding left)
    pik[full] = 1.0
    return pik


# --------------------------------------------------------------------------- systematic selection
def systematic(pik, u: float | None = None, rng: np.random.Generator | None = None, eps: float = 1e-12) -> np.ndarray:
    """Systematic PPS selection in frame order (Madow 1949; R's ``UPsystematic``).

    ``pik``: inclusion probabilities in frame order; ``u``: the random start
    in [0, 1) (drawn from ``rng`` when not given).  Returns a boolean
    selection vector.  Units with pik >= 1 - eps are always selected, units
    with pik <= eps never (R's default eps is 1e-6; here 1e-12, so that a unit
    with a small but positive probability keeps it exactly).  When the pik sum to an integer n exactly n units
    are taken, except that a start within about 1e-15 of a cumulated
    boundary can gain or lose one unit by rounding (as in R; probability of
    order 1e-16 per draw).
    """
    p = _sizes(pik, "pik")
    if u is None:
        if rng is None:
            raise PPSError("systematic(): give the random start u or a numpy Generator rng")
        u = float(rng.random())
    return grouped_systematic(p, None, np.array([u]), eps=eps)


def grouped_systematic(pik, groups, u, eps: float = 1e-12) -> np.ndarray:
    """:func:`systematic` within each group (frame order within group), one
    random start per group code; vectorised over groups."""
    p = _sizes(pik, "pik")
    N = p.size
    g, G = _group_codes(groups, N)
    u = np.broadcast_to(np.asarray(u, dtype=np.float64), (G,))
    if np.any((u < 0) | (u >= 1)):
        raise PPSError(f"random starts must lie in [0, 1), got {u[(u < 0) | (u >= 1)][:5].tolist()}")
    if np.any(p > 1 + 1e-9):
        bad = np.flatnonzero(p > 1 + 1e-9)
        raise PPSError(f"pik: values above 1 at positions {bad[:10].tolist()}; compute them with inclusion_probabilities")
    sel = p >= 1.0 - eps
    mid = (p > eps) & ~sel
    idx = np.flatnonzero(mid)
    if idx.size == 0:
        return sel
    gi = g[idx]
    order = np.argsort(gi, kind="stable")  # rows grouped, frame order kept within group
    rows = idx[order]
    gs = gi[order]
    q = p[rows].astype(np.longdouble)
    cs = np.cumsum(q)
    starts = np.r_[0, np.flatnonzero(np.diff(gs)) + 1]
    first_in_group = np.zeros(rows.size, dtype=bool)
    first_in_group[starts] = True
    # cumulated probabilities within each group, as R's cumsum (extended precision, from 0)
    before = np.repeat(np.r_[np.longdouble(0), cs[starts[1:] - 1]] if starts.size > 1 else np.array([np.longdouble(0)]),
                       np.diff(np.r_[starts, rows.size]))
    c_cur = (cs - before).astype(np.float64)
    c_prev = np.empty_like(c_cur)
    c_prev[1:] = c_cur[:-1]
    c_prev[first_in_group] = 0.0
    uu = u[gs]
    a_prev = np.mod(c_prev - uu, 1.0)
    a_cur = np.mod(c_cur - uu, 1.0)
    sel[rows] = a_prev > a_cur
    return sel


# --------------------------------------------------------------------------- allocation
def allocate(sizes, n: int, minimum=0, maximum=None) -> np.ndarray:
    """Allocate ``n`` units to strata proportionally to ``sizes``.

    Each stratum h gets n_h with minimum_h <= n_h <= maximum_h (maximum
    defaults to infinity) and sum n_h = n.  Start from max(minimum,
    floor(n s_h / S)) capped at the maximum, then add (or remove) one unit at a
    time where the ideal share n s_h / S exceeds (falls short of) the
    allocation most (largest-remainder rounding; ties go to the earlier
    stratum).
    """
    s = _sizes(sizes, "stratum sizes")
    H = s.size
    lo = np.broadcast_to(np.asarray(minimum, dtype=np.int64), (H,)).copy()
    hi = (np.full(H, np.iinfo(np.int64).max) if maximum is None
          else np.broadcast_to(np.asarray(maximum, dtype=np.int64), (H,)).copy())
    lo = np.minimum(lo, hi)
    n = int(n)
    if n < lo.sum():
        raise PPSError(f"cannot allocate n = {n}: the minimum per stratum already needs {int(lo.sum())}")
    if n > hi.sum():
        raise PPSError(f"cannot allocate n = {n}: the strata hold at most {int(hi.sum())} units")
    total = s.sum()
    ideal = n * s / total if total > 0 else np.full(H, n / max(H, 1))
    alloc = np.clip(np.floor(ideal).astype(np.int64), lo, hi)
    # one unit at a time; H and |n - sum| are small (strata, not rows)
    while alloc.sum() < n:
        gap = np.where(alloc < hi, ideal - alloc, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > n:
        gap = np.where(alloc > lo, ideal - alloc, np.inf)
        alloc[int(np.argmin(gap))] -= 1
    return alloc


# --------------------------------------------------------------------------- sorting
def bands(values, k: int = 3) -> np.ndarray:
    """Quantile bands 1..k of a numeric vector (k = 3: tertiles), cut at the
    sample quantiles j/k (``numpy.quantile``, linear rule); a value equal to a
    cut point goes to the upper band."""
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any():
        bad = np.flatnonzero(np.isnan(v))[:10].tolist()
        raise PPSError(f"bands(): missing values at positions {bad}")
    if k < 1:
        raise PPSError(f"bands(): k must be >= 1, got {k}")
    cuts = np.quantile(v, np.arange(1, k) / k) if k > 1 else np.array([])
    return (np.searchsorted(cuts, v, side="right") + 1).astype(np.int64)


def _key_codes(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        v = col.to_numpy(dtype=np.float64)
        return np.unique(v, return_inverse=True)[1].astype(np.int64)
    if not (isinstance(col.dtype, pd.StringDtype) or col.dtype == object):
        col = col.astype(str)
    return pd.factorize(col, sort=True)[0].astype(np.int64)


def serpentine_order(df: pd.DataFrame, keys: Sequence[str], groups: str | None = None) -> np.ndarray:
    """Row positions of ``df`` sorted by ``groups`` then ``keys`` in serpentine order.

    Serpentine (PISA, TIMSS): the first key ascending; each further key
    ascending within the odd-numbered and descending within the even-numbered
    runs of the keys before it, so that neighbours in the sorted frame are
    alike on every key.  Ties keep frame order.
    """
    keys = list(keys)
    for k in keys + ([groups] if groups else []):
        if k not in df.columns:
            raise PPSError(f"sort key {k!r} is not a column of the frame (columns: {list(df.columns)})")
    n = len(df)
    cur = [_key_codes(df[groups])] if groups else []
    for j, k in enumerate(keys):
        c = _key_codes(df[k])
        if j > 0:
            c = np.where(_run_parity(cur, n, bool(groups)) == 1, -c, c)
        cur.append(c)
    if not cur:
        return np.arange(n)
    return np.lexsort([np.arange(n)] + cur[::-1])


def _run_parity(cur: list[np.ndarray], n: int, grouped: bool) -> np.ndarray:
    """Parity of the run number (within group when ``grouped``) of each row
    among the distinct values of the keys ``cur`` in sorted order."""
    o = np.lexsort(cur[::-1])
    sk = np.column_stack([x[o] for x in cur])
    new = np.r_[True, np.any(sk[1:] != sk[:-1], axis=1)]
    run = np.cumsum(new) - 1
    if grouped:
        gs = cur[0][o]
        gstart = np.r_[True, gs[1:] != gs[:-1]]
        run = run - np.maximum.accumulate(np.where(gstart, run, 0))
    out = np.empty(n, dtype=np.int64)
    out[o] = run % 2
    return out


# --------------------------------------------------------------------------- DataFrame level
def pps_systematic(frame: pd.DataFrame, size: str, n, strata: str | None = None, sort: Sequence[str] = (),
                   rng: np.random.Generator | None = None, u=None, serpentine: bool = True) -> pd.DataFrame:
    """Stratified systematic PPS sample of a frame.

    Within each explicit stratum (``strata``; ``n`` a number or a mapping
    stratum -> n) the frame is sorted by ``sort`` (serpentine by default:
    implicit stratification), inclusion probabilities are computed with
    certainty units (:func:`inclusion_probabilities`), and units are selected
    systematically with one random start per stratum (``u``: fixed starts,
    a number or mapping, else drawn from ``rng``).

    Returns the sorted frame with columns ``pik``, ``certainty`` and
    ``selected``.
    """
    if size not in frame.columns:
        raise PPSError(f"size column {size!r} is not in the frame")
    df = frame.reset_index(drop=True)
    order = serpentine_order(df, sort, strata) if serpentine else np.lexsort(
        [np.arange(len(df))] + [_key_codes(df[k]) for k in list(sort)[::-1]] + ([_key_codes(df[strata])] if strata else []))
    df = df.iloc[order].reset_index(drop=True)
    if strata is None:
        g = np.zeros(len(df), dtype=np.int64)
        labels = [None]
    else:
        g, uniq = pd.factorize(df[strata], sort=False)
        labels = list(uniq)
    G = len(labels)

    def per_stratum(x, what):
        if isinstance(x, dict) or isinstance(x, pd.Series):
            m = dict(x)
            missing = [lab for lab in labels if lab not in m]
            if missing:
                raise PPSError(f"{what}: no value for strata {missing[:10]}")
            return np.array([m[lab] for lab in labels], dtype=np.float64)
        return np.full(G, float(x))

    n_g = per_stratum(n, "n")
    pik = grouped_inclusion_probabilities(df[size].to_numpy(dtype=np.float64), g, n_g)
    if u is None:
        if rng is None:
            raise PPSError("pps_systematic(): give random starts u or a numpy Generator rng")
        starts = rng.random(G)
    else:
        starts = per_stratum(u, "u")
    sel = grouped_systematic(pik, g, starts)
    df["pik"] = pik
    df["certainty"] = pik >= 1.0
    df["selected"] = sel
    return df
