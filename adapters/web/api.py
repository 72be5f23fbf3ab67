"""The JSON API under ``/api``: what adapters/web/operations.py offers, as JSON.

Every route is declared once with :data:`SPEC` (its OpenAPI entry, served at
``/api/openapi.json`` and readable at ``/api/docs``) and registered on the blueprint.
Instants are ISO 8601 with offset; periods are ``(start, end]`` as everywhere in
amihub; values are exact decimals as strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, Field

from adapters.web.context import web
from adapters.web.openapi import ApiSpec, Param
from adapters.web.operations import (
    ControlResult,
    Operations,
    Refused,
    iter_json_readings,
    readings_json,
)
from hub.messages import Outcome
from mdm.groups import EndDeviceGroup
from mdm.hes_jobs import HeadEndJob
from mdm.model import EndDevice, EndDeviceEvent, Installation, UsagePoint
from mdm.ports import AuditQuery, AuditRecord, DeadLetter

api = Blueprint("api", __name__, url_prefix="/api")
SPEC = ApiSpec(
    api,
    "amihub operator API",
    "1",
    "Meters, usage points, readings, events, head-end jobs, controls, end device groups, "
    "dead letters and the audit log, behind the users, permissions and utility of "
    "`[[users]]` (HTTP Basic, or the web UI's session cookie with the `X-CSRF-Token` "
    "header on changes). "
    "Periods are `(start, end]`; values are exact decimals as strings.",
)


# -- models (the OpenAPI schemas; responses are built as plain dicts of the same shape) ----


class Installed(BaseModel):
    meter: str
    usage_point: str
    start: datetime
    end: datetime | None = None


class Relay(BaseModel):
    state: str = Field(description="connected | disconnected")
    at: datetime
    job: str | None = None


class Meter(BaseModel):
    mrid: str
    name: str | None = None
    serial_number: str | None = None
    kind: str
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    state: str
    installations: list[Installed] = Field(default_factory=list)
    relay: Relay | None = Field(None, description="the last connect / disconnect outcome")


class MeterList(BaseModel):
    meters: list[Meter]


class UsagePointOut(BaseModel):
    mrid: str
    name: str | None = None
    service_category: str
    status: str
    location: str | None = None
    transformer_area: str | None = None
    meters: list[Installed] = Field(default_factory=list, description="installed now")


class UsagePointList(BaseModel):
    usage_points: list[UsagePointOut]


class Hit(BaseModel):
    kind: str = Field(description="meter | usage_point")
    mrid: str
    name: str | None = None
    serial_number: str | None = None
    state: str
    linked: str | None = Field(None, description="the meter / usage point installed together now")
    matched: str


class SearchResult(BaseModel):
    query: str
    hits: list[Hit]


class Reading(BaseModel):
    meter: str
    reading_type: str
    ts: datetime = Field(description="end of the interval, or the register's instant")
    value: str = Field(description="exact decimal")
    quality: str = Field(description="comma-separated ReadingQualityType codes, empty = valid")
    notes: dict[str, Any] | None = Field(
        default=None,
        description="what came with the reading beyond its codes, as sent: q = each "
        "ReadingQuality's comment, source, timeStamp (in the order of the codes), reason = "
        "a register reading's reason (docs/store.md)",
    )
    version: int = Field(description="1 = as first received; higher = edited / re-sent")
    recorded_at: datetime


class Readings(BaseModel):
    start: datetime | None = None
    end: datetime | None = None
    count: int
    readings: list[Reading]


class Versions(BaseModel):
    versions: list[Reading] = Field(description="newest first")


class Event(BaseModel):
    mrid: str | None = None
    meter: str
    event_type: str
    created_at: datetime
    reason: str | None = None
    severity: str | None = None
    details: dict[str, str] = Field(default_factory=dict)


class Events(BaseModel):
    events: list[Event]


class Job(BaseModel):
    mrid: str
    kind: str
    state: str
    control_type: str | None = None
    targets: list[str]
    created_at: datetime
    due_at: datetime
    finished_at: datetime | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    runs: int
    progress: dict[str, int] | None = Field(
        None, description="done: devices with an outcome; of: devices targeted"
    )
    events: list[Event] | None = None


class Jobs(BaseModel):
    jobs: list[Job]


class ControlIn(BaseModel):
    reason: str = Field(min_length=1, description="why (kept with the job and its events)")


class ControlOut(BaseModel):
    job: str = Field(description="the control job's mRID: GET /api/jobs/{job} follows it")
    result: str
    devices: list[str]
    message_log_id: int | None = None


class ReadIn(BaseModel):
    hours: int = Field(24, ge=1, le=24 * 31, description="the last N hours")


class ReadOut(BaseModel):
    result: str
    counts: dict[str, int]
    errors: list[dict[str, Any]] = Field(default_factory=list)


class Group(BaseModel):
    mrid: str
    name: str
    description: str | None = None
    created_at: datetime | None = None
    closed_at: datetime | None = None
    members: int
    member_mrids: list[str] | None = None


class Groups(BaseModel):
    groups: list[Group]


class DeadLetterOut(BaseModel):
    id: int
    source: str
    endpoint: str
    received_at: datetime
    error_code: str
    reason: str
    truncated: bool
    replay_count: int
    resolved_at: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(None, description="the input kept (one dead letter only)")
    lifecycle: list[dict[str, Any]] | None = None


class DeadLetters(BaseModel):
    dead_letters: list[DeadLetterOut]


class ReplayOut(BaseModel):
    result: str
    errors: list[dict[str, Any]]
    dead_letter_id: int | None = Field(None, description="a new dead letter if it failed again")


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    user: str = Field(description="who did it (a user, amihub itself, or a refused caller)")
    action: str
    object_type: str
    object_id: str | None = None
    details: str | None = None


class AuditPage(BaseModel):
    entries: list[AuditEntryOut] = Field(description="newest first")
    next: str | None = Field(
        None, description="the next (older) page's URL; null: this is the last page"
    )


# -- helpers -------------------------------------------------------------------------------


def _ops() -> Operations:
    return web().ops


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":"), default=str),
        status=status,
        mimetype="application/json",
    )


def _instant(name: str) -> datetime | None:
    text = request.args.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"query parameter {name}={text!r} is not an ISO 8601 instant") from None
    if value.tzinfo is None:
        raise BadRequest(f"query parameter {name}={text!r} has no time zone offset")
    return value.astimezone(UTC)


def _int(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"query parameter {name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name}={value} is not within {low}..{high}")
    return value


def _body(model: type[BaseModel]) -> Any:
    from pydantic import ValidationError

    raw = request.get_data(cache=False)
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise BadRequest(f"request body: {problems}") from None


class BadRequest(Exception):
    pass


def installed(i: Installation) -> dict[str, Any]:
    return {
        "meter": i.device_mrid,
        "usage_point": i.usage_point_mrid,
        "start": i.start.isoformat(),
        "end": i.end.isoformat() if i.end else None,
    }


def meter_json(d: EndDevice, history: list[Installation] | None = None) -> dict[str, Any]:
    return {
        "mrid": d.mrid,
        "name": d.name,
        "serial_number": d.serial_number,
        "kind": str(d.kind),
        "manufacturer": d.manufacturer,
        "model": d.model,
        "firmware_version": d.firmware_version,
        "state": str(d.state),
        "installations": [installed(i) for i in history or []],
    }


def usage_point_json(u: UsagePoint, meters: list[Installation] | None = None) -> dict[str, Any]:
    return {
        "mrid": u.mrid,
        "name": u.name,
        "service_category": str(u.service_category),
        "status": str(u.status),
        "location": u.location,
        "transformer_area": u.transformer_area,
        "meters": [installed(i) for i in meters or []],
    }


def event_json(e: EndDeviceEvent) -> dict[str, Any]:
    return {
        "mrid": e.mrid,
        "meter": e.device_mrid,
        "event_type": e.event_type,
        "created_at": e.created_at.isoformat(),
        "reason": e.reason,
        "severity": e.severity,
        "details": e.details,
    }


def job_json(j: HeadEndJob) -> dict[str, Any]:
    return {
        "mrid": j.mrid,
        "kind": str(j.kind),
        "state": j.state,
        "control_type": j.control_type,
        "targets": list(j.targets),
        "created_at": j.created_at.isoformat(),
        "due_at": j.due_at.isoformat(),
        "finished_at": j.finished_at.isoformat() if j.finished_at else None,
        "last_outcome": j.last_outcome,
        "last_error": j.last_error,
        "runs": j.runs,
    }


def group_json(grp: EndDeviceGroup) -> dict[str, Any]:
    return {
        "mrid": grp.mrid,
        "name": grp.name,
        "description": grp.description,
        "created_at": grp.created_at.isoformat() if grp.created_at else None,
        "closed_at": grp.closed_at.isoformat() if grp.closed_at else None,
        "members": grp.members,
    }


def dead_letter_json(d: DeadLetter) -> dict[str, Any]:
    return {
        "id": d.id,
        "source": d.source,
        "endpoint": d.endpoint,
        "received_at": d.received_at.isoformat(),
        "error_code": d.error_code,
        "reason": d.reason,
        "truncated": d.truncated,
        "replay_count": d.replay_count,
        "resolved_at": d.resolved_at.isoformat() if d.resolved_at else None,
        "metadata": d.metadata,
    }


def errors_json(outcome: Outcome) -> list[dict[str, Any]]:
    return [{"code": e.code, "reason": e.reason, "xpath": e.xpath} for e in outcome.errors]


MRID = Param("mrid", "path", "mRID")
PERIOD = (
    Param("start", "query", "period start (exclusive), ISO 8601 with offset; default: end - 1 day"),
    Param("end", "query", "period end (inclusive), ISO 8601 with offset; default: now"),
)
_INTEGER = {"type": "integer"}
DEAD_LETTER_ID = Param("id", "path", "dead letter id", True, _INTEGER)
READING_TYPE = Param("reading_type", "query", "ReadingType code (repeat for several); default all")


# -- routes --------------------------------------------------------------------------------


@SPEC.route(
    "/api/search",
    "get",
    summary="Meters and usage points by any identifier (mRID, name, serial number)",
    tag="master data",
    permission="get:MeterConfig or get:UsagePointConfig",
    params=(Param("q", "query", "text to look for (case-insensitive, part of it)", True),),
    response=SearchResult,
)
def search() -> Response:
    text = request.args.get("q", "").strip()
    if not text:
        raise BadRequest("query parameter q is missing")
    hits = _ops().search(g.principal, text)
    return _json({"query": text, "hits": [h.__dict__ for h in hits]})


@SPEC.route(
    "/api/meters",
    "get",
    summary="The utility's meters",
    tag="master data",
    permission="get:MeterConfig",
    response=MeterList,
)
def meters() -> Response:
    return _json({"meters": [meter_json(d) for d in _ops().meters(g.principal)]})


@SPEC.route(
    "/api/meters/{mrid}",
    "get",
    summary="One meter: state, installation history, relay state",
    tag="master data",
    permission="get:MeterConfig",
    params=(MRID,),
    response=Meter,
)
def meter(mrid: str) -> Response:
    view = _ops().meter(g.principal, mrid)
    data = meter_json(view.device, view.installations)
    data["relay"] = (
        {"state": view.relay.state, "at": view.relay.at.isoformat(), "job": view.relay.job}
        if view.relay
        else None
    )
    return _json(data)


@SPEC.route(
    "/api/usage-points",
    "get",
    summary="The utility's usage points",
    tag="master data",
    permission="get:UsagePointConfig",
    response=UsagePointList,
)
def usage_points() -> Response:
    return _json({"usage_points": [usage_point_json(u) for u in _ops().usage_points(g.principal)]})


@SPEC.route(
    "/api/usage-points/{mrid}",
    "get",
    summary="One usage point and the meters installed there now",
    tag="master data",
    permission="get:UsagePointConfig",
    params=(MRID,),
    response=UsagePointOut,
)
def usage_point(mrid: str) -> Response:
    view = _ops().usage_point(g.principal, mrid)
    return _json(usage_point_json(view.usage_point, view.meters))


def _period() -> tuple[datetime, datetime]:
    end = _instant("end") or datetime.now(UTC)
    start = _instant("start") or end - timedelta(days=1)
    if start >= end:
        raise BadRequest("start must be before end")
    return start, end


def _readings(**target: str) -> Response:
    start, end = _period()
    types = tuple(request.args.getlist("reading_type"))
    limit = web().settings.max_readings
    try:
        rows = _ops().reading_records(
            g.principal, reading_types=types, start=start, end=end, limit=limit, **target
        )
    except OverflowError as exc:
        raise BadRequest(str(exc)) from None
    # instants and a count are JSON as they are written
    body = (
        f'{{"start":"{start.isoformat()}","end":"{end.isoformat()}","count":{len(rows)},'
        f'"readings":{readings_json(rows)}}}'
    )
    return Response(body, mimetype="application/json")


_READ_PARAMS = (MRID, *PERIOD, READING_TYPE)


@SPEC.route(
    "/api/meters/{mrid}/readings",
    "get",
    summary="A meter's readings (interval and register; current versions) in a period",
    tag="readings",
    permission="get:MeterReadings",
    params=_READ_PARAMS,
    response=Readings,
)
def meter_readings(mrid: str) -> Response:
    return _readings(meter=mrid)


@SPEC.route(
    "/api/usage-points/{mrid}/readings",
    "get",
    summary="The readings of the meters installed at a usage point during the period",
    tag="readings",
    permission="get:MeterReadings",
    params=_READ_PARAMS,
    response=Readings,
)
def usage_point_readings(mrid: str) -> Response:
    return _readings(usage_point=mrid)


@SPEC.route(
    "/api/groups/{mrid}/readings",
    "get",
    summary="The readings of an end device group's members (as they are now)",
    tag="readings",
    permission="get:MeterReadings",
    params=_READ_PARAMS,
    response=Readings,
)
def group_readings(mrid: str) -> Response:
    return _readings(group=mrid)


@SPEC.route(
    "/api/meters/{mrid}/readings/versions",
    "get",
    summary="Every version of one reading (edits supersede, never overwrite)",
    tag="readings",
    permission="get:MeterReadings",
    params=(
        MRID,
        Param("reading_type", "query", "ReadingType code", True),
        Param("ts", "query", "the reading's instant, ISO 8601 with offset", True),
    ),
    response=Versions,
)
def reading_versions(mrid: str) -> Response:
    reading_type = request.args.get("reading_type")
    ts = _instant("ts")
    if not reading_type or ts is None:
        raise BadRequest("query parameters reading_type and ts are required")
    rows = _ops().reading_versions(g.principal, mrid, reading_type, ts)
    return _json({"versions": list(iter_json_readings(rows))})


@SPEC.route(
    "/api/meters/{mrid}/events",
    "get",
    summary="A meter's events, newest first",
    tag="events",
    permission="get:EndDeviceEvents",
    params=(MRID, *PERIOD, Param("limit", "query", "at most this many (default 500)")),
    response=Events,
)
def meter_events(mrid: str) -> Response:
    return _events(mrid)


@SPEC.route(
    "/api/events",
    "get",
    summary="The utility's events, newest first",
    tag="events",
    permission="get:EndDeviceEvents",
    params=(*PERIOD, Param("limit", "query", "at most this many (default 500)")),
    response=Events,
)
def events() -> Response:
    return _events(None)


def _events(meter: str | None) -> Response:
    start, end = _period()
    limit = _int("limit", 500, 1, 10_000)
    found = _ops().events(g.principal, meter=meter, start=start, end=end, limit=limit)
    return _json({"events": [event_json(e) for e in found]})


@SPEC.route(
    "/api/jobs",
    "get",
    summary="Head-end jobs (controls and read schedules), newest first",
    tag="jobs",
    permission="get:EndDeviceControls",
    params=(Param("limit", "query", "at most this many (default 200)"),),
    response=Jobs,
)
def jobs() -> Response:
    found = _ops().jobs(g.principal, limit=_int("limit", 200, 1, 5000))
    return _json({"jobs": [job_json(j) for j in found]})


@SPEC.route(
    "/api/jobs/{mrid}",
    "get",
    summary="One head-end job with its progress and events",
    tag="jobs",
    permission="get:EndDeviceControls",
    params=(MRID,),
    response=Job,
)
def job(mrid: str) -> Response:
    view = _ops().job(g.principal, mrid)
    data = job_json(view.job)
    done, total = view.progress
    data["progress"] = {"done": done, "of": total}
    data["events"] = [event_json(e) for e in view.events]
    return _json(data)


def _control(mrid: str, action: str) -> Response:
    body = _body(ControlIn)
    result: ControlResult = _ops().control(g.principal, mrid, action, body.reason)
    return _json(
        {
            "job": result.job_id,
            "result": result.outcome.result,
            "devices": result.devices,
            "message_log_id": result.outcome.message_log_id,
        },
        202,
    )


@SPEC.route(
    "/api/meters/{mrid}/disconnect",
    "post",
    summary="Remote disconnect now (an EndDeviceControls create, 3.31.0.23)",
    tag="controls",
    permission="create:EndDeviceControls",
    params=(MRID,),
    body=ControlIn,
    response=ControlOut,
    status=202,
)
def disconnect(mrid: str) -> Response:
    return _control(mrid, "disconnect")


@SPEC.route(
    "/api/meters/{mrid}/reconnect",
    "post",
    summary="Remote reconnect now (an EndDeviceControls create, 3.31.0.18)",
    tag="controls",
    permission="create:EndDeviceControls",
    params=(MRID,),
    body=ControlIn,
    response=ControlOut,
    status=202,
)
def reconnect(mrid: str) -> Response:
    return _control(mrid, "reconnect")


@SPEC.route(
    "/api/meters/{mrid}/read",
    "post",
    summary="On-demand read of the last hours (a MeterReadSchedule create): stored, counted",
    tag="controls",
    permission="create:MeterReadSchedule",
    params=(MRID,),
    body=ReadIn,
    response=ReadOut,
)
def read_now(mrid: str) -> Response:
    body = _body(ReadIn)
    result = _ops().read_now(g.principal, mrid, body.hours)
    return _json(
        {
            "result": result.outcome.result,
            "counts": result.counts,
            "errors": errors_json(result.outcome),
        }
    )


@SPEC.route(
    "/api/groups",
    "get",
    summary="End device groups with their member counts",
    tag="groups",
    permission="get:EndDeviceGroups",
    params=(Param("closed", "query", "true: closed groups too"),),
    response=Groups,
)
def groups() -> Response:
    closed = request.args.get("closed", "").lower() in ("1", "true", "yes")
    return _json({"groups": [group_json(x) for x in _ops().groups(g.principal, closed)]})


@SPEC.route(
    "/api/groups/{mrid}",
    "get",
    summary="One end device group and its members",
    tag="groups",
    permission="get:EndDeviceGroups",
    params=(MRID,),
    response=Group,
)
def group(mrid: str) -> Response:
    found, members = _ops().group(g.principal, mrid)
    data = group_json(found)
    data["member_mrids"] = members
    return _json(data)


@SPEC.route(
    "/api/dead-letters",
    "get",
    summary="Inputs that failed permanently (open ones; all=true: resolved too)",
    tag="dead letters",
    permission="get:DeadLetters",
    params=(Param("all", "query", "true: resolved too"),),
    response=DeadLetters,
)
def dead_letters() -> Response:
    everything = request.args.get("all", "").lower() in ("1", "true", "yes")
    found = _ops().dead_letters(g.principal, everything)
    return _json({"dead_letters": [dead_letter_json(d) for d in found]})


@SPEC.route(
    "/api/dead-letters/{id}",
    "get",
    summary="One dead letter with the input kept and its lifecycle",
    tag="dead letters",
    permission="get:DeadLetters",
    params=(DEAD_LETTER_ID,),
    response=DeadLetterOut,
)
def dead_letter(id: int) -> Response:
    letter, steps = _ops().dead_letter(g.principal, id)
    data = dead_letter_json(letter)
    data["body"] = letter.body.decode("utf-8", errors="replace")
    data["lifecycle"] = [
        {"state": s, "at": at.isoformat(), "detail": detail} for s, at, detail in steps
    ]
    return _json(data)


@SPEC.route(
    "/api/dead-letters/{id}/replay",
    "post",
    summary="Run a dead letter's input through the hub again (resolved when OK)",
    tag="dead letters",
    permission="replay:DeadLetters",
    params=(DEAD_LETTER_ID,),
    response=ReplayOut,
)
def replay(id: int) -> Response:
    outcome = _ops().replay(g.principal, id)
    return _json(
        {
            "result": outcome.result,
            "errors": errors_json(outcome),
            "dead_letter_id": outcome.dead_letter_id,
        }
    )


@SPEC.route(
    "/api/dead-letters/{id}/dismiss",
    "post",
    summary="Mark a dead letter resolved without replaying it (audited)",
    tag="dead letters",
    permission="dismiss:DeadLetters",
    params=(DEAD_LETTER_ID,),
    status=204,
)
def dismiss(id: int) -> Response:
    _ops().dismiss(g.principal, id)
    return Response(status=204)


def audit_json(e: AuditRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "user": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "details": e.details,
    }


def audit_query(limit_default: int) -> AuditQuery:
    """The audit filters of the request's query string (the API's and the UI's)."""
    start, end = _instant("start"), _instant("end")
    if start is not None and end is not None and start >= end:
        raise BadRequest("start must be before end")
    user = request.args.get("user") or None
    before = request.args.get("before")
    return AuditQuery(
        start=start,
        end=end,
        actors=frozenset({user}) if user else None,
        action=request.args.get("action") or None,
        object_type=request.args.get("object_type") or None,
        object_id=request.args.get("object_id") or None,
        before=_int("before", 0, 1, 2**62) if before else None,
        limit=_int("limit", limit_default, 1, 1000),
    )


