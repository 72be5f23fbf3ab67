"""Push a file to a partner's SFTP server (paramiko client).

- The server's host key must be in the configured ``known_hosts`` file; an
  unknown or changed key is a :class:`cim_schemas.errors.SecurityViolation` (never retried).
- The file is written under a temporary dot-name (``.<name>.<random>.part``) in
  the remote folder and renamed to its name only once complete (POSIX rename
  when the server offers it, otherwise remove + rename), so the partner never
  picks up half a file.
- Network trouble (refused, reset, timeout) is a
  :class:`cim_schemas.errors.TransportUnavailable` and is retried with exponential
  backoff; a refused login is :class:`cim_schemas.errors.NotAuthorised`; the server
  refusing the write (no such folder, permission) is :class:`PushRefused`.
- The :class:`PushReceipt` says what landed where (size, SHA-256, attempts) for
  the caller to record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paramiko

from cim_schemas.errors import (
    ConfigurationError,
    NotAuthorised,
    PermanentError,
    SecurityViolation,
    TransportUnavailable,
)
from mdm.backoff import JITTER, Backoff

log = logging.getLogger(__name__)


class PushRefused(PermanentError):
    """The server accepted the login but refused the file (folder, permission, space)."""


@dataclass(frozen=True)
class PushTarget:
    host: str
    port: int
    username: str
    #: the server's host key: a known_hosts file, or pinned as ``host_key`` (``type base64``)
    known_hosts: Path | None = None
    remote_dir: str = "."
    private_key: Path | None = None
    password: str | None = None
    timeout: float = 15.0
    host_key: str | None = None

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = JITTER  # the share of a delay taken off at random (mdm.backoff)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return Backoff(self.initial_delay, self.max_delay, self.jitter).delay(attempt)


@dataclass(frozen=True)
class PushReceipt:
    target: str
    remote_path: str
    size: int
    sha256: str
    attempts: int
    finished_at: datetime


def _load_key(path: Path) -> paramiko.PKey:
    for cls in (paramiko.ECDSAKey, paramiko.RSAKey, paramiko.Ed25519Key):
        try:
            key: paramiko.PKey = cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError):
            continue
        return key
    raise ConfigurationError(f"{path}: not an RSA, ECDSA or Ed25519 private key")


def _trusted_keys(target: PushTarget) -> paramiko.SSHClient:
    """A client that trusts the pinned host key, or those of the known_hosts file."""
    client = paramiko.SSHClient()
    if target.host_key is not None:
        from adapters.sftp.server import parse_public_key

        key = parse_public_key(target.host_key)
        entry = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        client.get_host_keys().add(entry, key.get_name(), key)
    elif target.known_hosts is not None:
        if not target.known_hosts.is_file():
            raise ConfigurationError(f"known_hosts file {target.known_hosts} does not exist")
        client.load_host_keys(str(target.known_hosts))
    else:
        raise ConfigurationError(f"{target}: no host key pinned and no known_hosts file")
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _connect(target: PushTarget) -> paramiko.SSHClient:
    client = _trusted_keys(target)
    pkey = _load_key(target.private_key) if target.private_key else None
    try:
        client.connect(
            target.host,
            target.port,
            username=target.username,
            pkey=pkey,
            password=target.password,
            look_for_keys=False,
            allow_agent=False,
            timeout=target.timeout,
            banner_timeout=target.timeout,
            auth_timeout=target.timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SecurityViolation(
            f"{target}: host key does not match the trusted one "
            f"({exc.key.get_name()} {exc.key.fingerprint})"
        ) from exc
    except paramiko.AuthenticationException as exc:
        client.close()
        raise NotAuthorised(f"{target}: login refused: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        if "known_hosts" in str(exc):
            trusted = target.known_hosts if target.host_key is None else "the pinned host key"
            raise SecurityViolation(f"{target}: host key not in {trusted}") from exc
        raise TransportUnavailable(f"{target}: SSH failed: {exc}") from exc
    except (OSError, EOFError) as exc:  # refused, reset, timeout, no route
        client.close()
        raise TransportUnavailable(f"{target}: cannot connect: {exc}") from exc
    return client


def _upload(target: PushTarget, local: Path, remote_name: str) -> str:
    final = posixpath.join(target.remote_dir, remote_name)
    temp = posixpath.join(target.remote_dir, f".{remote_name}.{secrets.token_hex(4)}.part")
    client = _connect(target)
    try:
        sftp = client.open_sftp()
        try:
            sftp.put(str(local), temp, confirm=True)
            try:
                sftp.posix_rename(temp, final)
            except OSError:
                # no posix-rename extension: plain rename does not overwrite
                with contextlib.suppress(OSError):
                    sftp.remove(final)
                sftp.rename(temp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                sftp.remove(temp)
            transport = client.get_transport()
            if transport is None or not transport.is_active() or isinstance(exc, TimeoutError):
                raise TransportUnavailable(f"{target}: connection lost: {exc}") from exc
            raise PushRefused(f"{target}: cannot write {final}: {exc}") from exc
        finally:
            sftp.close()
    except (paramiko.SSHException, EOFError) as exc:
        raise TransportUnavailable(f"{target}: SFTP failed: {exc}") from exc
    finally:
        client.close()
    return final


def push_file(
    target: PushTarget,
    local: Path,
    *,
    remote_name: str | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> PushReceipt:
    """Upload ``local`` to ``target.remote_dir``; retry transport failures with backoff."""
    policy = retry or RetryPolicy()
    name = remote_name or local.name
    if "/" in name or name in {"", ".", ".."}:
        raise ConfigurationError(f"bad remote file name {name!r}")
    h = hashlib.sha256()
    size = 0
    with local.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    attempt = 0
    while True:
        attempt += 1
        try:
            remote = _upload(target, local, name)
        except TransportUnavailable as exc:
            if attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.warning(
                "push of %s to %s failed (attempt %d): %s; retry in %.1fs",
                name,
                target,
                attempt,
                exc,
                wait,
            )
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
            continue
        return PushReceipt(str(target), remote, size, h.hexdigest(), attempt, datetime.now(UTC))
