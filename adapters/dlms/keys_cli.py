"""``amihub keys``: the head-end's meter key store (list, rotate the master key).

The store file holds only ciphertexts (hes.security.keystore); its master key
comes from ``[hes] master_key`` / ``AMIHUB_HES__MASTER_KEY`` (64 hex digits).
Keys are never printed or logged. Rotation re-encrypts every record under a new
master key and replaces the file atomically; then set the new key in the
configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hes.security.keystore import MASTER_KEY_LENGTH, KeyStore
from hub.errors import ConfigurationError
from hub.settings import Settings

out = Console()


def parse_master_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigurationError(f"{where}: the master key is hex digits") from None
    if len(key) != MASTER_KEY_LENGTH:
        raise ConfigurationError(f"{where}: the master key is {MASTER_KEY_LENGTH * 2} hex digits")
    return key


def _store(settings: Settings) -> tuple[Path, KeyStore]:
    hes = settings.hes
    if hes.keystore is None or hes.master_key is None:
        raise ConfigurationError("set [hes] keystore and master_key (AMIHUB_HES__MASTER_KEY)")
    if not hes.keystore.exists():
        raise ConfigurationError(f"key store {hes.keystore} does not exist")
    master = parse_master_key(hes.master_key.get_secret_value(), "[hes] master_key")
    return hes.keystore, KeyStore.loads(hes.keystore.read_text(encoding="utf-8"), master)


@click.group("keys")
def keys() -> None:
    """Meter keys at rest (the head-end's key store)."""


@keys.command("list")
@click.pass_context
def list_keys(ctx: click.Context) -> None:
    """Meters in the key store, with their system title and key version (never the keys)."""
    _, store = _store(ctx.obj["settings"])
    table = Table("meter", "system title", "key version")
    for mrid, system_title, version in store.meters():
        table.add_row(mrid, system_title.hex(), str(version))
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
    """Re-encrypt every meter's keys under a new master key."""
    path, store = _store(ctx.obj["settings"])
    if new_master_key_env:
        text = os.environ.get(new_master_key_env)
        if not text:
            raise ConfigurationError(f"environment variable {new_master_key_env} is not set")
    else:
        text = click.prompt("new master key (64 hex digits)", hide_input=True)
    rotated = store.rotate_master(parse_master_key(text, "new master key"))  # checks every tag
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(rotated.dumps())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    out.print(
        f"{len(rotated.meters())} meter(s) re-encrypted in {path}; "
        "now set the new master key in the configuration (AMIHUB_HES__MASTER_KEY)"
    )
