"""The command bus over every handler, as the bootstrap builds it, for tests that drive a
component taking the bus (the mapped-file importer) without a whole app."""

from __future__ import annotations

from hub.bus import MessageBus
from mdm.handlers import HANDLERS

BUS = MessageBus(HANDLERS)
