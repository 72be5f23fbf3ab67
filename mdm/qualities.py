"""A reading's qualities as they arrived: ReadingQualityType codes, and what else came.

A stored reading's ``quality`` text is its ReadingQualityType codes joined by commas
(``""`` = valid), as before. When a reading arrives with more than the codes -- a
ReadingQuality's ``source``, ``comment`` or ``timeStamp``, or a register Reading's
``reason`` -- that follows the codes after :data:`NOTES` (an ASCII record
separator, which XML 1.0 cannot carry, so it never comes from a message) as compact
JSON: ``{"q": [{"source": ..., "comment": ..., "timeStamp": ...}, ...], "reason": ...}``,
``q`` aligned with the codes (``{}`` for a quality with nothing but its code), each
value the text as sent. A reading without such notes keeps the plain codes: the bulk
paths (COPY, staging, the read path) carry the text as it is, and a note that changes
supersedes the stored version as a changed code does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

#: between the codes and the notes
NOTES: Final = "\x1e"
#: the attributes of a ReadingQuality kept as sent, in the profile's order
QUALITY_FIELDS: Final = ("comment", "source", "timeStamp")


@dataclass(frozen=True)
class Quality:
    """One ReadingQuality: its type code and its attributes as sent."""

    code: str
    comment: str | None = None
    source: str | None = None
    time_stamp: str | None = None


@dataclass(frozen=True)
class Qualities:
    """A reading's qualities and its reason, unpacked from the stored text."""

    codes: str  # comma-separated ReadingQualityType codes, "" = valid
    qualities: tuple[Quality, ...] = ()
    reason: str | None = None


def pack(qualities: list[Quality], reason: str | None = None) -> str:
    """The stored text of a reading's qualities (and register reason)."""
    codes = ",".join(q.code for q in qualities)
    notes: list[dict[str, str]] = []
    for q in qualities:
        note = {
            k: v
            for k, v in zip(QUALITY_FIELDS, (q.comment, q.source, q.time_stamp), strict=True)
            if v is not None
        }
        notes.append(note)
    if reason is None and not any(notes):
        return codes
    packed: dict[str, object] = {}
    if any(notes):
        packed["q"] = notes
    if reason is not None:
        packed["reason"] = reason
    return codes + NOTES + json.dumps(packed, ensure_ascii=False, separators=(",", ":"))


def codes_of(text: str) -> str:
    """Only the codes of a stored quality text."""
    return text.partition(NOTES)[0]


def unpack(text: str) -> Qualities:
    """Inverse of :func:`pack`."""
    codes, sep, rest = text.partition(NOTES)
    if not sep:
        return Qualities(codes, tuple(Quality(c) for c in codes.split(",") if c))
    notes = json.loads(rest)
    listed = notes.get("q") or []
    out = []
    for n, code in enumerate(c for c in codes.split(",") if c):
        note = listed[n] if n < len(listed) else {}
        out.append(Quality(code, note.get("comment"), note.get("source"), note.get("timeStamp")))
    return Qualities(codes, tuple(out), notes.get("reason"))
