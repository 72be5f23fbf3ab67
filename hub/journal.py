"""The message journal: the one writer of the message log, its lifecycle, the dead
letters and the audit log.

Every way in records through it: the pipeline (a message's steps, its conclusion,
its dead letter), the adapters' gates (a SOAP request or an AMQP delivery refused
before the pipeline: :meth:`MessageJournal.refuse`), the SFTP inbox (files applied,
refused or sent again: :meth:`MessageJournal.applied_file`,
:meth:`MessageJournal.record_file`), the outbox (a delivery given up), the operator
(a dead letter dismissed or replayed) and the audit entries of the hub and the
adapters. ``tests/unit/hub/test_journal_only_writer.py`` keeps it so: no other module
of ``hub`` or ``adapters`` calls a writing method of those repositories.

Two kinds of methods:

* with a ``uow`` argument: written in the caller's transaction (the pipeline writes a
  message's conclusion in the transaction of its effect), the caller commits;
* without one: the journal's own short transaction, committed before it returns.

The lifecycle is checked against the transition table of :mod:`hub.lifecycle`: a
:class:`~hub.lifecycle.LifecycleRecorder` holds a message's state, the journal
writes each step it takes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cim_schemas.errors import AmihubError, ErrorDetail, RecoverableError, ReplayConflict
from hub.lifecycle import LifecycleRecorder
from hub.lifecycle import MessageLifecycle as S
from hub.messages import InboundMessage
from mdm.ports import (
    AnsweredMessage,
    AppliedMessage,
    MessageConclusion,
    MessageState,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger("amihub.journal")

#: dead letters keep inputs up to this size whole; larger ones keep their head and a flag
DEAD_LETTER_BODY_LIMIT: Final = 64 * 1024 * 1024
#: dead-letter metadata: why a replay through the pipeline cannot help (hub/replay.py)
NOT_REPLAYABLE: Final = "not_replayable"
#: the MessageID an input without one of its own is logged under: its content's digest
#: (SFTP files: the idempotency key of a file is its SHA-256)
CONTENT_ID_PREFIX: Final = "sha256:"


def content_id(content_hash: str) -> str:
    """The message-log MessageID of an input identified by its content (an SFTP file)."""
    return f"{CONTENT_ID_PREFIX}{content_hash}"


def reason_of(errors: Sequence[ErrorDetail]) -> str:
    """A dead letter's reason: the first five errors, and how many more."""
    reason = "; ".join(f"{e.code} {e.reason}" for e in errors[:5])
    if len(errors) > 5:
        reason += f"; and {len(errors) - 5} more"
    return reason


@dataclass(frozen=True)
class Audited:
    """An audit entry written with a refusal (who was refused, doing what)."""

    actor: str
    object_type: str
    object_id: str | None = None
    action: str = "refused"
    #: default: the first error's reason and where it came in
    details: str | None = None


@dataclass(frozen=True)
class Journalled:
    """Where a refusal was recorded: its message-log row and its dead letter."""

    message_log_id: int
    dead_letter_id: int


@dataclass(frozen=True)
class FileRecord:
    """One file an adapter handled itself (SFTP, a mapping), for the message log."""

    source: str
    endpoint: str
    content_hash: str
    size: int
    received_at: datetime
    verb: str = "create"
    noun: str = "MeterReadings"
    #: OK | PARTIAL (applied); None: found applied before (a duplicate)
    result: str | None = "OK"
    #: what the sender got back (the result file)
    reply: bytes = b""
    #: the last step's detail (where the file went)
    detail: str | None = None


