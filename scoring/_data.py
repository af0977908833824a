"""Response-data handling and the quadrature E-step shared by calibration and scoring.

Two input layouts are accepted:

* **wide**: a DataFrame, rows = students, columns = items, integer category
  scores, NaN = not presented (missing by design).
* **long**: columns ``student_id``, ``item_id``, ``score`` and optionally
  ``status`` (``scored`` / ``omitted`` / ``not_reached`` / ``not_presented``) and
  ``year``.  Omitted and not-reached responses are scored according to the
  ``omitted`` / ``not_reached`` rules (``"wrong"`` = lowest category 0,
  ``"not_presented"`` = treated as missing by design).

Categories are recoded per item to 0..K-1 in sorted order of the observed values
(as mirt does internally, e.g. Likert 1..4 -> 0..3); the mapping is kept so that
new data are scored with the same coding.

The E-step computes, for every (collapsed) response pattern i and quadrature node
q, log L_iq = sum_j log P_j(x_ij | theta_q) as matrix products over indicator
matrices -- never a students x items x nodes array::

    log L = O @ log P_0  +  Y @ (log P_k - log P_0)

where ``Y`` (n x sum_j (K_j - 1)) holds the indicators of the non-zero categories
and ``O`` the observed-item indicators; ``O @ log P_0`` is taken per missingness
pattern (booklet) when there are few of them.  Expected counts are the transposed
products ``Y' (w * post)`` and per-booklet node totals.  Rows are processed in
chunks so memory stays O(chunk x nodes).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

STATUS_VALUES = ("scored", "omitted", "not_reached", "not_presented")
_CHUNK = 4096


class ResponseDataError(ValueError):
    """Bad response data (names the column, rows and what was expected)."""


def _rows_list(idx: Sequence[Any], limit: int = 10) -> str:
    idx = list(idx)
    s = ", ".join(repr(i) for i in idx[:limit])
    return s + (f", ... ({len(idx)} rows)" if len(idx) > limit else "")


# ----------------------------------------------------------------------------- input
def _long_to_wide(
    df: pd.DataFrame, omitted: str, not_reached: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    need = {"student_id", "item_id", "score"}
    miss = need - set(df.columns)
    if miss:
        raise ResponseDataError(
            f"long response table needs columns {sorted(need)} (plus optional 'status', 'year'); missing {sorted(miss)}"
        )
    for rule, name in ((omitted, "omitted"), (not_reached, "not_reached")):
        if rule not in ("wrong", "not_presented"):
            raise ResponseDataError(f"{name}= must be 'wrong' or 'not_presented', got {rule!r}")
    score = pd.to_numeric(df["score"], errors="coerce").astype(float).to_numpy()
    bad = df["score"].notna().to_numpy() & np.isnan(score)
    if bad.any():
        raise ResponseDataError(
            f"column 'score' must be numeric; non-numeric values in rows {_rows_list(df.index[bad])}"
        )
    if "status" in df.columns:
        status = df["status"].astype("string").str.strip().str.lower()
        badst = ~status.isin(STATUS_VALUES) | status.isna()
        if badst.any():
            raise ResponseDataError(
                f"column 'status' must be one of {STATUS_VALUES}; bad values in rows {_rows_list(df.index[badst.to_numpy()])}"
            )
        status = status.to_numpy(dtype=object)
        score = score.copy()
        score[status == "not_presented"] = np.nan
        for rule, st in ((omitted, "omitted"), (not_reached, "not_reached")):
            m = status == st
            score[m] = 0.0 if rule == "wrong" else np.nan
        scored_nan = (status == "scored") & np.isnan(score)
        if scored_nan.any():
            raise ResponseDataError(
                f"rows with status 'scored' need a score; column 'score' is missing in rows {_rows_list(df.index[scored_nan])}"
            )
    keys = ["year", "student_id"] if "year" in df.columns else ["student_id"]
    dup = df.duplicated(keys + ["item_id"], keep=False).to_numpy()
    if dup.any():
        raise ResponseDataError(
            f"each (student_id, item_id{', year' if 'year' in keys else ''}) must appear once; duplicated rows {_rows_list(df.index[dup])}"
        )
    tmp = df[keys + ["item_id"]].copy()
    tmp["score"] = score
    wide = tmp.pivot(index=keys, columns="item_id", values="score")
    wide.columns.name = None
    return wide, None


@dataclass
class ResponseData:
    """Responses recoded to 0..K-1 (float, NaN = not presented) plus metadata."""

    x: np.ndarray  # (n, J) float
    items: list
    index: pd.Index
    n_cat: np.ndarray  # (J,)
    categories: dict  # item -> array of original values (position = code)
    weights: np.ndarray  # (n,)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def n_items(self) -> int:
        return self.x.shape[1]


def to_wide(responses: Any, *, omitted: str = "wrong", not_reached: str = "not_presented") -> pd.DataFrame:
    """Wide students x items DataFrame from either input layout (see module docstring)."""
    if isinstance(responses, np.ndarray):
        responses = pd.DataFrame(responses)
    if not isinstance(responses, pd.DataFrame):
        raise ResponseDataError(
            f"responses must be a pandas DataFrame (wide: students x items, or long with student_id/item_id/score); got {type(responses).__name__}"
        )
    if {"student_id", "item_id", "score"} <= set(responses.columns):
        wide, _ = _long_to_wide(responses, omitted, not_reached)
        return wide
    return responses


def _numeric_wide(wide: pd.DataFrame) -> np.ndarray:
    if wide.shape[1] == 0:
        raise ResponseDataError("responses have no item columns")
    numeric = all(pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) for dt in wide.dtypes)
    if numeric:
        x = wide.to_numpy(dtype=float, na_value=np.nan)
    else:
        cols = []
        for c in wide.columns:
            s = wide[c]
            v = pd.to_numeric(s, errors="coerce").astype(float).to_numpy()
            bad = s.notna().to_numpy() & np.isnan(v)
            if bad.any():
                raise ResponseDataError(
                    f"item column {c!r} must hold numeric category scores (NaN = not presented); non-numeric values in rows {_rows_list(wide.index[bad])}"
                )
            cols.append(v)
        x = np.column_stack(cols)
    with np.errstate(invalid="ignore"):
        badint = ~np.isnan(x) & ((x != np.round(x)) | ~np.isfinite(x))
    if badint.any():
        j = int(np.flatnonzero(badint.any(axis=0))[0])
        raise ResponseDataError(
            f"item column {wide.columns[j]!r} must hold finite integer category scores; bad values in rows {_rows_list(wide.index[badint[:, j]])}"
        )
    return x


def _recode(x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per column: sorted distinct observed values and codes 0..K-1 (vectorised when the
    values are small non-negative integers)."""
    n, J = x.shape
    obs = ~np.isnan(x)
    lo = np.nanmin(x) if obs.any() else 0.0
    hi = np.nanmax(x) if obs.any() else 0.0
    if obs.any() and lo >= 0 and hi <= 255:
        V = int(hi) + 1
        xi = np.where(obs, x, V).astype(np.int16)  # V marks missing
        flat = xi + (np.arange(J, dtype=np.int16) * (V + 1))[None, :] if J * (V + 1) < 32000 else (
            xi.astype(np.int64) + (np.arange(J) * (V + 1))[None, :]
        )
        present = (np.bincount(flat.ravel(), minlength=J * (V + 1)).reshape(J, V + 1) > 0)[:, :V]
        vals = [np.flatnonzero(present[j]).astype(float) for j in range(J)]
        kmax = present.sum(axis=1)
        if all(present[j, : kmax[j]].all() for j in range(J)):
            return x, vals  # already coded 0..K-1 (callers copy before storing)
        lut = (np.cumsum(present, axis=1) - 1).astype(float)
        lut = np.concatenate([lut, np.full((J, 1), np.nan)], axis=1)
        codes = lut[np.arange(J)[None, :], xi]
        return codes, vals
    codes = np.full_like(x, np.nan)
    vals = []
    for j in range(J):
        col = x[:, j]
        o = obs[:, j]
        v = np.unique(col[o])
        codes[o, j] = np.searchsorted(v, col[o])
        vals.append(v)
    return codes, vals


