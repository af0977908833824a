"""Marginal maximum-likelihood IRT calibration (Bock & Aitkin 1981 EM).

``calibrate(responses, model="2PL", weights=None, ...)`` estimates item
parameters for a unidimensional IRT model with a normal latent distribution on a
fixed rectangular quadrature grid (mirt's default: 61 equally spaced nodes on
[-6, 6]).  The prior weights are the N(mu, sigma^2) density at the nodes,
normalised to sum to one, and the marginal log-likelihood is

    l = sum_i w_i log sum_q pi_q prod_j P_j(x_ij | theta_q)

(``w_i``: frequency x sample weights; items not presented to a student drop out
of his product).  Identification: mu = 0 and sigma^2 = 1 unless every slope is
fixed (Rasch/PCM: sigma^2 estimated, as mirt's ``itemtype="Rasch"``) or some items
have fixed parameters (``fixed=``: mu and sigma^2 estimated).

Algorithm: E-step by matrix products over response-indicator matrices (see
``scoring/_data.py``); M-step by Newton-Raphson per item with analytic
gradients/Hessians (vectorised over items of the same family), line search on
the expected complete-data log-likelihood (+ log prior); latent mean/variance by
moment matching on the grid; the EM map is accelerated by SQUAREM (Varadhan &
Roland 2008, scheme S3) with a monotonicity safeguard.  Convergence: the largest
absolute change of a parameter on its natural scale (a, d, c, mean, variance) in
one plain EM step < ``tol``.

Standard errors (``se="oakes"``, the default, as mirt's ``SE.type="Oakes"``):
the observed information is minus the Jacobian of the analytic marginal score
(Fisher identity: marginal score = expected complete-data score), taken by
central differences -- Oakes' (1999) identity as in Chalmers (2018, BJMSP).
``se="crossprod"``: sum_i w_i g_i g_i' of per-student marginal scores;
``se="sandwich"``: H^-1 (sum_c s_c s_c') H^-1 with scores s_c summed within
``cluster`` (robust / design-consistent for sample weights).
"""

from __future__ import annotations

import html
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from qualmon.scoring import _data as rd
from qualmon.scoring.models import (
    BetaPrior,
    ItemModel,
    LogitNormalPrior,
    LogNormalPrior,
    ModelSpecError,
    NormalPrior,
    Prior,
    ThreePL,
    get_model,
    item_table,
    models_from_table,
)

__all__ = ["calibrate", "Calibration", "CalibrationError", "ConvergenceError", "latent_log_weights"]


class CalibrationError(ValueError):
    """Invalid calibration input or settings."""


class ConvergenceError(CalibrationError):
    """The EM algorithm did not converge within ``max_iter`` iterations."""


# ----------------------------------------------------------------------------- helpers
def latent_log_weights(theta: np.ndarray, mean: float, var: float) -> np.ndarray:
    """log pi_q of N(mean, var) at the nodes, normalised so that sum_q pi_q = 1."""
    lw = -0.5 * (theta - mean) ** 2 / var
    mx = lw.max()
    return lw - (mx + np.log(np.exp(lw - mx).sum()))


def _parse_prior(spec: Any) -> Prior:
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, (tuple, list)) and spec:
        kind = str(spec[0]).lower()
        args = [float(v) for v in spec[1:]]
        if kind in ("norm", "normal"):
            return NormalPrior(*args)
        if kind in ("lnorm", "lognormal"):
            return LogNormalPrior(*args)
        if kind == "beta":
            return BetaPrior(*args)
        if kind in ("logitnorm", "logit-normal"):
            return LogitNormalPrior(*args)
    raise CalibrationError(
        f"prior {spec!r} not understood; use a Prior object or ('norm', mean, sd), ('lnorm', meanlog, sdlog), ('beta', alpha, beta), ('logitnorm', mean, sd)"
    )


def _resolve_priors(priors: Any, items: list, models: dict) -> dict:
    """item -> {param name: Prior}."""
    out: dict = {it: {} for it in items}
    if priors is None:
        return out
    if not isinstance(priors, Mapping):
        raise CalibrationError("priors must be a mapping {param: prior} or {item: {param: prior}}")
    for key, val in priors.items():
        if key in out and isinstance(val, Mapping):
            for p, spec in val.items():
                if p not in models[key].par_names:
                    raise CalibrationError(f"prior for item {key!r}: model {models[key].family} has no parameter {p!r}")
                out[key][p] = _parse_prior(spec)
        else:
            pr = _parse_prior(val)
            used = False
            for it in items:
                if key in models[it].par_names and models[it].free[models[it].par_names.index(key)]:
                    out[it][key] = pr
                    used = True
            if not used:
                raise CalibrationError(f"prior on {key!r}: no estimated item parameter has that name")
    return out


@dataclass
class _Group:
    model: ItemModel
    idx: np.ndarray  # item positions
    free: np.ndarray  # (m, p) bool
    priors: list  # per item: dict param index -> Prior


