"""Input checks shared by the scoring modules (one wording for every module)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def rows_text(index: pd.Index, mask: np.ndarray, limit: int = 5) -> str:
    """A few row labels where ``mask`` holds, with a count of the rest."""
    labels = list(index[np.asarray(mask)][:limit])
    more = int(np.asarray(mask).sum()) - len(labels)
    return ", ".join(repr(x) for x in labels) + (f" (+{more} more)" if more > 0 else "")


def check_weights(weights: Any, index: pd.Index, err: type[ValueError], name: str = "weights", what: str = "responses") -> np.ndarray:
    """Sampling weights aligned with ``index``: a Series (aligned on its index) or
    an array of the same length; finite, non-negative, with a positive sum.
    ``None`` gives equal weights."""
    n = len(index)
    if weights is None:
        return np.ones(n)
    if isinstance(weights, pd.Series):
        missing = ~index.isin(weights.index)
        if missing.any():
            raise err(f"{name} has no value for rows {rows_text(index, missing)}; {name} must be indexed like the {what}")
        w = weights.reindex(index).to_numpy(dtype=float, na_value=np.nan)
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape[0] != n:
            raise err(f"{name} has {w.shape[0]} values but the {what} have {n} rows")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise err(f"{name} must be finite and >= 0; invalid in rows {rows_text(index, bad)}")
    if w.sum() <= 0:
        raise err(f"{name} sum to zero; at least one student needs a positive weight")
    return w
