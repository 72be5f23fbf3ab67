"""Embedded SFTP server (paramiko) for partners that drop and pick up files.

Each partner account is jailed in its own folder::

    <home>/inbox/    the partner uploads here (the only place it may write)
    <home>/outbox/   results for the partner (it may read and delete them)
    <home>/archive/  files applied (read only)
    <home>/error/    files refused, each with an error report beside it (read only)

Every path the client sends is normalised against the jail root ("/" is the
home folder, ``..`` cannot climb above it) and the resolved real path must stay
inside the home folder, so a symbolic link placed in the jail cannot lead out;
clients cannot create links. Files are opened with ``O_NOFOLLOW``.

Authentication is by public key and/or password (scrypt hash) per account.
Every refused attempt, and every accepted session, is reported through the
``on_auth`` callback so the caller can audit it. The server keeps an
:class:`UploadRegistry` of files open for writing: the inbox watcher takes a
file only once it is closed, and an upload cut off by a dropped connection is
moved to ``error/`` with a report instead of being processed.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import hmac
import logging
import os
import posixpath
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

from cim_schemas.errors import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Buffer  # types only (collections.abc.Buffer is 3.12+)

log = logging.getLogger(__name__)

FOLDERS: Final = ("inbox", "outbox", "archive", "error")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


# --------------------------------------------------------------------------- configuration


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A scrypt hash for :attr:`PartnerAccount.password_hash` (``scrypt$n$r$p$salt$hash``)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "$".join(
        [
            "scrypt",
            str(_SCRYPT_N),
            str(_SCRYPT_R),
            str(_SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def _decoy_hash() -> str:
    """Checked instead of a hash when the user is unknown or has none, so that a refusal
    takes as long as a wrong password."""
    return hash_password(secrets.token_hex(8))


def _offered_methods(accounts: dict[str, PartnerAccount]) -> str:
    methods = ["publickey"]
    if any(acc.password_hash for acc in accounts.values()):
        methods.append("password")
    return ",".join(methods)


def parse_public_key(line: str) -> paramiko.PKey:
    """An OpenSSH ``authorized_keys`` line (``type base64 [comment]``) as a paramiko key."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ConfigurationError(f"not a public key line: {line[:40]!r}")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (ValueError, paramiko.SSHException) as exc:
        raise ConfigurationError(f"unusable public key {parts[0]} ...: {exc}") from exc


@dataclass(frozen=True)
class PartnerAccount:
    """One partner: login name, jail folder, credentials, and the mapping of its files."""

    username: str
    home: Path
    #: OpenSSH public key lines (RSA or ECDSA; Ed25519 keys load too).
    authorized_keys: tuple[str, ...] = ()
    #: From :func:`hash_password`; None = no password login.
    password_hash: str | None = None
    #: Inbound mapping name and utility code for this partner's files.
    mapping: str | None = None
    utility: str | None = None
    #: Largest file the partner may upload (bytes); a bigger one goes to error/.
    max_upload_bytes: int | None = 4 * 1024**3

    def folder(self, name: str) -> Path:
        return self.home / name


@dataclass(frozen=True)
class SftpServerConfig:
    host_key: Path  # PEM/OpenSSH private key (RSA or ECDSA)
    accounts: tuple[PartnerAccount, ...]
    host: str = "127.0.0.1"
    port: int = 2222  # 0 = any free port (see SftpServer.port)
    #: Seconds a client has to authenticate.
    auth_timeout: float = 30.0
    #: Refused attempts on one connection before it is closed (slows password guessing).
    max_auth_failures: int = 6


@dataclass(frozen=True)
class AuthEvent:
    """A login attempt refused, or a session accepted; for the caller's audit log."""

    username: str
    remote: str
    method: Literal["publickey", "password", "none", "session"]
    accepted: bool
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


AuthCallback = Callable[[AuthEvent], None]


# --------------------------------------------------------------------------- uploads


#: Names under which an upload is never taken (rename when complete).
TEMP_SUFFIXES: Final = (".tmp", ".part", ".filepart", ".partial")


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


