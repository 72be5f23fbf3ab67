"""Every refusal of WS-Security and HTTP Basic credentials with its reason and user.

The reason goes back in the SOAP Fault and, with the user, into the audit of refusals;
`make mutate` found both untested (docs/testing.md).
"""

from __future__ import annotations

import base64
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
from tests.unit.soap.test_auth import digest

USERS = UserDirectory(
    [
        UserSettings(name="cis", password="s3cret", utility="NORTH"),  # type: ignore[arg-type]
        UserSettings(name="mdm", password="a:b:c", utility="SOUTH"),  # type: ignore[arg-type]
    ]
)


def header(
    *,
    user: str | None = "cis",
    password: str | None = "s3cret",
    kind: str | None = PASSWORD_TEXT,
    nonce: str | None = None,
    created: str | None = None,
    token: bool = True,
) -> etree._Element:
    root = etree.Element("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    security = etree.SubElement(root, f"{{{WSSE}}}Security")
    if not token:
        return root
    ut = etree.SubElement(security, f"{{{WSSE}}}UsernameToken")
    if user is not None:
        etree.SubElement(ut, f"{{{WSSE}}}Username").text = user
    if password is not None:
        p = etree.SubElement(ut, f"{{{WSSE}}}Password")
        p.text = password
        if kind is not None:
            p.set("Type", kind)
    if nonce is not None:
        etree.SubElement(ut, f"{{{WSSE}}}Nonce").text = nonce
    if created is not None:
        etree.SubElement(ut, f"{{{WSU}}}Created").text = created
    return root


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def refusal(
    soap: etree._Element | None, authorization: str | None = None
) -> tuple[str, str | None]:
    with pytest.raises(AuthenticationFailed) as caught:
        Authenticator(USERS).authenticate(soap, authorization)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason, caught.value.user


NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # refusals that never read the age


def now() -> str:
    """Created for a token checked now (NOW is taken at collection: minutes old later)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NONCE = base64.b64encode(b"n" * 16).decode()
MALFORMED = "malformed HTTP Basic credentials"


@pytest.mark.parametrize(
    ("soap", "authorization", "reason", "user"),
    [
        (None, None, "authentication required: WS-Security UsernameToken or HTTP Basic", None),
        (header(token=False), None, "wsse:Security carries no UsernameToken", None),
        (header(password=None), None, "UsernameToken needs Username and Password", "cis"),
        (header(user=None), None, "UsernameToken needs Username and Password", None),
        (header(password="nope"), None, "invalid user name or password", "cis"),
        (header(user="eve"), None, "invalid user name or password", "eve"),
        (
            header(kind="urn:x"),
            None,
            "UsernameToken password type 'urn:x' is not supported",
            "cis",
        ),
        (
            header(kind=PASSWORD_DIGEST, created=NOW),
            None,
            "a PasswordDigest needs Nonce and Created",
            "cis",
        ),
        (
            header(kind=PASSWORD_DIGEST, nonce=NONCE),
            None,
            "a PasswordDigest needs Nonce and Created",
            "cis",
        ),
        # not Base64: a character outside the alphabet is refused, not skipped
        (
            header(kind=PASSWORD_DIGEST, nonce="AAAA!AAAA", created=NOW),
            None,
            "malformed Nonce or Created",
            "cis",
        ),
        (
            header(kind=PASSWORD_DIGEST, nonce=NONCE, created="yesterday"),
            None,
            "malformed Nonce or Created",
            "cis",
        ),
        (
            header(kind=PASSWORD_DIGEST, nonce=NONCE, created="2024-06-01T12:00:00"),
            None,
            "Created has no time zone",
            "cis",
        ),
        (None, "Bearer abc", "HTTP Bearer authentication is not supported", None),
        (None, "Basic dXNlcjpw YQ==", MALFORMED, None),
        (None, "Basic !" + base64.b64encode(b"cis:s3cret").decode(), MALFORMED, None),
        (None, basic(b"\xff\xfe:x"), MALFORMED, None),
        (None, basic(b"no colon"), MALFORMED, None),
        (None, basic(b"cis:wrong"), "invalid user name or password", "cis"),
        (None, basic(b"mdm:a:b"), "invalid user name or password", "mdm"),
    ],
)
def test_refusal_reason_and_user(
    soap: etree._Element | None, authorization: str | None, reason: str, user: str | None
) -> None:
    assert refusal(soap, authorization) == (reason, user)


def test_a_stale_token_says_how_far_away_it_is() -> None:
    created = (datetime.now(UTC) - timedelta(seconds=1000)).strftime("%Y-%m-%dT%H:%M:%SZ")
    digested = digest(b"m" * 16, created, "s3cret")
    reason, user = refusal(
        header(
            password=digested,
            kind=PASSWORD_DIGEST,
            nonce=base64.b64encode(b"m" * 16).decode(),
            created=created,
        )
    )
    assert user == "cis"
    assert reason.startswith("UsernameToken Created is 100") or reason.startswith(
        "UsernameToken Created is 99"
    )
    assert reason.endswith(" s away from now (at most 300 s)")


def test_a_replayed_nonce_is_refused_with_the_user() -> None:
    auth = Authenticator(USERS)
    created = now()
    soap = header(
        password=digest(b"r" * 16, created, "s3cret"),
        kind=PASSWORD_DIGEST,
        nonce=base64.b64encode(b"r" * 16).decode(),
        created=created,
    )
    assert auth.authenticate(soap, None).name == "cis"
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate(soap, None)
    assert (caught.value.reason, caught.value.user) == ("UsernameToken nonce replayed", "cis")


def test_a_password_may_contain_colons() -> None:
    principal = Authenticator(USERS).authenticate(None, basic(b"mdm:a:b:c"))
    assert (principal.name, principal.utility) == ("mdm", "SOUTH")
    text = Authenticator(USERS).authenticate(header(user="mdm", password="a:b:c"), None)
    assert text.name == "mdm"
    assert Authenticator(USERS).authenticate(header(kind=None), None).name == "cis"


def test_a_user_known_by_name_alone_has_its_principal() -> None:
    # the AMQP user id the broker validated, an SFTP login: no password checked here
    principal = USERS.principal("mdm")
    assert principal is not None
    assert (principal.name, principal.utility) == ("mdm", "SOUTH")
    assert principal.may("create", "MeterConfig")
    assert USERS.principal("eve") is None
    assert USERS.check_password("mdm", "a:b:c") == principal
    assert USERS.check_password("mdm", "a:b") is None


def test_a_digest_for_an_unknown_user_is_an_invalid_login() -> None:
    created = now()
    soap = header(
        user="eve",
        password=digest(b"e" * 16, created, "s3cret"),
        kind=PASSWORD_DIGEST,
        nonce=base64.b64encode(b"e" * 16).decode(),
        created=created,
    )
    assert refusal(soap) == ("invalid user name or password", "eve")


def test_each_nonce_is_remembered_by_itself() -> None:
    auth = Authenticator(USERS)
    created = now()
    for n in (b"a" * 16, b"b" * 16):
        soap = header(
            password=digest(n, created, "s3cret"),
            kind=PASSWORD_DIGEST,
            nonce=base64.b64encode(n).decode(),
            created=created,
        )
        assert auth.authenticate(soap, None).name == "cis"


def test_the_nonce_cache_holds_at_most_max_entries() -> None:
    cache = NonceCache(max_age=60, max_entries=2)
    assert all(cache.first_use(n) for n in ("a", "b", "c"))
    # full: each check first makes room by forgetting the oldest ("a", then "b")
    assert cache.first_use("b")
    assert NonceCache(max_age=60).max_entries == 100_000