class _Problem:
    """Parameter packing, E-step and M-step for one calibration."""

    def __init__(self, design: rd.Design, models: list[ItemModel], start: list[np.ndarray], fixed_items: set,
                 priors: list[dict], theta: np.ndarray, free_mean: bool, free_var: bool, mean: float, var: float,
                 mstep_iter: int = 5):
        self.design = design
        self.theta = theta
        self.models = models
        self.free_mean = free_mean
        self.free_var = free_var
        self.mstep_iter = mstep_iter
        groups: dict = {}
        for j, m in enumerate(models):
            groups.setdefault((type(m), m.n_cat), []).append(j)
        self.groups: list[_Group] = []
        self.W: list[np.ndarray] = []
        for (_, _), idx in groups.items():
            idx = np.array(idx)
            m = models[idx[0]]
            fr = np.tile(m.free, (len(idx), 1))
            for r, j in enumerate(idx):
                if j in fixed_items:
                    fr[r] = False
            pri = []
            for j in idx:
                pri.append({m.par_names.index(p): pr for p, pr in priors[j].items()})
            self.groups.append(_Group(m, idx, fr, pri))
            self.W.append(m.to_working(np.stack([start[j] for j in idx])))
        self.mean, self.var = float(mean), float(var)
        self.n_free_items = int(sum(g.free.sum() for g in self.groups))

    # -- packing -------------------------------------------------------------------------
    def pack(self, W: list[np.ndarray], mean: float, var: float) -> np.ndarray:
        parts = [w[g.free] for w, g in zip(W, self.groups)]
        if self.free_mean:
            parts.append(np.array([mean]))
        if self.free_var:
            parts.append(np.array([math.log(var)]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def unpack(self, x: np.ndarray) -> tuple[list[np.ndarray], float, float]:
        W = []
        pos = 0
        for w0, g in zip(self.W, self.groups):
            w = w0.copy()
            k = int(g.free.sum())
            w[g.free] = x[pos : pos + k]
            pos += k
            W.append(w)
        mean, var = self.mean, self.var
        if self.free_mean:
            mean = float(x[pos])
            pos += 1
        if self.free_var:
            var = float(math.exp(x[pos]))
            pos += 1
        return W, mean, var

    @property
    def n_par(self) -> int:
        return self.n_free_items + int(self.free_mean) + int(self.free_var)

    def natural(self, x: np.ndarray) -> np.ndarray:
        """Packed vector on the natural scale (c instead of logit c, variance instead of log)."""
        W, mean, var = self.unpack(x)
        parts = [g.model.from_working(w)[g.free] for w, g in zip(W, self.groups)]
        if self.free_mean:
            parts.append(np.array([mean]))
        if self.free_var:
            parts.append(np.array([var]))
        return np.concatenate(parts) if parts else np.zeros(0)

    # -- E-step --------------------------------------------------------------------------
    def item_logp(self, W: list[np.ndarray], theta: np.ndarray | None = None) -> list[np.ndarray]:
        theta = self.theta if theta is None else theta
        out: list = [None] * len(self.models)
        for w, g in zip(W, self.groups):
            lp = g.model.log_prob(g.model.from_working(w), theta)
            for r, j in enumerate(g.idx):
                out[j] = lp[r]
        return out

    def terms(self, x: np.ndarray) -> rd.Terms:
        W, mean, var = self.unpack(x)
        logp: list = [None] * len(self.models)
        lin: list = [None] * len(self.models)
        for w, g in zip(W, self.groups):
            nat = g.model.from_working(w)
            lp = g.model.log_prob(nat, self.theta)
            ll = g.model.logit_linear(nat)
            for r, j in enumerate(g.idx):
                logp[j] = lp[r]
                if ll is not None:
                    lin[j] = (ll[0][r], ll[1][r])
        return rd.make_terms(self.design, logp, lin, self.theta, latent_log_weights(self.theta, mean, var))

    def estep(self, x: np.ndarray, need_counts: bool = True):
        t = self.terms(x)
        if not rd.finite_terms(t):
            return -np.inf, None, None
        ll, Rl, Rn, Nb, Nq = rd.estep(self.design, t, need_counts=need_counts)
        if not need_counts:
            return ll, None, Nq
        cnt = rd.item_counts(self.design, Rl, Rn, Nb)
        gc = [np.stack([cnt[j] for j in g.idx]) for g in self.groups]
        return ll, gc, Nq

    # -- M-step --------------------------------------------------------------------------
    def _prior_terms(self, g: _Group, w: np.ndarray):
        """log prior, gradient and Hessian diagonal (working scale) per item (m,), (m,p), (m,p)."""
        m, p = w.shape
        lp = np.zeros(m)
        gr = np.zeros((m, p))
        hd = np.zeros((m, p))
        if not any(g.priors):
            return lp, gr, hd
        nat = g.model.from_working(w)
        jac = g.model.working_jacobian(w)
        hes = g.model.working_hessian_diag(w)
        for r, pri in enumerate(g.priors):
            for k, prior in pri.items():
                v, d1, d2 = prior.derivs(np.array([nat[r, k]]))
                lp[r] += v[0]
                gr[r, k] += d1[0] * jac[r, k]
                hd[r, k] += d2[0] * jac[r, k] ** 2 + d1[0] * hes[r, k]
        return lp, gr, hd

    def _objective(self, g: _Group, w: np.ndarray, counts: np.ndarray) -> np.ndarray:
        q = g.model.loglik(g.model.from_working(w), self.theta, counts)
        lp, _, _ = self._prior_terms(g, w)
        return q + lp

    def group_grad_hess(self, g: _Group, w: np.ndarray, counts: np.ndarray, fisher: bool = False):
        G, H = g.model.grad_hess(w, self.theta, counts, fisher=fisher)
        _, pg, ph = self._prior_terms(g, w)
        G = G + pg
        idx = np.arange(w.shape[1])
        H = H.copy()
        H[:, idx, idx] += ph
        return G, H

    def mstep_group(self, g: _Group, w: np.ndarray, counts: np.ndarray) -> np.ndarray:
        w = w.copy()
        fr = g.free
        if not fr.any():
            return w
        active = fr.any(axis=1)
        fisher = isinstance(g.model, ThreePL)
        obj = self._objective(g, w, counts)
        for _ in range(self.mstep_iter):
            G, H = self.group_grad_hess(g, w, counts, fisher=fisher)
            # restrict to free params: set fixed rows/cols to identity, gradient 0
            fm = fr.astype(float)
            Hn = -H * fm[:, :, None] * fm[:, None, :]
            eye = np.eye(w.shape[1])[None]
            Hn = Hn + eye * (1.0 - fm)[:, None, :]
            Gf = G * fm
            # regularise if not positive definite
            ev = np.linalg.eigvalsh(Hn)
            bad = ev[:, 0] <= 1e-10 * np.maximum(ev[:, -1], 1e-300)
            if bad.any():
                Hn[bad] += eye[0] * (np.abs(ev[bad, :1])[:, :, None] + 1e-3 * np.maximum(ev[bad, -1:], 1.0)[:, :, None])
            step = np.linalg.solve(Hn, Gf[..., None])[..., 0]
            mx = np.abs(step).max(axis=1, keepdims=True)
            step = step * np.minimum(1.0, 2.0 / np.maximum(mx, 1e-300))
            t = np.ones(w.shape[0])
            acc = np.zeros(w.shape[0], bool)
            for _ls in range(20):
                cand = w + t[:, None] * step
                newobj = self._objective(g, cand, counts)
                ok = np.isfinite(newobj) & (newobj >= obj - 1e-10 * np.abs(obj)) & ~acc
                w[ok] = cand[ok]
                obj = np.where(ok, newobj, obj)
                acc |= ok
                if acc[active].all():
                    break
                t = np.where(acc, t, t * 0.5)
            if np.abs(step[acc]).max(initial=0.0) < 1e-9:
                break
        return w

    def latent_mstep(self, Nq: np.ndarray, mean: float, var: float) -> tuple[float, float]:
        """Moment matching on the grid: E_pi[theta] = mean of Nq, E_pi[(theta-mu)^2] = its variance."""
        if not (self.free_mean or self.free_var):
            return mean, var
        t = self.theta
        N = Nq.sum()
        m1 = (Nq @ t) / N
        mu = m1 if self.free_mean else mean
        target = (Nq @ (t - mu) ** 2) / N
        if not self.free_var:
            return mu, var
        ls = math.log(max(target, 1e-6))
        for _ in range(50):
            s = math.exp(ls)
            p = np.exp(latent_log_weights(t, mu, s))
            dev2 = (t - mu) ** 2
            e2 = p @ dev2
            v2 = p @ dev2**2 - e2**2
            f = e2 - target
            der = v2 / (2 * s)
            stp = f / der if der > 0 else 0.0
            stp = max(min(stp, 1.0), -1.0)
            ls -= stp
            if abs(stp) < 1e-12:
                break
        # with a free mean, refine the mean so that E_pi[theta] matches m1 as well
        if self.free_mean:
            for _ in range(20):
                s = math.exp(ls)
                p = np.exp(latent_log_weights(t, mu, s))
                e1 = p @ t
                v = p @ (t - e1) ** 2
                d = (e1 - m1) / (v / s)
                mu -= d
                if abs(d) < 1e-12:
                    break
        return mu, math.exp(ls)

    def mstep(self, x: np.ndarray, counts: list[np.ndarray], Nq: np.ndarray) -> np.ndarray:
        W, mean, var = self.unpack(x)
        W2 = [self.mstep_group(g, w, c) for g, w, c in zip(self.groups, W, counts)]
        mean2, var2 = self.latent_mstep(Nq, mean, var)
        return self.pack(W2, mean2, var2)

    # -- marginal score -----------------------------------------------------------------
    def latent_grad(self, Nq: np.ndarray, mean: float, var: float) -> np.ndarray:
        t = self.theta
        N = Nq.sum()
        p = np.exp(latent_log_weights(t, mean, var))
        out = []
        if self.free_mean:
            out.append((Nq @ t - N * (p @ t)) / var)
        if self.free_var:
            dev2 = (t - mean) ** 2
            out.append((Nq @ dev2 - N * (p @ dev2)) / (2 * var))
        return np.array(out)

    def gradient(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """Marginal log-likelihood gradient (+ log prior) w.r.t. the packed working parameters."""
        ll, counts, Nq = self.estep(x)
        W, mean, var = self.unpack(x)
        parts = []
        for g, w, c in zip(self.groups, W, counts):
            G, _ = self.group_grad_hess(g, w, c)
            parts.append(G[g.free])
        parts.append(self.latent_grad(Nq, mean, var))
        return np.concatenate(parts), ll

    def log_prior_total(self, x: np.ndarray) -> float:
        W, _, _ = self.unpack(x)
        tot = 0.0
        for g, w in zip(self.groups, W):
            lp, _, _ = self._prior_terms(g, w)
            tot += float(lp.sum())
        return tot


# ----------------------------------------------------------------------------- EM driver
def _run_em(prob: _Problem, x0: np.ndarray, tol: float, max_iter: int, accelerate: str | None, progress: bool):
    """EM with optional SQUAREM.  Returns (x, loglik, iterations, max_change, converged, history)."""
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, disable=not progress, desc="EM", leave=False)
    except Exception:  # pragma: no cover - tqdm is a dependency
        bar = None

    def post(ll, x):
        return ll + prob.log_prior_total(x)

    it = 0
    x = x0
    ll, counts, Nq = prob.estep(x)
    if not np.isfinite(ll):
        raise CalibrationError("starting values give a non-finite log-likelihood; check the data")
    history = []
    conv = False
    change = np.inf
    step_max = 4.0
    while it < max_iter:
        x1 = prob.mstep(x, counts, Nq)
        it += 1
        change = float(np.max(np.abs(prob.natural(x1) - prob.natural(x)))) if x.size else 0.0
        ll1, c1, N1 = prob.estep(x1)
        history.append(ll1)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loglik=f"{ll1:.3f}", change=f"{change:.2e}")
        if change < tol:
            x, ll, counts, Nq = x1, ll1, c1, N1
            conv = True
            break
        if accelerate != "squarem" or it >= max_iter:
            x, ll, counts, Nq = x1, ll1, c1, N1
            continue
        x2 = prob.mstep(x1, c1, N1)
        it += 1
        r = x1 - x
        v = (x2 - x1) - r
        vv = float(v @ v)
        if vv <= 0:
            x, ll, counts, Nq = x2, *prob.estep(x2)
            continue
        alpha = -math.sqrt(float(r @ r) / vv)
        alpha = max(min(alpha, -1.0), -step_max)
        xp = x - 2 * alpha * r + alpha**2 * v
        llp, cp, Np = prob.estep(xp)
        if np.isfinite(llp) and post(llp, xp) >= post(ll1, x1) - 1e-9 * abs(ll1):
            if alpha == -step_max:
                step_max *= 4.0
            if it >= max_iter:  # no room for the stabilising EM step
                x, ll, counts, Nq = xp, llp, cp, Np
                continue
            x3 = prob.mstep(xp, cp, Np)
            it += 1
            x, (ll, counts, Nq) = x3, prob.estep(x3)
            if not np.isfinite(ll) or post(ll, x) < post(ll1, x1) - 1e-9 * abs(ll1):
                x, (ll, counts, Nq) = x2, prob.estep(x2)
        else:
            step_max = max(1.0, step_max / 4.0)
            x, (ll, counts, Nq) = x2, prob.estep(x2)
    if bar is not None:
        bar.close()
    return x, ll, counts, Nq, it, change, conv, history


# ----------------------------------------------------------------------------- result
@dataclass(repr=False)
class Calibration:
    """Result of :func:`calibrate`.

    Attributes
    ----------
    items : DataFrame indexed by item: ``model``, ``n_cat``, slope ``a``, intercept
        ``d`` (or ``d1..dk``), guessing ``c``, IRT difficulty ``b`` (or thresholds
        ``b1..bk``) and ``se_<name>`` for each estimated parameter.
    latent : DataFrame (rows ``mean``, ``variance``; columns ``estimate``, ``se``,
        ``estimated``) of the N(mu, sigma^2) ability distribution.
    loglik, converged, iterations, max_change : convergence report.
    vcov : covariance matrix of the estimated parameters (natural scale; ``None``
        if ``se=None``).
    fit : item fit (S-X2 with df and p, infit/outfit mean squares), computed on
        first access.
    """

    items: pd.DataFrame
    latent: pd.DataFrame
    loglik: float
    logpost: float
    converged: bool
    iterations: int
    max_change: float
    n_obs: int
    sum_weights: float
    n_par: int
    vcov: pd.DataFrame | None
    theta: np.ndarray
    models: dict
    params: dict
    categories: dict
    settings: dict
    elapsed: float = 0.0
    se_type: str | None = None
    _prob: Any = field(default=None, repr=False)
    _fit: pd.DataFrame | None = field(default=None, repr=False)
    history: list = field(default_factory=list, repr=False)

    @classmethod
    def from_items(
        cls,
        items: pd.DataFrame,
        *,
        mean: float = 0.0,
        variance: float = 1.0,
        categories: Mapping[Any, Sequence[float]] | None = None,
        quadpts: int = 61,
        theta_range: tuple[float, float] = (-6.0, 6.0),
    ) -> "Calibration":
        """A calibration with known item parameters (item bank, published values, linked
        parameters), for scoring new responses without re-estimating.

        ``items`` follows the ``Calibration.items`` layout (``model`` plus ``a``,
        ``d``/``d1..`` or ``b``/``b1..``, ``c``); ``categories`` maps item -> the raw
        score values of its categories (default 0..K-1).
        """
        tab = models_from_table(items)
        models = {it: m for it, (m, _) in tab.items()}
        params = {it: np.asarray(p, float) for it, (_, p) in tab.items()}
        cats = {}
        for it, m in models.items():
            vals = np.arange(m.n_cat, dtype=float) if categories is None or it not in categories else np.asarray(categories[it], float)
            if len(vals) != m.n_cat:
                raise CalibrationError(f"item {it!r}: {len(vals)} category values for a {m.n_cat}-category model")
            cats[it] = vals
        if not variance > 0:
            raise CalibrationError("variance must be > 0")
        latent = pd.DataFrame(
            {"estimate": [float(mean), float(variance)], "se": [np.nan, np.nan], "estimated": [False, False]},
            index=pd.Index(["mean", "variance"], name="parameter"),
        )
        return cls(
            items=item_table(models, params), latent=latent, loglik=np.nan, logpost=np.nan, converged=True, iterations=0,
            max_change=0.0, n_obs=0, sum_weights=0.0, n_par=0, vcov=None,
            theta=np.linspace(theta_range[0], theta_range[1], int(quadpts)), models=models, params=params,
            categories=cats, settings={"source": "from_items"},
        )

    # -- information criteria ------------------------------------------------------------
    @property
    def aic(self) -> float:
        """AIC = -2 loglik + 2 n_par."""
        return -2 * self.loglik + 2 * self.n_par

    @property
    def bic(self) -> float:
        """BIC = -2 loglik + n_par log(N), N = number of students (rows)."""
        return -2 * self.loglik + self.n_par * math.log(self.n_obs) if self.n_obs > 0 else float("nan")

    @property
    def item_names(self) -> list:
        return list(self.items.index)

    @property
    def latent_mean(self) -> float:
        return float(self.latent.loc["mean", "estimate"])

    @property
    def latent_var(self) -> float:
        return float(self.latent.loc["variance", "estimate"])

    def log_prior(self, theta: np.ndarray | None = None) -> np.ndarray:
        """Normalised log prior weights of N(mean, variance) at ``theta`` (default: calibration grid)."""
        t = self.theta if theta is None else np.asarray(theta, float)
        return latent_log_weights(t, self.latent_mean, self.latent_var)

    # -- item fit ------------------------------------------------------------------------
    @property
    def fit(self) -> pd.DataFrame:
        """Item fit: S-X2 (Orlando & Thissen 2000) with df and p; infit/outfit mean squares
        (Wright & Masters 1982) and their Wilson-Hilferty z values, with EAP abilities."""
        if self._fit is None:
            if self._prob is None:
                raise CalibrationError("item fit needs the calibration data, which were not kept (keep_data=False)")
            self._fit = _item_fit(self)
        return self._fit

    # -- presentation --------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """One row per item: model, IRT parameters (a, b/b1.., c) with standard errors and fit."""
        it = self.items
        cols = ["model", "a"]
        bcols = [c for c in it.columns if c == "b" or (c.startswith("b") and c[1:].isdigit())]
        cols += bcols
        if (it["model"] == "3PL").any():
            cols.append("c")
        se_cols = [f"se_{c}" for c in cols[1:] if f"se_{c}" in it.columns]
        out = it[cols + se_cols].copy()
        if self._prob is not None:
            try:
                f = self.fit
                for c in ("S_X2", "df_S_X2", "p_S_X2", "infit", "outfit"):
                    if c in f.columns:
                        out[c] = f[c]
            except Exception:  # fit is optional in the summary
                pass
        out.attrs.update(self.info())
        return out

    def info(self) -> dict:
        return {
            "n_students": self.n_obs,
            "n_items": len(self.items),
            "models": ", ".join(sorted(set(self.items["model"]))),
            "loglik": self.loglik,
            "logpost": self.logpost,
            "aic": self.aic,
            "bic": self.bic,
            "n_par": self.n_par,
            "converged": self.converged,
            "iterations": self.iterations,
            "max_change": self.max_change,
            "latent_mean": self.latent_mean,
            "latent_var": self.latent_var,
            "se_type": self.se_type,
            "quadpts": len(self.theta),
            "seconds": self.elapsed,
        }

    def __repr__(self) -> str:
        i = self.info()
        return (
            f"Calibration({i['models']}; {i['n_items']} items, {i['n_students']} students; "
            f"loglik={i['loglik']:.3f}, AIC={i['aic']:.2f}, BIC={i['bic']:.2f}; "
            f"{'converged' if i['converged'] else 'NOT converged'} in {i['iterations']} EM iterations; "
            f"latent N({i['latent_mean']:.3f}, {i['latent_var']:.3f}))"
        )

    def _repr_html_(self) -> str:
        i = self.info()
        head = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(f'{v:.4f}' if isinstance(v, float) else str(v))}</td></tr>"
            for k, v in i.items()
        )
        tab = self.items.to_html(float_format=lambda v: f"{v:.4f}", na_rep="")
        return f"<div><b>IRT calibration</b><table>{head}</table>{tab}</div>"

    # -- scoring shortcuts ---------------------------------------------------------------
    def score(self, responses: Any, method: str = "EAP", **kw) -> pd.DataFrame:
        """Person scores; see :func:`qualmon.scoring.persons.score`."""
        from qualmon.scoring.persons import score

        return score(responses, self, method=method, **kw)

    def plausible_values(self, responses: Any, n: int = 5, **kw) -> pd.DataFrame:
        """Plausible values; see :func:`qualmon.scoring.persons.plausible_values`."""
        from qualmon.scoring.persons import plausible_values

        return plausible_values(responses, self, n=n, **kw)

    def item_probabilities(self, theta: Any) -> dict:
        """item -> category probabilities (len(theta), K) at ``theta``."""
        t = np.asarray(theta, float)
        return {it: self.models[it].prob(self.params[it], t) for it in self.items.index}


