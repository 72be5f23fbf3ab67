"""SFTP passwords: a stored hash that is not scrypt, or not a hash at all, lets no
password in. `make mutate` found both untested (docs/testing.md)."""

from __future__ import annotations

import pytest

from adapters.sftp.server import hash_password, verify_password


def test_the_right_password_and_only_it() -> None:
    stored = hash_password("s3cret")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)


@pytest.mark.parametrize(
    "stored",
    [
        hash_password("s3cret").replace("scrypt", "bcrypt", 1),  # another scheme
        "s3cret",  # a password where its hash belongs
        "scrypt$16384$8$1$not-base64!$x",  # malformed
        "",
    ],
)
def test_no_password_opens_a_stored_value_that_is_not_our_hash(stored: str) -> None:
    for password in ("s3cret", "", "x"):
        assert not verify_password(password, stored)
