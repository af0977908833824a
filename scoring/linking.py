"""Linking a new calibration to the base-year scale through anchor items.

Scale relation (Kolen & Brennan 2014, ch. 6): ``theta_base = A * theta_new + B``.
New-form parameters move to the base scale as ``a -> a / A``, every difficulty
or threshold ``b -> A b + B``, guessing ``c`` unchanged; in mirt's
slope-intercept form that is ``d -> d - a B / A`` (dichotomous and GRM) and
``d_k -> d_k - k a B / A`` (GPCM, ``d_0 = 0``). Item response functions come
from :mod:`qualmon.scoring.models`, so every family it knows (Rasch, 2PL, 3PL,
GRM, GPCM, PCM) can be linked.

Methods (on the anchor items):

* ``mean_mean``  -- ``A = mean(a_new) / mean(a_base)``, ``B = mean(b_base) - A mean(b_new)``;
* ``mean_sigma`` -- ``A = sd(b_base) / sd(b_new)``, same ``B`` (Marco 1977);
* ``haebara``    -- minimise ``sum_q w_q sum_j sum_k (P_jk(theta_q; base) - P_jk(theta_q; new*))^2``
  (Haebara 1980; categories summed for polytomous items, Kim & Lee 2006);
* ``stocking_lord`` -- minimise ``sum_q w_q (sum_j E_j(theta_q; base) - sum_j E_j(theta_q; new*))^2``
  (Stocking & Lord 1983), ``E_j`` the expected item score;

``new*`` the new-form parameters transformed with (A, B); ``theta_q`` a grid on
the base scale with weights ``w_q`` (default 41 points on [-4, 4] with N(0, 1)
density weights). ``symmetric=True`` adds the criterion in the reverse
direction. Rasch/PCM-only anchor sets fix ``A = 1`` by default.

Linking error (for trend SEs): delete-one jackknife over anchor items or anchor
units (testlets), ``se^2 = (G-1)/G sum_g (est_(g) - mean)^2``, and the PISA
item-shift formula ``sigma^2_link = var(shift_j) / L`` with ``shift_j`` the
difference of an anchor's location on the base scale between the two
calibrations after linking (the link error PISA reported from 2006 to 2012,
computed on the link items' parameter shifts; here with the unbiased variance,
ddof = 1, which makes it coincide with the jackknife SE of the mean-mean shift;
PISA 2015 onwards uses a different, country-level method).

Fixed-anchor calibration (:func:`fixed_anchor`) is the alternative: the new
year's responses are calibrated with the anchors' base-year parameters held
fixed.

Drift: robust z of the anchors' location differences after linking,
``z = (x - median x) / (0.7413 IQR x)``, flagged when ``|z| > 2.7`` (Huynh &
Meyer 2010), optionally also the weighted RMSD between the base and linked-new
expected-score curves; :func:`link` can drop flagged anchors and relink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from qualmon.scoring.models import models_from_table

__all__ = [
    "LinkingError",
    "LinkingResult",
    "METHODS",
    "link",
    "linking_constants",
    "anchor_drift",
    "shift_linking_error",
    "transform_items",
    "default_theta_grid",
    "fixed_anchor",
]

METHODS = ("mean_mean", "mean_sigma", "haebara", "stocking_lord")
_ALIASES = {"mm": "mean_mean", "mean/mean": "mean_mean", "ms": "mean_sigma", "mean/sigma": "mean_sigma",
            "hb": "haebara", "sl": "stocking_lord", "stocking-lord": "stocking_lord"}
_FIXED_SLOPE = ("Rasch", "PCM")


class LinkingError(ValueError):
    """Bad input to the linking functions."""


def default_theta_grid(n: int = 41, lo: float = -4.0, hi: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Equally spaced theta grid with normalised N(0, 1) density weights."""
    t = np.linspace(lo, hi, n)
    w = stats.norm.pdf(t)
    return t, w / w.sum()


# --------------------------------------------------------------------------
# item tables
# --------------------------------------------------------------------------


@dataclass
class _Group:
    model: Any
    items: list
    par: np.ndarray  # natural parameters (m, p)
    irt: np.ndarray  # IRT parameters (m, p)


