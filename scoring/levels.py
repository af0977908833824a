"""Reporting scale, cut scores and the four proficiency levels (水平Ⅰ-Ⅳ).

* :class:`ReportingScale` -- the linear transform from theta to the reporting
  scale, fixed once in a base year (weighted population mean and SD of the base
  year's abilities, pooled over plausible values) and reused in later years.
* :func:`assign_levels` -- proficiency levels from cut scores: an ordered
  Categorical 水平Ⅰ < 水平Ⅱ < 水平Ⅲ < 水平Ⅳ (待提高 / 中等 / 良好 / 优秀).
* :func:`level_shares` -- the level distribution from plausible values, one
  estimate per PV combined by Rubin's rules, with replicate-weight SEs.
* :func:`rp_locations`, :func:`ordered_item_booklet`, :func:`bookmark_cuts` --
  the Bookmark standard-setting helper (Mitzel, Lewis, Patz & Green 2001).
* :func:`classification_accuracy` -- Rudner (2001, 2005) classification
  accuracy and consistency per level.

References
----------
Rubin (1987) *Multiple imputation for nonresponse in surveys*; OECD (2009)
*PISA Data Analysis Manual* ch. 8 (PV statistics with replicate weights);
Mitzel, Lewis, Patz & Green (2001) in Cizek (ed.) *Setting performance
standards*, 249-281; Rudner (2001) Practical Assessment, Research & Evaluation
7(14); Rudner (2005) PARE 10(13); Lee (2010) JEM 47, 1-17.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from qualmon.scoring._checks import check_weights, rows_text as _rows
from scipy import optimize, sparse, stats

__all__ = [
    "LevelError",
    "LEVEL_LABELS",
    "LEVEL_DESCRIPTORS",
    "LEVEL_NAMES_EN",
    "LEVEL_DTYPE",
    "DEFAULT_CUTS",
    "ReportingScale",
    "assign_levels",
    "level_table",
    "level_descriptors",
    "level_numbers",
    "level_shares",
    "rp_locations",
    "ordered_item_booklet",
    "bookmark_cuts",
    "ClassificationAccuracy",
    "classification_accuracy",
]

#: Level labels, lowest to highest (the provincial plan's 四个水平段).
LEVEL_LABELS: tuple[str, ...] = ("水平Ⅰ", "水平Ⅱ", "水平Ⅲ", "水平Ⅳ")
#: Chinese descriptors in the same order.
LEVEL_DESCRIPTORS: tuple[str, ...] = ("待提高", "中等", "良好", "优秀")
#: English names in the same order.
LEVEL_NAMES_EN: tuple[str, ...] = ("needs improvement", "medium", "good", "excellent")
#: Ordered categorical dtype 水平Ⅰ < 水平Ⅱ < 水平Ⅲ < 水平Ⅳ.
LEVEL_DTYPE = pd.CategoricalDtype(list(LEVEL_LABELS), ordered=True)

#: Default cut scores on the 500/100 reporting scale: the lower bounds of
#: 水平Ⅱ, 水平Ⅲ and 水平Ⅳ at one SD below, at, and one SD above the base-year
#: mean. These are placeholders until a standard-setting meeting (e.g. the
#: Bookmark helpers below) fixes subject-specific cuts; pass ``cuts=`` (or keep
#: them in the cycle's plan file) to override.
DEFAULT_CUTS: tuple[float, float, float] = (400.0, 500.0, 600.0)


class LevelError(ValueError):
    """Bad input to the reporting-scale / level functions."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _as_matrix(x: Any, name: str) -> tuple[np.ndarray, pd.Index, list]:
    """Scores as an (n, M) float matrix (M = 1 for a single score)."""
    if isinstance(x, pd.DataFrame):
        cols = list(x.columns)
        try:
            v = x.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            bad = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
            raise LevelError(f"{name} columns {bad} must be numeric") from None
        return v, x.index, cols
    if isinstance(x, pd.Series):
        if not pd.api.types.is_numeric_dtype(x):
            raise LevelError(f"{name} must be numeric, got dtype {x.dtype}")
        return x.to_numpy(dtype=float, na_value=np.nan)[:, None], x.index, [x.name]
    v = np.asarray(x, dtype=float)
    if v.ndim == 0:
        v = v[None]
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise LevelError(f"{name} must be 1-D or 2-D, got shape {v.shape}")
    return v, pd.RangeIndex(v.shape[0]), list(range(v.shape[1]))