def prepare(
    responses: Any,
    weights: Any = None,
    *,
    omitted: str = "wrong",
    not_reached: str = "not_presented",
    categories: Mapping[Any, np.ndarray] | None = None,
    items: Sequence[Any] | None = None,
    min_categories: int = 2,
) -> ResponseData:
    """Validate and recode responses.

    ``categories`` (item -> original values) fixes the coding (used when scoring
    with an existing calibration; values outside it raise an error); ``items``
    fixes the column order (missing columns = not presented, extra columns raise).
    """
    wide = to_wide(responses, omitted=omitted, not_reached=not_reached)
    if wide.columns.duplicated().any():
        dups = list(wide.columns[wide.columns.duplicated()])
        raise ResponseDataError(f"item columns must be unique; duplicated {dups}")
    if items is not None:
        extra = [c for c in wide.columns if c not in set(items)]
        if extra:
            raise ResponseDataError(f"responses contain items not in the calibration: {extra[:20]}")
        wide = wide.reindex(columns=list(items))
    x = _numeric_wide(wide)
    n, J = x.shape
    # weights
    if weights is None:
        w = np.ones(n)
    else:
        if isinstance(weights, str):
            raise ResponseDataError("weights must be an array/Series aligned with the response rows, not a column name")
        if isinstance(weights, pd.Series):
            if weights.index.equals(wide.index):
                w = weights.to_numpy(dtype=float)
            elif weights.index.is_unique and wide.index.isin(weights.index).all():
                w = weights.reindex(wide.index).to_numpy(dtype=float)
            elif len(weights) == n:
                w = weights.to_numpy(dtype=float)
            else:
                raise ResponseDataError(
                    f"weights (a Series of {len(weights)} values) neither matches the {n} response rows "
                    "by index nor by length"
                )
        else:
            w = np.asarray(weights, dtype=float).ravel()
        if w.shape[0] != n:
            raise ResponseDataError(f"weights has {w.shape[0]} values for {n} response rows")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            raise ResponseDataError(
                f"weights must be finite and >= 0; bad values in rows {_rows_list(wide.index[bad])}"
            )
    # recode categories
    cats: dict = {}
    n_cat = np.zeros(J, dtype=int)
    if categories is None:
        xr, vals_list = _recode(x)
        for j, item in enumerate(wide.columns):
            vals = vals_list[j]
            if len(vals) < min_categories:
                raise ResponseDataError(
                    f"item {item!r} has {len(vals)} observed categor{'y' if len(vals) == 1 else 'ies'} "
                    f"({vals.tolist()}); at least {min_categories} are needed to calibrate it"
                )
            cats[item] = vals
            n_cat[j] = len(vals)
    else:
        vals_list = [np.asarray(categories[item], dtype=float) for item in wide.columns]
        n_cat[:] = [len(v) for v in vals_list]
        for item, v in zip(wide.columns, vals_list):
            cats[item] = v
        obs = ~np.isnan(x)
        if all(np.array_equal(v, np.arange(len(v))) for v in vals_list):
            # coding is the identity: only check the range
            with np.errstate(invalid="ignore"):
                bad = obs & ((x < 0) | (x > (n_cat - 1)[None, :]))
            xr = x
        elif all(v.min() >= 0 and v.max() <= 255 and np.all(v == np.round(v)) for v in vals_list) and (
            np.nanmax(x, initial=0) <= 255 and np.nanmin(x, initial=0) >= 0
        ):
            V = 257
            lut = np.full((J, V), np.nan)
            for j, v in enumerate(vals_list):
                lut[j, v.astype(np.int64)] = np.arange(len(v))
            xi = np.where(obs, x, 256).astype(np.int64)
            xr = lut[np.arange(J)[None, :], xi]
            xr[~obs] = np.nan
            bad = obs & np.isnan(xr)
        else:
            xr = np.full_like(x, np.nan)
            bad = np.zeros_like(obs)
            for j, v in enumerate(vals_list):
                col = x[:, j]
                o = obs[:, j]
                pos = np.clip(np.searchsorted(v, col[o]), 0, len(v) - 1)
                ok = v[pos] == col[o]
                bad[np.flatnonzero(o)[~ok], j] = True
                xr[o, j] = pos
        if bad.any():
            j = int(np.flatnonzero(bad.any(0))[0])
            item = wide.columns[j]
            vals = sorted(set(x[bad[:, j], j].tolist()))
            raise ResponseDataError(
                f"item {item!r}: values {vals[:10]} were not seen in calibration (expected one of "
                f"{vals_list[j].tolist()}); rows {_rows_list(wide.index[bad[:, j]])}"
            )
    return ResponseData(x=xr, items=list(wide.columns), index=wide.index, n_cat=n_cat, categories=cats, weights=w)


