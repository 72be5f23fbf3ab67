"""Settings from TOML and environment; the published error-code table."""

from __future__ import annotations

from pathlib import Path

import pytest

from cim_schemas.errors import ERROR_CODES, ConfigurationError, ErrorDetail
from hub.error_table import render
from hub.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_published_error_codes_match_the_code() -> None:
    published = (ROOT / "docs" / "error-codes.md").read_text(encoding="utf-8")
    assert published == render(), "run: python -m hub.error_table > docs/error-codes.md"


def test_an_unpublished_error_code_cannot_be_used() -> None:
    with pytest.raises(ValueError, match="unpublished"):
        ErrorDetail("9999", "made up")
    assert all(len(code) == 4 for code in ERROR_CODES)


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text(
        'database_url = "sqlite:///from-toml.db"\n'
        'default_utility = "NORTH"\n'
        "[limits]\nmax_message_bytes = 1000\ntree_limit_bytes = 500\n"
        '[[users]]\nname = "cis"\npassword = "s3cret"\nutility = "NORTH"\n'
        'permissions = ["get:MeterReadings", "create:*"]\n'
    )
    monkeypatch.setenv("AMIHUB_CONFIG", str(config))
    monkeypatch.setenv("AMIHUB_LIMITS__TREE_LIMIT_BYTES", "700")
    settings = load_settings()
    assert settings.database_url == "sqlite:///from-toml.db"
    assert settings.default_utility == "NORTH"
    assert settings.limits.max_message_bytes == 1000
    assert settings.limits.tree_limit_bytes == 700  # environment wins over the file
    user = settings.users[0].principal()
    assert user.may("get", "MeterReadings")
    assert user.may("create", "UsagePointConfig")
    assert not user.may("delete", "MeterConfig")
    assert "s3cret" not in repr(settings)  # secrets are not printed


def test_a_typo_in_the_settings_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text('databse_url = "sqlite:///x.db"\n')
    monkeypatch.setenv("AMIHUB_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="databse_url"):
        load_settings()


def test_a_bad_permission_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text('[[users]]\nname = "x"\npermissions = ["getMeterReadings"]\n')
    monkeypatch.setenv("AMIHUB_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="verb:Noun"):
        load_settings()
