"""Replicate-weight builders: JK1, JKn, JK2, BRR, Fay-BRR and bootstrap.

Every builder returns a :class:`ReplicateFactors`: a small matrix of replicate
*factors* with one row per variance unit (PSU, or zone half) and one column per
replicate, an index giving each data row its unit, and the constants that turn
the replicate estimates into a variance,

    v = scale * sum_r rscales[r] * (theta_r - centre)^2,

where ``centre`` is the mean of the replicate estimates (or the full-sample
estimate when the design is used with ``mse=True``).  Replicate *weights* are
``base_weight * factor``; :meth:`ReplicateFactors.weights` builds the full
(n x R) array with one gather and one multiply.

The constructions follow R's survey package (Lumley), whose conventions they
reproduce so that designs converted here agree with ``as.svrepdesign``:

* ``jk1``  -- delete one PSU, others multiplied by n/(n-1); scale (n-1)/n,
  times (N-n)/N when a population size is given (``jk1weights``).
* ``jkn``  -- delete one PSU in stratum h, the other PSUs of that stratum
  multiplied by n_h/(n_h-1); rscales (1-f_h)(n_h-1)/n_h; exhaustively
  sampled (certainty) strata give no replicate; lonely PSUs handled as
  ``options(survey.lonely.psu)`` (``jknweights``).
* ``brr``/``fay`` -- strata of two PSUs (larger even strata split into pairs);
  replicate r gives the first PSU of stratum k the factor 2-rho and the other
  rho when row k of the Hadamard matrix is +1 at column r, the reverse when -1;
  scale 1/(R (1-rho)^2) (``brrweights``).  Strata are ordered as R orders
  ``as.character`` labels, so the factors equal R's column for column when the
  Hadamard matrix is the same (verified for order 80, R's ``hadamard(75)``).
* ``jk2``  -- TIMSS/PIRLS paired jackknife on zones; see :func:`jk2`.
* ``bootstrap`` -- R's ``bootweights`` (Canty & Davison 1999): n_h PSUs drawn
  with replacement in each stratum, factor = times drawn, scale
  n/((n-1)(R-1)) with n the harmonic mean of the n_h.
* ``rao_wu`` -- Rao & Wu (1988) rescaling bootstrap (R's "subbootstrap"):
  n_h - 1 draws, factor = times drawn * n_h/(n_h-1), scale 1/(R-1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "ReplicateError",
    "ReplicateFactors",
    "hadamard",
    "hadamard_order",
    "jk1",
    "jkn",
    "jk2",
    "brr",
    "fay",
    "bootstrap",
    "rao_wu",
]


class ReplicateError(ValueError):
    """Bad input to a replicate-weight builder."""


# --------------------------------------------------------------------------
# result object
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ReplicateFactors:
    """Replicate factors in compressed form.

    Attributes
    ----------
    factors : (n_units, R) float64 array, the factor of each variance unit in
        each replicate.
    index : (n_rows,) int64 array, the unit of each data row.
    scale, rscales : variance constants (see module docstring).
    method : "JK1", "JKn", "JK2", "BRR", "Fay", "bootstrap" or "rao_wu".
    rho : Fay coefficient (0 for BRR and the jackknives).
    units : DataFrame describing the units (stratum and PSU labels), one row
        per row of ``factors``.
    """

    factors: np.ndarray
    index: np.ndarray
    scale: float
    rscales: np.ndarray
    method: str
    rho: float = 0.0
    units: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def n_replicates(self) -> int:
        return int(self.factors.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.index.shape[0])

    def expand(self) -> np.ndarray:
        """(n_rows, R) matrix of factors, one row per data row."""
        return np.take(self.factors, self.index, axis=0)

    def weights(self, base_weights, out: np.ndarray | None = None) -> np.ndarray:
        """Replicate weights ``base_weight * factor`` as an (n_rows, R) array.

        ``out`` may be a preallocated (n_rows, R) view, for instance the
        replicate columns of a design's contiguous weight matrix.
        """
        w = np.asarray(base_weights, dtype=np.float64)
        if w.shape != (self.n_rows,):
            raise ReplicateError(
                f"base_weights has shape {w.shape}, expected ({self.n_rows},): one weight per data row"
            )
        f = np.take(self.factors, self.index, axis=0)
        if out is None:
            f *= w[:, None]
            return f
        np.multiply(f, w[:, None], out=out)
        return out

    def weight_matrix(self, base_weights) -> np.ndarray:
        """C-contiguous (n_rows, 1+R) float64 matrix: the base weights in
        column 0 and the replicate weights after them.

        Built as one gather of the small (unit x (1+R)) matrix [1 | factors]
        followed by one in-place multiply by the base weights.
        """
        w = np.asarray(base_weights, dtype=np.float64)
        if w.shape != (self.n_rows,):
            raise ReplicateError(
                f"base_weights has shape {w.shape}, expected ({self.n_rows},): one weight per data row"
            )
        G = np.empty((self.factors.shape[0], self.n_replicates + 1))
        G[:, 0] = 1.0
        G[:, 1:] = self.factors
        W = np.take(G, self.index, axis=0)
        W *= w[:, None]
        return W

    def frame(self, prefix: str = "rep", base_weights=None) -> pd.DataFrame:
        """The replicate factors (or, with ``base_weights``, weights) as a DataFrame."""
        m = self.expand() if base_weights is None else self.weights(base_weights)
        cols = [f"{prefix}{r + 1}" for r in range(self.n_replicates)]
        return pd.DataFrame(m, columns=cols)

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "method": [self.method],
                "replicates": [self.n_replicates],
                "units": [self.factors.shape[0]],
                "rows": [self.n_rows],
                "rho": [self.rho],
                "scale": [self.scale],
                "rscales_min": [float(np.min(self.rscales)) if self.rscales.size else np.nan],
                "rscales_max": [float(np.max(self.rscales)) if self.rscales.size else np.nan],
            }
        )

    def __repr__(self) -> str:
        return (
            f"ReplicateFactors(method={self.method!r}, replicates={self.n_replicates}, "
            f"units={self.factors.shape[0]}, rows={self.n_rows}, scale={self.scale:.6g})"
        )

    def _repr_html_(self) -> str:
        return self.summary().to_html(index=False)


# --------------------------------------------------------------------------
# Hadamard matrices
# --------------------------------------------------------------------------


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    if p % 2 == 0:
        return p == 2
    r = int(math.isqrt(p))
    for d in range(3, r + 1, 2):
        if p % d == 0:
            return False
    return True


def _paley1_01(p: int) -> np.ndarray:
    """Paley construction I, order p+1, for a prime p = 3 (mod 4), in R's 0/1 form.

    Entry (i, j), i, j >= 1, is 0 when (i-1)+(j-1) mod p is a quadratic residue
    or zero and 1 otherwise; the first row and column are 1.  This is the
    matrix R's ``survey::paley(n)`` returns (it is a row permutation of the
    textbook Jacobsthal form, so still Hadamard).
    """
    idx = np.arange(p)
    m = np.add.outer(idx, idx) % p
    residues = np.zeros(p, dtype=bool)
    residues[(idx * idx) % p] = True  # includes 0
    out = np.ones((p + 1, p + 1), dtype=np.int8)
    out[1:, 1:] = np.where(residues[m], 0, 1)
    return out


def _jacobsthal(q: int) -> np.ndarray:
    """Jacobsthal matrix Q[i, j] = chi(j - i) over GF(q), q prime."""
    idx = np.arange(q)
    sq = np.zeros(q, dtype=bool)
    sq[(idx * idx) % q] = True
    chi = np.where(sq, 1, -1).astype(np.int8)
    chi[0] = 0
    return chi[(idx[None, :] - idx[:, None]) % q]


def _paley2_pm(q: int) -> np.ndarray:
    """Paley construction II, order 2(q+1), q prime = 1 (mod 4), +-1 form."""
    Q = _jacobsthal(q).astype(np.int16)
    C = np.zeros((q + 1, q + 1), dtype=np.int16)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    eye = np.eye(q + 1, dtype=np.int16)
    top = np.hstack([C + eye, C - eye])
    bot = np.hstack([C - eye, -C - eye])
    return np.vstack([top, bot]).astype(np.int8)


# Williamson quadruples (first rows of four symmetric circulant matrices with
# A^2+B^2+C^2+D^2 = 4nI), from M. Hall, Combinatorial Theory, 2nd ed. (1983).
# tests/test_replicates.py checks H H' = order I for every order built from them.
_WILLIAMSON = {
    13: ("++++-+--+-+++", "+---+-++-+---", "++---+--+---+", "++---+--+---+"),
    23: (
        "++---+---+-++-+---+---+",
        "+-++-++--++++++--++-++-",
        "+++---++-+-++-+-++---++",
        "+++-+++-+------+-+++-++",
    ),
    25: (
        "++++-+-+-+--++--+-+-+-+++",
        "++--+--+-++++++++-+--+--+",
        "+++--+--++++--++++--+--++",
        "+-+--+++--++++++--+++--+-",
    ),
    29: (
        "+++---++--+-+----+-+--++---++",
        "+-+---++--+-++++++-+--++---+-",
        "++++-++-+---++++++---+-++-+++",
        "++--+--+-+++-++++-+++-+--+--+",
    ),
}


def _williamson_pm(n: int) -> np.ndarray:
    def circ(s: str) -> np.ndarray:
        a = np.array([1 if c == "+" else -1 for c in s], dtype=np.int16)
        i = np.arange(len(a))
        return a[(i[None, :] - i[:, None]) % len(a)]

    A, B, C, D = (circ(s) for s in _WILLIAMSON[n])
    H = np.block([[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B], [-D, -C, B, A]])
    return H.astype(np.int8)


def _double01(H: np.ndarray) -> np.ndarray:
    """Sylvester doubling in R's 0/1 form: [[H, H], [H, 1-H]]."""
    return np.block([[H, H], [H, 1 - H]]).astype(np.int8)


