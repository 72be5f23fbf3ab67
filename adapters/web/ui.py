"""The web UI: server-rendered pages (Jinja2), plain forms and links, no script.

Every page is built from adapters/web/operations.py, as the JSON API is. A control
(disconnect, reconnect) is asked for on the device page, confirmed on a page of its own
with a reason (required), and followed on the job's page, which reloads itself until
the job has finished. The readings page draws the interval profile as SVG on the
server (adapters/web/chart.py) beside the table of the same readings.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from html import escape
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from markupsafe import Markup

from adapters.web.chart import Point, profile_svg, quality_kind
from adapters.web.context import web
from adapters.web.operations import CONTROLS, Operations, Refused
from cim_schemas.codes.event_type import EndDeviceEventType
from cim_schemas.codes.quality import ReadingQualityType
from cim_schemas.codes.reading_type import ReadingType
from hub.messages import Outcome
from mdm.ports import AuditQuery, ReadingRecord
from mdm.qualities import codes_of

ui = Blueprint("ui", __name__)

PERIODS = {1: "1 day", 7: "7 days", 31: "31 days"}


def _ops() -> Operations:
    return web().ops


def describe_type(code: str) -> str:
    try:
        return ReadingType.parse(code).describe()
    except ValueError:
        return code


def describe_event(code: str) -> str:
    try:
        return EndDeviceEventType.parse(code).describe()
    except (ValueError, KeyError):
        return code


@functools.lru_cache(maxsize=1024)
def describe_quality(quality: str) -> str:
    if not codes_of(quality):
        return "valid"
    names = []
    for code in codes_of(quality).split(","):
        try:
            names.append(ReadingQualityType.parse(code).describe())
        except ValueError:
            names.append(code)
    return "; ".join(names)


@ui.app_template_global()
def csrf_token() -> str:
    return str(session.get("csrf", ""))


@ui.app_template_filter("when")
def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@ui.app_context_processor
def _common() -> dict[str, Any]:
    return {
        "user": g.get("principal"),
        "describe_type": describe_type,
        "describe_event": describe_event,
        "describe_quality": describe_quality,
        "quality_kind": quality_kind,
    }


# -- login -------------------------------------------------------------------------------


@ui.route("/login", methods=["GET", "POST"])
def login() -> Any:
    from adapters.web.app import check_login

    target = request.values.get("next") or url_for("ui.home")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("ui.home")
    error = None
    if request.method == "POST":
        name = request.form.get("username", "")
        if check_login(name, request.form.get("password", "")) is not None:
            return redirect(target)
        error = "Wrong user name or password."
    return render_template("login.html", error=error, next=target), 401 if error else 200


@ui.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("ui.login"))


# -- search ------------------------------------------------------------------------------


@ui.get("/")
def home() -> str:
    query = request.args.get("q", "").strip()
    hits = _ops().search(g.principal, query) if query else []
    return render_template("search.html", query=query, hits=hits)


# -- meters ------------------------------------------------------------------------------


@ui.get("/ui/meters/<mrid>")
def meter(mrid: str) -> str:
    view = _ops().meter(g.principal, mrid)
    jobs = []
    if g.principal.may("get", "EndDeviceControls"):
        for job_id in _ops().device_jobs(g.principal, mrid)[:10]:
            jobs.append(_ops().job(g.principal, job_id).job)
    return render_template("meter.html", view=view, jobs=jobs, controls=list(CONTROLS))


@ui.route("/ui/meters/<mrid>/control/<action>", methods=["GET", "POST"])
def control(mrid: str, action: str) -> Any:
    view = _ops().meter(g.principal, mrid)
    if action not in CONTROLS:
        return render_template("error.html", status=404, message=f"no control {action}"), 404
    error, errors = None, []
    if request.method == "POST":
        reason = request.form.get("reason", "").strip()
        if not reason:
            error = "Give a reason: it is kept with the job and its events."
        else:
            try:
                result = _ops().control(g.principal, mrid, action, reason)
            except Refused as exc:
                error, errors = str(exc), exc.errors
            else:
                return redirect(url_for("ui.job", mrid=result.job_id))
    status = 422 if error else 200
    page = render_template("confirm.html", view=view, action=action, error=error, errors=errors)
    return page, status


@ui.post("/ui/meters/<mrid>/read")
def read_now(mrid: str) -> Any:
    view = _ops().meter(g.principal, mrid)
    try:
        result = _ops().read_now(g.principal, mrid, int(request.form.get("hours", "24")))
    except Refused as exc:
        return render_template("read.html", view=view, result=None, error=exc), 422
    return render_template("read.html", view=view, result=result, error=None)


def _period() -> tuple[date, int, datetime, datetime]:
    days = request.args.get("days", "1")
    span = int(days) if days.isdigit() and int(days) in PERIODS else 1
    text = request.args.get("end", "")
    try:
        last = date.fromisoformat(text) if text else datetime.now(UTC).date()
    except ValueError:
        last = datetime.now(UTC).date()
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    return last, span, end - timedelta(days=span), end


@ui.get("/ui/meters/<mrid>/readings")
def readings(mrid: str) -> str:
    view = _ops().meter(g.principal, mrid)
    last, span, start, end = _period()
    chosen = request.args.get("reading_type", "")
    # the readings repository's text records (one statement), as the API answers them
    rows = _ops().reading_records(
        g.principal,
        meter=mrid,
        start=start,
        end=end,
        reading_types=(chosen,) if chosen else (),
        limit=web().settings.max_readings,
    )
    by_type: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_type[row.reading_type].append(row)
    interval = [rt for rt in by_type if _interval(rt)]
    shown = chosen if chosen in by_type else (interval[0] if interval else next(iter(by_type), ""))
    series = by_type.get(shown, [])
    chart = ""
    if shown and _interval(shown):
        chart = profile_svg(
            [
                Point(datetime.fromisoformat(r.ts), Decimal(r.value), r.quality, r.version)
                for r in series
            ],
            title=f"{mrid}: {describe_type(shown)}, {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            unit=describe_type(shown).rsplit(" ", 1)[-1],
        )
    kinds = [quality_kind(r.quality) for r in series]
    counts = {k: kinds.count(k) for k in ("valid", "estimated", "edited", "flagged")}
    versions_url = url_for("ui.versions", mrid=mrid)
    return render_template(
        "readings.html",
        view=view,
        types=sorted(by_type),
        shown=shown,
        series=series,
        table=_table_rows(series, kinds, versions_url),
        chart=Markup(chart),  # noqa: S704 - built by chart.py, every text escaped there
        counts=counts,
        revised=sum(1 for r in series if r.version > 1),
        last=last,
        span=span,
        start=start,
        end=end,
        periods=PERIODS,
        prev_end=(last - timedelta(days=span)).isoformat(),
        next_end=(last + timedelta(days=span)).isoformat(),
    )


def _table_rows(rows: list[ReadingRecord], kinds: list[str], versions_url: str) -> Markup:
    """The readings table's body, rendered here in one pass: a meter-month is 2,976 rows
    and a template loop calling a filter per cell took most of the page's time."""
    out = []
    for r, kind in zip(rows, kinds, strict=True):
        version = f"v{r.version}"
        if r.version > 1:
            query = f"reading_type={escape(r.reading_type)}&amp;ts={escape(r.ts)}"
            version = f'<a href="{versions_url}?{query.replace("+", "%2B")}">{version}</a>'
        # the record's instant is ISO 8601 in UTC: its date and time of day as they are
        out.append(
            f'<tr class="{kind}"><td>{r.ts[:10]} {r.ts[11:19]} UTC</td>'
            f'<td class="num">{r.value}</td><td>{escape(describe_quality(r.quality))}</td>'
            f"<td>{version}</td></tr>"
        )
    return Markup("".join(out))  # noqa: S704 - every text escaped above