def _rewrap(v: np.ndarray, like: Any) -> Any:
    if isinstance(like, pd.DataFrame):
        return pd.DataFrame(v, index=like.index, columns=like.columns)
    if isinstance(like, pd.Series):
        return pd.Series(v[:, 0] if v.ndim == 2 else v, index=like.index, name=like.name)
    arr = np.asarray(like)
    if arr.ndim == 0:
        return float(np.ravel(v)[0])
    return v.reshape(arr.shape)


# --------------------------------------------------------------------------
# reporting scale
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportingScale:
    """Linear reporting scale ``score = intercept + slope * theta``.

    Fitted once in the base year so that the base-year population has mean
    ``mean`` and SD ``sd``: ``slope = sd / sd_theta``, ``intercept = mean -
    slope * mean_theta``, with ``mean_theta``, ``sd_theta`` the weighted
    population moments of the base year's abilities (``sum w theta / sum w``
    and ``sqrt(sum w (theta - mean)^2 / sum w)``). With plausible values the
    PV columns are pooled (each PV a replicate of the population with the
    same weights), as PISA does when it standardises its scales. Later years
    reuse the stored transform (:meth:`to_dict` / :meth:`from_dict`) after
    their abilities are linked to the base-year theta scale.
    """

    slope: float
    intercept: float
    theta_mean: float = float("nan")
    theta_sd: float = float("nan")
    mean: float = 500.0
    sd: float = 100.0
    base_year: int | None = None
    label: str = ""

    def __post_init__(self):
        for k in ("slope", "intercept"):
            v = getattr(self, k)
            if not np.isfinite(v):
                raise LevelError(f"ReportingScale.{k} must be finite, got {v}")
        if self.slope <= 0:
            raise LevelError(f"ReportingScale.slope must be positive, got {self.slope}")

    @classmethod
    def fit(
        cls,
        theta: Any,
        weights: Any = None,
        mean: float = 500.0,
        sd: float = 100.0,
        base_year: int | None = None,
        label: str = "",
    ) -> "ReportingScale":
        """Fix the scale on the base year's abilities (Series, array, or a
        DataFrame of plausible values that are pooled)."""
        if not (np.isfinite(mean) and np.isfinite(sd) and sd > 0):
            raise LevelError(f"mean must be finite and sd positive, got mean={mean}, sd={sd}")
        v, idx, _ = _as_matrix(theta, "theta")
        w = check_weights(weights, idx, LevelError, what="scores")
        W = np.repeat(w[:, None], v.shape[1], 1)
        ok = np.isfinite(v) & (W > 0)
        if ok.sum() < 2:
            raise LevelError("theta needs at least two finite values with positive weight")
        vv, ww = v[ok], W[ok]
        m = float(np.sum(ww * vv) / ww.sum())
        s = float(np.sqrt(np.sum(ww * (vv - m) ** 2) / ww.sum()))
        if s <= 0:
            raise LevelError("theta has zero variance; cannot fix a scale")
        slope = sd / s
        return cls(slope=slope, intercept=mean - slope * m, theta_mean=m, theta_sd=s, mean=float(mean),
                   sd=float(sd), base_year=base_year, label=label)

    def transform(self, theta: Any) -> Any:
        """Reporting-scale scores ``intercept + slope * theta`` (same shape/type)."""
        v, _, _ = _as_matrix(theta, "theta")
        return _rewrap(self.intercept + self.slope * v, theta)

    def inverse(self, score: Any) -> Any:
        """Theta from reporting-scale scores: ``(score - intercept) / slope``."""
        v, _, _ = _as_matrix(score, "score")
        return _rewrap((v - self.intercept) / self.slope, score)

    def transform_se(self, se: Any) -> Any:
        """Standard errors on the reporting scale: ``slope * se``."""
        v, _, _ = _as_matrix(se, "se")
        return _rewrap(self.slope * v, se)

    def inverse_se(self, se: Any) -> Any:
        v, _, _ = _as_matrix(se, "se")
        return _rewrap(v / self.slope, se)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of floats/ints/strings (TOML-friendly; ``None`` omitted)."""
        d = {"slope": float(self.slope), "intercept": float(self.intercept), "theta_mean": float(self.theta_mean),
             "theta_sd": float(self.theta_sd), "mean": float(self.mean), "sd": float(self.sd), "label": self.label}
        if self.base_year is not None:
            d["base_year"] = int(self.base_year)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReportingScale":
        missing = [k for k in ("slope", "intercept") if k not in d]
        if missing:
            raise LevelError(f"reporting-scale mapping lacks {missing}")
        known = {"slope", "intercept", "theta_mean", "theta_sd", "mean", "sd", "base_year", "label"}
        extra = set(d) - known
        if extra:
            raise LevelError(f"unknown reporting-scale keys {sorted(extra)}")
        kw = {k: d[k] for k in known if k in d}
        for k in ("slope", "intercept", "theta_mean", "theta_sd", "mean", "sd"):
            if k in kw:
                kw[k] = float(kw[k])
        if "base_year" in kw and kw["base_year"] is not None:
            kw["base_year"] = int(kw["base_year"])
        return cls(**kw)

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([self.to_dict()])

    def _repr_html_(self) -> str:
        return (f"<p><b>Reporting scale</b> {escape(self.label)}: score = {self.intercept:.4f} + "
                f"{self.slope:.4f} &theta; (base year {self.base_year}; base-year mean {self.mean:g}, SD {self.sd:g})</p>")


# --------------------------------------------------------------------------
# levels
# --------------------------------------------------------------------------


def _check_cuts(cuts: Any) -> np.ndarray:
    if isinstance(cuts, Mapping):
        missing = [lab for lab in LEVEL_LABELS[1:] if lab not in cuts]
        if missing:
            raise LevelError(f"cuts mapping needs the lower bounds of {list(LEVEL_LABELS[1:])}; missing {missing}")
        c = np.array([float(cuts[lab]) for lab in LEVEL_LABELS[1:]])
    else:
        c = np.asarray(cuts, dtype=float).ravel()
    if c.size != 3 or not np.all(np.isfinite(c)) or np.any(np.diff(c) <= 0):
        raise LevelError(f"cuts must be three strictly increasing finite numbers (lower bounds of 水平Ⅱ, Ⅲ, Ⅳ), got {list(np.ravel(cuts)) if not isinstance(cuts, Mapping) else dict(cuts)}")
    return c


def _codes(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Level codes 0..3 (a score equal to a cut belongs to the higher level); -1 for NaN."""
    out = np.searchsorted(c, v, side="right")
    return np.where(np.isfinite(v), out, -1)


