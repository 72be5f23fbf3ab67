"""``amihub serve`` with ``[sftp] enabled = true``: the embedded server and the inbox watcher.

The composition root builds it (``hub.bootstrap.sftp_service``, which
:data:`hub.serve.SERVICE_ALIASES` names) from ``app.settings.sftp``, an
:class:`SftpSettings` (the hub's Settings gets ``sftp: SftpSettings = SftpSettings()``).

::

    [sftp]
    enabled = true
    port = 2222
    host_key = "var/sftp_host_key"        # an ECDSA key is generated here if missing
    root = "var/sftp"                     # jails: <root>/<name>/{inbox,outbox,archive,error}

    [[sftp.partners]]
    name = "billing"
    authorized_keys = ["ecdsa-sha2-nistp256 AAAA... billing@legacy"]
    password_hash = "scrypt$16384$8$1$..."  # adapters.sftp.hash_password("...")
    mapping = "register-obis"
    utility = "DEMO"

Every refused login and every session is written to the audit log
(actor = the login name, action ``sftp-login-refused`` / ``sftp-session``).
Every file is kept in the message log by the message journal (hub/journal.py): an
applied file under MessageID ``sha256:<checksum>``, so several processes may watch the
same folders without applying a file twice.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import paramiko

from adapters.sftp import push
from adapters.sftp.inbox import (
    Handler,
    InboxFile,
    InboxWatcher,
    Outcome,
    cim_handler,
    import_handler,
)
from adapters.sftp.server import AuthEvent, PartnerAccount, SftpServer, SftpServerConfig
from cim_schemas.errors import ConfigurationError
from hub.journal import MessageJournal
from hub.messages import InboundMessage
from hub.messages import Outcome as HubOutcome
from hub.outbox import OutboxDispatcher
from hub.security import Permission, Principal
from hub.settings import SftpSettings
from mappings.importer import apply_file
from mappings.load import BUILTIN_DIR, Catalog, load_dir
from mappings.spec import CimVariantSpec
from mdm.handling import CommandBus
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub.sftp")


def ensure_host_key(path: Path) -> None:
    """Generate an ECDSA host key (mode 600) if ``path`` does not exist."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(path))
    os.chmod(path, 0o600)
    log.warning("generated SFTP host key %s (%s %s)", path, key.get_name(), key.fingerprint)


def accounts(settings: SftpSettings, default_utility: str) -> tuple[PartnerAccount, ...]:
    out = []
    for p in settings.partners:
        keys = list(p.authorized_keys)
        if p.authorized_keys_file is not None:
            try:
                text = p.authorized_keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"[sftp] partner {p.name}: {exc}") from exc
            keys += [k for k in text.splitlines() if k.strip() and not k.startswith("#")]
        if not keys and p.password_hash is None:
            raise ConfigurationError(f"[sftp] partner {p.name} has neither keys nor password")
        out.append(
            PartnerAccount(
                username=p.name,
                home=p.home or settings.root / p.name,
                authorized_keys=tuple(keys),
                password_hash=p.password_hash.get_secret_value() if p.password_hash else None,
                mapping=p.mapping,
                utility=p.utility or default_utility,
                max_upload_bytes=p.max_upload_bytes,
            )
        )
    return tuple(out)


