"""Watch the partners' ``inbox/`` folders and hand over each complete file exactly once.

A file is taken when it is complete:

- files under a temporary name (``.name``, ``*.tmp``, ``*.part``, ``*.filepart``,
  ``*.partial``) are never taken: upload under such a name and rename when done;
- a file renamed (through the embedded server) from a temporary name after its
  upload was closed is complete: taken at the next poll, without settling;
- any other file is taken once it is closed (the embedded server's
  :class:`~adapters.sftp.server.UploadRegistry` says so) and its size and
  modification time have not changed for ``settle_seconds``.

A taken file is moved out of the partner's reach (``<state_dir>/work/<partner>/``)
and its SHA-256 computed. The message journal (:mod:`hub.journal`) keeps every file in
the message log: source ``sftp:<partner>``, and an applied file under MessageID
``sha256:<checksum>`` -- the file's identity. A checksum already applied for this
partner is not applied again: the file goes to ``error/`` with a report saying so
(its row: *duplicate*). Otherwise the handler gets it and says whether it was applied:

- applied: its row *replied* (the result file as its reply), the file to ``archive/``;
- refused (handler outcome not ok, or a :class:`cim_schemas.errors.PermanentError`, or
  an unexpected exception): its row *dead_lettered* with a dead letter (error code,
  the file's head), the file to ``error/`` with ``<name>.error.txt`` beside it;
- :class:`cim_schemas.errors.RecoverableError` (store down): the file goes back to
  ``inbox/`` and is tried again later.

A CIM message (a partner whose mapping is a ``cim-variant``) goes through the hub
pipeline, which writes its row itself (its Header's MessageID, else
``sha256:<checksum>``); a file the pipeline answers as a duplicate is a duplicate.

An ``<state_dir>/checksums.jsonl`` of the earlier JSON-lines ledger is read into the
message log once, at start, and renamed ``checksums.jsonl.migrated``.

Either way a result file ``outbox/<name>.result.txt`` is written (atomically) for
the partner to pick up. Files left in the work folder by a crash are put back
into the inbox on start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from adapters.sftp.server import (
    PartnerAccount,
    UploadRegistry,
    is_temporary,
    prepare_home,
    write_atomic,
)
from cim_schemas.errors import (
    AmihubError,
    ConfigurationError,
    ErrorDetail,
    MessageRejected,
    RecoverableError,
)
from hub.journal import FileRecord, MessageJournal, content_id
from hub.messages import InboundMessage, ReplyRoute
from hub.messages import Outcome as HubOutcome
from hub.security import Principal
from hub.variants import VARIANT
from mappings.importer import AppliedFile, EventImportResult, ImportFile, ImportResult
from mdm.backoff import Backoff
from mdm.ports import MessageState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxFile:
    """A complete file taken from a partner's inbox (now in the work folder)."""

    partner: PartnerAccount
    name: str
    path: Path
    size: int
    sha256: str
    received_at: datetime


#: the earlier JSON-lines ledger (read into the message log once, then renamed)
LEGACY_LEDGER = "checksums.jsonl"


@dataclass(frozen=True)
class Outcome:
    """What the handler did with a file: ``applied`` and a plain-text report for the partner."""

    applied: bool
    report: str
    #: the message-log row's noun, result (OK | PARTIAL | FAILED) and first error code
    noun: str = "MeterReadings"
    partial: bool = False
    code: str = "2013"
    #: the hub pipeline logged the file itself (a CIM message): nothing more to journal
    journalled: bool = False
    #: the pipeline answered it from the message log (sent before, applied)
    duplicate: bool = False


Handler = Callable[[InboxFile], Outcome]


