"""Person scores (EAP, MAP, ML, WLE) and plausible values with a latent regression.

All functions take the responses (wide or long, as in :func:`calibrate`) and a
:class:`~qualmon.scoring.calibration.Calibration`; responses are recoded with the
calibration's category coding; items absent from the responses are treated as
not presented.

* ``EAP``: posterior mean and SD over a rectangular grid with the calibration's
  N(mu, sigma^2) prior.  Default grid: 121 nodes on [-6, 6] -- mirt's ``fscores``
  default for one dimension (``quadpts <- switch(nfact, '1'=121, ...)``,
  ``theta_lim = c(-6, 6)``; mirt ``R/fscores.R`` documentation).
* ``MAP``: mode of log L(theta) + log N(theta; mu, sigma^2) by Newton-Raphson;
  SE = 1 / sqrt(-d2/dtheta2 log posterior) at the mode.
* ``ML``: maximum likelihood; +-inf for extreme patterns (as mirt); SE from the
  observed information -d2 logL/dtheta2.
* ``WLE``: Warm's (1989) weighted likelihood, the root of
  f(theta) = dlogL/dtheta + J(theta) / (2 I(theta)) with I = sum_j sum_k P'^2/P and
  J = sum_j sum_k P' P''/P; finite for all-correct/all-wrong patterns;
  SE = 1/sqrt(-f'(theta_hat)) (mirt's convention).
* :func:`plausible_values`: draws from each student's posterior under the
  conditioning model theta_i ~ N(x_i' beta, sigma^2), estimated by EM with the
  item parameters fixed (Mislevy 1991; as NAEP/PISA do), so that group means,
  variances and level shares computed from the PVs are unbiased.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from qualmon.scoring import _data as rd
from qualmon.scoring.calibration import Calibration, latent_log_weights

__all__ = ["score", "plausible_values", "ScoringError", "eap_sum_score_table"]

METHODS = ("EAP", "MAP", "ML", "WLE")


class ScoringError(ValueError):
    """Invalid person-scoring input."""


# ----------------------------------------------------------------------------- helpers
def _prepare(responses: Any, cal: Calibration, omitted: str, not_reached: str) -> rd.ResponseData:
    if not isinstance(cal, Calibration):
        raise ScoringError(f"calibration must be a Calibration (from qualmon.scoring.calibrate); got {type(cal).__name__}")
    return rd.prepare(
        responses, None, omitted=omitted, not_reached=not_reached, categories=cal.categories, items=cal.item_names
    )


def _linear_flags(cal: Calibration) -> np.ndarray:
    return np.array([cal.models[it].logit_linear(cal.params[it]) is not None for it in cal.item_names])


def _terms(cal: Calibration, design: rd.Design, theta: np.ndarray, log_prior: np.ndarray) -> rd.Terms:
    logp, lin = [], []
    for it in cal.item_names:
        m, p = cal.models[it], cal.params[it]
        logp.append(m.log_prob(p, theta))
        ll = m.logit_linear(p)
        lin.append(None if ll is None else (ll[0], ll[1]))
    return rd.make_terms(design, logp, lin, theta, log_prior)


def _grid(cal: Calibration, quadpts: int | None, theta_range: tuple | None, default_q: int = 121) -> np.ndarray:
    q = int(quadpts) if quadpts is not None else default_q
    lo, hi = theta_range if theta_range is not None else (-6.0, 6.0)
    if q < 5 or not hi > lo:
        raise ScoringError(f"need quadpts >= 5 and an increasing theta_range; got {q}, {(lo, hi)}")
    return np.linspace(float(lo), float(hi), q)


def _groups(cal: Calibration) -> list:
    """Items grouped by (model class, n_cat): (model, item positions, stacked params)."""
    gr: dict = {}
    for j, it in enumerate(cal.item_names):
        m = cal.models[it]
        gr.setdefault((type(m), m.n_cat), []).append(j)
    out = []
    for idx in gr.values():
        m = cal.models[cal.item_names[idx[0]]]
        out.append((m, np.array(idx), np.stack([cal.params[cal.item_names[j]] for j in idx])))
    return out


def _derivs_at(cal: Calibration, x: np.ndarray, theta: np.ndarray, need_j: bool = False, groups=None):
    """Sums over the observed items of d logP/dtheta, d2 logP/dtheta2 (observed
    category), Fisher information I and Warm's J, each (n,), at per-row abilities
    ``theta`` (n,); vectorised over the items of each model group."""
    n = x.shape[0]
    g = np.zeros(n)
    h = np.zeros(n)
    info = np.zeros(n)
    jj = np.zeros(n)
    groups = _groups(cal) if groups is None else groups
    step = max(1, 2_000_000 // max(1, x.shape[1] * 4))
    for s0 in range(0, n, step):
        e0 = min(n, s0 + step)
        th = theta[s0:e0]
        for m, idx, par in groups:
            P, d1, d2 = m.theta_derivs(par, th)  # (mj, r, K)
            xs = x[s0:e0, idx].T  # (mj, r)
            obs = ~np.isnan(xs)
            if m.n_cat == 2:
                p1 = np.clip(P[..., 1], 1e-300, 1.0)
                p0 = np.clip(P[..., 0], 1e-300, 1.0)
                a1, b1 = d1[..., 1], d2[..., 1]
                one = xs == 1
                l1 = np.where(one, a1 / p1, -a1 / p0)
                l2 = np.where(one, b1 / p1, -b1 / p0) - l1**2
                inv = 1.0 / p1 + 1.0 / p0
                g[s0:e0] += np.where(obs, l1, 0.0).sum(0)
                h[s0:e0] += np.where(obs, l2, 0.0).sum(0)
                info[s0:e0] += np.where(obs, a1 * a1 * inv, 0.0).sum(0)
                if need_j:
                    jj[s0:e0] += np.where(obs, a1 * b1 * inv, 0.0).sum(0)
                continue
            P = np.maximum(P, 1e-300)
            k = np.where(obs, xs, 0).astype(np.int64)[..., None]
            Pk = np.take_along_axis(P, k, axis=2)[..., 0]
            l1 = np.take_along_axis(d1, k, axis=2)[..., 0] / Pk
            l2 = np.take_along_axis(d2, k, axis=2)[..., 0] / Pk - l1**2
            g[s0:e0] += np.where(obs, l1, 0.0).sum(0)
            h[s0:e0] += np.where(obs, l2, 0.0).sum(0)
            info[s0:e0] += np.where(obs, (d1**2 / P).sum(-1), 0.0).sum(0)
            if need_j:
                jj[s0:e0] += np.where(obs, (d1 * d2 / P).sum(-1), 0.0).sum(0)
    return g, h, info, jj


def _extreme(cal: Calibration, x: np.ndarray) -> np.ndarray:
    """-1 for all-lowest, +1 for all-highest observed categories, else 0 (NaN rows: 0)."""
    K = np.array([cal.models[it].n_cat for it in cal.item_names], dtype=float)
    obs = ~np.isnan(x)
    lowest = np.where(obs, x == 0, True).all(1) & obs.any(1)
    highest = np.where(obs, x == (K - 1)[None, :], True).all(1) & obs.any(1)
    return np.where(lowest, -1, np.where(highest, 1, 0))


def _newton(cal, x, start, mean, var, prior: bool, max_theta: float, tol: float = 1e-8, max_iter: int = 100):
    groups = _groups(cal)
    theta = np.clip(start.copy(), -max_theta, max_theta)
    active = np.ones(len(theta), bool)
    for _ in range(max_iter):
        if not active.any():
            break
        xa = x[active]
        g, h, info, _ = _derivs_at(cal, xa, theta[active], groups=groups)
        if prior:
            g = g - (theta[active] - mean) / var
            h = h - 1.0 / var
            info = info + 1.0 / var
        curv = np.where(h < 0, -h, np.maximum(info, 1e-8))
        step = np.clip(g / curv, -1.0, 1.0)
        new = np.clip(theta[active] + step, -max_theta, max_theta)
        done = np.abs(new - theta[active]) < tol
        theta[active] = new
        idx = np.flatnonzero(active)
        active[idx[done]] = False
    return theta


def _wle(cal, x, start, max_theta: float, tol: float = 1e-8, max_iter: int = 200):
    """Warm's WLE by safeguarded Fisher scoring on f = dlogL + J/(2I) inside a bracket."""
    n = len(start)
    groups = _groups(cal)
    lo = np.full(n, -max_theta)
    hi = np.full(n, max_theta)
    theta = np.clip(start.copy(), -max_theta + 1e-6, max_theta - 1e-6)
    active = np.ones(n, bool)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        th = theta[idx]
        g, _, info, jj = _derivs_at(cal, x[idx], th, need_j=True, groups=groups)
        f = g + jj / (2 * np.maximum(info, 1e-300))
        pos = f > 0
        lo[idx] = np.where(pos, th, lo[idx])
        hi[idx] = np.where(pos, hi[idx], th)
        step = np.clip(f / np.maximum(info, 1e-8), -1.0, 1.0)
        new = th + step
        out = (new <= lo[idx]) | (new >= hi[idx])
        new = np.where(out, 0.5 * (lo[idx] + hi[idx]), new)
        done = (np.abs(new - th) < tol) | (hi[idx] - lo[idx] < tol)
        theta[idx] = new
        active[idx[done]] = False
    return theta


