"""The parameters of a control job, as the hub knows them: a load limit threshold, a ToU
calendar, a firmware image reference. docs/controls.md "Control parameters" has the story.

They are value objects with a JSON form (:func:`parameters_to_dict` /
:func:`parameters_from_dict`), carried by :class:`hub.headend.ControlRequest` to
whoever runs the job (the in-process head-end, an ``amihub engine`` through RabbitMQ,
a job record). Nothing here speaks DLMS: ``adapters/dlms/parameters.py`` turns them
into ``hes.controls`` parameters.

:class:`ControlLibrary` holds the two configured folders the requests refer to:

* ``[hes] calendars_dir``: one ToU calendar definition per file, ``<name>.json``
  (seasons, week profiles, day profiles: the JSON form of :class:`TouCalendar`,
  without ``name``); the request names the calendar, the hub reads and checks the
  file and the job carries the whole definition (what was checked is what runs);
* ``[hes] firmware_dir``: firmware images; the request names the image file, the
  version the meter reports after activation and the image's SHA-256. The hub checks
  that the file exists and has that checksum; the job carries only the reference,
  and whoever runs it loads the image and checks the checksum again before the
  transfer (the bytes never travel in a message).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cim_schemas.errors import PermanentError

#: a calendar or image name: a plain file name in its folder, nothing that walks out of it
NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
SHA256: Final = re.compile(r"[0-9a-fA-F]{64}")
MAX_THRESHOLD_W: Final = 0xFFFFFFFF  # limiter thresholds are double-long-unsigned
MAX_CALENDAR_BYTES: Final = 1 << 20


class ControlParameterInvalid(PermanentError):
    """A control's parameters are missing or wrong (the message names what and where)."""


# -- the value objects ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoadLimit:
    """3.15.0.18: the limiter's threshold in W of instantaneous active power import."""

    threshold_w: int

    def __post_init__(self) -> None:
        if isinstance(self.threshold_w, bool) or not 0 < self.threshold_w <= MAX_THRESHOLD_W:
            raise ControlParameterInvalid(
                f"load limit threshold {self.threshold_w} W is not in 1..{MAX_THRESHOLD_W} W "
                "(no limit: control type 3.15.0.23)"
            )


@dataclass(frozen=True)
class SeasonProfile:
    name: str
    start: datetime  # the season starts at this instant (each year)
    week: str  # the WeekProfile it uses


@dataclass(frozen=True)
class WeekProfile:
    name: str
    days: tuple[int, int, int, int, int, int, int]  # DayProfile ids, Monday..Sunday


@dataclass(frozen=True)
class DaySchedule:
    start: clock_time  # from this time of day ...
    tariff: int  # ... this tariff (the script selector of the meter's tariffication script)


@dataclass(frozen=True)
class DayProfile:
    day_id: int
    schedules: tuple[DaySchedule, ...]


@dataclass(frozen=True)
class TouCalendar:
    """An activity calendar (DLMS class 20): seasons -> week profiles -> day profiles."""

    name: str
    seasons: tuple[SeasonProfile, ...]
    weeks: tuple[WeekProfile, ...]
    days: tuple[DayProfile, ...]


@dataclass(frozen=True)
class CalendarUpdate:
    """3.20.0.24: write ``calendar`` as the meter's passive calendar and activate it at
    ``activate_at`` (None: as soon as it is written)."""

    calendar: TouCalendar
    activate_at: datetime | None = None


@dataclass(frozen=True)
class FirmwareReference:
    """3.11.0.24: the image file ``image`` of the firmware folder (``size`` bytes,
    ``sha256``), which makes the meter report ``version`` once activated at
    ``activate_at`` (None: right after verification)."""

    image: str
    version: str
    sha256: str  # lower-case hex
    size: int
    activate_at: datetime | None = None


ControlParameters = LoadLimit | CalendarUpdate | FirmwareReference


# -- JSON ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class _Season(_Strict):
    name: str = Field(min_length=1, max_length=32)
    start: datetime
    week: str = Field(min_length=1, max_length=32)


class _Week(_Strict):
    name: str = Field(min_length=1, max_length=32)
    days: list[int] = Field(min_length=7, max_length=7)