def _interval(code: str) -> bool:
    try:
        return ReadingType.parse(code).interval_minutes is not None
    except ValueError:
        return False


@ui.get("/ui/meters/<mrid>/versions")
def versions(mrid: str) -> str:
    reading_type = request.args.get("reading_type", "")
    ts = datetime.fromisoformat(request.args.get("ts", ""))
    rows = _ops().reading_versions(g.principal, mrid, reading_type, ts)
    return render_template("versions.html", mrid=mrid, reading_type=reading_type, ts=ts, rows=rows)


@ui.get("/ui/meters/<mrid>/events")
def events(mrid: str) -> str:
    days = request.args.get("days", "31")
    span = int(days) if days.isdigit() and 0 < int(days) <= 366 else 31
    end = datetime.now(UTC)
    found = _ops().events(g.principal, meter=mrid, start=end - timedelta(days=span), end=end)
    return render_template("events.html", mrid=mrid, events=found, span=span)


# -- usage points ------------------------------------------------------------------------


@ui.get("/ui/usage-points/<mrid>")
def usage_point(mrid: str) -> str:
    return render_template("usage_point.html", view=_ops().usage_point(g.principal, mrid))


# -- jobs --------------------------------------------------------------------------------


@ui.get("/ui/jobs")
def jobs() -> str:
    return render_template("jobs.html", jobs=_ops().jobs(g.principal, limit=200))


