"""Design-based estimation: survey designs and every estimator on them.

Two design classes, in the spirit of R's survey package (T. Lumley,
*Complex Surveys*, Wiley 2010):

* :class:`Design` -- ``svydesign``: strata, multistage clusters, finite
  population corrections; variances by Taylor linearisation exactly as
  ``svyrecvar`` computes them (with-replacement "ultimate cluster" variance
  when no fpc is given, the full multistage formula when an fpc is given at
  every stage, lonely PSUs as ``options(survey.lonely.psu)``, certainty PSUs
  contributing no first-stage variance).
* :class:`ReplicateDesign` -- ``svrepdesign``: full-sample weights plus R
  replicate weights held as one contiguous (n x (1+R)) float64 array;
  variance ``scale * sum_r rscales_r (theta_r - centre)^2`` with centre the
  mean of the replicates, or the full-sample estimate when ``mse=True``.

Both offer ``mean``, ``total``, ``proportion``, ``ratio``, ``quantile`` and
``regress`` with ``by=`` (domains), ``na_rm=``, plus ``subset``,
``poststratify`` and ``calibrate``.  Every estimator returns a tidy
DataFrame with columns ``variable``, the ``by`` columns, (``level``),
``estimate``, ``se``, ``ci_low``, ``ci_high``, ``n`` and ``deff``.

Domains are estimated as R does (``svyby`` / ``subset``): the domain is a
subset that keeps every PSU of the design, rows outside it contributing
zero, so the variance formula sees the full design.

Linearised variables (Binder 1983; Woodruff 1971):
    total      z_i = w_i y_i
    mean       z_i = w_i (y_i - ybar) / sum(w)
    ratio      z_i = w_i (y_i - R x_i) / sum(w x)
    regression z_i = w_i e_i x_i' (X'WX)^{-1}
and for a design calibrated to totals (``calibrate``/``poststratify``) each
z is replaced by the residual of its regression on the calibration
variables, as ``svyrecvar`` does with the ``postStrata`` of a design.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse, stats

from qualmon.sampling import replicates as _rep

__all__ = [
    "DesignError",
    "Design",
    "ReplicateDesign",
    "combine_plausible",
]

LONELY_PSU = ("fail", "remove", "adjust", "average", "certainty")


class _Ones:
    """Marker for a denominator of 1 on every row (plain means)."""


_ONES = _Ones()


class DesignError(ValueError):
    """Bad input to a survey design or an estimator."""


# ==========================================================================
# small helpers
# ==========================================================================


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        return [x]
    return list(x)


def _rows(mask: np.ndarray, k: int = 10) -> list[int]:
    return np.flatnonzero(mask)[:k].tolist()


def _column_values(data: pd.DataFrame, spec, what: str, allow_na: bool = False) -> np.ndarray:
    """Values of a design column given by name, array or scalar."""
    n = len(data)
    if isinstance(spec, str):
        if spec not in data.columns:
            raise DesignError(f"{what}: column {spec!r} is not in the data")
        s = data[spec]
        name = spec
    elif np.isscalar(spec):
        return np.full(n, spec)
    else:
        arr = np.asarray(spec)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise DesignError(f"{what}: expected {n} values (one per row), got shape {arr.shape}")
        s = pd.Series(arr)
        name = "<array>"
    if not allow_na and s.isna().any():
        bad = s.isna().to_numpy()
        raise DesignError(
            f"{what}: column {name!r} has missing values in rows {_rows(bad)} "
            f"({int(bad.sum())} in all); every row needs a {what} value"
        )
    return s.to_numpy()


def _numeric(values, what: str, name) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DesignError(f"{what}: column {name!r} must be numeric") from exc


def _float_series(s: pd.Series, what: str, name) -> np.ndarray:
    """A column as float64 with NaN for missing values (DesignError if not numeric)."""
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DesignError(f"{what}: column {name!r} must be numeric, it holds {s.dtype}") from exc


def _factorize(values, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(values), sort=sort)
    return codes.astype(np.int64), np.asarray(uniques)


def _factorize_pair(a: np.ndarray, b) -> np.ndarray:
    """Codes of the pairs (a, b) in order of first appearance."""
    bc, _ = _factorize(b)
    key = a.astype(np.int64) * (int(bc.max()) + 1 if bc.size else 1) + bc
    codes, _ = pd.factorize(key, sort=False)
    return codes.astype(np.int64)


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def _levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return list(s.cat.categories)
    vals = pd.unique(s.dropna())
    try:
        return sorted(vals.tolist())
    except TypeError:
        return sorted(vals.tolist(), key=str)


def _level_label(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    return str(v)


def _longdouble_cumsum(w: np.ndarray) -> np.ndarray:
    return np.cumsum(w.astype(np.longdouble))


# ==========================================================================
# formulas (small R-like parser for regress and calibrate)
# ==========================================================================


def _split_top(s: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _parse_rhs(rhs: str) -> tuple[list[str], bool]:
    """Terms of an additive R formula right-hand side and whether it has an intercept."""
    rhs = rhs.replace(" ", "")
    intercept = True
    # handle '-1' / '-0' and '+0'
    rhs = re.sub(r"-\s*1(?![\w.])", "+__NOINT__", rhs)
    parts = [p for p in _split_top(rhs, "+") if p != ""]
    terms: list[str] = []
    for p in parts:
        if p in ("__NOINT__", "0"):
            intercept = False
            continue
        if p == "1":
            continue
        if "*" in p and not p.startswith(("I(", "C(")):
            facs = _split_top(p, "*")
            # all main effects and interactions, R order: a, b, a:b
            for r in range(1, len(facs) + 1):
                for combo in itertools.combinations(facs, r):
                    t = ":".join(combo)
                    if t not in terms:
                        terms.append(t)
            continue
        if p not in terms:
            terms.append(p)
    return terms, intercept


def _term_columns(data: pd.DataFrame, factor: str):
    """Columns for one factor of a term: (list of arrays, list of names, is_categorical, levels)."""
    if factor.startswith("C(") and factor.endswith(")"):
        name = factor[2:-1]
        if name not in data.columns:
            raise DesignError(f"formula: column {name!r} is not in the data")
        s = data[name].astype(object).where(data[name].notna())
        return s, factor, True
    if factor.startswith("I(") and factor.endswith(")"):
        expr = factor[2:-1]
        try:
            s = data.eval(expr)
        except Exception as exc:  # pragma: no cover - pandas error text is enough
            raise DesignError(f"formula: cannot evaluate {factor!r}: {exc}") from exc
        s = pd.Series(np.asarray(s), index=data.index)
        return s, factor, _is_categorical(s)
    if factor not in data.columns:
        raise DesignError(f"formula: column {factor!r} is not in the data (columns: {list(data.columns)[:15]} ...)")
    s = data[factor]
    return s, factor, _is_categorical(s)


def _model_matrix(data: pd.DataFrame, terms: list[str], intercept: bool):
    """Model matrix with R's treatment coding and R's column names.

    Rows with a missing value in any used column get NaN in every column.
    """
    n = len(data)
    cols: list[np.ndarray] = []
    names: list[str] = []
    missing = np.zeros(n, dtype=bool)
    if intercept:
        cols.append(np.ones(n))
        names.append("(Intercept)")
    full_rank_used = intercept  # whether a factor must drop its first level
    for term in terms:
        factors = term.split(":")
        pieces = []
        for fac in factors:
            s, label, is_cat = _term_columns(data, fac)
            na = pd.isna(s).to_numpy()
            missing |= na
            if is_cat:
                lev = _levels(s)
                drop_first = full_rank_used or len(factors) > 1
                use = lev[1:] if drop_first else lev
                vals = s.to_numpy()
                mats = [(vals == lv).astype(float) for lv in use]
                nm = [f"{label}{_level_label(lv)}" for lv in use]
                pieces.append((mats, nm))
                if len(factors) == 1:
                    full_rank_used = True
            else:
                pieces.append(([_float_series(s, "formula", label)], [label]))
        # product of the pieces
        mats, nms = pieces[0]
        for m2, n2 in pieces[1:]:
            mats = [a * b for a in mats for b in m2]
            nms = [f"{x}:{y}" for x in nms for y in n2]
        cols.extend(mats)
        names.extend(nms)
    if not cols:
        raise DesignError("formula has no terms")
    X = np.column_stack(cols).astype(np.float64)
    X[missing, :] = np.nan
    return X, names


def _parse_formula(formula: str) -> tuple[str | None, list[str], bool]:
    if "~" not in formula:
        raise DesignError(f"formula {formula!r} has no '~'")
    lhs, rhs = formula.split("~", 1)
    lhs = lhs.strip() or None
    terms, intercept = _parse_rhs(rhs)
    return lhs, terms, intercept


# ==========================================================================
# linearised values with domain structure
# ==========================================================================


@dataclass
class _Lin:
    """Linearised values: column (j, d) of the implied (n x k*D) matrix is
    ``vals[:, j] * (dom == d)``, plus low-rank corrections sum_c L_c @ C_c
    (L_c an (n x q) matrix, C_c a (q, D, k) array) left by calibration."""

    vals: np.ndarray  # (n, k)
    dom: np.ndarray  # (n,) int in [0, D)
    D: int
    lowrank: list = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.vals.shape[1]

    def unit_totals(self, unit: np.ndarray, n_units: int) -> np.ndarray:
        """(n_units, D, k) totals of every column within each unit."""
        D, k = self.D, self.k
        out = np.empty((n_units, D, k))
        if D == 1:
            for j in range(k):
                out[:, 0, j] = np.bincount(unit, weights=self.vals[:, j], minlength=n_units)
        else:
            key = unit * D + self.dom
            for j in range(k):
                out[:, :, j] = np.bincount(key, weights=self.vals[:, j], minlength=n_units * D).reshape(n_units, D)
        for L, C in self.lowrank:
            UL = np.column_stack([np.bincount(unit, weights=L[:, c], minlength=n_units) for c in range(L.shape[1])])
            out += np.einsum("uq,qdk->udk", UL, C)
        return out

    def domain_cross(self, M: np.ndarray) -> np.ndarray:
        """(p, D, k) array of sum_i M[i, :] * Z[i, (j, d)] for an (n x p) matrix M."""
        p = M.shape[1]
        out = np.empty((p, self.D, self.k))
        for j in range(self.k):
            Mv = M * self.vals[:, j : j + 1]
            if self.D == 1:
                out[:, 0, j] = Mv.sum(axis=0)
            else:
                for c in range(p):
                    out[c, :, j] = np.bincount(self.dom, weights=Mv[:, c], minlength=self.D)
        for L, C in self.lowrank:
            out += np.einsum("pq,qdk->pdk", M.T @ L, C)
        return out


def _residualise(lin: _Lin, caldata: list) -> _Lin:
    """Replace linearised values by calibration residuals (svyrecvar's postStrata step).

    For each calibration (in order): z <- z - (Q * wq) Q' (z / wq), with Q an
    orthonormal basis of the scaled calibration matrix and wq = g sqrt(w0) sigma.
    """
    for Q, wq in caldata:
        proj = lin.domain_cross(Q / wq[:, None])  # (p, D, k)
        lin = _Lin(lin.vals, lin.dom, lin.D, lin.lowrank + [(Q * wq[:, None], -proj)])
    return lin


# ==========================================================================
# Taylor-linearisation variance (R's svyrecvar / multistage / onestage)
# ==========================================================================


@dataclass
class _Stage:
    unit: np.ndarray  # (n,) unit code of each row; units contiguous by stratum
    n_units: int
    stratum: np.ndarray  # (n_units,) stratum code of each unit (non-decreasing)
    starts: np.ndarray  # (n_strata,) first unit of each stratum
    n_h: np.ndarray  # (n_strata,) units per stratum (design count)
    f: np.ndarray  # (n_units,) 1 - n/N (1 without fpc)
    group: np.ndarray  # (n_strata,) parent unit (previous stage) of each stratum
    n_groups: int
    mult: np.ndarray  # (n_units,) product of n/N over earlier stages
    certain: np.ndarray  # (n_strata,) all f < 1e-7
    labels: np.ndarray  # (n_strata,) a label for messages
    popsize: np.ndarray | None  # (n_units,) N (None without fpc)


def _stage_variance(st: _Stage, U: np.ndarray, lonely_psu: str, full: bool, stage_no: int):
    """Variance contribution of one stage from unit totals U (n_units, D, k)."""
    H = st.n_h.size
    sums = np.add.reduceat(U, st.starts, axis=0) if U.shape[0] else np.zeros((H,) + U.shape[1:])
    nh = st.n_h.astype(np.float64)
    centre = sums / nh[:, None, None]
    lonely = (st.n_h == 1) & ~st.certain
    if lonely.any():
        if lonely_psu == "fail":
            h = int(np.flatnonzero(lonely)[0])
            raise DesignError(
                f"stratum {st.labels[h]!r} has only one PSU at stage {stage_no}; set lonely_psu to "
                "'remove', 'certainty', 'adjust' or 'average' (R's options(survey.lonely.psu))"
            )
        if lonely_psu == "adjust":
            # centre lonely strata at the mean PSU total of their group (R's recentering)
            gsum = np.zeros((st.n_groups,) + U.shape[1:])
            np.add.at(gsum, st.group[st.stratum], U)
            gn = np.bincount(st.group, weights=nh, minlength=st.n_groups)
            centre[lonely] = gsum[st.group[lonely]] / gn[st.group[lonely]][:, None, None]
    C = U - centre[st.stratum]
    scale_h = np.where(st.n_h > 1, nh / np.maximum(nh - 1.0, 1.0), 1.0)
    s = st.f * scale_h[st.stratum] * st.mult
    s = np.where(st.certain[st.stratum], 0.0, s)
    if lonely.any() and lonely_psu == "average":
        n_strata_g = np.bincount(st.group, minlength=st.n_groups).astype(float)
        n_lonely_g = np.bincount(st.group, weights=lonely.astype(float), minlength=st.n_groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = n_strata_g / (n_strata_g - n_lonely_g)
        s = s * fac[st.group[st.stratum]]
        s = np.where(lonely[st.stratum], 0.0, s)
    if full:
        return np.einsum("u,udi,udj->dij", s, C, C)
    return np.einsum("u,udk->dk", s, C * C)


# ==========================================================================
# shared estimator front end
# ==========================================================================


_Z_CACHE: dict = {}


def _z(level: float) -> float:
    if level not in _Z_CACHE:
        if not 0 < level < 1:
            raise DesignError(f"level must be in (0, 1), got {level}")
        _Z_CACHE[level] = float(stats.norm.ppf(0.5 + level / 2.0))
    return _Z_CACHE[level]


class _DesignBase:
    """Estimators shared by Design and ReplicateDesign.

    Subclasses provide ``_weights`` (full-sample weights), ``_ratio_core`` /
    ``_total_core`` (estimate and variance of ratios of domain totals),
    ``_regress_core``, ``_degf(rows)`` and ``_with_mask``.
    """

    def __repr__(self) -> str:
        return self._describe()

    def _repr_html_(self) -> str:
        txt = self._describe().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f"<pre>{txt}</pre>" + self.summary().to_html(index=False)

    _data: pd.DataFrame
    _w: np.ndarray
    _mask: np.ndarray | None

    # ---------------------------------------------------------------- basics
    @property
    def data(self) -> pd.DataFrame:
        """The design's data (a shallow copy: editing it does not change the design)."""
        return self._data.copy(deep=False)

    @property
    def weights(self) -> np.ndarray:
        """Full-sample weights (zero outside a subset)."""
        w = self._w
        return w if self._mask is None else np.where(self._mask, w, 0.0)

    def __len__(self) -> int:
        return len(self._data)

    def _inmask(self) -> np.ndarray:
        return np.ones(len(self._data), dtype=bool) if self._mask is None else self._mask

    # --------------------------------------------------------------- subset
    def subset(self, mask) -> "_DesignBase":
        """Domain restriction that keeps the whole design (R's ``subset``).

        ``mask``: boolean array/Series (one per row), a callable taking the
        data and returning one, or a ``DataFrame.eval`` expression string.
        Rows outside contribute zero to every estimate; PSU counts, strata
        and fpc stay those of the full design.
        """
        if callable(mask):
            mask = mask(self._data)
        elif isinstance(mask, str):
            mask = self._data.eval(mask)
        m = pd.Series(mask).to_numpy() if not isinstance(mask, np.ndarray) else mask
        if m.shape != (len(self._data),):
            raise DesignError(f"subset: mask has shape {m.shape}, expected ({len(self._data)},)")
        m = pd.Series(m).fillna(False).to_numpy().astype(bool)
        return self._with_mask(m if self._mask is None else (m & self._mask))

    # -------------------------------------------------------------- domains
    def _domain_info(self, by) -> dict:
        """Domain codes for ``by`` (cached per design object).

        Returns dict(dom: (n,) codes with -1 outside the subset or for missing
        ``by`` values, domz: codes with -1 replaced by 0, D, keys: DataFrame of
        the D domains (sorted), inall: every row is in the subset and in a
        domain, count: (D,) rows with nonzero weight per domain).
        """
        by = tuple(_as_list(by))
        cache = self.__dict__.setdefault("_dom_cache", {})
        if by in cache:
            return cache[by]
        n = len(self._data)
        inm = self._inmask()
        if not by:
            dom = np.zeros(n, dtype=np.int64)
            if self._mask is not None:
                dom = np.where(inm, 0, -1)
            keys = pd.DataFrame(index=[0])
            D = 1
        else:
            for b in by:
                if b not in self._data.columns:
                    raise DesignError(f"by: column {b!r} is not in the data")
            codes_l, uniq_l = [], []
            for b in by:
                c, u = pd.factorize(self._data[b], sort=True, use_na_sentinel=True)
                codes_l.append(c.astype(np.int64))
                uniq_l.append(u)
            if len(by) == 1:
                comb = codes_l[0]
            else:
                comb = np.zeros(n, dtype=np.int64)
                bad = np.zeros(n, dtype=bool)
                for c, u in zip(codes_l, uniq_l):
                    comb = comb * (len(u) + 1) + np.maximum(c, 0)
                    bad |= c < 0
                comb = np.where(bad, -1, comb)
            comb = np.where(inm, comb, -1)
            present = np.unique(comb[comb >= 0])
            D = int(present.size)
            remap = np.full(int(comb.max()) + 2 if comb.size else 1, -1, dtype=np.int64)
            remap[present] = np.arange(D)
            dom = np.where(comb >= 0, remap[np.maximum(comb, 0)], -1)
            # keys: decode the combined codes back into the by values
            rec = {}
            rem = present.copy()
            for c, u, b in reversed(list(zip(codes_l, uniq_l, by))):
                if len(by) == 1:
                    rec[b] = np.asarray(u)[rem]
                else:
                    rec[b] = np.asarray(u)[rem % (len(u) + 1)]
                    rem = rem // (len(u) + 1)
            keys = pd.DataFrame({b: rec[b] for b in by})
        domz = np.where(dom >= 0, dom, 0)
        count = np.bincount(domz, weights=((dom >= 0) & (self._w != 0)).astype(float), minlength=D)
        info = dict(dom=dom, domz=domz, D=D, keys=keys, inall=bool((dom >= 0).all()), count=count, by=list(by))
        cache[by] = info
        return info

    def _domain_wsum(self, info) -> np.ndarray:
        """(D,) full-sample weight total of each domain (cached)."""
        if "wsum" not in info:
            info["wsum"] = np.bincount(info["domz"], weights=np.where(info["dom"] >= 0, self._w, 0.0),
                                       minlength=info["D"])
        return info["wsum"]

    def _domains(self, by) -> tuple[np.ndarray, int, pd.DataFrame]:
        info = self._domain_info(by)
        return info["dom"], info["D"], info["keys"]

    # ----------------------------------------------------------- variables
    def _variable_columns(self, variables, categorical: bool | None = None):
        """Expand variables into numeric columns.

        Returns a list of (variable, level or None, values) with NaN missing.
        Non-numeric (or ``categorical=True``) variables give one indicator per
        level (R's treatment of factors in svymean/svytotal).
        """
        out = []
        for v in _as_list(variables):
            if v not in self._data.columns:
                raise DesignError(f"variable {v!r} is not in the data (columns: {list(self._data.columns)[:15]} ...)")
            s = self._data[v]
            cat = _is_categorical(s) if categorical is None else categorical
            if cat:
                na = s.isna().to_numpy()
                vals = s.to_numpy()
                for lv in _levels(s):
                    ind = (vals == lv).astype(np.float64)
                    ind[na] = np.nan
                    out.append((v, lv, ind))
            else:
                out.append((v, None, _float_series(s, "variable", v)))
        if not out:
            raise DesignError("no variable given")
        return out

    # ------------------------------------------------------------- assembly
    def _frame(self, cols, keys: pd.DataFrame, by, est, se, n, deff, level: float, lo=None, hi=None,
               extra: dict | None = None) -> pd.DataFrame:
        """Tidy output: one row per (column j, domain d)."""
        k, D = est.shape
        z = _z(level)
        if lo is None:
            lo = est - z * se
            hi = est + z * se
        rec = {"variable": np.repeat([c[0] for c in cols], D)}
        by = _as_list(by)
        for b in by:
            rec[b] = np.tile(keys[b].to_numpy(), k)
        if any(c[1] is not None for c in cols):
            rec["level"] = np.repeat(np.array([c[1] for c in cols], dtype=object), D)
        rec.update(
            estimate=est.ravel(),
            se=se.ravel(),
            ci_low=np.asarray(lo).ravel(),
            ci_high=np.asarray(hi).ravel(),
            n=n.ravel().astype(np.int64),
            deff=deff.ravel(),
        )
        if extra:
            for key, val in extra.items():
                rec[key] = np.asarray(val).ravel()
        return pd.DataFrame(rec)

    # ------------------------------------------------------------ inclusion
    def _prepare(self, arrays: list[np.ndarray], by, na_rm: bool):
        """Common preparation: domain codes, inclusion and zero-filled values."""
        info = self._domain_info(by)
        dom, D, keys, domz = info["dom"], info["D"], info["keys"], info["domz"]
        X = np.column_stack(arrays) if arrays else np.zeros((len(self._data), 0))
        nan = np.isnan(X)
        if info["inall"]:
            incl = ~nan
        else:
            incl = (dom >= 0)[:, None] & ~nan
        nan_in = self._nan_domains(nan, dom, D, na_rm)
        Xz = np.where(incl, X, 0.0)
        return Xz, incl, domz, D, keys, nan_in

    @staticmethod
    def _nan_domains(nan: np.ndarray, dom: np.ndarray, D: int, na_rm: bool) -> np.ndarray:
        """(k, D): domains where a column has a missing value (estimate NaN unless na_rm)."""
        k = nan.shape[1]
        out = np.zeros((k, D), dtype=bool)
        if na_rm or not nan.any():
            return out
        for j in range(k):
            bad = nan[:, j] & (dom >= 0)
            if bad.any():
                out[j, np.unique(dom[bad])] = True
        return out

    def _counts(self, incl: np.ndarray, dom: np.ndarray, D: int) -> np.ndarray:
        w = self._w
        k = incl.shape[1]
        out = np.empty((k, D))
        pos = w != 0
        for j in range(k):
            out[j] = np.bincount(dom, weights=(incl[:, j] & pos).astype(float), minlength=D)
        return out

    def _wsum(self, x: np.ndarray, dom: np.ndarray, D: int) -> np.ndarray:
        """(k, D) weighted domain sums of the columns of x (full-sample weights)."""
        w = self._w
        k = x.shape[1]
        out = np.empty((k, D))
        for j in range(k):
            # einsum, not BLAS dot: threaded BLAS on long vectors stalls on busy machines
            out[j] = np.bincount(dom, weights=w * x[:, j], minlength=D) if D > 1 else np.einsum("i,i->", w, x[:, j])
        return out

    @staticmethod
    def _deff_from_sums(kind, var, psum, s1, s2, nobs, deff_type):
        """R's design effect from weighted sums of x within domains.

        svyvar = (sum w x^2 - (sum w x)^2 / sum w) / sum w * n/(n-1);
        mean: V_srs = svyvar / n; total: svyvar * N^2 / n; times (N-n)/N for
        R's ``deff=TRUE`` ("srswor"), not for ``deff="replace"`` ("srswr"),
        with N the sum of weights and n the rows with nonzero weight.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            sv = (s2 - s1 * s1 / psum) / psum * nobs / (nobs - 1.0)
            vsrs = sv / nobs if kind == "mean" else sv * psum**2 / nobs
            if deff_type == "srswor":
                vsrs = vsrs * (psum - nobs) / psum
            elif deff_type != "srswr":
                raise DesignError(
                    f"deff_type must be 'srswor' (R's deff=TRUE) or 'srswr' (deff='replace'), got {deff_type!r}"
                )
            return var / vsrs

    # ================================================================ means
    def _ratio_like(self, cols, den_cols, by, na_rm, level, kind, deff_type):
        """Estimates of ratios of domain totals sum(w y)/sum(w x), means
        (x = 1) or totals, for k columns and D domains.

        Returns est, se, nobs, deff (each (k, D)) and the domain keys.
        """
        info = self._domain_info(by)
        dom, domz, D, keys = info["dom"], info["domz"], info["D"], info["keys"]
        k = len(cols)
        Y = cols[0][2][:, None] if k == 1 else np.column_stack([c[2] for c in cols])
        valid = ~np.isnan(Y)
        if kind == "ratio":
            Xd = den_cols[0][:, None] if k == 1 else np.column_stack(den_cols)
            valid &= ~np.isnan(Xd)
        anynan = not valid.all()
        nan_in = self._nan_domains(~valid, dom, D, na_rm) if anynan else np.zeros((k, D), dtype=bool)
        if info["inall"]:
            incl = valid
            allin = not anynan
        else:
            incl = valid & (dom >= 0)[:, None]
            allin = False
        Yz = Y if allin else np.where(incl, Y, 0.0)
        if kind == "ratio":
            den = Xd if allin else np.where(incl, Xd, 0.0)
        elif kind == "mean":
            den = _ONES if allin else incl.astype(np.float64)
        else:
            den = None
        res = self._ratio_core(Yz, den, domz, D, kind, info)
        theta, var = res["theta"], res["var"]
        # design effects
        if allin:
            nobs = np.broadcast_to(info["count"], (k, D))
        else:
            nobs = self._counts(incl, domz, D)
        if kind == "ratio":
            r = res["lin"]
            psum = self._wsum(incl.astype(np.float64), domz, D) if not allin else np.broadcast_to(
                self._domain_wsum(info), (k, D))
            s1 = self._wsum(r, domz, D)
            s2 = self._wsum(r * r, domz, D)
            deff = self._deff_from_sums("total", var, psum, s1, s2, nobs, deff_type)
        else:
            if kind == "mean":
                psum = np.broadcast_to(res["den"], (k, D))
            else:
                psum = (np.broadcast_to(self._domain_wsum(info), (k, D)) if allin
                        else self._wsum(incl.astype(np.float64), domz, D))
            s1 = res["num"]
            s2 = self._wsum(Yz * Yz, domz, D)
            deff = self._deff_from_sums(kind, var, psum, s1, s2, nobs, deff_type)
        se = np.sqrt(np.maximum(var, 0.0))
        if nan_in.any():
            theta = np.where(nan_in, np.nan, theta)
            se = np.where(nan_in, np.nan, se)
            deff = np.where(nan_in, np.nan, deff)
        return theta, se, np.asarray(nobs), deff, keys

    def mean(self, variable, by=None, na_rm: bool = False, level: float = 0.95, pv: bool = False,
             deff_type: str = "srswor") -> pd.DataFrame:
        """Weighted mean (ratio of weighted totals) with design-based SE (R's ``svymean``).

        A non-numeric variable gives the proportion in each level.  With
        ``pv=True`` the variables are plausible values of one measure and the
        result is combined by Rubin's rules (:func:`combine_plausible`).
        """
        if pv:
            return self._pv("mean", variable, by=by, na_rm=na_rm, level=level, deff_type=deff_type)
        cols = self._variable_columns(variable)
        est, se, n, deff, keys = self._ratio_like(cols, None, by, na_rm, level, "mean", deff_type)
        return self._frame(cols, keys, by, est, se, n, deff, level)

    def total(self, variable, by=None, na_rm: bool = False, level: float = 0.95, pv: bool = False,
              deff_type: str = "srswor") -> pd.DataFrame:
        """Weighted total sum(w y) with design-based SE (R's ``svytotal``)."""
        if pv:
            return self._pv("total", variable, by=by, na_rm=na_rm, level=level, deff_type=deff_type)
        cols = self._variable_columns(variable)
        est, se, n, deff, keys = self._ratio_like(cols, None, by, na_rm, level, "total", deff_type)
        return self._frame(cols, keys, by, est, se, n, deff, level)

    def proportion(self, variable, by=None, na_rm: bool = False, level: float = 0.95,
                   deff_type: str = "srswor", pv: bool = False) -> pd.DataFrame:
        """Proportion in each level of a variable (treated as categorical), one
        row per level, as ``svymean(~factor(x))``.  ``pv=True``: the variables
        are plausible values (e.g. proficiency levels), combined by Rubin's rules."""
        if pv:
            return self._pv("proportion", variable, by=by, na_rm=na_rm, level=level, deff_type=deff_type)
        cols = self._variable_columns(variable, categorical=True)
        est, se, n, deff, keys = self._ratio_like(cols, None, by, na_rm, level, "mean", deff_type)
        return self._frame(cols, keys, by, est, se, n, deff, level)

    def ratio(self, numerator, denominator, by=None, na_rm: bool = False, level: float = 0.95,
              deff_type: str = "srswor") -> pd.DataFrame:
        """Ratio of totals sum(w y)/sum(w x) for every numerator x denominator
        pair (R's ``svyratio``); the output has a ``denominator`` column."""
        nums = self._variable_columns(numerator, categorical=False)
        dens = self._variable_columns(denominator, categorical=False)
        cols, dcols = [], []
        for c in nums:
            for d in dens:
                cols.append(c)
                dcols.append(d)
        est, se, n, deff, keys = self._ratio_like(cols, [d[2] for d in dcols], by, na_rm, level, "ratio", deff_type)
        out = self._frame(cols, keys, by, est, se, n, deff, level)
        out.insert(1, "denominator", np.repeat([d[0] for d in dcols], est.shape[1]))
        return out

    # ============================================================ quantiles
    def quantile(self, variable, q, by=None, na_rm: bool = False, level: float = 0.95,
                 interval: str = "mean", qrule: str = "math", df=None, pv: bool = False) -> pd.DataFrame:
        """Quantiles as R's ``svyquantile`` (survey >= 4.1).

        The p-th quantile is read off the weighted CDF with ``qrule``:
        "math" (default: the smallest x with F(x) >= p, survey's ``qrule_math``
        including its handling of ties) or "school" (midpoint when F(x) = p
        exactly).  Confidence interval: ``interval="mean"`` (default) is
        Woodruff's (1952): a CI for the proportion below the quantile,
        p_hat +- t_df SE(p_hat) with df the design degrees of freedom, mapped
        back through the CDF; SE = CI length / (2 t_df).  For replicate
        designs ``interval="quantile"`` uses the replicate quantiles directly.
        ``pv=True`` combines plausible values by Rubin's rules.
        """
        if pv:
            return self._pv("quantile", variable, q=q, by=by, na_rm=na_rm, level=level, interval=interval,
                            qrule=qrule, df=df)
        qs = np.atleast_1d(np.asarray(q, dtype=float))
        if np.any((qs < 0) | (qs > 1)):
            raise DesignError(f"quantile: probabilities must be in [0, 1], got {qs.tolist()}")
        if qrule not in ("math", "school"):
            raise DesignError(f"qrule must be 'math' or 'school', got {qrule!r}")
        cols = self._variable_columns(variable, categorical=False)
        Xz, incl, dom, D, keys, nan_in = self._prepare([c[2] for c in cols], by, na_rm)
        w = self._w
        k, Q = len(cols), qs.size
        est = np.full((k, D, Q), np.nan)
        lo = np.full((k, D, Q), np.nan)
        hi = np.full((k, D, Q), np.nan)
        se = np.full((k, D, Q), np.nan)
        nobs = self._counts(incl, dom, D)
        for j in range(k):
            use = incl[:, j] & (w != 0)
            x = Xz[use, j]
            g = dom[use]
            ww = w[use]
            qtab = _GroupedQuantile(x, ww, g, D)
            est[j] = qtab.rule(np.broadcast_to(qs, (D, Q)), qrule)
            if interval == "mean":
                ind = np.zeros((len(w), Q))
                thr = est[j][dom]  # (n, Q)
                ind[use] = (Xz[use, j][:, None] <= thr[use]).astype(float)
                ind_cols = [("p", None, np.where(incl[:, j], ind[:, qi], np.nan)) for qi in range(Q)]
                m, mse_, _, _, _ = self._ratio_like(ind_cols, None, by, True, level, "mean", "srswor")
                dfj = self._degf_domains(use, dom, D) if df is None else np.full(D, float(df))
                tq = np.where(np.isinf(dfj), stats.norm.ppf(0.5 + level / 2), stats.t.ppf(0.5 + level / 2, np.maximum(dfj, 1)))
                pl = m.T - tq[:, None] * mse_.T  # (D, Q)
                pu = m.T + tq[:, None] * mse_.T
                lo_ = qtab.rule(np.where(np.isnan(pl) | (pl < 0), 0.0, pl), qrule)
                hi_ = qtab.rule(np.where(np.isnan(pu) | (pu > 1), 1.0, pu), qrule)
                lo[j] = np.where(np.isnan(pl) | (pl < 0), np.nan, lo_)
                hi[j] = np.where(np.isnan(pu) | (pu > 1), np.nan, hi_)
                se[j] = (hi[j] - lo[j]) / (2 * tq[:, None])
            elif interval == "quantile":
                v = self._quantile_replicate_var(x, g, D, use, qs, qrule, est[j])
                dfj = self._degf_domains(use, dom, D) if df is None else np.full(D, float(df))
                tq = np.where(np.isinf(dfj), stats.norm.ppf(0.5 + level / 2), stats.t.ppf(0.5 + level / 2, np.maximum(dfj, 1)))
                se[j] = np.sqrt(v)
                lo[j] = est[j] - tq[:, None] * se[j]
                hi[j] = est[j] + tq[:, None] * se[j]
            else:
                raise DesignError(f"quantile: interval must be 'mean' or 'quantile', got {interval!r}")
            bad = nan_in[j]
            for arr in (est, lo, hi, se):
                arr[j][bad] = np.nan
        # assemble: one row per variable x domain x quantile
        rows = []
        by_l = _as_list(by)
        for j, c in enumerate(cols):
            for d in range(D):
                for qi, qq in enumerate(qs):
                    rec = {"variable": c[0]}
                    for b in by_l:
                        rec[b] = keys[b].iloc[d]
                    rec.update(quantile=qq, estimate=est[j, d, qi], se=se[j, d, qi], ci_low=lo[j, d, qi],
                               ci_high=hi[j, d, qi], n=int(nobs[j, d]), deff=np.nan)
                    rows.append(rec)
        return pd.DataFrame(rows)

    def _quantile_replicate_var(self, *args, **kwargs):  # pragma: no cover - overridden
        raise DesignError("interval='quantile' needs a replicate-weight design")

    # =========================================================== regression
    def regress(self, formula_or_y, x=None, by=None, na_rm: bool = True, level: float = 0.95,
                intercept: bool = True) -> pd.DataFrame:
        """Weighted least squares with design-based SEs (R's ``svyglm``, gaussian).

        ``formula_or_y``: an R-style formula ``"y ~ a + b + C(f) + a:b - 1"``
        (factors by treatment coding, R's column names), or the response name
        with ``x`` a list of predictor names.  beta = (X'WX)^{-1} X'Wy; the
        covariance is that of the linearised values w_i e_i x_i'(X'WX)^{-1}
        (Taylor) or of the replicate coefficients.  Rows with a missing value
        are dropped (their PSUs stay in the design).  CI and p-values use t
        with df = design df + 1 - p, as ``confint.svyglm``.  ``deff`` compares
        with the same estimator's variance were the rows independent draws
        with replacement (iid linearised values).
        """
        if x is None:
            if not isinstance(formula_or_y, str) or "~" not in formula_or_y:
                raise DesignError("regress: give a formula 'y ~ x1 + x2' or a response name with x=[...]")
            yname, terms, icpt = _parse_formula(formula_or_y)
            if yname is None:
                raise DesignError("regress: the formula needs a response on the left of '~'")
        else:
            yname, terms, icpt = formula_or_y, _as_list(x), intercept
        if yname not in self._data.columns:
            raise DesignError(f"regress: response {yname!r} is not in the data")
        X, names = _model_matrix(self._data, terms, icpt)
        y = _float_series(self._data[yname], "regress response", yname)
        ok = ~np.isnan(X).any(axis=1) & ~np.isnan(y)
        if not na_rm and not ok[self._inmask()].all():
            raise DesignError(f"regress: missing values in rows {_rows(~ok & self._inmask())}; use na_rm=True")
        dom, D, keys = self._domains(by)
        use = ok & (dom >= 0) & self._inmask()
        domz = np.where(dom >= 0, dom, 0)
        Xz = np.where(use[:, None], X, 0.0)
        yz = np.where(use, y, 0.0)
        beta, cov, vsrs = self._regress_core(Xz, yz, use, domz, D)
        p = len(names)
        se = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))  # (D, p)
        nobs = np.bincount(domz, weights=(use & (self._w != 0)).astype(float), minlength=D)
        dfres = self._degf_domains(use, domz, D) + 1 - p
        tq = stats.t.ppf(0.5 + level / 2, np.maximum(dfres, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            tval = beta / se
            pval = 2 * stats.t.sf(np.abs(tval), np.maximum(dfres, 1)[:, None])
            deff = np.diagonal(cov, axis1=1, axis2=2) / vsrs
        cols = [(nm, None, None) for nm in names]
        out = self._frame(
            cols, keys, by, beta.T, se.T, np.repeat(nobs[None, :], p, axis=0), deff.T, level,
            lo=(beta - tq[:, None] * se).T, hi=(beta + tq[:, None] * se).T,
            extra={"t": tval.T, "p_value": pval.T, "df": np.repeat(dfres[None, :], p, axis=0)},
        )
        out.attrs["vcov"] = cov
        out.attrs["terms"] = names
        return out

    # =========================================================== plausible
    def _pv(self, what: str, variables, **kw) -> pd.DataFrame:
        pvs = _as_list(variables)
        if len(pvs) < 2:
            raise DesignError("pv=True needs two or more plausible-value columns")
        res = [getattr(self, what)(v, **kw) for v in pvs]
        return combine_plausible(res, variable="+".join(pvs) if len(pvs) <= 3 else f"{pvs[0]}..{pvs[-1]}")

    # ========================================================== calibration
    def _calibration_inputs(self, formula, population, variance):
        if isinstance(formula, str):
            f = formula if "~" in formula else "~" + formula
            _, terms, icpt = _parse_formula(f)
        else:
            terms, icpt = _as_list(formula), True
        X, names = _model_matrix(self._data, terms, icpt)
        inm = self._inmask()
        if np.isnan(X[inm]).any():
            bad = np.isnan(X).any(axis=1) & inm
            raise DesignError(f"calibrate: calibration variables are missing in rows {_rows(bad)}")
        X = np.where(inm[:, None], np.nan_to_num(X), 0.0)
        if isinstance(population, dict):
            population = pd.Series(population)
        if isinstance(population, pd.Series):
            missing = [nm for nm in names if nm not in population.index]
            if missing:
                raise DesignError(
                    f"calibrate: population totals missing for model columns {missing}; "
                    f"totals are needed for {names}"
                )
            extra = [ix for ix in population.index if ix not in names]
            if extra:
                raise DesignError(f"calibrate: population totals given for {extra}, which are not model columns {names}")
            pop = population.loc[names].to_numpy(dtype=float)
        else:
            pop = np.asarray(population, dtype=float).ravel()
            if pop.size != len(names):
                raise DesignError(
                    f"calibrate: {pop.size} population totals for {len(names)} model columns {names}"
                )
        if variance is None:
            sigma2 = np.ones(len(self._data))
        else:
            v = np.asarray(variance, dtype=float)
            sigma2 = v if v.shape == (len(self._data),) else X @ v
        return X, names, pop, sigma2

    def _poststrata(self, strata, population):
        cols = _as_list(strata)
        for c in cols:
            if c not in self._data.columns:
                raise DesignError(f"poststratify: column {c!r} is not in the data")
        sub = self._data[cols]
        inm = self._inmask()
        if sub[inm].isna().any(axis=None):
            bad = sub.isna().any(axis=1).to_numpy() & inm
            raise DesignError(f"poststratify: post-stratum variables missing in rows {_rows(bad)}")
        if isinstance(population, pd.DataFrame):
            cnt = [c for c in population.columns if c not in cols]
            if len(cnt) != 1:
                raise DesignError(
                    f"poststratify: population DataFrame needs the columns {cols} and one count column; has {list(population.columns)}"
                )
            pop = population.set_index(cols)[cnt[0]]
        elif isinstance(population, dict):
            pop = pd.Series(population)
        elif isinstance(population, pd.Series):
            pop = population
        else:
            raise DesignError("poststratify: population must be a dict, Series or DataFrame of counts")
        if len(cols) > 1 and not isinstance(pop.index, pd.MultiIndex):
            pop.index = pd.MultiIndex.from_tuples(pop.index)
        lookup = pd.MultiIndex.from_frame(sub) if len(cols) > 1 else pd.Index(sub[cols[0]])
        pidx = pop.index
        codes = pidx.get_indexer(lookup)
        bad = (codes < 0) & inm
        if bad.any():
            missing = sub[bad].drop_duplicates().head(10).to_dict("records")
            raise DesignError(f"poststratify: post-strata {missing} (rows {_rows(bad)}) are not in the population table")
        present = np.unique(codes[inm])
        absent = np.setdiff1d(np.arange(len(pidx)), present)
        if absent.size:
            raise DesignError(
                f"poststratify: population strata {[pidx[i] for i in absent[:10]]} have no sample rows"
            )
        return np.where(inm, codes, 0), pop.to_numpy(dtype=float), len(pidx)


# ==========================================================================
# grouped weighted quantiles (survey's qrule_math / qrule_school, vectorised)
# ==========================================================================


class _GroupedQuantile:
    """Weighted quantiles within groups, exactly as survey's ``qs()``:
    pos = last i with cumw_i <= p * sum(w) (else the first), then
    math: x[pos] if p - cumw[pos]/sum(w) == 0 else x[pos+1]."""

    def __init__(self, x: np.ndarray, w: np.ndarray, g: np.ndarray, G: int):
        order = np.lexsort((x, g))
        self.x = x[order]
        ws = w[order]
        self.g = g[order]
        self.G = G
        cnt = np.bincount(self.g, minlength=G)
        self.cnt = cnt
        self.start = np.r_[0, np.cumsum(cnt)[:-1]].astype(np.int64)
        cs = _longdouble_cumsum(ws)
        off = np.where(self.start > 0, cs[np.maximum(self.start - 1, 0)], 0)
        off = off.astype(np.longdouble) * (self.start > 0)
        if self.x.size:
            self.cumw = (cs - off[self.g]).astype(np.float64)
            tot = np.where(cnt > 0, cs[np.maximum(self.start + cnt - 1, 0)] - off, 0)
            self.sw = tot.astype(np.float64)
        else:
            self.cumw = np.zeros(0)
            self.sw = np.zeros(G)

    def rule(self, p: np.ndarray, qrule: str = "math") -> np.ndarray:
        """Quantiles for probabilities p (G, Q)."""
        p = np.asarray(p, dtype=float)
        G, Q = p.shape
        out = np.full((G, Q), np.nan)
        has = self.cnt > 0
        if not has.any():
            return out
        thr = p * self.sw[:, None]
        lo = np.broadcast_to(self.start[:, None], (G, Q)).copy()
        hi = np.broadcast_to((self.start + self.cnt)[:, None], (G, Q)).copy()
        for _ in range(int(np.ceil(np.log2(max(self.cnt.max(), 1)))) + 2):
            act = lo < hi
            if not act.any():
                break
            mid = (lo + hi) // 2
            midc = np.minimum(mid, max(self.cumw.size - 1, 0))
            cond = self.cumw[midc] <= thr
            lo = np.where(act & cond, mid + 1, lo)
            hi = np.where(act & ~cond, mid, hi)
        count = lo - self.start[:, None]
        pos = self.start[:, None] + np.maximum(count - 1, 0)
        last = self.start + np.maximum(self.cnt - 1, 0)
        posn = np.minimum(pos + 1, last[:, None])
        pos_c = np.minimum(pos, max(self.x.size - 1, 0))
        posn_c = np.minimum(posn, max(self.x.size - 1, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            wlow = p - self.cumw[pos_c] / self.sw[:, None]
        xl, xu = self.x[pos_c], self.x[posn_c]
        if qrule == "math":
            val = np.where(wlow == 0, xl, xu)
        else:
            val = np.where(wlow == 0, (xl + xu) / 2, xu)
        out[has] = val[has]
        return out


# ==========================================================================
# Plausible values
# ==========================================================================


def combine_plausible(estimates: Sequence[pd.DataFrame], variable: str | None = None,
                      level: float = 0.95) -> pd.DataFrame:
    """Combine estimates made on each of M plausible values by Rubin's rules.

    ``estimates``: M tidy frames from the same estimator (same rows in the
    same order, one per plausible value).  Point = mean of the M estimates;
    variance = U + (1 + 1/M) B with U the mean sampling variance (se^2) and
    B the between-PV variance (divisor M-1) (Rubin 1987; Mislevy 1991).
    Adds columns ``within_var``, ``between_var`` and ``fmi`` (fraction of
    missing information (1+1/M)B/T).  ``deff`` is T over the mean SRS
    variance implied by the inputs' deffs.
    """
    M = len(estimates)
    if M < 2:
        raise DesignError("combine_plausible needs estimates from two or more plausible values")
    base = estimates[0]
    for i, e in enumerate(estimates[1:], start=2):
        if len(e) != len(base):
            raise DesignError(f"combine_plausible: estimate {i} has {len(e)} rows, the first has {len(base)}")
    est = np.column_stack([e["estimate"].to_numpy(dtype=float) for e in estimates])
    se = np.column_stack([e["se"].to_numpy(dtype=float) for e in estimates])
    point = est.mean(axis=1)
    U = (se**2).mean(axis=1)
    B = est.var(axis=1, ddof=1)
    T = U + (1 + 1 / M) * B
    out = base.copy()
    if variable is not None:
        out["variable"] = variable
    out["estimate"] = point
    out["se"] = np.sqrt(T)
    z = _z(level)
    out["ci_low"] = point - z * out["se"]
    out["ci_high"] = point + z * out["se"]
    if "deff" in base.columns:
        deffs = np.column_stack([e["deff"].to_numpy(dtype=float) for e in estimates])
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no deff, e.g. quantiles)
            vsrs = np.nanmean(se**2 / deffs, axis=1)
            out["deff"] = T / vsrs
    out["within_var"] = U
    out["between_var"] = B
    with np.errstate(divide="ignore", invalid="ignore"):
        out["fmi"] = (1 + 1 / M) * B / T
    out["n_pv"] = M
    return out


# ==========================================================================
# Design: Taylor linearisation
# ==========================================================================


def _stage_ids(data: pd.DataFrame, clusters) -> list[np.ndarray]:
    n = len(data)
    if clusters is None or (isinstance(clusters, (str, int)) and str(clusters) in ("1", "0")):
        return [np.arange(n)]
    out = []
    for c in _as_list(clusters):
        if isinstance(c, (str, int)) and str(c) in ("1", "0"):
            out.append(np.arange(n))
        else:
            out.append(_column_values(data, c, "clusters"))
    return out


def _make_stage(stratum_key: np.ndarray, unit_key: np.ndarray, parent: np.ndarray | None,
                popsize: np.ndarray | None, mult_row: np.ndarray, stage_no: int, stratum_names,
                check_nesting: bool) -> tuple[_Stage, np.ndarray]:
    """Build one stage; return it and the per-row n/N factor for the next stage."""
    n = unit_key.size
    h_row, _ = _factorize(stratum_key)
    u_row, _ = _factorize(unit_key)
    n_units = int(u_row.max()) + 1
    first = np.full(n_units, n, dtype=np.int64)
    np.minimum.at(first, u_row, np.arange(n))
    h_unit = h_row[first]
    if check_nesting:
        bad = h_row != h_unit[u_row]
        if bad.any():
            raise DesignError(
                f"clusters are not nested in strata at stage {stage_no}: rows {_rows(bad)} put a PSU in a "
                "second stratum; give nest=True if PSU labels are only unique within strata"
            )
    # renumber units so that each stratum's units are contiguous
    order = np.lexsort((first, h_unit))
    new_code = np.empty(n_units, dtype=np.int64)
    new_code[order] = np.arange(n_units)
    unit = new_code[u_row]
    stratum = h_unit[order]
    first_sorted = first[order]
    n_strata = int(h_row.max()) + 1
    n_h = np.bincount(stratum, minlength=n_strata)
    starts = np.r_[0, np.cumsum(n_h)[:-1]].astype(np.int64)
    if popsize is not None:
        N_unit = popsize[first_sorted]
        nh_unit = n_h[stratum].astype(float)
        if np.any(N_unit < nh_unit - 1e-9):
            u = int(np.flatnonzero(N_unit < nh_unit - 1e-9)[0])
            raise DesignError(
                f"fpc at stage {stage_no} implies more than 100% sampling: population size {N_unit[u]} "
                f"but {int(nh_unit[u])} units sampled in the stratum of row {int(first_sorted[u])}"
            )
        with np.errstate(invalid="ignore"):
            f = np.where(np.isinf(N_unit), 1.0, (N_unit - nh_unit) / N_unit)
        Nmin = np.minimum.reduceat(N_unit, starts) if n_units else N_unit
        Nmax = np.maximum.reduceat(N_unit, starts) if n_units else N_unit
        if np.any(Nmin != Nmax):
            hh = int(np.flatnonzero(Nmin != Nmax)[0])
            warnings.warn(f"fpc varies within stratum {stratum_names[hh] if hh < len(stratum_names) else hh} at stage {stage_no}",
                          stacklevel=4)
        with np.errstate(divide="ignore", invalid="ignore"):
            next_mult = mult_row * np.where(np.isinf(popsize), 0.0, n_h[h_row] / popsize)
    else:
        f = np.ones(n_units)
        next_mult = None
    certain = np.minimum.reduceat(f < 1e-7, starts) if n_units else np.zeros(n_strata, bool)
    certain = np.asarray(certain, dtype=bool)
    if parent is None:
        group = np.zeros(n_strata, dtype=np.int64)
        n_groups = 1
    else:
        first_h = np.full(n_strata, n, dtype=np.int64)
        np.minimum.at(first_h, h_row, np.arange(n))
        group = parent[first_h]
        n_groups = int(parent.max()) + 1
    labels = np.asarray(stratum_names, dtype=object) if stratum_names is not None else np.arange(n_strata)
    st = _Stage(unit=unit, n_units=n_units, stratum=stratum, starts=starts, n_h=n_h, f=f, group=group,
                n_groups=n_groups, mult=mult_row[first_sorted], certain=certain, labels=labels,
                popsize=None if popsize is None else popsize[first_sorted])
    return st, next_mult


class Design(_DesignBase):
    """A complex survey design for Taylor-linearisation estimates (R's ``svydesign``).

    Parameters
    ----------
    data : DataFrame, one row per sampled unit.
    weights : column name (or array/number) of sampling weights.  When
        omitted, weights are implied by ``fpc`` (prod over stages of N/n) as
        R does, else (with a warning) set to 1.
    strata : first-stage strata column (or a list, one per stage).
    clusters : column name, or list of column names, one per sampling stage
        (PSU first); ``None`` or ``"1"`` means every row is its own unit.
    fpc : per stage, a column name (or number/array): the population count
        of units at that stage, or sampling fractions when all values are
        <= 1.  With an fpc at every stage the variance is the full multistage
        one; without, the with-replacement ultimate-cluster variance.
    nest : cluster labels are only unique within strata (R's ``nest=TRUE``).
    lonely_psu : what a stratum with one PSU contributes: "fail" (error, the
        default), "remove"/"certainty" (nothing), "adjust" (centred at the
        mean PSU total of its stage) or "average" (others scaled up), as
        R's ``options(survey.lonely.psu)``.
    probs : alternatively, selection probabilities (weights = 1/probs).
    """

    def __init__(self, data: pd.DataFrame, weights=None, strata=None, clusters=None, fpc=None, nest: bool = False,
                 *, lonely_psu: str = "fail", probs=None, check_strata: bool | None = None):
        if not isinstance(data, pd.DataFrame):
            raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        if lonely_psu not in LONELY_PSU:
            raise DesignError(f"lonely_psu must be one of {LONELY_PSU}, got {lonely_psu!r}")
        n = len(data)
        if n == 0:
            raise DesignError("data has no rows")
        self._data = data
        self._lonely = lonely_psu
        self._mask = None
        self._caldata: list = []
        self._spec = dict(weights=weights, strata=strata, clusters=clusters, fpc=fpc, nest=nest)
        self._history: list[str] = []
        ids = _stage_ids(data, clusters)
        S = len(ids)
        strata_l = _as_list(strata)
        if len(strata_l) > S:
            raise DesignError(f"{len(strata_l)} strata columns given for {S} stages")
        self._has_strata = bool(strata_l)
        strata_vals = [_column_values(data, s, "strata") for s in strata_l]
        if check_strata is None:
            check_strata = not nest
        # ----- fpc -> population sizes per stage
        fpc_l = _as_list(fpc)
        popsize = None
        if fpc_l:
            if len(fpc_l) != S:
                raise DesignError(
                    f"fpc given for {len(fpc_l)} stage(s) but clusters has {S}: give one fpc per stage "
                    "(or none, for the with-replacement variance)"
                )
            fvals = [_numeric(_column_values(data, f, "fpc"), "fpc", f) for f in fpc_l]
            allv = np.concatenate(fvals)
            if np.any(allv <= 0):
                raise DesignError(f"fpc must be positive; stage values {[float(v.min()) for v in fvals]}")
            is_pop = np.any(allv > 1)
            if is_pop and np.any(allv < 1):
                bad = np.flatnonzero(np.concatenate([v < 1 for v in fvals]))[:5]
                raise DesignError(
                    f"fpc mixes population sizes (> 1) and sampling fractions (< 1) (entries {bad.tolist()}); "
                    "give all as counts or all as fractions"
                )
            popsize = fvals if is_pop else None
            frac = None if is_pop else fvals
        # ----- stages
        self._stages: list[_Stage] = []
        mult = np.ones(n)
        parent = None
        s1_codes = None
        s1_labels = None
        weights_from_fpc = np.ones(n)
        for si in range(S):
            if si == 0:
                if strata_vals:
                    s1_codes, s1_labels = _factorize(strata_vals[0])
                else:
                    s1_codes, s1_labels = np.zeros(n, dtype=np.int64), np.array([1], dtype=object)
                skey = s1_codes
                if nest and self._has_strata:
                    ukey = _factorize_pair(s1_codes, ids[0])
                else:
                    ukey, _ = _factorize(ids[0])
                names = s1_labels
                check = check_strata and self._has_strata and not nest
                if not (nest and self._has_strata) and np.unique(ukey).size == 1:
                    raise DesignError("the design has only one primary sampling unit")
            else:
                prev = self._stages[-1].unit
                ukey = _factorize_pair(prev, ids[si])
                if si < len(strata_vals):
                    sc, _ = _factorize(strata_vals[si])
                else:
                    sc = s1_codes
                skey = _factorize_pair(prev, sc)
                names = None
                check = False
            # population size of this stage
            pop_s = None
            n_h_row = None
            if fpc_l:
                if popsize is not None:
                    pop_s = popsize[si].astype(float)
                else:
                    hcodes, _ = _factorize(skey)
                    ucodes, _ = _factorize(ukey)
                    nh = np.bincount(hcodes[np.unique(ucodes, return_index=True)[1]], minlength=hcodes.max() + 1)
                    pop_s = nh[hcodes] / frac[si]
            st, next_mult = _make_stage(skey, ukey, parent, pop_s, mult, si + 1,
                                        names if names is not None else np.arange(int(skey.max()) + 1), check)
            if si == 0 and names is not None:
                st.labels = np.asarray(names, dtype=object)
            if si > 0:
                st.labels = np.array([f"{h} (within stage-{si} unit)" for h in range(st.n_h.size)], dtype=object)
            self._stages.append(st)
            if pop_s is not None:
                n_h_row = st.n_h[st.stratum[st.unit]]
                weights_from_fpc = weights_from_fpc * pop_s / n_h_row
            parent = st.unit
            if next_mult is not None:
                mult = next_mult
        self._multistage = bool(fpc_l) and S > 1
        self._has_fpc = bool(fpc_l)
        self._n_stages = S
        # stage-1 codes in order of first appearance (for replicate weights and df)
        self._str1 = s1_codes
        self._str1_labels = s1_labels
        if nest and self._has_strata:
            self._psu1 = _factorize_pair(s1_codes, ids[0])
        else:
            self._psu1, _ = _factorize(ids[0])
        self._psu1_labels = ids[0]
        # ----- weights
        if weights is not None and probs is not None:
            raise DesignError("give weights or probs, not both")
        if weights is not None:
            w = _numeric(_column_values(data, weights, "weights"), "weights", weights)
        elif probs is not None:
            pr = _numeric(_column_values(data, probs, "probs"), "probs", probs)
            if np.any(pr <= 0):
                raise DesignError(f"probs must be positive; rows {_rows(pr <= 0)} are not")
            w = 1.0 / pr
        elif fpc_l:
            w = weights_from_fpc
        else:
            warnings.warn("no weights or probabilities supplied, assuming equal probability", stacklevel=2)
            w = np.ones(n)
        if np.any(w < 0) or np.any(~np.isfinite(w)):
            bad = (w < 0) | ~np.isfinite(w)
            raise DesignError(f"weights must be finite and non-negative; rows {_rows(bad)} are not")
        self._w = np.ascontiguousarray(w, dtype=np.float64)

    # ------------------------------------------------------------- internals
    def _clone(self) -> "Design":
        new = object.__new__(Design)
        new.__dict__.update(self.__dict__)
        new._dom_cache = {}
        new._caldata = list(self._caldata)
        new._history = list(self._history)
        return new

    def _with_mask(self, mask: np.ndarray) -> "Design":
        new = self._clone()
        new._mask = mask
        return new

    def _variance(self, lin: _Lin, full: bool = False) -> np.ndarray:
        """Variance of the totals of the linearised columns: (D, k) or (D, k, k)."""
        if self._caldata:
            lin = _residualise(lin, self._caldata)
        stages = self._stages if self._multistage else self._stages[:1]
        out = None
        for si, st in enumerate(stages):
            U = lin.unit_totals(st.unit, st.n_units)
            v = _stage_variance(st, U, self._lonely, full, si + 1)
            out = v if out is None else out + v
        return out

    def _ratio_core(self, num, den, dom, D, kind, info=None):
        """Ratios of weighted domain totals and their Taylor variances.

        num: (n, k); den: (n, k), (n, 1) shared by all columns, _ONES, or None (totals).
        """
        w = self._w
        Num = self._wsum(num, dom, D)
        out = {"num": Num}
        if den is None:
            theta = Num
            vals = w[:, None] * num
        else:
            if den is _ONES:
                Den = np.broadcast_to(self._domain_wsum(info), (num.shape[1], D))
                den = np.ones((num.shape[0], 1))
            else:
                Den = self._wsum(den, dom, D)
            with np.errstate(divide="ignore", invalid="ignore"):
                theta = Num / Den
                r = (num - theta.T[dom] * den) / Den.T[dom]
            r = np.where((num == 0) & (den == 0), 0.0, r)
            vals = w[:, None] * r
            out["den"] = Den
            out["lin"] = r
        var = self._variance(_Lin(vals, dom, D)).T
        var = np.where(np.isfinite(theta), var, np.nan)
        out["theta"] = theta
        out["var"] = var
        return out

    def _degf_domains(self, use: np.ndarray, dom: np.ndarray, D: int) -> np.ndarray:
        """R's degf per domain: PSUs minus strata among rows used (weight != 0)."""
        u = use & (self._w != 0)
        d = dom[u]
        npsu = np.bincount(np.unique(d * (self._psu1.max() + 1) + self._psu1[u]) // (self._psu1.max() + 1),
                           minlength=D)
        nstr = np.bincount(np.unique(d * (self._str1.max() + 1) + self._str1[u]) // (self._str1.max() + 1),
                           minlength=D)
        return (npsu - nstr).astype(float)

    def degf(self) -> int:
        """Design degrees of freedom: number of PSUs minus number of strata."""
        use = self._inmask()
        return int(self._degf_domains(use, np.zeros(len(self._data), dtype=np.int64), 1)[0])

    def _regress_core(self, X, y, use, dom, D):
        w = np.where(use, self._w, 0.0)
        p = X.shape[1]
        A = np.empty((D, p, p))
        b = np.empty((D, p))
        for a in range(p):
            b[:, a] = np.bincount(dom, weights=w * X[:, a] * y, minlength=D)
            for c in range(a, p):
                A[:, a, c] = A[:, c, a] = np.bincount(dom, weights=w * X[:, a] * X[:, c], minlength=D)
        Ainv = _safe_inverse(A)
        beta = np.einsum("dpq,dq->dp", Ainv, b)
        e = np.where(use, y - np.einsum("ip,ip->i", X, beta[dom]), 0.0)
        vals = (w * e)[:, None] * np.einsum("ip,ipq->iq", X, Ainv[dom])
        cov = self._variance(_Lin(vals, dom, D), full=True)
        vsrs = _iid_var(vals, use, dom, D)
        return beta, cov, vsrs

    # ------------------------------------------------------------ weighting
    def poststratify(self, strata, population) -> "Design":
        """Post-stratification (R's ``postStratify``): weights in post-stratum k
        are multiplied by N_k / N_hat_k; variances use residuals from the
        post-stratum means (linear calibration on the post-stratum dummies).

        ``population``: dict or Series of counts keyed by post-stratum (tuples
        for several columns), or a DataFrame with the ``strata`` columns and a
        count column (as R's ``data.frame(stype=..., Freq=...)``).
        """
        codes, pop, K = self._poststrata(strata, population)
        inm = self._inmask()
        w0 = np.where(inm, self._w, 0.0)
        Nhat = np.bincount(codes, weights=w0, minlength=K)
        g = np.where(inm, pop[codes] / Nhat[codes], 1.0)
        Xd = np.zeros((len(w0), K))
        Xd[np.arange(len(w0)), codes] = inm.astype(float)
        new = self._clone()
        new._w = self._w * g
        new._caldata.append(_caldata_entry(Xd, w0, g, np.ones(len(w0)), inm))
        new._history.append(f"poststratify({strata!r})")
        return new

    def calibrate(self, formula, population, calfun: str = "linear", bounds=None, variance=None,
                  maxit: int = 50, epsilon: float = 1e-7) -> "Design":
        """Calibration to population totals (R's ``calibrate``).

        ``formula``: ``"~ stype + api99"`` (R's model-matrix columns, with an
        intercept unless ``- 1``) or a list of columns; ``population``: totals
        keyed by model column name (``"(Intercept)"``, ``"stypeH"``, ...) or in
        column order.  ``calfun``: "linear" (GREG; g = 1 + x'lambda/sigma^2,
        closed form, R's ``regcalibrate``), "raking" (g = exp(x'lambda)) or
        "logit"; ``bounds`` = (lower, upper) on g (Newton iterations as R's
        ``grake``).  ``variance``: sigma^2, per row or as coefficients on the
        model columns.  Variances use the residuals of the linearised values
        on the calibration variables (Deville & Sarndal 1992).
        """
        X, names, pop, sigma2 = self._calibration_inputs(formula, population, variance)
        inm = self._inmask()
        w0 = np.where(inm, self._w, 0.0)
        g, kind = _calibration_g(X, w0, pop, sigma2, calfun, bounds, maxit, epsilon, names)
        new = self._clone()
        new._w = np.where(inm, self._w * g, self._w)
        if kind == "closed":
            new._caldata.append(_caldata_entry(X, w0, g, sigma2, inm))
        else:
            new._caldata.append(_caldata_entry(X, w0, g, np.ones(len(w0)), inm))
        new._history.append(f"calibrate({formula!r}, calfun={calfun!r})")
        return new

    # ------------------------------------------------------------ replicate
    def replicate(self, method: str = "auto", rho: float | None = None, mse: bool = False, *,
                  replicates: int = 50, seed=None, variant: str = "timss", hadamard_matrix=None) -> "ReplicateDesign":
        """Convert to replicate weights (R's ``as.svrepdesign``).

        method: "auto" (JK1 unstratified, JKn stratified), "JK1", "JKn",
        "JK2" (strata as zones of two PSUs; ``variant`` "timss" or "full"),
        "BRR", "Fay" (``rho``, default 0.5), "bootstrap" (R's, ``replicates``,
        ``seed``) or "rao_wu" (R's "subbootstrap").  Stage-1 fpc is carried
        into JK1/JKn/bootstrap (dropped, with a warning, for BRR/Fay, as R).
        The full-sample weights are the design's current weights.

        ``mse``: centre replicate estimates on the full-sample estimate (True)
        or on their mean (False, R's default ``survey.replicates.mse``).
        TIMSS's one-replicate-per-zone JK2 variance sum_h (theta_h - theta)^2
        is defined around the full-sample estimate: use ``mse=True`` with it
        (centring on the replicate mean understates it).
        """
        m = method.lower().replace("-", "_")
        n = len(self._data)
        st = self._stages[0]
        # stage-1 units in order of first appearance
        u = self._psu1
        n_units = int(u.max()) + 1
        first = np.full(n_units, n, dtype=np.int64)
        np.minimum.at(first, u, np.arange(n))
        s_of_u = self._str1[first]
        labels = self._str1_labels
        popsize = None
        if self._has_fpc:
            popsize = st.popsize  # per stage-1 unit in stage order
            # map to first-appearance units
            N_row = np.empty(n)
            N_row[:] = popsize[st.unit]
            popsize = N_row[first]
        if m == "auto":
            m = "jkn" if self._has_strata else "jk1"
        if m == "jk1":
            if self._has_strata:
                raise DesignError("JK1 is for unstratified designs; use 'JKn' for a stratified one")
            corr = 1.0
            if popsize is not None:
                vals = np.unique(popsize)
                if vals.size > 1:
                    raise DesignError("JK1: the first-stage fpc varies; there must be a single population size")
                corr = (vals[0] - n_units) / vals[0] if np.isfinite(vals[0]) else 1.0
            rf = _rep._jk1_codes(u, n_units, corr)
        elif m == "jkn":
            if not self._has_strata:
                raise DesignError("JKn needs strata; use 'JK1' or 'bootstrap' for an unstratified design")
            H = int(s_of_u.max()) + 1
            n_h = np.bincount(s_of_u, minlength=H)
            corr = np.ones(H)
            if popsize is not None:
                Nh = np.full(H, np.nan)
                Nh[s_of_u[::-1]] = popsize[::-1]
                corr = np.where(np.isinf(Nh), 1.0, (Nh - n_h) / Nh)
            rf = _rep._jkn_codes(u, s_of_u, corr, self._lonely, labels)
        elif m in ("brr", "fay"):
            if not self._has_strata:
                raise DesignError(f"{method} needs strata (of two PSUs each)")
            if self._has_fpc:
                warnings.warn("finite population correction dropped in conversion to BRR/Fay replicates", stacklevel=2)
            r = 0.0 if m == "brr" else (0.5 if rho is None else float(rho))
            if m == "brr" and rho not in (None, 0, 0.0):
                r = float(rho)
            rf = _rep._brr_codes(u, s_of_u, labels, r, hadamard_matrix)
        elif m == "jk2":
            if not self._has_strata:
                raise DesignError("JK2 needs strata (zones) of two PSUs")
            n_h = np.bincount(s_of_u)
            if np.any(n_h != 2):
                raise DesignError(f"JK2: every stratum (zone) needs exactly two PSUs; strata {labels[np.flatnonzero(n_h != 2)[:10]].tolist()} do not")
            # the first PSU of each zone (data order) is doubled
            firstpsu = np.zeros(n_units, dtype=bool)
            seen = np.zeros(n_h.size, dtype=bool)
            for uu in range(n_units):  # n_units is small (PSUs); loop over units, not rows
                h = s_of_u[uu]
                if not seen[h]:
                    firstpsu[uu] = True
                    seen[h] = True
            Hn = n_h.size
            if variant == "timss":
                F = np.ones((n_units, Hn))
                F[np.arange(n_units), s_of_u] = np.where(firstpsu, 2.0, 0.0)
                rf = _rep.ReplicateFactors(F, u, 1.0, np.ones(Hn), "JK2")
            elif variant == "full":
                F = np.ones((n_units, 2 * Hn))
                F[np.arange(n_units), 2 * s_of_u] = np.where(firstpsu, 2.0, 0.0)
                F[np.arange(n_units), 2 * s_of_u + 1] = np.where(firstpsu, 0.0, 2.0)
                rf = _rep.ReplicateFactors(F, u, 0.5, np.ones(2 * Hn), "JK2")
            else:
                raise DesignError(f"JK2 variant must be 'timss' or 'full', got {variant!r}")
        elif m == "bootstrap":
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            pop_h = None
            if popsize is not None:
                H = int(s_of_u.max()) + 1
                pop_h = np.full(H, np.nan)
                pop_h[s_of_u[::-1]] = popsize[::-1]
            rf = _rep._bootstrap_codes(u, s_of_u, replicates, rng, pop_h)
        elif m in ("rao_wu", "subbootstrap"):
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            rf = _rep._rao_wu_codes(u, s_of_u, replicates, rng)
        else:
            raise DesignError(
                f"unknown replicate method {method!r}; use auto, JK1, JKn, JK2, BRR, Fay, bootstrap or rao_wu"
            )
        rd = ReplicateDesign._from_factors(self._data, self._w, rf, mse=mse, mask=self._mask)
        rd._history = self._history + [f"replicate({method!r})"]
        return rd

    # ------------------------------------------------------------- display
    def summary(self) -> pd.DataFrame:
        """First-stage strata: rows, sampled PSUs and population PSUs (R's summary)."""
        st = self._stages[0]
        H = st.n_h.size
        rows = np.bincount(st.stratum[st.unit], minlength=H)
        out = pd.DataFrame({
            "stratum": st.labels if self._has_strata else ["(all)"],
            "rows": rows,
            "psu": st.n_h,
        })
        if st.popsize is not None:
            out["population_psu"] = st.popsize[st.starts]
            out["sampling_fraction"] = st.n_h / st.popsize[st.starts]
        w = self.weights
        out["sum_weights"] = np.bincount(st.stratum[st.unit], weights=w, minlength=H)
        try:
            out = out.sort_values("stratum", kind="stable").reset_index(drop=True)
        except TypeError:
            pass
        return out

    def _describe(self) -> str:
        st = self._stages[0]
        single = self._n_stages == 1 and st.n_units == len(self._data)
        head = "Stratified " if self._has_strata else ""
        if single:
            head += "Independent Sampling design"
        else:
            head += f"{self._n_stages}-level Cluster Sampling design"
        head += "" if self._has_fpc else " (with replacement)"
        lines = [head]
        if not single:
            lines.append("With (" + ", ".join(str(s.n_units) for s in self._stages) + ") clusters.")
        spec = ", ".join(f"{k}={v!r}" for k, v in self._spec.items() if v not in (None, False))
        lines.append(f"Design({spec})")
        if self._history:
            lines.append("then: " + "; ".join(self._history))
        if self._mask is not None:
            lines.append(f"subset: {int(self._mask.sum())} of {len(self._data)} rows")
        w = self.weights[self._inmask()]
        lines.append(f"rows: {len(self._data)}, sum of weights: {w.sum():.6g}, degrees of freedom: {self.degf()}")
        lines.append(f"lonely PSUs: {self._lonely}")
        return "\n".join(lines)



def _safe_inverse(A: np.ndarray) -> np.ndarray:
    """Batched inverse; singular domains get NaN (with a warning)."""
    out = np.full_like(A, np.nan)
    ok = np.linalg.matrix_rank(A) == A.shape[-1] if A.size else np.zeros(0, bool)
    if np.any(ok):
        out[ok] = np.linalg.inv(A[ok])
    if not np.all(ok):
        warnings.warn(f"regress: singular X'WX in {int((~ok).sum())} domain(s); their coefficients are NaN",
                      stacklevel=3)
    return out


def _iid_var(vals: np.ndarray, use: np.ndarray, dom: np.ndarray, D: int) -> np.ndarray:
    """(D, k) variance of sum(z) were the used rows iid: n/(n-1) sum (z - zbar)^2."""
    k = vals.shape[1]
    cnt = np.bincount(dom, weights=use.astype(float), minlength=D)
    out = np.empty((D, k))
    for j in range(k):
        s1 = np.bincount(dom, weights=vals[:, j], minlength=D)
        s2 = np.bincount(dom, weights=vals[:, j] ** 2, minlength=D)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, j] = cnt / (cnt - 1) * (s2 - s1**2 / cnt)
    return out


def _orthobasis(A: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space of A (rank-revealing)."""
    if A.shape[1] == 0:
        return A
    U, sv, _ = np.linalg.svd(A, full_matrices=False)
    r = int(np.sum(sv > sv.max() * max(A.shape) * np.finfo(float).eps)) if sv.size else 0
    return U[:, :r]


def _caldata_entry(X, w0, g, sigma2, inm):
    """(Q, wq) for svyrecvar's calibration residuals: Q spans X sqrt(w0)/sigma,
    wq = g sqrt(w0) sigma (rows outside the calibrated set: Q = 0, wq = 1)."""
    whalf = np.sqrt(w0)
    sig = np.sqrt(sigma2)
    Q = _orthobasis(X * (whalf / sig)[:, None])
    wq = np.where(inm & (whalf > 0), g * whalf * sig, 1.0)
    Q = np.where((inm & (whalf > 0))[:, None], Q, 0.0)
    return Q, wq


def _calfun(name: str):
    """(F(u), F'(u)) as R's cal.linear / cal.raking / cal.logit, with bounds."""
    if name == "linear":
        def F(u, lo, up):
            return np.minimum(np.maximum(u + 1, lo), up) - 1

        def dF(u, lo, up):
            return ((u < up - 1) & (u > lo - 1)).astype(float)
    elif name == "raking":
        def F(u, lo, up):
            return np.minimum(np.maximum(np.exp(u), lo), up) - 1

        def dF(u, lo, up):
            return np.where((u < up - 1) & (u > lo - 1), np.exp(u), 0.0)
    elif name == "logit":
        def F(u, lo, up):
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(up))):
                raise DesignError("logit calibration needs finite bounds")
            A = (up - lo) / ((up - 1) * (1 - lo))
            e = np.exp(A * u)
            return (lo * (up - 1) + up * (1 - lo) * e) / (up - 1 + (1 - lo) * e) - 1

        def dF(u, lo, up):
            A = (up - lo) / ((up - 1) * (1 - lo))
            e = np.exp(A * u)
            den = up - 1 + (1 - lo) * e
            return up * (1 - lo) * e * A / den - (lo * (up - 1) + up * (1 - lo) * e) * ((1 - lo) * e * A) / den**2
    else:
        raise DesignError(f"calfun must be 'linear', 'raking' or 'logit', got {name!r}")
    return F, dF


def _grake(X, W, pop, sigma2, calfun, bounds, maxit, epsilon):
    """Calibration g-weights by Newton iterations (R's grake), vectorised over
    the columns of W (n x c): returns g (n x c)."""
    F, dF = _calfun(calfun)
    lo, up = (-np.inf, np.inf) if bounds is None else (float(bounds[0]), float(bounds[1]))
    n, c = W.shape
    p = X.shape[1]
    Xs = X / sigma2[:, None]
    sample_total = X.T @ W  # (p, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = pop[:, None] / sample_total
    pre = np.nanmin(scales, axis=0) > 20
    sc = np.where(pre, np.nanmean(np.where(np.isfinite(scales), scales, np.nan), axis=0), 1.0)
    Ws = W * sc[None, :]
    st = sample_total * sc[None, :]
    eta = np.zeros((p, c))
    xeta = Xs @ eta
    g = 1 + F(xeta, lo, up)
    der = dF(xeta, lo, up)
    failed = np.zeros(c, dtype=bool)
    it = 1
    while True:
        T = np.einsum("ip,iq,ic->cpq", X / np.sqrt(sigma2)[:, None], X / np.sqrt(sigma2)[:, None], Ws * der)
        misfit = pop[:, None] - st - X.T @ (Ws * F(xeta, lo, up))
        deta = np.einsum("cpq,qc->pc", np.linalg.pinv(T, rcond=256 * np.finfo(float).eps), misfit)
        eta = eta + deta
        xeta = Xs @ eta
        g = 1 + F(xeta, lo, up)
        der = dF(xeta, lo, up)
        halv = 0
        while it < maxit and (not np.all(np.isfinite(g)) or not np.all(np.isfinite(der))) and halv < 50:
            bad = ~(np.all(np.isfinite(g), axis=0) & np.all(np.isfinite(der), axis=0))
            deta = np.where(bad[None, :], deta / 2, 0.0)
            eta = eta - deta
            xeta = Xs @ eta
            g = 1 + F(xeta, lo, up)
            der = dF(xeta, lo, up)
            it += 1
            halv += 1
        misfit = pop[:, None] - st - X.T @ (Ws * F(xeta, lo, up))
        conv = np.all(np.abs(misfit) / (1 + np.abs(pop))[:, None] < epsilon, axis=0)
        if np.all(conv):
            break
        it += 1
        if it > maxit:
            failed = ~conv
            break
    if failed.any():
        raise DesignError(
            f"calibration failed to converge in {maxit} iterations for {int(failed.sum())} weight column(s); "
            "relax the bounds or check the population totals"
        )
    return g * sc[None, :]


def _calibration_g(X, w0, pop, sigma2, calfun, bounds, maxit, epsilon, names):
    """g-weights for one weight vector: closed-form GREG for unbounded linear
    calibration (R's regcalibrate), else Newton (R's grake)."""
    if calfun == "linear" and (bounds is None or (np.isinf(bounds[0]) and np.isinf(bounds[1]))):
        A = X * np.sqrt(w0 / sigma2)[:, None]
        T = A.T @ A
        if np.linalg.matrix_rank(T) < T.shape[0]:
            raise DesignError(f"calibrate: the calibration equations are singular; the model columns {names} "
                              "are collinear in the sample (or have too few rows)")
        lam = np.linalg.solve(T, pop - X.T @ w0)
        g = 1 + (X @ lam) / sigma2
        return g, "closed"
    g = _grake(X, w0[:, None], pop, sigma2, calfun, bounds, maxit, epsilon)[:, 0]
    return g, "grake"


# ==========================================================================
# ReplicateDesign
# ==========================================================================

_REP_METHODS = {
    "jk1": "JK1", "jkn": "JKn", "jk2": "JK2", "brr": "BRR", "fay": "Fay", "bootstrap": "bootstrap",
    "rao_wu": "rao_wu", "subbootstrap": "rao_wu", "acs": "ACS", "successive_difference": "ACS",
    "sdr": "ACS", "other": "other",
}


class ReplicateDesign(_DesignBase):
    """A design described by replicate weights (R's ``svrepdesign``).

    Parameters
    ----------
    data : DataFrame.
    weights : full-sample weight column (or array).
    replicate_weights : list of column names, a regular expression matching
        them, or an (n x R) array.
    method : "JK1", "JKn", "JK2", "BRR", "Fay", "bootstrap", "rao_wu",
        "ACS" (successive difference) or "other"; sets the default ``scale``:
        BRR 1/R, Fay 1/(R(1-rho)^2), JK1 (R-1)/R, JK2 1, bootstrap 1/(R-1),
        ACS 4/R, other 1.
    rho : Fay coefficient (required for "Fay").
    scale : overall multiplier (overrides the default).
    mse : centre the replicates on the full-sample estimate instead of their
        mean (R's ``mse=TRUE``).  Default False, as R; TIMSS's JK2 variance is
        defined around the full estimate, so pass ``mse=True`` for it.
    rscales : per-replicate multipliers (JKn: (n_h-1)/n_h, required for
        combined weights; guessed as 1/max factor for factors, as R).
    combined_weights : True (default) if the replicate columns are full
        weights; False if they are factors to multiply by ``weights``.

    The weights are kept as one C-contiguous (n x (1+R)) float64 array
    (column 0 the full-sample weights); estimates for D domains are one
    sparse (domain x row) by (row x (1+R)) product, or, for designs built
    from replicate factors, a product with the small (unit x R) factor matrix.
    """

    def __init__(self, data: pd.DataFrame, weights, replicate_weights, method: str, rho: float | None = None,
                 scale: float | None = None, mse: bool = False, *, rscales=None, combined_weights: bool = True):
        if not isinstance(data, pd.DataFrame):
            raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        n = len(data)
        key = str(method).lower().replace("-", "_")
        if key not in _REP_METHODS:
            raise DesignError(f"unknown replicate method {method!r}; use one of {sorted(set(_REP_METHODS.values()))}")
        meth = _REP_METHODS[key]
        w = _numeric(_column_values(data, weights, "weights"), "weights", weights)
        if isinstance(replicate_weights, str):
            cols = [c for c in data.columns if re.search(replicate_weights, str(c))]
            if not cols:
                raise DesignError(f"replicate_weights: no column matches {replicate_weights!r}")
            R_ = data[cols].to_numpy(dtype=float)
        elif isinstance(replicate_weights, np.ndarray) or (
            isinstance(replicate_weights, Sequence) and len(replicate_weights) and not isinstance(replicate_weights[0], str)
        ):
            R_ = np.asarray(replicate_weights, dtype=float)
        else:
            cols = list(replicate_weights)
            missing = [c for c in cols if c not in data.columns]
            if missing:
                raise DesignError(f"replicate_weights: columns {missing} are not in the data")
            R_ = data[cols].to_numpy(dtype=float)
        if R_.ndim != 2 or R_.shape[0] != n:
            raise DesignError(f"replicate_weights must be (n x R) with n = {n}; got shape {R_.shape}")
        if np.isnan(R_).any():
            bad = np.isnan(R_).any(axis=1)
            raise DesignError(f"replicate_weights have missing values in rows {_rows(bad)}")
        nrep = R_.shape[1]
        if meth == "Fay" and rho is None:
            raise DesignError("method='Fay' needs rho (e.g. 0.5)")
        factors = R_ if not combined_weights else None
        if scale is None:
            if meth == "BRR":
                scale = 1.0 / nrep
            elif meth == "Fay":
                scale = 1.0 / (nrep * (1.0 - rho) ** 2)
            elif meth == "JK1":
                scale = (1.0 / R_[:, 0].max()) if factors is not None else (nrep - 1.0) / nrep
            elif meth == "JK2":
                scale = 1.0
            elif meth in ("bootstrap", "rao_wu"):
                scale = 1.0 / (nrep - 1.0)
            elif meth == "ACS":
                scale = 4.0 / nrep
            elif meth == "JKn":
                scale = 1.0
            else:
                scale = 1.0
        if rscales is None:
            if meth == "JKn":
                if factors is None:
                    raise DesignError("JKn with combined weights needs rscales ((n_h-1)/n_h for each replicate)")
                rscales = 1.0 / R_.max(axis=0)
            else:
                rscales = np.ones(nrep)
        rscales = np.broadcast_to(np.asarray(rscales, dtype=float), (nrep,)).copy()
        W = np.empty((n, nrep + 1), dtype=np.float64, order="C")
        W[:, 0] = w
        if combined_weights:
            W[:, 1:] = R_
        else:
            np.multiply(R_, w[:, None], out=W[:, 1:])
        self._init_common(data, W, float(scale), rscales, meth, float(rho or 0.0), bool(mse), None)

    # --------------------------------------------------------- construction
    def _init_common(self, data, W, scale, rscales, method, rho, mse, factors, mask=None):
        self._data = data
        self._W = W
        self._w = np.ascontiguousarray(W[:, 0])
        self._scale = scale
        self._rscales = rscales
        self._method = method
        self._rho = rho
        self._mse = mse
        self._factors = factors  # (F (U x R), index (n,)) or None
        self._mask = mask
        self._history = []
        self._degf_cache = None

    @classmethod
    def _from_factors(cls, data, w, rf: "_rep.ReplicateFactors", mse=False, mask=None) -> "ReplicateDesign":
        W = rf.weight_matrix(w)
        obj = object.__new__(cls)
        obj._init_common(data, W, float(rf.scale), np.asarray(rf.rscales, dtype=float), rf.method, float(rf.rho),
                         bool(mse), (np.ascontiguousarray(rf.factors, dtype=np.float64), rf.index), mask)
        return obj

    def _clone(self) -> "ReplicateDesign":
        new = object.__new__(ReplicateDesign)
        new.__dict__.update(self.__dict__)
        new._dom_cache = {}
        new._history = list(self._history)
        new._degf_cache = None
        return new

    def _with_mask(self, mask: np.ndarray) -> "ReplicateDesign":
        new = self._clone()
        new._mask = mask
        return new

    # ------------------------------------------------------------ accessors
    @property
    def replicate_weights(self) -> np.ndarray:
        """(n x R) replicate weights (a view of the contiguous weight matrix)."""
        return self._W[:, 1:]

    @property
    def weight_matrix(self) -> np.ndarray:
        """The contiguous (n x (1+R)) weight matrix, full-sample weights first."""
        return self._W

    @property
    def n_replicates(self) -> int:
        return self._W.shape[1] - 1

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def rscales(self) -> np.ndarray:
        return self._rscales

    @property
    def method(self) -> str:
        return self._method

    # ----------------------------------------------------------- core sums
    def _rep_totals(self, vals: np.ndarray, dom: np.ndarray, D: int, info: dict | None = None) -> np.ndarray:
        """(k, D, 1+R) weighted domain totals of the columns of vals for every
        weight column (full sample first).

        Designs built from replicate factors aggregate w*y to (unit, domain)
        cells with one bincount and multiply by the small factor matrix;
        otherwise one sparse (k*D x n) by (n x (1+R)) product (dense GEMM when
        D = 1) on the contiguous weight matrix.
        """
        n, k = vals.shape
        R1 = self._W.shape[1]
        F = self._factors
        if F is not None and F[0].shape[0] * D <= n:
            Fm, idx = F
            U = Fm.shape[0]
            if info is not None and "unit_key" in info:
                key = info["unit_key"]
            else:
                key = idx * D + dom if D > 1 else idx
                if info is not None:
                    info["unit_key"] = key
            out = np.empty((k, D, R1))
            w = self._w
            for j in range(k):
                A = np.bincount(key, weights=w * vals[:, j], minlength=U * D).reshape(U, D)
                out[j, :, 0] = A.sum(axis=0)
                out[j, :, 1:] = A.T @ Fm
            return out
        if D == 1:
            return (vals.T @ self._W).reshape(k, 1, R1)
        # sparse (k*D x n) @ (n x (1+R)); column i holds vals[i, j] in row j*D + dom_i
        indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        indices = (np.arange(k)[None, :] * D + dom[:, None]).ravel()
        S = sparse.csc_matrix((vals.ravel(), indices, indptr), shape=(k * D, n))
        return np.asarray(S @ self._W).reshape(k, D, R1)

    def _svrvar(self, theta: np.ndarray) -> np.ndarray:
        """R's svrVar on the last axis of theta (full estimate at index 0)."""
        reps = theta[..., 1:]
        full = theta[..., :1]
        rs = self._rscales
        bad = np.isnan(reps)
        if bad.any() and not np.all(bad):
            warnings.warn(f"{int(bad.any(axis=tuple(range(bad.ndim - 1))).sum())} replicate(s) gave NaN results and were discarded",
                          stacklevel=4)
        ok = ~bad
        if self._mse:
            centre = full
        else:
            use = ok & (rs > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                centre = np.where(use, reps, 0.0).sum(axis=-1, keepdims=True) / use.sum(axis=-1, keepdims=True)
        dev = np.where(ok, reps - centre, 0.0)
        v = self._scale * np.sum(rs * dev * dev, axis=-1)
        allbad = ~ok.any(axis=-1)
        return np.where(allbad | np.isnan(full[..., 0]), np.nan, v)

    def _svrcov(self, theta: np.ndarray) -> np.ndarray:
        """Covariance over the last-but-one axis: theta (D, p, 1+R) -> (D, p, p)."""
        reps = theta[..., 1:]
        full = theta[..., :1]
        rs = self._rscales
        centre = full if self._mse else reps[..., rs > 0].mean(axis=-1, keepdims=True)
        dev = reps - centre
        return self._scale * np.einsum("dpr,dqr,r->dpq", dev, dev, rs)

    def _ratio_core(self, num, den, dom, D, kind, info=None):
        """Ratios of weighted domain totals for every weight column, and the
        replicate variance (svrVar).  den: (n, k), (n, 1), _ONES or None."""
        k = num.shape[1]
        out = {}
        Tn = self._rep_totals(num, dom, D, info)
        if den is None:
            theta = Tn
            out["num"] = Tn[..., 0]
        else:
            if den is _ONES:
                if info is not None and "rep_wsum" in info:
                    Td = info["rep_wsum"]
                else:
                    Td = self._rep_totals(np.ones((num.shape[0], 1)), dom, D, info)
                    if info is not None:
                        info["rep_wsum"] = Td
                den = None if kind != "ratio" else np.ones((num.shape[0], 1))
            else:
                Td = self._rep_totals(den, dom, D, info)
            with np.errstate(divide="ignore", invalid="ignore"):
                theta = Tn / Td
            th0 = theta[..., 0]
            Den0 = np.broadcast_to(Td[:, :, 0], (k, D))
            out["num"] = Tn[:, :, 0]
            out["den"] = Den0
            if kind == "ratio":
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = (num - th0.T[dom] * den) / Den0.T[dom]
                out["lin"] = np.where((num == 0) & (den == 0), 0.0, r)
        out["theta"] = theta[..., 0]
        out["var"] = self._svrvar(theta)
        return out

    def _degf_domains(self, use: np.ndarray, dom: np.ndarray, D: int) -> np.ndarray:
        """R's degf for replicate designs: rank of the replicate weights of the
        rows used, minus one (per domain)."""
        out = np.empty(D)
        u = use & (self._w != 0)
        for d in range(D):  # ranks need one decomposition per domain
            rows = u & (dom == d)
            if self._factors is not None:
                Fm, idx = self._factors
                units = np.unique(idx[rows])
                M = Fm[units]
            else:
                M = self._W[rows, 1:]
            if M.shape[0] == 0:
                out[d] = np.nan
                continue
            G = M.T @ M
            ev = np.linalg.eigvalsh(G)
            out[d] = int(np.sum(ev > ev.max() * 1e-10)) - 1 if ev.size else 0
        return out

    def degf(self) -> int:
        if self._degf_cache is None:
            self._degf_cache = int(self._degf_domains(self._inmask(), np.zeros(len(self._data), dtype=np.int64), 1)[0])
        return self._degf_cache

    def _quantile_replicate_var(self, x, g, D, use, qs, qrule, est):
        """Variance of the quantiles from the replicate quantiles (interval='quantile')."""
        Wu = self._W[use]
        R = Wu.shape[1] - 1
        Q = qs.size
        reps = np.empty((D, Q, R))
        for r in range(R):  # one weighted-CDF pass per replicate, vectorised over domains
            wr = Wu[:, r + 1]
            pos = wr != 0
            gq = _GroupedQuantile(x[pos], wr[pos], g[pos], D)
            reps[:, :, r] = gq.rule(np.broadcast_to(qs, (D, Q)), qrule)
        theta = np.concatenate([est[:, :, None], reps], axis=2)
        return self._svrvar(theta)

    def _regress_core(self, X, y, use, dom, D):
        p = X.shape[1]
        pairs = [(a, c) for a in range(p) for c in range(a, p)]
        cols = [X[:, a] * X[:, c] for a, c in pairs] + [X[:, a] * y for a in range(p)]
        T = self._rep_totals(np.column_stack(cols), dom, D)  # (k, D, 1+R)
        R1 = T.shape[2]
        A = np.empty((D, R1, p, p))
        for i, (a, c) in enumerate(pairs):
            A[:, :, a, c] = A[:, :, c, a] = T[i]
        b = np.moveaxis(T[len(pairs):], 0, -1)  # (D, R1, p)
        Ainv = _safe_inverse(A.reshape(D * R1, p, p)).reshape(D, R1, p, p)
        beta_all = np.einsum("drpq,drq->drp", Ainv, b)  # (D, R1, p)
        theta = np.moveaxis(beta_all, 1, 2)  # (D, p, R1)
        cov = self._svrcov(theta)
        beta = beta_all[:, 0, :]
        w = np.where(use, self._w, 0.0)
        e = np.where(use, y - np.einsum("ip,ip->i", X, beta[dom]), 0.0)
        vals = (w * e)[:, None] * np.einsum("ip,ipq->iq", X, Ainv[:, 0][dom])
        return beta, cov, _iid_var(vals, use, dom, D)

    # ------------------------------------------------------------ weighting
    def poststratify(self, strata, population) -> "ReplicateDesign":
        """Post-stratify the full-sample and every replicate weight (R's
        ``postStratify`` on a replicate design): in each column, weights in
        post-stratum k are multiplied by N_k / (that column's N_hat_k)."""
        codes, pop, K = self._poststrata(strata, population)
        inm = self._inmask()
        n = len(self._data)
        S = sparse.csr_matrix((inm.astype(float), (codes, np.arange(n))), shape=(K, n))
        Nhat = np.asarray(S @ self._W)  # (K, 1+R)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = pop[:, None] / Nhat
        W = self._W * np.where(inm[:, None], g[codes], 1.0)
        new = self._clone()
        new._W = np.ascontiguousarray(W)
        new._w = np.ascontiguousarray(W[:, 0])
        new._factors = None
        new._history.append(f"poststratify({strata!r})")
        return new

    def calibrate(self, formula, population, calfun: str = "linear", bounds=None, variance=None,
                  maxit: int = 50, epsilon: float = 1e-7) -> "ReplicateDesign":
        """Calibrate the full-sample and every replicate weight to the same
        population totals (R's ``calibrate`` on a replicate design); see
        :meth:`Design.calibrate` for the arguments."""
        X, names, pop, sigma2 = self._calibration_inputs(formula, population, variance)
        inm = self._inmask()
        W0 = np.where(inm[:, None], self._W, 0.0)
        if calfun == "linear" and (bounds is None or (np.isinf(bounds[0]) and np.isinf(bounds[1]))):
            Xs = X / np.sqrt(sigma2)[:, None]
            T = np.einsum("ip,iq,ic->cpq", Xs, Xs, W0)
            rhs = pop[:, None] - X.T @ W0  # (p, c)
            bad = np.linalg.matrix_rank(T) < T.shape[-1]
            if bad.any():
                raise DesignError(
                    f"calibrate: the calibration equations are singular in weight column(s) "
                    f"{np.flatnonzero(bad)[:10].tolist()} (0 = full sample): too few rows with nonzero weight "
                    f"to fit {names}"
                )
            lam = np.einsum("cpq,qc->pc", np.linalg.inv(T), rhs)
            g = 1 + (X @ lam) / sigma2[:, None]
        else:
            g = _grake(X, W0, pop, sigma2, calfun, bounds, maxit, epsilon)
        W = np.where(inm[:, None], self._W * g, self._W)
        new = self._clone()
        new._W = np.ascontiguousarray(W)
        new._w = np.ascontiguousarray(W[:, 0])
        new._factors = None
        new._history.append(f"calibrate({formula!r}, calfun={calfun!r})")
        return new

    # ------------------------------------------------------------- display
    def summary(self) -> pd.DataFrame:
        w = self.weights
        return pd.DataFrame({
            "method": [self._method],
            "replicates": [self.n_replicates],
            "rho": [self._rho],
            "scale": [self._scale],
            "rscales_min": [float(self._rscales.min()) if self._rscales.size else np.nan],
            "rscales_max": [float(self._rscales.max()) if self._rscales.size else np.nan],
            "mse": [self._mse],
            "rows": [int(self._inmask().sum())],
            "sum_weights": [float(w.sum())],
            "degf": [self.degf()],
        })

    def _describe(self) -> str:
        names = {"JK1": "Unstratified cluster jackknife (JK1)", "JKn": "Stratified cluster jackknife (JKn)",
                 "JK2": "Paired jackknife (JK2)", "BRR": "Balanced Repeated Replicates",
                 "Fay": f"Fay's variance method (rho={self._rho})", "bootstrap": "Survey bootstrap",
                 "rao_wu": "Rao-Wu (n-1) bootstrap", "ACS": "Successive difference replication",
                 "other": "Replicate weights"}
        s = f"{names.get(self._method, self._method)} with {self.n_replicates} replicates"
        if self._mse:
            s += " and MSE variances"
        s += "."
        lines = [s]
        if self._history:
            lines.append("then: " + "; ".join(self._history))
        if self._mask is not None:
            lines.append(f"subset: {int(self._mask.sum())} of {len(self._data)} rows")
        lines.append(f"rows: {len(self._data)}, scale: {self._scale:.6g}")
        return "\n".join(lines)