def assign_levels(scale_scores: Any, cuts: Any = DEFAULT_CUTS) -> Any:
    """Proficiency levels from reporting-scale scores.

    Level k holds scores ``cut_(k-1) <= score < cut_k`` (a score exactly at a
    cut is in the higher level). Returns an ordered Categorical with the labels
    :data:`LEVEL_LABELS` (水平Ⅰ < 水平Ⅱ < 水平Ⅲ < 水平Ⅳ): a Series (same index)
    for a Series, a DataFrame of categoricals for a DataFrame of plausible
    values, a ``pd.Categorical`` otherwise. Missing scores give missing levels.
    """
    c = _check_cuts(cuts)
    v, idx, cols = _as_matrix(scale_scores, "scale_scores")
    codes = _codes(v, c)
    if isinstance(scale_scores, pd.DataFrame):
        return pd.DataFrame({col: pd.Categorical.from_codes(codes[:, j], dtype=LEVEL_DTYPE)
                             for j, col in enumerate(cols)}, index=idx)
    cat = pd.Categorical.from_codes(codes[:, 0], dtype=LEVEL_DTYPE)
    if isinstance(scale_scores, pd.Series):
        return pd.Series(cat, index=idx, name=scale_scores.name)
    return cat


def level_table(cuts: Any = DEFAULT_CUTS) -> pd.DataFrame:
    """The four levels with number, Chinese descriptor, English name and score bounds."""
    c = _check_cuts(cuts)
    lo = np.concatenate([[-np.inf], c])
    hi = np.concatenate([c, [np.inf]])
    return pd.DataFrame({"number": [1, 2, 3, 4], "descriptor": list(LEVEL_DESCRIPTORS), "name_en": list(LEVEL_NAMES_EN),
                         "lower": lo, "upper": hi}, index=pd.Index(list(LEVEL_LABELS), name="level"))