@dataclass(frozen=True)
class Processed:
    partner: str
    name: str
    status: Literal["applied", "refused", "duplicate", "retry"]
    sha256: str
    moved_to: Path | None
    result_file: Path | None


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S%fZ")


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class InboxWatcher:
    """Poll the inboxes; :meth:`poll_once` for tests and tools, :meth:`start` for a thread."""

    def __init__(
        self,
        partners: Sequence[PartnerAccount],
        handler: Handler,
        *,
        state_dir: Path,
        journal: MessageJournal,
        uploads: UploadRegistry | None = None,
        settle_seconds: float = 2.0,
        retry_delay: float = 5.0,
        max_retry_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.partners = list(partners)
        self.handler = handler
        self.state_dir = state_dir
        self.journal = journal
        self.uploads = uploads
        self.settle = settle_seconds
        self.clock = clock
        self._seen: dict[Path, tuple[int, int, float]] = {}  # size, mtime_ns, since
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._retry: dict[Path, tuple[float, int]] = {}  # not before, failures
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for partner in self.partners:
            prepare_home(partner)
            self._recover(partner)
        self._migrate_ledger(state_dir / LEGACY_LEDGER)

    def _migrate_ledger(self, path: Path) -> None:
        """The applied checksums of the earlier JSON-lines ledger, into the message log
        (once: the file is renamed ``*.migrated`` after)."""
        if not path.exists():
            return
        moved = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            source = f"sftp:{entry['partner']}"
            if self.journal.applied_file(source, entry["sha256"]) is not None:
                continue
            self.journal.record_file(
                FileRecord(
                    source=source,
                    endpoint=f"{source}/inbox",
                    content_hash=entry["sha256"],
                    size=0,
                    received_at=datetime.now(UTC),
                    reply=f"{entry['description']}\n".encode(),
                    detail=f"from {path.name}: {entry['description']}",
                )
            )
            moved += 1
        os.replace(path, path.with_name(path.name + ".migrated"))
        log.warning("read %d checksum(s) of %s into the message log", moved, path)

    def _work(self, partner: PartnerAccount) -> Path:
        folder = self.state_dir / "work" / partner.username
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _recover(self, partner: PartnerAccount) -> None:
        for path in self._work(partner).iterdir():
            target = partner.folder("inbox") / path.name
            if not target.exists():
                os.replace(path, target)
                log.warning(
                    "put %s back into %s's inbox after an interruption", path.name, partner.username
                )

    # ------------------------------------------------------------------ polling

    def ready(self, path: Path) -> bool:
        """Closed, not under a temporary name, unchanged for the settling time."""
        if is_temporary(path.name) or not path.is_file() or path.is_symlink():
            return False
        if self.uploads is not None and self.uploads.is_open(path):
            self._seen.pop(path, None)
            return False
        now = self.clock()
        retry = self._retry.get(path)
        if retry is not None and now < retry[0]:
            return False  # the store was down: back off
        st = path.stat()
        if self.uploads is not None and self.uploads.take_complete(
            path, st.st_size, st.st_mtime_ns
        ):
            return True  # renamed from a temporary name after the upload: complete
        previous = self._seen.get(path)
        if previous is None or previous[:2] != (st.st_size, st.st_mtime_ns):
            self._seen[path] = (st.st_size, st.st_mtime_ns, now)
            return self.settle <= 0
        return now - previous[2] >= self.settle

    def poll_once(self) -> list[Processed]:
        done: list[Processed] = []
        for partner in self.partners:
            inbox = partner.folder("inbox")
            for path in sorted(inbox.iterdir(), key=lambda p: p.name):
                try:
                    if self.ready(path):
                        self._seen.pop(path, None)
                        done.append(self.process(partner, path))
                except OSError:
                    log.exception("cannot take %s", path)
        return done

    def start(self, interval: float = 1.0) -> None:
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll_once()
                except Exception:
                    log.exception("inbox poll failed")

        self._thread = threading.Thread(target=run, name="sftp-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ one file

    def process(self, partner: PartnerAccount, path: Path) -> Processed:
        received = datetime.now(UTC)
        work = self._work(partner) / path.name
        os.replace(path, work)  # out of the partner's reach before we read it
        sha, size = _sha256(work)
        item = InboxFile(partner, path.name, work, size, sha, received)
        try:
            earlier = self.journal.applied_file(_source(partner), sha)
            if earlier is not None:
                report = (
                    f"file: {path.name}\nsha256: {sha}\nstatus: duplicate\n"
                    f"reason: the same content was applied already ({_described(earlier)}); "
                    "not applied again\n"
                )
                return self._finish(item, "duplicate", report, Outcome(False, report), earlier)
            outcome = self._handle(item)
            header = f"sha256: {sha}\n"
            status: Literal["applied", "refused", "duplicate"] = (
                "applied" if outcome.applied else "refused"
            )
            if outcome.duplicate and outcome.applied:
                status = "duplicate"
            return self._finish(item, status, header + outcome.report, outcome)
        except RecoverableError as exc:
            previous = self._retry.get(path)
            failures = previous[1] + 1 if previous else 1
            delay = Backoff(self.retry_delay, self.max_retry_delay).delay(failures)
            self._retry[path] = (self.clock() + delay, failures)
            log.warning("%s of %s: %s; retry in %.0fs", path.name, partner.username, exc, delay)
            os.replace(work, path)
            return Processed(partner.username, path.name, "retry", sha, path, None)

    def _handle(self, item: InboxFile) -> Outcome:
        """The handler's outcome; its refusals (raised) as outcomes. RecoverableError
        is raised on (the file is tried again)."""
        name, sha = item.name, item.sha256
        try:
            outcome = self.handler(item)
            self._retry.pop(self._inbox_path(item), None)
            return outcome
        except RecoverableError:
            raise
        except MessageRejected as exc:
            details = "".join(f"  [{e.code}] {e.reason}\n" for e in exc.errors)
            report = (
                f"file: {name}\nsha256: {sha}\nstatus: rejected\n"
                f"reason: {exc.reason}\nerrors: {len(exc.errors)}\n{details}"
            )
            return Outcome(False, report, code=exc.errors[0].code if exc.errors else "2013")
        except AmihubError as exc:
            report = f"file: {name}\nsha256: {sha}\nstatus: rejected\nreason: {exc}\n"
            return Outcome(False, report, code=getattr(exc, "code", None) or "3002")
        except Exception:
            log.exception("handler failed on %s of %s", name, item.partner.username)
            report = (
                f"file: {name}\nsha256: {sha}\nstatus: rejected\n"
                "reason: internal error [3002]; the file is kept, the operator is told\n"
            )
            return Outcome(False, report, code="3002")

    @staticmethod
    def _inbox_path(item: InboxFile) -> Path:
        return item.partner.folder("inbox") / item.name

    def _finish(
        self,
        item: InboxFile,
        status: Literal["applied", "refused", "duplicate"],
        report: str,
        outcome: Outcome,
        earlier: MessageState | None = None,
    ) -> Processed:
        """Journal the file, then move it and write its result file (a store failure
        while journalling leaves the file in the work folder: tried again)."""
        partner = item.partner
        stamped = f"{_stamp(item.received_at)}_{item.name}"
        folder = "archive" if status == "applied" else "error"
        target = partner.folder(folder) / stamped
        if not outcome.journalled:
            self._journal(item, status, report, outcome, f"{folder}/{stamped}", target, earlier)
        if status == "applied":
            self._move(item.path, target)
        else:
            self._move(item.path, target)
            write_atomic(target.with_name(target.name + ".error.txt"), report)
        # a duplicate is mostly a second copy under the same name: its report must not
        # replace the applied file's <name>.result.txt, so it goes under the stamped name
        result_name = stamped if status == "duplicate" else item.name
        result = partner.folder("outbox") / f"{result_name}.result.txt"
        write_atomic(result, report)
        return Processed(partner.username, item.name, status, item.sha256, target, result)

    def _journal(
        self,
        item: InboxFile,
        status: Literal["applied", "refused", "duplicate"],
        report: str,
        outcome: Outcome,
        kept: str,
        target: Path,
        earlier: MessageState | None,
    ) -> None:
        source = _source(item.partner)
        endpoint = f"{source}/inbox"
        if status == "refused":
            self.journal.refuse(
                InboundMessage(
                    source=source,
                    endpoint=endpoint,
                    path=item.path,
                    received_at=item.received_at,
                    metadata={"file": item.name, "path": str(target)},
                ),
                [ErrorDetail(outcome.code, _reason(report))],
                reply=report.encode(),
                content_hash=item.sha256,
                not_replayable=f"a file of partner {item.partner.username}: it is kept in "
                f"{kept}; after fixing the cause, drop it into the inbox again",
            )
            return
        description = f"{item.name} at {item.received_at.isoformat()}, {kept}"
        self.journal.record_file(
            FileRecord(
                source=source,
                endpoint=endpoint,
                content_hash=item.sha256,
                size=item.size,
                received_at=item.received_at,
                noun=outcome.noun,
                result=None if status == "duplicate" else ("PARTIAL" if outcome.partial else "OK"),
                reply=f"{description}\n\n{report}".encode(),
                detail=f"{description}; applied before: message log {earlier.id}"
                if earlier is not None
                else description,
            )
        )

    @staticmethod
    def _move(source: Path, target: Path) -> None:
        try:
            os.replace(source, target)
        except OSError:
            shutil.move(str(source), str(target))


def import_handler(run: Callable[[ImportFile], AppliedFile]) -> Handler:
    """A handler applying each file with the partner's mapping, e.g.
    ``import_handler(functools.partial(apply_file, uow_factory, catalog=catalog, bus=bus))``
    (readings or events, by the mapping's kind)."""

    def handle(item: InboxFile) -> Outcome:
        partner = item.partner
        if not partner.mapping or not partner.utility:
            raise ConfigurationError(
                f"SFTP partner {partner.username!r} has no mapping or utility configured"
            )
        result = run(
            ImportFile(
                item.path, partner.mapping, partner.utility, source=f"sftp:{partner.username}"
            )
        )
        report = result.report().replace(f"file: {item.path.name}", f"file: {item.name}", 1)
        return Outcome(
            result.applied,
            report,
            noun="EndDeviceEvents" if isinstance(result, EventImportResult) else "MeterReadings",
            partial=result.applied and "skipped" in str(getattr(result, "status", "")),
            code=_first_code(result),
        )

    return handle


def _first_code(result: AppliedFile) -> str:
    """The code of a refused file's first error (2013 when it names none)."""
    if isinstance(result, ImportResult):
        errors = result.all_errors()
        return errors[0].code if errors else "2013"
    if isinstance(result, EventImportResult):
        if result.errors:
            return result.errors[0].code
        if result.unknown_meters:
            return result.unknown_meters[0].code
    return "2013"


def _source(partner: PartnerAccount) -> str:
    return f"sftp:{partner.username}"


def _reason(report: str) -> str:
    """A refused file's reason for its dead letter: the report's reason, else its errors."""
    lines = report.splitlines()
    for line in lines:
        if line.startswith("reason: "):
            return line[len("reason: ") :]
    errors = [line.strip() for line in lines if line.startswith("  [")]
    return "; ".join(errors[:5]) or "refused"


def _described(earlier: MessageState) -> str:
    """The file that applied this content first: the first line of its row's reply
    (written by this watcher), else the row."""
    if earlier.reply and not earlier.reply.lstrip().startswith(b"<"):
        return earlier.reply.split(b"\n", 1)[0].decode("utf-8", "replace")
    return f"message log {earlier.id}, received {earlier.received_at.isoformat()}"


def cim_handler(
    process: Callable[[InboundMessage], HubOutcome],
    principals: Callable[[PartnerAccount], Principal | None] = lambda _: None,
    replies: Callable[[PartnerAccount], ReplyRoute | None] = lambda _: None,
) -> Handler:
    """A handler for partners whose files are CIM messages (RequestMessage /
    EventMessage) in a vendor's variant: the partner's mapping names the
    ``cim-variant``; each file goes through the hub pipeline (``process`` =
    ``Pipeline.process``: message log, the variant undone, XSD, routes, one
    transaction, dead letter when refused). Applied = a reply OK or PARTIAL (the
    items that failed are listed); FAILED = refused. ``principals`` gives the
    partner's permissions (verb:Noun); ``replies`` how an asynchronous reply it asks
    for is delivered (its push targets: adapters/sftp/push.py)."""

    def handle(item: InboxFile) -> Outcome:
        partner = item.partner
        if not partner.mapping or not partner.utility:
            raise ConfigurationError(
                f"SFTP partner {partner.username!r} has no mapping or utility configured"
            )
        msg = InboundMessage(
            source=f"sftp:{partner.username}",
            endpoint=f"sftp:{partner.username}/inbox",
            path=item.path,
            utility=partner.utility,
            metadata={VARIANT: partner.mapping, "file": item.name},
            principal=principals(partner),
            async_replies=replies(partner),
            # a Header without MessageID: the file's identity is its content
            message_id=content_id(item.sha256),
        )
        out = process(msg)
        return Outcome(
            out.result in ("OK", "PARTIAL"),
            cim_report(item.name, partner.mapping, out),
            noun=out.noun or "MeterReadings",
            partial=out.result == "PARTIAL",
            code=out.errors[0].code if out.errors else "2013",
            journalled=True,
            duplicate=out.duplicate,
        )

    return handle


def cim_report(name: str, variant: str, out: HubOutcome) -> str:
    """The result file of a CIM message: status, the reply's counts and errors."""
    status = {"OK": "applied", "PARTIAL": "applied with errors"}.get(out.result, "rejected")
    lines = [
        f"file: {name}",
        f"mapping: {variant} (CIM variant)",
        f"status: {'duplicate of an earlier message, ' if out.duplicate else ''}{status}",
        f"result: {out.result}",
        f"message: {out.verb or '?'} {out.noun or '?'}"
        + (f" MessageID {out.message_id}" if out.message_id else ""),
    ]
    lines += [f"{key}: {value}" for key, value in out.counts.items()]
    lines.append(f"errors: {len(out.errors)}")
    for e in out.errors:
        where = f" ({e.xpath})" if e.xpath else ""
        lines.append(f"  [{e.code}] {e.reason}{where}")
    return "\n".join(lines) + "\n"
