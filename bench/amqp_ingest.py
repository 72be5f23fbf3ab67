"""Issue 4: CreateMeterReadings through RabbitMQ into PostgreSQL, acked after commit.

Each message is one meter-day (96 quarter-hour readings, ~12 KB). In the same
run and on the same broker:

* raw: a plain kombu consume-and-ack loop of the same messages (no processing),
  prefetch as amihub's;
* the adapter alone: amihub's consumer with a stub pipeline (no store): batches,
  replies with batched publisher confirms, acks; the ceiling the pipeline works under;
* amihub, 1 worker: ``amihub serve`` (a separate process) consuming the request
  queue: batch of deliveries -> pipeline (parse, XSD, store, message log, stored
  reply, commit) -> replies with one batch of publisher confirms -> ack;
* amihub, N workers: ``amihub serve --workers N`` on the same queue.

Every line shows the load average; the amihub lines also the CPU per message of
the worker processes and of the PostgreSQL backends serving the bench database,
sampled while the queue drains (from the first reply to the last; steadier than the
rate on a shared machine), and the workers' peak resident memory.

The queue is filled before the consumer starts. amihub's rate is measured in
the store: messages / (last commit - first receipt) over the message log, so
process start-up is not counted; the run also waits until the queue is empty
(every message acked) and checks every reading was stored.

Usage: ``python -m bench.amqp_ingest [--messages N] [--workers N] [--prefetch N]
[--only-one]``
(RabbitMQ: ``AMIHUB_BENCH_AMQP_URL`` or ``AMIHUB_TEST_AMQP_URL``, default guest@127.0.0.1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import plain, scratch_database

AMQP_URL = os.environ.get(
    "AMIHUB_BENCH_AMQP_URL",
    os.environ.get("AMIHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
)
START = datetime(2026, 1, 1, tzinfo=UTC)
PER_DAY = 96
METERS = 500
TARGET = 1500  # messages/s with one worker
BATCH = 256  # deliveries a round (amihub caps it at half the prefetch to overlap rounds)


def meter_name(n: int) -> str:
    return f"BM{n:07d}"  # as bench.ingest_cim.prepare creates them


def messages(count: int) -> list[bytes]:
    from hub.samples import meter_readings_bytes

    return [
        meter_readings_bytes(
            [meter_name(n % METERS)],
            START + timedelta(days=n // METERS),
            PER_DAY,
            verb="create",
            registers=False,
        )
        for n in range(count)
    ]


def publish(
    url: str, exchange: str, routing_key: str, bodies: list[bytes], reply_to: str | None = None
) -> float:
    from kombu import Connection, Producer

    with Connection(url) as conn:
        producer = Producer(conn.channel(), auto_declare=False)
        t0 = time.perf_counter()
        for body in bodies:
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                content_type="application/xml",
                content_encoding="binary",
                delivery_mode=2,
                message_id=str(uuid.uuid4()),
                **({"reply_to": reply_to} if reply_to else {}),
            )
        return time.perf_counter() - t0


def raw_consume(url: str, bodies: list[bytes], prefetch: int) -> float:
    """Baseline: fill a queue, then consume and ack every message; messages/s."""
    from kombu import Connection, Consumer, Queue

    name = f"bench.raw.{uuid.uuid4().hex[:8]}"
    with Connection(url) as conn:
        channel = conn.channel()
        queue = Queue(name, durable=True)(channel)
        queue.declare()
        publish(url, "", name, bodies)
        received = 0

        def on_message(message: object) -> None:
            nonlocal received
            message.ack()  # type: ignore[attr-defined]
            received += 1

        channel.basic_qos(0, prefetch, False)
        consumer = Consumer(channel, queues=[queue], on_message=on_message, auto_declare=False)
        consumer.consume()
        t0 = time.perf_counter()
        while received < len(bodies):
            conn.drain_events(timeout=30)
        elapsed = time.perf_counter() - t0
        consumer.cancel()
        queue.delete()
    return len(bodies) / elapsed


def _cpu(procs: list[Any]) -> float:
    """User + system CPU seconds of processes still running (gone ones count 0)."""
    import psutil

    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _rss(procs: list[Any]) -> int:
    """Resident bytes of the processes still running."""
    import psutil

    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _workers(pid: int) -> list[Any]:
    """The ``amihub serve`` process and its worker children."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _backends(pg: Any, database: str) -> list[Any]:
    """The PostgreSQL server processes serving ``database`` (the workers' connections)."""
    import psutil

    rows = pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    out = []
    for (pid,) in rows:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


