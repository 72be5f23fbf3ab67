"""``amihub keys``: the head-end's meter key store, and key changes on the meters.

The store file holds only ciphertexts (hes.security.keystore); its master key
comes from ``[hes] master_key`` / ``AMIHUB_HES__MASTER_KEY`` (64 hex digits).
Keys are never printed or logged.

* ``keys list``: meters, system titles, key versions, pending key changes;
* ``keys rotate``: re-encrypt the store file under a new master key (the meters'
  keys do not change); then set the new key in the configuration;
* ``keys change``: new keys on the meters themselves (security setup
  global_key_transfer, :mod:`hes.security.keychange`), recorded in the store;
* ``keys settle``: find out which keys meters with an unsettled change use.

Every change and settlement goes to the store's audit log (``--audit store``, the
default: who, meter, outcome, key version) or, with ``--audit log``, to log lines.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.dlms.counters import StoredMeterCounters
from adapters.dlms.directory import MeterDirectory
from adapters.dlms.wiring import composition_root
from cim_schemas.errors import AmihubError, ConfigurationError
from hes.client.session import ClientIdentity, Security
from hes.engine import EnginePolicy, MeterTarget, tcp_sessions
from hes.security.keychange import (
    ChangeKeys,
    KeyAudit,
    KeyChangeOutcome,
    KeyChanger,
    LogKeyAudit,
    SettleKeys,
)
from hes.security.keyfile import KeyStoreFile
from hes.security.keystore import MASTER_KEY_LENGTH, KeyStore
from hub.console import make_console
from hub.key_audit import StoreKeyAudit
from hub.settings import Settings

out = make_console()
console = make_console(stderr=True)


def parse_master_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigurationError(f"{where}: the master key is hex digits") from None
    if len(key) != MASTER_KEY_LENGTH:
        raise ConfigurationError(f"{where}: the master key is {MASTER_KEY_LENGTH * 2} hex digits")
    return key


def _store(settings: Settings) -> tuple[KeyStoreFile, KeyStore]:
    hes = settings.hes
    if hes.keystore is None or hes.master_key is None:
        raise ConfigurationError("set [hes] keystore and master_key (AMIHUB_HES__MASTER_KEY)")
    master = parse_master_key(hes.master_key.get_secret_value(), "[hes] master_key")
    file = KeyStoreFile(hes.keystore)
    return file, file.load(master)


@click.group("keys")
def keys() -> None:
    """Meter keys: the head-end's key store, and key changes on the meters."""


@keys.command("list")
@click.pass_context
def list_keys(ctx: click.Context) -> None:
    """Meters in the key store: system title, key version, KEK known, pending change
    (never the keys)."""
    _, store = _store(ctx.obj["settings"])
    table = Table("meter", "system title", "key version", "KEK", "pending")
    for mrid, system_title, version in store.meters():
        entry = store.entry(mrid)
        pending = store.pending(mrid)
        table.add_row(
            mrid,
            system_title.hex(),
            str(version),
            "yes" if entry is not None and entry.kek is not None else "no",
            f"version {pending.version}" if pending is not None else "",
        )
    out.print(table)


@keys.command("rotate")
@click.option(
    "--new-master-key-env",
    metavar="NAME",
    help="Environment variable holding the new master key (64 hex digits); "
    "prompted for (hidden) when not given.",
)
@click.pass_context
def rotate(ctx: click.Context, new_master_key_env: str | None) -> None:
    """Re-encrypt the key store file under a new master key (the meters' own keys do
    not change: that is `keys change`)."""
    file, store = _store(ctx.obj["settings"])
    if new_master_key_env:
        text = os.environ.get(new_master_key_env)
        if not text:
            raise ConfigurationError(f"environment variable {new_master_key_env} is not set")
    else:
        text = click.prompt("new master key (64 hex digits)", hide_input=True)
    rotated = store.rotate_master(parse_master_key(text, "new master key"))  # checks every tag
    file.save(rotated)
    out.print(
        f"{len(rotated.meters())} meter(s) re-encrypted in {file.path}; "
        "now set the new master key in the configuration (AMIHUB_HES__MASTER_KEY)"
    )


# --- key changes on the meters ---------------------------------------------------------


def _targets(
    settings: Settings, store: KeyStore, serials: tuple[str, ...], everyone: bool
) -> tuple[list[MeterTarget], int]:
    """The manifest meters named (by serial) or all HLS ones; and how many LLS meters
    ``--all`` left out."""
    hes = settings.hes
    if hes.manifest is None:
        raise ConfigurationError("set [hes] manifest: where the meters are")
    if bool(serials) == everyone:
        raise click.UsageError("name meters with --meter SERIAL, or give --all")
    directory = MeterDirectory.from_manifest(
        hes.manifest,
        mrid_format=hes.mrid_format,
        keystore=store,
        simulated_seed=hes.simulated_seed,
    )
    if everyone:
        chosen = list(directory.values())
        hls = [t for t in chosen if t.credentials.security is Security.HLS]
        return hls, len(chosen) - len(hls)
    targets = []
    for serial in serials:
        mrid = hes.mrid_format.format(serial=serial)
        if mrid not in directory:
            raise ConfigurationError(f"meter {serial} is not in [hes] manifest {hes.manifest}")
        targets.append(directory[mrid])
    return targets, 0


