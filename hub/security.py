"""Who may do what: principals, their utility and their permissions per (verb, noun).

Adapters authenticate (SOAP: WS-Security UsernameToken or HTTP Basic; AMQP: the
broker-validated user id; SFTP: key or password) and hand the pipeline a
:class:`Principal`. The pipeline authorises every message against it after
reading the Header, so the rule is the same whatever the transport. Refusals
are audited.

Settings::

    [[users]]
    name = "cis"
    password = "..."            # or AMIHUB_USERS='[{"name": ...}]' in the environment
    utility = "NORTH"
    permissions = ["get:MeterReadings", "create:*", "*:MasterDataLinkageConfig"]
    reply_addresses = ["https://cis.example/amihub/*"]   # where amihub may call back

A user's name is at most :data:`MAX_USER_NAME` characters (it is the message log's
and audit's actor), without control characters; an empty password is refused at
start-up (leave ``password`` out for a user that never logs in with one).
``reply_addresses`` is the allow-list of URLs this user may name as ``ReplyAddress``
(and, for subscribers, that ``[soap.subscribers]`` URLs must match): shell-style
patterns (``fnmatch``, ``*`` any characters), nothing allowed when empty.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Final

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from cim_schemas.errors import ConfigurationError

ANY = "*"
#: longest user name (the audit log's actor and the message log's source hold 200)
MAX_USER_NAME: Final = 200


def address_allowed(patterns: tuple[str, ...] | list[str], url: str) -> bool:
    """Whether ``url`` matches one of the allow-list's patterns (case-sensitive
    ``fnmatch``; a pattern without ``*`` must equal the URL)."""
    return any(fnmatchcase(url, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Permission:
    verb: str
    noun: str

    @classmethod
    def parse(cls, text: str) -> Permission:
        verb, sep, noun = text.partition(":")
        if not sep or not verb or not noun:
            raise ConfigurationError(f"permission {text!r} is not 'verb:Noun' (* allowed)")
        return cls(verb.strip(), noun.strip())

    def allows(self, verb: str, noun: str) -> bool:
        return self.verb in (ANY, verb) and self.noun in (ANY, noun)

    def __str__(self) -> str:
        return f"{self.verb}:{self.noun}"


@dataclass(frozen=True)
class Principal:
    name: str
    utility: str | None = None
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    #: the ``cim-variant`` mapping this sender's CIM messages are normalised with
    cim_variant: str | None = None
    #: URL patterns this principal may name as ReplyAddress (``[[users]] reply_addresses``)
    reply_addresses: tuple[str, ...] = ()

    def may_reply_to(self, url: str) -> bool:
        return address_allowed(self.reply_addresses, url)

    def may(self, verb: str, noun: str) -> bool:
        return any(p.allows(verb, noun) for p in self.permissions)


class UserSettings(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=MAX_USER_NAME, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: SecretStr | None = None
    utility: str | None = None
    permissions: list[str] = Field(default_factory=lambda: ["*:*"])
    #: a ``cim-variant`` mapping (docs/mappings.md): this user's CIM messages (SOAP,
    #: AMQP) are normalised with it before they are validated
    cim_variant: str | None = None
    #: URLs this user may name as ReplyAddress (``fnmatch`` patterns; none: no async
    #: replies by URL)
    reply_addresses: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _password_not_empty(self) -> UserSettings:
        if self.password is not None and not self.password.get_secret_value().strip():
            raise ValueError(
                f"user {self.name!r} has an empty password: set one, or leave password "
                "out for a user that does not log in with a password"
            )
        return self

    @field_validator("permissions")
    @classmethod
    def _check(cls, value: list[str]) -> list[str]:
        for text in value:
            Permission.parse(text)
        return value

    def principal(self) -> Principal:
        return Principal(
            self.name,
            self.utility,
            frozenset(Permission.parse(p) for p in self.permissions),
            self.cim_variant,
            tuple(self.reply_addresses),
        )


class UserDirectory:
    """The configured users, looked up by name; passwords compared in constant time."""

    def __init__(self, users: list[UserSettings]) -> None:
        self._users = {u.name: u for u in users}
        #: each user's principal, made once (immutable; asked on every request)
        self._principals = {u.name: u.principal() for u in users}

    def __bool__(self) -> bool:
        return bool(self._users)

    def get(self, name: str) -> UserSettings | None:
        return self._users.get(name)

    def principal(self, name: str) -> Principal | None:
        return self._principals.get(name)

    def check_password(self, name: str, password: str) -> Principal | None:
        user = self._users.get(name)
        if user is None or user.password is None:
            return None
        if hmac.compare_digest(user.password.get_secret_value().encode(), password.encode()):
            return self._principals[name]
        return None
