"""Scoring: item analysis, IRT calibration, person scores, linking, proficiency levels."""