def level_descriptors(levels: Any, lang: str = "zh") -> Any:
    """Map level labels to descriptors: ``lang='zh'`` 待提高/中等/良好/优秀,
    ``'en'`` the English names, ``'full'`` e.g. ``水平Ⅳ（优秀）``."""
    names = {"zh": LEVEL_DESCRIPTORS, "en": LEVEL_NAMES_EN,
             "full": tuple(f"{l}（{d}）" for l, d in zip(LEVEL_LABELS, LEVEL_DESCRIPTORS))}
    if lang not in names:
        raise LevelError(f"lang must be one of {sorted(names)}, got {lang!r}")
    mapping = dict(zip(LEVEL_LABELS, names[lang]))
    dtype = pd.CategoricalDtype(list(names[lang]), ordered=True)
    if isinstance(levels, pd.Series):
        return levels.astype(LEVEL_DTYPE).cat.rename_categories(mapping).astype(dtype)
    cat = pd.Categorical(levels, dtype=LEVEL_DTYPE)
    return cat.rename_categories(mapping)


def level_numbers(levels: Any) -> Any:
    """Level labels to integers 1..4 (the ``level`` field of the scores table); missing -> <NA>.
    Returns an Int64 Series for a Series, an Int64 array otherwise."""
    if isinstance(levels, pd.Series):
        codes = levels.astype(LEVEL_DTYPE).cat.codes.to_numpy()
    else:
        codes = np.asarray(pd.Categorical(levels, dtype=LEVEL_DTYPE).codes)
    arr = pd.array(codes.astype("int64") + 1, dtype="Int64")
    arr[codes < 0] = pd.NA
    if isinstance(levels, pd.Series):
        return pd.Series(arr, index=levels.index, name=levels.name)
    return arr