def amihub_run(url: str, bodies: list[bytes], workers: int, prefetch: int) -> dict[str, float]:
    """Fill the request queue, start ``amihub serve --workers N``, wait until all is stored.

    Besides the rate, CPU per message is sampled while the queue drains (from the
    first reply to the last, progress read from the reply queue): the worker
    processes', and that of the PostgreSQL backends serving the bench database; both
    are steadier than the rate on a shared machine.
    """
    import psycopg
    from kombu import Connection

    from adapters.amqp.topology import Topology
    from bench.ingest_cim import prepare
    from hub.settings import AmqpSettings

    tag = uuid.uuid4().hex[:8]
    settings = AmqpSettings(
        enabled=True,
        url=url,
        request_exchange=f"bench.{tag}.requests",
        request_queue=f"bench.{tag}.requests",
        events_exchange=f"bench.{tag}.events",
        dead_letter_exchange=f"bench.{tag}.dead-letter",
        dead_letter_queue=f"bench.{tag}.dead-letter",
        prefetch=prefetch,
        batch_size=BATCH,
    )
    topology = Topology.from_settings(settings)
    with scratch_database("amihub_bench_amqp") as db, Connection(url) as conn:
        prepare(db, METERS * PER_DAY)
        topology.declare(conn)
        replies = f"{settings.request_queue}.replies"
        conn.channel().queue_declare(replies, durable=True, auto_delete=False)
        publish(url, settings.request_exchange, "create.MeterReadings", bodies, replies)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")}
        env.update(
            {
                "AMIHUB_DATABASE_URL": db,
                "AMIHUB_LOG_LEVEL": "WARNING",
                "AMIHUB_CONFIG": "",  # empty: no settings file
            }
        )
        for key, value in settings.model_dump(exclude={"partners", "tls", "password"}).items():
            if value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"AMIHUB_AMQP__{key.upper()}"] = text
        command = [sys.executable, "-m", "hub.cli", "serve", "--workers", str(workers)]
        proc = subprocess.Popen(command, env=env)
        database = db.rsplit("/", 1)[-1]
        try:
            with psycopg.connect(plain(db), autocommit=True) as pg:
                # progress from the reply queue's depth (one reply a message): a passive
                # declare costs the broker next to nothing, where counting the message log
                # every 50 ms cost PostgreSQL about 0.04 of a core beside the worker
                watch = conn.channel()
                deadline = time.monotonic() + 600
                first: tuple[int, float, float] | None = None  # replied, worker CPU, PG CPU
                procs: list[Any] = []
                backends: list[Any] = []
                done = 0
                peak_rss = 0
                while time.monotonic() < deadline:
                    done = int(watch.queue_declare(replies, passive=True).message_count)
                    if first is None and done:
                        procs, backends = _workers(proc.pid), _backends(pg, database)
                        first = (done, _cpu(procs), _cpu(backends))
                    peak_rss = max(peak_rss, _rss(procs))
                    if done >= len(bodies):
                        break
                    time.sleep(0.1)
                last = (done, _cpu(procs), _cpu(backends))
                window = pg.execute(
                    "SELECT count(*), extract(epoch FROM max(updated_at) - min(received_at)) "
                    "FROM message_log WHERE state = 'replied'"
                ).fetchone()
                stored = pg.execute("SELECT count(*) FROM reading").fetchone()
            channel = conn.channel()
            for _ in range(100):  # every message acked
                _, depth, _ = channel.queue_declare(settings.request_queue, passive=True)
                if depth == 0:
                    break
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            with Connection(url) as c:
                ch = c.channel()
                for q in (settings.request_queue, settings.dead_letter_queue, replies):
                    ch.queue_delete(q)
                for x in (settings.request_exchange, settings.events_exchange):
                    ch.exchange_delete(x)
                ch.exchange_delete(settings.dead_letter_exchange)
    assert window is not None
    assert stored is not None
    count, seconds = int(window[0]), float(window[1])
    if count != len(bodies) or stored[0] != len(bodies) * PER_DAY:
        raise SystemExit(f"incomplete: {count} messages, {stored[0]} readings stored")
    assert first is not None
    measured = max(1, last[0] - first[0])
    return {
        "messages": count,
        "seconds": seconds,
        "rate": count / seconds,
        "depth": depth,
        "worker_ms": (last[1] - first[1]) * 1000 / measured,
        "postgres_ms": (last[2] - first[2]) * 1000 / measured,
        "peak_rss_mb": peak_rss / 1e6,
    }


class _StubPipeline:
    """Answers at once without the store: what the adapter alone costs."""

    def __init__(self) -> None:
        from hub.messages import Outcome

        self.outcome = Outcome(result="OK", reply=b"<ReplyMessage/>")

    def process(self, msg: object) -> object:
        return self.outcome


