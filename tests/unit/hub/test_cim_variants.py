"""CIM variants per source: a vendor's deviations undone before the XSD sees the message,
named by the adapter (SFTP partner, AMQP header) or by the sender's user settings (SOAP)."""

from __future__ import annotations

from dataclasses import replace

from hub.mapped import mapping_importer
from hub.messages import InboundMessage
from hub.security import UserSettings
from hub.variants import VARIANT
from mappings.load import BUILTIN_DIR, load_dir
from tests.unit.hub.conftest import add_meters, make_app, reading_count

VENDOR = (BUILTIN_DIR / "samples" / "cim-vendor-draft-message.xml").read_bytes()


def message(**metadata: str) -> InboundMessage:
    return InboundMessage(source="vendor", endpoint="test", body=VENDOR, metadata=dict(metadata))


def test_the_vendor_message_stores_nothing_without_its_variant(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    add_meters(app, "m-1001")
    out = app.pipeline.process(message())
    # the payload's draft namespace is not the profile's: refused, naming what was expected
    assert out.result == "FAILED"
    assert out.errors[0].code == "1005"
    assert out.errors[0].xpath == "/EventMessage/Payload/MeterReadings"
    assert "http://iec.ch/TC57/2011/MeterReadings#" in out.errors[0].reason
    assert out.dead_letter_id is not None  # the input is kept
    assert reading_count(app) == 0
    standard = VENDOR.replace(
        b"http://www.iec.ch/TC57/2011/MeterReadings#", b"http://iec.ch/TC57/2011/MeterReadings#"
    )
    out = app.pipeline.process(replace(message(), body=standard))
    assert out.result == "FAILED"
    assert out.errors[0].code == "1005"  # MeterID, VendorInfo: not the profile
    assert reading_count(app) == 0
    app.close()


def test_the_variant_named_by_the_adapter_is_applied(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    add_meters(app, "m-1001")
    out = app.pipeline.process(message(**{VARIANT: "cim-vendor-draft"}))
    assert out.result == "OK", out.errors
    assert reading_count(app) == 2
    app.close()


def test_the_variant_of_a_user_applies_to_their_messages(sqlite_url: str) -> None:
    # what the SOAP and AMQP adapters hand over for a [[users]] entry with cim_variant
    app = make_app(sqlite_url)
    add_meters(app, "m-1001")
    user = UserSettings(name="vendor", permissions=["created:MeterReadings"])
    vendor = UserSettings(
        name="vendor", permissions=["created:MeterReadings"], cim_variant="cim-vendor-draft"
    )
    app.pipeline.process(replace(message(), principal=user.principal()))
    assert reading_count(app) == 0
    again = VENDOR.replace(b"vendor-draft-0001", b"vendor-draft-0002")
    out = app.pipeline.process(replace(message(), body=again, principal=vendor.principal()))
    assert out.result == "OK", out.errors
    assert reading_count(app) == 2
    app.close()


def test_an_unknown_variant_is_refused_1012_and_kept(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    add_meters(app, "m-1001")
    out = app.pipeline.process(message(**{VARIANT: "cim-vendor-nope"}))
    assert out.result == "FAILED"
    assert out.errors[0].code == "1012"
    assert "no CIM variant named 'cim-vendor-nope'" in out.errors[0].reason
    assert "cim-vendor-draft" in out.errors[0].reason  # the known ones are listed
    assert out.dead_letter_id is not None
    with app.uow_factory() as uow:
        dead = uow.dead_letters.get(out.dead_letter_id)
    assert dead is not None
    assert dead.body == VENDOR  # the input as it came, not a rewritten one
    assert dead.metadata[VARIANT] == "cim-vendor-nope"
    assert reading_count(app) == 0
    app.close()


def test_a_variant_named_through_the_mapping_importer(sqlite_url: str) -> None:
    # the AMQP header amihub-mapping may name a cim-variant: the body is a CIM message
    app = make_app(sqlite_url)
    add_meters(app, "m-1001")
    run = mapping_importer(app.pipeline, load_dir(BUILTIN_DIR))
    out = run(message(), "cim-vendor-draft")
    assert out.result == "OK", out.errors
    assert out.noun == "MeterReadings"
    assert reading_count(app) == 2
    app.close()


def test_a_too_large_variant_message_is_refused(sqlite_url: str) -> None:
    app = make_app(sqlite_url, tree_limit_bytes=512)
    add_meters(app, "m-1001")
    out = app.pipeline.process(message(**{VARIANT: "cim-vendor-draft"}))
    assert out.result == "FAILED"
    assert out.errors[0].code == "1003"
    assert "tree_limit_bytes" in out.errors[0].reason
    app.close()
