"""Shared fixtures: synthetic provinces built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def small_province():
    """Six years (two cycles) at 5 % of the students: quick, with linked cohorts."""
    from qualmon.synth import province

    return province(seed=5, scale=0.05)


@pytest.fixture(scope="session")
def full_year():
    """One year of the whole province at full size (about 1.6 million students)."""
    from qualmon.synth import province

    return province(seed=11, years=(2024,))


# Property tests: the default profile replays the same examples on every run, so
# CI is reproducible; `pytest --hypothesis-profile=explore` searches afresh.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("default", derandomize=True)
_hyp_settings.register_profile("explore", derandomize=False)
_hyp_settings.load_profile("default")
