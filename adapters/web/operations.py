"""What an operator can see and do, for the JSON API and the web UI alike.

Reads go through the unit of work's repositories, the bus's query handler for
readings (the handler SOAP GetMeterReadings uses) and the read models of
``mdm/views.py``. Changes go the way every other interface's do: a disconnect,
reconnect or on-demand read is a CIM EndDeviceControls / MeterReadSchedule request
processed by the hub pipeline with the operator as its principal (authorisation,
message log, idempotency, job table, dead letter: nothing of it is done a second
way); a dead letter is replayed by :func:`hub.replay.replay`.

Every method takes the :class:`~hub.security.Principal` and works in its utility (the
principal's, else the default utility); what a permission does not allow raises
:class:`Forbidden`, what does not exist :class:`NotFound`.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.web.hub_app import HubApp
from cim_schemas.codes import event_type as et
from cim_schemas.envelope import Header, render_request
from cim_schemas.errors import AmihubError, ErrorDetail
from hub.logs import bound
from hub.messages import InboundMessage, Outcome
from hub.security import Principal
from mdm.commands import QueryMeterReadings
from mdm.groups import EndDeviceGroup
from mdm.handling import HandlerContext
from mdm.hes_jobs import HeadEndJob, JobKind
from mdm.model import DeviceRef, EndDevice, EndDeviceEvent, Installation, StoredReading, UsagePoint
from mdm.ports import AuditQuery, AuditRecord, DeadLetter, ReadingRecord, UnitOfWork
from mdm.qualities import NOTES, codes_of
from mdm.views import OperatorViews, RelayState, SearchHit

#: the controls an operator starts from the interface
CONTROLS: dict[str, str] = {
    "disconnect": str(et.REMOTE_DISCONNECT),
    "reconnect": str(et.REMOTE_CONNECT),
}
#: the permission each kind of read needs (verb:noun, as in [[users]] permissions)
SEE_METERS = ("get", "MeterConfig")
SEE_USAGE_POINTS = ("get", "UsagePointConfig")
SEE_READINGS = ("get", "MeterReadings")
SEE_EVENTS = ("get", "EndDeviceEvents")
SEE_JOBS = ("get", "EndDeviceControls")
SEE_GROUPS = ("get", "EndDeviceGroups")
SEE_DEAD_LETTERS = ("get", "DeadLetters")
REPLAY_DEAD_LETTERS = ("replay", "DeadLetters")
DISMISS_DEAD_LETTERS = ("dismiss", "DeadLetters")
SEE_AUDIT = ("get", "AuditLog")
#: where the interface's requests are recorded as coming in (message log, dead letters)
ENDPOINT = "web:/api"
HEADER_SOURCE = "amihub-web"


class Forbidden(AmihubError):
    """The principal's permissions do not allow this."""


class NotFound(AmihubError):
    """No such object in the principal's utility."""


class Refused(AmihubError):
    """The hub refused a request: its errors (code, reason, xpath) say why."""

    def __init__(self, message: str, errors: list[ErrorDetail], outcome: Outcome) -> None:
        super().__init__(message)
        self.errors = errors
        self.outcome = outcome


@dataclass(frozen=True)
class MeterView:
    device: EndDevice
    installations: list[Installation]
    relay: RelayState | None


@dataclass(frozen=True)
class UsagePointView:
    usage_point: UsagePoint
    meters: list[Installation]  # installed now


@dataclass(frozen=True)
class JobView:
    job: HeadEndJob
    events: list[EndDeviceEvent]

    @property
    def finished(self) -> bool:
        """Nothing more to follow: a final state, or a read schedule waiting for its
        next run (the UI's job page stops reloading)."""
        if self.job.kind == JobKind.READ and self.job.state == "active":
            return True
        return self.job.state in {"succeeded", "partial", "failed", "cancelled", "finished"}

    @property
    def progress(self) -> tuple[int, int]:
        """(devices with an outcome, devices targeted)."""
        done = {
            e.device_mrid for e in self.events if e.details.get("state") not in (None, "scheduled")
        }
        return len(done), len(self.job.targets)


@dataclass
class ControlResult:
    job_id: str
    outcome: Outcome
    devices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReadResult:
    outcome: Outcome
    counts: dict[str, int]


