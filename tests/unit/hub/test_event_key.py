"""An event mRID is stored once per utility: a partner sending the same events again
(another MessageID) gets them counted ``already_stored``, nothing doubles."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.bootstrap import App
from hub.samples import end_device_events
from tests.unit.hub.test_headend_routes import send


def test_the_same_event_sent_twice_is_stored_once(app: App) -> None:
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    events = [
        {"meter": "MTR-1", "type": "3.26.0.85", "at": at, "mrid": "EV-1"},
        {"meter": "MTR-2", "type": "3.26.0.216", "at": at},  # no mRID: always stored
    ]
    first = send(app, end_device_events("created", events))
    assert first.result == "OK", first.errors
    assert first.counts == {"events": 2, "stored": 2, "already_stored": 0}
    again = send(app, end_device_events("created", [*events, events[0]]))
    assert again.result == "OK", again.errors
    assert again.counts == {"events": 3, "stored": 1, "already_stored": 2}
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        stored = uow.events.query(utility.id, None, None, None)
    assert sorted(e.mrid or "-" for e in stored) == ["-", "-", "EV-1"]
