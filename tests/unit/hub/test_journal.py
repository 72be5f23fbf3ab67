"""The message journal on the SQLite store: refusals, files, illegal steps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cim_schemas.errors import ErrorDetail
from hub.bootstrap import App
from hub.journal import DEAD_LETTER_BODY_LIMIT, Audited, FileRecord, content_id
from hub.lifecycle import IllegalTransition, LifecycleRecorder
from hub.lifecycle import MessageLifecycle as S
from hub.messages import InboundMessage

AT = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_a_refusal_is_one_row_one_dead_letter_and_its_audit(app: App) -> None:
    msg = InboundMessage(source="soap:10.0.0.9", endpoint="soap:/ws/X", body=b"<a", received_at=AT)
    done = app.message_journal.refuse(
        msg,
        [ErrorDetail("1010", "who are you")],
        reply=b"<Fault/>",
        audited=Audited("mallory", "soap", "/ws/X"),
        not_replayable="sent again by the sender",
    )
    with app.uow_factory() as uow:
        row = uow.messages.get(done.message_log_id)
        steps = uow.messages.lifecycle(done.message_log_id)
        letter = uow.dead_letters.get(done.dead_letter_id)
        [audit] = uow.audit.list(1)
    assert row is not None
    assert (row.state, row.result, row.reply, row.message_id) == (
        "dead_lettered",
        "FAILED",
        b"<Fault/>",
        None,
    )
    assert [s for s, _, _ in steps] == ["received", "dead_lettered"]
    assert steps[0][1] == AT
    assert letter is not None
    assert (letter.error_code, letter.body, letter.truncated) == ("1010", b"<a", False)
    assert letter.message_log_id == done.message_log_id
    assert letter.metadata["not_replayable"] == "sent again by the sender"
    assert audit[1:5] == ("mallory", "refused", "soap", "/ws/X")
    assert audit[5] == "who are you (at soap:/ws/X)"


def test_an_input_refused_unread_is_kept_as_read_and_flagged(app: App) -> None:
    msg = InboundMessage(source="s", endpoint="e", body=b"<head", received_at=AT)
    done = app.message_journal.refuse(
        msg, [ErrorDetail("1003", "too large")], declared_size=DEAD_LETTER_BODY_LIMIT * 2
    )
    with app.uow_factory() as uow:
        letter = uow.dead_letters.get(done.dead_letter_id)
    assert letter is not None
    assert letter.body == b"<head"
    assert letter.truncated


def test_a_file_recorded_twice_keeps_one_applied_row(app: App) -> None:
    record = FileRecord(
        source="sftp:p",
        endpoint="sftp:p/inbox",
        content_hash="ab" * 32,
        size=10,
        received_at=AT,
        reply=b"a.csv at ...\n",
    )
    first = app.message_journal.record_file(record)
    again = app.message_journal.record_file(record)  # another process, the same content
    assert again == first
    found = app.message_journal.applied_file("sftp:p", "ab" * 32)
    assert found is not None
    assert (found.id, found.message_id, found.state) == (first, content_id("ab" * 32), "replied")
    with app.uow_factory() as uow:
        assert uow.messages.get(first + 1) is None  # the second attempt left nothing
    assert app.message_journal.applied_file("sftp:other", "ab" * 32) is None


def test_an_illegal_step_is_refused_before_anything_is_written() -> None:
    steps = LifecycleRecorder(1)
    steps.plan(S.VALIDATED)
    with pytest.raises(IllegalTransition):
        steps.plan(S.DUPLICATE)  # duplicate only right after received
    assert steps.state == S.VALIDATED
