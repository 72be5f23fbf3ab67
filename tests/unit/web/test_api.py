"""The JSON API over real HTTP (SQLite here; test_api_postgres.py runs the same on
PostgreSQL): every endpoint, its permissions and utility scoping, the controls through
the pipeline to simulated meters over TCP, the OpenAPI document."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest
import requests

from adapters.web import api as api_models
from hes.simulator.meter import ControlState
from hub.samples import RT_A_PLUS_TOTAL
from mdm.ports import ReadingRecord
from tests.unit.web.conftest import DAY, Site, dead_letter, load_day, start_site, until


@pytest.fixture
def loaded(site: Site) -> Site:
    load_day(site)
    return site


def period(days: int = 1) -> dict[str, str]:
    return {"start": DAY.isoformat(), "end": (DAY + timedelta(days=days)).isoformat()}


def check_readings_and_versions(site: Site) -> None:
    s = site.session()
    meter = site.meters[0]
    got = s.get(f"{site.url}/api/meters/{meter}/readings", params=period(), timeout=10)
    assert got.status_code == 200, got.text
    body = api_models.Readings.model_validate(got.json())  # the documented shape
    assert body.count == 97  # 96 quarter-hours and the day's register
    interval = [r for r in body.readings if r.reading_type.startswith("0.0.2.")]
    assert len(interval) == 96
    assert interval[0].ts == DAY + timedelta(minutes=15)
    assert [(r.quality, r.version) for r in interval[:3]] == [("3.8.0", 2), ("3.7.0", 2), ("", 1)]
    # one reading's versions, newest first
    first = interval[0]
    versions = s.get(
        f"{site.url}/api/meters/{meter}/readings/versions",
        params={"reading_type": first.reading_type, "ts": first.ts.isoformat()},
        timeout=10,
    ).json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["value"] == first.value
    # a reading type filter, by usage point, and a period that holds nothing
    only = s.get(
        f"{site.url}/api/usage-points/UP-{meter}/readings",
        params={**period(), "reading_type": first.reading_type},
        timeout=10,
    ).json()
    assert only["count"] == 96
    empty = s.get(
        f"{site.url}/api/meters/{meter}/readings",
        params={"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"},
        timeout=10,
    ).json()
    assert empty["count"] == 0
    bad = s.get(f"{site.url}/api/meters/{meter}/readings", params={"start": "yesterday"})
    assert bad.status_code == 400
    assert "start" in bad.json()["error"]
    missing = s.get(f"{site.url}/api/meters/MTR-NOPE/readings", params=period(), timeout=10)
    assert missing.status_code == 404
    check_fast_path_equals_handler(site)


def check_fast_path_equals_handler(site: Site) -> None:
    """One meter's readings (the readings repository's text, one statement on
    PostgreSQL) equal the bus handler's, written as records; the API's JSON writer
    equals json.dumps of the plain form."""
    from adapters.web.context import WebContext

    ctx = site.web.wsgi.extensions["amihub"]
    assert isinstance(ctx, WebContext)
    ops = ctx.ops
    principal = ctx.users.principal("operator")
    assert principal is not None
    meter = site.meters[0]
    questions = [
        {"start": DAY, "end": DAY + timedelta(days=1)},
        {"start": DAY + timedelta(hours=3), "end": DAY + timedelta(hours=5)},
        {"start": None, "end": None},
        {"start": DAY, "end": DAY + timedelta(days=1), "reading_types": (RT_A_PLUS_TOTAL,)},
    ]
    for question in questions:
        fast = ops.reading_records(principal, meter=meter, limit=10_000, **question)  # type: ignore[arg-type]
        plain = ops.readings(principal, meter=meter, **question)  # type: ignore[arg-type]
        assert fast == [ReadingRecord.of(r) for r in plain], question
        assert fast
    with pytest.raises(OverflowError):
        ops.reading_records(principal, meter=meter, limit=10)
    with pytest.raises(OverflowError):
        ops.readings(principal, meter=meter, limit=10)
    # the API's direct JSON writer equals json.dumps of the plain form
    import json

    from adapters.web.operations import iter_json_readings, readings_json

    rows = ops.readings(principal, meter=meter)
    odd = [replace(rows[0], device_mrid='M "quoted" \\ ü', quality="3.8.0,1.4.9")]
    from mdm.qualities import Quality, pack

    noted = [replace(rows[0], quality=pack([Quality("3.8.0", 'a "c" \\', "MDM")], "billing"))]
    for sample in (rows, odd, noted, []):
        records = [ReadingRecord.of(r) for r in sample]
        assert json.loads(readings_json(records)) == list(iter_json_readings(sample))
    [plain_json] = iter_json_readings(noted)  # the codes, and what came with them
    assert (plain_json["quality"], plain_json["notes"]) == (
        "3.8.0",
        {"q": [{"comment": 'a "c" \\', "source": "MDM"}], "reason": "billing"},
    )


def test_readings_quality_and_versions(loaded: Site) -> None:
    check_readings_and_versions(loaded)


def test_search_meters_usage_points_groups(loaded: Site) -> None:
    site, s = loaded, loaded.session()
    meter = site.meters[0]
    # any identifier: mRID, serial number, name, the usage point's mRID
    for text in (meter, f"SN-{meter}", f"name-{meter}".upper()):
        found = s.get(f"{site.url}/api/search", params={"q": text}, timeout=10)
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert hits[0]["mrid"] == meter, (text, hits)
        assert hits[0]["linked"] == f"UP-{meter}"
    hits = s.get(f"{site.url}/api/search", params={"q": f"UP-{meter}"}, timeout=10).json()["hits"]
    assert [(h["kind"], h["mrid"], h["linked"]) for h in hits] == [
        ("usage_point", f"UP-{meter}", meter)
    ]
    assert s.get(f"{site.url}/api/search", timeout=10).status_code == 400

    listed = s.get(f"{site.url}/api/meters", timeout=10).json()["meters"]
    assert sorted(m["mrid"] for m in listed) == sorted(site.meters)
    one = api_models.Meter.model_validate(s.get(f"{site.url}/api/meters/{meter}").json())
    assert one.state == "installed"
    assert [(i.usage_point, i.end) for i in one.installations] == [(f"UP-{meter}", None)]
    assert one.relay is None  # never switched through amihub
    up = s.get(f"{site.url}/api/usage-points/UP-{meter}", timeout=10).json()
    assert [m["meter"] for m in up["meters"]] == [meter]
    assert len(s.get(f"{site.url}/api/usage-points", timeout=10).json()["usage_points"]) == 3
    assert s.get(f"{site.url}/api/meters/MTR-NOPE", timeout=10).status_code == 404

    # a group, through the CIM noun as partners make them
    from hub.samples import end_device_groups

    made = site.send(
        end_device_groups(
            "create", [{"mrid": "G-1", "name": "round 1", "devices": site.meters[:2]}]
        )
    )
    assert made.result == "OK", made.errors
    groups = s.get(f"{site.url}/api/groups", timeout=10).json()["groups"]
    assert [(x["mrid"], x["members"]) for x in groups] == [("G-1", 2)]
    one_group = s.get(f"{site.url}/api/groups/G-1", timeout=10).json()
    assert one_group["member_mrids"] == sorted(site.meters[:2])
    by_group = s.get(f"{site.url}/api/groups/G-1/readings", params=period(), timeout=10).json()
    assert by_group["count"] == 97  # only the first meter has readings that day


def test_disconnect_reconnect_and_read_through_the_pipeline(site: Site) -> None:
    s, meter = site.session(), site.meters[0]
    refused = s.post(f"{site.url}/api/meters/{meter}/disconnect", json={}, timeout=10)
    assert refused.status_code == 400
    assert "reason" in refused.json()["error"]

    started = s.post(
        f"{site.url}/api/meters/{meter}/disconnect",
        json={"reason": "customer moved out"},
        timeout=10,
    )
    assert started.status_code == 202, started.text
    job = started.json()["job"]

    def finished() -> bool:
        return s.get(f"{site.url}/api/jobs/{job}", timeout=10).json()["state"] == "succeeded"

    until(finished)
    assert site.fleet.meters[0].control_state == ControlState.DISCONNECTED
    detail = api_models.Job.model_validate(s.get(f"{site.url}/api/jobs/{job}").json())
    assert detail.progress == {"done": 1, "of": 1}
    assert detail.control_type == "3.31.0.23"
    assert {e.event_type for e in detail.events or []} == {"3.31.0.23", "3.31.0.68"}
    relay = s.get(f"{site.url}/api/meters/{meter}", timeout=10).json()["relay"]
    assert (relay["state"], relay["job"]) == ("disconnected", job)
    # the request went through the pipeline: in the message log as the operator's
    with site.app.uow_factory() as uow:
        logged = uow.messages.get(started.json()["message_log_id"])
    assert logged is not None
    assert (logged.source, logged.verb, logged.noun, logged.result) == (
        "operator",
        "create",
        "EndDeviceControls",
        "OK",
    )
    jobs = s.get(f"{site.url}/api/jobs", timeout=10).json()["jobs"]
    assert jobs[0]["mrid"] == job

    back = s.post(
        f"{site.url}/api/meters/{meter}/reconnect", json={"reason": "new tenant"}, timeout=10
    ).json()["job"]
    until(lambda: s.get(f"{site.url}/api/jobs/{back}", timeout=10).json()["state"] == "succeeded")
    assert site.fleet.meters[0].control_state == ControlState.CONNECTED
    assert s.get(f"{site.url}/api/meters/{meter}").json()["relay"]["state"] == "connected"

    events = s.get(f"{site.url}/api/meters/{meter}/events", timeout=10).json()["events"]
    assert events[0]["event_type"] == "3.31.0.42"  # newest first
    assert len(s.get(f"{site.url}/api/events", timeout=10).json()["events"]) >= 4

    # an on-demand read: stored in the request, counted in the answer
    read = s.post(f"{site.url}/api/meters/{meter}/read", json={"hours": 2}, timeout=30)
    assert read.status_code == 200, read.text
    assert read.json()["result"] == "OK", read.json()
    assert read.json()["counts"]["stored"] > 0


def test_permissions_and_utility_scoping(loaded: Site) -> None:
    site, meter = loaded, loaded.meters[0]
    anonymous = requests.get(f"{site.url}/api/meters", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.get(f"{site.url}/api/meters", auth=("operator", "nope"), timeout=10)
    assert wrong.status_code == 401
    with site.app.uow_factory() as uow:
        assert any(e[2] == "refused" for e in uow.audit.list())

    viewer = site.session("viewer")
    assert viewer.get(f"{site.url}/api/meters/{meter}", timeout=10).status_code == 200
    # get:* does not allow create:EndDeviceControls: the pipeline refuses it (1010)
    denied = viewer.post(
        f"{site.url}/api/meters/{meter}/disconnect", json={"reason": "x"}, timeout=10
    )
    assert denied.status_code == 403, denied.text
    assert site.fleet.meters[0].control_state == ControlState.CONNECTED
    assert viewer.post(f"{site.url}/api/dead-letters/1/dismiss", timeout=10).status_code == 403

    # a user of another utility sees nothing of this one
    north = site.session("north")
    with site.app.uow_factory() as uow:
        from mdm.model import Utility

        uow.utilities.add(Utility("NORTH", "North"))
        uow.commit()
    assert north.get(f"{site.url}/api/meters", timeout=10).json() == {"meters": []}
    assert north.get(f"{site.url}/api/meters/{meter}", timeout=10).status_code == 404
    assert north.get(f"{site.url}/api/search", params={"q": meter}).json()["hits"] == []
    assert north.get(f"{site.url}/api/meters/{meter}/readings", params=period()).status_code == 404


def test_dead_letters_show_replay_dismiss(site: Site) -> None:
    s = site.session()
    first = dead_letter(site)
    second = dead_letter(site)
    listed = s.get(f"{site.url}/api/dead-letters", timeout=10).json()["dead_letters"]
    assert {d["id"] for d in listed} == {first.dead_letter_id, second.dead_letter_id}
    one = s.get(f"{site.url}/api/dead-letters/{first.dead_letter_id}", timeout=10).json()
    assert one["error_code"] == "2001"
    assert "MTR-UNKNOWN" in one["body"]
    assert [step["state"] for step in one["lifecycle"]][-1] == "replied"  # PARTIAL, kept

    # the cause fixed (the meter created), the replay succeeds and resolves it
    from tests.unit.hub.conftest import add_meters

    add_meters(site.app, "MTR-UNKNOWN")
    replayed = s.post(f"{site.url}/api/dead-letters/{first.dead_letter_id}/replay", timeout=10)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["result"] == "OK"
    again = s.post(f"{site.url}/api/dead-letters/{first.dead_letter_id}/replay", timeout=10)
    assert again.status_code == 422

    dismissed = s.post(f"{site.url}/api/dead-letters/{second.dead_letter_id}/dismiss", timeout=10)
    assert dismissed.status_code == 204
    assert s.get(f"{site.url}/api/dead-letters", timeout=10).json()["dead_letters"] == []
    everything = s.get(f"{site.url}/api/dead-letters", params={"all": "true"}).json()
    assert len(everything["dead_letters"]) == 2
    assert s.get(f"{site.url}/api/dead-letters/999999", timeout=10).status_code == 404


def test_openapi_document_describes_every_route(site: Site) -> None:
    doc = requests.get(f"{site.url}/api/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in site.web.wsgi.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule not in ("/api/openapi.json", "/api/docs")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    # every API route Flask serves is in the document, and every documented one is served
    assert served == documented
    assert ("POST", "/api/dead-letters/{id}/replay") in served
    # an integer path parameter is an integer to Flask too: anything else is no route
    s = site.session()
    assert s.get(f"{site.url}/api/dead-letters/x1", timeout=10).status_code == 404
    reading = doc["components"]["schemas"]["Reading"]
    assert set(reading["required"]) >= {"ts", "value", "quality", "version"}
    page = requests.get(f"{site.url}/api/docs", timeout=10)
    assert page.status_code == 200
    assert "/api/meters/{mrid}/readings" in page.text


@pytest.mark.postgres
def test_readings_on_postgres(postgres_url: str, fleet: object) -> None:
    from hes.simulator.fleet import Fleet

    assert isinstance(fleet, Fleet)
    for pg_site in start_site(postgres_url, fleet):
        load_day(pg_site)
        check_readings_and_versions(pg_site)
        s = pg_site.session()
        hits = s.get(f"{pg_site.url}/api/search", params={"q": pg_site.meters[1]}).json()
        assert hits["hits"][0]["mrid"] == pg_site.meters[1]


def test_read_schedule_job(site: Site) -> None:
    from datetime import UTC, datetime

    from hub.samples import meter_read_schedule

    first = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    made = site.send(
        meter_read_schedule(site.meters[:2], first, recurrence_period=3600, mrid="RS-1")
    )
    assert made.result == "OK", made.errors
    s = site.session()
    job = s.get(f"{site.url}/api/jobs/RS-1", timeout=10).json()
    assert (job["kind"], job["state"], job["targets"]) == (
        "read",
        "active",
        sorted(site.meters[:2]),
    )
    page = s.get(f"{site.url}/ui/jobs/RS-1", timeout=10)
    assert page.status_code == 200
    assert 'http-equiv="refresh"' not in page.text  # waiting for its next run: nothing to follow


def test_audit_log_filtered_paged_and_scoped(site: Site) -> None:
    """GET /api/audit: what the operator did (a dismissed dead letter), a refused login,
    filtered by user, action, object and time, paged by the next link, behind
    get:AuditLog, and a user of utility NORTH sees what NORTH's users did only."""
    from datetime import UTC, datetime

    from mdm.model import Utility

    s = site.session()
    letter = dead_letter(site)
    dismissed = s.post(f"{site.url}/api/dead-letters/{letter.dead_letter_id}/dismiss", timeout=10)
    assert dismissed.status_code == 204
    refused = requests.get(f"{site.url}/api/meters", auth=("operator", "wrong"), timeout=10)
    assert refused.status_code == 401
    with site.app.uow_factory() as uow:
        uow.utilities.add(Utility("NORTH", "North"))
        for n in range(5):
            uow.audit.record("north", "change", "Meter", f"N-{n}", f"change {n}")
        uow.commit()

    url = f"{site.url}/api/audit"
    mine = s.get(url, params={"user": "operator", "action": "dismiss"}, timeout=10)
    assert mine.status_code == 200, mine.text
    [entry] = api_models.AuditPage.model_validate(mine.json()).entries
    assert (entry.user, entry.object_type, entry.object_id) == (
        "operator",
        "DeadLetter",
        str(letter.dead_letter_id),
    )
    assert mine.json()["next"] is None
    by_object = s.get(url, params={"object_type": "Meter", "object_id": "N-3"}, timeout=10)
    assert [e["details"] for e in by_object.json()["entries"]] == ["change 3"]
    everything = s.get(url, params={"limit": 1000}, timeout=10).json()["entries"]
    assert {"refused", "dismiss", "change", "create"} <= {e["action"] for e in everything}
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)

    # a time range: nothing after now, everything up to now
    now = datetime.now(UTC).isoformat()
    assert s.get(url, params={"start": now}, timeout=10).json()["entries"] == []
    upto = s.get(url, params={"end": now, "limit": 1000}, timeout=10).json()["entries"]
    assert len(upto) == len(everything)

    # pages of two, newest first, following "next" to the end: each entry once
    seen: list[int] = []
    page_url: str | None = f"{url}?limit=2"
    while page_url is not None:
        page = s.get(page_url if page_url.startswith("http") else f"{site.url}{page_url}").json()
        assert len(page["entries"]) <= 2
        seen.extend(e["id"] for e in page["entries"])
        page_url = page["next"]
    assert seen == [e["id"] for e in everything]

    # bad parameters, a user without the permission
    assert s.get(url, params={"start": "yesterday"}, timeout=10).status_code == 400
    assert s.get(url, params={"before": "x"}, timeout=10).status_code == 400
    assert site.session("clerk").get(url, timeout=10).status_code == 403

    # utility scoping: NORTH's user sees what NORTH's users did, nothing of the rest
    north = site.session("north")
    theirs = north.get(url, params={"limit": 1000}, timeout=10).json()["entries"]
    assert {e["user"] for e in theirs} == {"north"}
    assert len(theirs) == 5
    assert north.get(url, params={"user": "operator"}, timeout=10).json()["entries"] == []