@ui.get("/ui/jobs/<mrid>")
def job(mrid: str) -> str:
    return render_template("job.html", view=_ops().job(g.principal, mrid))


# -- groups ------------------------------------------------------------------------------


@ui.get("/ui/groups")
def groups() -> str:
    return render_template("groups.html", groups=_ops().groups(g.principal, True))


@ui.get("/ui/groups/<mrid>")
def group(mrid: str) -> str:
    found, members = _ops().group(g.principal, mrid)
    return render_template("group.html", group=found, members=members)


# -- audit log ---------------------------------------------------------------------------

AUDIT_PAGE = 50


def _day(name: str) -> date | None:
    text = request.args.get(name, "")
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@ui.get("/ui/audit")
def audit() -> str:
    """The audit log, newest first, filtered by days, user, action and object; a page of
    :data:`AUDIT_PAGE` entries with a link to the older ones."""
    first, last = _day("from"), _day("to")
    before = request.args.get("before", "")
    filters = {k: request.args.get(k, "").strip() for k in ("user", "action", "object_type")}
    filters["object_id"] = request.args.get("object_id", "").strip()
    query = AuditQuery(
        start=datetime.combine(first, time(), UTC) if first else None,
        end=datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
        actors=frozenset({filters["user"]}) if filters["user"] else None,
        action=filters["action"] or None,
        object_type=filters["object_type"] or None,
        object_id=filters["object_id"] or None,
        before=int(before) if before.isdigit() else None,
        limit=AUDIT_PAGE,
    )
    entries = _ops().audit(g.principal, query)
    older = None
    if len(entries) == AUDIT_PAGE:
        args: dict[str, Any] = {k: v for k, v in request.args.items() if k != "before"}
        args["before"] = entries[-1].id
        older = url_for("ui.audit", **args)
    return render_template(
        "audit.html",
        entries=entries,
        filters=filters,
        first=first.isoformat() if first else "",
        last=last.isoformat() if last else "",
        older=older,
        scoped=g.principal.utility,
    )


# -- dead letters ------------------------------------------------------------------------


@ui.get("/ui/dead-letters")
def dead_letters() -> str:
    everything = request.args.get("all") == "1"
    return render_template(
        "dead_letters.html",
        letters=_ops().dead_letters(g.principal, everything),
        everything=everything,
    )


@ui.get("/ui/dead-letters/<int:ident>")
def dead_letter(ident: int) -> str:
    letter, steps = _ops().dead_letter(g.principal, ident)
    body = letter.body.decode("utf-8", errors="replace")
    return render_template(
        "dead_letter.html", letter=letter, steps=steps, body=body, outcome=None, error=None
    )


@ui.post("/ui/dead-letters/<int:ident>/replay")
def replay(ident: int) -> Any:
    outcome: Outcome | None = None
    error: str | None = None
    try:
        outcome = _ops().replay(g.principal, ident)
    except Refused as exc:
        error = str(exc)
    letter, steps = _ops().dead_letter(g.principal, ident)
    body = letter.body.decode("utf-8", errors="replace")
    page = render_template(
        "dead_letter.html", letter=letter, steps=steps, body=body, outcome=outcome, error=error
    )
    return page, 422 if error else 200


@ui.post("/ui/dead-letters/<int:ident>/dismiss")
def dismiss(ident: int) -> Any:
    with contextlib.suppress(Refused):
        _ops().dismiss(g.principal, ident)
    return redirect(url_for("ui.dead_letter", ident=ident))
