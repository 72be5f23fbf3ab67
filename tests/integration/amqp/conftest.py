"""RabbitMQ fixtures: the service in-process or as ``amihub serve`` worker processes.

Every test gets exchange and queue names of its own (``unique_settings``) and
deletes them afterwards, so tests never see each other's messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.amqp.mapping import MappingImporter
from adapters.amqp.service import AmqpService
from hub.bootstrap import App
from hub.settings import AmqpSettings
from tests.unit.amqp.partner import Partner, unique_settings
from tests.unit.hub.conftest import add_meters, make_app

Start = Callable[..., tuple[AmqpService, Partner]]
REPO = Path(__file__).resolve().parents[3]


def delete_topology(partner: Partner) -> None:
    s = partner.settings
    channel = partner.channel
    partner_queues = [p.queue_name for p in s.partners]
    for queue in (s.request_queue, s.dead_letter_queue, partner.reply_queue, *partner_queues):
        channel.queue_delete(queue)
    for exchange in (s.request_exchange, s.events_exchange, s.dead_letter_exchange):
        channel.exchange_delete(exchange)


@pytest.fixture
def sqlite_app(sqlite_url: str) -> Iterator[App]:
    app = make_app(sqlite_url)
    add_meters(app, "MTR-1", "MTR-2")
    yield app
    app.close()


@pytest.fixture(params=[True, False], ids=["buffered-reader", "py-amqp-reader"])
def rabbit(amqp_url: str, request: pytest.FixtureRequest) -> Iterator[Start]:
    """Starts the AMQP service against RabbitMQ, and a partner on the same names; each
    test runs with amihub's buffered frame reader and with py-amqp's own
    (``[amqp] buffered_reader``)."""
    started: list[tuple[AmqpService, Partner]] = []

    def start(
        app: App, importer: MappingImporter | None = None, **overrides: Any
    ) -> tuple[AmqpService, Partner]:
        overrides.setdefault("buffered_reader", request.param)
        settings = unique_settings(amqp_url, **overrides)
        app.settings = app.settings.model_copy(update={"amqp": settings})
        service = AmqpService(app, importer=importer)
        service.start()
        assert service.wait_consuming(15), "the consumer did not connect to RabbitMQ"
        partner = Partner(settings)
        started.append((service, partner))
        return service, partner

    yield start
    for service, partner in started:
        service.stop()
        delete_topology(partner)
        partner.close()


def worker_env(settings: AmqpSettings, database_url: str) -> dict[str, str]:
    """The environment of an ``amihub serve`` process on these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")}
    env.update(
        {
            "AMIHUB_DATABASE_URL": database_url,
            "AMIHUB_CONFIG": "",  # empty: no settings file
            "AMIHUB_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
        }
    )
    for name, value in settings.model_dump(exclude={"partners", "tls", "password"}).items():
        if value is None:
            continue
        if isinstance(value, list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        env[f"AMIHUB_AMQP__{name.upper()}"] = text
    return env


class Workers:
    """``amihub serve`` processes started by a test, stopped (by pid) at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, settings: AmqpSettings, database_url: str, workers: int = 1) -> Any:
        with (self.tmp_path / f"worker-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "serve", "--workers", str(workers)],
                env=worker_env(settings, database_url),
                cwd=self.tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp_path.glob("worker-*.log"))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop_all()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