class UploadRegistry:
    """Which files are open for writing right now, and which were completed by a
    rename from a temporary name (shared with the inbox watcher)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, int] = {}
        self._complete: dict[Path, tuple[int, int]] = {}  # size, mtime_ns at the rename

    def opened(self, path: Path) -> None:
        with self._lock:
            self._open[path] = self._open.get(path, 0) + 1
            self._complete.pop(path, None)

    def closed(self, path: Path) -> None:
        with self._lock:
            n = self._open.get(path, 0) - 1
            if n > 0:
                self._open[path] = n
            else:
                self._open.pop(path, None)

    def is_open(self, path: Path) -> bool:
        with self._lock:
            return path in self._open

    def moved(self, old: Path, new: Path) -> None:
        """A file open for writing was renamed: it stays open, under its new name."""
        with self._lock:
            n = self._open.pop(old, 0)
            if n:
                self._open[new] = self._open.get(new, 0) + n
            self._complete.pop(new, None)

    def renamed_complete(self, path: Path) -> None:
        """``path`` was renamed from a temporary name while closed: the upload is done."""
        try:
            st = path.stat()
        except OSError:
            return
        with self._lock:
            if path not in self._open:
                self._complete[path] = (st.st_size, st.st_mtime_ns)

    def take_complete(self, path: Path, size: int, mtime_ns: int) -> bool:
        """True once if ``path`` was completed by a rename and is unchanged since."""
        with self._lock:
            return self._complete.pop(path, None) == (size, mtime_ns)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._complete.pop(path, None)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def quarantine_partial(account: PartnerAccount, path: Path, why: str) -> Path | None:
    """Move an incomplete upload to ``error/`` with a report beside it."""
    if not path.exists():
        return None
    target = account.folder("error") / f"{_stamp()}_{path.name}"
    try:
        os.replace(path, target)
        write_atomic(
            target.with_name(target.name + ".error.txt"),
            f"file: {path.name}\nstatus: incomplete upload\nreason: {why}\n",
        )
    except OSError:
        log.exception("could not quarantine incomplete upload %s", path)
        return None
    return target


def write_atomic(path: Path, text: str) -> None:
    """Write under a temporary dot-name, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- authentication


class _Auth(paramiko.ServerInterface):
    """One per connection: authenticates and remembers the account."""

    def __init__(
        self,
        accounts: dict[str, PartnerAccount],
        remote: str,
        on_auth: AuthCallback | None,
        transport: paramiko.Transport,
        max_failures: int,
    ) -> None:
        self.accounts = accounts
        self.remote = remote
        self.on_auth = on_auth
        self.transport = transport
        self.max_failures = max_failures
        self.failures = 0
        self.account: PartnerAccount | None = None
        self._keys = {
            name: [parse_public_key(line) for line in acc.authorized_keys]
            for name, acc in accounts.items()
        }

    def _report(
        self,
        username: str,
        method: Literal["publickey", "password", "none", "session"],
        accepted: bool,
        reason: str,
    ) -> None:
        cut_off = False
        if not accepted:
            self.failures += 1
            if self.failures >= self.max_failures:
                reason += f"; {self.failures} refused attempts: connection closed"
                cut_off = True
        try:
            if self.on_auth is not None:
                self.on_auth(AuthEvent(username, self.remote, method, accepted, reason))
        except Exception:
            log.exception("the on_auth callback failed")
        if cut_off:
            self.transport.close()

    def get_allowed_auths(self, username: str) -> str:
        """The same methods for every user name, known or not (no user enumeration): what
        the server offers at all. A method an account does not allow fails like a wrong
        secret."""
        return _offered_methods(self.accounts)

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        acc = self.accounts.get(username)
        if acc is None or acc.password_hash is None:
            verify_password(password, _decoy_hash())  # as long as a real check: no timing oracle
            self._report(
                username,
                "password",
                False,
                "unknown user" if acc is None else "password login not allowed",
            )
            return AUTH_FAILED
        if verify_password(password, acc.password_hash):
            self.account = acc
            return AUTH_SUCCESSFUL
        self._report(username, "password", False, "wrong password")
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        acc = self.accounts.get(username)
        if acc is None:
            self._report(username, "publickey", False, "unknown user")
            return AUTH_FAILED
        for known in self._keys.get(username, []):
            if known.get_name() == key.get_name() and known.asbytes() == key.asbytes():
                self.account = acc
                return AUTH_SUCCESSFUL
        self._report(
            username, "publickey", False, f"key not authorised ({key.get_name()} {key.fingerprint})"
        )
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.account is not None:
            self._report(self.account.username, "session", True, "session opened")
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp":
            return False
        return bool(super().check_channel_subsystem_request(channel, name))


# --------------------------------------------------------------------------- the jail


