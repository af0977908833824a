"""Classical item analysis and differential item functioning (DIF).

Two public entries:

* :func:`item_analysis` -- per-item difficulty (p-value), item-rest and
  item-total correlations, polyserial/biserial correlations, alpha if the item
  is deleted, omit and not-reached rates, distractor analysis and documented
  flags; test-level Cronbach's alpha with its standard error and Feldt
  confidence interval, per booklet when items are matrix-sampled.
* :func:`dif` -- Mantel-Haenszel DIF for dichotomous items (common odds ratio,
  MH D-DIF, its Robins-Breslow-Greenland standard error, MH chi-square with
  continuity correction, ETS A/B/C classes) and, for polytomous items, the
  standardised mean difference (SMD) with its standard error, Mantel's (1963)
  chi-square, the Liu-Agresti cumulative common odds ratio and the ETS
  AA/BB/CC classes; optional two-stage purification of the matching score and
  sample weights.

Both take a wide DataFrame of item scores: one row per student, one column per
item, ``NaN`` where the item was not presented (matrix-sampled booklets) or not
scored.

References
----------
Cronbach (1951) Psychometrika 16, 297-334; Feldt (1965) Psychometrika 30,
357-370; van Zyl, Neudecker & Nel (2000) Psychometrika 65, 271-280 (asymptotic
variance of alpha); Olsson, Drasgow & Dorans (1982) Psychometrika 47, 337-347
(ad hoc polyserial); Holland & Thayer (1988) in *Test validity*, 129-145;
Robins, Breslow & Greenland (1986) Biometrics 42, 311-323; Mantel (1963) JASA
58, 690-700; Dorans & Schmitt (1991) ETS RR-91-47 (SMD); Zwick & Thayer (1996)
JEBS 21, 187-201 (SE of SMD); Liu & Agresti (1996) Biometrics 52, 1223-1234;
Zwick (2012) ETS RR-12-08 (ETS flagging rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from qualmon.scoring._checks import check_weights, rows_text as _rows
from scipy import stats

__all__ = [
    "ItemAnalysisError",
    "DIFError",
    "ItemAnalysis",
    "DIFResult",
    "DEFAULT_FLAG_RULES",
    "item_analysis",
    "cronbach_alpha",
    "dif",
    "dif_by",
    "mantel_haenszel",
]

STATUS_VALUES = ("scored", "omitted", "not_reached", "not_presented")

#: Thresholds used to flag misbehaving items (see :func:`item_analysis`).
DEFAULT_FLAG_RULES: dict[str, float] = {
    "p_low": 0.10,  # p-value below this: too hard
    "p_high": 0.95,  # p-value above this: too easy
    "r_low": 0.20,  # item-rest correlation below this: weak discrimination
    "min_choosers": 10,  # a distractor needs this many choosers to be judged
}

_DELTA = 2.35  # ETS delta scale: MH D-DIF = -2.35 ln(alpha_MH)


class ItemAnalysisError(ValueError):
    """Bad input to :func:`item_analysis` (names the column and rows)."""


class DIFError(ValueError):
    """Bad input to :func:`dif` (names the column and rows)."""


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------


def _score_frame(responses: Any, err: type[ValueError], name: str = "responses",
                 allow_negative: bool = False) -> pd.DataFrame:
    if not isinstance(responses, pd.DataFrame):
        raise err(f"{name} must be a pandas DataFrame (rows students, columns items), got {type(responses).__name__}")
    if responses.shape[0] == 0 or responses.shape[1] == 0:
        raise err(f"{name} is empty: expected at least one student row and one item column")
    if responses.columns.has_duplicates:
        dup = responses.columns[responses.columns.duplicated()].tolist()
        raise err(f"{name} has duplicated item columns {dup}; each item must appear once")
    out = {}
    for col in responses.columns:
        s = responses[col]
        if pd.api.types.is_bool_dtype(s):
            s = s.astype(float)
        elif not pd.api.types.is_numeric_dtype(s):
            conv = pd.to_numeric(s, errors="coerce")
            bad = conv.isna() & s.notna()
            if bad.any():
                raise err(
                    f"{name} column {col!r} must hold numeric item scores (NaN = not presented); "
                    f"non-numeric values in rows {_rows(s.index, bad.to_numpy())}"
                )
            s = conv
        v = s.to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isnan(v) & (~np.isfinite(v) | ((v < 0) & (not allow_negative)))
        if bad.any():
            raise err(
                f"{name} column {col!r} must hold finite scores{'' if allow_negative else ' >= 0'} (NaN = not presented); "
                f"invalid values in rows {_rows(s.index, bad)}"
            )
        out[col] = v
    return pd.DataFrame(out, index=responses.index)


def _max_scores(max_scores: Any, X: pd.DataFrame, err: type[ValueError]) -> np.ndarray:
    items = X.columns
    obs = np.nanmax(np.where(np.isnan(X.to_numpy()), -np.inf, X.to_numpy()), axis=0)
    if max_scores is None:
        m = np.where(np.isfinite(obs), np.maximum(obs, 1.0), 1.0)
    else:
        if np.isscalar(max_scores):
            m = np.full(len(items), float(max_scores))
        else:
            ms = pd.Series(max_scores, dtype=float) if isinstance(max_scores, Mapping) else pd.Series(max_scores)
            missing = [c for c in items if c not in ms.index]
            if missing:
                raise err(f"max_scores has no entry for items {missing[:10]}")
            m = ms.reindex(items).to_numpy(dtype=float)
        if np.any(~np.isfinite(m) | (m <= 0)):
            bad = [c for c, v in zip(items, m) if not (np.isfinite(v) and v > 0)]
            raise err(f"max_scores must be positive; invalid for items {bad[:10]}")
        over = np.isfinite(obs) & (obs > m + 1e-12)
        if over.any():
            j = int(np.flatnonzero(over)[0])
            col = items[j]
            rows = X[col].to_numpy() > m[j]
            raise err(
                f"responses column {col!r} has scores above its max_score {m[j]:g} "
                f"in rows {_rows(X.index, rows)}"
            )
    return m


def _status_frame(status: Any, X: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(status, pd.DataFrame):
        raise ItemAnalysisError("status must be a DataFrame shaped like responses (values scored/omitted/not_reached/not_presented)")
    missing_cols = [c for c in X.columns if c not in status.columns]
    if missing_cols:
        raise ItemAnalysisError(f"status has no column for items {missing_cols[:10]}")
    missing_rows = ~X.index.isin(status.index)
    if missing_rows.any():
        raise ItemAnalysisError(f"status has no row for students {_rows(X.index, missing_rows)}")
    st = status.reindex(index=X.index, columns=X.columns)
    for col in st.columns:
        s = st[col]
        bad = s.notna() & ~s.isin(STATUS_VALUES)
        if bad.any():
            raise ItemAnalysisError(
                f"status column {col!r} must be one of {STATUS_VALUES}; "
                f"unexpected values in rows {_rows(st.index, bad.to_numpy())}"
            )
    return st


# --------------------------------------------------------------------------
# weighted moments
# --------------------------------------------------------------------------


def _kish(w: np.ndarray) -> float:
    s2 = float(np.sum(w**2))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def _wcov(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted covariance matrix of complete data; divisor such that unit
    weights give the usual n - 1 (weights rescaled to the Kish effective n)."""
    sw = w.sum()
    mu = (w @ X) / sw
    Z = X - mu
    C = (Z * w[:, None]).T @ Z / sw
    # rounding noise of (numerically) constant columns -> exact zeros
    flat = np.diag(C) <= (64 * np.finfo(float).eps * np.max(np.abs(X), axis=0)) ** 2
    C[flat, :] = 0.0
    C[:, flat] = 0.0
    ne = _kish(w)
    return C * ne / (ne - 1.0) if ne > 1 else C * np.nan


