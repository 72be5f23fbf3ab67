"""``amihub serve``'s process settings: the garbage collector's thresholds while the
services run, and Python's own again after they stop."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from cim_schemas.errors import ConfigurationError
from hub.bootstrap import App
from hub.serve import run_services
from hub.settings import load_settings
from tests.unit.amqp.partner import unique_settings


def test_services_run_with_the_configured_gc_thresholds(hub_app: App) -> None:
    before = gc.get_threshold()
    hub_app.settings = hub_app.settings.model_copy(
        update={"amqp": unique_settings("memory://"), "gc_thresholds": (12_345, 7, 3)}
    )
    stop = threading.Event()
    runner = threading.Thread(target=run_services, args=(hub_app, stop))
    runner.start()
    try:
        deadline = time.monotonic() + 10  # the thresholds are set before the services start
        while gc.get_threshold() != (12_345, 7, 3) and time.monotonic() < deadline:
            time.sleep(0.01)
        running = gc.get_threshold()
    finally:
        stop.set()
        runner.join(20)
    assert running == (12_345, 7, 3)
    assert gc.get_threshold() == before


def test_gc_thresholds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIHUB_GC_THRESHOLDS", "[20000, 10, 5]")
    assert load_settings().gc_thresholds == (20_000, 10, 5)
    monkeypatch.setenv("AMIHUB_GC_THRESHOLDS", "[0, 10, 5]")
    with pytest.raises(ConfigurationError, match="gc_thresholds"):
        load_settings()