class _Handle(SFTPHandle):
    def __init__(self, fd: int, flags: int, path: Path, writing: bool, jail: _JailedSFTP) -> None:
        super().__init__(flags)
        if not writing:
            mode = "rb"
        elif flags & os.O_APPEND:
            mode = "ab"
        elif flags & os.O_RDWR:
            mode = "r+b"
        else:
            mode = "wb"  # fdopen does not truncate: O_TRUNC came with os.open
        f = os.fdopen(fd, mode)
        self.readfile = f
        self.writefile = f if writing else None
        self.path = path
        self.writing = writing
        self.jail = jail
        self.aborted = False
        self.too_large = False

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno or errno.EIO)

    def chattr(self, attr: SFTPAttributes) -> int:
        return SFTP_OK  # times and modes of partner files are ours to keep

    def write(self, offset: int, data: Buffer) -> int:
        limit = self.jail.account.max_upload_bytes
        if limit is not None and offset + memoryview(data).nbytes > limit:
            self.too_large = True
            return SFTP_FAILURE
        return int(super().write(offset, data))

    def close(self) -> None:
        super().close()
        if not self.writing:
            return
        # quarantine before the registry says "closed": the watcher must never see it
        if self.too_large:
            quarantine_partial(
                self.jail.account,
                self.path,
                f"the file is larger than the limit of {self.jail.account.max_upload_bytes} "
                "bytes for this account",
            )
        elif self.aborted:
            quarantine_partial(
                self.jail.account,
                self.path,
                "the connection closed while the file was still being written; upload it again",
            )
        self.jail.uploads.closed(self.path)
        self.jail.handles.discard(self)


class _JailedSFTPServer(SFTPServer):
    """Marks handles still open when the session ends as aborted uploads."""

    def finish_subsystem(self) -> None:
        for handle in list(self.file_table.values()):
            if isinstance(handle, _Handle):
                handle.aborted = handle.writing
        super().finish_subsystem()


class _JailedSFTP(SFTPServerInterface):
    def __init__(self, server: _Auth, uploads: UploadRegistry) -> None:
        super().__init__(server)
        if server.account is None:
            raise PermissionError("not authenticated")
        self.account = server.account
        self.uploads = uploads
        self.root = Path(os.path.realpath(self.account.home))
        #: this session's handles open for writing (their path follows a rename)
        self.handles: set[_Handle] = set()

    # -- paths

    @staticmethod
    def _virtual(path: str) -> str:
        return posixpath.normpath("/" + path.replace("\\", "/")).replace("//", "/")

    def _real(self, path: str) -> Path:
        """The real path inside the jail, or PermissionError if it would leave it."""
        virtual = self._virtual(path)
        real = self.root / virtual.lstrip("/") if virtual != "/" else self.root
        resolved = Path(os.path.realpath(real))
        if resolved != self.root and self.root not in resolved.parents:
            raise PermissionError(f"{path!r} leaves the jail")
        return real

    def _area(self, real: Path) -> str | None:
        """'inbox'/'outbox'/... when ``real`` is a file directly in that folder."""
        try:
            rel = real.relative_to(self.root)
        except ValueError:
            return None
        return rel.parts[0] if len(rel.parts) == 2 else None

    @staticmethod
    def _errno(exc: OSError) -> int:
        if isinstance(exc, PermissionError) and exc.errno is None:
            return SFTP_PERMISSION_DENIED
        if exc.errno == errno.ELOOP:
            return SFTP_PERMISSION_DENIED
        return int(SFTPServer.convert_errno(exc.errno or errno.EIO))

    # -- operations

    def canonicalize(self, path: str) -> str:
        return self._virtual(path)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        try:
            real = self._real(path)
            out = []
            for name in sorted(os.listdir(real)):
                if name.startswith(".") and real == self.root:
                    continue
                attr = SFTPAttributes.from_stat(os.lstat(real / name))
                attr.filename = name
                out.append(attr)
        except OSError as exc:
            return self._errno(exc)
        return out

    def stat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return self._errno(exc)

    def lstat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.lstat(self._real(path)))
        except OSError as exc:
            return self._errno(exc)

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        try:
            real = self._real(path)
            writing = bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            )
            if writing and self._area(real) != "inbox":
                return SFTP_PERMISSION_DENIED
            fd = os.open(real, flags | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0), 0o640)
        except OSError as exc:
            return self._errno(exc)
        if writing:
            self.uploads.opened(real)
        try:
            handle = _Handle(fd, flags, real, writing, self)
        except OSError as exc:
            os.close(fd)
            if writing:
                self.uploads.closed(real)
            return self._errno(exc)
        if writing:
            self.handles.add(handle)
        return handle

    def remove(self, path: str) -> int:
        try:
            real = self._real(path)
            if self._area(real) not in {"inbox", "outbox"} or real.is_symlink():
                return SFTP_PERMISSION_DENIED
            os.remove(real)
        except OSError as exc:
            return self._errno(exc)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, overwrite=False)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, overwrite=True)

    def _rename(self, oldpath: str, newpath: str, *, overwrite: bool) -> int:
        try:
            old, new = self._real(oldpath), self._real(newpath)
            if self._area(old) != "inbox" or self._area(new) != "inbox" or old.is_symlink():
                return SFTP_PERMISSION_DENIED
            if not overwrite and new.exists():
                return SFTP_FAILURE
            was_open = self.uploads.is_open(old)
            if was_open:
                # renamed while open (some clients do): keep tracking the open file (before
                # the rename, so the inbox watcher never sees it closed), and its handles
                # close (or quarantine) it under the new name
                self.uploads.moved(old, new)
            try:
                os.replace(old, new)
            except OSError:
                if was_open:
                    self.uploads.moved(new, old)
                raise
            for handle in self.handles:
                if handle.path == old:
                    handle.path = new
            self.uploads.forget(old)
            if not was_open and is_temporary(old.name) and not is_temporary(new.name):
                self.uploads.renamed_complete(new)  # taken without a settling time
        except OSError as exc:
            return self._errno(exc)
        return SFTP_OK

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        return SFTP_PERMISSION_DENIED

    def rmdir(self, path: str) -> int:
        return SFTP_PERMISSION_DENIED

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        try:
            self._real(path)
        except OSError as exc:
            return self._errno(exc)
        return SFTP_OK

    def readlink(self, path: str) -> str | int:
        return SFTP_OP_UNSUPPORTED

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_PERMISSION_DENIED