# ----------------------------------------------------------------------------- main entry
def _resolve_models(model: Any, items: list, n_cat: np.ndarray, polytomous: str | None) -> dict:
    out = {}
    if isinstance(model, Mapping):
        missing = [it for it in items if it not in model]
        if missing:
            raise CalibrationError(f"model mapping has no entry for items {missing[:20]}")
        for it, K in zip(items, n_cat):
            try:
                out[it] = get_model(model[it], int(K))
            except ModelSpecError as e:
                raise CalibrationError(f"item {it!r}: {e}") from None
        return out
    try:
        m0 = get_model(model, 2)
    except ModelSpecError as e:
        raise CalibrationError(str(e)) from None
    for it, K in zip(items, n_cat):
        K = int(K)
        if K > 2 and m0.dichotomous and m0.family != "Rasch":
            if polytomous is None:
                poly = [i for i, k in zip(items, n_cat) if k > 2]
                raise CalibrationError(
                    f"model {model!r} is dichotomous but items {poly[:20]} have more than two categories; "
                    "pass polytomous='GRM' or 'GPCM', or a mapping item -> model"
                )
            out[it] = get_model(polytomous, K)
        elif K == 2 and not m0.dichotomous and m0.family in ("GRM", "GPCM"):
            out[it] = get_model("2PL", 2) if m0.family != "PCM" else get_model("Rasch", 2)
        else:
            try:
                out[it] = get_model(model, K)
            except ModelSpecError as e:
                raise CalibrationError(f"item {it!r}: {e}") from None
    return out