class MessageJournal:
    """Records messages, refusals, dead letters and audit entries (module docstring)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.uow_factory = uow_factory
        self.clock = clock

    # -- a message through the pipeline --------------------------------------------------

    def begin(self, msg: InboundMessage, content_hash: str) -> LifecycleRecorder:
        """Its row, *received*, in a transaction of its own (committed)."""
        with self.uow_factory() as uow:
            steps = self.receive(uow, msg, content_hash)
            uow.commit()
        return steps

    def receive(self, uow: UnitOfWork, msg: InboundMessage, content_hash: str) -> LifecycleRecorder:
        log_id = uow.messages.start(
            msg.source, msg.endpoint, content_hash, msg.size, msg.received_at
        )
        if msg.replay_of is not None:
            uow.messages.transition(log_id, S.RECEIVED, f"replay of dead letter {msg.replay_of}")
        return LifecycleRecorder(log_id)

    @staticmethod
    def earlier(uow: UnitOfWork, source: str, message_id: str) -> MessageState | None:
        """The message logged under (source, MessageID), if any (idempotency)."""
        return uow.messages.find(source, message_id)

    @staticmethod
    def earlier_many(
        uow: UnitOfWork, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MessageState]:
        return uow.messages.find_many(keys)

    @staticmethod
    def identify(
        uow: UnitOfWork,
        steps: LifecycleRecorder,
        message_id: str | None,
        verb: str,
        noun: str,
        correlation_id: str | None,
    ) -> None:
        """Claim (source, MessageID) for the row (ReplayConflict when taken)."""
        uow.messages.identify(steps.log_id, message_id, verb, noun, correlation_id)

    @staticmethod
    def advance(uow: UnitOfWork, steps: LifecycleRecorder, *states: tuple[S, str | None]) -> None:
        """Steps between *received* and the end, checked, in one write."""
        uow.messages.record_steps(
            [(steps.log_id, steps.plan(state), detail) for state, detail in states]
        )

    @staticmethod
    def finish(
        uow: UnitOfWork,
        steps: LifecycleRecorder,
        state: S,
        result: str | None,
        reply: bytes | None,
    ) -> None:
        """The terminal step, with the result and the stored reply."""
        uow.messages.finish(steps.log_id, steps.plan(state), result, reply)

    @staticmethod
    def conclude(uow: UnitOfWork, conclusions: Sequence[MessageConclusion]) -> None:
        """MessageID claimed, reply stored, *replied*: with the effect."""
        uow.messages.conclude_many(conclusions)

    @staticmethod
    def record_applied(uow: UnitOfWork, entries: Sequence[AppliedMessage]) -> list[int]:
        """Rows and whole lifecycles of messages applied together (a batch)."""
        return uow.messages.record_applied_many(entries)

    @staticmethod
    def record_answered(uow: UnitOfWork, entry: AnsweredMessage) -> int:
        """Row and whole lifecycle of an answered get."""
        return uow.messages.record_answered(entry)

    def retry(self, steps: LifecycleRecorder) -> None:
        """*retry* (the adapter redelivers), in a transaction of its own, if the store can."""
        try:
            with self.uow_factory() as uow:
                self.finish(uow, steps, S.RETRY, None, None)
                uow.commit()
        except RecoverableError:
            log.warning("could not record the retry of message log %s", steps.log_id)

    def dead_letter(
        self,
        uow: UnitOfWork,
        msg: InboundMessage,
        log_id: int | None,
        errors: Sequence[ErrorDetail],
        metadata: Mapping[str, str] | None = None,
        *,
        declared_size: int | None = None,
    ) -> int:
        """The input kept (whole up to :data:`DEAD_LETTER_BODY_LIMIT`, else its head and
        the flag), with its error code and reason."""
        body, whole = msg.head(DEAD_LETTER_BODY_LIMIT)
        if declared_size is not None and declared_size > len(body):
            whole = False  # refused unread: what was read is all that is kept
        kept = dict(msg.metadata)
        kept.update(metadata or {})
        if msg.path is not None:
            kept.setdefault("path", str(msg.path))
        if msg.replay_of is not None:
            kept["replay_of"] = str(msg.replay_of)
        return uow.dead_letters.add(
            source=msg.source,
            endpoint=msg.endpoint,
            received_at=msg.received_at,
            error_code=errors[0].code,
            reason=reason_of(errors),
            body=body,
            truncated=not whole,
            metadata=kept,
            message_log_id=log_id,
        )

    def replayed(self, dead_letter_id: int, resolved: bool) -> None:
        with self.uow_factory() as uow:
            uow.dead_letters.mark_replayed(dead_letter_id, resolved=resolved)
            uow.commit()

    # -- refused at an adapter's gate, before the pipeline ---------------------------------

    def refuse(
        self,
        msg: InboundMessage,
        errors: Sequence[ErrorDetail],
        *,
        reply: bytes | None = None,
        content_hash: str | None = None,
        declared_size: int | None = None,
        audited: Audited | None = None,
        not_replayable: str | None = None,
    ) -> Journalled:
        """An input refused before the pipeline, in one transaction: its row (*received*
        -> *dead_lettered*, result FAILED, ``reply`` what the sender was answered), its
        dead letter (the input kept, bounded) and, for a refused sender, the audit entry.

        ``declared_size``: an input refused unread (over a size limit) -- its size as
        declared; ``msg`` then holds what was read. ``not_replayable``: why replaying
        the dead letter through the pipeline cannot help (hub/replay.py refuses it).
        Raises what the store raises (RecoverableError when it is down)."""
        if content_hash is None:
            content_hash = msg.content_hash()
        size = declared_size if declared_size is not None else msg.size
        metadata = {NOT_REPLAYABLE: not_replayable} if not_replayable else {}
        with self.uow_factory() as uow:
            steps = LifecycleRecorder(
                uow.messages.start(
                    msg.source,
                    msg.endpoint,
                    content_hash,
                    size,
                    msg.received_at,
                )
            )
            if audited is not None:
                self.audit(
                    uow,
                    audited.actor,
                    audited.action,
                    audited.object_type,
                    audited.object_id,
                    audited.details or f"{errors[0].reason} (at {msg.endpoint})",
                )
            dead_letter_id = self.dead_letter(
                uow, msg, steps.log_id, errors, metadata, declared_size=declared_size
            )
            self.finish(uow, steps, S.DEAD_LETTERED, "FAILED", reply)
            uow.commit()
        log.warning(
            "refused input from %s at %s (message log %s, dead letter %s): %s %s",
            msg.source,
            msg.endpoint,
            steps.log_id,
            dead_letter_id,
            errors[0].code,
            errors[0].reason,
        )
        return Journalled(steps.log_id, dead_letter_id)

    # -- files an adapter applies itself (SFTP inbox) ----------------------------------------

    def applied_file(self, source: str, content_hash: str) -> MessageState | None:
        """The message that applied this content for this source, if any: the SFTP
        inbox's idempotency (a file is identified by its SHA-256)."""
        with self.uow_factory() as uow:
            found = uow.messages.find(source, content_id(content_hash))
        if found is None or found.result not in ("OK", "PARTIAL"):
            return None
        return found

    def record_file(self, record: FileRecord) -> int:
        """A file applied (MessageID ``sha256:<checksum>`` claimed, *replied*, the result
        file as its reply) or found applied before (``result`` None: *duplicate*, nothing
        claimed), with its whole lifecycle. A file another process recorded first is not
        recorded twice (that row's id is returned). Refused files: :meth:`refuse`."""
        applied = record.result in ("OK", "PARTIAL")
        with self.uow_factory() as uow:
            steps = LifecycleRecorder(
                uow.messages.start(
                    record.source,
                    record.endpoint,
                    record.content_hash,
                    record.size,
                    record.received_at,
                )
            )
            if applied:
                try:
                    self.identify(
                        uow,
                        steps,
                        content_id(record.content_hash),
                        record.verb,
                        record.noun,
                        None,
                    )
                except ReplayConflict:
                    uow.rollback()
                    found = self.earlier(uow, record.source, content_id(record.content_hash))
                    if found is None:
                        raise
                    return found.id
                dispatched = f"{record.verb} {record.noun}"
                if record.detail:
                    dispatched += f": {record.detail}"
                self.advance(uow, steps, (S.VALIDATED, None), (S.DISPATCHED, dispatched))
                self.finish(uow, steps, S.REPLIED, record.result, record.reply)
            else:  # the row says which earlier message applied it; nothing is claimed
                self.advance(
                    uow, steps, (S.DUPLICATE, record.detail or "the same content was applied")
                )
            uow.commit()
        return steps.log_id

    # -- deliveries given up, operators ----------------------------------------------------

    @staticmethod
    def undeliverable(
        uow: UnitOfWork,
        *,
        source: str,
        endpoint: str,
        received_at: datetime,
        error: ErrorDetail,
        body: bytes,
        metadata: Mapping[str, str],
    ) -> int:
        """A message amihub could not deliver (the outbox gave up): kept as a dead letter."""
        return uow.dead_letters.add(
            source=source,
            endpoint=endpoint,
            received_at=received_at,
            error_code=error.code,
            reason=error.reason,
            body=body,
            truncated=False,
            metadata=dict(metadata),
            message_log_id=None,
        )

    def dismiss(self, dead_letter_id: int, actor: str) -> bool:
        """An open dead letter resolved without a replay, audited; False: none open."""
        with self.uow_factory() as uow:
            if not uow.dead_letters.dismiss(dead_letter_id, self.clock()):
                return False
            self.audit(uow, actor, "dismiss", "DeadLetter", str(dead_letter_id))
            uow.commit()
        return True

    # -- the audit log ---------------------------------------------------------------------

    @staticmethod
    def audit(
        uow: UnitOfWork,
        actor: str,
        action: str,
        object_type: str,
        object_id: str | None,
        details: str | None = None,
    ) -> None:
        """An audit entry in the caller's transaction."""
        uow.audit.record(actor, action, object_type, object_id, details)

    def record_audit(
        self,
        actor: str,
        action: str,
        object_type: str,
        object_id: str | None,
        details: str | None = None,
    ) -> bool:
        """An audit entry in a transaction of its own; False (logged) when the store
        could not take it (the caller answers all the same)."""
        try:
            with self.uow_factory() as uow:
                self.audit(uow, actor, action, object_type, object_id, details)
                uow.commit()
        except AmihubError:
            log.exception("could not audit %s %s %s by %s", action, object_type, object_id, actor)
            return False
        return True