# --------------------------------------------------------------------------- the server


def prepare_home(account: PartnerAccount) -> None:
    """Create the jail folder and its four sub-folders."""
    for name in FOLDERS:
        account.folder(name).mkdir(parents=True, exist_ok=True)


def load_host_key(path: Path) -> paramiko.PKey:
    for cls in (paramiko.ECDSAKey, paramiko.RSAKey, paramiko.Ed25519Key):
        try:
            key: paramiko.PKey = cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError):
            continue
        return key
    raise ConfigurationError(f"{path}: not an RSA, ECDSA or Ed25519 private key")


class SftpServer:
    """``with SftpServer(config, on_auth=audit) as server: ... server.port``."""

    def __init__(
        self,
        config: SftpServerConfig,
        *,
        on_auth: AuthCallback | None = None,
        uploads: UploadRegistry | None = None,
    ) -> None:
        names = [a.username for a in config.accounts]
        if len(set(names)) != len(names):
            raise ConfigurationError("SFTP account names must be unique")
        self.config = config
        self.on_auth = on_auth
        self.uploads = uploads or UploadRegistry()
        self.host_key = load_host_key(config.host_key)
        self.accounts = {a.username: a for a in config.accounts}
        for account in config.accounts:
            for line in account.authorized_keys:
                parse_public_key(line)
            prepare_home(account)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._transports: set[paramiko.Transport] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.port = config.port

    def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(32)
        sock.settimeout(0.5)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="sftp-accept", daemon=True)
        self._thread.start()
        return self.port

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            threading.Thread(
                target=self._connection,
                args=(conn, addr),
                daemon=True,
                name=f"sftp-{addr[0]}:{addr[1]}",
            ).start()

    def _connection(self, conn: socket.socket, addr: Any) -> None:
        transport = paramiko.Transport(conn)
        transport.auth_timeout = self.config.auth_timeout
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", _JailedSFTPServer, _JailedSFTP, self.uploads)
        auth = _Auth(
            self.accounts,
            f"{addr[0]}:{addr[1]}",
            self.on_auth,
            transport,
            self.config.max_auth_failures,
        )
        with self._lock:
            self._transports.add(transport)
        try:
            transport.start_server(server=auth)
            while transport.is_active() and not self._stopping.is_set():
                transport.join(1.0)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("SFTP connection from %s ended: %s", addr, exc)
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() at once
            self._sock.close()
        with self._lock:
            transports = list(self._transports)
        for t in transports:
            t.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SftpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
