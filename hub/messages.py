"""What adapters hand the hub, and what they get back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cim_schemas.errors import ErrorDetail
from hub.security import Principal


@dataclass(frozen=True)
class ReplyRoute:
    """How an adapter delivers replies a Header asks to have sent later (AsyncReplyFlag
    + ReplyAddress): the outbox channel, and the ReplyAddress schemes it serves."""

    channel: str
    schemes: frozenset[str]


@dataclass(frozen=True)
class InboundMessage:
    """Raw input with who sent it and where it came in.

    Exactly one of ``body`` (network adapters) or ``path`` (file import, SFTP
    inbox) is set; files are streamed, never read whole.
    """

    source: str  # the sender: authenticated user, partner, or the adapter name
    endpoint: str  # where it came in: "soap:/ws/GetMeterReadings", "amqp:amihub.requests", ...
    body: bytes | None = None
    path: Path | None = None
    utility: str | None = None  # utility the adapter's authentication maps the sender to
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, str] = field(default_factory=dict)
    replay_of: int | None = None  # dead-letter id when an operator replays
    #: the authenticated sender; None = trusted local input (CLI, in-process)
    principal: Principal | None = None
    #: the transport's id of this message (AMQP message_id): the idempotency key when
    #: the CIM Header carries no MessageID
    message_id: str | None = None
    #: async replies: queued in the outbox in the transaction of the effect
    async_replies: ReplyRoute | None = None
    #: (verb, noun) the transport named (the AMQP routing key ``<verb>.<Noun>``, which
    #: the broker's topic permissions restrict): the Header must say the same (else 1006)
    operation: tuple[str, str] | None = None
    #: the adapter can send a large reply in chunks (Outcome.reply_chunks): the read path
    #: then keeps a large reply in a temp file instead of returning it as bytes
    stream_reply: bool = False

    def __post_init__(self) -> None:
        if (self.body is None) == (self.path is None):
            raise ValueError("InboundMessage needs exactly one of body or path")

    @property
    def size(self) -> int:
        if self.body is not None:
            return len(self.body)
        assert self.path is not None
        return self.path.stat().st_size

    def open(self) -> IO[bytes]:
        if self.body is not None:
            import io

            return io.BytesIO(self.body)
        assert self.path is not None
        return self.path.open("rb")

    def content_hash(self) -> str:
        if self.body is not None:
            return hashlib.sha256(self.body).hexdigest()
        sha = hashlib.sha256()
        with self.open() as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()

    def head(self, limit: int) -> tuple[bytes, bool]:
        """The first ``limit`` bytes and whether that is all of it (for the dead-letter store)."""
        if self.body is not None:
            return self.body[:limit], len(self.body) <= limit
        with self.open() as f:
            data = f.read(limit + 1)
        return data[:limit], len(data) <= limit


@dataclass
class Outcome:
    """The pipeline's answer to one inbound message."""

    result: str  # OK | PARTIAL | FAILED
    reply: bytes  # the rendered ResponseMessage (or wrapper response)
    errors: list[ErrorDetail] = field(default_factory=list)
    message_log_id: int | None = None
    dead_letter_id: int | None = None
    duplicate: bool = False  # the stored reply of an earlier identical message
    verb: str | None = None
    noun: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_address: str | None = None
    async_reply: bool = False
    #: the reply was queued for the ReplyAddress (answer the caller an acknowledgement)
    reply_queued: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    #: a large reply of the read path, when the message asked ``stream_reply``: ``reply``
    #: is then empty and these chunks (``reply_size`` bytes in all) are the reply; the
    #: adapter must iterate them to the end or close them
    reply_chunks: Iterator[bytes] | None = None
    reply_size: int = 0

    @property
    def ok(self) -> bool:
        return self.result == "OK"
