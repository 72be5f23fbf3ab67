"""The meters of a stored read schedule's run when it names EndDeviceGroups.

A read schedule of a group (``spec["groups"]``: group mRIDs; ``spec["fixed"]``: the
meters named otherwise) reads the group's members as they are at each run, so a
recurring read of a group follows its membership: a meter added to the group is read
at the next run, a meter removed is not. The job row's ``targets`` (the meters at
acceptance) are only the reply's echo. A group closed or deleted since contributes no
meter (logged); a meter the head-end cannot reach is left out (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mdm.hes_jobs import HeadEndJob
from mdm.model import DeviceRef
from mdm.ports import UnitOfWork

log = logging.getLogger("amihub.groups")


def group_targets(
    uow: UnitOfWork, job: HeadEndJob, addressable: Callable[[str], bool] | None = None
) -> tuple[str, ...]:
    """The meters this run reads: ``job.targets`` for a schedule without groups."""
    groups = job.spec.get("groups")
    if not isinstance(groups, list) or not groups:
        return job.targets
    devices: dict[str, None] = dict.fromkeys(str(m) for m in job.spec.get("fixed") or ())
    for mrid in groups:
        group = uow.end_device_groups.find(job.utility_id, DeviceRef(mrid=str(mrid)))
        if group is None or group.id is None or not group.is_open:
            why = "is closed" if group is not None else "no longer exists"
            log.warning("read schedule %s: end device group %s %s", job.mrid, mrid, why)
            continue
        members = uow.end_device_groups.members(group.id)
        if not members:
            log.warning("read schedule %s: end device group %s is empty", job.mrid, mrid)
        for member in members:
            if addressable is None or addressable(member):
                devices[member] = None
            else:
                log.warning(
                    "read schedule %s: %s of group %s has no head-end address",
                    job.mrid,
                    member,
                    mrid,
                )
    return tuple(devices)