def level_shares(
    scores: Any,
    cuts: Any = DEFAULT_CUTS,
    weights: Any = None,
    replicate_weights: pd.DataFrame | np.ndarray | None = None,
    variance_factor: float | None = None,
    by: Any = None,
) -> pd.DataFrame:
    """Share of students in each level, from plausible values.

    For each PV column m the weighted share ``s_mk = sum w 1[level = k] / sum w``
    is computed (within each ``by`` group); the estimate is the mean over PVs.
    With replicate weights the sampling variance of each PV's share is
    ``U_m = variance_factor * sum_r (s_mk,r - s_mk)^2`` (e.g. 1 for paired
    jackknife JK2, ``1/(R (1-k)^2)`` for Fay BRR with factor k: 0.05 for
    PISA's 80 replicates), and Rubin's rules give
    ``Var = mean_m U_m + (1 + 1/M) B``, ``B`` the between-PV variance of the
    shares. Without replicate weights only the point estimate (and the
    imputation variance ``B``) is returned; ``se`` is NaN.

    Returns a long DataFrame indexed by (group, level) -- or level -- with
    columns ``share``, ``se``, ``sampling_var``, ``imputation_var``, ``n``
    (mean over PVs of the unweighted number of students in the level).
    Shares of a group sum to 1.
    """
    c = _check_cuts(cuts)
    v, idx, cols = _as_matrix(scores, "scores")
    n, M = v.shape
    w = check_weights(weights, idx, LevelError, what="scores")
    if replicate_weights is not None:
        if variance_factor is None or not np.isfinite(variance_factor) or variance_factor <= 0:
            raise LevelError("replicate_weights need variance_factor (e.g. 1.0 for JK2, 0.05 for PISA Fay BRR)")
        if isinstance(replicate_weights, pd.DataFrame):
            missing = ~idx.isin(replicate_weights.index)
            if missing.any():
                raise LevelError(f"replicate_weights has no row for {_rows(idx, missing)}")
            R = replicate_weights.reindex(idx).to_numpy(dtype=float, na_value=np.nan)
        else:
            R = np.asarray(replicate_weights, dtype=float)
            if R.ndim != 2 or R.shape[0] != n:
                raise LevelError(f"replicate_weights must be (n_students, n_replicates); got {R.shape}")
        bad = ~np.isfinite(R) | (R < 0)
        if bad.any():
            raise LevelError(f"replicate_weights must be finite and >= 0; invalid in rows {_rows(idx, bad.any(1))}")
        Wall = np.column_stack([w, R])
    else:
        Wall = w[:, None]
    if by is None:
        gcodes = np.zeros(n, dtype=int)
        glabels: list = [None]
    else:
        if isinstance(by, pd.Series):
            missing = ~idx.isin(by.index)
            if missing.any():
                raise LevelError(f"by has no value for rows {_rows(idx, missing)}")
            b = by.reindex(idx)
        else:
            b = pd.Series(np.asarray(by), index=idx)
            if len(b) != n:
                raise LevelError(f"by has {len(b)} values but scores have {n} rows")
        gcodes, glabels = pd.factorize(b, sort=True)
        glabels = list(glabels)
    G = len(glabels)
    est = np.empty((M, G * 4, Wall.shape[1]))
    cnt = np.empty((M, G * 4))
    for m in range(M):
        L = _codes(v[:, m], c)
        ok = (L >= 0) & (gcodes >= 0)
        rows = np.flatnonzero(ok)
        S = sparse.csr_matrix((np.ones(rows.size), (rows, gcodes[ok] * 4 + L[ok])), shape=(n, G * 4))
        num = np.asarray((S.T @ Wall))  # (G*4, 1+R)
        tot = num.reshape(G, 4, -1).sum(1)  # (G, 1+R)
        with np.errstate(invalid="ignore", divide="ignore"):
            est[m] = (num.reshape(G, 4, -1) / tot[:, None, :]).reshape(G * 4, -1)
        cnt[m] = np.bincount(gcodes[ok] * 4 + L[ok], minlength=G * 4)
    full = est[:, :, 0]  # (M, G*4)
    share = full.mean(0)
    B = full.var(0, ddof=1) if M > 1 else np.zeros(G * 4)
    if Wall.shape[1] > 1:
        U = variance_factor * ((est[:, :, 1:] - est[:, :, :1]) ** 2).sum(-1)  # (M, G*4)
        Ubar = U.mean(0)
        total = Ubar + (1.0 + 1.0 / M) * B
        se = np.sqrt(total)
    else:
        Ubar = np.full(G * 4, np.nan)
        se = np.full(G * 4, np.nan)
    if by is None:
        index = pd.Index(list(LEVEL_LABELS), name="level")
    else:
        name = by.name if isinstance(by, pd.Series) and by.name is not None else "group"
        index = pd.MultiIndex.from_product([glabels, list(LEVEL_LABELS)], names=[name, "level"])
    return pd.DataFrame({"share": share, "se": se, "sampling_var": Ubar, "imputation_var": B, "n": cnt.mean(0)},
                        index=index)


# --------------------------------------------------------------------------
# bookmark
# --------------------------------------------------------------------------


