"""What this process counts for Prometheus (``/metrics`` of the web server, adapters/web).

These are the process's own counters and histograms (prometheus-client's default
registry): messages the pipeline processed by interface, verb, noun and result, with
their latency; readings ingested; meter reads by outcome. Several processes (``serve
--workers``, engines) each count their own; the figures every process shares (message
log, outbox backlog, jobs, security events, dead letters) are read from the store when
scraped (adapters/web/metrics.py). Creating the metrics connects to nothing.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from hub.messages import InboundMessage, Outcome

#: seconds; a meter-day get is ~2 ms, a large import minutes
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)

MESSAGES: Final = Counter(
    "amihub_messages_total",
    "Messages the pipeline processed in this process",
    ["interface", "verb", "noun", "result"],
)
MESSAGE_SECONDS: Final = Histogram(
    "amihub_message_seconds",
    "Time the pipeline took for one message",
    ["interface", "noun"],
    buckets=LATENCY_BUCKETS,
)
READINGS_INGESTED: Final = Counter(
    "amihub_readings_ingested_total",
    "Readings stored (new or superseding a version) by messages of this process",
    ["interface"],
)
METER_READS: Final = Counter(
    "amihub_meter_reads_total",
    "Meters read through the head-end by this process, by outcome (done, partial, failed)",
    ["outcome"],
)
CONTROL_JOBS: Final = Counter(
    "amihub_control_jobs_total",
    "Control jobs this process finished, by control type and final state",
    ["control_type", "state"],
)

_WRITES: Final = frozenset({"create", "created", "change", "changed"})


def interface_of(endpoint: str) -> str:
    """``soap:/ws/...`` -> ``soap``; ``amqp:...`` -> ``amqp``."""
    return endpoint.partition(":")[0] or "unknown"


def observe_message(msg: InboundMessage, outcome: Outcome | None, seconds: float) -> None:
    """Count one processed message (``outcome`` None: it raised, counted as ``error``)."""
    interface = interface_of(msg.endpoint)
    if outcome is None:
        MESSAGES.labels(interface, "", "", "error").inc()
        MESSAGE_SECONDS.labels(interface, "").observe(seconds)
        return
    noun = outcome.noun or ""
    MESSAGES.labels(interface, outcome.verb or "", noun, outcome.result).inc()
    MESSAGE_SECONDS.labels(interface, noun).observe(seconds)
    if noun == "MeterReadings" and outcome.verb in _WRITES and not outcome.duplicate:
        stored = outcome.counts.get("stored", 0) + outcome.counts.get("superseded", 0)
        if stored:
            READINGS_INGESTED.labels(interface).inc(stored)
