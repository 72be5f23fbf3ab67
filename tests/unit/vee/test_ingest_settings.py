"""Which rules validate on ingest, per source: ``[vee] on_ingest`` and a rule's own
``on_ingest``; the source of each way in."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hub.vee_settings import VeeSettings
from mdm.vee.ingest import ingest_source
from tests.unit.vee.data import PROFILE

MISSING = {"name": "missing-15", "kind": "missing", "reading_type": PROFILE}
HIGH = {"name": "high-15", "kind": "limits", "reading_type": PROFILE, "maximum": 5}


def names(settings: VeeSettings, source: str) -> list[str]:
    return [r.name for r in settings.ingest_rules("DEFAULT", source)]


def test_the_sources_of_vee_on_ingest_and_a_rules_own() -> None:
    settings = VeeSettings(
        on_ingest=["import", "soap"],
        rules=[MISSING, {**HIGH, "on_ingest": ["headend"]}, {**HIGH, "name": "x", "on_ingest": []}],
    )
    assert names(settings, "import") == ["missing-15"]
    assert names(settings, "soap") == ["missing-15"]
    assert names(settings, "headend") == ["high-15"]
    assert names(settings, "amqp") == []
    assert names(VeeSettings(rules=[MISSING]), "import") == []  # off unless configured


@pytest.mark.parametrize(
    "given",
    [{"on_ingest": ["ftp"], "rules": [MISSING]}, {"rules": [{**MISSING, "on_ingest": ["ftp"]}]}],
)
def test_an_unknown_source_is_refused_with_its_key(given: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        VeeSettings.model_validate(given)
    text = str(info.value)
    assert "on_ingest" in text
    assert "ftp" in text


@pytest.mark.parametrize(
    ("endpoint", "source"),
    [
        ("soap:/ws/MeterReadings", "soap"),  # adapters/soap/gateway.py
        ("amqp:amihub.requests", "amqp"),  # adapters/amqp/consumer.py
        ("sftp:partner/inbox", "sftp"),  # adapters/sftp/inbox.py
        ("cli:import", "import"),  # amihub import
        ("web:/api/MeterReadings", ""),  # the web UI's operations: not a source of readings
        ("outbox:cis", ""),
    ],
)
def test_the_source_of_each_endpoint(endpoint: str, source: str) -> None:
    assert ingest_source(endpoint) == source