def _groups(table: pd.DataFrame, items: Sequence[Any], name: str) -> list[_Group]:
    if not isinstance(table, pd.DataFrame):
        raise LinkingError(f"{name} must be an item-parameter DataFrame indexed by item, got {type(table).__name__}")
    sub = table.loc[list(items)]
    try:
        parsed = models_from_table(sub)
    except ValueError as e:
        raise LinkingError(f"{name}: {e}") from None
    buckets: dict[tuple, _Group] = {}
    for item, (m, p) in parsed.items():
        key = (m.family, m.n_cat)
        g = buckets.get(key)
        if g is None:
            buckets[key] = _Group(m, [item], p[None, :], m.to_irt(p)[None, :])
        else:
            g.items.append(item)
            g.par = np.vstack([g.par, p])
            g.irt = np.vstack([g.irt, m.to_irt(p)])
    bad = [(it, g.model.family) for g in buckets.values() for it, a in zip(g.items, g.irt[:, 0]) if not (np.isfinite(a) and a > 0)]
    if bad:
        raise LinkingError(f"{name}: slopes must be positive and finite; invalid for {bad[:10]}")
    return list(buckets.values())


def _subset(groups: list[_Group], keep: Sequence[Any]) -> list[_Group]:
    ks = set(keep)
    out = []
    for g in groups:
        rows = [r for r, it in enumerate(g.items) if it in ks]
        if rows:
            out.append(_Group(g.model, [g.items[r] for r in rows], g.par[rows], g.irt[rows]))
    return out


def _transform_irt(model, irt: np.ndarray, A: float, B: float) -> np.ndarray:
    out = irt.copy()
    names = model.irt_names
    out[:, 0] = irt[:, 0] / A
    for j, nm in enumerate(names):
        if nm.startswith("b"):
            out[:, j] = A * irt[:, j] + B
    return out


def _probs(groups: list[_Group], theta: np.ndarray, A: float = 1.0, B: float = 0.0,
           order: Sequence[Any] | None = None) -> np.ndarray:
    """Category probabilities of the items in ``groups`` transformed with (A, B),
    stacked as ``(L, q, K_max)`` in ``order`` (zero-padded categories)."""
    parts = {}
    kmax = max(g.model.n_cat for g in groups)
    for g in groups:
        if A == 1.0 and B == 0.0:
            par = g.par
        else:
            par = g.model.from_irt(_transform_irt(g.model, g.irt, A, B))
        P = g.model.prob(par, theta)
        for r, it in enumerate(g.items):
            parts[it] = P[r]
    if order is None:
        order = [it for g in groups for it in g.items]
    out = np.zeros((len(order), theta.size, kmax))
    for i, it in enumerate(order):
        out[i, :, : parts[it].shape[-1]] = parts[it]
    return out


def _tcc(P: np.ndarray) -> np.ndarray:
    return (P @ np.arange(P.shape[-1], dtype=float)).sum(0)


