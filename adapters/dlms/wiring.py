"""What the head-end's commands (``amihub engine``, ``amihub keys``) take from the
composition root: ``hub/bootstrap.py`` wires the store and the engine worker, and
``amihub`` (hub/cli.py) hands it to its commands in the root context (``root``). The
commands build nothing themselves, and this package never imports the root.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, cast

import click

from cim_schemas.errors import ConfigurationError
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory

if TYPE_CHECKING:
    from adapters.dlms.engine_worker import EngineWorker

#: opens the store for a block (``hub.bootstrap.open_store``)
StoreOpener = Callable[[Settings], AbstractContextManager[UnitOfWorkFactory]]


class HeadEndRoot(Protocol):
    """What the head-end's commands take from the composition root (``hub.bootstrap``,
    which ``amihub`` puts in its root context as ``root``): they wire nothing
    themselves."""

    def open_store(self, settings: Settings) -> AbstractContextManager[UnitOfWorkFactory]: ...

    def engine_worker(
        self, settings: Settings, *, concurrency: int | None = None, prefetch: int | None = None
    ) -> AbstractContextManager[EngineWorker]: ...


def composition_root(ctx: click.Context) -> HeadEndRoot:
    """The composition root ``amihub`` gives its commands."""
    obj = ctx.find_root().obj
    root = obj.get("root") if isinstance(obj, dict) else None
    if root is None:
        raise ConfigurationError("run this command through `amihub` (it wires the store)")
    return cast(HeadEndRoot, root)