def _rest_scores(x: np.ndarray, n_cat: np.ndarray) -> np.ndarray:
    obs = ~np.isnan(x)
    xs = np.where(obs, x / (n_cat - 1), 0.0)
    tot = xs.sum(1, keepdims=True)
    cnt = obs.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rest = (tot - xs) / (cnt - obs)
    return np.where(np.isfinite(rest), rest, 0.5)


def calibrate(
    responses: Any,
    model: Any = "2PL",
    weights: Any = None,
    *,
    polytomous: str | None = None,
    quadpts: int = 61,
    theta_range: tuple[float, float] = (-6.0, 6.0),
    tol: float = 1e-5,
    max_iter: int = 2000,
    omitted: str = "wrong",
    not_reached: str = "not_presented",
    priors: Any = None,
    fixed: pd.DataFrame | None = None,
    latent: str = "auto",
    se: str | bool | None = "oakes",
    cluster: Any = None,
    accelerate: str | None = "squarem",
    start: pd.DataFrame | None = None,
    on_nonconvergence: str = "raise",
    collapse: bool | None = None,
    progress: bool | None = None,
    keep_data: bool = True,
) -> Calibration:
    """Calibrate a unidimensional IRT model by marginal maximum likelihood (Bock-Aitkin EM).

    Parameters
    ----------
    responses : wide DataFrame (students x items, NaN = not presented) or long table
        with ``student_id``, ``item_id``, ``score`` [, ``status``, ``year``].
    model : "Rasch"/"1PL", "2PL", "3PL", "GRM"/"graded", "GPCM", "PCM", or a mapping
        item -> model name (mixed tests).
    weights : per-student weights (frequency or sampling); they multiply each
        student's log-likelihood contribution (weighted expected counts).
    polytomous : model for items with > 2 categories when ``model`` is dichotomous.
    quadpts, theta_range : rectangular quadrature grid (mirt: 61 nodes on [-6, 6]).
    tol : convergence criterion, max |change| of a parameter (natural scale: a, d, c,
        latent mean and variance) in one EM step.
    omitted, not_reached : "wrong" (scored 0) or "not_presented" (long input only).
    priors : {param: prior} or {item: {param: prior}}, prior = ``Prior`` object or
        ("norm", m, s) / ("lnorm", m, s) / ("beta", a, b); e.g.
        ``{"c": ("beta", 5, 17)}`` for a guessing prior, or ``("logitnorm", -1, 1)`` for
        mirt's normal prior on logit(g).  MAP estimates; ``logpost`` = loglik + log prior.
    fixed : item table (``Calibration.items`` layout) of items whose parameters are
        held fixed (anchors); the latent mean and variance are then estimated.
    latent : "auto" (N(0,1) unless all slopes are fixed -> variance free, or items are
        fixed -> mean and variance free), "fixed" (N(0, 1)) or "free" (mean and variance).
    se : "oakes" (observed information, default), "crossprod", "sandwich", or None.
        "oakes" and "crossprod" treat the weights as frequency weights; with sample
        (survey) weights use "sandwich", ideally with ``cluster`` = schools.
        Oakes needs one E-step per parameter (forward differences above 2e6
        rows x parameters): e.g. ~6 s extra for 100,000 x 40 2PL items.
    cluster : cluster ids (e.g. schools) for ``se="sandwich"``.
    accelerate : "squarem" (default) or None (plain EM).
    start : item table with starting values (natural parameters).
    on_nonconvergence : "raise" (ConvergenceError) or "warn" (converged=False).
    collapse : collapse identical response patterns (None: when it pays off).
    progress : tqdm progress bar over EM iterations (None: only for large data).
    keep_data : keep the prepared data in the result (needed for ``.fit``).
    """
    t0 = time.perf_counter()
    if on_nonconvergence not in ("raise", "warn"):
        raise CalibrationError("on_nonconvergence must be 'raise' or 'warn'")
    if se is True:
        se = "oakes"
    if se not in (None, False, "oakes", "crossprod", "sandwich"):
        raise CalibrationError(f"se must be 'oakes', 'crossprod', 'sandwich' or None; got {se!r}")
    quadpts = int(quadpts)
    if quadpts < 5:
        raise CalibrationError("quadpts must be at least 5")
    lo, hi = map(float, theta_range)
    if not hi > lo:
        raise CalibrationError(f"theta_range must be increasing, got {theta_range}")
    theta = np.linspace(lo, hi, quadpts)

    data = rd.prepare(responses, weights, omitted=omitted, not_reached=not_reached)
    keep = ~np.isnan(data.x).all(axis=1) & (data.weights > 0)
    n_dropped = int((~keep).sum())
    x_all, w_all = data.x[keep], data.weights[keep]
    if x_all.shape[0] < 2:
        raise CalibrationError("need at least two students with responses and positive weight")
    items = data.items
    models = _resolve_models(model, items, data.n_cat, polytomous)

    fixed_items: set = set()
    fixed_par: dict = {}
    if fixed is not None:
        ft = models_from_table(fixed)
        for it, (m, p) in ft.items():
            if it not in items:
                raise CalibrationError(f"fixed item {it!r} is not among the response columns")
            j = items.index(it)
            if m.n_cat != data.n_cat[j]:
                raise CalibrationError(
                    f"fixed item {it!r} has {m.n_cat} categories in the table but {data.n_cat[j]} in the data"
                )
            models[it] = m
            fixed_items.add(j)
            fixed_par[j] = p
    model_list = [models[it] for it in items]

    cl = None
    if se == "sandwich" and cluster is not None:
        cl = np.asarray(cluster)
        if cl.shape[0] != data.n:
            raise CalibrationError(f"cluster has {cl.shape[0]} values for {data.n} response rows")
        cl = cl[keep]
    linear = np.array([
        m.logit_linear(np.zeros(m.n_par) + np.r_[1.0, np.zeros(m.n_par - 1)]) is not None for m in model_list
    ])
    design = rd.build_design(x_all, w_all, data.n_cat, linear, collapse=False if se == "sandwich" else collapse)

    # starting values (from a systematic subsample of at most 20000 rows)
    stride = max(1, design.n_rows // 20000)
    xs, ws = design.x[::stride], design.w[::stride]
    rest = _rest_scores(xs, design.n_cat)
    st_tab = models_from_table(start) if start is not None else {}
    start_par: list = [None] * len(model_list)
    by_type: dict = {}
    for j, m in enumerate(model_list):
        if j in fixed_par:
            start_par[j] = fixed_par[j]
        elif items[j] in st_tab:
            start_par[j] = np.asarray(st_tab[items[j]][1], float)
        else:
            by_type.setdefault((type(m), m.n_cat), []).append(j)
    for idx in by_type.values():
        m = model_list[idx[0]]
        P0 = m.start(xs[:, idx], ws, rest[:, idx])
        for r, j in enumerate(idx):
            p = P0[r].copy()
            for name, v in m.fixed_values().items():
                p[m.par_names.index(name)] = v
            start_par[j] = p
    pri = _resolve_priors(priors, items, models)
    prior_list = [pri[it] for it in items]

    all_fixed_slope = all((not m.free[0]) or (j in fixed_items) for j, m in enumerate(model_list))
    any_free_slope = any(m.free[0] and j not in fixed_items for j, m in enumerate(model_list))
    if latent not in ("auto", "fixed", "free"):
        raise CalibrationError(f"latent must be 'auto', 'fixed' or 'free'; got {latent!r}")
    free_mean = len(fixed_items) > 0
    free_var = len(fixed_items) > 0 or (all_fixed_slope and not any_free_slope)
    if latent == "fixed":
        free_mean = free_var = False
    elif latent == "free":
        if not fixed_items and any_free_slope:
            raise CalibrationError(
                "latent='free' needs fixed (anchor) items or fixed slopes for identification"
            )
        free_mean = bool(fixed_items)
        free_var = True
    prob = _Problem(design, model_list, start_par, fixed_items, prior_list, theta,
                    free_mean=free_mean, free_var=free_var, mean=0.0, var=1.0)
    x0 = prob.pack(prob.W, 0.0, 1.0)
    if progress is None:
        progress = design.n_rows * len(items) > 20_000_000
    with rd.blas_single_thread():
        x, ll, counts, Nq, iters, change, conv, hist = _run_em(prob, x0, tol, max_iter, accelerate, progress)
    if not conv:
        msg = (
            f"EM did not converge in {iters} iterations (max parameter change {change:.2e} > tol {tol:g}); "
            "increase max_iter, check for items with extreme proportions, or use priors"
        )
        if on_nonconvergence == "raise":
            raise ConvergenceError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    W, mean, var = prob.unpack(x)
    prob.W = W
    prob.mean, prob.var = mean, var

    # natural parameters per item
    params: dict = {}
    for w, g in zip(W, prob.groups):
        nat = g.model.from_working(w)
        for r, j in enumerate(g.idx):
            params[items[j]] = nat[r]

    # standard errors
    vcov_w = None
    se_kind = None
    if se and x.size == 0:
        se = None
    if se:
        try:
            with rd.blas_single_thread():
                vcov_w = _vcov(prob, x, se, cl)
            se_kind = se
        except np.linalg.LinAlgError:
            warnings.warn("information matrix is singular; standard errors set to NaN", RuntimeWarning, stacklevel=2)
            vcov_w = np.full((x.size, x.size), np.nan)
            se_kind = se
    tab, vcov_df, latent = _tables(prob, x, params, vcov_w, items, free_mean, free_var, mean, var)

    res = Calibration(
        items=tab,
        latent=latent,
        loglik=float(ll),
        logpost=float(ll + prob.log_prior_total(x)),
        converged=bool(conv),
        iterations=int(iters),
        max_change=float(change),
        n_obs=int(keep.sum()),
        sum_weights=float(w_all.sum()),
        n_par=prob.n_par,
        vcov=vcov_df,
        theta=theta,
        models={it: model_list[j] for j, it in enumerate(items)},
        params=params,
        categories=data.categories,
        settings=dict(
            quadpts=quadpts, theta_range=(lo, hi), tol=tol, omitted=omitted, not_reached=not_reached,
            accelerate=accelerate, n_dropped=n_dropped, fixed_items=[items[j] for j in sorted(fixed_items)],
            priors={it: {k: repr(v) for k, v in d.items()} for it, d in pri.items() if d},
        ),
        elapsed=time.perf_counter() - t0,
        se_type=se_kind,
        _prob=prob if keep_data else None,
        history=hist,
    )
    return res


# ----------------------------------------------------------------------------- SEs
def _row_scores(prob: _Problem, x: np.ndarray) -> np.ndarray:
    """Per design row marginal score vectors g_i (n_rows, P) (posterior mean of the complete-data score)."""
    d = prob.design
    W, mean, var = prob.unpack(x)
    terms = prob.terms(x)
    lpr = latent_log_weights(prob.theta, mean, var)
    # complete-data score per item/category at nodes: S[j] (q, K, p_free)
    cols = []
    blocks = []  # for each item: (col offset, K, nfree, free idx)
    off = 0
    for g, w in zip(prob.groups, W):
        st = g.model.score_terms(w, prob.theta)  # (m,q,K,p)
        _, pg, _ = prob._prior_terms(g, w)
        for r, j in enumerate(g.idx):
            fidx = np.flatnonzero(g.free[r])
            if fidx.size == 0:
                continue
            S = st[r][:, :, fidx]  # (q,K,pf)
            blocks.append((j, off, S.shape[1], fidx.size))
            cols.append(S.reshape(S.shape[0], -1))
            off += S.shape[1] * fidx.size
    Smat = np.concatenate(cols, axis=1) if cols else np.zeros((len(prob.theta), 0))
    t = prob.theta
    lat = []
    if prob.free_mean:
        p = np.exp(lpr)
        lat.append((t - mean) / var - (p @ (t - mean)) / var)
    if prob.free_var:
        p = np.exp(lpr)
        dev2 = (t - mean) ** 2
        lat.append((dev2 - p @ dev2) / (2 * var))
    P = prob.n_par
    G = np.zeros((d.n_rows, P))
    xi = np.nan_to_num(d.x, nan=-1).astype(np.int64)
    for s, e in rd._chunks(d.n_rows):
        L = rd.loglik_nodes(d, terms, s, e)
        L -= L.max(1, keepdims=True)
        np.exp(L, out=L)
        L /= L.sum(1, keepdims=True)
        M = L @ Smat  # (rows, sum K p)
        pos = 0
        for (j, o, K, pf) in blocks:
            k = xi[s:e, j]
            obs = k >= 0
            blk = M[:, o : o + K * pf].reshape(e - s, K, pf)
            sel = blk[np.arange(e - s), np.maximum(k, 0)]
            G[s:e, pos : pos + pf] = sel * obs[:, None]
            pos += pf
        for lt in lat:
            G[s:e, pos] = L @ lt
            pos += 1
    return G


def _hessian_oakes(prob: _Problem, x: np.ndarray, central: bool | None = None) -> np.ndarray:
    """Jacobian of the analytic marginal score (Oakes 1999 identity), by central differences
    (h = 1e-4) for small problems and forward differences from the score at the optimum
    (h = 1e-6; half the E-steps, relative error ~1e-6) when rows x parameters > 2e6."""
    P = x.size
    if central is None:
        central = prob.design.n_rows * P <= 2_000_000
    H = np.zeros((P, P))
    g0 = None if central else prob.gradient(x)[0]
    for k in range(P):
        if central:
            h = 1e-4 * max(1.0, abs(x[k]))
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            H[:, k] = (prob.gradient(xp)[0] - prob.gradient(xm)[0]) / (2 * h)
        else:
            h = 1e-6 * max(1.0, abs(x[k]))
            xp = x.copy()
            xp[k] += h
            H[:, k] = (prob.gradient(xp)[0] - g0) / h
    return 0.5 * (H + H.T)


def _vcov(prob: _Problem, x: np.ndarray, kind: str, cluster: np.ndarray | None) -> np.ndarray:
    if kind == "oakes":
        H = _hessian_oakes(prob, x)
        return np.linalg.inv(-H)
    G = _row_scores(prob, x)
    w = prob.design.w
    if kind == "crossprod":
        Ixpd = (G * w[:, None]).T @ G
        return np.linalg.inv(Ixpd)
    # sandwich
    H = _hessian_oakes(prob, x)
    Hinv = np.linalg.inv(-H)
    Gw = G * w[:, None]
    if cluster is not None:
        inv = prob.design.inverse
        cl_rows = np.empty(prob.design.n_rows, dtype=object)
        cl_rows[inv] = cluster
        codes, uniq = pd.factorize(pd.Series(cl_rows))
        S = np.zeros((len(uniq), G.shape[1]))
        np.add.at(S, codes, Gw)
        meat = S.T @ S
    else:
        meat = Gw.T @ Gw
    return Hinv @ meat @ Hinv


def _tables(prob: _Problem, x, params, vcov_w, items, free_mean, free_var, mean, var):
    """Item table with SEs, vcov on the natural scale, latent table."""
    P = x.size
    # natural-scale Jacobian (diagonal) of the packed vector
    jac = np.ones(P)
    names = []
    pos = 0
    W, _, _ = prob.unpack(x)
    for g, w in zip(prob.groups, W):
        jw = g.model.working_jacobian(w)
        for r, j in enumerate(g.idx):
            for k in np.flatnonzero(g.free[r]):
                names.append((items[j], g.model.par_names[k]))
                jac[pos] = jw[r, k]
                pos += 1
    if free_mean:
        names.append(("latent", "mean"))
        pos += 1
    if free_var:
        names.append(("latent", "variance"))
        jac[pos] = var  # d var / d log var
        pos += 1
    vnat = None
    if vcov_w is not None:
        vnat = vcov_w * jac[:, None] * jac[None, :]
    tab = item_table({it: prob.models[j] for j, it in enumerate(items)}, params)
    # SEs
    pos_of = {nm: i for i, nm in enumerate(names)}
    se_cols: dict = {}
    for j, it in enumerate(items):
        m = prob.models[j]
        p = params[it]
        free_idx = [k for k, nm in enumerate(m.par_names) if (it, nm) in pos_of]
        if vnat is None or not free_idx:
            continue
        ii = [pos_of[(it, m.par_names[k])] for k in free_idx]
        V = np.zeros((m.n_par, m.n_par))
        V[np.ix_(free_idx, free_idx)] = vnat[np.ix_(ii, ii)]
        for k in free_idx:
            col = "d" if (m.n_cat == 2 and m.par_names[k] == "d") else m.par_names[k]
            se_cols.setdefault(f"se_{col}", {})[it] = math.sqrt(max(V[k, k], 0.0)) if np.isfinite(V[k, k]) else np.nan
        Jirt = m.irt_jacobian(p)
        Virt = Jirt @ V @ Jirt.T
        for k, nm in enumerate(m.irt_names):
            if nm in ("a", "c"):
                continue
            se_cols.setdefault(f"se_{nm}", {})[it] = math.sqrt(max(Virt[k, k], 0.0)) if np.isfinite(Virt[k, k]) else np.nan
    for c, d in se_cols.items():
        tab[c] = pd.Series(d, dtype=float)
    # order columns
    base_cols = ["model", "n_cat", "a"]
    dcols = [c for c in tab.columns if c == "d" or (c.startswith("d") and c[1:].isdigit())]
    bcols = [c for c in tab.columns if c == "b" or (c.startswith("b") and c[1:].isdigit())]
    dcols.sort(key=lambda c: (len(c), c))
    bcols.sort(key=lambda c: (len(c), c))
    order = base_cols + dcols + ["c"] + bcols
    order += [f"se_{c}" for c in ["a"] + dcols + ["c"] + bcols if f"se_{c}" in tab.columns]
    tab = tab[order]
    vdf = pd.DataFrame(vnat, index=pd.MultiIndex.from_tuples(names), columns=pd.MultiIndex.from_tuples(names)) if vnat is not None else None
    lat_se = {"mean": np.nan, "variance": np.nan}
    if vnat is not None:
        if free_mean:
            k = pos_of[("latent", "mean")]
            lat_se["mean"] = math.sqrt(max(vnat[k, k], 0.0))
        if free_var:
            k = pos_of[("latent", "variance")]
            lat_se["variance"] = math.sqrt(max(vnat[k, k], 0.0))
    latent = pd.DataFrame(
        {"estimate": [mean, var], "se": [lat_se["mean"], lat_se["variance"]], "estimated": [free_mean, free_var]},
        index=pd.Index(["mean", "variance"], name="parameter"),
    )
    return tab, vdf, latent


# ----------------------------------------------------------------------------- item fit
def _lw_distribution(probs: list[np.ndarray], exclude: int | None = None) -> np.ndarray:
    """Lord-Wingersky recursion: summed-score distribution (S+1, q) at the nodes."""
    q = probs[0].shape[0]
    f = np.ones((1, q))
    for j, P in enumerate(probs):
        if j == exclude:
            continue
        K = P.shape[1]
        g = np.zeros((f.shape[0] + K - 1, q))
        for k in range(K):
            g[k : k + f.shape[0]] += f * P[:, k]
        f = g
    return f


def _collapse_sx2(O: np.ndarray, E: np.ndarray, mincell: float) -> tuple[np.ndarray, np.ndarray]:
    """Collapse an observed/expected score-group x category table (after mirt's approach):
    drop empty score groups; merge groups holding one student into the next; within a row merge the smallest expected category into its
    smaller neighbour until all are >= mincell (polytomous); then merge score groups
    with any expected cell < mincell into the adjacent group with fewer observations."""
    keep = O.sum(1) > 0
    O, E = O[keep].copy(), E[keep].copy()
    if O.shape[0] == 0:
        return O, E
    # score groups holding a single student are merged into the next group (last: previous)
    drop = []
    for r in range(O.shape[0] - 1):
        if abs(O[r].sum() - 1.0) < 1e-12:
            O[r + 1] += O[r]
            E[r + 1] += E[r]
            drop.append(r)
    if drop:
        O, E = np.delete(O, drop, axis=0), np.delete(E, drop, axis=0)
    if O.shape[0] > 1 and abs(O[-1].sum() - 1.0) < 1e-12:
        O[-2] += O[-1]
        E[-2] += E[-1]
        O, E = O[:-1], E[:-1]
    K = O.shape[1]
    if K > 2:
        for r in range(O.shape[0]):
            if not (E[r] < mincell).any():
                continue
            e = list(E[r])
            o = list(O[r])
            slots = list(range(K))
            while len(e) > 2 and min(e) < mincell:
                mval = min(e)
                wh = max(i for i, v in enumerate(e) if v == mval)
                if wh == 0:
                    tgt = 1
                elif wh == len(e) - 1:
                    tgt = wh - 1
                else:
                    tgt = wh - 1 if e[wh - 1] <= e[wh + 1] else wh + 1
                e[tgt] += e[wh]
                o[tgt] += o[wh]
                del e[wh], o[wh], slots[wh]
            row_e = np.full(K, np.nan)
            row_o = np.zeros(K)
            row_e[: len(e)] = e
            row_o[: len(o)] = o
            E[r], O[r] = row_e, row_o
    while O.shape[0] > 1:
        En = np.nan_to_num(E, nan=np.inf)
        small = (En < mincell) & (En != 0)
        rows = np.flatnonzero(small.any(1))
        if rows.size == 0:
            break
        r = rows[0]
        if r == 0:
            tgt = 1
        elif r == O.shape[0] - 1:
            tgt = r - 1
        else:
            tgt = r - 1 if O[r - 1].sum() <= O[r + 1].sum() else r + 1
        E[tgt] = np.nansum(np.vstack([E[tgt], E[r]]), axis=0)
        O[tgt] = O[tgt] + O[r]
        E = np.delete(E, r, axis=0)
        O = np.delete(O, r, axis=0)
    return O, E


def s_x2(cal: Calibration, mincell: float = 1.0) -> pd.DataFrame:
    """Orlando & Thissen (2000) S-X2 per item (generalised to polytomous items, Kang & Chen 2007).

    Students with complete responses are grouped by summed score s; for item j the
    expected proportion in category k given s is
    sum_q pi_q P_jk(theta_q) f_{-j}(s - k | theta_q) / sum_q pi_q f(s | theta_q),
    with f from the Lord-Wingersky recursion.  Extreme scores are excluded, cells with
    expected counts < ``mincell`` are collapsed, and df = (non-empty cells - score groups)
    - (estimated item parameters) - (estimated latent parameters), as in mirt.
    """
    prob = cal._prob
    d = prob.design
    x = d.x
    complete = ~np.isnan(x).any(1)
    items = cal.item_names
    J = len(items)
    out = pd.DataFrame(index=pd.Index(items, name="item"), columns=["S_X2", "df_S_X2", "RMSEA_S_X2", "p_S_X2"], dtype=float)
    if complete.sum() < 2:
        return out
    xc = x[complete].astype(np.int64)
    wc = d.w[complete]
    theta = cal.theta
    pi = np.exp(cal.log_prior())
    probs = [cal.models[it].prob(cal.params[it], theta) for it in items]
    tot = xc.sum(1)
    Smax = int((d.n_cat - 1).sum())
    f_all = _lw_distribution(probs)  # (Smax+1, q)
    denom = f_all @ pi  # P(s)
    Ns = np.bincount(tot, weights=wc, minlength=Smax + 1)
    n_lat = int(prob.free_mean) + int(prob.free_var)
    N = float(wc.sum())
    for j, it in enumerate(items):
        K = probs[j].shape[1]
        f_j = _lw_distribution(probs, exclude=j)  # (Smax - K + 2, q)
        E = np.zeros((Smax + 1, K))
        for k in range(K):
            num = np.zeros((Smax + 1, len(theta)))
            num[k : k + f_j.shape[0]] = f_j * probs[j][:, k]
            E[:, k] = (num @ pi) / np.where(denom > 0, denom, np.nan)
        E = E * Ns[:, None]
        O = np.zeros((Smax + 1, K))
        for k in range(K):
            O[:, k] = np.bincount(tot[xc[:, j] == k], weights=wc[xc[:, j] == k], minlength=Smax + 1)
        O, E = O[1:Smax], E[1:Smax]
        O, E = _collapse_sx2(O, E, mincell)
        if O.shape[0] == 0:
            continue
        valid = np.isfinite(E) & (E > 0)
        stat = float(np.sum(((O - E) ** 2 / np.where(valid, E, 1.0))[valid]))
        m = cal.models[it]
        n_est = int(np.sum(m.free)) if it not in cal.settings.get("fixed_items", []) else 0
        df = int(valid.sum() - O.shape[0] - n_est - n_lat)
        df = max(df, 0)
        out.loc[it, "S_X2"] = stat if df > 0 else np.nan
        out.loc[it, "df_S_X2"] = df
        out.loc[it, "RMSEA_S_X2"] = math.sqrt(max(stat / df - 1, 0) / (N - 1)) if df > 0 else np.nan
        out.loc[it, "p_S_X2"] = stats.chi2.sf(stat, df) if df > 0 else np.nan
    return out


def infit_outfit(cal: Calibration, theta_hat: np.ndarray | None = None) -> pd.DataFrame:
    """Infit/outfit mean squares (Wright & Masters 1982) with Wilson-Hilferty z values.

    z_ij = (x_ij - E_ij) / sqrt(W_ij) with E, W the model mean and variance at the
    student's EAP (or ``theta_hat``); outfit_j = sum_i w_i z_ij^2 / sum_i w_i;
    infit_j = sum_i w_i (x_ij - E_ij)^2 / sum_i w_i W_ij (sums over students who saw j).
    """
    prob = cal._prob
    d = prob.design
    if theta_hat is None:
        with rd.blas_single_thread():
            theta_hat, _, _ = rd.posterior_moments(d, prob.terms(prob.pack(prob.W, prob.mean, prob.var)))
    items = cal.item_names
    rows = []
    for j, it in enumerate(items):
        m = cal.models[it]
        xj = d.x[:, j]
        obs = ~np.isnan(xj)
        th = theta_hat[obs]
        w = d.w[obs]
        P = m.prob(cal.params[it], th)  # (n_obs, K)
        k = np.arange(m.n_cat)
        E = P @ k
        Wv = P @ k**2 - E**2
        C = P @ k**4 - 4 * E * (P @ k**3) + 6 * E**2 * (P @ k**2) - 3 * E**4
        res = xj[obs] - E
        z2 = res**2 / Wv
        sw = w.sum()
        outfit = float(w @ z2 / sw)
        infit = float(w @ res**2 / (w @ Wv))
        q_out = min(math.sqrt(max(float(w @ (C / Wv**2)) / sw**2 - 1 / sw, 0.0)), 1.4142)
        q_in = min(math.sqrt(max(float(w @ (C - Wv**2)) / float(w @ Wv) ** 2, 0.0)), 1.4142)
        z_out = (outfit ** (1 / 3) - 1) * (3 / q_out) + q_out / 3 if q_out > 0 else np.nan
        z_in = (infit ** (1 / 3) - 1) * (3 / q_in) + q_in / 3 if q_in > 0 else np.nan
        rows.append((it, outfit, z_out, infit, z_in))
    return pd.DataFrame(rows, columns=["item", "outfit", "z_outfit", "infit", "z_infit"]).set_index("item")


def _item_fit(cal: Calibration) -> pd.DataFrame:
    return s_x2(cal).join(infit_outfit(cal))
