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
and its SHA-256 computed. A checksum already applied for this partner is not
applied again: the file goes to ``error/`` with a report saying so. Otherwise
the handler gets it and says whether it was applied:

- applied: the file goes to ``archive/``, its checksum into the ledger;
- refused (handler outcome not ok, or a :class:`cim_schemas.errors.PermanentError`, or
  an unexpected exception): the file goes to ``error/`` with ``<name>.error.txt``
  beside it;
- :class:`cim_schemas.errors.RecoverableError` (store down): the file goes back to
  ``inbox/`` and is tried again later.

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
from typing import Literal, Protocol

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
    MessageRejected,
    PermanentError,
    RecoverableError,
    ReplayConflict,
)
from hub.messages import InboundMessage, ReplyRoute
from hub.messages import Outcome as HubOutcome
from hub.security import Principal
from hub.variants import VARIANT
from mappings.importer import AppliedFile, ImportFile
from mdm.backoff import Backoff
from mdm.ports import UnitOfWorkFactory

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


@dataclass(frozen=True)
class Outcome:
    """What the handler did with a file: ``applied`` and a plain-text report for the partner."""

    applied: bool
    report: str


Handler = Callable[[InboxFile], Outcome]


@dataclass(frozen=True)
class Processed:
    partner: str
    name: str
    status: Literal["applied", "refused", "duplicate", "retry"]
    sha256: str
    moved_to: Path | None
    result_file: Path | None


class ChecksumLedger(Protocol):
    """Which file contents (SHA-256) were applied for which partner."""

    def find(self, partner: str, sha256: str) -> str | None:
        """A description of the earlier file with this checksum, or None."""
        ...

    def record(self, partner: str, sha256: str, description: str) -> None: ...


class FileLedger:
    """A :class:`ChecksumLedger` in an append-only JSON-lines file (kept in memory too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], str] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._seen[(entry["partner"], entry["sha256"])] = entry["description"]

    def find(self, partner: str, sha256: str) -> str | None:
        with self._lock:
            return self._seen.get((partner, sha256))

    def record(self, partner: str, sha256: str, description: str) -> None:
        with self._lock:
            self._seen[(partner, sha256)] = description
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(
                    json.dumps({"partner": partner, "sha256": sha256, "description": description})
                    + "\n"
                )
                f.flush()
                os.fsync(f.fileno())


class StoreLedger:
    """A :class:`ChecksumLedger` in the store's message log, shared by every hub process.

    An applied file is logged as a message from source ``sftp:<partner>`` with
    MessageID ``sha256:<checksum>`` (unique per source), state ``applied``.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self.uow_factory = uow_factory

    def find(self, partner: str, sha256: str) -> str | None:
        with self.uow_factory() as uow:
            found = uow.messages.find(f"sftp:{partner}", f"sha256:{sha256}")
        if found is None or found.state != "applied":
            return None
        return found.reply.decode() if found.reply else f"message log {found.id}"

    def record(self, partner: str, sha256: str, description: str) -> None:
        with self.uow_factory() as uow:
            log_id = uow.messages.start(f"sftp:{partner}", "inbox", sha256, 0, datetime.now(UTC))
            try:
                uow.messages.identify(log_id, f"sha256:{sha256}", "create", "MeterReadings", None)
            except ReplayConflict:
                return  # another process recorded it first
            uow.messages.finish(log_id, "applied", "OK", description.encode())
            uow.commit()


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
        ledger: ChecksumLedger | None = None,
        uploads: UploadRegistry | None = None,
        settle_seconds: float = 2.0,
        retry_delay: float = 5.0,
        max_retry_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.partners = list(partners)
        self.handler = handler
        self.state_dir = state_dir
        self.ledger = ledger or FileLedger(state_dir / "checksums.jsonl")
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
        earlier = self.ledger.find(partner.username, sha)
        if earlier is not None:
            report = (
                f"file: {path.name}\nsha256: {sha}\nstatus: duplicate\n"
                f"reason: the same content was applied already ({earlier}); "
                "not applied again\n"
            )
            return self._finish(item, "duplicate", report)
        try:
            outcome = self.handler(item)
            self._retry.pop(path, None)
        except RecoverableError as exc:
            previous = self._retry.get(path)
            failures = previous[1] + 1 if previous else 1
            delay = Backoff(self.retry_delay, self.max_retry_delay).delay(failures)
            self._retry[path] = (self.clock() + delay, failures)
            log.warning("%s of %s: %s; retry in %.0fs", path.name, partner.username, exc, delay)
            os.replace(work, path)
            return Processed(partner.username, path.name, "retry", sha, path, None)
        except MessageRejected as exc:
            details = "".join(f"  [{e.code}] {e.reason}\n" for e in exc.errors)
            report = (
                f"file: {path.name}\nsha256: {sha}\nstatus: rejected\n"
                f"reason: {exc.reason}\nerrors: {len(exc.errors)}\n{details}"
            )
            return self._finish(item, "refused", report)
        except (PermanentError, AmihubError) as exc:
            report = f"file: {path.name}\nsha256: {sha}\nstatus: rejected\nreason: {exc}\n"
            return self._finish(item, "refused", report)
        except Exception:
            log.exception("handler failed on %s of %s", path.name, partner.username)
            report = (
                f"file: {path.name}\nsha256: {sha}\nstatus: rejected\n"
                "reason: internal error [3002]; the file is kept, the operator is told\n"
            )
            return self._finish(item, "refused", report)
        header = f"sha256: {sha}\n"
        if outcome.applied:
            return self._finish(item, "applied", header + outcome.report)
        return self._finish(item, "refused", header + outcome.report)

    def _finish(
        self, item: InboxFile, status: Literal["applied", "refused", "duplicate"], report: str
    ) -> Processed:
        partner = item.partner
        stamped = f"{_stamp(item.received_at)}_{item.name}"
        if status == "applied":
            target = partner.folder("archive") / stamped
            self._move(item.path, target)
            self.ledger.record(
                partner.username,
                item.sha256,
                f"{item.name} at {item.received_at.isoformat()}, archive/{stamped}",
            )
        else:
            target = partner.folder("error") / stamped
            self._move(item.path, target)
            write_atomic(target.with_name(target.name + ".error.txt"), report)
        # a duplicate is mostly a second copy under the same name: its report must not
        # replace the applied file's <name>.result.txt, so it goes under the stamped name
        result_name = stamped if status == "duplicate" else item.name
        result = partner.folder("outbox") / f"{result_name}.result.txt"
        write_atomic(result, report)
        return Processed(partner.username, item.name, status, item.sha256, target, result)

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
        return Outcome(result.applied, report)

    return handle


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
        )
        out = process(msg)
        return Outcome(out.result in ("OK", "PARTIAL"), cim_report(item.name, partner.mapping, out))

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
