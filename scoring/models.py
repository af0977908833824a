"""Item response models (one small class per IRT family).

Conventions follow R's mirt (Chalmers 2012, *J. Stat. Softw.* 48(6)):

* dichotomous (``Rasch``/``1PL``, ``2PL``, ``3PL``), slope-intercept form, no 1.7
  constant::

      P(X = 1 | theta) = c + (1 - c) / (1 + exp(-(a * theta + d))),   b = -d / a

  ``Rasch`` (alias ``1PL``) fixes ``a = 1`` (the latent variance is then estimated
  by the calibration); ``2PL`` fixes ``c = 0``; ``3PL`` estimates ``c`` on the
  logit scale (as mirt does, ``logit(g)``), so its standard error is reported for
  ``c`` by the delta method.
* graded response (``GRM``, mirt ``"graded"``; Samejima 1969), K ordered
  categories scored 0..K-1::

      P(X >= k | theta) = 1 / (1 + exp(-(a * theta + d_k))),  k = 1..K-1,
      d_1 > d_2 > ... > d_{K-1},   P(X = k) = P(X >= k) - P(X >= k + 1),
      b_k = -d_k / a

* generalized partial credit (``GPCM``, mirt ``"gpcm"``; Muraki 1992)::

      P(X = k | theta) = exp(a * k * theta + d_k) / sum_h exp(a * h * theta + d_h),
      d_0 = 0,  conventional step thresholds b_k = -(d_k - d_{k-1}) / a

  (``PCM`` fixes ``a = 1``; the partial credit model).

Every model works on a *batch* of items of the same family and number of
categories: natural parameters ``par`` have shape ``(m, p)`` (or ``(p,)`` for a
single item, in which case the leading item axis is dropped from the results),
``theta`` is a 1-D array of ``q`` ability values, and category probabilities come
back as ``(m, q, K)``.  Estimation works in a *working* parameterisation
(identical to the natural one except ``logit(c)`` for the 3PL); derivatives are
analytic.  The calibration EM loop only uses the generic methods of
:class:`ItemModel` (``log_prob``, ``grad_hess``, ``start``, ...), so adding a
family means writing one class and registering it with :func:`register_model`.

Besides the classes this module offers helpers that work on an item-parameter
table like ``Calibration.items`` (columns ``model``, ``a``, ``d`` or
``d1..dk``, ``c``; see :func:`item_table`): :func:`probabilities`,
:func:`expected_scores`, :func:`test_characteristic_curve` and
:func:`information`; these are what linking and level-setting code should use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit, logit

__all__ = [
    "ItemModel",
    "Dichotomous",
    "Rasch",
    "TwoPL",
    "ThreePL",
    "Graded",
    "GPCM",
    "PCM",
    "Prior",
    "NormalPrior",
    "LogNormalPrior",
    "BetaPrior",
    "LogitNormalPrior",
    "ModelSpecError",
    "get_model",
    "register_model",
    "model_names",
    "item_table",
    "models_from_table",
    "probabilities",
    "expected_scores",
    "test_characteristic_curve",
    "information",
    "simulate",
]

_LOG_FLOOR = -745.0  # log of the smallest positive double; keeps log P finite


class ModelSpecError(ValueError):
    """Raised for an unknown model name or parameters of the wrong shape."""


def _as_batch(par: Any, n_par: int) -> tuple[np.ndarray, bool]:
    arr = np.asarray(par, dtype=float)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_par:
        raise ModelSpecError(
            f"item parameters must have shape (n_items, {n_par}) or ({n_par},); got {np.shape(par)}"
        )
    return arr, single


def _theta(theta: Any) -> np.ndarray:
    t = np.asarray(theta, dtype=float)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1:
        raise ModelSpecError(f"theta must be a 1-D array of ability values; got shape {t.shape}")
    return t


def _out(x: np.ndarray, single: bool) -> np.ndarray:
    return x[0] if single else x


# ----------------------------------------------------------------------------- priors
@dataclass(frozen=True)
class Prior(ABC):
    """Prior density on one *natural* item parameter (for MAP item estimation).

    The log density is added to the item's expected complete-data log-likelihood
    in each M-step (so estimates are posterior modes on the natural scale, as in
    BILOG-MG / mirt's ``parprior``); no Jacobian term is added for the working
    transform.
    """

    @abstractmethod
    def derivs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(log p(x), d log p / dx, d2 log p / dx2)`` elementwise."""


@dataclass(frozen=True)
class NormalPrior(Prior):
    """x ~ N(mean, sd**2)."""

    mean: float = 0.0
    sd: float = 1.0

    def derivs(self, x):
        z = (x - self.mean) / self.sd
        lp = -0.5 * z**2 - np.log(self.sd) - 0.5 * np.log(2 * np.pi)
        return lp, -z / self.sd, np.full_like(x, -1.0 / self.sd**2)


@dataclass(frozen=True)
class LogNormalPrior(Prior):
    """log(x) ~ N(meanlog, sdlog**2), for slopes (x > 0)."""

    meanlog: float = 0.0
    sdlog: float = 0.5

    def derivs(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            lx = np.log(x)
            s2 = self.sdlog**2
            lp = -0.5 * (lx - self.meanlog) ** 2 / s2 - lx - np.log(self.sdlog * np.sqrt(2 * np.pi))
            d1 = -((lx - self.meanlog) / s2 + 1.0) / x
            d2 = ((lx - self.meanlog) / s2 + 1.0) / x**2 - 1.0 / (s2 * x**2)
        bad = ~(x > 0)
        lp = np.where(bad, -np.inf, lp)
        return lp, np.where(bad, 0.0, d1), np.where(bad, 0.0, d2)


@dataclass(frozen=True)
class LogitNormalPrior(Prior):
    """logit(x) ~ N(mean, sd**2) without Jacobian: log p = log phi(logit(x); mean, sd).

    This is mirt's ``PRIOR = (item, g, norm, mean, sd)`` for the guessing parameter,
    which mirt estimates on the logit scale.
    """

    mean: float = -1.0
    sd: float = 1.0

    def derivs(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.log(x) - np.log1p(-x)
            z = (w - self.mean) / self.sd
            lp = -0.5 * z**2 - np.log(self.sd) - 0.5 * np.log(2 * np.pi)
            j = 1.0 / (x * (1 - x))  # dw/dx
            dj = (2 * x - 1) / (x * (1 - x)) ** 2  # d2w/dx2
            d1 = -z / self.sd * j
            d2 = -(j**2) / self.sd**2 - z / self.sd * dj
        return lp, d1, d2


@dataclass(frozen=True)
class BetaPrior(Prior):
    """x ~ Beta(alpha, beta), for the guessing parameter ``c``.

    The default Beta(5, 17) has mode 0.2 (four-option multiple choice) and the
    weight of 20 pseudo-observations (BILOG-MG's default for ``c``).
    """

    alpha: float = 5.0
    beta: float = 17.0

    def derivs(self, x):
        from scipy.special import betaln

        with np.errstate(divide="ignore", invalid="ignore"):
            lp = (self.alpha - 1) * np.log(x) + (self.beta - 1) * np.log1p(-x) - betaln(self.alpha, self.beta)
            d1 = (self.alpha - 1) / x - (self.beta - 1) / (1 - x)
            d2 = -(self.alpha - 1) / x**2 - (self.beta - 1) / (1 - x) ** 2
        return lp, d1, d2


# ----------------------------------------------------------------------------- base class
class ItemModel(ABC):
    """One IRT family for a batch of items with ``n_cat`` categories (0..K-1).

    Subclasses define ``par_names`` (natural parameters, the columns of the
    item table), ``free`` (which of them are estimated), ``prob_derivs``
    (category probabilities and their first/second derivatives with respect to
    the working parameters), ``theta_derivs`` (derivatives with respect to
    theta) and ``start``.  Everything else (log-likelihood, gradient, Hessian,
    information, expected score, IRT parameterisation) is generic or overridden
    only for speed/accuracy.
    """

    family: ClassVar[str] = ""
    mirt_itemtype: ClassVar[str] = ""
    dichotomous: ClassVar[bool] = False

    def __init__(self, n_cat: int = 2):
        n_cat = int(n_cat)
        if n_cat < 2:
            raise ModelSpecError(f"{self.family}: an item needs at least 2 categories, got {n_cat}")
        self.n_cat = n_cat

    # -- description -------------------------------------------------------------------
    @property
    @abstractmethod
    def par_names(self) -> tuple[str, ...]:
        """Names of the natural (slope-intercept) parameters, e.g. ``("a", "d")``."""

    @property
    def n_par(self) -> int:
        return len(self.par_names)

    @property
    def free(self) -> np.ndarray:
        """Boolean mask of estimated parameters (fixed ones keep their value)."""
        return np.ones(self.n_par, dtype=bool)

    @property
    def irt_names(self) -> tuple[str, ...]:
        """Names of the IRT (difficulty/threshold) parameterisation."""
        return ("a", "b")

    def fixed_values(self) -> dict[str, float]:
        """Values of parameters that are fixed by the model (e.g. ``a = 1`` for Rasch)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_cat={self.n_cat})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.n_cat == other.n_cat  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.n_cat))

    # -- parameterisations ---------------------------------------------------------------
    def to_working(self, par: Any) -> np.ndarray:
        """Natural -> working parameters (identity except ``logit(c)`` for the 3PL)."""
        return np.array(par, dtype=float, copy=True)

    def from_working(self, w: Any) -> np.ndarray:
        """Working -> natural parameters."""
        return np.array(w, dtype=float, copy=True)

    def working_jacobian(self, w: Any) -> np.ndarray:
        """Elementwise d(natural)/d(working) (diagonal transform), same shape as ``w``."""
        return np.ones_like(np.asarray(w, dtype=float))

    def working_hessian_diag(self, w: Any) -> np.ndarray:
        """Elementwise d2(natural)/d(working)2, same shape as ``w``."""
        return np.zeros_like(np.asarray(w, dtype=float))

    @abstractmethod
    def to_irt(self, par: Any) -> np.ndarray:
        """Natural (a, d...) -> IRT parameters in the order of :attr:`irt_names`."""

    @abstractmethod
    def from_irt(self, irt: Any) -> np.ndarray:
        """IRT parameters (order of :attr:`irt_names`) -> natural parameters."""

    def irt_jacobian(self, par: Any) -> np.ndarray:
        """d(IRT)/d(natural), shape ``(m, n_irt, n_par)`` (for delta-method SEs)."""
        p, single = _as_batch(par, self.n_par)
        eps = 1e-6 * np.maximum(1.0, np.abs(p))
        cols = []
        for k in range(self.n_par):
            up, dn = p.copy(), p.copy()
            up[:, k] += eps[:, k]
            dn[:, k] -= eps[:, k]
            cols.append((self.to_irt(up) - self.to_irt(dn)) / (2 * eps[:, k : k + 1]))
        jac = np.stack(cols, axis=-1)
        return _out(jac, single)

    # -- probabilities -------------------------------------------------------------------
    @abstractmethod
    def log_prob(self, par: Any, theta: Any) -> np.ndarray:
        """log P(X = k | theta), shape ``(m, q, K)`` (finite, floored at -745)."""

    def prob(self, par: Any, theta: Any) -> np.ndarray:
        """P(X = k | theta), shape ``(m, q, K)``; rows sum to one."""
        return np.exp(self.log_prob(par, theta))

    @abstractmethod
    def prob_derivs(self, w: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P ``(m,q,K)``, dP/dw ``(m,q,K,p)``, d2P/dw2 ``(m,q,K,p,p)`` at working ``w`` ``(m,p)``."""

    @abstractmethod
    def theta_derivs(self, par: Any, theta: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P, dP/dtheta, d2P/dtheta2, each ``(m, q, K)``."""

    def logit_linear(self, par: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """``(alpha, delta)`` ``(m, K-1)`` if log P_k - log P_0 = alpha_k theta + delta_k exactly
        (2PL, Rasch, GPCM, PCM), else ``None``.  The E-step then needs only the weighted
        scores sum_j alpha x_ij instead of a matrix product over the nodes."""
        return None

    def expected_score(self, par: Any, theta: Any) -> np.ndarray:
        """E[X | theta] = sum_k k P_k(theta), shape ``(m, q)``."""
        p = self.prob(par, theta)
        return p @ np.arange(self.n_cat, dtype=float)

    def information(self, par: Any, theta: Any) -> np.ndarray:
        """Fisher information I(theta) = sum_k P_k'(theta)**2 / P_k(theta), shape ``(m, q)``."""
        P, d1, _ = self.theta_derivs(par, theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(P > 0, d1**2 / P, 0.0)
        return v.sum(-1)

    # -- likelihood pieces ---------------------------------------------------------------
    def loglik(self, par: Any, theta: Any, counts: Any) -> np.ndarray:
        """Expected complete-data log-likelihood sum_{q,k} r_qk log P_k(theta_q) per item.

        ``counts`` has shape ``(m, q, K)`` (expected numbers of responses in each
        category at each node; frequency or sample weights already applied).
        """
        lp = self.log_prob(par, theta)
        r = np.asarray(counts, dtype=float)
        if lp.ndim == 2:
            return float(np.sum(r * lp))
        return np.einsum("mqk,mqk->m", r, lp)

    def grad_hess(
        self, w: np.ndarray, theta: np.ndarray, counts: np.ndarray, *, fisher: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient ``(m,p)`` and Hessian ``(m,p,p)`` of sum r log P w.r.t. working params.

        g = sum_qk (r/P) dP,  H = sum_qk [(r/P) d2P - (r/P**2) dP dP'].  With
        ``fisher=True`` H is replaced by its expectation -sum_q n_q sum_k dP dP'/P
        (n_q = sum_k r_qk), which is negative semi-definite for every family.
        """
        P, dP, d2P = self.prob_derivs(w, theta)
        r = counts
        Ps = np.maximum(P, 1e-300)
        rp = r / Ps
        g = np.einsum("mqk,mqkp->mp", rp, dP)
        if fisher:
            n = r.sum(-1, keepdims=True)
            H = -np.einsum("mqk,mqkp,mqkr->mpr", n / Ps, dP, dP)
        else:
            H = np.einsum("mqk,mqkpr->mpr", rp, d2P) - np.einsum("mqk,mqkp,mqkr->mpr", rp / Ps, dP, dP)
        return g, H

    def score_terms(self, w: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """d log P_k(theta_q) / dw, shape ``(m, q, K, p)`` (complete-data score per category)."""
        P, dP, _ = self.prob_derivs(w, theta)
        return dP / np.maximum(P, 1e-300)[..., None]

    # -- starting values -----------------------------------------------------------------
    @abstractmethod
    def start(self, x: np.ndarray, weights: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Starting natural parameters from data.

        ``x`` ``(n, m)`` category scores (NaN = not presented), ``weights`` ``(n,)``,
        ``rest`` ``(n, m)`` standardized rest scores (total minus the item) used to
        derive slopes from item-rest correlations.  Returns ``(m, p)``.
        """


def _biserial_slopes(x: np.ndarray, weights: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Slopes a = 1.7 r / sqrt(1 - r**2) from weighted item-rest correlations (clipped)."""
    obs = ~np.isnan(x)
    xs = np.where(obs, x, 0.0)
    w = weights[:, None] * obs
    sw = w.sum(0)
    sw = np.where(sw > 0, sw, 1.0)
    mx = (w * xs).sum(0) / sw
    mr = (w * rest).sum(0) / sw
    cov = (w * (xs - mx) * (rest - mr)).sum(0) / sw
    vx = (w * (xs - mx) ** 2).sum(0) / sw
    vr = (w * (rest - mr) ** 2).sum(0) / sw
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(vx * vr)
    r = np.clip(np.nan_to_num(r, nan=0.3), 0.05, 0.85) * 1.25  # polyserial > point-biserial
    r = np.clip(r, 0.05, 0.9)
    return 1.7 * r / np.sqrt(1 - r**2)


def _weighted_props(x: np.ndarray, weights: np.ndarray, n_cat: int) -> np.ndarray:
    """Weighted category proportions ``(m, K)`` among observed responses (smoothed)."""
    obs = ~np.isnan(x)
    out = np.empty((x.shape[1], n_cat))
    for k in range(n_cat):
        out[:, k] = ((x == k) * weights[:, None]).sum(0) + 0.5
    tot = (obs * weights[:, None]).sum(0) + 0.5 * n_cat
    return out / tot[:, None]


# ----------------------------------------------------------------------------- dichotomous
class Dichotomous(ItemModel):
    """Base of the logistic dichotomous family P = c + (1 - c) * expit(a*theta + d)."""

    dichotomous = True

    def __init__(self, n_cat: int = 2):
        if int(n_cat) != 2:
            raise ModelSpecError(
                f"{self.family} is a dichotomous model (2 categories scored 0/1); got {n_cat} categories"
            )
        super().__init__(2)

    @property
    def par_names(self):
        return ("a", "d")

    @property
    def irt_names(self):
        return ("a", "b")

    def _acd(self, par):
        p, single = _as_batch(par, self.n_par)
        a, d = p[:, 0], p[:, 1]
        c = p[:, 2] if self.n_par > 2 else np.zeros_like(a)
        return a, d, c, single

    def log_prob(self, par, theta):
        a, d, c, single = self._acd(par)
        t = _theta(theta)
        z = a[:, None] * t[None, :] + d[:, None]
        if np.all(c == 0):
            l1, l0 = log_expit(z), log_expit(-z)
        else:
            cc = c[:, None]
            with np.errstate(divide="ignore"):
                l1 = np.logaddexp(np.log(cc), np.log1p(-cc) + log_expit(z))
                l0 = np.log1p(-cc) + log_expit(-z)
        out = np.stack([l0, l1], axis=-1)
        return _out(np.maximum(out, _LOG_FLOOR), single)

    def theta_derivs(self, par, theta):
        a, d, c, single = self._acd(par)
        t = _theta(theta)
        s = expit(a[:, None] * t[None, :] + d[:, None])
        cc = c[:, None]
        aa = a[:, None]
        p1 = cc + (1 - cc) * s
        d1 = aa * (1 - cc) * s * (1 - s)
        d2 = aa**2 * (1 - cc) * s * (1 - s) * (1 - 2 * s)
        P = np.stack([1 - p1, p1], -1)
        D1 = np.stack([-d1, d1], -1)
        D2 = np.stack([-d2, d2], -1)
        return _out(P, single), _out(D1, single), _out(D2, single)

    def to_irt(self, par):
        p, single = _as_batch(par, self.n_par)
        out = p.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, 1] = -p[:, 1] / p[:, 0]
        return _out(out, single)

    def from_irt(self, irt):
        p, single = _as_batch(irt, self.n_par)
        out = p.copy()
        out[:, 1] = -p[:, 1] * p[:, 0]
        return _out(out, single)

    def start(self, x, weights, rest):
        props = _weighted_props(x, weights, 2)[:, 1]
        a = _biserial_slopes(x, weights, rest)
        # marginal P(correct) ~ Phi(d / 1.7 / sqrt(1 + (a/1.7)^2)) under N(0,1)
        from scipy.stats import norm

        d = 1.7 * norm.ppf(props) * np.sqrt(1 + (a / 1.7) ** 2)
        return np.column_stack([a, d])


class TwoPL(Dichotomous):
    """2PL: P = 1 / (1 + exp(-(a theta + d))), b = -d / a (mirt itemtype "2PL")."""

    family = "2PL"
    mirt_itemtype = "2PL"

    def logit_linear(self, par):
        p, single = _as_batch(par, self.n_par)
        return _out(p[:, :1].copy(), single), _out(p[:, 1:2].copy(), single)

    def prob_derivs(self, w, theta):
        w = np.asarray(w, float)
        a, d = w[:, 0], w[:, 1]
        t = theta
        s = expit(a[:, None] * t[None, :] + d[:, None])  # (m,q)
        v = s * (1 - s)
        dz = np.stack([np.broadcast_to(t, s.shape), np.ones_like(s)], -1)  # dz/dw (m,q,2)
        dP1 = v[..., None] * dz
        d2P1 = (v * (1 - 2 * s))[..., None, None] * dz[..., :, None] * dz[..., None, :]
        P = np.stack([1 - s, s], -1)
        dP = np.stack([-dP1, dP1], axis=2)
        d2P = np.stack([-d2P1, d2P1], axis=2)
        return P, dP, d2P

    def grad_hess(self, w, theta, counts, *, fisher=False):
        # closed form (exact Hessian equals the Fisher information for the logistic 2PL)
        w = np.asarray(w, float)
        s = expit(w[:, 0:1] * theta[None, :] + w[:, 1:2])
        n = counts.sum(-1)
        res = counts[..., 1] - n * s
        wt = n * s * (1 - s)
        g = np.stack([res @ theta, res.sum(1)], -1)
        h_aa = -(wt @ theta**2)
        h_ad = -(wt @ theta)
        h_dd = -wt.sum(1)
        H = np.stack([np.stack([h_aa, h_ad], -1), np.stack([h_ad, h_dd], -1)], -2)
        return g, H


class Rasch(TwoPL):
    """Rasch / 1PL: 2PL with a = 1 fixed; the latent variance is estimated (mirt "Rasch")."""

    family = "Rasch"
    mirt_itemtype = "Rasch"

    @property
    def free(self):
        return np.array([False, True])

    def fixed_values(self):
        return {"a": 1.0}

    def start(self, x, weights, rest):
        par = super().start(x, weights, rest)
        par[:, 1] = par[:, 1] / np.sqrt(1 + (par[:, 0] / 1.7) ** 2) * np.sqrt(1 + 1 / 1.7**2)
        par[:, 0] = 1.0
        return par


class ThreePL(Dichotomous):
    """3PL: P = c + (1 - c) / (1 + exp(-(a theta + d))); c estimated as logit(c) (mirt "3PL")."""

    family = "3PL"
    mirt_itemtype = "3PL"

    @property
    def par_names(self):
        return ("a", "d", "c")

    @property
    def irt_names(self):
        return ("a", "b", "c")

    def to_working(self, par):
        w = np.array(par, dtype=float, copy=True)
        w[..., 2] = logit(np.clip(w[..., 2], 1e-12, 1 - 1e-12))
        return w

    def from_working(self, w):
        p = np.array(w, dtype=float, copy=True)
        p[..., 2] = expit(p[..., 2])
        return p

    def working_jacobian(self, w):
        w = np.asarray(w, dtype=float)
        j = np.ones_like(w)
        c = expit(w[..., 2])
        j[..., 2] = c * (1 - c)
        return j

    def working_hessian_diag(self, w):
        w = np.asarray(w, dtype=float)
        h = np.zeros_like(w)
        c = expit(w[..., 2])
        h[..., 2] = c * (1 - c) * (1 - 2 * c)
        return h

    def prob_derivs(self, w, theta):
        w = np.asarray(w, float)
        a, d, g = w[:, 0], w[:, 1], w[:, 2]
        c = expit(g)[:, None]
        cd = c * (1 - c)  # dc/dg
        t = theta
        s = expit(a[:, None] * t[None, :] + d[:, None])
        v = s * (1 - s)
        u = v * (1 - 2 * s)
        tt = np.broadcast_to(t, s.shape)
        one = np.ones_like(s)
        p1 = c + (1 - c) * s
        dP1 = np.stack([(1 - c) * v * tt, (1 - c) * v * one, cd * (1 - s)], -1)
        H = np.empty(s.shape + (3, 3))
        H[..., 0, 0] = (1 - c) * u * tt**2
        H[..., 0, 1] = H[..., 1, 0] = (1 - c) * u * tt
        H[..., 1, 1] = (1 - c) * u
        H[..., 0, 2] = H[..., 2, 0] = -cd * v * tt
        H[..., 1, 2] = H[..., 2, 1] = -cd * v
        H[..., 2, 2] = cd * (1 - 2 * c) * (1 - s)
        P = np.stack([1 - p1, p1], -1)
        dP = np.stack([-dP1, dP1], axis=2)
        d2P = np.stack([-H, H], axis=2)
        return P, dP, d2P

    def start(self, x, weights, rest):
        par2 = super().start(x, weights, rest)
        c = np.full(par2.shape[0], 0.2)
        props = _weighted_props(x, weights, 2)[:, 1]
        # remove the guessing floor from the proportion before computing d
        from scipy.stats import norm

        adj = np.clip((props - c) / (1 - c), 0.02, 0.98)
        a = par2[:, 0] * 1.2
        d = 1.7 * norm.ppf(adj) * np.sqrt(1 + (a / 1.7) ** 2)
        return np.column_stack([a, d, c])


# ----------------------------------------------------------------------------- graded
class _Polytomous(ItemModel):
    """Shared naming of polytomous items: slope ``a`` and intercepts ``d1..dK-1``
    (IRT thresholds ``b1..bK-1``)."""

    @property
    def par_names(self):
        return ("a",) + tuple(f"d{k}" for k in range(1, self.n_cat))

    @property
    def irt_names(self):
        return ("a",) + tuple(f"b{k}" for k in range(1, self.n_cat))


class Graded(_Polytomous):
    """Graded response model (Samejima 1969; mirt "graded").

    P(X >= k) = expit(a theta + d_k), k = 1..K-1 with d_1 > ... > d_{K-1};
    P(X = k) = P(X >= k) - P(X >= k+1), computed without cancellation as
    expit(z_k) expit(-z_{k+1}) (1 - exp(z_{k+1} - z_k)).  IRT thresholds b_k = -d_k / a.
    """

    family = "GRM"
    mirt_itemtype = "graded"

    def _z(self, p, t):
        return p[:, 0, None, None] * t[None, :, None] + p[:, None, 1:]  # (m,q,K-1)

    def log_prob(self, par, theta):
        p, single = _as_batch(par, self.n_par)
        t = _theta(theta)
        z = self._z(p, t)
        m, q = z.shape[:2]
        inf = np.full((m, q, 1), np.inf)
        zz = np.concatenate([inf, z, -inf], axis=-1)  # z_0 = +inf, z_K = -inf
        hi, lo = zz[..., :-1], zz[..., 1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = hi - lo
            lp = log_expit(hi) + log_expit(-lo) + np.log(-np.expm1(-gap))
        lp = np.where(np.isnan(lp) | (gap <= 0), _LOG_FLOOR, lp)
        return _out(np.maximum(lp, _LOG_FLOOR), single)

    def _cum_derivs(self, p, t):
        z = self._z(p, t)
        s = expit(z)
        v = s * (1 - s)
        u = v * (1 - 2 * s)
        m, q = z.shape[:2]
        pad = np.zeros((m, q, 1))
        S = np.concatenate([np.ones((m, q, 1)), s, pad], -1)
        V = np.concatenate([pad, v, pad], -1)
        U = np.concatenate([pad, u, pad], -1)
        return S, V, U

    def prob_derivs(self, w, theta):
        w = np.asarray(w, float)
        K = self.n_cat
        P = np.exp(self.log_prob(w, theta))
        _, V, U = self._cum_derivs(w, theta)
        m, q = P.shape[:2]
        t = theta[None, :, None]
        # P_k = S_k - S_{k+1};  dS_k/da = V_k t,  dS_k/dd_k = V_k
        dP = np.zeros((m, q, K, K))
        d2P = np.zeros((m, q, K, K, K))
        Vk, Vk1 = V[..., :-1], V[..., 1:]
        Uk, Uk1 = U[..., :-1], U[..., 1:]
        dP[..., 0] = (Vk - Vk1) * t
        d2P[..., 0, 0] = (Uk - Uk1) * t**2
        for j in range(1, K):  # parameter d_j (index j) enters S_j
            # category k = j gets +, category k = j-1 gets -
            dP[..., j, j] += V[..., j]
            dP[..., j - 1, j] -= V[..., j]
            d2P[..., j, j, j] += U[..., j]
            d2P[..., j - 1, j, j] -= U[..., j]
            d2P[..., j, 0, j] += U[..., j] * theta[None, :]
            d2P[..., j, j, 0] += U[..., j] * theta[None, :]
            d2P[..., j - 1, 0, j] -= U[..., j] * theta[None, :]
            d2P[..., j - 1, j, 0] -= U[..., j] * theta[None, :]
        return P, dP, d2P

    def theta_derivs(self, par, theta):
        p, single = _as_batch(par, self.n_par)
        t = _theta(theta)
        P = np.exp(self.log_prob(p, t))
        _, V, U = self._cum_derivs(p, t)
        a = p[:, 0, None, None]
        d1 = a * (V[..., :-1] - V[..., 1:])
        d2 = a**2 * (U[..., :-1] - U[..., 1:])
        return _out(P, single), _out(d1, single), _out(d2, single)

    def to_irt(self, par):
        p, single = _as_batch(par, self.n_par)
        out = p.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, 1:] = -p[:, 1:] / p[:, :1]
        return _out(out, single)

    def from_irt(self, irt):
        p, single = _as_batch(irt, self.n_par)
        out = p.copy()
        out[:, 1:] = -p[:, 1:] * p[:, :1]
        return _out(out, single)

    def start(self, x, weights, rest):
        K = self.n_cat
        props = _weighted_props(x, weights, K)
        cum = np.cumsum(props[:, ::-1], axis=1)[:, ::-1][:, 1:]  # P(X >= k), k=1..K-1
        cum = np.clip(cum, 1e-3, 1 - 1e-3)
        a = _biserial_slopes(x, weights, rest)
        from scipy.stats import norm

        d = 1.7 * norm.ppf(cum) * np.sqrt(1 + (a[:, None] / 1.7) ** 2)
        # enforce strict ordering
        for k in range(1, d.shape[1]):
            d[:, k] = np.minimum(d[:, k], d[:, k - 1] - 0.05)
        return np.column_stack([a, d])


# ----------------------------------------------------------------------------- GPCM
class GPCM(_Polytomous):
    """Generalized partial credit model (Muraki 1992; mirt "gpcm" parameterisation).

    P(X = k) = exp(a k theta + d_k) / sum_h exp(a h theta + d_h), with d_0 = 0 and
    the scoring function fixed at 0..K-1 (mirt's ``ak``).  Conventional step
    thresholds: b_k = -(d_k - d_{k-1}) / a, so that a k theta + d_k =
    sum_{v <= k} a (theta - b_v).
    """

    family = "GPCM"
    mirt_itemtype = "gpcm"

    def logit_linear(self, par):
        p, single = _as_batch(par, self.n_par)
        k = np.arange(1, self.n_cat, dtype=float)
        return _out(p[:, :1] * k[None, :], single), _out(p[:, 1:].copy(), single)

    def _eta(self, p, t):
        k = np.arange(self.n_cat, dtype=float)
        d = np.concatenate([np.zeros((p.shape[0], 1)), p[:, 1:]], axis=1)
        return p[:, 0, None, None] * t[None, :, None] * k[None, None, :] + d[:, None, :]

    def log_prob(self, par, theta):
        p, single = _as_batch(par, self.n_par)
        t = _theta(theta)
        eta = self._eta(p, t)
        lse = np.logaddexp.reduce(eta, axis=-1, keepdims=True)
        return _out(np.maximum(eta - lse, _LOG_FLOOR), single)

    def prob_derivs(self, w, theta):
        w = np.asarray(w, float)
        K = self.n_cat
        P = np.exp(self.log_prob(w, theta))
        m, q = P.shape[:2]
        k = np.arange(K, dtype=float)
        t = theta[None, :, None]
        # d eta_k / dw: a -> k t ; d_j -> [k == j]
        G = np.zeros((m, q, K, K))
        G[..., 0] = k[None, None, :] * t
        for j in range(1, K):
            G[..., j, j] = 1.0
        Gbar = np.einsum("mqk,mqkp->mqp", P, G)
        C = G - Gbar[:, :, None, :]  # d log P_k / dw
        dP = P[..., None] * C
        # d2 log P_k / dw dw' = -Cov_P(G) (same for all k)
        cov = np.einsum("mqk,mqkp,mqkr->mqpr", P, C, C)
        d2P = P[..., None, None] * (C[..., :, None] * C[..., None, :] - cov[:, :, None, :, :])
        return P, dP, d2P

    def grad_hess(self, w, theta, counts, *, fisher=False):
        # exponential family in (a, d): exact Hessian = -sum_q n_q Cov_q(G), no 1/P terms
        w = np.asarray(w, float)
        K = self.n_cat
        P = np.exp(self.log_prob(w, theta))
        m, q = P.shape[:2]
        k = np.arange(K, dtype=float)
        n = counts.sum(-1)  # (m,q)
        res = counts - n[..., None] * P  # (m,q,K)
        g = np.empty((m, K))
        g[:, 0] = np.einsum("mqk,q,k->m", res, theta, k)
        g[:, 1:] = res[..., 1:].sum(1)
        Ek = P @ k
        Vk = P @ k**2 - Ek**2
        H = np.zeros((m, K, K))
        H[:, 0, 0] = -np.einsum("mq,mq,q->m", n, Vk, theta**2)
        # cov(k t, 1[k=j]) = t P_j (j - Ek)
        cj = P[..., 1:] * (k[None, None, 1:] - Ek[..., None]) * theta[None, :, None]
        H[:, 0, 1:] = H[:, 1:, 0] = -np.einsum("mq,mqj->mj", n, cj)
        # cov(1[k=i], 1[k=j]) = P_i delta_ij - P_i P_j
        Pj = P[..., 1:]
        cov = -np.einsum("mqi,mqj->mqij", Pj, Pj)
        idx = np.arange(K - 1)
        cov[..., idx, idx] += Pj
        H[:, 1:, 1:] = -np.einsum("mq,mqij->mij", n, cov)
        return g, H

    def theta_derivs(self, par, theta):
        p, single = _as_batch(par, self.n_par)
        t = _theta(theta)
        P = np.exp(self.log_prob(p, t))
        k = np.arange(self.n_cat, dtype=float)
        a = p[:, 0, None, None]
        Ek = (P @ k)[..., None]
        Vk = (P @ k**2)[..., None] - Ek**2
        dev = k[None, None, :] - Ek
        d1 = P * a * dev
        d2 = P * a**2 * (dev**2 - Vk)
        return _out(P, single), _out(d1, single), _out(d2, single)

    def to_irt(self, par):
        p, single = _as_batch(par, self.n_par)
        out = p.copy()
        d = np.concatenate([np.zeros((p.shape[0], 1)), p[:, 1:]], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, 1:] = -np.diff(d, axis=1) / p[:, :1]
        return _out(out, single)

    def from_irt(self, irt):
        p, single = _as_batch(irt, self.n_par)
        out = p.copy()
        out[:, 1:] = -np.cumsum(p[:, 1:] * p[:, :1], axis=1)
        return _out(out, single)

    def start(self, x, weights, rest):
        K = self.n_cat
        props = _weighted_props(x, weights, K)
        a = _biserial_slopes(x, weights, rest) * 0.7
        # d_k - d_{k-1} = log(p_k / p_{k-1}) at theta = 0 (ignoring the spread of theta)
        steps = np.log(props[:, 1:] / props[:, :-1])
        d = np.cumsum(steps, axis=1)
        return np.column_stack([a, d])


class PCM(GPCM):
    """Partial credit model: GPCM with a = 1 fixed (mirt itemtype "Rasch" for polytomous items)."""

    family = "PCM"
    mirt_itemtype = "Rasch"

    @property
    def free(self):
        f = np.ones(self.n_par, dtype=bool)
        f[0] = False
        return f

    def fixed_values(self):
        return {"a": 1.0}

    def start(self, x, weights, rest):
        par = super().start(x, weights, rest)
        par[:, 0] = 1.0
        return par


# ----------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[ItemModel]] = {}


def register_model(name: str, cls: type[ItemModel], *aliases: str) -> None:
    """Register an :class:`ItemModel` subclass under ``name`` (case-insensitive) and aliases."""
    if not (isinstance(cls, type) and issubclass(cls, ItemModel)):
        raise ModelSpecError(f"{cls!r} is not an ItemModel subclass")
    for n in (name, *aliases):
        _REGISTRY[n.lower()] = cls


register_model("Rasch", Rasch, "1PL")
register_model("2PL", TwoPL)
register_model("3PL", ThreePL)
register_model("GRM", Graded, "graded", "samejima")
register_model("GPCM", GPCM)
register_model("PCM", PCM)


def model_names() -> list[str]:
    """Registered model names and aliases (lower case)."""
    return sorted(_REGISTRY)


def get_model(name: str | ItemModel, n_cat: int = 2) -> ItemModel:
    """Model instance for a name ("Rasch", "1PL", "2PL", "3PL", "GRM"/"graded", "GPCM", "PCM").

    ``Rasch``/``1PL`` applied to an item with more than two categories gives the
    partial credit model (as mirt's ``itemtype="Rasch"`` does).
    """
    if isinstance(name, ItemModel):
        if name.n_cat != n_cat:
            return type(name)(n_cat)
        return name
    if not isinstance(name, str):
        raise ModelSpecError(f"model must be a name or an ItemModel, got {name!r}")
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        raise ModelSpecError(f"unknown IRT model {name!r}; expected one of {model_names()}")
    if cls is Rasch and n_cat > 2:
        cls = PCM
    return cls(n_cat)


# ----------------------------------------------------------------------------- table helpers
def _d_cols(n_cat: int) -> list[str]:
    return ["d"] if n_cat == 2 else [f"d{k}" for k in range(1, n_cat)]


def item_table(models: Mapping[Any, ItemModel], params: Mapping[Any, np.ndarray]) -> pd.DataFrame:
    """Item-parameter table (the layout of ``Calibration.items``) from models and natural parameters.

    Columns: ``model``, ``n_cat``, ``a``, ``d`` (dichotomous) or ``d1..d{K-1}``,
    ``c`` (0 unless 3PL), ``b`` or ``b1..b{K-1}`` (IRT difficulty/thresholds).
    """
    rows = []
    for item, m in models.items():
        p = np.asarray(params[item], dtype=float)
        row: dict[str, Any] = {"item": item, "model": m.family, "n_cat": m.n_cat, "a": p[0]}
        dc = _d_cols(m.n_cat)
        for name, v in zip(dc, p[1 : 1 + len(dc)]):
            row[name] = v
        row["c"] = p[2] if isinstance(m, ThreePL) else 0.0
        irt = m.to_irt(p)
        bc = ["b"] if m.n_cat == 2 else [f"b{k}" for k in range(1, m.n_cat)]
        for name, v in zip(bc, irt[1 : 1 + len(bc)]):
            row[name] = v
        rows.append(row)
    df = pd.DataFrame(rows).set_index("item")
    df.index.name = "item"
    return df


def models_from_table(items: pd.DataFrame) -> dict[Any, tuple[ItemModel, np.ndarray]]:
    """Map item -> (model instance, natural parameter vector) from an item table.

    The table needs ``model`` and either slope-intercept columns (``a``, ``d`` /
    ``d1..``, ``c``) or IRT columns (``a``, ``b`` / ``b1..``, ``c``); ``n_cat`` is
    inferred from the non-missing ``d``/``b`` columns when absent.
    """
    if "model" not in items.columns:
        raise ModelSpecError("item table needs a 'model' column (e.g. '2PL', 'GRM')")
    out: dict[Any, tuple[ItemModel, np.ndarray]] = {}
    for item, row in items.iterrows():
        fam = row["model"]
        if "n_cat" in items.columns and pd.notna(row.get("n_cat")):
            K = int(row["n_cat"])
        else:
            ks = [int(c[1:]) for c in items.columns if c[:1] in "db" and c[1:].isdigit() and pd.notna(row[c])]
            K = (max(ks) + 1) if ks else 2
        m = get_model(fam, K)
        a = float(row["a"]) if "a" in row and pd.notna(row["a"]) else 1.0
        dc = _d_cols(K)
        if all(c in row and pd.notna(row[c]) for c in dc):
            p = [a] + [float(row[c]) for c in dc]
            if isinstance(m, ThreePL):
                p.append(float(row.get("c", 0.0)))
            p = np.array(p)
        else:
            bc = ["b"] if K == 2 else [f"b{k}" for k in range(1, K)]
            missing = [c for c in bc if c not in row or pd.isna(row[c])]
            if missing:
                raise ModelSpecError(f"item {item!r}: neither {dc} nor {bc} are all present (missing {missing})")
            irt = [a] + [float(row[c]) for c in bc]
            if isinstance(m, ThreePL):
                irt.append(float(row.get("c", 0.0)))
            p = m.from_irt(np.array(irt))
        out[item] = (m, p)
    return out


def probabilities(items: pd.DataFrame, theta: Iterable[float]) -> dict[Any, np.ndarray]:
    """Category probabilities per item: item -> array ``(len(theta), K)``."""
    t = _theta(np.asarray(list(theta) if not isinstance(theta, np.ndarray) else theta))
    return {item: m.prob(p, t) for item, (m, p) in models_from_table(items).items()}


def expected_scores(items: pd.DataFrame, theta: Iterable[float]) -> pd.DataFrame:
    """Item characteristic curves E[X_j | theta]: DataFrame ``theta x items``."""
    t = _theta(np.asarray(theta, dtype=float))
    cols = {item: m.expected_score(p, t) for item, (m, p) in models_from_table(items).items()}
    return pd.DataFrame(cols, index=pd.Index(t, name="theta"))


def test_characteristic_curve(items: pd.DataFrame, theta: Iterable[float]) -> pd.Series:
    """Test characteristic curve sum_j E[X_j | theta] (expected raw score)."""
    return expected_scores(items, theta).sum(axis=1).rename("expected_score")


test_characteristic_curve.__test__ = False  # not a pytest test despite the name


def information(items: pd.DataFrame, theta: Iterable[float]) -> pd.DataFrame:
    """Item information functions (DataFrame ``theta x items``); ``.sum(axis=1)`` is the test information."""
    t = _theta(np.asarray(theta, dtype=float))
    cols = {item: m.information(p, t) for item, (m, p) in models_from_table(items).items()}
    return pd.DataFrame(cols, index=pd.Index(t, name="theta"))


def simulate(items: pd.DataFrame, theta: Any, rng: np.random.Generator | int | None = None) -> pd.DataFrame:
    """Simulate category scores 0..K-1 for abilities ``theta`` from an item table.

    Draws X_ij = #{k >= 1 : U_ij < P(X_j >= k | theta_i)} with U ~ Uniform(0, 1)
    (inverse-CDF sampling), vectorised over students; returns a students x items
    DataFrame.  ``rng`` is a ``numpy.random.Generator`` or a seed.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    t = _theta(np.asarray(theta, dtype=float))
    out = {}
    for item, (m, p) in models_from_table(items).items():
        P = m.prob(p, t)  # (n, K)
        surv = 1.0 - np.cumsum(P, axis=1)[:, :-1]  # P(X > k) = P(X >= k+1)
        u = rng.random(len(t))
        out[item] = (u[:, None] < surv).sum(axis=1).astype(float)
    return pd.DataFrame(out)
