"""EndDeviceControls: remote operations on meters as head-end control jobs.

``create``: each EndDeviceControl becomes one job of the head-end
(:class:`hub.headend.HeadEnd`), scheduled at ``primaryDeviceTiming/interval/start``
(none or past: now). Its targets are resolved in the MDM:

* ``EndDevices`` by mRID or Names/name (unknown: 2001; known but not reachable by
  the head-end: 2001 with that reason);
* ``UsagePoints``: the meter installed there now (unknown usage point: 2002; no
  meter installed: 2008);
* ``UsagePointGroups``: the usage points of that transformer area (Names/name or
  mRID = the area; none: 2002);
* ``EndDeviceGroups``: the members of that group (mdm/groups.py; mRID or Names/name),
  as they are when the control is accepted (unknown, closed or empty group: 2015).

The EndDeviceControlType must be one the head-end executes (3.31.0.23 remote
disconnect, 3.31.0.18 remote reconnect, 3.36.0.24 clock set, 3.15.0.18 / 3.15.0.23
load limit set / clear, 3.20.0.24 ToU calendar update, 3.11.0.24 firmware update;
else 2013). The parameters of 3.15.0.18, 3.20.0.24 and 3.11.0.24 (priceSignal,
EndDeviceAction) are checked first (:mod:`hub.nouns.end_device_control_parameters`;
wrong or missing: 2013 with their xpath, the control is not scheduled) and travel in
the ControlRequest. A control
whose targets partly resolve is accepted for the resolved ones. The reply's payload
lists the accepted controls with their mRID (the job id: the one sent, or one
amihub made up) and the devices they go to. The job is written to the head-end job
table and recorded as EndDeviceEvents in the same transaction
(:class:`hub.headend.ControlJournal`); the outcome comes later as EndDeviceEvents
(3.31.0.68 disconnected, 3.31.0.42 connected, 3.31.0.85 failed, 3.36.0.24 clock
changed) stored and published as ``created EndDeviceEvents``.

``cancel``: each EndDeviceControl names a job by mRID; a scheduled job is cancelled in
the cancel's transaction (unknown job: 2008; running or finished: 2009). A job mRID
already in the job table, in any state, is refused with 2007.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from cim_schemas.codes import event_type
from cim_schemas.errors import (
    AmihubError,
    ErrorDetail,
    MessageRejected,
    PayloadInvalid,
    by_mrid,
    by_name,
    named_object,
)
from cim_schemas.profiles.common import IdentifiedObject
from cim_schemas.profiles.end_device_controls import (
    EndDeviceControl,
    EndDeviceControls,
    parse_end_device_controls,
    render_end_device_controls,
)
from hub.control_parameters import ControlLibrary
from hub.headend import ControlJournal, ControlRequest, HeadEnd, JobNotCancellable, UnknownJob
from hub.nouns.end_device_control_parameters import control_parameters
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork

MAX_ERRORS: Final = 100


def _ref(obj: IdentifiedObject) -> DeviceRef | None:
    if obj.mrid and obj.mrid.strip():
        return DeviceRef(mrid=obj.mrid.strip())
    name = obj.name()
    if name and name.strip():
        return DeviceRef(name=name.strip(), name_type=obj.name_type)
    return None


@dataclass
class Targets:
    """Meters a request resolves to (MDM mRIDs, in order, once each) and what did not."""

    devices: list[str] = field(default_factory=list)
    errors: list[ErrorDetail] = field(default_factory=list)
    #: the EndDeviceGroups named (mRIDs), resolved to their members as they are now
    groups: list[str] = field(default_factory=list)
    #: the meters named other than through a group (EndDevices, UsagePoints, areas)
    fixed: list[str] = field(default_factory=list)

    def add(self, mrid: str) -> None:
        if mrid not in self.devices:
            self.devices.append(mrid)


def resolve_targets(
    uow: UnitOfWork,
    utility_id: int,
    base: str,
    *,
    end_devices: Sequence[IdentifiedObject] = (),
    usage_points: Sequence[IdentifiedObject] = (),
    usage_point_groups: Sequence[IdentifiedObject] = (),
    end_device_groups: Sequence[IdentifiedObject] = (),
    tags: tuple[str, str, str, str] = (
        "EndDevices",
        "UsagePoints",
        "UsagePointGroups",
        "EndDeviceGroups",
    ),
    headend: HeadEnd | None = None,
) -> Targets:
    """Resolve devices, usage points and groups to meters; ``base`` is the item's xpath."""
    out = Targets()
    t_dev, t_up, t_upg, t_edg = tags

    def missing_id(tag: str, n: int) -> None:
        out.errors.append(
            ErrorDetail(
                "2011", f"{tag} has neither mRID nor Names/name", xpath=f"{base}/{tag}[{n}]"
            )
        )

    def device(mrid: str, xpath: str) -> None:
        if headend is not None and not headend.addressable(mrid):
            out.errors.append(
                ErrorDetail(
                    "2001",
                    f"meter {mrid} has no head-end address (not in the [hes] manifest)",
                    xpath=xpath,
                    **by_mrid(mrid, "EndDevice"),
                )
            )
        else:
            out.add(mrid)

    for n, obj in enumerate(end_devices, 1):
        ref = _ref(obj)
        if ref is None:
            missing_id(t_dev, n)
            continue
        found = uow.devices.find(utility_id, ref)
        if found is None:
            out.errors.append(
                ErrorDetail(
                    "2001",
                    f"unknown meter {ref}",
                    xpath=f"{base}/{t_dev}[{n}]",
                    **named_object(ref, "EndDevice"),
                )
            )
        else:
            device(found.mrid, f"{base}/{t_dev}[{n}]")
    for n, obj in enumerate(usage_points, 1):
        ref = _ref(obj)
        if ref is None:
            missing_id(t_up, n)
            continue
        up = uow.usage_points.find(utility_id, ref)
        xpath = f"{base}/{t_up}[{n}]"
        if up is None or up.id is None:
            out.errors.append(
                ErrorDetail(
                    "2002",
                    f"unknown usage point {ref}",
                    xpath=xpath,
                    **named_object(ref, "UsagePoint"),
                )
            )
            continue
        installed = uow.installations.current_at_usage_point(up.id)
        if not installed:
            out.errors.append(
                ErrorDetail(
                    "2008",
                    f"no meter is installed at {up.mrid}",
                    xpath=xpath,
                    **by_mrid(up.mrid, "UsagePoint"),
                )
            )
        for inst in installed:
            device(inst.device_mrid, xpath)
    if usage_point_groups:
        ups = uow.usage_points.list(utility_id)
        for n, obj in enumerate(usage_point_groups, 1):
            area = (obj.name() or obj.mrid or "").strip()
            xpath = f"{base}/{t_upg}[{n}]"
            if not area:
                missing_id(t_upg, n)
                continue
            members = [u for u in ups if u.transformer_area == area and u.id is not None]
            if not members:
                out.errors.append(
                    ErrorDetail(
                        "2002",
                        f"no usage point of transformer area {area!r}",
                        xpath=xpath,
                        **by_name(area, "UsagePointGroup"),
                    )
                )
            for u in members:
                assert u.id is not None
                for inst in uow.installations.current_at_usage_point(u.id):
                    device(inst.device_mrid, xpath)
    out.fixed = list(out.devices)
    for n, obj in enumerate(end_device_groups, 1):
        ref = _ref(obj)
        xpath = f"{base}/{t_edg}[{n}]"
        if ref is None:
            missing_id(t_edg, n)
            continue
        group = uow.end_device_groups.find(utility_id, ref)
        if group is None or group.id is None or not group.is_open:
            why = "is closed" if group is not None else "does not exist"
            out.errors.append(
                ErrorDetail(
                    "2015",
                    f"end device group {ref} {why}",
                    xpath=xpath,
                    **named_object(ref, "EndDeviceGroup"),
                )
            )
            continue
        meters = uow.end_device_groups.members(group.id)
        if not meters:
            out.errors.append(
                ErrorDetail(
                    "2015",
                    f"end device group {group.describe()} has no member",
                    xpath=xpath,
                    **by_mrid(group.mrid, "EndDeviceGroup"),
                )
            )
            continue
        if group.mrid not in out.groups:
            out.groups.append(group.mrid)
        for mrid in meters:
            device(mrid, xpath)
    return out


