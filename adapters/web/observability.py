"""``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/metrics`` is this process's own metrics (hub/metrics.py, the web server's request
histogram, prometheus-client's process collector) followed by the figures every process
shares, read from the store when scraped (:class:`StoreCollector`): messages in the
message log by interface, verb, noun and result; the outbox backlog; head-end jobs by
kind and state; DLMS security events; open dead letters; stored readings; and, with
``[amqp]`` enabled, the depth of the request and dead-letter queues.

``/healthz``: the process answers (liveness). ``/readyz``: the store answers, its schema
is at the migrations' head, and the broker answers when ``[amqp]`` is enabled; 503 with
the failing check otherwise (readiness: a load balancer takes the process out).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from hub.metrics import LATENCY_BUCKETS
from mdm.views import OperatorViews

if TYPE_CHECKING:
    from hub.settings import Settings

log = logging.getLogger("amihub.web")

HTTP_SECONDS = Histogram(
    "amihub_http_request_seconds",
    "Time the web server took for a request, by route, method and status",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting in the request and dead-letter queues (passive declares)."""
    from adapters.amqp.connection import make_connection

    amqp = settings.amqp
    names = [amqp.request_queue, amqp.dead_letter_queue]
    depths: dict[str, int] = {}
    with make_connection(amqp, "amihub-metrics") as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        try:
            for name in names:
                try:
                    _, count, _ = channel.queue_declare(queue=name, passive=True)
                    depths[name] = int(count)
                except Exception:
                    channel = conn.channel()
        finally:
            channel.close()
    return depths


class StoreCollector(Collector):
    def __init__(self, views: OperatorViews, settings: Settings) -> None:
        self.views = views
        self.settings = settings

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("amihub_store_up", "1 if the store answered this scrape")
        try:
            figures = self.views.figures()
        except Exception:
            log.exception("metrics: the store did not answer")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        messages = GaugeMetricFamily(
            "amihub_logged_messages",
            "Messages in the message log (every process), by interface, verb, noun, result",
            labels=["interface", "verb", "noun", "result"],
        )
        for key, count in sorted(figures.messages.items()):
            messages.add_metric(list(key), count)
        yield messages
        outbox = GaugeMetricFamily(
            "amihub_outbox_backlog",
            "Outbox items not delivered, by channel and state (pending, dead)",
            labels=["channel", "state"],
        )
        for pair, count in sorted(figures.outbox.items()):
            outbox.add_metric(list(pair), count)
        yield outbox
        jobs = GaugeMetricFamily(
            "amihub_hes_jobs", "Head-end jobs by kind and state", labels=["kind", "state"]
        )
        for kind_state, count in sorted(figures.jobs.items()):
            jobs.add_metric(list(kind_state), count)
        yield jobs
        security = GaugeMetricFamily(
            "amihub_dlms_security_events",
            "DLMS security events stored (association refused, bad tag, replay, ...), by type",
            labels=["event_type"],
        )
        for etype, count in sorted(figures.security_events.items()):
            security.add_metric([etype], count)
        yield security
        yield GaugeMetricFamily(
            "amihub_dead_letters_open", "Dead letters not resolved", value=figures.dead_letters_open
        )
        yield GaugeMetricFamily(
            "amihub_readings_stored",
            "Readings stored, current versions (PostgreSQL: the planner's estimate)",
            value=figures.readings,
        )
        if self.settings.amqp.enabled:
            depth = GaugeMetricFamily(
                "amihub_amqp_queue_depth", "Messages waiting in a queue", labels=["queue"]
            )
            broker = GaugeMetricFamily("amihub_amqp_up", "1 if the broker answered this scrape")
            try:
                for name, count in queue_depths(self.settings).items():
                    depth.add_metric([name], count)
                broker.add_metric([], 1)
            except Exception:
                log.warning("metrics: the broker did not answer", exc_info=True)
                broker.add_metric([], 0)
            yield depth
            yield broker
        yield GaugeMetricFamily(
            "amihub_store_scrape_seconds",
            "Time this scrape took to read the store's figures",
            value=time.perf_counter() - started,
        )


class Exposition:
    """The text of ``/metrics``: the process's registry, then the store's figures."""

    def __init__(self, views: OperatorViews, settings: Settings) -> None:
        self.store = CollectorRegistry(auto_describe=False)
        self.store.register(StoreCollector(views, settings))

    def render(self) -> bytes:
        return bytes(generate_latest(REGISTRY)) + bytes(generate_latest(self.store))


@functools.cache
def _head() -> str:
    """The migrations' head, read once a process (its scripts ship with its code)."""
    from adapters.sql.migrate import head_revision

    return head_revision()


def readiness(views: OperatorViews, settings: Settings, engine: Any) -> dict[str, str]:
    """Each check's result: "ok" or what failed."""
    from adapters.sql.migrate import current_revision

    checks: dict[str, str] = {}
    try:
        views.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {exc}"
    if checks["database"] == "ok":
        try:
            current, head = current_revision(engine), _head()
            checks["migrations"] = (
                "ok" if current == head else f"schema at {current}, migrations at {head}"
            )
        except Exception as exc:
            checks["migrations"] = f"unknown: {exc}"
    else:
        checks["migrations"] = "unknown: no database"
    if settings.amqp.enabled:
        from adapters.amqp.connection import make_connection

        try:
            with make_connection(settings.amqp, "amihub-readyz") as conn:
                conn.ensure_connection(max_retries=1)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {exc}"
    return checks
