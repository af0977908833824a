"""Scoring: item analysis, IRT calibration, person scores, linking and proficiency levels.

One entry point per job, mirt-style:

* :func:`item_analysis`, :func:`dif` — classical item statistics and DIF;
* :func:`calibrate` — Rasch/1PL, 2PL, 3PL, GRM, GPCM (mixed allowed) by
  marginal maximum likelihood (Bock–Aitkin EM) with sample weights;
* :func:`score`, :func:`plausible_values` — EAP/MAP/WLE and plausible values
  with a latent regression;
* :func:`link` — mean-mean, mean-sigma, Haebara, Stocking–Lord, with linking
  error and anchor drift;
* :class:`ReportingScale`, :func:`assign_levels`,
  :func:`classification_accuracy` — the reporting scale and the four levels;
* :func:`score_year` — a monitoring year end to end (calibrate, link, score,
  plausible values, levels) producing the ``scores`` table;
* :func:`scale_indices` — questionnaire scales (GRM + WLE) into indices.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # calibration
    "calibrate": "calibration", "Calibration": "calibration", "CalibrationError": "calibration",
    "ConvergenceError": "calibration", "latent_log_weights": "calibration", "s_x2": "calibration", "infit_outfit": "calibration",
    # persons
    "score": "persons", "plausible_values": "persons", "eap_sum_score_table": "persons", "ScoringError": "persons",
    # models
    "get_model": "models", "register_model": "models", "ItemModel": "models", "Rasch": "models", "TwoPL": "models",
    "ThreePL": "models", "Graded": "models", "GPCM": "models", "PCM": "models", "NormalPrior": "models",
    "LogNormalPrior": "models", "BetaPrior": "models", "LogitNormalPrior": "models", "item_table": "models",
    "models_from_table": "models", "probabilities": "models", "expected_scores": "models",
    "test_characteristic_curve": "models", "information": "models", "simulate": "models",
    # classical items and DIF
    "item_analysis": "items", "ItemAnalysis": "items", "cronbach_alpha": "items", "dif": "items", "dif_by": "items",
    "DIFResult": "items", "mantel_haenszel": "items", "DEFAULT_FLAG_RULES": "items", "ItemAnalysisError": "items", "DIFError": "items",
    # linking
    "link": "linking", "LinkingResult": "linking", "linking_constants": "linking", "anchor_drift": "linking",
    "shift_linking_error": "linking", "transform_items": "linking", "fixed_anchor": "linking", "LinkingError": "linking",
    # levels
    "ReportingScale": "levels", "assign_levels": "levels", "level_table": "levels", "level_descriptors": "levels",
    "level_numbers": "levels", "level_shares": "levels", "rp_locations": "levels", "ordered_item_booklet": "levels",
    "bookmark_cuts": "levels", "classification_accuracy": "levels", "ClassificationAccuracy": "levels",
    "LEVEL_LABELS": "levels", "LEVEL_DESCRIPTORS": "levels", "LEVEL_NAMES_EN": "levels", "LEVEL_DTYPE": "levels",
    "DEFAULT_CUTS": "levels", "LevelError": "levels",
    # a monitoring year end to end, and questionnaire indices
    "ScoringSpec": "workflow", "TestResult": "workflow", "YearScores": "workflow", "score_test": "workflow",
    "score_year": "workflow", "background_variables": "workflow", "write_year": "workflow", "read_bases": "workflow",
    "scale_indices": "questionnaire", "QuestionnaireScales": "questionnaire", "STUDENT_SCALES": "questionnaire",
    "TEACHER_SCALES": "questionnaire", "PRINCIPAL_SCALES": "questionnaire",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qualmon.scoring' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qualmon.scoring.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