class _Schedule(_Strict):
    start: clock_time
    tariff: int = Field(ge=0, le=0xFFFF)


class _Day(_Strict):
    id: int = Field(ge=0, le=255)
    schedules: list[_Schedule] = Field(min_length=1)


class _CalendarBody(_Strict):
    seasons: list[_Season] = Field(min_length=1)
    weeks: list[_Week] = Field(min_length=1)
    days: list[_Day] = Field(min_length=1)


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top)"


def calendar_from_dict(name: str, data: Any) -> TouCalendar:
    """A calendar from its JSON form; ControlParameterInvalid says which key is wrong."""
    try:
        body = _CalendarBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ControlParameterInvalid(
            f"{_where(first)}: {first['msg']}"
            + (f" ({len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else "")
        ) from None
    problems: list[str] = []
    for n, s in enumerate(body.seasons):
        if s.start.utcoffset() is None:
            problems.append(f"seasons.{n}.start: {s.start.isoformat()} has no zone")
    weeks = {w.name for w in body.weeks}
    days = [d.id for d in body.days]
    for n, s in enumerate(body.seasons):
        if s.week not in weeks:
            problems.append(f"seasons.{n}.week: no week profile named {s.week!r}")
    for n, w in enumerate(body.weeks):
        for k, day in enumerate(w.days):
            if day not in days:
                problems.append(f"weeks.{n}.days.{k}: no day profile with id {day}")
    if len(set(days)) != len(days):
        problems.append("days: a day profile id appears twice")
    if len(weeks) != len(body.weeks):
        problems.append("weeks: a week profile name appears twice")
    for n, d in enumerate(body.days):
        starts = [s.start for s in d.schedules]
        if starts != sorted(set(starts)):
            problems.append(f"days.{n}.schedules: start times must ascend, each once")
    if problems:
        raise ControlParameterInvalid("; ".join(problems[:5]))
    return TouCalendar(
        name,
        tuple(SeasonProfile(s.name, s.start, s.week) for s in body.seasons),
        tuple(WeekProfile(w.name, _seven(w.days)) for w in body.weeks),
        tuple(
            DayProfile(d.id, tuple(DaySchedule(s.start, s.tariff) for s in d.schedules))
            for d in body.days
        ),
    )


def _seven(d: list[int]) -> tuple[int, int, int, int, int, int, int]:
    return (d[0], d[1], d[2], d[3], d[4], d[5], d[6])


def calendar_to_dict(calendar: TouCalendar) -> dict[str, Any]:
    return {
        "seasons": [
            {"name": s.name, "start": s.start.isoformat(), "week": s.week} for s in calendar.seasons
        ],
        "weeks": [{"name": w.name, "days": list(w.days)} for w in calendar.weeks],
        "days": [
            {
                "id": d.day_id,
                "schedules": [
                    {"start": s.start.isoformat(), "tariff": s.tariff} for s in d.schedules
                ],
            }
            for d in calendar.days
        ],
    }


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parameters_to_dict(parameters: ControlParameters | None) -> dict[str, Any] | None:
    """The JSON form (``kind`` says which)."""
    if parameters is None:
        return None
    if isinstance(parameters, LoadLimit):
        return {"kind": "load_limit", "threshold_w": parameters.threshold_w}
    if isinstance(parameters, CalendarUpdate):
        return {
            "kind": "calendar",
            "name": parameters.calendar.name,
            "activate_at": _at(parameters.activate_at),
            **calendar_to_dict(parameters.calendar),
        }
    return {
        "kind": "firmware",
        "image": parameters.image,
        "version": parameters.version,
        "sha256": parameters.sha256,
        "size": parameters.size,
        "activate_at": _at(parameters.activate_at),
    }


class _LoadLimitJson(_Strict):
    kind: Literal["load_limit"]
    threshold_w: int


class _FirmwareJson(_Strict):
    kind: Literal["firmware"]
    image: str = Field(pattern=f"^{NAME.pattern}$")
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=f"^{SHA256.pattern}$")
    size: int = Field(gt=0)
    activate_at: datetime | None = None


