"""A request's control parameters (:mod:`hub.control_parameters`) as ``hes.controls``
parameters: the load limit as is, the ToU calendar as a DLMS activity calendar, the
firmware reference as a :class:`hes.controls.FirmwareFile` of the firmware folder of
whoever runs the job (the in-process head-end or an engine), loaded and checked against
its SHA-256 when the job runs."""

from __future__ import annotations

from pathlib import Path

from cim_schemas.errors import ConfigurationError
from hes import controls
from hes.dlms.cosem_data import ActivityCalendar, Day, DayAction, Season, Week
from hub import control_parameters as cp


def activity_calendar(calendar: cp.TouCalendar) -> ActivityCalendar:
    return ActivityCalendar(
        calendar.name.encode(),
        tuple(Season(s.name.encode(), s.start, s.week.encode()) for s in calendar.seasons),
        tuple(Week(w.name.encode(), w.days) for w in calendar.weeks),
        tuple(
            Day(d.day_id, tuple(DayAction(s.start, s.tariff) for s in d.schedules))
            for d in calendar.days
        ),
    )


def command_parameters(
    parameters: cp.ControlParameters | None, firmware_dir: Path | None
) -> controls.ControlParameters | None:
    """``firmware_dir``: ``[hes] firmware_dir`` here (ConfigurationError if a firmware
    job comes and it is not set)."""
    if parameters is None:
        return None
    if isinstance(parameters, cp.LoadLimit):
        return controls.LoadLimit(parameters.threshold_w)
    if isinstance(parameters, cp.CalendarUpdate):
        return controls.CalendarUpdate(
            activity_calendar(parameters.calendar), parameters.activate_at
        )
    if firmware_dir is None:
        raise ConfigurationError(
            f"firmware image {parameters.image}: no [hes] firmware_dir is configured here"
        )
    return controls.FirmwareFile(
        cp.ControlLibrary(firmware_dir=firmware_dir).image_path(parameters.image),
        parameters.version,
        parameters.sha256,
        parameters.activate_at,
    )
