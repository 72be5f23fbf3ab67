"""What the operator interface uses of the bootstrapped hub (``hub.bootstrap.App``),
as a protocol: the hub's :class:`hub.app.HubApp` and the store's engine (its views
and readiness checks query it). Adapters never import the composition root
(.importlinter)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Engine

from hub.app import HubApp as _HubApp


class HubApp(_HubApp, Protocol):
    @property
    def engine(self) -> Engine: ...