# ----------------------------------------------------------------------------- design matrices
def _row_keys(codes: np.ndarray) -> np.ndarray:
    """64-bit keys of rows of a small-integer matrix (exact when it fits, else hashed)."""
    n, J = codes.shape
    base = int(codes.max()) + 1 if codes.size else 1
    if J * np.log2(max(base, 2)) <= 62:
        mult = base ** np.arange(J, dtype=np.int64)
        return codes.astype(np.int64) @ mult
    rng = np.random.default_rng(12345)
    mult = rng.integers(1, 2**62, size=J, dtype=np.int64) | 1
    with np.errstate(over="ignore"):
        return (codes.astype(np.int64) * mult).sum(axis=1, dtype=np.int64)


def collapse_patterns(x: np.ndarray, weights: np.ndarray, *, force: bool = False, max_frac: float = 0.7):
    """Collapse identical response rows.

    Returns ``(unique_x, unique_weights, inverse)`` where ``x = unique_x[inverse]``,
    or ``None`` when fewer than ``1 - max_frac`` of the rows are duplicates
    (collapsing would not pay off) unless ``force``.
    """
    n, J = x.shape
    if not force and n > 20000:
        # cheap pre-check on a systematic sample: skip when patterns barely repeat
        sub = x[:: n // 5000][:5000]
        sc = np.where(np.isnan(sub), 0, sub + 1).astype(np.int16)
        if len(np.unique(_row_keys(sc))) > 0.95 * sc.shape[0]:
            return None
    codes = np.where(np.isnan(x), 0, x + 1).astype(np.int16)
    keys = _row_keys(codes)
    uk, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    if not force and len(uk) > max_frac * n:
        return None
    ux = x[first]
    # guard against hash collisions
    same = (codes[first][inv] == codes).all(axis=1)
    if not same.all():
        return None
    uw = np.bincount(inv, weights=weights, minlength=len(uk))
    return ux, uw, inv


@dataclass
class Design:
    """Indicator matrices for the E-step over (collapsed, booklet-sorted) rows.

    Items whose category log-odds are linear in theta (``linear[j]``: 2PL, Rasch,
    GPCM, PCM; log P_k - log P_0 = alpha_k theta + delta_k) enter log L through
    the two weighted scores ``Yl @ [alpha, delta]``; the other items (3PL, GRM)
    through ``Yn @ (log P_k - log P_0)`` over the nodes.  ``Yl``/``Yn`` hold the
    indicators of categories >= 1, ``col_start[j]`` is item j's first column in
    its block.  ``w`` = frequency x sample weights; ``booklet`` the missingness
    pattern id with observed indicators ``B`` (or dense ``O`` when patterns are
    many); ``inverse`` maps original rows to design rows.
    """

    x: np.ndarray
    w: np.ndarray
    n_cat: np.ndarray
    linear: np.ndarray
    Yl: np.ndarray
    Yn: np.ndarray
    col_start: np.ndarray
    booklet: np.ndarray
    B: np.ndarray
    O: np.ndarray | None
    inverse: np.ndarray
    w2: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return self.x.shape[0]

    @property
    def n_items(self) -> int:
        return self.x.shape[1]


def build_design(
    x: np.ndarray,
    weights: np.ndarray,
    n_cat: np.ndarray,
    linear: np.ndarray | None = None,
    *,
    collapse: bool | None = None,
    max_booklets: int | None = None,
) -> Design:
    """Build the indicator design (see :class:`Design`).  Rows are collapsed to
    distinct patterns when that pays off (``collapse=None``) and sorted by booklet."""
    n0, J = x.shape
    n_cat = np.asarray(n_cat, dtype=np.int64)
    linear = np.zeros(J, bool) if linear is None else np.asarray(linear, bool)
    inverse = np.arange(n0)
    w2 = None
    if collapse is None or collapse:
        res = collapse_patterns(x, weights, force=bool(collapse))
        if res is not None:
            x, weights_c, inverse = res
            w2 = np.bincount(inverse, weights=np.asarray(weights) ** 2, minlength=x.shape[0])
            weights = weights_c
    n = x.shape[0]
    obs = ~np.isnan(x)
    complete = bool(obs.all())
    if complete:
        bid = np.zeros(n, dtype=np.int64)
        B = np.ones((1, J))
    else:
        keys = _row_keys(obs.astype(np.int8))
        _, first, bid = np.unique(keys, return_index=True, return_inverse=True)
        B = obs[first].astype(float)
        if not (B[bid] == obs).all():  # hash collision: one pattern per row
            B = obs.astype(float)
            bid = np.arange(n)
    if max_booklets is None:
        max_booklets = max(64, n // 8)
    weights = np.asarray(weights, float)
    if not complete:
        order = np.argsort(bid, kind="stable")
        x = x[order]
        weights = weights[order]
        if w2 is not None:
            w2 = w2[order]
        bid = bid[order]
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        inverse = pos[inverse]
    O = (~np.isnan(x)).astype(float) if B.shape[0] > max_booklets else None
    xi = x if complete else np.where(np.isnan(x), 0.0, x)
    col_start = np.zeros(J, dtype=np.int64)
    blocks = {}
    for flag in (True, False):
        idx = np.flatnonzero(linear == flag)
        width = int((n_cat[idx] - 1).sum())
        Y = np.zeros((n, width))
        c = 0
        for j in idx:
            col_start[j] = c
            c += n_cat[j] - 1
        dich = idx[n_cat[idx] == 2]
        if dich.size:
            Y[:, col_start[dich]] = xi[:, dich] == 1
        for j in idx[n_cat[idx] > 2]:
            rows = np.flatnonzero(xi[:, j] > 0)
            Y[rows, col_start[j] + xi[rows, j].astype(np.int64) - 1] = 1.0
        blocks[flag] = Y
    return Design(
        x=x, w=weights, n_cat=n_cat, linear=linear, Yl=blocks[True], Yn=blocks[False], col_start=col_start,
        booklet=bid, B=B, O=O, inverse=inverse, w2=w2,
    )


# ----------------------------------------------------------------------------- threads
_POOL = None
_N_THREADS = max(1, min(os.cpu_count() or 1, 4))


def _pool():
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_N_THREADS, thread_name_prefix="qualmon-estep")
    return _POOL


@contextmanager
def blas_single_thread():
    """Pin BLAS to one thread (chunks are run in parallel by our own thread pool;
    multithreaded BLAS on small tall matrices is slower and degrades badly under load)."""
    try:
        from threadpoolctl import threadpool_limits
    except Exception:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _chunks(n: int, size: int = _CHUNK) -> list[tuple[int, int]]:
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def map_chunks(fn, n: int, size: int = _CHUNK) -> list:
    """Apply ``fn(s, e)`` to row chunks, in parallel threads when there are several."""
    ch = _chunks(n, size)
    if len(ch) <= 1 or _N_THREADS == 1:
        return [fn(s, e) for s, e in ch]
    return list(_pool().map(lambda se: fn(*se), ch))


# ----------------------------------------------------------------------------- E-step
@dataclass
class Terms:
    """Item terms at the nodes for one E-step: ``coef`` (Cl, 2) = [alpha, delta] of
    the linear block, ``Dn`` (Cn, q) = log P_k - log P_0 of the other block,
    ``bpart`` (n_booklets, q) = sum over presented items of log P_0 plus the log
    prior (or ``base`` (J, q) with dense ``O``), ``theta`` the nodes."""

    coef: np.ndarray
    Dn: np.ndarray
    base: np.ndarray
    bpart: np.ndarray | None
    log_prior: np.ndarray
    theta: np.ndarray
    hull: list | None = None  # per booklet (breaks, vertex index) when the fast path applies

    @property
    def fast(self) -> bool:
        return self.hull is not None


def _upper_hull(theta: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper convex hull of the points (theta_q, b_q): vertex indices and the slopes
    between consecutive vertices.  max_q (S theta_q + b_q) is attained at vertex
    ``v[searchsorted(-slopes, S)]`` (exact for any b)."""
    v: list[int] = []
    for q in range(len(theta)):
        while len(v) >= 2:
            i, k = v[-2], v[-1]
            # k is not on the upper hull if it lies on/below the segment i -> q
            if (b[k] - b[i]) * (theta[q] - theta[i]) <= (b[q] - b[i]) * (theta[k] - theta[i]):
                v.pop()
            else:
                break
        v.append(q)
    vv = np.array(v)
    slopes = np.diff(b[vv]) / np.diff(theta[vv])  # decreasing
    return -slopes, vv  # breaks increasing: vertex k optimal for S in [-slope_{k-1}, -slope_k]


def _row_max(t: "Terms", S: np.ndarray, booklet: int) -> np.ndarray:
    breaks, vv = t.hull[booklet]
    k = vv[np.searchsorted(breaks, S)]
    return S * t.theta[k] + t.bpart[booklet, k]


def make_terms(
    design: Design, logp: Sequence[np.ndarray], lin: Sequence[tuple | None], theta: np.ndarray, log_prior: np.ndarray
) -> Terms:
    """Assemble :class:`Terms` from per-item log P (q, K_j) and logit-linear
    coefficients (alpha, delta) (K_j - 1,) for the linear items."""
    J = len(logp)
    q = len(theta)
    cl = design.Yl.shape[1]
    cn = design.Yn.shape[1]
    coef = np.zeros((cl, 2))
    Dn = np.zeros((cn, q))
    base = np.empty((J, q))
    for j in range(J):
        lp = logp[j]
        base[j] = lp[:, 0]
        c0 = design.col_start[j]
        K = lp.shape[1]
        if design.linear[j]:
            a, d = lin[j]
            coef[c0 : c0 + K - 1, 0] = a
            coef[c0 : c0 + K - 1, 1] = d
        else:
            Dn[c0 : c0 + K - 1] = (lp[:, 1:] - lp[:, :1]).T
    bpart = None
    hull = None
    if design.O is None:
        bpart = design.B @ base + log_prior
        if cn == 0 and bpart.shape[0] <= 256:
            hull = [_upper_hull(theta, bpart[k]) for k in range(bpart.shape[0])]
    return Terms(coef=coef, Dn=Dn, base=base, bpart=bpart, log_prior=log_prior, theta=theta, hull=hull)


def posterior_matrix(design: Design, t: Terms, s: int, e: int, row_slope: np.ndarray | None = None) -> np.ndarray:
    """Normalised posterior weights (rows s:e x nodes)."""
    if t.fast and (design.B.shape[0] == 1 or len(set(design.booklet[s:e].tolist())) == 1):
        E, _ = _fast_posterior(design, t, s, e, int(design.booklet[s]), row_slope)
    else:
        E = loglik_nodes(design, t, s, e, row_slope)
        E -= E.max(axis=1, keepdims=True)
        np.exp(E, out=E)
    E /= E.sum(axis=1, keepdims=True)
    return E


def finite_terms(t: Terms) -> bool:
    return bool(np.all(np.isfinite(t.coef)) and np.all(np.isfinite(t.Dn)) and np.all(np.isfinite(t.base)))


def loglik_nodes(design: Design, t: Terms, s: int, e: int, row_slope: np.ndarray | None = None) -> np.ndarray:
    """log L_iq + log pi_q (+ r_i theta_q) for design rows s:e (chunk x nodes)."""
    st = design.Yl[s:e] @ t.coef if t.coef.shape[0] else np.zeros((e - s, 2))
    S = st[:, 0] if row_slope is None else st[:, 0] + row_slope[s:e]
    L = np.multiply.outer(S, t.theta)
    L += st[:, 1:2]
    if t.Dn.shape[0]:
        L += design.Yn[s:e] @ t.Dn
    if t.bpart is not None:
        if t.bpart.shape[0] == 1:
            L += t.bpart[0]
        else:
            L += t.bpart[design.booklet[s:e]]
    else:
        L += design.O[s:e] @ t.base
        L += t.log_prior
    return L


def _fast_segments(design: Design, s: int, e: int):
    """Booklet segments (start, end, booklet) of the sorted rows s:e."""
    bk = design.booklet[s:e]
    if design.B.shape[0] == 1:
        return [(s, e, 0)]
    starts = np.flatnonzero(np.r_[True, bk[1:] != bk[:-1]])
    ends = np.r_[starts[1:], len(bk)]
    return [(s + a, s + b, int(bk[a])) for a, b in zip(starts, ends)]


def _fast_posterior(design: Design, t: Terms, s: int, e: int, b: int, row_slope: np.ndarray | None = None):
    """Unnormalised posterior exp(log L - max) for rows s:e of booklet b (fast path),
    with the row log-max ``m`` and the row constant ``T``: (E, m + T).
    ``row_slope`` adds r_i * theta_q to row i's log posterior (latent regression)."""
    st = design.Yl[s:e] @ t.coef
    S = st[:, 0] if row_slope is None else st[:, 0] + row_slope[s:e]
    m = _row_max(t, S, b)
    A = np.empty((e - s, 3))
    A[:, 0] = S
    A[:, 1] = 1.0
    A[:, 2] = -m
    G = np.empty((3, len(t.theta)))
    G[0] = t.theta
    G[1] = t.bpart[b]
    G[2] = 1.0
    L = A @ G
    np.exp(L, out=L)
    return L, m + st[:, 1]


def estep(design: Design, t: Terms, *, need_counts: bool = True):
    """One E-step: ``(loglik, Rl, Rn, Nb, Nq)``.

    loglik = sum_i w_i log sum_q pi_q L_iq; ``Rl``/``Rn`` expected counts of the
    categories >= 1 (columns x nodes); ``Nb`` node totals per booklet (or per item
    with dense ``O``) for the category-0 counts; ``Nq`` total mass per node.
    """
    q = len(t.theta)
    dense = t.bpart is None
    nb = design.O.shape[1] if dense else design.B.shape[0]

    def work_fast(s0, e0):
        ll = 0.0
        Rl = np.zeros((design.Yl.shape[1], q)) if need_counts else None
        Nb = np.zeros((nb, q))
        for s, e, b in _fast_segments(design, s0, e0):
            E, mt = _fast_posterior(design, t, s, e, b)
            tot = E.sum(axis=1)
            w = design.w[s:e]
            ll += float(w @ (mt + np.log(tot)))
            sc = w / tot
            Nb[b] += sc @ E
            if need_counts:
                Rl += (design.Yl[s:e] * sc[:, None]).T @ E
        Nq = Nb.sum(axis=0)
        return ll, Rl, np.zeros((0, q)), Nb, Nq

    def work(s, e):
        L = loglik_nodes(design, t, s, e)
        m = L.max(axis=1)
        L -= m[:, None]
        np.exp(L, out=L)
        tot = L.sum(axis=1)
        w = design.w[s:e]
        ll = float(w @ (m + np.log(tot)))
        sc = w / tot
        Nq = sc @ L
        if not need_counts:
            return ll, None, None, None, Nq
        Rl = (design.Yl[s:e] * sc[:, None]).T @ L
        Rn = (design.Yn[s:e] * sc[:, None]).T @ L
        if dense:
            Nb = (design.O[s:e] * sc[:, None]).T @ L
        elif nb == 1:
            Nb = Nq[None, :].copy()
        else:
            bk = design.booklet[s:e]
            starts = np.flatnonzero(np.r_[True, bk[1:] != bk[:-1]])
            L *= sc[:, None]
            sums = np.add.reduceat(L, starts, axis=0)
            Nb = np.zeros((nb, q))
            Nb[bk[starts]] += sums  # booklets are contiguous: no repeats within a chunk
        return ll, Rl, Rn, Nb, Nq

    parts = map_chunks(work_fast if t.fast else work, design.n_rows)
    ll = sum(p[0] for p in parts)
    Nq = sum(p[4] for p in parts)
    if not need_counts:
        return ll, None, None, None, Nq
    Rl = sum(p[1] for p in parts)
    Rn = sum(p[2] for p in parts)
    Nb = sum(p[3] for p in parts)
    return ll, Rl, Rn, Nb, Nq


def item_counts(design: Design, Rl: np.ndarray, Rn: np.ndarray, Nb: np.ndarray) -> list[np.ndarray]:
    """Per-item expected counts (q, K_j) from the E-step output."""
    Nj = Nb if design.O is not None else design.B.T @ Nb  # (J, q)
    out = []
    for j, K in enumerate(design.n_cat):
        c0 = design.col_start[j]
        R = Rl if design.linear[j] else Rn
        rk = R[c0 : c0 + K - 1].T
        r0 = Nj[j] - rk.sum(axis=1)
        out.append(np.column_stack([np.maximum(r0, 0.0), rk]))
    return out


def posterior_moments(
    design: Design, t: Terms, row_slope: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per design row: posterior mean, posterior SD and log marginal likelihood
    (log sum_q L_iq pi_q exp(r_i theta_q), with ``row_slope`` r)."""
    n = design.n_rows
    mean = np.empty(n)
    sd = np.empty(n)
    lml = np.empty(n)
    theta = t.theta
    tc = theta - theta.mean()
    T2 = np.column_stack([np.ones_like(theta), tc, tc**2])

    def fill(s, e, E, m):
        M = E @ T2
        tot = M[:, 0]
        m1 = M[:, 1] / tot
        mean[s:e] = m1 + theta.mean()
        sd[s:e] = np.sqrt(np.maximum(M[:, 2] / tot - m1**2, 0.0))
        lml[s:e] = m + np.log(tot)

    def work(s0, e0):
        if t.fast:
            for s, e, b in _fast_segments(design, s0, e0):
                E, mt = _fast_posterior(design, t, s, e, b, row_slope)
                fill(s, e, E, mt)
            return
        L = loglik_nodes(design, t, s0, e0, row_slope)
        m = L.max(axis=1)
        L -= m[:, None]
        np.exp(L, out=L)
        fill(s0, e0, L, m)

    map_chunks(work, n)
    return mean, sd, lml
