"""Push targets from the settings: ``[[sftp.push_targets]]`` (a partner's own SFTP
server, its host key pinned) used by ``amihub export --push NAME`` and by the delivery
of replies to the partner's CIM messages.

A partner that drops CIM messages (a ``cim-variant`` mapping) gets its replies pushed
to its server when the message asks for an asynchronous reply to an ``sftp`` address::

    <AsyncReplyFlag>true</AsyncReplyFlag>
    <ReplyAddress>sftp://billing-out/</ReplyAddress>      <!-- or sftp://billing-out/name.xml -->

The pipeline queues the reply in the outbox (channel ``sftp:<partner>``) in the
transaction of the effect; :class:`PushDelivery` pushes it. Only a target whose
``partner`` is the sender may be named: a ReplyAddress naming another partner's target
(or no configured target) is refused for good and kept as a dead letter.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from adapters.sftp.client import PushReceipt, PushTarget, RetryPolicy, push_file
from cim_schemas.errors import ConfigurationError, NotAuthorised, PermanentError
from hub.messages import ReplyRoute
from hub.settings import SftpPushTargetSettings, SftpSettings
from mdm.ports import OutboxItem

#: the ReplyAddress scheme of a push target
SCHEME = "sftp"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def push_target(s: SftpPushTargetSettings) -> PushTarget:
    return PushTarget(
        host=s.host,
        port=s.port,
        username=s.user,
        remote_dir=s.remote_dir,
        private_key=s.key_file,
        password=s.password.get_secret_value() if s.password else None,
        timeout=s.timeout,
        host_key=s.host_key,
    )


def retry_policy(s: SftpPushTargetSettings) -> RetryPolicy:
    return RetryPolicy(
        attempts=s.attempts, initial_delay=s.retry_delay, max_delay=s.retry_max_delay
    )


def push(s: SftpPushTargetSettings, local: Path, remote_name: str | None = None) -> PushReceipt:
    """Push one file to a configured target, retrying transport failures."""
    return push_file(push_target(s), local, remote_name=remote_name, retry=retry_policy(s))


def channel(partner: str) -> str:
    """The outbox channel of one partner's pushed replies."""
    return f"{SCHEME}:{partner}"


def reply_route(partner: str) -> ReplyRoute:
    """What the SFTP inbox hands the pipeline with a partner's CIM message."""
    return ReplyRoute(channel(partner), frozenset({SCHEME}))


def remote_name(item: OutboxItem, path: str) -> str:
    """The file name of a pushed reply: the ReplyAddress's, else one from the reply."""
    named = posixpath.basename(unquote(path))
    if named:
        return _UNSAFE.sub("_", named)
    ident = _UNSAFE.sub("_", item.correlation_id or str(item.id))
    return f"{item.verb}-{item.noun}-{ident}.xml"


class PushDelivery:
    """``send`` of the outbox dispatcher of channel ``sftp:<partner>``."""

    def __init__(self, settings: SftpSettings, partner: str) -> None:
        self.settings = settings
        self.partner = partner

    def target_of(self, address: str) -> tuple[SftpPushTargetSettings, str]:
        parts = urlsplit(address)
        if parts.scheme != SCHEME or not parts.netloc:
            raise PermanentError(f"{address!r} is not an sftp://TARGET/ reply address")
        try:
            target = self.settings.push_target(parts.netloc)
        except ConfigurationError as exc:
            raise PermanentError(str(exc)) from exc
        if target.owner != self.partner:
            raise NotAuthorised(
                f"SFTP partner {self.partner!r} may not push to {target.name!r} "
                f"(the target of {target.owner!r})"
            )
        return target, parts.path

    def send(self, item: OutboxItem) -> None:
        target, path = self.target_of(item.destination)
        name = remote_name(item, path)
        with tempfile.TemporaryDirectory(prefix="amihub-push-") as tmp:
            local = Path(tmp) / name
            local.write_bytes(item.body)
            # one attempt: the outbox retries with its own backoff and keeps the item
            push_file(push_target(target), local, retry=RetryPolicy(attempts=1))