def adapter_only(url: str, bodies: list[bytes], prefetch: int) -> float:
    """The consumer with a stub pipeline, in this process: consume, reply (confirmed), ack."""
    from adapters.amqp.service import AmqpService
    from adapters.amqp.topology import Topology
    from hub.bootstrap import bootstrap
    from hub.settings import AmqpSettings, load_settings

    tag = uuid.uuid4().hex[:8]
    settings = AmqpSettings(
        enabled=True,
        url=url,
        request_exchange=f"bench.{tag}.requests",
        request_queue=f"bench.{tag}.requests",
        events_exchange=f"bench.{tag}.events",
        dead_letter_exchange=f"bench.{tag}.dead-letter",
        dead_letter_queue=f"bench.{tag}.dead-letter",
        prefetch=prefetch,
        batch_size=BATCH,
        outbox=False,
    )
    replies = f"{settings.request_queue}.replies"
    with tempfile.TemporaryDirectory() as tmp:
        app = bootstrap(
            load_settings(database_url=f"sqlite:///{tmp}/stub.db", amqp=settings), migrate=True
        )
        app.pipeline = _StubPipeline()  # type: ignore[assignment]
        from kombu import Connection

        with Connection(url) as conn:
            Topology.from_settings(settings).declare(conn)
            conn.channel().queue_declare(replies, durable=True, auto_delete=False)
            publish(url, settings.request_exchange, "create.MeterReadings", bodies, replies)
            service = AmqpService(app)
            t0 = time.perf_counter()
            service.start()
            while service.consumer.handled < len(bodies):
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            service.stop()
            ch = conn.channel()
            for q in (settings.request_queue, settings.dead_letter_queue, replies):
                ch.queue_delete(q)
            for x in (settings.request_exchange, settings.events_exchange):
                ch.exchange_delete(x)
            ch.exchange_delete(settings.dead_letter_exchange)
        app.close()
    return len(bodies) / elapsed


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.amqp_ingest")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="the second amihub figure")
    parser.add_argument("--prefetch", type=int, default=1024)
    parser.add_argument(
        "--only-one", action="store_true", help="only the 1-worker figure (quick runs)"
    )
    args = parser.parse_args(argv)
    bodies = messages(args.messages)
    size = sum(map(len, bodies)) / len(bodies)
    print(
        f"{len(bodies):,} CreateMeterReadings messages of one meter-day ({PER_DAY} readings, "
        f"{size / 1000:.1f} KB each), RabbitMQ {AMQP_URL.rsplit('@', 1)[-1]}, prefetch "
        f"{args.prefetch}, {os.cpu_count()} cores; {_load()}"
    )
    only_one = args.only_one
    figures: dict[str, float] = {}
    if not only_one:
        raw = figures["raw"] = raw_consume(AMQP_URL, bodies, args.prefetch)
        print(f"raw kombu consume + ack (no processing):      {raw:>9,.0f} messages/s  ({_load()})")
        stub = figures["stub"] = adapter_only(AMQP_URL, bodies, args.prefetch)
        print(
            f"amihub adapter, stub pipeline (reply + ack):  {stub:>9,.0f} messages/s  "
            f"ratio to raw {stub / raw:.2f}  ({_load()})"
        )
    runs = [1] if only_one else [1, args.workers]
    for workers in runs:
        run = amihub_run(AMQP_URL, bodies, workers, args.prefetch)
        figures[f"workers_{workers}"] = run["rate"]
        figures[f"workers_{workers}_cpu_ms"] = run["worker_ms"]
        figures[f"workers_{workers}_postgres_ms"] = run["postgres_ms"]
        figures[f"workers_{workers}_rss_mb"] = run["peak_rss_mb"]
        label = f"amihub, {workers} worker{'s' if workers > 1 else ''}:"
        print(
            f"{label:<46}{run['rate']:>9,.0f} messages/s = {run['rate'] * PER_DAY:,.0f} "
            f"readings/s ({run['messages']:,} in {run['seconds']:.2f} s)  ({_load()})"
        )
        bound = (
            f" (= at most {1000 / max(run['worker_ms'], 1e-9):,.0f} messages/s on one core)"
            if workers == 1
            else " (all workers)"
        )
        print(
            f"{'':<46}CPU per message: workers {run['worker_ms']:.3f} ms, PostgreSQL "
            f"backends {run['postgres_ms']:.3f} ms{bound}; peak RSS of the worker"
            f"{'s' if workers > 1 else ''} {run['peak_rss_mb']:,.0f} MB"
        )
    one = figures["workers_1"]
    if not only_one:
        many = figures[f"workers_{args.workers}"]
        print(
            f"ratio amihub 1 worker / raw: {one / figures['raw']:.3f}; "
            f"{args.workers} workers / 1 worker: {many / one:.2f}"
        )
    print(
        f"target: >= {TARGET:,} messages/s with 1 worker: "
        f"{'met' if one >= TARGET else 'not met'} ({one:,.0f})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
