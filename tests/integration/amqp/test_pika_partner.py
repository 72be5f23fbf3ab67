"""A partner written with pika (an AMQP client amihub does not use) against RabbitMQ: the
partner guide of docs/amqp.md works from another client, and the routing key a partner
publishes under must agree with its Header, so that RabbitMQ's topic permissions on the
key limit what the partner may do."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from hub.bootstrap import App
from hub.samples import meter_config
from hub.security import UserSettings
from mdm.model import DeviceRef
from tests.conftest import unavailable
from tests.integration.amqp.conftest import Start
from tests.unit.amqp.partner import readings_request
from tests.unit.amqp.test_amqp_memory import assert_dead_lettered, result_of
from tests.unit.hub.conftest import reading_count

pytestmark = pytest.mark.rabbitmq


@dataclass
class Reply:
    body: bytes
    properties: pika.BasicProperties


class PikaPartner:
    """What a partner following docs/amqp.md writes with pika."""

    def __init__(
        self,
        url: str,
        exchange: str,
        reply_queue: str,
        user: str | None = None,
        password: str | None = None,
    ):
        self.connection = pika.BlockingConnection(pika_parameters(url, user, password))
        self.channel: BlockingChannel = self.connection.channel()
        self.channel.confirm_delivery()  # a refused publish raises here, not later
        self.exchange = exchange
        self.reply_queue = reply_queue
        self.user = user
        self.channel.queue_declare(reply_queue, durable=False)

    def publish(self, body: bytes, routing_key: str) -> str:
        message_id = f"pika-{uuid.uuid4()}"
        self.channel.basic_publish(
            self.exchange,
            routing_key,
            body,
            pika.BasicProperties(
                message_id=message_id,
                reply_to=self.reply_queue,
                user_id=self.user,
                content_type="application/xml",
                delivery_mode=pika.DeliveryMode.Persistent,
            ),
        )
        return message_id

    def reply(self, timeout: float = 15) -> Reply:
        for method, properties, body in self.channel.consume(
            self.reply_queue, inactivity_timeout=timeout
        ):
            assert method is not None, f"no reply within {timeout} s"
            self.channel.basic_ack(method.delivery_tag)
            self.channel.cancel()
            return Reply(body, properties)
        raise AssertionError("the reply queue was cancelled")

    def close(self) -> None:
        if self.connection.is_open:
            channel = self.channel if self.channel.is_open else self.connection.channel()
            channel.queue_delete(self.reply_queue)
            self.connection.close()


def pika_parameters(
    url: str, user: str | None = None, password: str | None = None
) -> pika.ConnectionParameters:
    """kombu's ``amqp://u:p@host:port//`` (vhost ``/``) as pika's parameters."""
    parts = urlsplit(url)
    return pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        virtual_host=unquote(parts.path[1:]) or "/",
        credentials=pika.PlainCredentials(
            user or unquote(parts.username or "guest"),
            password or unquote(parts.password or "guest"),
        ),
    )


@pytest.fixture
def pika_partner(amqp_url: str) -> Iterator[type[PikaPartner]]:
    made: list[PikaPartner] = []

    class Made(PikaPartner):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for partner in made:
        partner.close()


def test_a_pika_partner_sends_readings_and_receives_the_reply(
    rabbit: Start, sqlite_app: App, amqp_url: str, pika_partner: type[PikaPartner]
) -> None:
    service, _ = rabbit(sqlite_app)
    s = service.settings
    partner = pika_partner(amqp_url, s.request_exchange, f"{s.request_queue}.pika")
    mid = partner.publish(readings_request("MTR-1"), "create.MeterReadings")
    reply = partner.reply()
    assert result_of(reply.body) == ("OK", [])
    assert reply.properties.correlation_id == mid
    assert reply.properties.headers["amihub-result"] == "OK"
    assert reading_count(sqlite_app) == 96


def test_the_routing_key_must_agree_with_the_header(
    rabbit: Start, sqlite_app: App, amqp_url: str, pika_partner: type[PikaPartner]
) -> None:
    """create MeterReadings published as create.MeterConfig: refused (1006) and
    dead-lettered with the reason; nothing stored."""
    service, kombu_partner = rabbit(sqlite_app)
    s = service.settings
    partner = pika_partner(amqp_url, s.request_exchange, f"{s.request_queue}.pika")
    mid = partner.publish(readings_request("MTR-1"), "create.MeterConfig")
    reply = partner.reply()
    assert result_of(reply.body) == ("FAILED", ["1006"])
    assert reply.properties.correlation_id == mid
    dead = assert_dead_lettered(kombu_partner, sqlite_app, "1006")
    reason = dead.headers["amihub-error-reason"]
    assert "create MeterReadings" in reason
    assert "create.MeterConfig" in reason
    assert dead.headers["amihub-original-routing-key"] == "create.MeterConfig"
    assert reading_count(sqlite_app) == 0


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def limited_user(amqp_url: str) -> Iterator[tuple[str, str, str]]:
    """A RabbitMQ user of its own, removed afterwards: (user, password, vhost)."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl", "topic permissions are set with it")
    vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
    user, password = f"t-partner-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    _rabbitmqctl("add_user", user, password)
    try:
        yield user, password, vhost
    finally:
        _rabbitmqctl("delete_user", user)


def test_topic_permissions_limit_what_a_partner_may_do(
    rabbit: Start,
    sqlite_app: App,
    amqp_url: str,
    limited_user: tuple[str, str, str],
    pika_partner: type[PikaPartner],
) -> None:
    """The broker lets the partner publish under create.MeterReadings only; amihub itself
    would let it do anything (permissions *:*). A MeterConfig under the allowed key is
    refused by amihub (1006); under its own key, by RabbitMQ."""
    user, password, vhost = limited_user
    sqlite_app.settings = sqlite_app.settings.model_copy(
        update={"users": [UserSettings(name=user, permissions=["*:*"])]}
    )
    service, _ = rabbit(sqlite_app)
    s = service.settings
    prefix = s.request_exchange.rsplit(".", 1)[0].replace(".", r"\.")
    mine = f"^{prefix}\\..*"
    _rabbitmqctl("set_permissions", "-p", vhost, user, mine, mine, mine)
    _rabbitmqctl(
        "set_topic_permissions",
        "-p",
        vhost,
        user,
        s.request_exchange,
        r"^create\.MeterReadings$",
        ".*",
    )
    partner = pika_partner(
        amqp_url, s.request_exchange, f"{s.request_queue}.limited", user=user, password=password
    )

    partner.publish(readings_request("MTR-1"), "create.MeterReadings")
    assert result_of(partner.reply().body) == ("OK", [])

    config = meter_config("create", [{"mrid": "MTR-NEW"}])
    partner.publish(config, "create.MeterReadings")  # allowed key, another operation
    assert result_of(partner.reply().body) == ("FAILED", ["1006"])

    with pytest.raises(ChannelClosedByBroker) as refused:
        partner.publish(config, "create.MeterConfig")
    assert refused.value.reply_code == 403  # ACCESS_REFUSED by the topic permission
    with sqlite_app.uow_factory() as uow:
        utility = uow.utilities.get(sqlite_app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        assert uow.devices.find(utility.id, DeviceRef(mrid="MTR-NEW")) is None
