"""The one retry backoff (mdm.backoff): doubling, capped, one jitter rule."""

from __future__ import annotations

import random

import pytest

from hes.engine import EnginePolicy
from hub.outbox import RetryPolicy
from mdm.backoff import Backoff


def test_delays_double_from_the_first_up_to_the_maximum() -> None:
    exact = Backoff(0.5, 3.0, jitter=0)
    assert [exact.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert Backoff(1.0, 600.0, jitter=0).delay(10_000) == 600.0  # no overflow


def test_jitter_takes_off_up_to_its_share_never_adds() -> None:
    random.seed(11)
    policy = Backoff(1.0, 60.0)  # default jitter: up to half
    for failures in range(1, 9):
        nominal = policy.nominal(failures)
        delays = [policy.delay(failures) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal / 4  # really spread
    narrow = Backoff(10.0, 60.0, jitter=0.1)
    assert all(9.0 <= narrow.delay(1) <= 10.0 for _ in range(100))


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter=1.5)
    with pytest.raises(ValueError, match="negative"):
        Backoff(-1.0, 2.0)
    with pytest.raises(ValueError, match="at least 1"):
        Backoff(1.0, 2.0).delay(0)


def test_the_configured_policies_are_this_one() -> None:
    """The outbox's and the head-end's settings give the same delays as the policy."""
    assert [RetryPolicy(first_delay=2, max_delay=5, jitter=0).delay(n) for n in (1, 2, 3)] == [
        2.0,
        4.0,
        5.0,
    ]
    engine = EnginePolicy(backoff_base=0.2, backoff_max=0.5).backoff
    assert engine == Backoff(0.2, 0.5)
    assert all(0.1 <= engine.delay(1) <= 0.2 for _ in range(50))