class SftpService:
    """The server and the watcher as one :class:`hub.serve.Service`."""

    def __init__(
        self,
        settings: SftpSettings,
        uow_factory: UnitOfWorkFactory,
        *,
        bus: CommandBus,
        default_utility: str,
        name: str = "sftp",
        process: Callable[[InboundMessage], HubOutcome] | None = None,
        journal: MessageJournal | None = None,
    ) -> None:
        """``bus``: the hub's, which stores a mapped file's readings; ``process``: the hub
        pipeline's ``process``, for partners whose mapping is a ``cim-variant`` (their
        files are CIM messages); required if there is one. ``journal``: where files,
        refusals and logins are recorded (the app's)."""
        self.name = name
        self.settings = settings
        self.uow_factory = uow_factory
        self.bus = bus
        self.journal = journal or MessageJournal(uow_factory)
        self.accounts = accounts(settings, default_utility)
        self.catalog: Catalog = load_dir(settings.mappings_dir or BUILTIN_DIR)
        self.cim_partners: set[str] = set()
        for account in self.accounts:
            if account.mapping is not None:
                try:
                    spec = self.catalog.specs[account.mapping]
                except KeyError:
                    raise ConfigurationError(
                        f"[sftp] partner {account.username}: no mapping named {account.mapping!r}"
                    ) from None
                if isinstance(spec, CimVariantSpec):
                    if process is None:
                        raise ConfigurationError(
                            f"[sftp] partner {account.username}: CIM variant "
                            f"{account.mapping!r} needs the hub pipeline"
                        )
                    self.cim_partners.add(account.username)
        self.principals = {
            p.name: Principal(
                f"sftp:{p.name}",
                p.utility or default_utility,
                frozenset(Permission.parse(x) for x in p.permissions),
                p.mapping,
            )
            for p in settings.partners
        }
        self.process = process
        self.server: SftpServer | None = None
        self.watcher: InboxWatcher | None = None
        # replies pushed to the partners' own servers ([[sftp.push_targets]])
        names = {a.username for a in self.accounts}
        for target in settings.push_targets:
            if target.partner is not None and target.partner not in names:
                raise ConfigurationError(
                    f"[[sftp.push_targets]] {target.name}: no [[sftp.partners]] named "
                    f"{target.partner!r}"
                )
        self.pushing = sorted({t.owner for t in settings.push_targets} & self.cim_partners)
        self.dispatchers = [
            OutboxDispatcher(
                uow_factory, push.channel(partner), send=push.PushDelivery(settings, partner).send
            )
            for partner in self.pushing
        ]

    def audit(self, event: AuthEvent) -> None:
        action = "sftp-session" if event.accepted else "sftp-login-refused"
        self.journal.record_audit(
            event.username,
            action,
            "SftpAccount",
            event.username,
            f"{event.remote} {event.method}: {event.reason}",
        )
        if not event.accepted:
            log.warning(
                "SFTP login refused: %s from %s (%s)", event.username, event.remote, event.reason
            )

    def start(self) -> None:
        s = self.settings
        ensure_host_key(s.host_key)
        config = SftpServerConfig(
            host_key=s.host_key,
            accounts=self.accounts,
            host=s.host,
            port=s.port,
            max_auth_failures=s.max_auth_failures,
        )
        self.server = SftpServer(config, on_auth=self.audit)
        if s.ledger == "file":
            log.warning(
                '[sftp] ledger = "file" is gone: applied checksums are kept in the message '
                "log (a %s there is read into it once)",
                s.state_dir / "checksums.jsonl",
            )
        self.watcher = InboxWatcher(
            self.accounts,
            self.handler(),
            state_dir=s.state_dir,
            journal=self.journal,
            uploads=self.server.uploads,
            settle_seconds=s.settle_seconds,
        )
        port = self.server.start()
        self.watcher.start(interval=s.poll_interval)
        for dispatcher in self.dispatchers:
            dispatcher.start()
        log.info("SFTP server on %s:%d for %d partner(s)", s.host, port, len(self.accounts))

    def handler(self) -> Handler:
        """Mapped files through the importer; CIM files of a variant through the pipeline."""
        mapped = import_handler(
            functools.partial(apply_file, self.uow_factory, catalog=self.catalog, bus=self.bus)
        )
        if not self.cim_partners:
            return mapped
        assert self.process is not None
        pushing = set(self.pushing)
        cim = cim_handler(
            self.process,
            lambda partner: self.principals.get(partner.username),
            lambda partner: (
                push.reply_route(partner.username) if partner.username in pushing else None
            ),
        )

        def handle(item: InboxFile) -> Outcome:
            return (cim if item.partner.username in self.cim_partners else mapped)(item)

        return handle

    @property
    def port(self) -> int:
        return self.server.port if self.server else self.settings.port

    def stop(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.server is not None:
            self.server.stop()
