"""Authorisation: permissions as configured, and the pipeline's refusal naming who may
not do what. `make mutate` found these untested (docs/testing.md)."""

from __future__ import annotations

import pytest

from cim_schemas.errors import ConfigurationError
from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.samples import meter_readings_bytes
from hub.security import Permission, Principal, UserDirectory, UserSettings
from tests.unit.hub.conftest import START, reading_count


@pytest.mark.parametrize("text", ["get:", ":MeterReadings", "get", ":", ""])
def test_a_permission_needs_a_verb_and_a_noun(text: str) -> None:
    with pytest.raises(ConfigurationError, match="is not 'verb:Noun'"):
        Permission.parse(text)


def test_settings_give_the_principal_everything_configured() -> None:
    settings = UserSettings(
        name="vendor",
        utility="NORTH",
        permissions=["create:MeterReadings", "get:*"],
        cim_variant="acme",
    )
    principal = settings.principal()
    assert principal == Principal(
        "vendor",
        "NORTH",
        frozenset({Permission("create", "MeterReadings"), Permission("get", "*")}),
        "acme",
    )
    directory = UserDirectory([settings])
    assert directory
    assert not UserDirectory([])
    assert directory.get("vendor") is settings
    assert directory.principal("vendor") == principal
    assert directory.principal("other") is None


def test_the_refusal_names_who_may_not_do_what(app: App) -> None:
    reader = Principal("billing", None, frozenset({Permission.parse("get:*")}))
    body = meter_readings_bytes(["MTR-1"], START, 2)
    outcome = app.pipeline.process(
        InboundMessage(source="billing", endpoint="t", body=body, principal=reader)
    )
    assert outcome.result == "FAILED"
    (error,) = outcome.errors
    assert (error.code, error.xpath) == ("1010", "/*/Header/Verb")
    assert "billing may not created MeterReadings" in error.reason + (error.details or "")
    assert reading_count(app) == 0