def _masked_corr(x: np.ndarray, y: np.ndarray, m: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Column-wise weighted Pearson correlation of x[:, j] and y[:, j] over rows
    where m[:, j] is True."""
    W = w[:, None] * m
    x = np.where(m, x, 0.0)
    y = np.where(m, y, 0.0)
    sw = W.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (W * x).sum(0) / sw
        my = (W * y).sum(0) / sw
        dx = np.where(m, x - mx, 0.0)
        dy = np.where(m, y - my, 0.0)
        sxy = (W * dx * dy).sum(0)
        sxx = (W * dx * dx).sum(0)
        syy = (W * dy * dy).sum(0)
        r = sxy / np.sqrt(sxx * syy)
    # (numerically) constant columns have no correlation
    flat = (sxx <= 1e-24 * sw * (1.0 + mx**2)) | (syy <= 1e-24 * sw * (1.0 + my**2))
    return np.where(flat, np.nan, r)


def _wmean_sd(x: np.ndarray, m: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    W = w[:, None] * m
    x0 = np.where(m, x, 0.0)
    sw = W.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (W * x0).sum(0) / sw
        var = (W * np.where(m, x0 - mu, 0.0) ** 2).sum(0) / sw
        sw2 = (W**2).sum(0)
        ne = sw**2 / sw2
        var = var * ne / (ne - 1.0)
    return mu, np.sqrt(var)


# --------------------------------------------------------------------------
# coefficient alpha
# --------------------------------------------------------------------------


def _alpha_from_cov(C: np.ndarray) -> float:
    k = C.shape[0]
    tot = C.sum()
    # a total variance that is zero up to rounding (relative to the item variances) has no alpha
    if k < 2 or not np.isfinite(tot) or tot <= 1e-10 * np.trace(C):
        return float("nan")
    return k / (k - 1.0) * (1.0 - np.trace(C) / tot)


def _alpha_if_deleted(C: np.ndarray) -> np.ndarray:
    k = C.shape[0]
    if k < 3:
        return np.full(k, np.nan)
    diag = np.diag(C)
    tot = C.sum() - 2.0 * C.sum(1) + diag
    tr = np.trace(C) - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (k - 1.0) / (k - 2.0) * (1.0 - tr / tot)
    return np.where(tot > 1e-10 * tr, out, np.nan)


def _alpha_se(C: np.ndarray, n: float) -> float:
    """Asymptotic SE of alpha under multivariate normality (van Zyl, Neudecker
    & Nel 2000; the form in Duhachek & Iacobucci 2004):

    Var = 2k^2 / ((k-1)^2 (1'V1)^3) * [(1'V1)(tr V^2 + (tr V)^2) - 2 tr V (1'V^2 1)] / n
    """
    k = C.shape[0]
    if k < 2 or n <= 1 or not np.isfinite(_alpha_from_cov(C)):
        return float("nan")
    one = np.ones(k)
    s = one @ C @ one
    trV = np.trace(C)
    trV2 = np.trace(C @ C)
    s2 = one @ C @ C @ one
    q = 2.0 * k**2 / ((k - 1.0) ** 2 * s**3) * (s * (trV2 + trV**2) - 2.0 * trV * s2)
    return float(np.sqrt(q / n)) if q >= 0 else float("nan")


def _feldt_ci(alpha: float, n: float, k: int, level: float) -> tuple[float, float]:
    """Feldt (1965): (1 - alpha)/(1 - alpha_hat) ~ F(n-1, (n-1)(k-1))."""
    if not np.isfinite(alpha) or n <= 2 or k < 2:
        return float("nan"), float("nan")
    df1, df2 = n - 1.0, (n - 1.0) * (k - 1.0)
    g = (1.0 - level) / 2.0
    lo = 1.0 - (1.0 - alpha) * stats.f.ppf(1.0 - g, df1, df2)
    hi = 1.0 - (1.0 - alpha) * stats.f.ppf(g, df1, df2)
    return float(lo), float(hi)


def cronbach_alpha(
    responses: pd.DataFrame, weights: Any = None, ci_level: float = 0.95
) -> pd.DataFrame:
    """Cronbach's alpha of complete cases, with SE and Feldt CI.

    ``alpha = k/(k-1) * (1 - sum_j var(x_j) / var(sum_j x_j))`` from the
    (weighted) covariance matrix of the students with no missing score; the SE
    is the normal-theory asymptotic SE of van Zyl et al. (2000) and the CI is
    Feldt's F interval, both with the Kish effective sample size when weighted.
    Returns a one-row DataFrame (``n, n_items, mean_total, sd_total, alpha,
    alpha_se, ci_low, ci_high, sem``).
    """
    X = _score_frame(responses, ItemAnalysisError, allow_negative=True)
    w = check_weights(weights, X.index, ItemAnalysisError)
    return _reliability_row(X.to_numpy(), w, ci_level).to_frame().T


def _reliability_row(Xb: np.ndarray, w: np.ndarray, ci_level: float, C: np.ndarray | None = None) -> pd.Series:
    keep = ~np.isnan(Xb).any(1) & (w > 0)
    Xc, wc = Xb[keep], w[keep]
    k = Xb.shape[1]
    out = dict(n=int(keep.sum()), n_items=k, mean_total=np.nan, sd_total=np.nan, alpha=np.nan,
               alpha_se=np.nan, ci_low=np.nan, ci_high=np.nan, sem=np.nan)
    if keep.sum() >= 3 and k >= 2:
        if C is None:
            C = _wcov(Xc, wc)
        a = _alpha_from_cov(C)
        ne = _kish(wc)
        tot = Xc.sum(1)
        out["mean_total"] = float(np.average(tot, weights=wc))
        out["sd_total"] = float(np.sqrt(max(C.sum(), 0.0)))
        out["alpha"] = a
        out["alpha_se"] = _alpha_se(C, ne)
        out["ci_low"], out["ci_high"] = _feldt_ci(a, ne, k, ci_level)
        out["sem"] = out["sd_total"] * np.sqrt(max(1.0 - a, 0.0)) if np.isfinite(a) else np.nan
    return pd.Series(out)


# --------------------------------------------------------------------------
# polyserial (ad hoc) correlation
# --------------------------------------------------------------------------


def _categories(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of finite x (O(n) for small non-negative integers)."""
    if x.size and np.all(x == np.floor(x)) and x.min() >= 0 and x.max() < 10_000:
        return np.flatnonzero(np.bincount(x.astype(np.int64))).astype(float)
    return np.unique(x)


def _polyserial(r: float, x: np.ndarray, w: np.ndarray) -> float:
    """Ad hoc polyserial correlation of ordinal x with a continuous variable y
    (Olsson, Drasgow & Dorans 1982) from their Pearson correlation r:
    rho = r * s_x / sum_j phi(tau_j)(x_(j+1) - x_j), tau_j the normal thresholds
    at the cumulative category proportions of x. For a 0/1 item this is the
    biserial correlation."""
    if not np.isfinite(r) or x.size < 3:
        return float("nan")
    cats = _categories(x)
    if cats.size < 2:
        return float("nan")
    sw = w.sum()
    mx = (w @ x) / sw
    sx = np.sqrt(w @ (x - mx) ** 2 / sw)
    props = np.bincount(np.searchsorted(cats, x), weights=w, minlength=cats.size) / sw
    tau = stats.norm.ppf(np.clip(np.cumsum(props)[:-1], 0.0, 1.0))
    denom = np.sum(stats.norm.pdf(tau) * np.diff(cats))
    return float(r * sx / denom) if denom > 0 and sx > 0 else float("nan")


# --------------------------------------------------------------------------
# item analysis
# --------------------------------------------------------------------------


@dataclass
class ItemAnalysis:
    """Result of :func:`item_analysis`.

    Attributes
    ----------
    items : per-item statistics and flags (index = item).
    reliability : coefficient alpha per booklet (index ``"all"`` when every
        student saw every item) with SE, Feldt CI and SEM.
    distractors : per item x option statistics, or ``None`` without options.
    booklet_items : per booklet x item alpha-if-deleted (long format).
    flag_rules : the thresholds used.
    rest_score : how the rest score was defined (``"sum"`` or ``"proportion"``).
    """

    items: pd.DataFrame
    reliability: pd.DataFrame
    distractors: pd.DataFrame | None
    booklet_items: pd.DataFrame
    flag_rules: dict[str, float]
    rest_score: str

    @property
    def alpha(self) -> float:
        """Alpha of the whole test (complete designs) or the n-weighted mean
        of the booklet alphas (matrix-sampled designs)."""
        r = self.reliability.dropna(subset=["alpha"])
        if len(r) == 0:
            return float("nan")
        return float(np.average(r["alpha"], weights=r["n"]))

    @property
    def flagged(self) -> pd.DataFrame:
        return self.items[self.items["flags"] != ""]

    def summary(self) -> pd.DataFrame:
        cols = ["n", "max_score", "p_value", "item_rest_r", "polyserial", "alpha_if_deleted",
                "omit_rate", "not_reached_rate", "flags"]
        return self.items[cols]

    def _repr_html_(self) -> str:
        head = (f"<p><b>Item analysis</b>: {len(self.items)} items, alpha = {self.alpha:.3f}; "
                f"rest score = {escape(self.rest_score)}; {len(self.flagged)} item(s) flagged.</p>")
        return head + self.reliability.to_html(float_format="%.3f") + self.summary().to_html(float_format="%.3f")


def _booklet_codes(P: np.ndarray, booklets: Any, index: pd.Index) -> tuple[np.ndarray, list]:
    if booklets is not None:
        if isinstance(booklets, pd.Series):
            missing = ~index.isin(booklets.index)
            if missing.any():
                raise ItemAnalysisError(f"booklets has no value for rows {_rows(index, missing)}")
            b = booklets.reindex(index)
        else:
            b = pd.Series(np.asarray(booklets), index=index)
            if len(b) != len(index):
                raise ItemAnalysisError(f"booklets has {len(b)} values but responses has {len(index)} rows")
        if b.isna().any():
            raise ItemAnalysisError(f"booklets is missing for rows {_rows(index, b.isna().to_numpy())}")
        codes, labels = pd.factorize(b, sort=True)
        return codes, list(labels)
    if P.all():
        return np.zeros(P.shape[0], dtype=int), ["all"]
    packed = np.ascontiguousarray(np.packbits(P, axis=1))
    keys = packed.view(f"V{packed.shape[1]}").ravel()  # one fixed-size byte string per row
    pats, codes = np.unique(keys, return_inverse=True)
    labels = [f"pattern{i + 1}" for i in range(len(pats))]
    return codes.ravel(), labels


def item_analysis(
    responses: pd.DataFrame | None,
    max_scores: Any = None,
    weights: Any = None,
    options: pd.DataFrame | None = None,
    key: Mapping[Any, Any] | pd.Series | None = None,
    status: pd.DataFrame | None = None,
    booklets: Any = None,
    omitted_as_wrong: bool = True,
    not_reached_as_wrong: bool = False,
    flag_rules: Mapping[str, float] | None = None,
    ci_level: float = 0.95,
) -> ItemAnalysis:
    """Classical item analysis.

    Parameters
    ----------
    responses : wide DataFrame of item scores (rows students, columns items),
        ``NaN`` = not presented. If ``None``, scores are derived from
        ``options == key`` (1 if the keyed option was chosen, 0 if another
        option was chosen, NaN if no option).
    max_scores : maximum score per item (mapping, Series or scalar); default
        the observed maximum (at least 1).
    weights : student sampling weights (Series indexed like ``responses`` or
        array). All statistics are weighted; SEs and the Feldt CI use the Kish
        effective sample size.
    options, key : raw chosen options (same rows, columns a subset of items)
        and the keyed option per item, for the distractor analysis.
    status : optional frame of response status (``scored``, ``omitted``,
        ``not_reached``, ``not_presented``). Omitted cells with a missing
        score are scored 0 when ``omitted_as_wrong`` (PISA convention);
        not-reached cells stay missing unless ``not_reached_as_wrong``. Omit
        and not-reached rates are shares of the presented cells.
    booklets : booklet id per student; by default booklets are the distinct
        patterns of presented items.

    Definitions
    -----------
    * ``p_value`` = mean score / max score (weighted).
    * Rest score. Complete design (every student saw every item): the sum of
      the other items' scores. Matrix-sampled design: the *proportion* of the
      attainable score obtained on the other items the student saw,
      ``(S_i - x_ij) / (M_i - m_j)``, so that students who saw different
      booklets are on one metric (students who saw no other item are left
      out). ``item_rest_r`` is the (weighted) Pearson correlation of the item
      with that rest score (the corrected point-biserial for a 0/1 item);
      ``item_total_r`` uses the total (sum or proportion) including the item;
      ``polyserial`` is the ad hoc polyserial (biserial for 0/1 items) with
      the rest score.
    * Coefficient alpha is computed per booklet on the students who answered
      all of that booklet's items (listwise); ``alpha_if_deleted`` for an
      item is the n-weighted mean over the booklets containing it, and
      ``alpha_gain`` the mean of (alpha if deleted - booklet alpha).
    * Distractors: for each option, the weighted share of students choosing
      it among those who chose an option, the mean total score of its
      choosers (sum score, or proportion score x number of items in
      matrix designs) and the point-biserial of choosing it with the rest
      score.

    Flag rules (thresholds in :data:`DEFAULT_FLAG_RULES`, overridable):
    ``p_low`` p < 0.10; ``p_high`` p > 0.95; ``r_low`` item-rest r < 0.20;
    ``r_negative`` item-rest r < 0; ``alpha_up`` alpha_gain > 0 (alpha rises
    when the item is deleted); ``distractor`` a distractor with at least
    ``min_choosers`` choosers has a positive point-biserial or a mean total
    score at least that of the key's choosers.
    """
    rules = dict(DEFAULT_FLAG_RULES)
    if flag_rules:
        unknown = set(flag_rules) - set(rules)
        if unknown:
            raise ItemAnalysisError(f"unknown flag_rules {sorted(unknown)}; known: {sorted(rules)}")
        rules.update({k: float(v) for k, v in flag_rules.items()})
    if not (0 < ci_level < 1):
        raise ItemAnalysisError(f"ci_level must be in (0, 1), got {ci_level}")

    key_s: pd.Series | None = None
    if options is not None:
        if not isinstance(options, pd.DataFrame):
            raise ItemAnalysisError("options must be a DataFrame of chosen options (rows students, columns items)")
        if key is None:
            raise ItemAnalysisError("options were given without key; pass key={item: keyed option}")
        key_s = pd.Series(key)
        missing = [c for c in options.columns if c not in key_s.index]
        if missing:
            raise ItemAnalysisError(f"key has no keyed option for items {missing[:10]}")
    if responses is None:
        if options is None:
            raise ItemAnalysisError("responses is None and no options/key given: nothing to analyse")
        responses = pd.DataFrame(
            {c: np.where(options[c].isna(), np.nan, (options[c] == key_s[c]).astype(float)) for c in options.columns},
            index=options.index,
        )
    X = _score_frame(responses, ItemAnalysisError)
    if options is not None:
        extra = [c for c in options.columns if c not in X.columns]
        if extra:
            raise ItemAnalysisError(f"options has items not in responses: {extra[:10]}")
        miss_rows = ~X.index.isin(options.index)
        if miss_rows.any():
            raise ItemAnalysisError(f"options has no row for students {_rows(X.index, miss_rows)}")
    w = check_weights(weights, X.index, ItemAnalysisError)
    items = X.columns
    Xv = X.to_numpy().copy()
    J = Xv.shape[1]

    omit_rate = np.full(J, np.nan)
    nr_rate = np.full(J, np.nan)
    if status is not None:
        st = _status_frame(status, X)
        S = st.to_numpy(dtype=object)
        presented_cells = np.where(pd.isna(S), ~np.isnan(Xv), S != "not_presented")
        om = S == "omitted"
        nr = S == "not_reached"
        Wp = w[:, None] * presented_cells
        with np.errstate(invalid="ignore", divide="ignore"):
            omit_rate = (w[:, None] * om).sum(0) / Wp.sum(0)
            nr_rate = (w[:, None] * nr).sum(0) / Wp.sum(0)
        if omitted_as_wrong:
            Xv = np.where(om & np.isnan(Xv), 0.0, Xv)
        if not_reached_as_wrong:
            Xv = np.where(nr & np.isnan(Xv), 0.0, Xv)
        design = presented_cells
    else:
        design = ~np.isnan(Xv)
    Xf = pd.DataFrame(Xv, index=X.index, columns=items)
    m = _max_scores(max_scores, Xf, ItemAnalysisError)

    P = ~np.isnan(Xv)
    X0 = np.where(P, Xv, 0.0)
    complete = bool(P.all())
    if complete:
        total = X0.sum(1)
        rest = total[:, None] - X0
        tot_mat = np.repeat(total[:, None], J, 1)
        valid = P
        rest_kind = "sum"
    else:
        Ssum = X0.sum(1)
        Msum = (P * m).sum(1)
        denom = Msum[:, None] - P * m
        with np.errstate(invalid="ignore", divide="ignore"):
            rest = (Ssum[:, None] - X0) / denom
            total_p = Ssum / Msum
        valid = P & (denom > 0)
        tot_mat = np.repeat(total_p[:, None], J, 1)
        rest_kind = "proportion"

    n = P.sum(0)
    mean, sd = _wmean_sd(Xv, P, w)
    p_value = mean / m
    r_rest = _masked_corr(Xv, rest, valid, w)
    r_total = _masked_corr(Xv, tot_mat, P & np.isfinite(tot_mat), w)
    Xcol, Vcol = np.asfortranarray(Xv), np.asfortranarray(valid & (w[:, None] > 0))
    polys = np.array([_polyserial(r_rest[j], Xcol[Vcol[:, j], j], w[Vcol[:, j]]) for j in range(J)])

    # per-booklet alpha
    codes, labels = _booklet_codes(design, booklets, X.index)
    rel_rows, bi_rows = [], []
    aid_sum = np.zeros(J)
    gain_sum = np.zeros(J)
    nb_sum = np.zeros(J)
    for b, lab in enumerate(labels):
        rows = codes == b
        cols = np.flatnonzero(design[rows].any(0))
        Xb = Xv[np.ix_(rows, cols)]
        keep = ~np.isnan(Xb).any(1) & (w[rows] > 0)
        C = _wcov(Xb[keep], w[rows][keep]) if keep.sum() >= 3 and cols.size >= 2 else None
        row = _reliability_row(Xb, w[rows], ci_level, C)
        row.name = lab
        rel_rows.append(row)
        if C is not None and cols.size >= 3:
            aid = _alpha_if_deleted(C)
            a_b = row["alpha"]
            for jj, j in enumerate(cols):
                bi_rows.append({"booklet": lab, "item": items[j], "n": int(keep.sum()),
                                "alpha": a_b, "alpha_if_deleted": aid[jj]})
                if np.isfinite(aid[jj]):
                    aid_sum[j] += keep.sum() * aid[jj]
                    gain_sum[j] += keep.sum() * (aid[jj] - a_b)
                    nb_sum[j] += keep.sum()
    reliability = pd.DataFrame(rel_rows)
    reliability.index.name = "booklet"
    reliability["n"] = reliability["n"].astype(int)
    reliability["n_items"] = reliability["n_items"].astype(int)
    booklet_items = pd.DataFrame(bi_rows, columns=["booklet", "item", "n", "alpha", "alpha_if_deleted"])
    with np.errstate(invalid="ignore", divide="ignore"):
        aid_mean = np.where(nb_sum > 0, aid_sum / np.where(nb_sum > 0, nb_sum, 1), np.nan)
        gain = np.where(nb_sum > 0, gain_sum / np.where(nb_sum > 0, nb_sum, 1), np.nan)

    # distractors
    distractors = None
    distractor_flag = np.zeros(J, dtype=bool)
    if options is not None:
        opt = options.reindex(index=X.index)
        n_items_total = J
        total_score = X0.sum(1) if complete else tot_mat[:, 0] * n_items_total
        drows = []
        for c in opt.columns:
            j = items.get_loc(c)
            s = opt[c]
            has = s.notna().to_numpy() & valid[:, j]
            present_opt = s.notna().to_numpy()
            vals = pd.unique(s[s.notna()])
            try:
                vals = sorted(vals)
            except TypeError:
                vals = sorted(vals, key=str)
            sw_opt = w[present_opt].sum()
            key_row = None
            rows_c = []
            for o in vals:
                chose = (s == o).to_numpy() & present_opt
                wc = w[chose]
                ind = chose.astype(float)
                pb = _masked_corr(ind[:, None], rest[:, [j]], has[:, None], w)[0]
                rec = {"item": c, "option": o, "is_key": bool(o == key_s[c]), "n": int(chose.sum()),
                       "proportion": float(wc.sum() / sw_opt) if sw_opt > 0 else np.nan,
                       "mean_total": float(np.average(total_score[chose], weights=wc)) if wc.sum() > 0 else np.nan,
                       "pbis_rest": float(pb)}
                rows_c.append(rec)
                if rec["is_key"]:
                    key_row = rec
            for rec in rows_c:
                if rec["is_key"] or rec["n"] < rules["min_choosers"]:
                    continue
                if (np.isfinite(rec["pbis_rest"]) and rec["pbis_rest"] > 0) or (
                    key_row is not None and np.isfinite(rec["mean_total"]) and rec["mean_total"] >= key_row["mean_total"]
                ):
                    distractor_flag[j] = True
            drows.extend(rows_c)
        distractors = pd.DataFrame(drows, columns=["item", "option", "is_key", "n", "proportion", "mean_total", "pbis_rest"])

    flags = []
    for j in range(J):
        f = []
        if np.isfinite(p_value[j]) and p_value[j] < rules["p_low"]:
            f.append("p_low")
        if np.isfinite(p_value[j]) and p_value[j] > rules["p_high"]:
            f.append("p_high")
        if np.isfinite(r_rest[j]) and r_rest[j] < rules["r_low"]:
            f.append("r_low")
        if np.isfinite(r_rest[j]) and r_rest[j] < 0:
            f.append("r_negative")
        if np.isfinite(gain[j]) and gain[j] > 0:
            f.append("alpha_up")
        if distractor_flag[j]:
            f.append("distractor")
        flags.append(",".join(f))

    table = pd.DataFrame(
        {
            "n": n.astype(int),
            "max_score": m,
            "mean": mean,
            "sd": sd,
            "p_value": p_value,
            "item_rest_r": r_rest,
            "item_total_r": r_total,
            "polyserial": polys,
            "alpha_if_deleted": aid_mean,
            "alpha_gain": gain,
            "omit_rate": omit_rate,
            "not_reached_rate": nr_rate,
            "flags": flags,
        },
        index=items,
    )
    table.index.name = "item"
    return ItemAnalysis(table, reliability, distractors, booklet_items, rules, rest_kind)


# --------------------------------------------------------------------------
# DIF
# --------------------------------------------------------------------------


def mantel_haenszel(tables: np.ndarray, correct: bool = True) -> dict[str, float]:
    """Mantel-Haenszel statistics of a K x 2 x 2 stack of tables.

    ``tables[k] = [[A, B], [C, D]]`` with rows reference/focal and columns
    right/wrong (any group-by-outcome 2 x 2 layout works: the odds ratio is
    row 1 vs row 2 for column 1).

    * ``alpha = sum(A D / T) / sum(B C / T)``
    * ``chi2 = (|sum A - sum E(A)| - 0.5)^2 / sum Var(A)``, ``E(A) = n_R m_1 / T``,
      ``Var(A) = n_R n_F m_1 m_0 / (T^2 (T - 1))`` (the 0.5 is dropped if not
      ``correct`` or when ``|sum A - sum E(A)| < 0.5``, as in R's ``mantelhaen.test``)
    * ``var(ln alpha)`` by Robins, Breslow & Greenland (1986):
      ``sum P R/(2 R+^2) + sum (P S + Q R)/(2 R+ S+) + sum Q S/(2 S+^2)`` with
      ``P = (A+D)/T, Q = (B+C)/T, R = AD/T, S = BC/T``.
    * ``D = -2.35 ln alpha`` with SE ``2.35 sqrt(var(ln alpha))``.
    """
    t = np.asarray(tables, dtype=float)
    if t.ndim != 3 or t.shape[1:] != (2, 2):
        raise DIFError(f"tables must have shape (K, 2, 2), got {t.shape}")
    if np.any(~np.isfinite(t) | (t < 0)):
        raise DIFError("tables must hold finite non-negative counts")
    return _mh_from_counts(t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1], correct)


def _mh_from_counts(A, B, C, D, correct=True) -> dict[str, float]:
    A, B, C, D = (np.asarray(v, dtype=float) for v in (A, B, C, D))
    T = A + B + C + D
    use = T > 0
    A, B, C, D, T = A[use], B[use], C[use], D[use], T[use]
    nR, nF, m1, m0 = A + B, C + D, A + C, B + D
    R = A * D / T
    S = B * C / T
    Rs, Ss = R.sum(), S.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = Rs / Ss
        Pk = (A + D) / T
        Qk = (B + C) / T
        var_ln = (Pk * R).sum() / (2 * Rs**2) + (Pk * S + Qk * R).sum() / (2 * Rs * Ss) + (Qk * S).sum() / (2 * Ss**2)
        EA = nR * m1 / T
        VA = np.where(T > 1, nR * nF * m1 * m0 / (T**2 * (T - 1)), 0.0)
        dev = abs(A.sum() - EA.sum())
        # continuity correction only when |sum A - sum E(A)| >= 0.5, as R's mantelhaen.test
        cc = 0.5 if (correct and dev >= 0.5) else 0.0
        chi2 = (dev - cc) ** 2 / VA.sum() if VA.sum() > 0 else np.nan
        ln_a = np.log(alpha)
    se_ln = float(np.sqrt(var_ln)) if np.isfinite(var_ln) else np.nan
    return {
        "alpha_mh": float(alpha),
        "ln_alpha": float(ln_a),
        "ln_alpha_se": se_ln,
        "mh_d": float(-_DELTA * ln_a),
        "mh_d_se": _DELTA * se_ln,
        "mh_chi2": float(chi2),
        "mh_p": float(stats.chi2.sf(chi2, 1)) if np.isfinite(chi2) else np.nan,
        "expected_a": float(EA.sum()),
        "observed_a": float(A.sum()),
        "var_a": float(VA.sum()),
    }


@dataclass
class DIFResult:
    """Result of :func:`dif`.

    ``items`` holds one row per item: counts, the MH statistics (dichotomous
    items), SMD / Mantel / Liu-Agresti statistics (all items), and ``ets_class``
    (A/B/C for dichotomous, AA/BB/CC for polytomous items). ``purified_out`` lists
    the items removed from the matching score at the second stage.
    """

    items: pd.DataFrame
    focal: Any
    reference: Any
    matching: str
    purified_out: list = field(default_factory=list)
    alpha: float = 0.05

    def summary(self) -> pd.DataFrame:
        cols = ["kind", "n_reference", "n_focal", "alpha_mh", "mh_d", "mh_d_se", "mh_chi2", "mh_p",
                "smd", "smd_se", "smd_sd", "mantel_chi2", "mantel_p", "ets_class"]
        return self.items[cols]

    def _repr_html_(self) -> str:
        counts = self.items["ets_class"].value_counts().to_dict()
        head = (f"<p><b>DIF</b>: focal = {escape(str(self.focal))}, reference = {escape(str(self.reference))}; "
                f"matching = {escape(self.matching)}; classes {escape(str(counts))}"
                + (f"; purified out: {escape(str(self.purified_out))}" if self.purified_out else "")
                + "</p>")
        return head + self.summary().to_html(float_format="%.3f")


def _group_codes(group: Any, index: pd.Index, focal: Any, reference: Any) -> tuple[np.ndarray, Any]:
    if isinstance(group, pd.Series):
        missing = ~index.isin(group.index)
        if missing.any():
            raise DIFError(f"group has no value for rows {_rows(index, missing)}; group must be indexed like responses")
        g = group.reindex(index)
    else:
        arr = np.asarray(group)
        if arr.shape[0] != len(index):
            raise DIFError(f"group has {arr.shape[0]} values but responses has {len(index)} rows")
        g = pd.Series(arr, index=index)
    focal_set = set(focal) if isinstance(focal, (list, tuple, set, frozenset)) else {focal}
    is_f = g.isin(list(focal_set)).to_numpy()
    if not is_f.any():
        raise DIFError(f"no student has group in focal {sorted(map(str, focal_set))}; values seen: {sorted(map(str, g.dropna().unique()))[:10]}")
    if reference is None:
        is_r = g.notna().to_numpy() & ~is_f
        ref_label = "all other groups"
    else:
        ref_set = set(reference) if isinstance(reference, (list, tuple, set, frozenset)) else {reference}
        if ref_set & focal_set:
            raise DIFError(f"focal and reference overlap: {sorted(map(str, ref_set & focal_set))}")
        is_r = g.isin(list(ref_set)).to_numpy()
        ref_label = reference
    if not is_r.any():
        raise DIFError(f"no student is in the reference group {ref_label!r}")
    code = np.full(len(index), -1)
    code[is_r] = 0
    code[is_f] = 1
    return code, ref_label


def _strata(match: np.ndarray, n_strata: int | None) -> np.ndarray:
    ok = np.isfinite(match)
    out = np.full(match.shape, -1)
    v = match[ok]
    if n_strata is None and np.allclose(v, np.round(v)) and np.unique(v).size <= 200:
        _, inv = np.unique(v, return_inverse=True)
        out[ok] = inv.ravel()
        return out
    k = 20 if n_strata is None else int(n_strata)
    qs = np.quantile(v, np.linspace(0, 1, k + 1)[1:-1])
    out[ok] = np.searchsorted(np.unique(qs), v, side="right")
    return out


def _item_dif(y: np.ndarray, grp: np.ndarray, strat: np.ndarray, w: np.ndarray, dichotomous: bool) -> dict[str, float]:
    ok = ~np.isnan(y) & (grp >= 0) & (strat >= 0) & (w > 0)
    y, g, s, w = y[ok], grp[ok], strat[ok], w[ok]
    out: dict[str, float] = {"n_reference": int((g == 0).sum()), "n_focal": int((g == 1).sum())}
    if out["n_reference"] == 0 or out["n_focal"] == 0:
        return out
    K = int(s.max()) + 1  # strata codes are 0..K-1 (empty strata contribute nothing)
    cats = _categories(y)
    ncat = cats.size
    if cats[0] == 0 and cats[-1] == ncat - 1:  # scores 0..K-1: the score is its own code
        yc = y.astype(np.int64)
    else:
        yc = np.searchsorted(cats, y)
    # one pass: weighted counts by stratum x group x score category
    T = np.bincount((s * 2 + g) * ncat + yc, weights=w, minlength=K * 2 * ncat).reshape(K, 2, ncat)
    cR, cF = T[:, 0, :], T[:, 1, :]
    nR, nF = cR.sum(1), cF.sum(1)
    yR, yF = cR @ cats, cF @ cats
    y2R, y2F = cR @ cats**2, cF @ cats**2
    out["mean_reference"] = float(yR.sum() / nR.sum())
    out["mean_focal"] = float(yF.sum() / nF.sum())
    nT = nR + nF
    # SMD (Dorans & Schmitt): sum_k p_Fk (mean_Fk - mean_Rk) over strata holding both groups
    both = (nR > 0) & (nF > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mF, mR = yF / nF, yR / nR
        vF = y2F / nF - mF**2
        vR = y2R / nR - mR**2
        pF = np.where(both, nF, 0.0) / np.where(both, nF, 0.0).sum()
        out["smd"] = float(np.sum(np.where(both, pF * (mF - mR), 0.0)))
        # Zwick & Thayer (1996) non-null variance
        out["smd_se"] = float(np.sqrt(np.sum(np.where(both, pF**2 * (vF / nF + vR / nR), 0.0))))
    tot_c = T.sum((0, 1))
    mu_all = tot_c @ cats / tot_c.sum()
    sd_all = float(np.sqrt(max(tot_c @ (cats - mu_all) ** 2 / tot_c.sum(), 0.0)))
    out["item_sd"] = sd_all
    out["smd_sd"] = out["smd"] / sd_all if sd_all > 0 else np.nan
    # Mantel (1963) chi-square for ordered responses (sum of focal scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        EF = nF * (yR + yF) / nT
        VF = np.where(nT > 1, nR * nF * (nT * (y2R + y2F) - (yR + yF) ** 2) / (nT**2 * (nT - 1)), 0.0)
    VF = np.where(np.isfinite(VF), VF, 0.0)
    EF = np.where(np.isfinite(EF), EF, 0.0)
    vs = VF.sum()
    mchi = (yF.sum() - EF.sum()) ** 2 / vs if vs > 0 else np.nan
    out["mantel_chi2"] = float(mchi)
    out["mantel_p"] = float(stats.chi2.sf(mchi, 1)) if np.isfinite(mchi) else np.nan
    # Liu-Agresti cumulative common odds ratio (reference vs focal, above each cut)
    if ncat >= 2:
        RleC = np.cumsum(cR, 1)[:, :-1]
        FleC = np.cumsum(cF, 1)[:, :-1]
        RgtC = nR[:, None] - RleC
        FgtC = nF[:, None] - FleC
        with np.errstate(invalid="ignore", divide="ignore"):
            tt = np.where(nT > 0, nT, np.inf)[:, None]
            la = np.sum(RgtC * FleC / tt) / np.sum(RleC * FgtC / tt)
        out["liu_agresti"] = float(la)
        out["la_d"] = float(-_DELTA * np.log(la)) if la > 0 else np.nan
    if dichotomous:
        A, B = yR, nR - yR
        Cc, Dd = yF, nF - yF
        out.update(_mh_from_counts(A, B, Cc, Dd, correct=True))
    return out


def _ets_dich(d: float, se: float, p: float, alpha: float) -> str:
    if not np.isfinite(d):
        return ""
    if abs(d) < 1.0 or not (np.isfinite(p) and p < alpha):
        return "A"
    z = stats.norm.ppf(1.0 - alpha)
    if abs(d) >= 1.5 and np.isfinite(se) and se > 0 and (abs(d) - 1.0) / se > z:
        return "C"
    return "B"


def _ets_poly(smd_sd: float, p: float, alpha: float) -> str:
    if not np.isfinite(smd_sd):
        return ""
    if not (np.isfinite(p) and p < alpha) or abs(smd_sd) <= 0.17:
        return "AA"
    if abs(smd_sd) > 0.25:
        return "CC"
    return "BB"


def dif(
    responses: pd.DataFrame,
    group: Any,
    focal: Any,
    reference: Any = None,
    matching: Any = None,
    weights: Any = None,
    max_scores: Any = None,
    items: Sequence[Any] | None = None,
    purify: bool = False,
    n_strata: int | None = None,
    alpha: float = 0.05,
) -> DIFResult:
    """Differential item functioning by Mantel-Haenszel / SMD.

    Parameters
    ----------
    responses : wide DataFrame of item scores (NaN = not presented).
    group : group label per student (Series indexed like ``responses`` or array),
        e.g. gender ``F``/``M`` or locale ``urban``/``rural``.
    focal, reference : label(s) of the focal and reference groups; ``reference``
        None = every other non-missing label. Students in neither are dropped.
    matching : matching variable per student. Default: the total score over
        all items (the studied item included, Holland & Thayer 1988); when
        items are missing by design, the proportion of the attainable score on
        the items presented.
    weights : sampling weights; counts in every table are weighted sums with
        the weights rescaled to sum to the number of students analysed (so
        test statistics keep their scale). The design effect of clustering is
        not reflected: use replicate weights for design-based SEs.
    max_scores : used for the proportion matching score in incomplete designs.
    items : items to study (default all columns); all columns form the
        matching score.
    purify : two-stage refinement: items classed C (or CC) at the first stage
        are removed from the matching score of every other item at the second
        stage (the studied item itself always stays in its own matching score).
    n_strata : strata of the matching variable. Default: one stratum per
        distinct value when the matching variable is integer valued with at
        most 200 values, otherwise 20 quantile groups.
    alpha : significance level for the ETS classes.

    Statistics
    ----------
    Dichotomous items, per stratum ``k`` (A, B = reference right/wrong; C, D =
    focal right/wrong): see :func:`mantel_haenszel` for alpha_MH, the
    continuity-corrected MH chi-square and the RBG variance; MH D-DIF
    ``= -2.35 ln alpha_MH`` (negative: the item favours the reference group).

    All items: ``SMD = sum_k p_Fk (mean_Fk - mean_Rk)`` with ``p_Fk`` the focal
    share in stratum k (strata holding both groups) and SE
    ``sqrt(sum_k p_Fk^2 (s2_Fk / n_Fk + s2_Rk / n_Rk))``; ``smd_sd`` = SMD / SD
    of the item over both groups; Mantel's (1963) chi-square on the focal
    score sum, ``(sum F_k - sum E F_k)^2 / sum Var F_k`` with
    ``Var F_k = n_Rk n_Fk (n_k sum y^2 - (sum y)^2) / (n_k^2 (n_k - 1))``;
    the Liu-Agresti cumulative common odds ratio (reference over focal, above
    each score cut) and ``la_d = -2.35 ln`` of it.

    ETS classes (Zwick 2012). Dichotomous: **A** if |D| < 1 or the MH
    chi-square is not significant at ``alpha``; **C** if |D| >= 1.5 and |D| is
    significantly greater than 1 (one-sided ``(|D| - 1)/SE > z_(1-alpha)``);
    **B** otherwise. Polytomous: **AA** if Mantel's chi-square is not
    significant or |SMD/SD| <= 0.17; **CC** if significant and |SMD/SD| > 0.25;
    **BB** otherwise.
    """
    X = _score_frame(responses, DIFError)
    w = check_weights(weights, X.index, DIFError)
    if not (0 < alpha < 1):
        raise DIFError(f"alpha must be in (0, 1), got {alpha}")
    grp, ref_label = _group_codes(group, X.index, focal, reference)
    study = list(X.columns) if items is None else list(items)
    missing = [c for c in study if c not in X.columns]
    if missing:
        raise DIFError(f"items not in responses: {missing[:10]}")
    if matching is not None and purify:
        raise DIFError("purify=True needs the default total-score matching; drop matching= or purify=")
    Xv = X.to_numpy()
    P = ~np.isnan(Xv)
    m = _max_scores(max_scores, X, DIFError)
    sel = grp >= 0
    wn = np.where(sel, w, 0.0)
    if wn.sum() <= 0:
        raise DIFError("every student in the focal and reference groups has weight 0")
    wn = wn * sel.sum() / wn.sum()
    dich = np.all((Xv == 0.0) | (Xv == 1.0) | ~P, axis=0) & (m <= 1)
    Xcol = np.asfortranarray(Xv)  # contiguous item columns

    if matching is not None:
        if isinstance(matching, pd.Series):
            miss = ~X.index.isin(matching.index)
            if miss.any():
                raise DIFError(f"matching has no value for rows {_rows(X.index, miss)}")
            mv = matching.reindex(X.index).to_numpy(dtype=float, na_value=np.nan)
        else:
            mv = np.asarray(matching, dtype=float).ravel()
            if mv.shape[0] != len(X):
                raise DIFError(f"matching has {mv.shape[0]} values but responses has {len(X)} rows")
        match_label = "user matching variable"
        strata_all = _strata(mv, n_strata)

        def strata_for(j: int, excluded: set) -> np.ndarray:
            return strata_all
    else:
        complete = bool(P.all())
        X0 = np.where(P, Xv, 0.0)
        match_label = "total score" if complete else "proportion of attainable score"

        def strata_for(j: int, excluded: set) -> np.ndarray:
            keep = np.array([(c not in excluded) or (jj == j) for jj, c in enumerate(X.columns)])
            if complete:
                mv = X0[:, keep].sum(1)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    mv = X0[:, keep].sum(1) / (P[:, keep] * m[keep]).sum(1)
            return _strata(mv, n_strata)

        base_strata = strata_for(-1, set())

    def run(excluded: set) -> pd.DataFrame:
        rows = {}
        for c in study:
            j = X.columns.get_loc(c)
            if matching is None and not excluded:
                st = base_strata
            else:
                st = strata_for(j, excluded)
            res = _item_dif(Xcol[:, j], grp, st, wn, bool(dich[j]))
            res["kind"] = "dichotomous" if dich[j] else "polytomous"
            rows[c] = res
        cols = ["kind", "n_reference", "n_focal", "mean_reference", "mean_focal", "alpha_mh", "ln_alpha",
                "ln_alpha_se", "mh_d", "mh_d_se", "mh_chi2", "mh_p", "smd", "smd_se", "item_sd", "smd_sd",
                "mantel_chi2", "mantel_p", "liu_agresti", "la_d"]
        df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=cols)
        df.index.name = "item"
        df["ets_class"] = [
            _ets_dich(r.mh_d, r.mh_d_se, r.mh_p, alpha) if r.kind == "dichotomous" else _ets_poly(r.smd_sd, r.mantel_p, alpha)
            for r in df.itertuples()
        ]
        return df

    table = run(set())
    purified: list = []
    if purify:
        purified = [c for c in table.index if table.loc[c, "ets_class"] in ("C", "CC")]
        if purified:
            table = run(set(purified))
    return DIFResult(table, focal, ref_label, match_label + (" (purified)" if purify else ""), purified, alpha)


def dif_by(
    responses: pd.DataFrame,
    comparisons: Mapping[str, tuple[Any, Any, Any]],
    **kwargs: Any,
) -> pd.DataFrame:
    """DIF for several group comparisons at once (e.g. gender and locale).

    ``comparisons`` maps a name to ``(group, focal, reference)``, e.g.
    ``{"gender": (roster["gender"], "F", "M"), "locale": (roster["locale"],
    "rural", "urban")}``; other keyword arguments go to :func:`dif`. Returns
    the :meth:`DIFResult.summary` tables stacked with a ``comparison`` index
    level (plus the focal/reference labels as columns).
    """
    if not comparisons:
        raise DIFError("comparisons is empty; give at least one name -> (group, focal, reference)")
    parts = []
    for name, spec in comparisons.items():
        if not (isinstance(spec, tuple) and len(spec) == 3):
            raise DIFError(f"comparison {name!r} must be a (group, focal, reference) tuple")
        group, focal, reference = spec
        res = dif(responses, group, focal, reference, **kwargs)
        parts.append(res.summary().assign(focal=str(focal), reference=str(res.reference)))
    return pd.concat(parts, keys=list(comparisons), names=["comparison", "item"])
