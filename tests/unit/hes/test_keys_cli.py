"""`amihub keys list|rotate`: the key store's master key rotated, keys never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cim_schemas.errors import SecurityViolation
from hes.security.gcm import SecurityKeys
from hes.security.keystore import KeyStore
from hub.cli import cli

OLD = bytes(range(32))
NEW = bytes(range(32, 64))
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")


def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200", **env}).invoke(cli, list(args))
    return result.exit_code, result.output


def test_rotate_the_master_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(OLD)
    store.put("MTR-1", b"AMI00001", SecurityKeys(EK, AK))
    path.write_text(store.dumps(), encoding="utf-8")
    env = {
        "AMIHUB_HES__KEYSTORE": str(path),
        "AMIHUB_HES__MASTER_KEY": OLD.hex(),
        "NEW_KEY": NEW.hex(),
        "AMIHUB_CONFIG": "",  # empty: no settings file
    }
    code, output = run("keys", "list", env=env)
    assert code == 0, output
    assert "MTR-1" in output
    assert EK.hex() not in output
    assert AK.hex() not in output
    code, output = run("keys", "rotate", "--new-master-key-env", "NEW_KEY", env=env)
    assert code == 0, output
    assert "1 meter(s) re-encrypted" in output
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    rotated = KeyStore.loads(path.read_text(encoding="utf-8"), NEW)
    found = rotated.get("MTR-1")
    assert found is not None
    assert found[1] == SecurityKeys(EK, AK)
    with pytest.raises(SecurityViolation):
        KeyStore.loads(path.read_text(encoding="utf-8"), OLD).get("MTR-1")


def test_a_wrong_master_key_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(OLD)
    store.put("MTR-1", b"AMI00001", SecurityKeys(EK, AK))
    path.write_text(store.dumps(), encoding="utf-8")
    env = {
        "AMIHUB_HES__KEYSTORE": str(path),
        "AMIHUB_HES__MASTER_KEY": NEW.hex(),  # not the store's
        "NEW_KEY": OLD.hex(),
        "AMIHUB_CONFIG": "",  # empty: no settings file
    }
    code, output = run("keys", "rotate", "--new-master-key-env", "NEW_KEY", env=env)
    assert code == 2
    assert "Traceback" not in output
    assert KeyStore.loads(path.read_text(encoding="utf-8"), OLD).get("MTR-1") is not None
