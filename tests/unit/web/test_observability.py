"""/metrics scraped over HTTP and parsed with prometheus-client's parser; /healthz and
/readyz against a ready store, an unmigrated one and a broker that is not there; JSON
log lines carrying the request's and the action's ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from adapters.web.service import WebService
from hub.bootstrap import bootstrap
from hub.logs import JsonFormatter
from hub.settings import Settings
from tests.conftest import free_port
from tests.unit.web.conftest import Site, dead_letter, load_day, web_settings


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric sample name -> labels -> value."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def value(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_count_messages_readings_jobs_and_latency(site: Site) -> None:
    before = scrape(site.url)
    load_day(site)  # two MeterReadings messages: 96 + 1 readings, then 2 superseded
    dead_letter(site)
    s = site.session()
    meter = site.meters[0]
    job = s.post(f"{site.url}/api/meters/{meter}/disconnect", json={"reason": "metrics"}).json()
    from tests.unit.web.conftest import until

    until(lambda: s.get(f"{site.url}/api/jobs/{job['job']}").json()["state"] == "succeeded")
    read = s.post(f"{site.url}/api/meters/{site.meters[2]}/read", json={"hours": 1}, timeout=30)
    assert read.json()["result"] == "OK", read.text

    after = scrape(site.url)
    # this process's counters: by interface (the memory adapter is "memory"), verb, noun, result
    grew = value(
        after,
        "amihub_messages_total",
        interface="memory",
        verb="created",
        noun="MeterReadings",
        result="OK",
    ) - value(
        before,
        "amihub_messages_total",
        interface="memory",
        verb="created",
        noun="MeterReadings",
        result="OK",
    )
    assert grew == 1
    partial = value(
        after,
        "amihub_messages_total",
        interface="memory",
        verb="created",
        noun="MeterReadings",
        result="PARTIAL",
    ) - value(
        before,
        "amihub_messages_total",
        interface="memory",
        verb="created",
        noun="MeterReadings",
        result="PARTIAL",
    )
    assert partial == 1
    web_controls = value(
        after,
        "amihub_messages_total",
        interface="web",
        verb="create",
        noun="EndDeviceControls",
        result="OK",
    )
    assert web_controls >= 1
    ingested = value(after, "amihub_readings_ingested_total", interface="memory") - value(
        before, "amihub_readings_ingested_total", interface="memory"
    )
    assert ingested == 97 + 2 + 5  # the day, two corrections, the known meter of the dead letter
    assert value(after, "amihub_meter_reads_total", outcome="done") >= 1
    assert (
        value(after, "amihub_control_jobs_total", control_type="3.31.0.23", state="succeeded") >= 1
    )
    # latencies as histograms
    assert (
        value(after, "amihub_message_seconds_count", interface="web", noun="EndDeviceControls") >= 1
    )
    assert (
        value(
            after,
            "amihub_message_seconds_bucket",
            interface="web",
            noun="EndDeviceControls",
            le="+Inf",
        )
        >= 1
    )
    assert (
        value(
            after,
            "amihub_http_request_seconds_count",
            route="/api/meters/<mrid>/disconnect",
            method="POST",
            status="202",
        )
        >= 1
    )
    # the store's figures, shared by every process
    assert value(after, "amihub_store_up") == 1
    assert (
        value(
            after,
            "amihub_logged_messages",
            interface="memory",
            verb="created",
            noun="MeterReadings",
            result="PARTIAL",
        )
        == 1
    )
    assert value(after, "amihub_hes_jobs", kind="control", state="succeeded") == 1
    assert value(after, "amihub_dead_letters_open") == 1
    assert value(after, "amihub_readings_stored") >= 97
    assert value(after, "amihub_outbox_backlog", channel="amqp", state="pending") == 0


def test_security_events_are_counted(site: Site) -> None:
    from datetime import UTC, datetime

    from hub.samples import end_device_events

    refused = {"meter": site.meters[0], "type": "3.12.24.85", "at": datetime.now(UTC)}
    sent = site.send(end_device_events("created", [{**refused, "mrid": "SEC-1"}]))
    assert sent.result == "OK", sent.errors
    after = scrape(site.url)
    assert value(after, "amihub_dlms_security_events", event_type="3.12.24.85") == 1


def test_health_and_readiness(site: Site) -> None:
    assert requests.get(f"{site.url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{site.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"database": "ok", "migrations": "ok"}}


def _unmigrated(tmp_path: Path) -> Iterator[str]:
    settings = web_settings(f"sqlite:///{tmp_path / 'empty.db'}")
    app = bootstrap(settings)  # not migrated
    service = WebService(app)
    service.start()
    try:
        yield f"http://127.0.0.1:{service.port}"
    finally:
        service.stop()
        app.close()


def test_readiness_refuses_a_store_behind_its_migrations(tmp_path: Path) -> None:
    for url in _unmigrated(tmp_path):
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["migrations"].startswith("schema at None, migrations at ")
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def _with_broker(sqlite_url: str, amqp: str) -> Iterator[str]:
    settings: Settings = web_settings(sqlite_url)
    settings = settings.model_copy(
        update={
            "amqp": settings.amqp.model_copy(
                update={"enabled": True, "url": amqp, "connect_timeout": 2.0}
            )
        }
    )
    app = bootstrap(settings, migrate=True)
    service = WebService(app)
    service.start()
    try:
        yield f"http://127.0.0.1:{service.port}"
    finally:
        service.stop()
        app.close()


def test_readiness_names_a_broker_that_does_not_answer(sqlite_url: str) -> None:
    for url in _with_broker(sqlite_url, f"amqp://guest:guest@127.0.0.1:{free_port()}//"):
        ready = requests.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"].startswith("unreachable")
        samples = scrape(url)
        assert value(samples, "amihub_amqp_up") == 0


@pytest.mark.rabbitmq
def test_readiness_and_queue_depth_with_the_broker(sqlite_url: str, amqp_url: str) -> None:
    for url in _with_broker(sqlite_url, amqp_url):
        ready = requests.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["broker"] == "ok"
        samples = scrape(url)
        assert value(samples, "amihub_amqp_up") == 1


def test_json_logs_carry_the_request_and_action_ids(site: Site) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    web_logger = logging.getLogger("amihub")
    web_logger.addHandler(handler)
    level = web_logger.level
    web_logger.setLevel(logging.INFO)
    site.web.settings.access_log = True
    try:
        s = site.session()
        answer = s.post(
            f"{site.url}/api/meters/{site.meters[1]}/disconnect",
            json={"reason": "logs"},
            headers={"X-Request-ID": "req-42"},
            timeout=10,
        )
        assert answer.headers["X-Request-ID"] == "req-42"
        job = answer.json()["job"]
    finally:
        web_logger.removeHandler(handler)
        web_logger.setLevel(level)
        site.web.settings.access_log = False
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    access = [x for x in lines if x["logger"] == "amihub.web.access"]
    assert access
    assert access[-1]["request_id"] == "req-42"
    assert "POST" in access[-1]["message"]
    acting = [x for x in lines if x.get("action_id") == job]
    assert acting, lines  # the pipeline's lines while it handled the control
    assert all(x["request_id"] == "req-42" for x in acting)