def _payload(frame: MessageFrame) -> EndDeviceControls:
    if frame.payload is None:
        raise PayloadInvalid(
            f"{frame.header.verb} EndDeviceControls needs a Payload",
            code="1009",
            xpath=f"/{frame.root_name}/Payload",
        )
    return parse_end_device_controls(frame.payload)


@dataclass
class EndDeviceControlsRoute:
    headend: HeadEnd | None
    journal: ControlJournal | None
    noun: str = "EndDeviceControls"
    verbs: frozenset[str] = frozenset({"create", "cancel"})
    streaming: bool = False
    #: the calendar and firmware folders parameters may name ([hes] calendars_dir,
    #: firmware_dir)
    library: ControlLibrary = field(default_factory=ControlLibrary)

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if self.headend is None or self.journal is None:
            raise MessageRejected(
                "no head-end is configured: EndDeviceControls need [hes] manifest",
                code="1011",
                xpath="/*/Header/Noun",
            )
        controls = _payload(frame).end_device_controls
        if not controls:
            raise PayloadInvalid(
                "EndDeviceControls holds no EndDeviceControl",
                code="2011",
                xpath=frame.payload_xpath,
            )
        result = RouteResult()
        accepted: list[EndDeviceControl] = []
        seen: set[str] = set()
        for n, control in enumerate(controls, 1):
            base = f"{frame.payload_xpath}/EndDeviceControl[{n}]"
            job_id = (control.mrid or "").strip()
            if job_id and job_id in seen:
                result.errors.append(
                    ErrorDetail(
                        "2007",
                        f"control job {job_id} appears twice in the message",
                        xpath=f"{base}/mRID",
                        **by_mrid(job_id, "EndDeviceControl"),
                    )
                )
                continue
            seen.add(job_id)
            if frame.header.verb == "create":
                done = self._create(control, base, frame, ctx, uow, self.headend, self.journal)
            else:
                done = self._cancel(control, base, ctx, uow, self.headend, self.journal)
            result.errors.extend(done[1])
            if done[0] is not None:
                accepted.append(done[0])
                result.applied += 1
        del result.errors[MAX_ERRORS:]
        if accepted:
            result.payload = render_end_device_controls(EndDeviceControls(tuple(accepted)))
        result.counts = {"controls": len(controls), "accepted": result.applied}
        return result

    def _create(
        self,
        control: EndDeviceControl,
        base: str,
        frame: MessageFrame,
        ctx: RouteContext,
        uow: UnitOfWork,
        headend: HeadEnd,
        journal: ControlJournal,
    ) -> tuple[EndDeviceControl | None, list[ErrorDetail]]:
        code = control.end_device_control_type.strip()
        type_xpath = f"{base}/EndDeviceControlType"
        if not event_type.is_valid_code(code):
            return None, [
                ErrorDetail(
                    "2013",
                    f"EndDeviceControlType {code!r} is not type.domain.subDomain.eventOrAction",
                    xpath=type_xpath,
                )
            ]
        if code not in headend.control_types:
            what = event_type.EndDeviceControlType.parse(code).describe()
            return None, [
                ErrorDetail(
                    "2013",
                    f"control type {code} ({what}) is not supported; supported: "
                    + ", ".join(sorted(headend.control_types)),
                    xpath=type_xpath,
                    **by_mrid(code, "EndDeviceControlType"),
                )
            ]
        parameters, refused = control_parameters(control, code, base, self.library)
        if refused:
            return None, refused
        targets = resolve_targets(
            uow,
            ctx.utility_id,
            base,
            end_devices=control.end_devices,
            usage_points=control.usage_points,
            usage_point_groups=control.usage_point_groups,
            end_device_groups=control.end_device_groups,
            headend=headend,
        )
        if not targets.devices:
            if not targets.errors:
                targets.errors.append(
                    ErrorDetail(
                        "2011",
                        "the EndDeviceControl names no EndDevices, UsagePoints, UsagePointGroups "
                        "or EndDeviceGroups",
                        xpath=base,
                    )
                )
            return None, targets.errors
        job_id = (control.mrid or "").strip() or str(uuid.uuid4())
        request = ControlRequest(
            job_id=job_id,
            utility_id=ctx.utility_id,
            control_type=code,
            devices=tuple(targets.devices),
            requested_at=ctx.handler.now,
            start=control.scheduled_at,
            reason=control.reason,
            correlation_id=frame.header.message_id,
            parameters=parameters,
        )
        try:
            headend.submit(uow, request)  # the job row, in this transaction
        except AmihubError as exc:
            return None, [
                *targets.errors,
                ErrorDetail(
                    "2007", str(exc), xpath=f"{base}/mRID", **by_mrid(job_id, "EndDeviceControl")
                ),
            ]
        journal.record_request(uow, request)
        echo = EndDeviceControl(
            end_device_control_type=code,
            mrid=job_id,
            issuer_id=control.issuer_id,
            issuer_tracking_id=control.issuer_tracking_id,
            price_signal=control.price_signal,
            reason=control.reason,
            end_device_action=control.end_device_action,
            end_devices=tuple(IdentifiedObject(d) for d in targets.devices),
            primary_device_timing=control.primary_device_timing,
        )
        return echo, targets.errors

    @staticmethod
    def _cancel(
        control: EndDeviceControl,
        base: str,
        ctx: RouteContext,
        uow: UnitOfWork,
        headend: HeadEnd,
        journal: ControlJournal,
    ) -> tuple[EndDeviceControl | None, list[ErrorDetail]]:
        job_id = (control.mrid or "").strip()
        if not job_id:
            return None, [
                ErrorDetail(
                    "2011", "cancel names the control job by its mRID", xpath=f"{base}/mRID"
                )
            ]
        try:
            request = headend.cancel(uow, ctx.utility_id, job_id)
        except UnknownJob as exc:
            return None, [
                ErrorDetail(
                    "2008", str(exc), xpath=f"{base}/mRID", **by_mrid(job_id, "EndDeviceControl")
                )
            ]
        except JobNotCancellable as exc:
            return None, [
                ErrorDetail(
                    "2009", str(exc), xpath=f"{base}/mRID", **by_mrid(job_id, "EndDeviceControl")
                )
            ]
        journal.record_cancel(uow, request, ctx.handler.now)
        return (
            EndDeviceControl(
                end_device_control_type=request.control_type,
                mrid=job_id,
                reason=control.reason,
                end_devices=tuple(IdentifiedObject(d) for d in request.devices),
            ),
            [],
        )
