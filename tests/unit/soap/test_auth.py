"""WS-Security UsernameToken and HTTP Basic, without a server."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from adapters.soap.auth import (
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    WSSE,
    WSU,
    AuthenticationFailed,
    Authenticator,
    NonceCache,
)
from hub.security import UserDirectory, UserSettings

USERS = UserDirectory(
    [UserSettings(name="cis", password="s3cret", utility="NORTH", permissions=["get:*"])]  # type: ignore[arg-type]
)


def token(password: str, kind: str = PASSWORD_TEXT, nonce: bytes | None = None,
          created: str | None = None) -> etree._Element:  # fmt: skip
    header = etree.Element("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    ut = etree.SubElement(
        etree.SubElement(header, f"{{{WSSE}}}Security"), f"{{{WSSE}}}UsernameToken"
    )
    etree.SubElement(ut, f"{{{WSSE}}}Username").text = "cis"
    p = etree.SubElement(ut, f"{{{WSSE}}}Password", Type=kind)
    p.text = password
    if nonce is not None:
        etree.SubElement(ut, f"{{{WSSE}}}Nonce").text = base64.b64encode(nonce).decode()
    if created is not None:
        etree.SubElement(ut, f"{{{WSU}}}Created").text = created
    return header


def digest(nonce: bytes, created: str, password: str) -> str:
    return base64.b64encode(
        hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    ).decode()


def test_text_token_maps_to_the_users_principal() -> None:
    principal = Authenticator(USERS).authenticate(token("s3cret"), None)
    assert principal.name == "cis"
    assert principal.utility == "NORTH"
    assert principal.may("get", "MeterReadings")
    assert not principal.may("create", "MeterConfig")
    with pytest.raises(AuthenticationFailed):
        Authenticator(USERS).authenticate(token("wrong"), None)


def test_digest_token_once_within_the_window() -> None:
    auth = Authenticator(USERS, token_max_age=60)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = b"n" * 16
    header = token(digest(nonce, created, "s3cret"), PASSWORD_DIGEST, nonce, created)
    assert auth.authenticate(header, None).name == "cis"
    with pytest.raises(AuthenticationFailed, match="replayed"):
        auth.authenticate(header, None)
    old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    stale = token(digest(b"m" * 16, old, "s3cret"), PASSWORD_DIGEST, b"m" * 16, old)
    with pytest.raises(AuthenticationFailed, match="away from now"):
        auth.authenticate(stale, None)
    wrong = token(digest(b"o" * 16, created, "nope"), PASSWORD_DIGEST, b"o" * 16, created)
    with pytest.raises(AuthenticationFailed, match="invalid"):
        auth.authenticate(wrong, None)


def test_basic_and_missing_credentials() -> None:
    auth = Authenticator(USERS)
    good = "Basic " + base64.b64encode(b"cis:s3cret").decode()
    assert auth.authenticate(None, good).name == "cis"
    for bad in ("Basic " + base64.b64encode(b"cis:x").decode(), "Basic !!!", "Bearer abc"):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(None, bad)
    with pytest.raises(AuthenticationFailed, match="authentication required"):
        auth.authenticate(None, None)
    anonymous = Authenticator(USERS, allow_anonymous=True).authenticate(None, None)
    assert anonymous.name == "anonymous"
    assert anonymous.may("delete", "MeterConfig")


def test_nonce_cache_forgets_after_max_age() -> None:
    cache = NonceCache(max_age=0.0)
    assert cache.first_use("a")
    assert cache.first_use("a")  # aged out immediately
    bounded = NonceCache(max_age=60, max_entries=2)
    assert all(bounded.first_use(n) for n in ("a", "b", "c"))
    assert not bounded.first_use("c")