@contextmanager
def _audit(ctx: click.Context, settings: Settings, kind: str) -> Iterator[KeyAudit]:
    if kind == "log":
        yield LogKeyAudit()
        return
    with composition_root(ctx).open_store(settings) as factory:
        try:
            with factory() as uow:
                uow.audit.list(1)  # reachable, and the schema is there
        except AmihubError as exc:
            raise ConfigurationError(
                f"the audit log in the store is not usable ({exc}); run `amihub db upgrade`, "
                "or record key changes as log lines with --audit log"
            ) from None
        yield StoreKeyAudit(factory)


def _run(
    ctx: click.Context,
    serials: tuple[str, ...],
    everyone: bool,
    concurrency: int | None,
    audit: str,
    actor: str | None,
    change_kek: bool | None,
) -> None:
    """A key change (``change_kek`` True / False) or, with None, a settlement."""
    settings: Settings = ctx.obj["settings"]
    file, store = _store(settings)
    targets, skipped = _targets(settings, store, serials, everyone)
    what = "key settlement" if change_kek is None else "key change"
    if change_kek is None:
        targets = [t for t in targets if store.pending(t.mrid) is not None]
    hes = settings.hes
    policy = EnginePolicy(
        concurrency=concurrency or hes.concurrency, timeout=hes.timeout, attempts=hes.attempts
    )
    who = actor or f"cli:{getpass.getuser()}"
    with (
        _audit(ctx, settings, audit) as auditor,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task(what, total=len(targets))
        # with the store's audit log, the meters' counters are checked against and recorded
        # in that store too (as every head-end association does); --audit log: in memory
        counters = (
            StoredMeterCounters(auditor.uow_factory) if isinstance(auditor, StoreKeyAudit) else None
        )
        changer = KeyChanger(
            store,
            file.save,
            tcp_sessions(ClientIdentity(counter_store=counters)),
            policy=policy,
            audit=auditor,
        )

        def advance(_: object) -> None:
            progress.advance(task)

        try:
            if change_kek is None:
                results = changer.settle(SettleKeys(tuple(targets), who), advance)
            else:
                results = changer.change(ChangeKeys(tuple(targets), who, change_kek), advance)
        finally:
            if counters is not None:
                counters.close()
    counts = Counter(r.outcome for r in results)
    problems = [r for r in results if r.outcome is not KeyChangeOutcome.CHANGED]
    if problems:
        table = Table("meter", "outcome", "key version", "reason")
        for r in problems:
            version = "" if r.version is None else str(r.version)
            table.add_row(r.mrid, r.outcome.value, version, r.reason)
        out.print(table)
    summary = ", ".join(
        f"{counts[o]} {o.value}"
        for o in (KeyChangeOutcome.CHANGED, KeyChangeOutcome.FAILED, KeyChangeOutcome.UNKNOWN)
    )
    out.print(f"{what}: {len(results)} meter(s): {summary}")
    if skipped:
        out.print(f"{skipped} LLS meter(s) left out: no security setup, no keys to change")
    if counts[KeyChangeOutcome.UNKNOWN]:
        out.print(
            "meters marked unknown keep their pending keys: `amihub keys settle` (or the "
            "next change) finds out which keys they use"
        )
    if problems:
        sys.exit(1)


_meter_option = click.option(
    "--meter",
    "serials",
    multiple=True,
    metavar="SERIAL",
    help="A meter of [hes] manifest by serial (repeatable).",
)
_all_option = click.option(
    "--all", "everyone", is_flag=True, help="Every HLS meter of the manifest."
)
_concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Meters at once (default [hes] concurrency).",
)
_audit_option = click.option(
    "--audit",
    type=click.Choice(["store", "log"]),
    default="store",
    show_default=True,
    help="Record each change in the store's audit log, or as log lines only.",
)
_actor_option = click.option(
    "--actor", default=None, help="Who, for the audit log (default cli:<login name>)."
)


@keys.command("change")
@_meter_option
@_all_option
@_concurrency_option
@click.option(
    "--keep-kek", is_flag=True, help="Change the encryption and authentication keys only."
)
@_audit_option
@_actor_option
@click.pass_context
def change(
    ctx: click.Context,
    serials: tuple[str, ...],
    everyone: bool,
    concurrency: int | None,
    keep_kek: bool,
    audit: str,
    actor: str | None,
) -> None:
    """New random keys on the meters (security setup key transfer): recorded as pending
    in the key store first, sent wrapped under each meter's KEK, verified by a new
    association, then made the active keys. Exit 1 if a meter was not changed."""
    _run(ctx, serials, everyone, concurrency, audit, actor, not keep_kek)


@keys.command("settle")
@_meter_option
@_all_option
@_concurrency_option
@_audit_option
@_actor_option
@click.pass_context
def settle(
    ctx: click.Context,
    serials: tuple[str, ...],
    everyone: bool,
    concurrency: int | None,
    audit: str,
    actor: str | None,
) -> None:
    """For meters with pending keys (a change whose answer was lost): associate with the
    active keys, then the pending ones, and keep the keys the meter uses."""
    _run(ctx, serials, everyone, concurrency, audit, actor, None)