@SPEC.route(
    "/api/audit",
    "get",
    summary="The audit log (who did what to which object), newest first, in pages",
    tag="audit",
    permission="get:AuditLog",
    params=(
        Param("start", "query", "after this instant (exclusive), ISO 8601 with offset"),
        Param("end", "query", "up to this instant (inclusive), ISO 8601 with offset"),
        Param("user", "query", "who (exact user name)"),
        Param("action", "query", "what (exact: create, change, delete, dismiss, refused, ...)"),
        Param("object_type", "query", "the object's type (exact: Meter, DeadLetter, ...)"),
        Param("object_id", "query", "the object's id or mRID (exact)"),
        Param("before", "query", "entries older than this id (the next page)", False, _INTEGER),
        Param("limit", "query", "at most this many (default 100, at most 1000)", False, _INTEGER),
    ),
    response=AuditPage,
)
def audit() -> Response:
    query = audit_query(100)
    entries = _ops().audit(g.principal, query)
    following = None
    if len(entries) == query.limit:
        args = request.args.to_dict()
        args["before"] = str(entries[-1].id)
        following = f"{request.path}?{urlencode(args)}"
    return _json({"entries": [audit_json(e) for e in entries], "next": following})


__all__ = ["SPEC", "BadRequest", "Refused", "api"]
