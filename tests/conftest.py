"""Shared fixtures: real servers when they are there, and a blocked network.

PostgreSQL and RabbitMQ tests use ``postgres_url`` / ``amqp_url``. Off CI a
missing server skips those tests with the reason; with ``CI=true`` it fails
them, so CI can never pass by skipping (anything else a test needs and may not
find goes through :func:`unavailable` too).

The markers tell the truth: a test that requests ``postgres_url`` (or
``amqp_url``), directly or through its fixtures, without ``@pytest.mark.postgres``
(``rabbitmq``) fails collection; one that gets it at run time
(``request.getfixturevalue``, a fixture parametrised over the stores) without the
marker fails when it asks. Parametrised over the stores:
``pytest.param("postgresql", marks=pytest.mark.postgres)``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get(
    "AMIHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("AMIHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def unavailable(what: str, why: str) -> NoReturn:
    """Skip off CI, fail on CI: the one way a test may be skipped for something missing."""
    message = f"{what} is not reachable ({why})"
    if ON_CI:
        pytest.fail(f"{message}: CI=true requires it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX
        return True
    host = address[0]
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may not reach the network: {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may not reach the network: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback connections are allowed in tests."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    import psycopg

    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(plain, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        unavailable("PostgreSQL", str(exc).strip())
    return POSTGRES_URL


#: marker -> the fixtures that mean a test needs that server
SERVER_FIXTURES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres_url", "postgres_server_url"),
    "rabbitmq": ("amqp_url", "amqp_server_url"),
}


def unmarked(item: pytest.Item) -> list[str]:
    """The server markers ``item`` lacks for the fixtures it requests."""
    names = set(getattr(item, "fixturenames", ()))
    return [
        marker
        for marker, fixtures in SERVER_FIXTURES.items()
        if names.intersection(fixtures) and item.get_closest_marker(marker) is None
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = [f"{item.nodeid}: not marked {', '.join(unmarked(item))}" for item in items]
    wrong = [w for item, w in zip(items, wrong, strict=True) if unmarked(item)]
    if wrong:
        raise pytest.UsageError(
            "tests that use a server must carry its marker (tests/conftest.py):\n"
            + "\n".join(wrong)
        )


def _require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    """At run time too (``getfixturevalue``): the asking test carries ``marker``."""
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(
            f"{request.node.nodeid} uses {request.fixturename} without "
            f"@pytest.mark.{marker} (pytest.param(..., marks=pytest.mark.{marker}))",
            pytrace=False,
        )


@pytest.fixture
def postgres_url(postgres_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    _require_marker(request, "postgres")

    plain = postgres_server_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"amihub_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def amqp_server_url() -> str:
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises many driver types here
        unavailable("RabbitMQ", str(exc).strip())
    return AMQP_URL


@pytest.fixture
def amqp_url(amqp_server_url: str, request: pytest.FixtureRequest) -> str:
    """The broker's URL, for a test marked ``rabbitmq`` (its own queue names)."""
    _require_marker(request, "rabbitmq")
    return amqp_server_url


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/amihub.db"
