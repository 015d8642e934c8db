"""Shared test configuration: Hypothesis profiles chosen by VEIL_HYPOTHESIS_PROFILE (fast, slow)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("VEIL_HYPOTHESIS_PROFILE", "fast"))