def parameters_from_dict(data: Any) -> ControlParameters | None:
    """Back from :func:`parameters_to_dict`; ControlParameterInvalid when malformed."""
    if data is None:
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    try:
        if kind == "load_limit":
            return LoadLimit(_LoadLimitJson.model_validate(data).threshold_w)
        if kind == "firmware":
            f = _FirmwareJson.model_validate(data)
            return FirmwareReference(f.image, f.version, f.sha256.lower(), f.size, f.activate_at)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(first)
        raise ControlParameterInvalid(f"{kind} parameters: {where}: {first['msg']}") from None
    if kind == "calendar":
        body = {k: v for k, v in data.items() if k not in ("kind", "name", "activate_at")}
        name = data.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ControlParameterInvalid(f"calendar parameters: bad name {name!r}")
        at = data.get("activate_at")
        try:
            activate_at = datetime.fromisoformat(at) if at is not None else None
        except (TypeError, ValueError):
            raise ControlParameterInvalid(f"calendar parameters: bad activate_at {at!r}") from None
        return CalendarUpdate(calendar_from_dict(name, body), activate_at)
    raise ControlParameterInvalid(f"control parameters of unknown kind {kind!r}")


# -- the configured folders --------------------------------------------------------------------


@dataclass(frozen=True)
class ControlLibrary:
    """``[hes] calendars_dir`` and ``[hes] firmware_dir``; None: that folder is not set."""

    calendars_dir: Path | None = None
    firmware_dir: Path | None = None

    def calendar(self, name: str) -> TouCalendar:
        """The calendar ``<calendars_dir>/<name>.json``, read and checked."""
        if self.calendars_dir is None:
            raise ControlParameterInvalid(
                "no calendar folder is configured ([hes] calendars_dir): ToU calendars "
                "cannot be named"
            )
        if not NAME.fullmatch(name):
            raise ControlParameterInvalid(f"calendar name {name!r} is not a plain name")
        path = self.calendars_dir / f"{name}.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ControlParameterInvalid(
                f"no calendar {name!r} ({path.name} is not in {self.calendars_dir})"
            ) from None
        except OSError as exc:
            raise ControlParameterInvalid(f"calendar {name!r}: {path}: {exc.strerror}") from None
        if len(raw) > MAX_CALENDAR_BYTES:
            raise ControlParameterInvalid(
                f"calendar file {path} is over {MAX_CALENDAR_BYTES} bytes"
            )
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ControlParameterInvalid(f"calendar file {path}: not JSON ({exc})") from None
        try:
            return calendar_from_dict(name, data)
        except ControlParameterInvalid as exc:
            raise ControlParameterInvalid(f"calendar file {path}: {exc}") from None

    def image_path(self, image: str) -> Path:
        if self.firmware_dir is None:
            raise ControlParameterInvalid(
                "no firmware folder is configured ([hes] firmware_dir): images cannot be named"
            )
        if not NAME.fullmatch(image):
            raise ControlParameterInvalid(f"image name {image!r} is not a plain file name")
        return self.firmware_dir / image

    def firmware(
        self, image: str, version: str, sha256: str, activate_at: datetime | None = None
    ) -> FirmwareReference:
        """A reference to ``<firmware_dir>/<image>``, whose SHA-256 must be ``sha256``."""
        path = self.image_path(image)
        if not SHA256.fullmatch(sha256):
            raise ControlParameterInvalid(f"sha256 {sha256!r} is not 64 hexadecimal digits")
        if not version or len(version) > 64:
            raise ControlParameterInvalid("version must be 1..64 characters")
        try:
            size, digest = file_sha256(path)
        except FileNotFoundError:
            raise ControlParameterInvalid(
                f"no firmware image {image!r} in {self.firmware_dir}"
            ) from None
        except OSError as exc:
            raise ControlParameterInvalid(f"firmware image {image!r}: {exc.strerror}") from None
        if digest != sha256.lower():
            raise ControlParameterInvalid(
                f"firmware image {image!r}: SHA-256 is {digest}, the request says {sha256.lower()}"
            )
        if size == 0:
            raise ControlParameterInvalid(f"firmware image {image!r} is empty")
        return FirmwareReference(image, version, digest, size, activate_at)


def file_sha256(path: Path) -> tuple[int, str]:
    """(size, hex SHA-256) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
