"""Bounded, deterministic hypothesis runs: the same examples on every run (derandomize,
no example database), a fixed number of examples per test, no deadline (the machine is
shared: a slow example is not a failure)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "amihub-fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("amihub-fuzz")