def _wle_se(cal, x, th, eps: float = 1e-5):
    """SE of the WLE: 1 / sqrt(-f'(theta_hat)) with f = dlogL/dtheta + J/(2I) the weighted
    likelihood score (f' by central differences), which is what mirt's fscores reports
    (checked against its Science WLE expectations); 1/sqrt(I) where f' >= 0."""

    def f(t):
        g, _, info, jj = _derivs_at(cal, x, t, need_j=True)
        return g + jj / (2 * np.maximum(info, 1e-300))

    fd = (f(th + eps) - f(th - eps)) / (2 * eps)
    _, _, info, _ = _derivs_at(cal, x, th)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fd < 0, 1.0 / np.sqrt(-fd), 1.0 / np.sqrt(info))


# ----------------------------------------------------------------------------- linear fast path
def _hermite(xg: np.ndarray, f: np.ndarray, fp: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Cubic Hermite interpolation of f (with exact derivative fp) on the uniform grid xg."""
    h = xg[1] - xg[0]
    u = np.clip((xq - xg[0]) / h, 0.0, len(xg) - 1 - 1e-12)
    k = np.minimum(u.astype(np.int64), len(xg) - 2)
    t = u - k
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * f[k]
        + (t3 - 2 * t2 + t) * h * fp[k]
        + (-2 * t3 + 3 * t2) * f[k + 1]
        + (t3 - t2) * h * fp[k + 1]
    )


class _Linear:
    """Sufficient-statistic representation for logit-linear items (2PL, Rasch, GPCM, PCM).

    log L_i(theta) = S_i theta + T_i + sum_{j presented to i} log P_j0(theta) with
    S_i = sum_j alpha_{j, x_ij}; every estimator depends on the data only through
    (S_i, booklet of i), so per-booklet tables on fine grids replace per-item work.
    Interpolation is cubic Hermite with exact derivatives (posterior/test cumulants),
    accurate to ~1e-9 (checked in the tests against the direct computation).
    """

    def __init__(self, cal: Calibration, x: np.ndarray):
        self.cal = cal
        items = cal.item_names
        J = len(items)
        obs = ~np.isnan(x)
        x0 = np.where(obs, x, 0.0)
        alphas = []
        prop = True
        for it in items:
            a, _ = cal.models[it].logit_linear(cal.params[it])
            a = np.r_[0.0, np.asarray(a, float)]
            alphas.append(a)
            prop &= np.allclose(a, np.arange(len(a)) * a[1])
        self.alphas = alphas
        if prop:
            self.S = x0 @ np.array([a[1] for a in alphas])
        else:
            Kmax = max(len(a) for a in alphas)
            lut = np.zeros((J, Kmax))
            for j, a in enumerate(alphas):
                lut[j, : len(a)] = a
            self.S = lut[np.arange(J)[None, :], x0.astype(np.int64)].sum(1)
        if obs.all():
            self.bid = np.zeros(x.shape[0], dtype=np.int64)
            self.B = np.ones((1, J))
        else:
            keys = rd._row_keys(obs.astype(np.int8))
            _, first, self.bid = np.unique(keys, return_index=True, return_inverse=True)
            self.B = obs[first].astype(float)
            if not (self.B[self.bid] == obs).all():
                raise ScoringError("internal: booklet hashing collision")  # pragma: no cover
        self.n_obs = obs.sum(1)

    # -- discrete-grid posterior (EAP, PV) ---------------------------------------------------
    def logp0(self, theta: np.ndarray) -> np.ndarray:
        """(n_booklets, q) sum over presented items of log P_j0(theta)."""
        lp0 = np.stack([self.cal.models[it].log_prob(self.cal.params[it], theta)[:, 0] for it in self.cal.item_names])
        return self.B @ lp0

    def post_moments(self, theta: np.ndarray, bq: np.ndarray, Sx: np.ndarray, G: int = 2049):
        """Posterior mean and SD on the grid ``theta`` for log density S' theta + bq[booklet]."""
        mean = np.empty(len(Sx))
        sd = np.empty(len(Sx))
        tc = theta - theta.mean()
        for b in range(bq.shape[0]):
            rows = np.flatnonzero(self.bid == b) if bq.shape[0] > 1 else slice(None)
            Sb = Sx[rows]
            if np.size(Sb) == 0:
                continue
            lo, hi = float(Sb.min()) - 0.5, float(Sb.max()) + 0.5
            sg = np.linspace(lo, hi, G)
            L = np.multiply.outer(sg, tc) + bq[b]
            L -= L.max(1, keepdims=True)
            np.exp(L, out=L)
            L /= L.sum(1, keepdims=True)
            m1 = L @ tc
            dev = tc[None, :] - m1[:, None]
            c2 = (L * dev**2).sum(1)
            c3 = (L * dev**3).sum(1)
            c4 = (L * dev**4).sum(1) - 3 * c2**2
            # d mean/dS = c2, d var/dS = c3, d c3/dS = kappa4 (cumulants of theta)
            mean[rows] = _hermite(sg, m1, c2, Sb) + theta.mean()
            v = _hermite(sg, c2, c3, Sb)
            sd[rows] = np.sqrt(np.maximum(v, 0.0))
            del c4
        return mean, sd

    # -- continuous-theta estimators (ML, MAP, WLE) ------------------------------------------
    def test_cumulants(self, tg: np.ndarray):
        """Per booklet sums over items of the cumulants of alpha under P_j(theta): E, I=var, k3, k4."""
        rows = []
        for j, it in enumerate(self.cal.item_names):
            P = self.cal.models[it].prob(self.cal.params[it], tg)  # (T, K)
            a = self.alphas[j]
            e = P @ a
            dv = a[None, :] - e[:, None]
            v = (P * dv**2).sum(1)
            k3 = (P * dv**3).sum(1)
            k4 = (P * dv**4).sum(1) - 3 * v**2
            rows.append(np.stack([e, v, k3, k4]))
        C = np.stack(rows)  # (J, 4, T)
        return np.einsum("bj,jct->bct", self.B, C)  # (nb, 4, T)

    def solve(self, method: str, mean: float, var: float, max_theta: float, step: float = 0.005):
        """theta_hat and SE for ML/MAP/WLE by inverting the monotone per-booklet estimating function."""
        tg = np.arange(-max_theta, max_theta + step / 2, step)
        C = self.test_cumulants(tg)
        n = len(self.S)
        th = np.empty(n)
        se = np.empty(n)
        ok = np.ones(n, bool)
        for b in range(C.shape[0]):
            rows = np.flatnonzero(self.bid == b) if C.shape[0] > 1 else np.arange(n)
            E, I, K3, K4 = C[b]
            if not self.B[b].any():  # no items presented: prior for MAP, undefined otherwise
                th[rows] = mean if method == "MAP" else np.nan
                se[rows] = np.sqrt(var) if method == "MAP" else np.nan
                continue
            if method == "ML":
                F, Fp = E, I
            elif method == "MAP":
                F, Fp = E + (tg - mean) / var, I + 1.0 / var
            else:  # WLE: f = S - E + K3/(2I) = 0  <=>  S = E - K3/(2I)
                Is = np.maximum(I, 1e-300)
                with np.errstate(invalid="ignore", over="ignore"):
                    F = E - K3 / (2 * Is)
                    Fp = I - (K4 * Is - K3**2) / (2 * Is**2)
            # restrict to the span where the booklet carries information (outside it the
            # functions are flat to rounding error); rows whose root falls outside -> fallback
            if method == "MAP":
                k0, k1 = 0, len(tg) - 1
            else:
                span = np.flatnonzero(I > 1e-9 * I.max())
                k0, k1 = int(span[0]), int(span[-1])
                # the WLE function can dip in the far tails (WLE -> the smallest slope's limit):
                # use the increasing branch between its minimum and maximum
                k0 = k0 + int(np.argmin(F[k0 : k1 + 1]))
                k1 = k0 + int(np.argmax(F[k0 : k1 + 1]))
            Fs, Fps, tgs = F[k0 : k1 + 1], Fp[k0 : k1 + 1], tg[k0 : k1 + 1]
            if len(Fs) < 3 or not np.all(np.diff(Fs) > 0):
                ok[rows] = False
                continue
            Sb = self.S[rows]
            inside = (Sb > Fs[0]) & (Sb < Fs[-1])
            ok[rows[~inside]] = False
            k = np.clip(np.searchsorted(Fs, Sb) - 1, 0, len(tgs) - 2)
            F, Fp = Fs, Fps
            # Newton on the Hermite cubic of F within [tg_k, tg_k+1]
            h = step
            t = np.clip((Sb - F[k]) / np.maximum(F[k + 1] - F[k], 1e-300), 0.0, 1.0)
            for _ in range(8):
                t2, t3 = t * t, t * t * t
                val = (2 * t3 - 3 * t2 + 1) * F[k] + (t3 - 2 * t2 + t) * h * Fp[k] + (-2 * t3 + 3 * t2) * F[k + 1] + (t3 - t2) * h * Fp[k + 1]
                der = (6 * t2 - 6 * t) * F[k] + (3 * t2 - 4 * t + 1) * h * Fp[k] + (-6 * t2 + 6 * t) * F[k + 1] + (3 * t2 - 2 * t) * h * Fp[k + 1]
                t = np.clip(t - (val - Sb) / np.where(der > 0, der, 1e-300), 0.0, 1.0)
            est = tgs[k] + t * h
            th[rows] = est
            tg_s, I_s, K3_s = tgs, I[k0 : k1 + 1], K3[k0 : k1 + 1]
            if method == "WLE":
                # F' at the estimate by linear interpolation of the fine grid
                se[rows] = 1.0 / np.sqrt(np.maximum(np.interp(est, tg_s, Fp), 1e-300))
            else:
                iv = _hermite(tg_s, I_s, K3_s, est) + (1.0 / var if method == "MAP" else 0.0)
                se[rows] = 1.0 / np.sqrt(np.maximum(iv, 1e-300))
        return th, se, ok


def _finish(cal, x, th, se, method):
    n_items = (~np.isnan(x)).sum(1)
    none = n_items == 0
    if method == "ML":
        ext = _extreme(cal, x)
        th = np.where(ext == -1, -np.inf, np.where(ext == 1, np.inf, th))
        se = np.where(ext != 0, np.nan, se)
    if method in ("ML", "WLE"):
        th = np.where(none, np.nan, th)
        se = np.where(none, np.nan, se)
    return th, se, n_items


def _score_linear(cal, x, method, theta_grid, mean, var, max_theta):
    lin = _Linear(cal, x)
    if method == "EAP":
        bq = lin.logp0(theta_grid) + latent_log_weights(theta_grid, mean, var)
        th, se = lin.post_moments(theta_grid, bq, lin.S)
    else:
        th, se, ok = lin.solve(method, mean, var, max_theta)
        if not ok.all():  # non-monotone estimating function in some booklet: direct Newton
            bad = np.flatnonzero(~ok)
            t2, s2, _, inv = _score_general(cal, x[bad], None, method, theta_grid, mean, var, max_theta)
            th[bad], se[bad] = t2[inv], s2[inv]
    return _finish(cal, x, th, se, method)


def _score_general(cal, x, n_cat, method, theta_grid, mean, var, max_theta):
    if n_cat is None:
        n_cat = np.array([cal.models[it].n_cat for it in cal.item_names])
    design = rd.build_design(x, np.ones(x.shape[0]), n_cat, _linear_flags(cal))
    t = _terms(cal, design, theta_grid, latent_log_weights(theta_grid, mean, var))
    eap, psd, _ = rd.posterior_moments(design, t)
    xd = design.x
    if method == "EAP":
        th, se = eap, psd
    elif method == "MAP":
        th = _newton(cal, xd, eap, mean, var, prior=True, max_theta=max_theta)
        _, h, info, _ = _derivs_at(cal, xd, th)
        curv = -(h - 1.0 / var)
        curv = np.where(curv > 0, curv, info + 1.0 / var)
        se = 1.0 / np.sqrt(curv)
    elif method == "ML":
        th = _newton(cal, xd, eap, mean, var, prior=False, max_theta=max_theta)
        _, h, info, _ = _derivs_at(cal, xd, th)
        curv = np.where(h < 0, -h, info)
        with np.errstate(divide="ignore"):
            se = 1.0 / np.sqrt(curv)
    else:
        th = _wle(cal, xd, eap, max_theta=max_theta)
        se = _wle_se(cal, xd, th)
    th, se, n_items = _finish(cal, xd, th, se, method)
    return th, se, n_items, design.inverse


# ----------------------------------------------------------------------------- score
def score(
    responses: Any,
    calibration: Calibration,
    method: str = "EAP",
    *,
    quadpts: int | None = None,
    theta_range: tuple[float, float] | None = None,
    prior_mean: float | None = None,
    prior_var: float | None = None,
    max_theta: float = 20.0,
    omitted: str = "wrong",
    not_reached: str = "not_presented",
    exact: bool = False,
) -> pd.DataFrame:
    """Person ability estimates with standard errors.

    Returns a DataFrame indexed like the response rows (student ids for long input)
    with columns ``theta``, ``se`` and ``n_items`` (items answered).  ``method`` is
    "EAP" (default; 121 nodes on [-6, 6] as mirt's fscores), "MAP", "ML" or "WLE".
    The prior is the calibration's latent N(mean, variance) unless overridden.
    Students without responses get the prior mean/SD (EAP, MAP) or NaN (ML, WLE).
    For logit-linear models (2PL, Rasch, GPCM, PCM) the estimates are computed from
    the sufficient statistic S_i = sum_j alpha_{j,x_ij} and the booklet through
    per-booklet tables (cubic Hermite interpolation, error ~1e-9); ``exact=True``
    forces the direct per-student computation.
    """
    method = str(method).upper()
    if method not in METHODS:
        raise ScoringError(f"method must be one of {METHODS}; got {method!r}")
    data = _prepare(responses, calibration, omitted, not_reached)
    mean = calibration.latent_mean if prior_mean is None else float(prior_mean)
    var = calibration.latent_var if prior_var is None else float(prior_var)
    if not var > 0:
        raise ScoringError(f"prior_var must be > 0, got {var}")
    theta_grid = _grid(calibration, quadpts, theta_range)
    with rd.blas_single_thread():
        if _linear_flags(calibration).all() and not exact:
            th, se, n_items = _score_linear(calibration, data.x, method, theta_grid, mean, var, max_theta)
            inv = np.arange(data.n)
        else:
            th, se, n_items, inv = _score_general(calibration, data.x, data.n_cat, method, theta_grid, mean, var, max_theta)
    out = pd.DataFrame({"theta": th[inv], "se": se[inv], "n_items": n_items[inv]}, index=data.index)
    out.attrs.update(method=method, prior_mean=mean, prior_var=var, quadpts=len(theta_grid))
    return out


def eap_sum_score_table(calibration: Calibration, quadpts: int | None = None) -> pd.DataFrame:
    """EAP and posterior SD for each summed score (Thissen et al. 1995; mirt's ``EAPsum``):
    P(s | theta) by the Lord-Wingersky recursion over all items, prior N(mean, variance)."""
    from qualmon.scoring.calibration import _lw_distribution

    theta = _grid(calibration, quadpts, None)
    pi = np.exp(calibration.log_prior(theta))
    probs = [calibration.models[it].prob(calibration.params[it], theta) for it in calibration.item_names]
    f = _lw_distribution(probs)  # (S+1, q)
    post = f * pi[None, :]
    ps = post.sum(1)
    eap = (post @ theta) / ps
    sd = np.sqrt(np.maximum((post @ theta**2) / ps - eap**2, 0))
    return pd.DataFrame({"sum_score": np.arange(f.shape[0]), "theta": eap, "se": sd, "prob": ps}).set_index("sum_score")


# ----------------------------------------------------------------------------- plausible values
def _background_matrix(background: Any, index: pd.Index, n: int, n_components: Any) -> tuple[np.ndarray, list]:
    if background is None:
        return np.ones((n, 1)), ["(intercept)"]
    if isinstance(background, pd.Series):
        background = background.to_frame()
    if not isinstance(background, pd.DataFrame):
        raise ScoringError("background must be a DataFrame of covariates aligned with the response rows")
    bg = background
    if not bg.index.equals(index):
        if bg.index.is_unique and index.isin(bg.index).all():
            bg = bg.reindex(index)
        elif len(bg) == n:
            bg = bg.set_axis(index)
        else:
            raise ScoringError(f"background has {len(bg)} rows that match neither the index nor the number ({n}) of response rows")
    for c in bg.columns:
        miss = bg[c].isna().to_numpy()
        if miss.any():
            raise ScoringError(
                f"background column {c!r} has missing values in rows {rd._rows_list(bg.index[miss])}; "
                "impute them or add a missing-indicator category"
            )
    num = [c for c in bg.columns if pd.api.types.is_numeric_dtype(bg[c]) and not pd.api.types.is_bool_dtype(bg[c])]
    cat = [c for c in bg.columns if c not in num]
    parts, names = [], []
    if num:
        parts.append(bg[num].to_numpy(dtype=float))
        names += [str(c) for c in num]
    if cat:
        d = pd.get_dummies(bg[cat].astype("string"), drop_first=True, dtype=float)
        parts.append(d.to_numpy())
        names += list(map(str, d.columns))
    Z = np.column_stack(parts) if parts else np.zeros((n, 0))
    if n_components is not None and Z.shape[1] > 0:
        mu = Z.mean(0)
        sd = Z.std(0)
        sd[sd == 0] = 1.0
        Zs = (Z - mu) / sd
        U, S, Vt = np.linalg.svd(Zs, full_matrices=False)
        if isinstance(n_components, float) and 0 < n_components < 1:
            frac = np.cumsum(S**2) / np.sum(S**2)
            k = int(np.searchsorted(frac, n_components) + 1)
        else:
            k = int(n_components)
        k = max(1, min(k, Z.shape[1]))
        Z = U[:, :k] * S[:k]
        names = [f"PC{i + 1}" for i in range(k)]
    X = np.column_stack([np.ones(n), Z])
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        raise ScoringError(
            f"background covariates are collinear (rank {rank} < {X.shape[1]} columns incl. intercept); "
            "drop redundant columns or use n_components"
        )
    return X, ["(intercept)"] + names


def plausible_values(
    responses: Any,
    calibration: Calibration,
    n: int = 5,
    background: Any = None,
    *,
    seed: int | np.random.Generator | None = None,
    weights: Any = None,
    n_components: int | float | None = None,
    quadpts: int | None = None,
    theta_range: tuple[float, float] | None = None,
    draw: str = "posterior",
    tol: float = 1e-6,
    max_iter: int = 1000,
    omitted: str = "wrong",
    not_reached: str = "not_presented",
) -> pd.DataFrame:
    """Plausible values pv1..pvN drawn from each student's posterior under a latent regression.

    Conditioning model theta_i ~ N(x_i' beta, sigma^2) with x_i = intercept plus the
    ``background`` covariates (numeric as is, categorical dummy-coded; optionally
    replaced by their first principal components, ``n_components`` = number or
    variance fraction).  beta and sigma^2 are estimated by EM with the item
    parameters fixed: posterior moments (m_i, v_i) on the grid, then
    beta = (X'WX)^-1 X'W m, sigma^2 = sum w (v + (m - X beta)^2) / sum w.
    Draws: ``draw="posterior"`` samples the discretised posterior (inverse CDF on
    the grid, uniform within the node's cell, then shrunk toward m_i by
    sqrt(v_i / (v_i + h^2/12)) so that each student's draws keep the posterior mean
    and variance exactly); ``draw="normal"`` uses N(m_i, v_i) (mirt's default
    ``plausible.type``).  Default grid 121 nodes on
    [-6, 6].  Reproducible from ``seed``.  The fitted beta, sigma^2 and EM report
    are in ``result.attrs``.
    """
    if int(n) < 1:
        raise ScoringError("n (number of plausible values) must be >= 1")
    if draw not in ("posterior", "normal"):
        raise ScoringError("draw must be 'posterior' or 'normal'")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    data = _prepare(responses, calibration, omitted, not_reached)
    N = data.n
    X, names = _background_matrix(background, data.index, N, n_components)
    if weights is None:
        w = np.ones(N)
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape[0] != N or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ScoringError(f"weights must be {N} finite non-negative values")
    theta = _grid(calibration, quadpts, theta_range)
    nd = int(n)
    with rd.blas_single_thread():
        linear = _linear_flags(calibration).all()
        if linear:
            lin = _Linear(calibration, data.x)
            b0 = lin.logp0(theta)

            def moments(mu, s2):
                return lin.post_moments(theta, b0 - 0.5 * theta**2 / s2, lin.S + mu / s2)

            def post_rows(s, e, mu, s2):
                bq = b0 - 0.5 * theta**2 / s2
                L = np.multiply.outer(lin.S[s:e] + mu[s:e] / s2, theta) + bq[lin.bid[s:e]]
                L -= L.max(1, keepdims=True)
                np.exp(L, out=L)
                L /= L.sum(1, keepdims=True)
                return L
        else:
            design = rd.build_design(data.x, np.ones(N), data.n_cat, _linear_flags(calibration), collapse=False)

            def moments(mu, s2):
                t = _terms(calibration, design, theta, -0.5 * theta**2 / s2)
                m, sd, _ = rd.posterior_moments(design, t, row_slope=mu / s2)
                return m, sd

            def post_rows(s, e, mu, s2):
                t = _terms(calibration, design, theta, -0.5 * theta**2 / s2)
                return rd.posterior_matrix(design, t, s, e, row_slope=mu / s2)

        # EM for the latent regression (prior N(X beta, s2), item parameters fixed)
        s2 = calibration.latent_var
        beta = np.zeros(X.shape[1])
        beta[0] = calibration.latent_mean
        XtW = X.T * w
        XtWX_inv = np.linalg.inv(XtW @ X)
        conv = False
        it = 0
        for it in range(1, max_iter + 1):
            m, sd = moments(X @ beta, s2)
            beta_new = XtWX_inv @ (XtW @ m)
            resid = m - X @ beta_new
            s2_new = float(w @ (sd**2 + resid**2) / w.sum())
            change = max(np.max(np.abs(beta_new - beta)), abs(s2_new - s2))
            beta, s2 = beta_new, s2_new
            if change < tol:
                conv = True
                break
        mu = X @ beta
        out = np.empty((N, nd))
        if draw == "normal":
            m, sd = moments(mu, s2)
            out[:] = m[:, None] + sd[:, None] * rng.standard_normal((N, nd))
        else:
            h = theta[1] - theta[0]
            U = rng.random((N, nd))
            Jit = rng.random((N, nd)) - 0.5
            if not linear:
                mu_d = np.empty(design.n_rows)
                mu_d[design.inverse] = mu
                U_d = np.empty_like(U)
                U_d[design.inverse] = U
                J_d = np.empty_like(Jit)
                J_d[design.inverse] = Jit
                U, Jit, mu_use = U_d, J_d, mu_d
            else:
                mu_use = mu
            res_rows = np.empty((len(mu_use), nd))
            for s, e in rd._chunks(len(mu_use)):
                P = post_rows(s, e, mu_use, s2)
                pm = P @ theta
                pv = np.maximum(P @ theta**2 - pm**2, 0.0)
                shrink = np.sqrt(pv / (pv + h * h / 12.0))
                Cs = np.cumsum(P, axis=1)
                for k in range(nd):
                    idx = np.minimum((Cs < U[s:e, k, None]).sum(axis=1), len(theta) - 1)
                    raw = theta[idx] + h * Jit[s:e, k]
                    res_rows[s:e, k] = pm + (raw - pm) * shrink
            out[:] = res_rows if linear else res_rows[design.inverse]
    res = pd.DataFrame(out, index=data.index, columns=[f"pv{k + 1}" for k in range(int(n))])
    res.attrs.update(
        beta=pd.Series(beta, index=names),
        sigma2=s2,
        iterations=it,
        converged=conv,
        draw=draw,
        quadpts=len(theta),
    )
    if not conv:
        import warnings

        warnings.warn(f"latent regression EM did not converge in {max_iter} iterations", RuntimeWarning, stacklevel=2)
    return res
