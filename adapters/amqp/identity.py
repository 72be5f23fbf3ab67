"""Who sent a message: the broker-validated ``user_id``, or a partner a relay names.

RabbitMQ refuses a publish whose ``user_id`` property is not the connection's
user, so ``user_id`` is authenticated. A relay user (a shovel, a gateway) that
is listed in ``relay_users`` may name the partner in the ``amihub-partner``
header instead; anyone else naming another partner there is refused.

With ``[[users]]`` configured, the sender must be one of them (the pipeline
checks its permission per verb and noun; an unknown or anonymous sender gets a
principal without permissions, so the refusal is the pipeline's usual FAILED
reply 1010 with an audit entry). With no users configured (the embedded
default, a demo) the sender is trusted and only named for the message log.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.amqp import headers as hdr
from hub.security import Principal, UserDirectory

#: the source recorded for messages without any sender name
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Sender:
    #: the name idempotency and the message log use (stable across redeliveries)
    source: str
    #: None: trusted (no users configured)
    principal: Principal | None
    #: set when the message is refused before the pipeline (a spoofed amihub-partner)
    refusal: str | None = None


class SenderResolver:
    def __init__(self, users: UserDirectory, relay_users: list[str], default_source: str) -> None:
        self.users = users
        self.relay_users = frozenset(relay_users)
        self.default_source = default_source

    def resolve(
        self, user_id: str | None, headers: dict[str, object], own_user: str | None = None
    ) -> Sender:
        """``own_user``: amihub's broker user, whose retry copies carry the partner's name."""
        named = headers.get(hdr.PARTNER)
        partner = str(named) if named is not None and str(named) else None
        name = user_id or None
        refusal = None
        if partner is not None and partner != name:
            if name is not None and (name in self.relay_users or name == own_user):
                name = partner
            else:
                refusal = (
                    f"{hdr.PARTNER} names {partner!r} but the message comes from "
                    f"{name or 'an unnamed user'!r}, which is not a relay user"
                )
        if not self.users:
            return Sender(name or self.default_source, None, refusal)
        source = name or ANONYMOUS
        principal = self.users.principal(source) or Principal(source)  # no permissions
        return Sender(source, principal, refusal)
