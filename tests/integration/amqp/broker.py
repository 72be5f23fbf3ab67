"""What the broker itself says about a queue: ready and unacknowledged messages, queue
types, in the vhost of the test's AMQP URL (``rabbitmqctl``, no management plugin)."""

from __future__ import annotations

import subprocess

from kombu import Connection


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names (``amqp://u:p@h:5672//`` is ``/``)."""
    return str(Connection(url).virtual_host)  # parsed only: nothing connects


def list_queues(url: str, *columns: str) -> dict[str, list[str]]:
    """``rabbitmqctl list_queues name <columns>`` in the URL's vhost: name -> columns."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost_of(url), "name", *columns],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = (line.split("\t") for line in out.splitlines() if "\t" in line)
    return {row[0]: row[1:] for row in rows if row[0] != "name"}


def ready_and_unacked(url: str, queue: str) -> tuple[int, int]:
    """The queue's (messages ready, messages delivered and not acknowledged)."""
    ready, unacked = list_queues(url, "messages_ready", "messages_unacknowledged")[queue]
    return int(ready), int(unacked)