def test_one_decorator_registers_the_route_and_its_entry() -> None:
    """SPEC.route: the Flask rule comes from the documented path (an integer parameter
    becomes Flask's int converter); an undeclared path parameter or a path outside the
    blueprint is refused when the module is read, not when a request comes."""
    from flask import Blueprint, Flask

    from adapters.web.openapi import ApiSpec, Param

    bp = Blueprint("t", __name__, url_prefix="/api")
    spec = ApiSpec(bp, "t", "1", "t")

    @spec.route(
        "/api/things/{id}",
        "post",
        summary="a thing",
        tag="t",
        params=(Param("id", "path", "id", True, {"type": "integer"}),),
    )
    def thing(id: int) -> str:
        return f"thing {id + 1}"

    with pytest.raises(ValueError, match="not declared"):
        spec.route("/api/things/{mrid}", "get", summary="x", tag="t")
    with pytest.raises(ValueError, match="not under"):
        spec.route("/other/things", "get", summary="x", tag="t")
    app = Flask(__name__)
    app.register_blueprint(bp)
    [rule] = [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/")]
    assert (rule.rule, rule.methods) == ("/api/things/<int:id>", {"POST", "OPTIONS"})
    assert app.test_client().post("/api/things/41").text == "thing 42"
    assert list(spec.document()["paths"]) == ["/api/things/{id}"]
