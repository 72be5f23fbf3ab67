"""AMQP settings: URL, credentials and TLS from configuration; topology from settings."""

from __future__ import annotations

import ssl

import pytest

from adapters.amqp.connection import Backoff, make_connection, ssl_options
from adapters.amqp.topology import Topology
from cim_schemas.errors import ConfigurationError
from hub.settings import AmqpSettings, load_settings


def test_amqps_checks_the_broker_certificate_and_host_name() -> None:
    settings = AmqpSettings(
        url="amqps://hub:secret@broker.example:5671/prod",
        tls={"ca_certs": "/etc/amihub/ca.pem", "certfile": "c.pem", "keyfile": "k.pem"},
    )
    opts = ssl_options(settings)
    assert opts == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": "/etc/amihub/ca.pem",
        "certfile": "c.pem",
        "keyfile": "k.pem",
        "server_hostname": "broker.example",
    }
    conn = make_connection(settings)
    assert conn.ssl == opts
    assert conn.userid == "hub"


def test_amqps_without_tls_section_still_verifies() -> None:
    opts = ssl_options(AmqpSettings(url="amqps://broker.example/"))
    assert opts == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "broker.example"}


def test_tls_needs_amqps_and_both_key_files() -> None:
    with pytest.raises(ConfigurationError):
        make_connection(AmqpSettings(url="amqp://broker/", tls={"ca_certs": "ca.pem"}))
    with pytest.raises(ConfigurationError):
        ssl_options(AmqpSettings(url="amqps://broker/", tls={"certfile": "c.pem"}))


def test_password_from_settings_overrides_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMIHUB_AMQP__URL", "amqp://hub@broker:5672/%2f")
    monkeypatch.setenv("AMIHUB_AMQP__PASSWORD", "from-env")
    monkeypatch.setenv("AMIHUB_AMQP__PARTNERS", '[{"name": "cis", "events": ["created.*"]}]')
    monkeypatch.setenv("AMIHUB_CONFIG", "")  # empty: no settings file
    settings = load_settings().amqp
    conn = make_connection(settings)
    assert conn.password == "from-env"
    assert "from-env" not in repr(settings)
    assert settings.partners[0].queue_name == "amihub.partner.cis"


def test_topology_from_settings() -> None:
    t = Topology.from_settings(
        AmqpSettings(quorum=True, partners=[{"name": "cis", "events": ["created.*", "x.y"]}])
    )
    assert t.request_exchange.type == "topic"
    assert t.request_queue.queue_arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "amihub.dead-letter",
    }
    assert t.request_queue.durable
    [cis] = t.partner_queues
    assert cis.name == "amihub.partner.cis"
    assert sorted(b.routing_key for b in cis.bindings) == ["created.*", "x.y"]


def test_backoff_doubles_up_to_the_maximum() -> None:
    import threading

    backoff = Backoff(0.5, 3.0, threading.Event(), jitter=0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    jittered = Backoff(0.5, 3.0, threading.Event())  # the one rule: up to half taken off
    delays = [jittered.next_delay() for _ in range(5)]
    assert all(n / 2 <= d <= n for d, n in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0], strict=True))