def rp_locations(items: pd.DataFrame, rp: float = 0.67, bounds: tuple[float, float] = (-10.0, 10.0)) -> pd.DataFrame:
    """Response-probability (RP) locations: for every item and score category
    k >= 1 the theta at which ``P(X >= k | theta) = rp`` (RP67 by default),
    using the item-response functions of :mod:`qualmon.scoring.models`.

    Closed forms: 2PL/Rasch ``(logit(rp) - d)/a``; 3PL
    ``(logit((rp - c)/(1 - c)) - d)/a`` (undefined, NaN, when ``rp <= c``); GRM
    ``(logit(rp) - d_k)/a``; GPCM/PCM by root finding (``P(X >= k)`` is
    increasing in theta). Returns columns ``item, category, model, theta_rp``.
    """
    from qualmon.scoring.models import models_from_table

    if not (0 < rp < 1):
        raise LevelError(f"rp must be in (0, 1), got {rp}")
    rows = []
    for item, (model, par) in models_from_table(items).items():
        K = model.n_cat
        fam = model.family
        for k in range(1, K):
            if fam in ("2PL", "Rasch", "3PL"):
                a, d = par[0], par[1]
                cg = par[2] if fam == "3PL" else 0.0
                q = (rp - cg) / (1.0 - cg)
                th = (np.log(q / (1 - q)) - d) / a if 0 < q < 1 else np.nan
            elif fam == "GRM":
                th = (np.log(rp / (1 - rp)) - par[k]) / par[0]
            else:
                def f(t, model=model, par=par, k=k):
                    return float(model.prob(par, np.array([t]))[0, k:].sum() - rp)

                lo, hi = bounds
                th = optimize.brentq(f, lo, hi, xtol=1e-10) if f(lo) < 0 < f(hi) else np.nan
            rows.append({"item": item, "category": k, "model": fam, "theta_rp": float(th)})
    return pd.DataFrame(rows, columns=["item", "category", "model", "theta_rp"])


def ordered_item_booklet(items: pd.DataFrame, rp: float = 0.67, scale: ReportingScale | None = None) -> pd.DataFrame:
    """Ordered item booklet: item-categories sorted by their RP location, one
    page each (page 1 = easiest); ``scale_rp`` gives the location on the
    reporting scale when ``scale`` is given. Categories with no RP location
    (3PL with ``c >= rp``) are left out."""
    loc = rp_locations(items, rp=rp).dropna(subset=["theta_rp"])
    loc = loc.sort_values(["theta_rp", "item", "category"], kind="mergesort").reset_index(drop=True)
    loc.insert(0, "page", np.arange(1, len(loc) + 1))
    if scale is not None:
        loc["scale_rp"] = scale.transform(loc["theta_rp"].to_numpy())
    return loc.set_index("page")


