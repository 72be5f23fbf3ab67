"""Authentication (WS-Security UsernameToken text/digest, HTTP Basic), permissions, HTTPS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from tests.integration.soap.conftest import Server, header, received_body, zeep_client
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post


def _get(client: object) -> object:
    return client.service.GetMeterReadings(  # type: ignore[attr-defined]
        Header=header("get", "MeterReadings"),
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}},
    )


def refusals(server: Server) -> list[tuple[str, str, str]]:
    with server.app.uow_factory() as uow:
        return [
            (actor, action, details or "")
            for _, actor, action, _, _, details in uow.audit.list(50)
            if action == "refused"
        ]


def test_username_token_text_and_digest_and_basic(server: Server) -> None:
    for options in ({}, {"digest": True}, {"basic": True}):
        client, history = zeep_client(server, "GetMeterReadings", **options)  # type: ignore[arg-type]
        assert _get(client).Reply.Result == "OK"  # type: ignore[attr-defined]
        received_body(history)


@pytest.mark.parametrize(
    "options",
    [
        {"password": "wrong"},
        {"password": "wrong", "digest": True},
        {"password": "wrong", "basic": True},
        {"user": "nobody", "password": "x"},
    ],
)
def test_bad_credentials_get_a_fault_and_an_audit_entry(
    server: Server, options: dict[str, object]
) -> None:
    client, history = zeep_client(server, "GetMeterReadings", **options)  # type: ignore[arg-type]
    with pytest.raises(Fault) as caught:
        _get(client)
    assert caught.value.code.endswith("Client")
    assert "1010" in caught.value.message
    received_body(history)  # the detail is a valid MeterReadingsFaultMessage
    audited = refusals(server)
    assert audited, "the refusal is audited"
    assert "invalid user name or password" in audited[0][2]


def test_no_credentials_at_all(server: Server) -> None:
    response = post(server, envelope(get_body()), auth=None)
    assert response.status_code == 401  # a challenge (tests/integration/soap/test_conformance.py)
    assert response.headers["WWW-Authenticate"] == 'Basic realm="amihub"'
    _, text, errors = fault_of(response)
    assert errors[0][0] == "1010"
    assert "authentication required" in text
    assert refusals(server)


def test_digest_replay_and_stale_created_are_refused(server: Server) -> None:
    nonce = os.urandom(16).hex()
    created = dt.datetime.now(dt.UTC)
    token = UsernameToken("cis", "cis-secret", use_digest=True, nonce=nonce, created=created)
    client, _ = zeep_client(server, "GetMeterReadings")
    client.wsse = token
    assert _get(client).Reply.Result == "OK"  # type: ignore[attr-defined]
    with pytest.raises(Fault, match="replayed"):
        _get(client)
    old = UsernameToken(
        "cis",
        "cis-secret",
        use_digest=True,
        nonce=os.urandom(16).hex(),
        created=created - dt.timedelta(hours=1),
    )
    client.wsse = old
    with pytest.raises(Fault, match="away from now"):
        _get(client)


def test_digest_is_what_the_standard_says() -> None:
    """Base64(SHA-1(nonce + created + password)), as zeep computes it."""
    nonce = "0123456789abcdef"
    created = "2026-03-01T00:00:00+00:00"
    expected = base64.b64encode(hashlib.sha1(nonce.encode() + created.encode() + b"pw").digest())
    from lxml import etree

    token = UsernameToken(
        "u", "pw", use_digest=True, nonce=nonce, created=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    )
    env = etree.fromstring(
        b'<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Header/><e:Body/></e:Envelope>'
    )
    env, _ = token.apply(env, {})
    assert env.findtext(".//{*}Created") == created
    digest = env.findtext(".//{*}Password")
    assert digest is not None
    assert digest.encode() == expected


def test_permissions_per_verb_and_noun(server: Server) -> None:
    client, _ = zeep_client(server, "GetMeterReadings", user="reader", password="reader-secret")
    assert _get(client).Reply.Result == "OK"  # type: ignore[attr-defined]
    client, history = zeep_client(
        server, "ReceiveMeterReadings", user="reader", password="reader-secret"
    )
    with pytest.raises(Fault) as caught:
        client.service.CreatedMeterReadings(
            Header=header("created", "MeterReadings"), Payload={"MeterReadings": {}}
        )
    assert "1010" in caught.value.message
    assert "reader may not created MeterReadings" in caught.value.message
    received_body(history)
    assert any(actor == "reader" for actor, _, _ in refusals(server))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https(soap_server_factory: Callable[..., Server], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = soap_server_factory(tls_cert=cert, tls_key=key)
    assert server.url.startswith("https://")
    client, history = zeep_client(server, "GetMeterReadings", verify=str(cert))
    assert _get(client).Reply.Result == "OK"  # type: ignore[attr-defined]
    received_body(history)
    untrusting = requests.Session()
    untrusting.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        untrusting.get(server.wsdl("GetMeterReadings"), timeout=5)  # not trusted without the cert


def test_each_user_sees_its_own_utility(server: Server) -> None:
    """The user north maps to utility NORTH: DEFAULT's meters are unknown to it."""
    client, _ = zeep_client(server, "GetMeterReadings", user="north", password="north-secret")
    with pytest.raises(Fault, match="unknown utility 'NORTH'"):
        _get(client)
    from hub.bootstrap import ensure_utility

    ensure_utility(server.app.uow_factory, "NORTH", "North utility")
    response = _get(client)
    assert response.Reply.Result == "FAILED"  # type: ignore[attr-defined]
    assert [e.code for e in response.Reply.Error] == ["2001"]  # type: ignore[attr-defined]
    cis, _ = zeep_client(server, "GetMeterReadings")
    assert _get(cis).Reply.Result == "OK"  # type: ignore[attr-defined]