def _eval(groups: list[_Group], order: Sequence[Any], theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P and dP/dtheta of the items (untransformed) at ``theta``, stacked
    ``(L, q, K_max)`` in ``order`` with zero-padded categories."""
    kmax = max(g.model.n_cat for g in groups)
    pos = {it: i for i, it in enumerate(order)}
    P = np.zeros((len(order), theta.size, kmax))
    D = np.zeros_like(P)
    for g in groups:
        p, d1, _ = g.model.theta_derivs(g.par, theta)
        rows = [pos[it] for it in g.items]
        P[rows, :, : g.model.n_cat] = p
        D[rows, :, : g.model.n_cat] = d1
    return P, D


def _align(new_g: list[_Group], base_g: list[_Group], anchors: list) -> tuple[list[_Group], list[_Group]]:
    """Group anchors by (family, n_cat) identically on both forms."""
    def fam(groups):
        return {it: (g.model.family, g.model.n_cat) for g in groups for it in g.items}
    fn, fb = fam(new_g), fam(base_g)
    mism = [(a, fn[a], fb[a]) for a in anchors if fn[a][1] != fb[a][1]]
    if mism:
        raise LinkingError(f"anchor items differ in number of categories between the forms: {mism[:5]}")
    return new_g, base_g


def _anchor_set(new_items: pd.DataFrame, base_items: pd.DataFrame, anchors: Sequence[Any] | None) -> list:
    if anchors is None:
        anchors = [i for i in new_items.index if i in base_items.index]
    anchors = list(anchors)
    if len(set(anchors)) != len(anchors):
        raise LinkingError("anchors contains duplicates")
    miss_n = [a for a in anchors if a not in new_items.index]
    miss_b = [a for a in anchors if a not in base_items.index]
    if miss_n or miss_b:
        raise LinkingError(f"anchors missing from new_items {miss_n[:10]} / from base_items {miss_b[:10]}")
    if len(anchors) < 2:
        raise LinkingError(f"linking needs at least 2 anchor items, got {len(anchors)}")
    return anchors


def _method(method: str) -> str:
    m = str(method).lower().replace("-", "_").replace(" ", "_")
    m = _ALIASES.get(str(method).lower(), m)
    if m not in METHODS:
        raise LinkingError(f"method must be one of {METHODS}, got {method!r}")
    return m


def _theta_grid(theta: Any, theta_weights: Any) -> tuple[np.ndarray, np.ndarray]:
    if theta is None:
        if theta_weights is not None:
            raise LinkingError("theta_weights given without theta")
        return default_theta_grid()
    t = np.asarray(theta, dtype=float).ravel()
    if t.size < 2 or not np.all(np.isfinite(t)):
        raise LinkingError("theta must hold at least two finite grid points")
    if theta_weights is None:
        w = np.full(t.size, 1.0 / t.size)
    else:
        w = np.asarray(theta_weights, dtype=float).ravel()
        if w.shape != t.shape or np.any(~np.isfinite(w) | (w < 0)) or w.sum() <= 0:
            raise LinkingError("theta_weights must be finite, >= 0, not all zero, one per theta point")
        w = w / w.sum()
    return t, w


# --------------------------------------------------------------------------
# the four methods
# --------------------------------------------------------------------------


def _moments(new_g, base_g, anchors):
    """Anchor slopes and all difficulty/threshold parameters, aligned by item."""
    def collect(groups):
        a, b = {}, {}
        for g in groups:
            bidx = [j for j, nm in enumerate(g.model.irt_names) if nm.startswith("b")]
            for it, row in zip(g.items, g.irt):
                a[it] = row[0]
                b[it] = row[bidx]
        return a, b
    an, bn = collect(new_g)
    ab, bb = collect(base_g)
    a_new = np.array([an[i] for i in anchors])
    a_base = np.array([ab[i] for i in anchors])
    b_new = np.concatenate([bn[i] for i in anchors])
    b_base = np.concatenate([bb[i] for i in anchors])
    return a_new, a_base, b_new, b_base


def _solve(new_g, base_g, anchors, method, t, w, symmetric, fix_A, start=None) -> tuple[float, float, float]:
    a_new, a_base, b_new, b_base = _moments(new_g, base_g, anchors)
    if method == "mean_mean" or (fix_A and method == "mean_sigma"):
        A = 1.0 if fix_A else float(a_new.mean() / a_base.mean())
        return A, float(b_base.mean() - A * b_new.mean()), np.nan
    sd_new = b_new.std()
    if method == "mean_sigma":
        if sd_new <= 0:
            raise LinkingError("mean_sigma: the anchors' difficulties have zero spread on the new form")
        A = float(b_base.std() / sd_new)
        return A, float(b_base.mean() - A * b_new.mean()), np.nan

    # P_new*(theta; A, B) = P_new(u) with u = (theta - B) / A, so the criteria and
    # their gradients only need the item response functions and dP/dtheta.
    P_base, _ = _eval(base_g, anchors, t)
    kvec = np.arange(P_base.shape[-1], dtype=float)
    E_base = (P_base @ kvec).sum(0)
    if symmetric:
        P_new0, _ = _eval(new_g, anchors, t)
        E_new0 = (P_new0 @ kvec).sum(0)

    sw = np.sqrt(w)

    def piece(P_target, E_target, groups, u, du_dA, du_dB):
        """Residuals sqrt(w_q) (target - model) and their derivatives w.r.t. (A, B)."""
        P, dP = _eval(groups, anchors, u)
        if method == "haebara":
            res = (sw[None, :, None] * (P_target - P)).ravel()
            dres_du = -(sw[None, :, None] * dP)
            jA = (dres_du * du_dA[None, :, None]).ravel()
            jB = (dres_du * du_dB[None, :, None]).ravel()
        else:
            E = (P @ kvec).sum(0)
            dE = (dP @ kvec).sum(0)
            res = sw * (E_target - E)
            jA = -sw * dE * du_dA
            jB = -sw * dE * du_dB
        return res, jA, jB

    def resid(x):
        A = 1.0 if fix_A else float(np.exp(x[0]))
        B = float(x[-1])
        u = (t - B) / A
        r, jA, jB = piece(P_base, E_base, new_g, u, -u / A, np.full_like(t, -1.0 / A))
        if symmetric:
            v = A * t + B
            r2, jA2, jB2 = piece(P_new0, E_new0, base_g, v, t, np.ones_like(t))
            r, jA, jB = np.concatenate([r, r2]), np.concatenate([jA, jA2]), np.concatenate([jB, jB2])
        J = jB[:, None] if fix_A else np.column_stack([jA * A, jB])  # d/d(log A) = A d/dA
        return r, J

    if start is None:
        if fix_A:
            start = (1.0, float(b_base.mean() - b_new.mean()))
        else:
            A0 = float(b_base.std() / sd_new) if sd_new > 0 else 1.0
            A0 = A0 if np.isfinite(A0) and A0 > 0 else 1.0
            start = (A0, float(b_base.mean() - A0 * b_new.mean()))
    x0 = np.array([start[1]]) if fix_A else np.array([np.log(start[0]), start[1]])
    cache: dict = {}

    def fun(x):
        cache["r"], cache["J"] = resid(x)
        cache["x"] = np.array(x)
        return cache["r"]

    def jac(x):
        if "x" not in cache or not np.array_equal(cache["x"], x):
            fun(x)
        return cache["J"]

    res = optimize.least_squares(fun, x0, jac=jac, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    A = 1.0 if fix_A else float(np.exp(res.x[0]))
    return A, float(res.x[-1]), float(2.0 * res.cost)


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


def transform_items(items: pd.DataFrame, A: float, B: float) -> pd.DataFrame:
    """Put an item-parameter table on the base scale (``theta_base = A theta + B``).

    ``a -> a/A``, ``b, b1.. -> A b + B``, slope-intercept ``d`` columns
    recomputed from the transformed IRT parameters, ``c`` unchanged. Standard
    errors: ``se_a -> se_a / A`` and ``se_b* -> A se_b*``; ``se_d*`` are kept
    when the slope is fixed (Rasch/PCM, where ``d -> d - aB/A`` is a pure
    shift) and set to NaN otherwise (their transform needs the a-d covariance).
    """
    if not (np.isfinite(A) and A > 0 and np.isfinite(B)):
        raise LinkingError(f"A must be positive and finite and B finite, got A={A}, B={B}")
    parsed = models_from_table(items)
    out = items.copy()
    for item, (m, p) in parsed.items():
        irt = _transform_irt(m, m.to_irt(p)[None, :], A, B)
        par = m.from_irt(irt)[0]
        irt = irt[0]
        K = m.n_cat
        out.loc[item, "a"] = par[0]
        dcols = ["d"] if K == 2 else [f"d{k}" for k in range(1, K)]
        bcols = ["b"] if K == 2 else [f"b{k}" for k in range(1, K)]
        for j, cn in enumerate(dcols):
            out.loc[item, cn] = par[1 + j]
        bidx = [j for j, nm in enumerate(m.irt_names) if nm.startswith("b")]
        for cn, j in zip(bcols, bidx):
            out.loc[item, cn] = irt[j]
        fixed_slope = m.family in _FIXED_SLOPE
        for col in out.columns:
            if not str(col).startswith("se_") or pd.isna(out.loc[item, col]):
                continue
            base = str(col)[3:]
            if base == "a":
                out.loc[item, col] = out.loc[item, col] / A if not fixed_slope else out.loc[item, col]
            elif base == "b" or (base.startswith("b") and base[1:].isdigit()):
                out.loc[item, col] = A * out.loc[item, col]
            elif base == "d" or (base.startswith("d") and base[1:].isdigit()):
                if not (fixed_slope or B == 0.0):
                    out.loc[item, col] = np.nan
    return out


@dataclass
class LinkingResult:
    """Linking constants ``theta_base = A * theta_new + B`` and diagnostics.

    ``jackknife`` holds the delete-one-unit constants; ``se_A``, ``se_B``,
    ``cov_AB`` their jackknife (co)variances; ``drift`` the anchor drift table
    at the final constants; ``dropped`` the anchors removed for drift.
    """

    A: float
    B: float
    method: str
    anchors: list
    criterion: float = float("nan")
    se_A: float = float("nan")
    se_B: float = float("nan")
    cov_AB: float = float("nan")
    jackknife: pd.DataFrame | None = None
    drift: pd.DataFrame | None = None
    dropped: list = field(default_factory=list)
    symmetric: bool = False
    fix_A: bool = False
    theta: np.ndarray | None = None
    theta_weights: np.ndarray | None = None

    def transform_theta(self, theta: Any) -> Any:
        """New-scale abilities on the base scale: ``A theta + B`` (same type)."""
        if isinstance(theta, (pd.Series, pd.DataFrame)):
            return theta * self.A + self.B
        return np.asarray(theta, dtype=float) * self.A + self.B

    def transform_se(self, se: Any) -> Any:
        """Ability SEs on the base scale: ``A se``."""
        if isinstance(se, (pd.Series, pd.DataFrame)):
            return se * self.A
        return np.asarray(se, dtype=float) * self.A

    def transform_items(self, items: pd.DataFrame) -> pd.DataFrame:
        """New-form item table on the base scale (see :func:`transform_items`)."""
        return transform_items(items, self.A, self.B)

    def linking_error(self, theta: float = 0.0, scale: Any = None) -> float:
        """Jackknife SE of the linked value ``A theta + B`` at new-scale ``theta``
        (``theta = 0``: the SE of B; the new-year mean on the base scale uses
        its new-scale mean). With ``scale`` (e.g. a
        :class:`~qualmon.scoring.levels.ReportingScale`) the SE is returned on
        that scale via ``scale.transform_se``."""
        if self.jackknife is None or len(self.jackknife) < 2:
            return float("nan")
        jk = self.jackknife
        vals = jk["A"].to_numpy() * theta + jk["B"].to_numpy()
        G = vals.size
        se = float(np.sqrt((G - 1) / G * np.sum((vals - vals.mean()) ** 2)))
        if scale is not None:
            return float(np.ravel(scale.transform_se(np.array([se])))[0])
        return se

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"estimate": [self.A, self.B], "se": [self.se_A, self.se_B]},
            index=pd.Index(["A", "B"], name="constant"),
        ).assign(method=self.method, n_anchors=len(self.anchors), n_dropped=len(self.dropped))

    def _repr_html_(self) -> str:
        head = (f"<p><b>Linking</b> ({escape(self.method)}{', symmetric' if self.symmetric else ''}): "
                f"&theta;<sub>base</sub> = {self.A:.4f} &theta;<sub>new</sub> + {self.B:.4f}; "
                f"{len(self.anchors)} anchors" + (f", dropped for drift: {escape(str(self.dropped))}" if self.dropped else "")
                + "</p>")
        return head + self.summary().to_html(float_format="%.4f")


def _jackknife(new_g_fn, base_g_fn, anchors, units, method, t, w, symmetric, fix_A, start):
    if units is None:
        labels = list(anchors)
        unit_of = {a: a for a in anchors}
    else:
        us = pd.Series(units)
        missing = [a for a in anchors if a not in us.index]
        if missing:
            raise LinkingError(f"units has no unit for anchors {missing[:10]}")
        unit_of = {a: us[a] for a in anchors}
        labels = list(dict.fromkeys(unit_of[a] for a in anchors))
    if len(labels) < 3:
        return None
    rows = []
    for u in labels:
        keep = [a for a in anchors if unit_of[a] != u]
        if len(keep) < 2:
            return None
        A, B, _ = _solve(new_g_fn(keep), base_g_fn(keep), keep, method, t, w, symmetric, fix_A, start)
        rows.append({"unit": u, "A": A, "B": B, "n_anchors": len(keep)})
    return pd.DataFrame(rows).set_index("unit")


def _jk_stats(jk: pd.DataFrame | None) -> tuple[float, float, float]:
    if jk is None or len(jk) < 2:
        return np.nan, np.nan, np.nan
    G = len(jk)
    dA = jk["A"] - jk["A"].mean()
    dB = jk["B"] - jk["B"].mean()
    f = (G - 1) / G
    return float(np.sqrt(f * (dA**2).sum())), float(np.sqrt(f * (dB**2).sum())), float(f * (dA * dB).sum())


def _robust_z(x: np.ndarray) -> np.ndarray:
    q75, q25 = np.nanpercentile(x, [75, 25])
    iqr = q75 - q25
    if not iqr > 1e-9 * max(1.0, float(np.nanmax(np.abs(x)))):
        return np.full(x.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - np.nanmedian(x)) / (0.7413 * iqr)
    return np.where(iqr > 0, z, np.nan)


def anchor_drift(
    new_items: pd.DataFrame,
    base_items: pd.DataFrame,
    A: float,
    B: float,
    anchors: Sequence[Any] | None = None,
    z_threshold: float = 2.7,
    rmsd_threshold: float | None = None,
    check_a: bool = False,
    theta: Any = None,
    theta_weights: Any = None,
) -> pd.DataFrame:
    """Drift of the anchors after linking with (A, B).

    Per anchor: ``b_base`` and ``b_linked`` (the item location, the mean of its
    thresholds for polytomous items, on the base scale), ``b_diff = b_linked -
    b_base``, its robust z ``(x - median) / (0.7413 IQR)`` (Huynh & Meyer
    2010), ``log_a_ratio = log(a_linked / a_base)`` and its robust z, and
    ``rmsd``, the theta-weighted root mean squared difference between the base
    and linked expected-score curves divided by the maximum score.
    ``flag`` is ``|z_b| > z_threshold`` (default 2.7), or ``|z_a| >
    z_threshold`` when ``check_a``, or ``rmsd > rmsd_threshold`` when given.
    """
    anchors = _anchor_set(new_items, base_items, anchors)
    t, w = _theta_grid(theta, theta_weights)
    ng = _groups(new_items, anchors, "new_items")
    bg = _groups(base_items, anchors, "base_items")

    def per_item(groups, A_, B_):
        loc, slope, curve, kmax = {}, {}, {}, {}
        P = _probs(groups, t, A_, B_, order=anchors)
        E = P @ np.arange(P.shape[-1], dtype=float)
        for g in groups:
            irt = _transform_irt(g.model, g.irt, A_, B_)
            bidx = [j for j, nm in enumerate(g.model.irt_names) if nm.startswith("b")]
            for r, it in enumerate(g.items):
                loc[it] = float(np.mean(irt[r, bidx]))
                slope[it] = float(irt[r, 0])
                curve[it] = E[anchors.index(it)]
                kmax[it] = g.model.n_cat - 1
        return loc, slope, curve, kmax

    lb, sb, cb, km = per_item(bg, 1.0, 0.0)
    ln, sn, cn, _ = per_item(ng, A, B)
    df = pd.DataFrame({
        "b_base": [lb[a] for a in anchors],
        "b_linked": [ln[a] for a in anchors],
        "a_base": [sb[a] for a in anchors],
        "a_linked": [sn[a] for a in anchors],
        "rmsd": [float(np.sqrt(np.sum(w * (cn[a] - cb[a]) ** 2))) / km[a] for a in anchors],
    }, index=pd.Index(anchors, name="item"))
    df["b_diff"] = df["b_linked"] - df["b_base"]
    df["z_b"] = _robust_z(df["b_diff"].to_numpy())
    df["log_a_ratio"] = np.log(df["a_linked"] / df["a_base"])
    df["z_a"] = _robust_z(df["log_a_ratio"].to_numpy())
    flag = np.abs(df["z_b"].to_numpy()) > z_threshold
    if check_a:
        flag |= np.abs(df["z_a"].to_numpy()) > z_threshold
    if rmsd_threshold is not None:
        flag |= df["rmsd"].to_numpy() > rmsd_threshold
    df["flag"] = np.where(np.isnan(df["z_b"].to_numpy()) & ~flag, False, flag)
    return df[["b_base", "b_linked", "b_diff", "z_b", "a_base", "a_linked", "log_a_ratio", "z_a", "rmsd", "flag"]]


def link(
    new_items: pd.DataFrame,
    base_items: pd.DataFrame,
    anchors: Sequence[Any] | None = None,
    method: str = "stocking_lord",
    theta: Any = None,
    theta_weights: Any = None,
    symmetric: bool = False,
    fix_A: bool | None = None,
    units: Mapping[Any, Any] | pd.Series | None = None,
    jackknife: bool = True,
    drop_drift: bool = False,
    drift_z: float = 2.7,
    drift_rmsd: float | None = None,
    drift_check_a: bool = False,
    min_anchors: int = 4,
    start: tuple[float, float] | None = None,
) -> LinkingResult:
    """Link the new calibration to the base scale through the anchors.

    Parameters
    ----------
    new_items, base_items : item tables like ``Calibration.items`` (index item;
        ``model`` and ``a``, ``d``/``d1..`` or ``b``/``b1..``, ``c``).
    anchors : common items (default: items in both tables).
    method : ``stocking_lord`` (default), ``haebara``, ``mean_sigma``, ``mean_mean``.
    theta, theta_weights : quadrature grid on the base scale for the
        characteristic-curve methods (default :func:`default_theta_grid`).
    symmetric : add the reverse-direction criterion (characteristic-curve methods).
    fix_A : hold ``A = 1`` (default: when every anchor is Rasch/PCM on both forms).
    units : anchor -> unit (testlet) map; the jackknife deletes one unit at a time.
    jackknife : compute the delete-one jackknife SEs of A and B.
    drop_drift : drop anchors flagged by :func:`anchor_drift` and relink, until
        no anchor is flagged or only ``min_anchors`` remain.
    start : starting (A, B) for the characteristic-curve methods (default:
        the mean-sigma constants). The criteria are minimised by Levenberg-Marquardt on
        (log A, B) with the analytic Jacobian of the residuals, using
        ``P_j(theta; new*) = P_j((theta - B) / A; new)``.
    """
    method = _method(method)
    anchors = _anchor_set(new_items, base_items, anchors)
    t, w = _theta_grid(theta, theta_weights)
    full_new = _groups(new_items, anchors, "new_items")
    full_base = _groups(base_items, anchors, "base_items")
    _align(full_new, full_base, anchors)
    fams = {g.model.family for g in full_new + full_base}
    if fix_A is None:
        fix_A = fams <= set(_FIXED_SLOPE)

    def new_g(keep):
        return _subset(full_new, keep)

    def base_g(keep):
        return _subset(full_base, keep)

    used = list(anchors)
    dropped: list = []
    while True:
        A, B, crit = _solve(new_g(used), base_g(used), used, method, t, w, symmetric, fix_A, start)
        drift = anchor_drift(new_items, base_items, A, B, anchors, drift_z, drift_rmsd, drift_check_a, t, w)
        if not drop_drift:
            break
        # recompute the robust z among the anchors still in use
        sub = anchor_drift(new_items, base_items, A, B, used, drift_z, drift_rmsd, drift_check_a, t, w)
        flagged = list(sub.index[sub["flag"].to_numpy()])
        if not flagged or len(used) - len(flagged) < min_anchors:
            break
        used = [a for a in used if a not in flagged]
        dropped.extend(flagged)
    drift = drift.assign(used=[a in used for a in drift.index])
    jk = None
    if jackknife:
        jk = _jackknife(new_g, base_g, used, units, method, t, w, symmetric, fix_A, (A, B))
    se_A, se_B, cov = _jk_stats(jk)
    if fix_A:
        se_A, cov = 0.0, 0.0
    return LinkingResult(A=A, B=B, method=method, anchors=used, criterion=crit, se_A=se_A, se_B=se_B, cov_AB=cov,
                         jackknife=jk, drift=drift, dropped=dropped, symmetric=symmetric, fix_A=bool(fix_A),
                         theta=t, theta_weights=w)


def linking_constants(
    new_items: pd.DataFrame,
    base_items: pd.DataFrame,
    anchors: Sequence[Any] | None = None,
    methods: Sequence[str] = METHODS,
    **kwargs: Any,
) -> pd.DataFrame:
    """A and B (with jackknife SEs) from several methods side by side."""
    rows = {}
    for m in methods:
        r = link(new_items, base_items, anchors, method=m, **kwargs)
        rows[r.method] = {"A": r.A, "B": r.B, "se_A": r.se_A, "se_B": r.se_B, "n_anchors": len(r.anchors)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "method"
    return out


def shift_linking_error(
    new_items: pd.DataFrame,
    base_items: pd.DataFrame,
    result: LinkingResult | None = None,
    anchors: Sequence[Any] | None = None,
    scale: Any = None,
) -> float:
    """PISA-style linking error ``sqrt(var(shift_j) / L)`` of the anchors' item
    location shifts after linking (``shift_j = b_linked - b_base``, the mean
    threshold for polytomous items; ``var`` with ddof = 1; ``L`` anchors).
    Without ``result`` the forms are taken as already on one scale (A = 1, B = 0).
    With ``scale`` the error is returned on the reporting scale."""
    A, B = (result.A, result.B) if result is not None else (1.0, 0.0)
    if anchors is None and result is not None:
        anchors = result.anchors
    d = anchor_drift(new_items, base_items, A, B, anchors)
    shift = d["b_diff"].to_numpy()
    L = shift.size
    if L < 2:
        return float("nan")
    se = float(np.sqrt(np.var(shift, ddof=1) / L))
    if scale is not None:
        return float(np.ravel(scale.transform_se(np.array([se])))[0])
    return se


def fixed_anchor(
    responses: Any,
    base_items: pd.DataFrame,
    anchors: Sequence[Any] | None = None,
    model: Any = "2PL",
    weights: Any = None,
    **calibrate_kwargs: Any,
):
    """Fixed-anchor (fixed-parameter) calibration of a new year's responses.

    The anchors' parameters are held at their base-year values and the other
    items plus the latent mean and variance are estimated by
    :func:`qualmon.scoring.calibrate` (``fixed=``), so the new
    items and the new population land directly on the base scale (Kim 2006,
    JEM 43, 355-381). ``anchors`` defaults to the response columns present in
    ``base_items``; ``model`` and ``calibrate_kwargs`` are passed on (the
    anchors keep their base-year model). Returns the
    :class:`~qualmon.scoring.calibration.Calibration`; its ``latent`` table holds
    the new population's mean and variance on the base scale.
    """
    from qualmon.scoring.calibration import calibrate

    if not isinstance(base_items, pd.DataFrame):
        raise LinkingError("base_items must be an item-parameter DataFrame indexed by item")
    if isinstance(responses, pd.DataFrame) and {"student_id", "item_id"} <= set(responses.columns):
        cols = list(pd.unique(responses["item_id"]))
    elif isinstance(responses, pd.DataFrame):
        cols = list(responses.columns)
    else:
        raise LinkingError("responses must be a wide DataFrame (students x items) or a long table with item_id")
    if anchors is None:
        anchors = [c for c in cols if c in base_items.index]
    anchors = list(anchors)
    missing_b = [a for a in anchors if a not in base_items.index]
    missing_r = [a for a in anchors if a not in cols]
    if missing_b or missing_r:
        raise LinkingError(f"anchors missing from base_items {missing_b[:10]} / from responses {missing_r[:10]}")
    if not anchors:
        raise LinkingError("no anchor items: no response column is in base_items")
    return calibrate(responses, model=model, weights=weights, fixed=base_items.loc[anchors], **calibrate_kwargs)
