"""Who is calling: WS-Security UsernameToken (text or digest) or HTTP Basic.

* ``wsse:UsernameToken`` with ``Password Type="...#PasswordText"``: the password
  compared in constant time with the configured one.
* ``Type="...#PasswordDigest"``: ``Base64(SHA-1(nonce + created + password))``;
  ``wsu:Created`` must be within ``token_max_age`` of now, and a nonce is
  accepted once within that window (replays refused).
* ``Authorization: Basic ...`` when the SOAP header carries no token. A call with
  no credentials at all, or refused Basic ones, is challenged (HTTP 401,
  ``WWW-Authenticate: Basic realm="amihub"``).

Every refusal raises :class:`AuthenticationFailed` with a reason that is safe to
send back (it never says whether the user exists).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Final

from lxml import etree

from hub.security import Permission, Principal, UserDirectory

WSSE: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_TOKEN_PROFILE: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"  # noqa: S105
)
PASSWORD_TEXT: Final = _TOKEN_PROFILE + "#PasswordText"
PASSWORD_DIGEST: Final = _TOKEN_PROFILE + "#PasswordDigest"


class AuthenticationFailed(Exception):
    """A refused call. ``challenge``: no credentials were sent, or HTTP Basic ones were
    refused; the answer is HTTP 401 with ``WWW-Authenticate: Basic``, so a client that
    sends credentials only when challenged (suds, urllib) sends them."""

    def __init__(self, reason: str, user: str | None = None, *, challenge: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user = user
        self.challenge = challenge


class NonceCache:
    """Nonces seen within the token age window (bounded, thread-safe)."""

    def __init__(self, max_age: float, max_entries: int = 100_000) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if now - at <= self.max_age and len(self._seen) < self.max_entries:
                    break
                del self._seen[oldest]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


class Authenticator:
    def __init__(
        self, users: UserDirectory, *, token_max_age: float = 300.0, allow_anonymous: bool = False
    ) -> None:
        self.users = users
        self.token_max_age = token_max_age
        self.allow_anonymous = allow_anonymous
        self.nonces = NonceCache(token_max_age)

    def authenticate(
        self, soap_header: etree._Element | None, authorization: str | None
    ) -> Principal:
        token = None
        if soap_header is not None:
            security = soap_header.find(f"{{{WSSE}}}Security")
            if security is not None:
                token = security.find(f"{{{WSSE}}}UsernameToken")
                if token is None:
                    raise AuthenticationFailed("wsse:Security carries no UsernameToken")
        if token is not None:
            return self._username_token(token)
        if authorization:
            try:
                return self._basic(authorization)
            except AuthenticationFailed as exc:
                exc.challenge = True
                raise
        if self.allow_anonymous:
            return Principal("anonymous", None, frozenset({Permission("*", "*")}))
        raise AuthenticationFailed(
            "authentication required: WS-Security UsernameToken or HTTP Basic", challenge=True
        )

    # -- methods -------------------------------------------------------------------------

    def _basic(self, authorization: str) -> Principal:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed(f"HTTP {scheme} authentication is not supported")
        try:
            user, sep, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("malformed HTTP Basic credentials") from None
        if not sep:
            raise AuthenticationFailed("malformed HTTP Basic credentials")
        principal = self.users.check_password(user, password)
        if principal is None:
            raise AuthenticationFailed("invalid user name or password", user)
        return principal

    def _username_token(self, token: etree._Element) -> Principal:
        user = (token.findtext(f"{{{WSSE}}}Username") or "").strip()
        password_el = token.find(f"{{{WSSE}}}Password")
        if not user or password_el is None:
            raise AuthenticationFailed("UsernameToken needs Username and Password", user or None)
        kind = password_el.get("Type") or PASSWORD_TEXT
        password = password_el.text or ""
        if kind == PASSWORD_TEXT:
            principal = self.users.check_password(user, password)
        elif kind == PASSWORD_DIGEST:
            principal = self._digest(user, password, token)
        else:
            raise AuthenticationFailed(
                f"UsernameToken password type {kind!r} is not supported", user
            )
        if principal is None:
            raise AuthenticationFailed("invalid user name or password", user)
        return principal

    def _digest(self, user: str, digest: str, token: etree._Element) -> Principal | None:
        nonce_text = (token.findtext(f"{{{WSSE}}}Nonce") or "").strip()
        created = (token.findtext(f"{{{WSU}}}Created") or "").strip()
        if not nonce_text or not created:
            raise AuthenticationFailed("a PasswordDigest needs Nonce and Created", user)
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except (binascii.Error, ValueError):
            raise AuthenticationFailed("malformed Nonce or Created", user) from None
        if created_at.tzinfo is None:
            raise AuthenticationFailed("Created has no time zone", user)
        age = (datetime.now(UTC) - created_at).total_seconds()
        if abs(age) > self.token_max_age:
            raise AuthenticationFailed(
                f"UsernameToken Created is {age:.0f} s away from now "
                f"(at most {self.token_max_age:.0f} s)",
                user,
            )
        settings = self.users.get(user)
        if settings is None or settings.password is None:
            return None
        secret = settings.password.get_secret_value().encode()
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + secret).digest())  # noqa: S324 - WS-Security digest is SHA-1
        if not hmac.compare_digest(expected, digest.strip().encode()):
            return None
        if not self.nonces.first_use(nonce_text):
            raise AuthenticationFailed("UsernameToken nonce replayed", user)
        return settings.principal()
