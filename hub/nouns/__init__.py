"""Translators between IEC 61968-9 profiles and domain commands, one module a noun."""

from __future__ import annotations

from hub.control_parameters import ControlLibrary
from hub.headend import ControlJournal, HeadEnd
from hub.headend_jobs import JobDispatch
from hub.nouns.end_device_controls import EndDeviceControlsRoute
from hub.nouns.end_device_events import EndDeviceEventsRoute, GetEndDeviceEventsRoute
from hub.nouns.end_device_groups import EndDeviceGroupsRoute
from hub.nouns.get_meter_readings import GetMeterReadingsRoute
from hub.nouns.master_data import (
    MasterDataLinkageConfigRoute,
    meter_config_route,
    usage_point_config_route,
)
from hub.nouns.meter_read_schedule import MeterReadScheduleRoute
from hub.nouns.meter_readings import StoreMeterReadingsRoute
from hub.routing import Route, RouteTable
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory


def build_routes(
    settings: Settings,
    *,
    headend: HeadEnd | None = None,
    journal: ControlJournal | None = None,
    jobs: JobDispatch | None = None,
    uow_factory: UnitOfWorkFactory | None = None,
) -> RouteTable:
    """The route table; ``jobs`` (where head-end reads run) and ``uow_factory`` serve
    the on-demand reads of MeterReadSchedule, which run before the request's
    transaction."""
    routes: list[Route] = [
        StoreMeterReadingsRoute(
            max_block_readings=settings.limits.max_block_readings,
            chunk_rows=settings.limits.ingest_batch_rows,
        ),
        GetMeterReadingsRoute(
            max_group_meters=settings.limits.max_group_meters,
            max_meter_days=settings.limits.max_get_meter_days,
        ),
        usage_point_config_route(),
        meter_config_route(),
        MasterDataLinkageConfigRoute(),
        EndDeviceControlsRoute(
            headend,
            journal,
            library=ControlLibrary(settings.hes.calendars_dir, settings.hes.firmware_dir),
        ),
        EndDeviceEventsRoute(),
        GetEndDeviceEventsRoute(),
        EndDeviceGroupsRoute(),
        MeterReadScheduleRoute(
            headend,
            settings.hes.read_limit,
            jobs=jobs,
            uow_factory=uow_factory,
        ),
    ]
    return RouteTable(routes)
