"""Meter key change: new suite-0 keys through the security setup's global_key_transfer.

For each meter (HLS-GMAC only: an LLS meter has no security setup to change):

1. new random keys (``secrets``): global unicast encryption key, authentication key
   and, unless told otherwise, a new master key (KEK);
2. recorded in the key store as *pending* and written to disk BEFORE the meter is
   touched (one write per batch of meters), so a crash between the meter accepting
   them and the store being updated never loses them;
3. associated with the current keys, the new keys are sent wrapped (RFC 3394) under
   the meter's current KEK (:mod:`hes.security.keywrap`);
4. verified: a new association with the new keys (the old keys tried next);
5. the store settles: the keys the meter took become the active ones
   (:meth:`KeyStore.promote`), or the pending ones are dropped when the meter
   refused the transfer or kept its keys. When the outcome cannot be known (the
   connection went away after the transfer was sent and the meter cannot be reached
   to verify) the pending keys stay, and the next association settles them: the
   active keys are tried, then the pending ones (:meth:`KeyChanger.settle`; the
   head-end's reads do the same through ``MeterCredentials.pending_keys``).

Keys are never logged, never put in an exception message or an audit entry: results
carry the meter, the outcome, the key version and a reason only.

Lifecycle of one meter (explicit transition table)::

    PENDING -> STAGED -> SENT -> CHANGED | FAILED | UNKNOWN
    PENDING -> FAILED              (LLS meter, not in the key store, no KEK)
    STAGED  -> FAILED              (meter not reached / association refused: nothing sent)
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from cim_schemas.errors import AmihubError, MeterUnreachable
from hes.client.session import (
    ActionRefused,
    AssociationRefused,
    KeyRole,
    MeterSession,
    Security,
)
from hes.dlms.acse import AcseDiagnostic
from hes.engine import EnginePolicy, MeterTarget, SessionFactory
from hes.security.gcm import KEY_LENGTH, SecurityKeys
from hes.security.keystore import KeyStore, StoredKeys
from hes.security.keywrap import (
    GLOBAL_KEY_TRANSFER,
    SECURITY_SETUP,
    SECURITY_SETUP_CLASS,
    KeyId,
    encode_key_transfer,
)

log = logging.getLogger(__name__)


class KeyChangeOutcome(StrEnum):
    PENDING = "pending"
    STAGED = "staged"  # new keys recorded as pending, meter not touched yet
    SENT = "sent"  # the transfer went to the meter
    CHANGED = "changed"  # the meter uses the new keys; they are the active keys
    FAILED = "failed"  # the meter keeps its keys; nothing is pending
    UNKNOWN = "unknown"  # not known which keys the meter uses: the pending keys stay


KEY_CHANGE_TRANSITIONS: dict[KeyChangeOutcome, frozenset[KeyChangeOutcome]] = {
    KeyChangeOutcome.PENDING: frozenset({KeyChangeOutcome.STAGED, KeyChangeOutcome.FAILED}),
    KeyChangeOutcome.STAGED: frozenset({KeyChangeOutcome.SENT, KeyChangeOutcome.FAILED}),
    KeyChangeOutcome.SENT: frozenset(
        {KeyChangeOutcome.CHANGED, KeyChangeOutcome.FAILED, KeyChangeOutcome.UNKNOWN}
    ),
    KeyChangeOutcome.CHANGED: frozenset(),
    KeyChangeOutcome.FAILED: frozenset(),
    KeyChangeOutcome.UNKNOWN: frozenset(),
}


@dataclass(frozen=True)
class KeyChangeResult:
    """What became of one meter (never its keys)."""

    mrid: str
    outcome: KeyChangeOutcome
    version: int | None  # the meter's active key version afterwards (None: not in the store)
    reason: str


@dataclass(frozen=True)
class ChangeKeys:
    """Change the keys of these meters."""

    targets: tuple[MeterTarget, ...]
    actor: str
    change_kek: bool = True  # a new master key (KEK) too


@dataclass(frozen=True)
class SettleKeys:
    """Find out which keys meters with pending keys use, and settle the store."""

    targets: tuple[MeterTarget, ...]
    actor: str


class KeyAudit(Protocol):
    """Where key changes are recorded (who, meter, when, outcome; never the keys), one
    call per batch of meters."""

    def record(self, actor: str, action: str, results: Sequence[KeyChangeResult]) -> None: ...


def audit_details(result: KeyChangeResult) -> str:
    version = "none" if result.version is None else str(result.version)
    return f"{result.outcome}: {result.reason} (active key version {version})"


class LogKeyAudit:
    """Audit as log lines (when the key store has no access to the MDM store)."""

    def record(self, actor: str, action: str, results: Sequence[KeyChangeResult]) -> None:
        for r in results:
            log.info("audit: %s of %s by %s: %s", action, r.mrid, actor, audit_details(r))


def _new_key() -> bytes:
    return secrets.token_bytes(KEY_LENGTH)


@dataclass
class _Meter:
    target: MeterTarget
    outcome: KeyChangeOutcome = KeyChangeOutcome.PENDING
    reason: str = ""
    current: StoredKeys | None = None
    new: StoredKeys | None = None

    def go(self, outcome: KeyChangeOutcome, reason: str = "") -> None:
        if outcome not in KEY_CHANGE_TRANSITIONS[self.outcome]:
            raise RuntimeError(f"key change of {self.target.mrid}: {self.outcome} -> {outcome}")
        self.outcome = outcome
        if reason:
            self.reason = reason


class KeyChanger:
    """Runs key changes (and settlements) against meters, with bounded concurrency.

    ``persist(store)`` must make the store durable (``KeyStoreFile.save``): it is called
    after the new keys of a batch are staged, before any of those meters is touched,
    and after the batch settled."""

    def __init__(
        self,
        store: KeyStore,
        persist: Callable[[KeyStore], None],
        sessions: SessionFactory,
        *,
        policy: EnginePolicy | None = None,
        audit: KeyAudit | None = None,
        batch: int = 200,
        new_key: Callable[[], bytes] = _new_key,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.persist = persist
        self.sessions = sessions
        self.policy = policy or EnginePolicy()
        self.audit = audit or LogKeyAudit()
        self.batch = batch
        self._new_key = new_key
        self._sleep = sleep

    # --- sessions ---
    def _open(self, target: MeterTarget, keys: SecurityKeys) -> MeterSession:
        """An associated session with ``keys``; MeterUnreachable retried with backoff."""
        credentials = replace(target.credentials, keys=keys, pending_keys=None)
        for attempt in range(1, self.policy.attempts + 1):
            try:
                session = self.sessions(
                    replace(target, credentials=credentials), self.policy.timeout
                )
            except MeterUnreachable:
                if attempt == self.policy.attempts:
                    raise
                self._sleep(self.policy.backoff.delay(attempt))
                continue
            try:
                session.associate()
                return session
            except BaseException as exc:
                session.close()
                if not isinstance(exc, MeterUnreachable) or attempt == self.policy.attempts:
                    raise
            self._sleep(self.policy.backoff.delay(attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _done(session: MeterSession) -> None:
        try:
            session.release()
        except AmihubError:
            pass
        finally:
            session.close()

    def _which_keys(
        self, target: MeterTarget, first: SecurityKeys, second: SecurityKeys
    ) -> KeyRole | None:
        """Associate with ``first``, then (refused: authentication failure) ``second``.
        KeyRole.ACTIVE: the meter took ``first``; PENDING: ``second``; None: neither.
        Raises when the meter cannot be reached or refuses for another reason."""
        for role, keys in ((KeyRole.ACTIVE, first), (KeyRole.PENDING, second)):
            try:
                session = self._open(target, keys)
            except AssociationRefused as exc:
                if exc.diagnostic is not AcseDiagnostic.AUTHENTICATION_FAILURE:
                    raise
                continue
            self._done(session)
            return role
        return None

    # --- checks ---
    def _check(self, m: _Meter) -> None:
        target = m.target
        if target.credentials.security is not Security.HLS:
            m.go(
                KeyChangeOutcome.FAILED,
                f"{target.mrid} uses {target.credentials.security.value} authentication: "
                "it has no security setup with keys to change (HLS-GMAC meters only)",
            )
            return
        m.current = self.store.entry(target.mrid)
        if m.current is None:
            m.go(KeyChangeOutcome.FAILED, f"{target.mrid} is not in the key store")
        elif m.current.kek is None:
            m.go(
                KeyChangeOutcome.FAILED,
                f"no master key (KEK) of {target.mrid} in the key store: "
                "new keys cannot be wrapped for it",
            )

    # --- change ---
    def change(
        self,
        command: ChangeKeys,
        progress: Callable[[KeyChangeResult], None] | None = None,
    ) -> list[KeyChangeResult]:
        results: list[KeyChangeResult] = []
        targets = list(command.targets)
        # meters left with pending keys by an earlier change are settled first
        unsettled = [t for t in targets if self.store.pending(t.mrid) is not None]
        if unsettled:
            for r in self.settle(SettleKeys(tuple(unsettled), command.actor)):
                if r.outcome is KeyChangeOutcome.UNKNOWN:
                    refused = KeyChangeResult(
                        r.mrid,
                        KeyChangeOutcome.FAILED,
                        r.version,
                        f"earlier key change still unsettled ({r.reason})",
                    )
                    self.audit.record(command.actor, "key-change", [refused])
                    results.append(refused)
                    if progress:
                        progress(refused)
                    targets = [t for t in targets if t.mrid != r.mrid]
        for start in range(0, len(targets), self.batch):
            for r in self._change_batch(targets[start : start + self.batch], command):
                results.append(r)
                if progress:
                    progress(r)
        return results

    def _change_batch(
        self, targets: Sequence[MeterTarget], command: ChangeKeys
    ) -> list[KeyChangeResult]:
        meters = [_Meter(t) for t in targets]
        for m in meters:
            self._check(m)
            if m.outcome is KeyChangeOutcome.FAILED:
                continue
            assert m.current is not None
            keys = SecurityKeys(self._new_key(), self._new_key())
            kek = self._new_key() if command.change_kek else m.current.kek
            version = self.store.stage(m.target.mrid, keys, kek)
            m.new = StoredKeys(m.current.system_title, keys, kek, version)
            m.go(KeyChangeOutcome.STAGED)
        staged = [m for m in meters if m.outcome is KeyChangeOutcome.STAGED]
        if staged:
            self.persist(self.store)  # durable before any meter is touched
            with ThreadPoolExecutor(max_workers=max(1, self.policy.concurrency)) as pool:
                list(pool.map(self._transfer, staged))
            for m in staged:
                mrid = m.target.mrid
                if m.outcome is KeyChangeOutcome.CHANGED:
                    self.store.promote(mrid)
                elif m.outcome is KeyChangeOutcome.FAILED:
                    self.store.drop_pending(mrid)
            self.persist(self.store)
        out = []
        for m in meters:
            entry = self.store.entry(m.target.mrid)
            result = KeyChangeResult(
                m.target.mrid, m.outcome, entry.version if entry else None, m.reason
            )
            log.info("key change of %s: %s (%s)", result.mrid, result.outcome, result.reason)
            out.append(result)
        self.audit.record(command.actor, "key-change", out)
        return out

    def _transfer(self, m: _Meter) -> None:
        """One meter: send the new keys, then find out which keys it uses."""
        assert m.current is not None
        assert m.new is not None
        assert m.current.kek is not None
        target = m.target
        try:
            session = self._open(target, m.current.keys)
        except (AmihubError, OSError) as exc:
            m.go(KeyChangeOutcome.FAILED, f"not sent: {_why(exc)}")
            return
        m.go(KeyChangeOutcome.SENT)
        wanted = {
            KeyId.GLOBAL_UNICAST_ENCRYPTION: m.new.keys.encryption_key,
            KeyId.AUTHENTICATION: m.new.keys.authentication_key,
        }
        if m.new.kek != m.current.kek:
            assert m.new.kek is not None
            wanted[KeyId.MASTER] = m.new.kek
        try:
            session.invoke(
                SECURITY_SETUP_CLASS,
                SECURITY_SETUP,
                GLOBAL_KEY_TRANSFER,
                encode_key_transfer(m.current.kek, wanted),
            )
        except ActionRefused as exc:
            self._done(session)
            m.go(KeyChangeOutcome.FAILED, f"the meter refused the key transfer ({_why(exc)})")
            return
        except (AmihubError, OSError) as exc:
            session.close()
            lost = f"answer to the transfer lost ({_why(exc)})"
        else:
            self._done(session)
            lost = ""
        # verify with a new association: the new keys first, the old ones next
        try:
            role = self._which_keys(target, m.new.keys, m.current.keys)
        except (AmihubError, OSError) as exc:
            m.go(
                KeyChangeOutcome.UNKNOWN,
                f"{lost or 'transfer accepted'}; not verified ({_why(exc)}): "
                "the pending keys are kept until the next association settles them",
            )
            return
        if role is KeyRole.ACTIVE:
            m.go(KeyChangeOutcome.CHANGED, "new keys verified by a new association")
        elif role is KeyRole.PENDING:
            m.go(
                KeyChangeOutcome.FAILED,
                f"{lost or 'transfer accepted'}, but the meter still uses the old keys",
            )
        else:
            m.go(
                KeyChangeOutcome.UNKNOWN,
                f"{lost or 'transfer accepted'}; the meter refused both the new and the old "
                "keys: the pending keys are kept",
            )

    # --- settle ---
    def settle(
        self,
        command: SettleKeys,
        progress: Callable[[KeyChangeResult], None] | None = None,
    ) -> list[KeyChangeResult]:
        """For meters with pending keys: associate with the active keys, then the pending
        ones; promote or drop the pending keys accordingly."""
        todo = [t for t in command.targets if self.store.pending(t.mrid) is not None]

        def one(target: MeterTarget) -> KeyChangeResult:
            active = self.store.entry(target.mrid)
            pending = self.store.pending(target.mrid)
            assert active is not None
            assert pending is not None
            try:
                role = self._which_keys(target, active.keys, pending.keys)
            except (AmihubError, OSError) as exc:
                return KeyChangeResult(
                    target.mrid,
                    KeyChangeOutcome.UNKNOWN,
                    active.version,
                    f"not settled: {_why(exc)}",
                )
            if role is KeyRole.PENDING:
                return KeyChangeResult(
                    target.mrid,
                    KeyChangeOutcome.CHANGED,
                    pending.version,
                    "settled: the meter uses the pending keys",
                )
            if role is KeyRole.ACTIVE:
                return KeyChangeResult(
                    target.mrid,
                    KeyChangeOutcome.FAILED,
                    active.version,
                    "settled: the meter kept the old keys",
                )
            return KeyChangeResult(
                target.mrid,
                KeyChangeOutcome.UNKNOWN,
                active.version,
                "not settled: the meter refused both the active and the pending keys",
            )

        with ThreadPoolExecutor(max_workers=max(1, self.policy.concurrency)) as pool:
            results = list(pool.map(one, todo))
        for r in results:
            if r.outcome is KeyChangeOutcome.CHANGED:
                self.store.promote(r.mrid)
            elif r.outcome is KeyChangeOutcome.FAILED:
                self.store.drop_pending(r.mrid)
        if results:
            self.persist(self.store)
        for r in results:
            log.info("key settlement of %s: %s (%s)", r.mrid, r.outcome, r.reason)
        self.audit.record(command.actor, "key-settle", results)
        if progress:
            for r in results:
                progress(r)
        return results


def _why(exc: BaseException) -> str:
    """An error as a reason: amihub's own messages name no key; others by type only."""
    if isinstance(exc, AmihubError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
