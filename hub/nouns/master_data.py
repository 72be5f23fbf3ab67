"""UsagePointConfig, MeterConfig and MasterDataLinkageConfig: master data from CIS.

Each item of the payload becomes one command; an item that cannot be applied
is reported as one Error with the xpath of the item (the others are applied:
Result PARTIAL). Handlers check everything before they write, so a refused
item leaves nothing behind.

Conventions (documented in docs/cim.md and docs/master-data.md):

* a usage point's name is its first Names/name whose NameType is not one below;
  its transformer area is the Names/name whose NameType/name is
  ``TransformerArea``; its location is UsagePointLocation's first name or mRID;
* ServiceCategory/kind: electricity, gas, water, heat, cold (amihub's
  extension for district cooling);
* a meter's name is its first Names/name; manufacturer and model come from
  EndDeviceInfo/AssetModel (Manufacturer/Names/name, modelNumber);
* close and MasterDataLinkageConfig take effect at
  ConfigurationEvent/effectiveDateTime, else at the time of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from lxml import etree

from cim_schemas.errors import ItemRejected, PayloadInvalid, by_mrid
from cim_schemas.profiles.common import ConfigurationEvent, IdentifiedObject, Name
from cim_schemas.profiles.master_data_linkage_config import parse_master_data_linkage_config
from cim_schemas.profiles.meter_config import Meter, parse_meter_config
from cim_schemas.profiles.usage_point_config import UsagePoint as CimUsagePoint
from cim_schemas.profiles.usage_point_config import parse_usage_point_config
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.commands import (
    ChangeMeter,
    ChangeUsagePoint,
    CloseMeter,
    CloseUsagePoint,
    CreateMeter,
    CreateUsagePoint,
    DeleteMeter,
    DeleteUsagePoint,
    InstallMeter,
    RemoveMeter,
)
from mdm.model import DeviceRef, EndDevice, ServiceCategory, UsagePoint
from mdm.ports import UnitOfWork

TRANSFORMER_AREA: Final = "TransformerArea"
SERVICE_KINDS: Final = {k.value: k for k in ServiceCategory}


def ref_of(obj: IdentifiedObject) -> DeviceRef:
    if obj.mrid:
        return DeviceRef(mrid=obj.mrid)
    for name in obj.names:
        return DeviceRef(name=name.name, name_type=name.name_type.name if name.name_type else None)
    raise ItemRejected("2011", "the item has neither mRID nor Names/name")


def _name(names: Sequence[Name], kind: str | None = None) -> str | None:
    for n in names:
        name_type = n.name_type.name if n.name_type else None
        if (kind is None and name_type != TRANSFORMER_AREA) or (kind and name_type == kind):
            return n.name
    return None


def _effective(event: ConfigurationEvent | None, ctx: RouteContext) -> datetime:
    if event is not None and event.effective_date_time is not None:
        return event.effective_date_time
    return ctx.handler.now


def usage_point_of(item: CimUsagePoint, utility_code: str) -> UsagePoint:
    if not item.mrid:
        raise ItemRejected("2011", "a UsagePoint to create or change needs its mRID")
    kind = (item.service_category or ServiceCategory.ELECTRICITY.value).strip()
    if kind not in SERVICE_KINDS:
        raise ItemRejected(
            "2013",
            f"ServiceCategory/kind {kind!r} is not one of {', '.join(SERVICE_KINDS)}",
            **by_mrid(item.mrid, "UsagePoint"),
        )
    location = None
    if item.usage_point_location is not None:
        loc = item.usage_point_location
        location = _name(loc.names) or loc.mrid
    return UsagePoint(
        mrid=item.mrid,
        utility_code=utility_code,
        service_category=SERVICE_KINDS[kind],
        name=_name(item.names),
        location=location,
        transformer_area=_name(item.names, TRANSFORMER_AREA),
    )


def end_device_of(item: Meter, utility_code: str) -> EndDevice:
    if not item.mrid:
        raise ItemRejected("2011", "a Meter to create or change needs its mRID")
    model = item.asset_model
    return EndDevice(
        mrid=item.mrid,
        utility_code=utility_code,
        serial_number=item.serial_number,
        name=_name(item.names),
        manufacturer=_name(model.manufacturer) if model else None,
        model=model.model_number if model else None,
    )


Command = Any
Translate = Callable[[Any, RouteContext], Command]


def _apply_items(
    items: Sequence[Any],
    xpath: Callable[[int], str],
    translate: Translate,
    ctx: RouteContext,
    uow: UnitOfWork,
) -> RouteResult:
    result = RouteResult()
    for position, item in enumerate(items, 1):
        try:
            ctx.bus.handle(translate(item, ctx), uow, ctx.handler)
        except ItemRejected as exc:
            result.errors.append(exc.detail(xpath(position)))
        else:
            result.applied += 1
    result.counts = {"items": len(items), "applied": result.applied}
    return result


def _payload(frame: MessageFrame) -> etree._Element:
    if frame.payload is None:
        raise PayloadInvalid(
            f"{frame.header.verb} {frame.header.noun} needs a Payload",
            code="1009",
            xpath=f"/{frame.root_name}/Payload",
        )
    return frame.payload


@dataclass(frozen=True)
class _ConfigNoun:
    """How one ``<Noun>Config`` profile maps to commands, verb by verb."""

    items: Callable[[etree._Element], Sequence[Any]]  # parse the profile, list its items
    item_tag: str
    to_domain: Callable[[Any, str], Any]  # (item, utility code) -> UsagePoint | EndDevice
    create: Callable[[int, Any], Command]
    change: Callable[[int, Any], Command]
    close: Callable[[int, DeviceRef, datetime], Command]
    delete: Callable[[int, DeviceRef], Command]


@dataclass
class ConfigRoute:
    """create / change / close / delete of master data, one command per item."""

    noun: str
    config: _ConfigNoun
    verbs: frozenset[str] = frozenset({"create", "change", "close", "delete"})
    streaming: bool = False

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        cfg = self.config
        verb = frame.header.verb
        uid = ctx.utility_id

        def translate(item: Any, c: RouteContext) -> Command:
            if verb in ("create", "change"):
                make = cfg.create if verb == "create" else cfg.change
                return make(uid, cfg.to_domain(item, c.utility_code))
            ref = ref_of(IdentifiedObject(item.mrid, item.names))
            if verb == "close":
                return cfg.close(uid, ref, _effective(item.configuration_events, c))
            return cfg.delete(uid, ref)

        return _apply_items(
            cfg.items(_payload(frame)),
            lambda n: f"{frame.payload_xpath}/{cfg.item_tag}[{n}]",
            translate,
            ctx,
            uow,
        )


def usage_point_config_route() -> ConfigRoute:
    return ConfigRoute(
        "UsagePointConfig",
        _ConfigNoun(
            items=lambda el: parse_usage_point_config(el).usage_points,
            item_tag="UsagePoint",
            to_domain=usage_point_of,
            create=CreateUsagePoint,
            change=ChangeUsagePoint,
            close=CloseUsagePoint,
            delete=DeleteUsagePoint,
        ),
    )


def meter_config_route() -> ConfigRoute:
    return ConfigRoute(
        "MeterConfig",
        _ConfigNoun(
            items=lambda el: parse_meter_config(el).meters,
            item_tag="Meter",
            to_domain=end_device_of,
            create=CreateMeter,
            change=ChangeMeter,
            close=CloseMeter,
            delete=DeleteMeter,
        ),
    )


@dataclass
class MasterDataLinkageConfigRoute:
    """create: install each Meter at the UsagePoint of the same position; close: remove it.

    One UsagePoint for several meters is allowed (each meter goes there); otherwise
    the lists must be of the same length.
    """

    noun: str = "MasterDataLinkageConfig"
    verbs: frozenset[str] = frozenset({"create", "close"})
    streaming: bool = False

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        link = parse_master_data_linkage_config(_payload(frame))
        meters = link.meters or link.end_devices
        meter_tag = "Meter" if link.meters else "EndDevice"
        ups = link.usage_points
        base = frame.payload_xpath
        if not meters:
            raise PayloadInvalid(
                "MasterDataLinkageConfig names no Meter or EndDevice",
                code="2011",
                xpath=f"{base}/Meter",
            )
        if frame.header.verb == "create" and len(ups) not in (1, len(meters)):
            raise PayloadInvalid(
                f"{len(meters)} meter(s) and {len(ups)} usage point(s): give one usage point, "
                "or one per meter in the same order",
                code="2013",
                xpath=f"{base}/UsagePoint",
            )
        when = _effective(link.configuration_event, ctx)
        uid = ctx.utility_id
        pairs = [
            (m, ups[0] if len(ups) == 1 else ups[i] if i < len(ups) else None)
            for i, m in enumerate(meters)
        ]

        def translate(
            pair: tuple[IdentifiedObject, IdentifiedObject | None], c: RouteContext
        ) -> Command:
            meter, up = pair
            if frame.header.verb == "create":
                assert up is not None
                return InstallMeter(uid, ref_of(meter), ref_of(up), when)
            return RemoveMeter(uid, ref_of(meter), ref_of(up) if up else None, when)

        return _apply_items(pairs, lambda n: f"{base}/{meter_tag}[{n}]", translate, ctx, uow)