def bookmark_cuts(
    booklet: pd.DataFrame,
    bookmarks: Mapping[str, Any] | pd.DataFrame,
    rule: str = "previous",
    aggregate: str = "median",
    scale: ReportingScale | None = None,
) -> pd.DataFrame:
    """Cut scores from bookmark placements in an ordered item booklet.

    ``bookmarks`` maps each of 水平Ⅱ, 水平Ⅲ, 水平Ⅳ to the page number(s) on which
    panelists placed the bookmark (a scalar, or one page per panelist; a
    DataFrame with one row per panelist and those three columns works too).
    The bookmark on page p marks the first item a borderline student of that
    level is *not* expected to answer with probability ``rp``; the panelist's
    cut is the RP location of page p - 1 (``rule='previous'``, the last item
    mastered), of page p (``'bookmarked'``) or their midpoint
    (``'midpoint'``). Panelist cuts are combined by their median (or mean);
    ``se`` is the panelist SD / sqrt(n). Returns one row per level with
    ``theta_cut`` and, with ``scale``, ``scale_cut``.
    """
    if rule not in ("previous", "bookmarked", "midpoint"):
        raise LevelError(f"rule must be 'previous', 'bookmarked' or 'midpoint', got {rule!r}")
    if aggregate not in ("median", "mean"):
        raise LevelError(f"aggregate must be 'median' or 'mean', got {aggregate!r}")
    if "theta_rp" not in booklet.columns:
        raise LevelError("booklet needs a theta_rp column (use ordered_item_booklet)")
    loc = booklet["theta_rp"].to_numpy(dtype=float)
    npages = loc.size
    if isinstance(bookmarks, pd.DataFrame):
        bm = {c: bookmarks[c].to_numpy() for c in bookmarks.columns}
    else:
        bm = dict(bookmarks)
    missing = [lab for lab in LEVEL_LABELS[1:] if lab not in bm]
    if missing:
        raise LevelError(f"bookmarks need pages for {list(LEVEL_LABELS[1:])}; missing {missing}")
    rows = []
    for lab in LEVEL_LABELS[1:]:
        pages = np.atleast_1d(np.asarray(bm[lab], dtype=float))
        if pages.size == 0 or np.any(~np.isfinite(pages)) or np.any(pages != np.round(pages)) \
                or np.any((pages < 1) | (pages > npages)):
            raise LevelError(f"bookmark pages for {lab} must be integers in 1..{npages}, got {pages.tolist()}")
        p = pages.astype(int)
        if rule == "previous" and np.any(p < 2):
            raise LevelError(f"bookmark on page 1 for {lab} has no previous page under rule='previous'")
        prev = loc[np.maximum(p - 2, 0)]
        here = loc[p - 1]
        cut = prev if rule == "previous" else here if rule == "bookmarked" else (prev + here) / 2
        agg = float(np.median(cut)) if aggregate == "median" else float(np.mean(cut))
        se = float(np.std(cut, ddof=1) / np.sqrt(cut.size)) if cut.size > 1 else np.nan
        rows.append({"level": lab, "n_panelists": int(cut.size), "page_median": float(np.median(p)),
                     "theta_cut": agg, "se": se})
    out = pd.DataFrame(rows).set_index("level")
    if np.any(np.diff(out["theta_cut"].to_numpy()) <= 0):
        raise LevelError(f"bookmark cuts are not increasing across levels: {out['theta_cut'].round(4).tolist()}")
    if scale is not None:
        out["scale_cut"] = scale.transform(out["theta_cut"].to_numpy())
        out["scale_se"] = scale.transform_se(out["se"].to_numpy())
    return out


# --------------------------------------------------------------------------
# classification accuracy and consistency
# --------------------------------------------------------------------------


@dataclass
class ClassificationAccuracy:
    """Rudner classification accuracy and consistency.

    ``levels``: one row per level plus ``overall``; ``cuts``: one row per cut
    (dichotomous decision at that cut); ``matrix``: expected joint shares of
    (true level, observed level).
    """

    levels: pd.DataFrame
    cuts: pd.DataFrame
    matrix: pd.DataFrame

    @property
    def accuracy(self) -> float:
        return float(self.levels.loc["overall", "accuracy"])

    @property
    def consistency(self) -> float:
        return float(self.levels.loc["overall", "consistency"])

    def summary(self) -> pd.DataFrame:
        return self.levels

    def _repr_html_(self) -> str:
        return (f"<p><b>Classification</b>: accuracy {self.accuracy:.3f}, consistency {self.consistency:.3f} "
                f"(Rudner)</p>" + self.levels.to_html(float_format="%.3f") + self.cuts.to_html(float_format="%.3f"))