def _pm_to_01(H: np.ndarray) -> np.ndarray:
    """+-1 to 0/1 form, normalised so the first row and column are all 1."""
    H = H.astype(np.int16)
    H = H * H[0:1, :]  # first row +1
    H = H * H[:, 0:1]  # first column +1
    return ((H + 1) // 2).astype(np.int8)


def _hadamard01(order: int) -> np.ndarray | None:
    """A Hadamard matrix of exactly this order in 0/1 form, or None."""
    if order == 1:
        return np.ones((1, 1), dtype=np.int8)
    if order == 2:
        return np.array([[1, 1], [1, 0]], dtype=np.int8)
    if order % 4:
        return None
    # Paley I first: most of R's matrices come from paley() (man/hadamard.Rd)
    if _is_prime(order - 1):
        return _paley1_01(order - 1)
    if order & (order - 1) == 0:
        return _double01(_hadamard01(order // 2))
    q = order // 2 - 1
    if order % 8 == 4 and _is_prime(q) and q % 4 == 1:
        return _pm_to_01(_paley2_pm(q))
    if order // 4 in _WILLIAMSON:
        return _pm_to_01(_williamson_pm(order // 4))
    if order % 8 == 0:
        half = _hadamard01(order // 2)
        if half is not None:
            return _double01(half)
    return None


def hadamard(order: int) -> np.ndarray:
    """A Hadamard matrix (entries +1/-1, H H' = order I) of exactly ``order``.

    Normalised so the first row and column are +1.  Constructions: Paley I
    (order p+1, p prime = 3 mod 4; R's ``paley``), Sylvester doubling, Paley
    II (order 2(q+1), q prime = 1 mod 4) and Williamson (orders 52, 92, 100,
    116, Hall 1983).  Every multiple of 4 up to 128 is covered, and many
    larger orders; an unsupported order raises :class:`ReplicateError`.
    """
    order = int(order)
    if order < 1:
        raise ReplicateError(f"hadamard order must be positive, got {order}")
    H = _hadamard01(order)
    if H is None:
        raise ReplicateError(
            f"no Hadamard construction implemented for order {order} "
            "(Paley I/II, Sylvester doubling and Williamson 52/92/100/116 are)"
        )
    return 2 * H.astype(np.int64) - 1


# Orders R's survey stores in sysdata.rda (hadamard.sizes).  The file is
# binary and not published as text; man/hadamard.Rd documents a stored 28
# (Sloane) and 36 (Plackett-Burman), 96 = 8 x 12 for n = 90 shows a stored 12,
# and 64 = 2^6 for n = 63 a stored power of two.  Only the *order* matters
# for the rule below; the content of R's stored matrices is not reproduced.
_R_STORED = (4, 12, 28, 36)


def _next_paley_prime(n: int) -> int | None:
    p = max(int(n), 3)
    while p <= 7919:
        if p % 4 == 3 and _is_prime(p):
            return p
        p += 1
    return None


def _r_hadamard_plan(n: int) -> tuple[int, str, int]:
    """(order, how, base) following R's survey::hadamard(n); how is
    'stored', 'paley' or 'double' (base = stored order that is doubled)."""
    m = n - n % 4
    pre = [s for s in _R_STORED if m < s <= m + 4]
    if pre:
        return min(pre), "stored", min(pre)
    if all(m < s for s in _R_STORED):
        return _R_STORED[0], "stored", _R_STORED[0]
    sizes = [s * 2 ** max(0, math.ceil(math.log2((n + 1) / s))) for s in _R_STORED]
    best = int(np.argmin([z - n for z in sizes]))
    if sizes[best] - n > 4:
        p = _next_paley_prime(n)
        if p is not None and p <= sizes[best]:
            return p + 1, "paley", p
    return sizes[best], "double", _R_STORED[best]


def hadamard_order(n_strata: int, rule: str = "r") -> int:
    """Order of the Hadamard matrix used for ``n_strata`` strata.

    ``rule="r"`` follows the decision rule of R's ``survey::hadamard(n)``:
    a stored matrix if one has order in (m, m+4], m = n - n mod 4; otherwise
    the best power-of-two multiple of a stored order, unless it exceeds n by
    more than 4 and a Paley matrix of order p+1 fits in between, p the
    smallest prime >= n with p = 3 (mod 4).  So 75 strata get order 80
    (Paley, p = 79), as in R, although 76 exists.  Where R uses ``paley()``
    the matrix built here is R's matrix entry for entry; where R uses a
    stored matrix (or doubles one) only the order is the same.
    ``rule="smallest"`` takes the smallest constructible order > n.
    """
    n = int(n_strata)
    if n < 1:
        raise ReplicateError("need at least one stratum")
    if rule == "smallest":
        order = n + 1
        if order > 2:
            order = order + (-order) % 4
        while _hadamard01(order) is None:
            order += 4
        return order
    if rule != "r":
        raise ReplicateError(f"rule must be 'r' or 'smallest', got {rule!r}")
    return _r_hadamard_plan(n)[0]


def _hadamard01_for(n_strata: int, rule: str = "r") -> np.ndarray:
    if rule == "r":
        order, how, base = _r_hadamard_plan(int(n_strata))
        if how == "paley":
            return _paley1_01(base)
        H = _hadamard01(base)
        while H.shape[0] < order:
            H = _double01(H)
        return H
    return _hadamard01(hadamard_order(n_strata, rule))


# --------------------------------------------------------------------------
# input helpers
# --------------------------------------------------------------------------


def _column(data: pd.DataFrame, name, what: str) -> np.ndarray:
    if name is None:
        return None
    if isinstance(name, str):
        if name not in data.columns:
            raise ReplicateError(f"{what}: column {name!r} is not in the data (columns: {list(data.columns)[:12]}...)")
        col = data[name]
    else:
        col = pd.Series(np.asarray(name))
        if len(col) != len(data):
            raise ReplicateError(f"{what}: {len(col)} values given for {len(data)} rows")
    if col.isna().any():
        rows = np.flatnonzero(col.isna().to_numpy())[:10].tolist()
        raise ReplicateError(f"{what}: column {name!r} has missing values (rows {rows}); every row needs a {what}")
    return col.to_numpy()


def _codes_first_appearance(values) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values)
    codes, uniques = pd.factorize(v if v.dtype != object else pd.Series(v), sort=False)
    return codes.astype(np.int64), np.asarray(uniques)


def _unit_structure(strata, psu, n_rows: int, nest: bool = True):
    """Codes for strata and units (PSUs nested in strata).

    Returns (unit_of_row, stratum_of_unit, stratum_labels, unit_labels_df).
    Units are numbered in order of first appearance in the data.
    """
    if strata is None:
        strata = np.zeros(n_rows, dtype=np.int64)
    if psu is None:
        psu = np.arange(n_rows)
    s_codes, s_labels = _codes_first_appearance(strata)
    p_codes, _ = _codes_first_appearance(psu)
    if nest:
        key = s_codes * (int(p_codes.max()) + 1 if n_rows else 1) + p_codes
        u_codes, _ = pd.factorize(key, sort=False)
    else:
        u_codes = p_codes
    u_codes = u_codes.astype(np.int64)
    n_units = int(u_codes.max()) + 1 if n_rows else 0
    # first row of each unit
    first_row = np.full(n_units, n_rows, dtype=np.int64)
    np.minimum.at(first_row, u_codes, np.arange(n_rows))
    stratum_of_unit = s_codes[first_row]
    bad = np.flatnonzero(s_codes != stratum_of_unit[u_codes])
    if bad.size:
        raise ReplicateError(
            f"PSUs are not nested in strata: rows {bad[:10].tolist()} put a PSU in a second stratum; "
            "give PSU labels that are unique within strata"
        )
    units = pd.DataFrame({"stratum": s_labels[stratum_of_unit], "psu": np.asarray(psu)[first_row]})
    return u_codes, stratum_of_unit, s_labels, units


def _fpc_fraction(fpc, fpc_type: str, n_h: np.ndarray, what: str = "fpc") -> np.ndarray:
    """Finite population correction 1 - n/N per stratum from the given form."""
    fpc = np.asarray(fpc, dtype=np.float64)
    if fpc_type == "population":
        if np.any(fpc < n_h):
            raise ReplicateError(f"{what}: population size smaller than sample size in some stratum")
        return np.where(np.isinf(fpc), 1.0, (fpc - n_h) / fpc)
    if fpc_type == "fraction":
        return 1.0 - fpc
    if fpc_type == "correction":
        return fpc
    raise ReplicateError(f"fpc_type must be 'population', 'fraction' or 'correction', got {fpc_type!r}")


def _per_stratum(values, s_codes: np.ndarray, n_strata: int, what: str) -> np.ndarray:
    """One value per stratum from a per-row vector, checking constancy."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        return np.full(n_strata, float(v))
    first = np.full(n_strata, np.nan)
    first[s_codes[::-1]] = v[::-1]
    bad = np.flatnonzero(~np.isclose(v, first[s_codes], rtol=1e-12, atol=0))
    if bad.size:
        raise ReplicateError(f"{what} varies within a stratum (rows {bad[:10].tolist()}); give one value per stratum")
    return first


# --------------------------------------------------------------------------
# jackknives (code level)
# --------------------------------------------------------------------------


def _jk1_codes(unit_of_row, n_units: int, fpc_corr: float = 1.0) -> ReplicateFactors:
    n = n_units
    if n < 2:
        raise ReplicateError("JK1 needs at least two PSUs")
    if fpc_corr == 0:
        F = np.ones((n, 0))
        return ReplicateFactors(F, unit_of_row, 0.0, np.ones(0), "JK1")
    F = np.full((n, n), n / (n - 1.0))
    np.fill_diagonal(F, 0.0)
    return ReplicateFactors(F, np.asarray(unit_of_row, dtype=np.int64), float(fpc_corr * (n - 1) / n), np.ones(n), "JK1")


def _jkn_codes(unit_of_row, stratum_of_unit, fpc_corr_h, lonely_psu: str = "fail", stratum_labels=None):
    """JKn factors: units grouped by stratum (code level).

    ``fpc_corr_h`` is 1 - n_h/N_h per stratum (1 without fpc).
    """
    stratum_of_unit = np.asarray(stratum_of_unit, dtype=np.int64)
    n_units = stratum_of_unit.size
    n_strata = int(stratum_of_unit.max()) + 1
    n_h = np.bincount(stratum_of_unit, minlength=n_strata)
    fpc_corr_h = np.broadcast_to(np.asarray(fpc_corr_h, dtype=np.float64), (n_strata,))
    lonely = (n_h == 1) & (fpc_corr_h != 0)
    if lonely.any() and lonely_psu == "fail":
        s = stratum_labels[np.flatnonzero(lonely)[0]] if stratum_labels is not None else np.flatnonzero(lonely)[0]
        raise ReplicateError(
            f"stratum {s!r} has only one PSU; set lonely_psu to 'remove', 'certainty', 'adjust' or 'average'"
        )
    # replicate columns: one per unit in non-certainty strata with n_h > 1
    keep_unit = (fpc_corr_h[stratum_of_unit] != 0) & (n_h[stratum_of_unit] > 1)
    rep_units = np.flatnonzero(keep_unit)
    # order replicates by stratum (first appearance) then unit
    rep_units = rep_units[np.lexsort((rep_units, stratum_of_unit[rep_units]))]
    R = rep_units.size
    F = np.ones((n_units, R))
    same = stratum_of_unit[:, None] == stratum_of_unit[rep_units][None, :]
    nh_col = n_h[stratum_of_unit[rep_units]].astype(np.float64)
    F[same] = np.broadcast_to(nh_col / (nh_col - 1.0), same.shape)[same]
    F[rep_units, np.arange(R)] = 0.0
    rscales = fpc_corr_h[stratum_of_unit[rep_units]] * (nh_col - 1.0) / nh_col
    if lonely.any() and lonely_psu == "adjust":
        extra = []
        extra_sc = []
        for h in np.flatnonzero(lonely):
            col = np.where(stratum_of_unit == h, 0.0, n_strata / (n_strata - 1.0))
            extra.append(col)
            extra_sc.append((n_strata - 1.0) / n_strata)
        F = np.hstack([F, np.column_stack(extra)])
        rscales = np.concatenate([rscales, extra_sc])
        R = F.shape[1]
    if R == 0:
        raise ReplicateError("all strata were exhaustively sampled (or lonely): there is no sampling variance to replicate")
    scale = 1.0
    if R < n_units and lonely_psu == "average":
        # R's jknweights: scale by (number of PSUs)/(number of replicates)
        scale = n_units / R
    return ReplicateFactors(F, np.asarray(unit_of_row, dtype=np.int64), float(scale), rscales, "JKn")


# --------------------------------------------------------------------------
# BRR (code level)
# --------------------------------------------------------------------------


def _r_sort_key(labels) -> np.ndarray:
    """Positions of labels in R's order(as.character(x)) (C-locale string order)."""
    s = np.array([str(v) for v in labels], dtype=object)
    return np.argsort(np.argsort(s, kind="stable"), kind="stable")


def _brr_codes(unit_of_row, stratum_of_unit, stratum_labels, rho: float = 0.0, H01: np.ndarray | None = None,
               large: str = "split"):
    """BRR / Fay factors following R's brrweights (small='fail', large='split').

    Units must be numbered in order of first appearance in the data.
    """
    stratum_of_unit = np.asarray(stratum_of_unit, dtype=np.int64)
    n_units = stratum_of_unit.size
    n_strata = int(stratum_of_unit.max()) + 1
    n_h = np.bincount(stratum_of_unit, minlength=n_strata)
    if np.any(n_h < 2):
        bad = [stratum_labels[h] for h in np.flatnonzero(n_h < 2)[:10]]
        raise ReplicateError(f"BRR needs two PSUs per stratum; strata {bad} have one")
    if np.any(n_h > 2):
        if large != "split":
            bad = [stratum_labels[h] for h in np.flatnonzero(n_h > 2)[:10]]
            raise ReplicateError(f"BRR needs two PSUs per stratum; strata {bad} have more")
        if np.any(n_h[n_h > 2] % 2):
            bad = [stratum_labels[h] for h in np.flatnonzero((n_h > 2) & (n_h % 2 == 1))[:10]]
            raise ReplicateError(f"BRR: cannot split strata with an odd number of PSUs into pairs: {bad}")
    rank = _r_sort_key(stratum_labels)  # R's order of strata
    # units in R's order: by stratum label, then data order
    oo = np.lexsort((np.arange(n_units), rank[stratum_of_unit]))
    s_sorted = stratum_of_unit[oo]
    pos_in_stratum = _rank_within(s_sorted)
    first = np.zeros(n_units, dtype=bool)
    first[oo] = pos_in_stratum % 2 == 0  # 1st, 3rd, ... PSU of a stratum: weights (0, 1)
    # pair numbering: large (split) strata first in label order, then pairs
    large_mask = n_h > 2
    pair_of_unit = np.empty(n_units, dtype=np.int64)
    upto = 0
    order_strata_large = np.flatnonzero(large_mask)[np.argsort(rank[large_mask], kind="stable")]
    for h in order_strata_large:
        u = oo[s_sorted == h]
        pair_of_unit[u] = upto + np.arange(u.size) // 2
        upto += u.size // 2
    good = np.flatnonzero(~large_mask)
    good = good[np.argsort(rank[good], kind="stable")]
    good_rank = np.full(n_strata, -1, dtype=np.int64)
    good_rank[good] = np.arange(good.size)
    gm = ~large_mask[stratum_of_unit]
    pair_of_unit[gm] = upto + good_rank[stratum_of_unit[gm]]
    upto += good.size
    if H01 is None:
        H01 = _hadamard01_for(upto)
    else:
        H01 = np.asarray(H01)
        vals = np.unique(H01)
        if vals.size != 2:
            raise ReplicateError("hadamard matrix must have exactly two distinct values")
        if set(vals.tolist()) == {-1, 1}:
            H01 = (H01 + 1) // 2
        if H01.shape[0] < upto + 1:
            raise ReplicateError(f"hadamard matrix needs at least {upto + 1} rows for {upto} strata")
        pm = 2 * H01.astype(np.int64) - 1
        if not np.array_equal(pm @ pm.T, H01.shape[1] * np.eye(H01.shape[0], dtype=np.int64)):
            raise ReplicateError("the matrix given is not a Hadamard matrix")
    Hrows = H01[1 + pair_of_unit, :].astype(bool)  # (n_units, R) row k of R's H[1+k, ]
    hi, lo = 2.0 - rho, float(rho)
    F = np.where(Hrows == first[:, None], hi, lo)
    R = F.shape[1]
    method = "BRR" if rho == 0 else "Fay"
    return ReplicateFactors(F, np.asarray(unit_of_row, dtype=np.int64), 1.0 / (R * (1.0 - rho) ** 2),
                            np.ones(R), method, float(rho))


def _rank_within(sorted_codes: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal (sorted) codes."""
    n = sorted_codes.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n) - run_start


# --------------------------------------------------------------------------
# bootstrap (code level)
# --------------------------------------------------------------------------


def _draw_counts(stratum_of_unit, n_draw_h, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Counts (n_units, R): in each stratum, n_draw_h draws with replacement."""
    s = np.asarray(stratum_of_unit, dtype=np.int64)
    n_units = s.size
    order = np.argsort(s, kind="stable")
    n_strata = int(s.max()) + 1
    n_h = np.bincount(s, minlength=n_strata)
    start = np.r_[0, np.cumsum(n_h)[:-1]]
    n_draw_h = np.asarray(n_draw_h, dtype=np.int64)
    # draws: for every replicate, n_draw_h draws per stratum
    draw_stratum = np.repeat(np.arange(n_strata), n_draw_h)
    m = draw_stratum.size
    u = rng.random((replicates, m))
    pick = start[draw_stratum][None, :] + np.minimum((u * n_h[draw_stratum][None, :]).astype(np.int64),
                                                     n_h[draw_stratum][None, :] - 1)
    flat = (np.arange(replicates)[:, None] * n_units + pick).ravel()
    counts = np.bincount(flat, minlength=replicates * n_units).reshape(replicates, n_units)
    out = np.empty((n_units, replicates))
    out[order, :] = counts.T
    return out


def _bootstrap_codes(unit_of_row, stratum_of_unit, replicates: int, rng, popsize_h=None):
    s = np.asarray(stratum_of_unit, dtype=np.int64)
    n_strata = int(s.max()) + 1
    n_h = np.bincount(s, minlength=n_strata)
    if np.any(n_h < 2):
        raise ReplicateError("bootstrap needs at least two PSUs in every stratum")
    if popsize_h is None:
        F = _draw_counts(s, n_h, replicates, rng)
    else:
        # R's bootstratum with popsize: n_h draws without replacement from the
        # population made of the sampled PSUs repeated to length N_h
        F = np.zeros((s.size, replicates))
        for h in range(n_strata):
            units = np.flatnonzero(s == h)
            N = int(round(popsize_h[h]))
            copies = np.full(units.size, N // units.size)
            copies[: N % units.size] += 1
            counts = rng.multivariate_hypergeometric(copies, units.size, size=replicates)
            F[units, :] = counts.T
    nbar = 1.0 / np.mean(1.0 / n_h)
    scale = nbar / ((nbar - 1.0) * (replicates - 1.0))
    return ReplicateFactors(F, np.asarray(unit_of_row, dtype=np.int64), float(scale), np.ones(replicates), "bootstrap")


def _rao_wu_codes(unit_of_row, stratum_of_unit, replicates: int, rng):
    s = np.asarray(stratum_of_unit, dtype=np.int64)
    n_strata = int(s.max()) + 1
    n_h = np.bincount(s, minlength=n_strata)
    if np.any(n_h < 2):
        raise ReplicateError("the Rao-Wu bootstrap needs at least two PSUs in every stratum")
    counts = _draw_counts(s, n_h - 1, replicates, rng)
    F = counts * (n_h / (n_h - 1.0))[s][:, None]
    return ReplicateFactors(F, np.asarray(unit_of_row, dtype=np.int64), 1.0 / (replicates - 1.0),
                            np.ones(replicates), "rao_wu")


# --------------------------------------------------------------------------
# public builders (DataFrame level)
# --------------------------------------------------------------------------


def _with_units(rf: ReplicateFactors, units: pd.DataFrame) -> ReplicateFactors:
    return ReplicateFactors(rf.factors, rf.index, rf.scale, rf.rscales, rf.method, rf.rho, units)


def jk1(data: pd.DataFrame, psu: str | None = None, fpc=None, fpc_type: str = "population") -> ReplicateFactors:
    """Delete-one-PSU jackknife for an unstratified design.

    ``fpc``: a column name or number, the population count of PSUs
    (``fpc_type="population"``), the sampling fraction ("fraction") or
    1 - fraction ("correction").  Replicate j gives PSU j factor 0 and every
    other PSU n/(n-1); scale = (1-f)(n-1)/n.
    """
    p = _column(data, psu, "psu") if psu is not None else None
    u, s_of_u, _, units = _unit_structure(None, p, len(data))
    n = s_of_u.size
    corr = 1.0
    if fpc is not None:
        v = _column(data, fpc, "fpc") if isinstance(fpc, str) else np.asarray(fpc, dtype=float)
        vals = np.unique(np.asarray(v, dtype=float))
        if vals.size > 1:
            raise ReplicateError(f"fpc: more than one value given ({vals[:5].tolist()}) for an unstratified design")
        corr = float(_fpc_fraction(vals[0], fpc_type, np.array(n))[()])
    return _with_units(_jk1_codes(u, n, corr), units)


def jkn(data: pd.DataFrame, strata: str, psu: str | None = None, fpc=None, fpc_type: str = "population",
        lonely_psu: str = "fail") -> ReplicateFactors:
    """Stratified delete-one-PSU jackknife (R's JKn).

    PSU labels need only be unique within strata.  In the replicate deleting
    PSU i of stratum h the other PSUs of h get n_h/(n_h-1); rscales are
    (1-f_h)(n_h-1)/n_h.  Certainty strata (N_h = n_h) get no replicate.
    ``lonely_psu`` as R's ``options(survey.lonely.psu)``.
    """
    st = _column(data, strata, "strata")
    p = _column(data, psu, "psu") if psu is not None else None
    u, s_of_u, s_labels, units = _unit_structure(st, p, len(data))
    n_h = np.bincount(s_of_u, minlength=s_labels.size)
    corr = np.ones(s_labels.size)
    if fpc is not None:
        s_codes = s_of_u[u]
        v = _column(data, fpc, "fpc") if isinstance(fpc, str) else np.asarray(fpc, dtype=float)
        corr = _fpc_fraction(_per_stratum(v, s_codes, s_labels.size, "fpc"), fpc_type, n_h)
    return _with_units(_jkn_codes(u, s_of_u, corr, lonely_psu, s_labels), units)


def jk2(data: pd.DataFrame, zone: str, zone_unit: str, variant: str = "timss", double_unit=None,
        n_replicates: int | None = None) -> ReplicateFactors:
    """Paired jackknife (JK2) on sampling zones, as TIMSS and PIRLS use it.

    Each zone holds two variance units (``zone_unit``, e.g. 1/2).

    * ``variant="timss"`` (TIMSS up to 2015): one replicate per zone; the
      unit ``double_unit`` (default: the smaller label) gets factor 2, the
      other unit factor 0, all other zones 1.  Variance = sum_h (theta_h -
      theta)^2: scale 1, rscales 1 (use the design with ``mse=True`` to centre
      on the full-sample estimate as TIMSS does).
    * ``variant="full"`` (TIMSS 2019+, PIRLS 2016+): two replicates per zone,
      one doubling each unit; scale 1/2.  This equals R's JKn with zones as
      strata, because n_h/(n_h-1) = 2 and rscales (n_h-1)/n_h = 1/2.

    ``n_replicates``: pad with all-ones columns up to this many replicates
    (TIMSS always carries 75 columns).
    """
    z = _column(data, zone, "zone")
    zu = _column(data, zone_unit, "zone_unit")
    u, s_of_u, s_labels, units = _unit_structure(z, zu, len(data))
    n_h = np.bincount(s_of_u, minlength=s_labels.size)
    if np.any(n_h != 2):
        bad = [s_labels[h] for h in np.flatnonzero(n_h != 2)[:10]]
        raise ReplicateError(f"jk2: every zone needs exactly two units; zones {bad} do not")
    unit_lab = units["psu"].to_numpy()
    if double_unit is None:
        labs = pd.unique(pd.Series(unit_lab))
        try:
            double_unit = sorted(labs)[0]
        except TypeError:
            double_unit = labs[0]
    is_double = unit_lab == double_unit
    cnt = np.bincount(s_of_u, weights=is_double.astype(float), minlength=s_labels.size)
    if np.any(cnt != 1):
        bad = [s_labels[h] for h in np.flatnonzero(cnt != 1)[:10]]
        raise ReplicateError(f"jk2: zones {bad} do not have exactly one unit labelled {double_unit!r}")
    H = s_labels.size
    if variant == "timss":
        F = np.ones((s_of_u.size, H))
        F[np.arange(s_of_u.size), s_of_u] = np.where(is_double, 2.0, 0.0)
        scale, rscales, method = 1.0, np.ones(H), "JK2"
    elif variant == "full":
        F = np.ones((s_of_u.size, 2 * H))
        col_d = 2 * s_of_u
        F[np.arange(s_of_u.size), col_d] = np.where(is_double, 2.0, 0.0)
        F[np.arange(s_of_u.size), col_d + 1] = np.where(is_double, 0.0, 2.0)
        scale, rscales, method = 0.5, np.ones(2 * H), "JK2"
    else:
        raise ReplicateError(f"jk2: variant must be 'timss' or 'full', got {variant!r}")
    if n_replicates is not None:
        if n_replicates < F.shape[1]:
            raise ReplicateError(f"jk2: {F.shape[1]} replicates needed, n_replicates={n_replicates} is too few")
        F = np.hstack([F, np.ones((F.shape[0], n_replicates - F.shape[1]))])
        rscales = np.ones(n_replicates)
    return ReplicateFactors(F, u, float(scale), rscales, method, 0.0, units)


def brr(data: pd.DataFrame, strata: str, psu: str | None = None, rho: float = 0.0, hadamard_matrix=None) -> ReplicateFactors:
    """Balanced repeated replication (Fay's method when ``rho`` > 0).

    Strata must hold two PSUs (even larger strata are split into pairs in
    data order, as R does).  Replicate r gives the first PSU of stratum k
    (strata ordered as R orders their labels as text) the factor 2-rho and
    the second rho when row k of the Hadamard matrix is +1 in column r, and
    the reverse otherwise.  R = order of the Hadamard matrix, the smallest
    greater than the number of strata (:func:`hadamard_order`), unless one is
    given; scale 1/(R (1-rho)^2).
    """
    if not 0 <= rho < 1:
        raise ReplicateError(f"rho must be in [0, 1), got {rho}")
    st = _column(data, strata, "strata")
    p = _column(data, psu, "psu") if psu is not None else None
    u, s_of_u, s_labels, units = _unit_structure(st, p, len(data))
    rf = _brr_codes(u, s_of_u, s_labels, rho, hadamard_matrix)
    return _with_units(rf, units)


def fay(data: pd.DataFrame, strata: str, psu: str | None = None, rho: float = 0.5, hadamard_matrix=None) -> ReplicateFactors:
    """Fay's modified BRR (default rho = 0.5, as PISA: 80 replicates for up to 79 zones)."""
    if rho <= 0:
        raise ReplicateError("Fay's method needs rho > 0 (rho = 0 is plain BRR)")
    return brr(data, strata, psu, rho, hadamard_matrix)


def bootstrap(data: pd.DataFrame, strata: str | None = None, psu: str | None = None, replicates: int = 50,
              seed=None, fpc=None, fpc_type: str = "population") -> ReplicateFactors:
    """R's survey bootstrap (``bootweights``; Canty & Davison 1999).

    In each stratum n_h PSUs are drawn with replacement (without replacement
    from the sample repeated to the population size when ``fpc`` is given);
    the factor is the number of times a PSU is drawn.  scale =
    nbar/((nbar-1)(R-1)), nbar the harmonic mean of the n_h.  ``seed`` is an
    int or a ``numpy.random.Generator``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    st = _column(data, strata, "strata") if strata is not None else None
    p = _column(data, psu, "psu") if psu is not None else None
    u, s_of_u, s_labels, units = _unit_structure(st, p, len(data))
    pop = None
    if fpc is not None:
        n_h = np.bincount(s_of_u, minlength=s_labels.size)
        v = _column(data, fpc, "fpc") if isinstance(fpc, str) else np.asarray(fpc, dtype=float)
        per = _per_stratum(v, s_of_u[u], s_labels.size, "fpc")
        if fpc_type == "population":
            pop = per
        elif fpc_type == "fraction":
            pop = n_h / per
        else:
            pop = n_h / (1 - per)
    return _with_units(_bootstrap_codes(u, s_of_u, replicates, rng, pop), units)


def rao_wu(data: pd.DataFrame, strata: str | None = None, psu: str | None = None, replicates: int = 50,
           seed=None) -> ReplicateFactors:
    """Rao-Wu rescaling bootstrap (R's "subbootstrap"): n_h - 1 PSUs drawn
    with replacement per stratum, factor = count * n_h/(n_h-1), scale 1/(R-1)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    st = _column(data, strata, "strata") if strata is not None else None
    p = _column(data, psu, "psu") if psu is not None else None
    u, s_of_u, s_labels, units = _unit_structure(st, p, len(data))
    return _with_units(_rao_wu_codes(u, s_of_u, replicates, rng), units)
