"""One composition root (hub/bootstrap.py): every service of ``amihub serve`` is built
there, the route table too, and SOAP's extra processes start from the root's entry
point (the import-linter contracts in ``make lint`` keep adapters off the root)."""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from adapters.soap.service import SoapService
from cim_schemas.errors import ConfigurationError
from hub.bootstrap import App, soap_service, soap_worker
from hub.cli import LAZY_COMMANDS, cli
from hub.serve import SERVICE_ALIASES
from hub.settings import SoapSettings
from tests.conftest import free_port
from tests.unit.hub.conftest import make_app

ROOT = Path(__file__).resolve().parents[3]


def test_every_service_is_built_by_the_root() -> None:
    for section, path in SERVICE_ALIASES.items():
        module, _, name = path.partition(":")
        assert module == "hub.bootstrap", (section, path)
        assert callable(getattr(importlib.import_module(module), name)), (section, path)


def test_the_command_lines_adapter_commands_come_through_the_root() -> None:
    for name, path in LAZY_COMMANDS.items():
        assert not path.startswith("adapters."), (name, path)
        assert isinstance(cli.get_command(click.Context(cli), name), click.Command), (name, path)


def test_the_route_table_is_built_by_the_root_only() -> None:
    callers = sorted(
        str(path.relative_to(ROOT))
        for package in ("hub", "adapters", "mappings", "hes", "mdm", "cim_schemas")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"\bbuild_routes\(", path.read_text(encoding="utf-8"))
    )
    assert callers == ["hub/bootstrap.py", "hub/nouns/__init__.py"]  # the call, the definition


@pytest.fixture
def two_process_app(sqlite_url: str) -> Iterator[App]:
    app = make_app(sqlite_url)
    app.settings = app.settings.model_copy(
        update={"soap": SoapSettings(enabled=True, port=free_port(), processes=2)}
    )
    yield app
    app.close()


def test_soap_processes_start_from_the_roots_picklable_entry_point(two_process_app: App) -> None:
    service = soap_service(two_process_app)
    assert service.worker_main is soap_worker
    assert pickle.loads(pickle.dumps(service.worker_main)) is soap_worker  # what spawn sends


def test_soap_processes_need_the_roots_entry_point(two_process_app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"processes > 1.*hub\.bootstrap\.soap_service"):
        SoapService(two_process_app)