class Operations:
    def __init__(self, app: HubApp, views: OperatorViews) -> None:
        self.app = app
        self.views = views
        self._utility_ids: dict[str, int] = {}

    # -- who -----------------------------------------------------------------------------

    @staticmethod
    def require(principal: Principal, permission: tuple[str, str]) -> None:
        if not principal.may(*permission):
            raise Forbidden(f"{principal.name} may not {permission[0]}:{permission[1]}")

    def utility_code(self, principal: Principal) -> str:
        return principal.utility or self.app.settings.default_utility

    def utility_id(self, principal: Principal, uow: UnitOfWork | None = None) -> int:
        code = self.utility_code(principal)
        cached = self._utility_ids.get(code)
        if cached is not None:
            return cached
        if uow is None:
            with self.app.uow_factory() as own:
                utility = own.utilities.get(code)
        else:
            utility = uow.utilities.get(code)
        if utility is None or utility.id is None:
            raise NotFound(f"utility {code} does not exist")
        self._utility_ids[code] = utility.id
        return utility.id

    # -- master data ---------------------------------------------------------------------

    def search(self, principal: Principal, text: str, limit: int = 25) -> list[SearchHit]:
        meters, points = principal.may(*SEE_METERS), principal.may(*SEE_USAGE_POINTS)
        if not meters and not points:
            self.require(principal, SEE_METERS)
        hits = self.views.search(self.utility_id(principal), text, limit)
        return [h for h in hits if (meters if h.kind == "meter" else points)]

    def meters(self, principal: Principal) -> list[EndDevice]:
        self.require(principal, SEE_METERS)
        with self.app.uow_factory() as uow:
            return uow.devices.list(self.utility_id(principal, uow))

    def _device(self, uow: UnitOfWork, utility_id: int, mrid: str) -> EndDevice:
        device = uow.devices.find(utility_id, DeviceRef(mrid=mrid))
        if device is None or device.id is None:
            raise NotFound(f"unknown meter {mrid}")
        return device

    def meter(self, principal: Principal, mrid: str) -> MeterView:
        self.require(principal, SEE_METERS)
        with self.app.uow_factory() as uow:
            utility_id = self.utility_id(principal, uow)
            device = self._device(uow, utility_id, mrid)
            assert device.id is not None
            history = uow.installations.history(device.id)
        relay = self.views.relay_states(utility_id, [device.mrid]).get(device.mrid)
        return MeterView(device, history, relay)

    def usage_points(self, principal: Principal) -> list[UsagePoint]:
        self.require(principal, SEE_USAGE_POINTS)
        with self.app.uow_factory() as uow:
            return uow.usage_points.list(self.utility_id(principal, uow))

    def usage_point(self, principal: Principal, mrid: str) -> UsagePointView:
        self.require(principal, SEE_USAGE_POINTS)
        with self.app.uow_factory() as uow:
            utility_id = self.utility_id(principal, uow)
            up = uow.usage_points.find(utility_id, DeviceRef(mrid=mrid))
            if up is None or up.id is None:
                raise NotFound(f"unknown usage point {mrid}")
            return UsagePointView(up, uow.installations.current_at_usage_point(up.id))

    # -- readings ------------------------------------------------------------------------

    def readings(
        self,
        principal: Principal,
        *,
        meter: str | None = None,
        usage_point: str | None = None,
        group: str | None = None,
        reading_types: tuple[str, ...] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Current versions with ``start < ts <= end`` through the bus's QueryMeterReadings
        handler (the one GetMeterReadings uses), ordered by meter, type and time. More
        than ``limit``: ``OverflowError``."""
        self.require(principal, SEE_READINGS)
        with self.app.uow_factory() as uow:
            utility_id = self.utility_id(principal, uow)
            command = QueryMeterReadings(
                utility_id,
                meters=(DeviceRef(mrid=meter),) if meter else (),
                usage_points=(DeviceRef(mrid=usage_point),) if usage_point else (),
                end_device_groups=(DeviceRef(mrid=group),) if group else (),
                reading_types=reading_types,
                start=start,
                end=end,
                max_group_meters=self.app.settings.limits.max_group_meters,
            )
            ctx = HandlerContext(actor=principal.name, now=datetime.now(UTC))
            result = self.app.bus.handle(command, uow, ctx)
            if result.unknown_meters:
                raise NotFound(f"unknown meter {meter}")
            if result.unknown_usage_points:
                raise NotFound(f"unknown usage point {usage_point}")
            if result.unusable_groups:
                raise NotFound(f"end device group {group} does not exist, is closed or empty")
            rows: list[StoredReading] = []
            for row in result.readings:
                rows.append(row)
                if limit is not None and len(rows) > limit:
                    close = getattr(result.readings, "close", None)
                    if close is not None:
                        close()
                    raise OverflowError(f"more than {limit} readings: ask a shorter period")
            return rows

    def reading_records(
        self,
        principal: Principal,
        *,
        meter: str | None = None,
        usage_point: str | None = None,
        group: str | None = None,
        reading_types: tuple[str, ...] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int,
    ) -> list[ReadingRecord]:
        """:meth:`readings` as text records (the API's answer). One meter's are the
        readings repository's :meth:`~mdm.ports.ReadingRepository.meter_records`: one
        statement whose text the store writes; a usage point's or a group's go through
        the handler and are written by :meth:`ReadingRecord.of`."""
        if not meter or usage_point or group:
            rows = self.readings(
                principal,
                meter=meter,
                usage_point=usage_point,
                group=group,
                reading_types=reading_types,
                start=start,
                end=end,
                limit=limit,
            )
            return [ReadingRecord.of(r) for r in rows]
        self.require(principal, SEE_READINGS)
        utility_id = self.utility_id(principal)
        # one statement: no transaction needed (two round trips fewer on PostgreSQL)
        with self.app.uow_factory.read_only() as uow:
            records = uow.readings.meter_records(
                utility_id, meter, reading_types or None, start, end, limit
            )
        if records is None:
            raise NotFound(f"unknown meter {meter}")
        if len(records) > limit:
            raise OverflowError(f"more than {limit} readings: ask a shorter period")
        return records

    def reading_versions(
        self, principal: Principal, meter: str, reading_type: str, ts: datetime
    ) -> list[StoredReading]:
        self.require(principal, SEE_READINGS)
        with self.app.uow_factory() as uow:
            device = self._device(uow, self.utility_id(principal, uow), meter)
            assert device.id is not None
            return uow.readings.versions(device.id, reading_type, ts)

    # -- events --------------------------------------------------------------------------

    def events(
        self,
        principal: Principal,
        *,
        meter: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 500,
    ) -> list[EndDeviceEvent]:
        """Newest first, at most ``limit``."""
        self.require(principal, SEE_EVENTS)
        with self.app.uow_factory() as uow:
            utility_id = self.utility_id(principal, uow)
            ids = None
            if meter is not None:
                device = self._device(uow, utility_id, meter)
                assert device.id is not None
                ids = [device.id]
            events = uow.events.query(utility_id, ids, start, end)
        return list(reversed(events))[:limit]

    # -- head-end jobs -------------------------------------------------------------------

    def jobs(self, principal: Principal, *, limit: int = 200) -> list[HeadEndJob]:
        self.require(principal, SEE_JOBS)
        with self.app.uow_factory() as uow:
            jobs = uow.hes_jobs.list(self.utility_id(principal, uow))
        jobs.sort(key=lambda j: (j.created_at, j.id or 0), reverse=True)
        return jobs[:limit]

    def job(self, principal: Principal, mrid: str) -> JobView:
        self.require(principal, SEE_JOBS)
        utility_id = self.utility_id(principal)
        with self.app.uow_factory() as uow:
            job = uow.hes_jobs.get(utility_id, JobKind.CONTROL, mrid) or uow.hes_jobs.get(
                utility_id, JobKind.READ, mrid
            )
        if job is None:
            raise NotFound(f"unknown job {mrid}")
        return JobView(job, self.views.job_events(utility_id, mrid))

    def device_jobs(self, principal: Principal, meter: str) -> list[str]:
        self.require(principal, SEE_JOBS)
        return self.views.device_job_ids(self.utility_id(principal), meter)

    # -- controls, through the pipeline ----------------------------------------------------

    def _submit(self, principal: Principal, verb: str, noun: str, payload: Any) -> Outcome:
        header = Header(
            verb=verb,
            noun=noun,
            timestamp=datetime.now(UTC),
            source=HEADER_SOURCE,
            user_id=principal.name,
            message_id=str(uuid.uuid4()),
        )
        body = render_request(header, None, payload)
        msg = InboundMessage(
            source=principal.name,
            endpoint=f"{ENDPOINT}/{noun}",
            body=body,
            utility=principal.utility,
            principal=principal,
        )
        outcome = self.app.pipeline.process(msg)
        if outcome.result == "FAILED":
            first = outcome.errors[0] if outcome.errors else ErrorDetail("3002", "refused")
            if first.code == "1010":
                raise Forbidden(first.reason)
            raise Refused(f"{first.code} {first.reason}", outcome.errors, outcome)
        return outcome

    def control(self, principal: Principal, meter: str, action: str, reason: str) -> ControlResult:
        """Disconnect or reconnect one meter now: an EndDeviceControls create."""
        from cim_schemas.profiles.common import IdentifiedObject
        from cim_schemas.profiles.end_device_controls import (
            EndDeviceControl,
            EndDeviceControls,
            render_end_device_controls,
        )

        control_type = CONTROLS.get(action)
        if control_type is None:
            raise NotFound(f"unknown control {action!r}: one of {', '.join(CONTROLS)}")
        reason = reason.strip()
        if not reason:
            raise Refused(
                "a control needs a reason",
                [ErrorDetail("2011", "a control needs a reason")],
                Outcome("FAILED", b""),
            )
        job_id = f"web-{uuid.uuid4()}"
        payload = render_end_device_controls(
            EndDeviceControls(
                (
                    EndDeviceControl(
                        end_device_control_type=control_type,
                        mrid=job_id,
                        reason=reason,
                        end_devices=(IdentifiedObject(meter),),
                    ),
                )
            )
        )
        with bound(action=job_id):
            outcome = self._submit(principal, "create", "EndDeviceControls", payload)
        return ControlResult(job_id, outcome, [meter])

    def read_now(self, principal: Principal, meter: str, hours: int = 24) -> ReadResult:
        """An on-demand read of one meter's last ``hours``: a MeterReadSchedule create."""
        from cim_schemas.profiles.common import DateTimeInterval, IdentifiedObject
        from cim_schemas.profiles.meter_read_schedule import (
            MeterReadSchedule,
            TimeSchedule,
            render_meter_read_schedule,
        )

        end = datetime.now(UTC)
        start = end - timedelta(hours=hours)
        payload = render_meter_read_schedule(
            MeterReadSchedule(
                end_devices=(IdentifiedObject(meter),),
                time_schedules=(TimeSchedule(schedule_interval=DateTimeInterval(start, end)),),
            )
        )
        with bound(action=f"read-{meter}"):
            outcome = self._submit(principal, "create", "MeterReadSchedule", payload)
        return ReadResult(outcome, dict(outcome.counts))

    # -- groups --------------------------------------------------------------------------

    def groups(self, principal: Principal, include_closed: bool = False) -> list[EndDeviceGroup]:
        self.require(principal, SEE_GROUPS)
        with self.app.uow_factory() as uow:
            return uow.end_device_groups.list(
                self.utility_id(principal, uow), include_closed=include_closed
            )

    def group(self, principal: Principal, mrid: str) -> tuple[EndDeviceGroup, list[str]]:
        self.require(principal, SEE_GROUPS)
        with self.app.uow_factory() as uow:
            group = uow.end_device_groups.find(self.utility_id(principal, uow), DeviceRef(mrid))
            if group is None or group.id is None:
                raise NotFound(f"unknown end device group {mrid}")
            return group, uow.end_device_groups.members(group.id)

    # -- dead letters --------------------------------------------------------------------

    def _visible(self, principal: Principal, letter: DeadLetter) -> bool:
        if principal.utility is None:
            return True
        return (
            letter.metadata.get("utility") == principal.utility or letter.source == principal.name
        )

    def dead_letters(
        self, principal: Principal, include_resolved: bool = False, limit: int = 200
    ) -> list[DeadLetter]:
        self.require(principal, SEE_DEAD_LETTERS)
        with self.app.uow_factory() as uow:
            letters = uow.dead_letters.list(include_resolved=include_resolved, limit=limit)
        return [d for d in letters if self._visible(principal, d)]

    def dead_letter(
        self, principal: Principal, dead_letter_id: int
    ) -> tuple[DeadLetter, list[tuple[str, datetime, str | None]]]:
        self.require(principal, SEE_DEAD_LETTERS)
        with self.app.uow_factory() as uow:
            letter = uow.dead_letters.get(dead_letter_id)
            if letter is None or not self._visible(principal, letter):
                raise NotFound(f"no dead letter {dead_letter_id}")
            steps = uow.messages.lifecycle(letter.message_log_id) if letter.message_log_id else []
        return letter, steps

    def replay(self, principal: Principal, dead_letter_id: int) -> Outcome:
        from hub.replay import replay

        self.require(principal, REPLAY_DEAD_LETTERS)
        letter, _ = self.dead_letter(principal, dead_letter_id)
        if letter.resolved_at is not None:
            raise Refused(
                f"dead letter {dead_letter_id} is resolved already",
                [ErrorDetail("2009", f"dead letter {dead_letter_id} is resolved already")],
                Outcome("FAILED", b""),
            )
        with bound(action=f"replay-{dead_letter_id}"):
            return replay(self.app, dead_letter_id)

    def dismiss(self, principal: Principal, dead_letter_id: int) -> None:
        self.require(principal, DISMISS_DEAD_LETTERS)
        self.dead_letter(principal, dead_letter_id)  # visible to this principal
        with bound(action=f"dismiss-{dead_letter_id}"):
            if not self.app.message_journal.dismiss(dead_letter_id, principal.name):
                raise Refused(
                    f"dead letter {dead_letter_id} is resolved already",
                    [ErrorDetail("2009", f"dead letter {dead_letter_id} is resolved already")],
                    Outcome("FAILED", b""),
                )

    # -- audit log -----------------------------------------------------------------------

    def audit_actors(self, principal: Principal) -> frozenset[str] | None:
        """Whose entries the principal may see: a user scoped to a utility sees what the
        users of that utility did (the audit log records users, not utilities); a user
        without one sees every entry (None), the system's and refused callers' too."""
        if principal.utility is None:
            return None
        return frozenset(u.name for u in self.app.settings.users if u.utility == principal.utility)

    def audit(self, principal: Principal, query: AuditQuery) -> list[AuditRecord]:
        """The audit entries the query selects that the principal may see, newest first."""
        self.require(principal, SEE_AUDIT)
        visible = self.audit_actors(principal)
        if visible is not None:
            actors = visible if query.actors is None else query.actors & visible
            query = replace(query, actors=actors)
        with self.app.uow_factory() as uow:
            return uow.audit.query(query)


def iter_json_readings(rows: list[StoredReading]) -> Iterator[dict[str, Any]]:
    for r in rows:
        yield {
            "meter": r.device_mrid,
            "reading_type": r.reading_type,
            "ts": r.ts.isoformat(),
            "value": str(r.value),
            "quality": codes_of(r.quality),
            # what came with the qualities and a register's reason (mdm/qualities.py)
            "notes": json.loads(r.quality.partition(NOTES)[2]) if NOTES in r.quality else None,
            "version": r.version,
            "recorded_at": r.recorded_at.isoformat(),
        }


@functools.lru_cache(maxsize=4096)
def _json_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def _quality_json(quality: str) -> str:
    """``"quality":<codes>,"notes":<the notes' JSON, as stored, or null>``."""
    codes, sep, notes = quality.partition(NOTES)
    return f'"quality":{_json_text(codes)},"notes":{notes if sep else "null"}'


def readings_json(rows: Sequence[ReadingRecord]) -> str:
    """The JSON array of :func:`iter_json_readings` for ``rows``, written directly from
    the store's text: a meter-day is 96 objects whose texts (mRID, reading type,
    quality) repeat, so each distinct text is encoded once, and instants and values are
    already JSON-safe text (tests/unit/web/test_api.py: equal to json.dumps of the plain
    form)."""
    text = _json_text
    quality = _quality_json
    return (
        "["
        + ",".join(
            [
                f'{{"meter":{text(m)},"reading_type":{text(rt)},"ts":"{ts}","value":"{v}",'
                f'{quality(q)},"version":{ver},"recorded_at":"{rec}"}}'
                for m, rt, ts, v, q, ver, rec in rows
            ]
        )
        + "]"
    )
