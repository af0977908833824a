"""Questionnaire scales scored with the IRT machinery into indices.

Likert items (1..4) of each scale are calibrated with the graded response
model (or GPCM) and every respondent gets a WLE (default, as PISA's
questionnaire indices) or EAP score.  Indices are then standardised on a
reference population (mean 0, SD 1 with the given weights), as PISA does on
the OECD countries; later years reuse the reference's constants so indices
stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["STUDENT_SCALES", "TEACHER_SCALES", "PRINCIPAL_SCALES", "QuestionnaireScales", "scale_indices"]

#: Scales of the student questionnaire (columns of ``questionnaire_student``); burden is
#: coded so that higher = more burden, wellbeing higher = better.
STUDENT_SCALES: dict[str, tuple[str, ...]] = {
    "interest": ("interest_1", "interest_2", "interest_3"),
    "confidence": ("confidence_1", "confidence_2", "confidence_3"),
    "burden": ("burden_1", "burden_2", "burden_3"),
    "relationship": ("relationship_1", "relationship_2", "relationship_3"),
    "wellbeing": ("wellbeing_1", "wellbeing_2", "wellbeing_3", "wellbeing_4"),
}
TEACHER_SCALES: dict[str, tuple[str, ...]] = {
    "inquiry": ("inquiry_1", "inquiry_2", "inquiry_3"),
    "lecture": ("lecture_1", "lecture_2"),
    "satisfaction": ("satisfaction_1", "satisfaction_2"),
}
PRINCIPAL_SCALES: dict[str, tuple[str, ...]] = {
    "leadership": ("leadership_1", "leadership_2", "leadership_3"),
    "resources": ("resources_1", "resources_2", "resources_3"),
}


@dataclass
class QuestionnaireScales:
    """Indices and the calibrations behind them.

    ``indices``: one row per respondent (the id columns, then one column per
    scale); ``calibrations``: scale -> :class:`~qualmon.scoring.calibration.Calibration`;
    ``reference``: scale -> (mean, sd) used for standardisation.
    """

    indices: pd.DataFrame
    calibrations: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        rows = []
        for name, cal in self.calibrations.items():
            items = cal.items
            rows.append(
                {
                    "scale": name,
                    "items": len(items),
                    "mean_slope": float(items["a"].mean()),
                    "loglik": float(cal.loglik),
                    "converged": bool(cal.converged),
                    "ref_mean": self.reference[name][0],
                    "ref_sd": self.reference[name][1],
                    "n_scored": int(self.indices[name].notna().sum()),
                }
            )
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:  # pragma: no cover - display only
        return "<b>Questionnaire indices</b>" + self.summary().to_html(index=False)


def scale_indices(
    data: pd.DataFrame,
    scales: Mapping[str, Sequence[str]] = STUDENT_SCALES,
    *,
    id_columns: Sequence[str] = ("year", "student_id"),
    model: str = "GRM",
    method: str = "WLE",
    weights: Any = None,
    reference: Mapping[str, tuple[float, float]] | None = None,
    min_items: int = 2,
) -> QuestionnaireScales:
    """Score each scale's Likert items into an index.

    Parameters
    ----------
    data : questionnaire table (one row per respondent).
    scales : scale name -> item columns (default :data:`STUDENT_SCALES`).
    model : "GRM" (Samejima) or "GPCM" (Muraki), calibrated by
        :func:`qualmon.scoring.calibrate` with the sampling ``weights``.
    method : "WLE" (Warm 1989, PISA's choice for indices) or "EAP".
    reference : scale -> (mean, sd) of an earlier reference population;
        default: standardise on this data (weighted mean 0, SD 1).
    min_items : respondents answering fewer items of a scale get a missing index.

    The index is ``(theta - mean_ref) / sd_ref`` where theta is the person
    estimate on the scale's IRT metric.
    """
    from qualmon.scoring.calibration import calibrate
    from qualmon.scoring.persons import score

    missing = [c for cols in scales.values() for c in cols if c not in data.columns]
    if missing:
        raise ValueError(f"scale_indices(): columns {missing} are not in the questionnaire table")
    ids = [c for c in id_columns if c in data.columns]
    out = data[ids].reset_index(drop=True).copy()
    w = None if weights is None else pd.Series(np.asarray(weights, dtype=float), index=out.index)
    cals, ref = {}, {}
    for name, cols in scales.items():
        x = data[list(cols)].reset_index(drop=True).astype("float64") - 1.0  # categories 1..4 -> 0..3
        answered = x.notna().sum(axis=1).to_numpy()
        cal = calibrate(x, model=model, weights=w, se=None, progress=False)
        est = score(x, cal, method=method)
        theta = est["theta"].to_numpy(dtype=float)
        theta = np.where(answered >= min_items, theta, np.nan)
        if reference is not None and name in reference:
            m, s = reference[name]
        else:
            ok = np.isfinite(theta)
            ww = np.ones(ok.sum()) if w is None else w.to_numpy()[ok]
            m = float(np.average(theta[ok], weights=ww))
            s = float(np.sqrt(np.average((theta[ok] - m) ** 2, weights=ww)))
        out[name] = (theta - m) / s
        cals[name], ref[name] = cal, (m, s)
    return QuestionnaireScales(out, cals, ref)
