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
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, SecretStr, field_validator

from hub.errors import ConfigurationError

ANY = "*"


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

    def may(self, verb: str, noun: str) -> bool:
        return any(p.allows(verb, noun) for p in self.permissions)


class UserSettings(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1)
    password: SecretStr | None = None
    utility: str | None = None
    permissions: list[str] = Field(default_factory=lambda: ["*:*"])
    #: a ``cim-variant`` mapping (docs/mappings.md): this user's CIM messages (SOAP,
    #: AMQP) are normalised with it before they are validated
    cim_variant: str | None = None

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
        )


class UserDirectory:
    """The configured users, looked up by name; passwords compared in constant time."""

    def __init__(self, users: list[UserSettings]) -> None:
        self._users = {u.name: u for u in users}

    def __bool__(self) -> bool:
        return bool(self._users)

    def get(self, name: str) -> UserSettings | None:
        return self._users.get(name)

    def principal(self, name: str) -> Principal | None:
        user = self._users.get(name)
        return user.principal() if user else None

    def check_password(self, name: str, password: str) -> Principal | None:
        user = self._users.get(name)
        if user is None or user.password is None:
            return None
        if hmac.compare_digest(user.password.get_secret_value().encode(), password.encode()):
            return user.principal()
        return None
