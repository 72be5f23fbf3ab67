"""The meters a configured read schedule reads: a selection resolved in the MDM.

A :class:`Selection` (every meter, transformer areas = UsagePointGroups, meter mRIDs)
is kept in the schedule's job row (``spec["select"]``) and resolved against the store
when the schedule is written and again at each run, so meters installed in an area (or
added to the utility) later are read without a restart. Only meters the head-end can
reach (in ``[hes] manifest``) are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdm.hes_jobs import HeadEndJob
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork


@dataclass(frozen=True)
class Selection:
    all_meters: bool = False
    areas: tuple[str, ...] = ()
    meters: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"all": self.all_meters, "areas": list(self.areas), "meters": list(self.meters)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Selection:
        return cls(
            bool(data.get("all")),
            tuple(str(a) for a in data.get("areas") or ()),
            tuple(str(m) for m in data.get("meters") or ()),
        )


@dataclass
class Resolved:
    """Meter mRIDs in order, once each, and what did not resolve (one line each)."""

    devices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, mrid: str) -> None:
        if mrid not in self.devices:
            self.devices.append(mrid)


def resolve(
    uow: UnitOfWork, utility_id: int, selection: Selection, addressable: Callable[[str], bool]
) -> Resolved:
    """Meters of ``selection`` that ``addressable`` (the head-end) can reach. Unknown
    areas and meters, and named meters without a head-end address, are ``problems``;
    ``all_meters`` silently leaves out meters the head-end does not know."""
    out = Resolved()
    if selection.all_meters:
        for device in sorted(uow.devices.list(utility_id), key=lambda d: d.mrid):
            if addressable(device.mrid):
                out.add(device.mrid)
        return out
    if selection.areas:
        usage_points = uow.usage_points.list(utility_id)
        for area in selection.areas:
            members = [u for u in usage_points if u.transformer_area == area and u.id is not None]
            if not members:
                out.problems.append(f"area {area!r}: no usage point of this transformer area")
            for up in members:
                assert up.id is not None
                for inst in uow.installations.current_at_usage_point(up.id):
                    if addressable(inst.device_mrid):
                        out.add(inst.device_mrid)
    if selection.meters:
        found = uow.devices.find_many(utility_id, [DeviceRef(mrid=m) for m in selection.meters])
        for mrid in selection.meters:
            if DeviceRef(mrid=mrid) not in found:
                out.problems.append(f"meter {mrid!r} is not a meter of the utility")
            elif not addressable(mrid):
                out.problems.append(f"meter {mrid!r} has no head-end address ([hes] manifest)")
            else:
                out.add(mrid)
    return out


class ConfiguredTargets:
    """The scheduler's hook (:class:`hub.headend_scheduler.TargetSelector`): the meters
    of a read schedule's run. A schedule with a selection (configured) is resolved now;
    any other goes to ``fallback`` (none: the meters of its row)."""

    def __init__(
        self,
        addressable: Callable[[str], bool],
        fallback: Callable[[UnitOfWork, HeadEndJob], tuple[str, ...]] | None = None,
    ) -> None:
        self.addressable = addressable
        self.fallback = fallback

    def __call__(self, uow: UnitOfWork, job: HeadEndJob) -> tuple[str, ...]:
        select = job.spec.get("select")
        if not isinstance(select, dict):
            return job.targets if self.fallback is None else self.fallback(uow, job)
        return tuple(
            resolve(uow, job.utility_id, Selection.from_json(select), self.addressable).devices
        )