def classification_accuracy(theta: Any, se: Any, cuts: Any, weights: Any = None) -> ClassificationAccuracy:
    """Rudner (2001, 2005) classification accuracy and consistency.

    Each examinee's true ability is taken as ``N(theta_hat, se^2)``; the
    probability of true level k is ``p_ik = Phi((c_k - theta)/se) -
    Phi((c_(k-1) - theta)/se)``. With ``l_i`` the observed level (from
    ``theta_hat``), the expected joint share of (true k, observed l) is
    ``E_kl = sum_i w_i p_ik 1[l_i = l] / sum w``.

    * overall accuracy ``= sum_k E_kk`` (expected share correctly classified);
    * level accuracy ``= E_kk / sum_k' E_k'k`` (true level k among those
      classified k) and ``sensitivity = E_kk / sum_l E_kl``;
    * consistency (two independent parallel classifications):
      overall ``sum_i w_i sum_k p_ik^2 / sum w``; per level
      ``sum_i w_i p_ik^2 / sum_i w_i p_ik``; ``kappa`` = (consistency -
      chance) / (1 - chance), chance ``= sum_k (sum_i w_i p_ik / sum w)^2``;
    * per cut: accuracy, false positive (true below, observed at or above) and
      false negative rates of the pass/fail decision at that cut.

    ``theta``, ``se`` and ``cuts`` must be on the same scale (transform with
    :class:`ReportingScale` first for reporting-scale cuts). ``se = 0`` means
    the observed level is the true one.
    """
    c = _check_cuts(cuts)
    tv, idx, _ = _as_matrix(theta, "theta")
    sv, _, _ = _as_matrix(se, "se")
    if tv.shape[1] != 1 or sv.shape != tv.shape:
        raise LevelError(f"theta and se must be single columns of the same length; got {tv.shape} and {sv.shape}")
    t, s = tv[:, 0], sv[:, 0]
    bad = ~np.isfinite(t) | ~np.isfinite(s) | (s < 0)
    if bad.any():
        raise LevelError(f"theta must be finite and se finite and >= 0; invalid in rows {_rows(idx, bad)}")
    w = check_weights(weights, idx, LevelError, what="scores")
    obs = _codes(t, c)
    edges = np.concatenate([[-np.inf], c, [np.inf]])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (edges[None, :] - t[:, None]) / s[:, None]
    cdf = stats.norm.cdf(z)
    p = np.diff(cdf, axis=1)
    zero = s == 0
    if zero.any():
        p[zero] = np.eye(4)[obs[zero]]
    sw = w.sum()
    onehot = np.eye(4)[obs]
    E = (p * w[:, None]).T @ onehot / sw  # (true, observed)
    true_share = E.sum(1)
    obs_share = E.sum(0)
    cons_i = (p**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_k = np.diag(E) / obs_share
        sens_k = np.diag(E) / true_share
        cons_k = (w[:, None] * p**2).sum(0) / (w[:, None] * p).sum(0)
    overall_cons = float(np.sum(w * cons_i) / sw)
    chance = float(np.sum(true_share**2))
    levels = pd.DataFrame(
        {"n": np.bincount(obs, minlength=4).astype(float), "share_observed": obs_share, "share_true": true_share,
         "accuracy": acc_k, "sensitivity": sens_k, "consistency": cons_k, "kappa": np.nan},
        index=list(LEVEL_LABELS))
    levels.loc["overall"] = [float(len(t)), 1.0, 1.0, float(np.trace(E)), float(np.trace(E)), overall_cons,
                             (overall_cons - chance) / (1 - chance) if chance < 1 else np.nan]
    levels.index.name = "level"
    cut_rows = []
    for j in range(3):
        above_true = p[:, j + 1:].sum(1)
        above_obs = obs > j
        fp = float(np.sum(w * (1 - above_true) * above_obs) / sw)
        fn = float(np.sum(w * above_true * ~above_obs) / sw)
        cons = float(np.sum(w * (above_true**2 + (1 - above_true) ** 2)) / sw)
        cut_rows.append({"cut": c[j], "accuracy": 1 - fp - fn, "false_positive": fp, "false_negative": fn,
                         "consistency": cons})
    cuts_df = pd.DataFrame(cut_rows, index=pd.Index(list(LEVEL_LABELS[1:]), name="lower_bound_of"))
    matrix = pd.DataFrame(E, index=pd.Index(list(LEVEL_LABELS), name="true"),
                          columns=pd.Index(list(LEVEL_LABELS), name="observed"))
    return ClassificationAccuracy(levels, cuts_df, matrix)
