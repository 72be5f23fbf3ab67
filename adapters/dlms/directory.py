"""Where each meter is and how to authenticate to it: MDM mRID -> ``hes.engine.MeterTarget``.

Sources:

* :meth:`MeterDirectory.from_fleet`: an in-process simulated fleet (tests, demo);
* :meth:`MeterDirectory.from_manifest`: the JSON ``hes simulate --manifest`` writes
  (serial, host, port, logical_device, system_title, security, optionally
  logical_device_name), with keys from a :class:`hes.security.keystore.KeyStore`
  (HLS meters) or, for a simulated fleet only, re-derived from the simulator's seed
  (``simulated_seed``; LLS passwords too).

With a :class:`hes.security.keywatch.KeyStoreSource` (the key store *file*, as
``amihub serve`` and ``amihub engine`` use it) the directory follows the file: a
lookup looks at the file at most once per ``interval`` (a ``stat``), a changed file is
read, checked and turned into new credentials for every meter, which replace the old
ones at once; a file that cannot be used is logged and the old keys stay
(:mod:`hes.security.keywatch`). :meth:`MeterDirectory.refresh` looks at once, and
:meth:`MeterDirectory.reloading` wraps a session factory so that a meter refusing our
keys makes the directory look before the association is given up. Pending keys (a key
change not settled) go to sessions and to the push decoder with the active ones.

The directory is also the push decoder's (``hes.push.MeterDirectory``): meters by
system title and by logical device name, with their active and pending keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cim_schemas.errors import ConfigurationError
from hes.client.session import (
    AssociationRefused,
    DelegatingSession,
    MeterCredentials,
    MeterSession,
    Security,
)
from hes.dlms.acse import AcseDiagnostic
from hes.engine import MeterTarget, SessionFactory
from hes.push import KnownMeter
from hes.security.keystore import KeyStore
from hes.security.keywatch import KeyStoreSource, KeyStoreWatch
from hes.simulator.fleet import Fleet
from hes.simulator.meter import SecurityPolicy, make_meter


@dataclass(frozen=True)
class _Entry:
    """One meter of the manifest (no keys)."""

    index: int
    mrid: str
    host: str
    port: int
    logical_device: int
    system_title: bytes
    hls: bool
    logical_device_name: str | None


@dataclass(frozen=True)
class _View:
    """Every meter with its credentials, as of one version of the key store."""

    targets: dict[str, MeterTarget]
    by_title: dict[bytes, KnownMeter]
    by_name: dict[str, KnownMeter]

    @classmethod
    def of(cls, targets: Mapping[str, MeterTarget], names: Mapping[str, str]) -> _View:
        """``names``: logical device name -> mRID."""
        by_title: dict[bytes, KnownMeter] = {}
        known: dict[str, KnownMeter] = {}
        for mrid, t in targets.items():
            c = t.credentials
            meter = KnownMeter(mrid, c.keys, c.pending_keys)
            known[mrid] = meter
            if c.security is Security.HLS and c.keys is not None:
                by_title[c.system_title] = meter
        return cls(dict(targets), by_title, {n: known[m] for n, m in names.items() if m in known})


class MeterDirectory(Mapping[str, MeterTarget]):
    def __init__(
        self, targets: Mapping[str, MeterTarget], names: Mapping[str, str] | None = None
    ) -> None:
        """Fixed targets; ``names`` (logical device name -> mRID) for plain pushes. Another
        MeterDirectory is shared, not copied (it may follow a key store file)."""
        self._watch: KeyStoreWatch[_View] | None = None
        if isinstance(targets, MeterDirectory) and names is None:
            self._fixed: _View = targets._fixed
            self._watch = targets._watch
            return
        self._fixed = _View.of(targets, names or {})

    def _view(self) -> _View:
        return self._fixed if self._watch is None else self._watch.current()

    def __getitem__(self, mrid: str) -> MeterTarget:
        return self._view().targets[mrid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view().targets)

    def __len__(self) -> int:
        return len(self._view().targets)

    def __repr__(self) -> str:  # never the credentials
        follows = "" if self._watch is None else ", following the key store file"
        return f"MeterDirectory({len(self)} meters{follows})"

    # -- push (hes.push.MeterDirectory) -------------------------------------------------------

    def by_system_title(self, system_title: bytes) -> KnownMeter | None:
        return self._view().by_title.get(system_title)

    def by_logical_device_name(self, name: str) -> KnownMeter | None:
        return self._view().by_name.get(name)

    # -- following the key store file ---------------------------------------------------------

    @property
    def watch(self) -> KeyStoreWatch[_View] | None:
        """The key store file followed (None: fixed credentials)."""
        return self._watch

    def refresh(self) -> bool:
        """Look at the key store file now; True when changed keys were taken in."""
        return self._watch is not None and self._watch.check(force=True)

    def reloading(self, sessions: SessionFactory) -> SessionFactory:
        """``sessions`` whose association, refused for authentication by a meter (with
        its active and pending keys), is tried once more with the keys of a changed key
        store file, if the file changed and gives that meter other keys."""
        if self._watch is None:
            return sessions

        def factory(target: MeterTarget, timeout: float) -> MeterSession:
            return _Reloading(self, sessions, target, timeout)

        return factory

    # -- sources ------------------------------------------------------------------------------

    @classmethod
    def from_fleet(cls, fleet: Fleet, mrid_format: str = "MTR-{serial}") -> MeterDirectory:
        targets = {}
        names = {}
        for i, m in enumerate(fleet.meters):
            ep = fleet.endpoint(i)
            creds = (
                MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys)
                if m.policy is SecurityPolicy.HLS_GMAC
                else MeterCredentials(Security.LOW, password=m.password)
            )
            mrid = mrid_format.format(serial=m.serial)
            targets[mrid] = MeterTarget(mrid, ep.host, ep.port, ep.logical_device, creds)
            names[m.logical_device_name] = mrid
        return cls(targets, names)

    @classmethod
    def from_manifest(
        cls,
        path: Path,
        *,
        mrid_format: str = "MTR-{serial}",
        keystore: KeyStore | KeyStoreSource | None = None,
        simulated_seed: int | None = None,
    ) -> MeterDirectory:
        """``keystore``: a store (fixed keys) or a key store file to follow."""
        entries = _read_manifest(path, mrid_format)
        names = {e.logical_device_name: e.mrid for e in entries if e.logical_device_name}
        if isinstance(keystore, KeyStoreSource):
            directory = cls({}, names)
            directory._watch = KeyStoreWatch(
                keystore, lambda store: _View.of(_targets(entries, store, simulated_seed), names)
            )
            return directory
        return cls(_targets(entries, keystore, simulated_seed), names)


def _read_manifest(path: Path, mrid_format: str) -> list[_Entry]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"[hes] manifest {path}: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigurationError(f"[hes] manifest {path} is not a JSON list of meters")
    out = []
    for index, e in enumerate(entries):
        try:
            serial = str(e["serial"])
            name = e.get("logical_device_name")
            out.append(
                _Entry(
                    index,
                    mrid_format.format(serial=serial),
                    str(e["host"]),
                    int(e["port"]),
                    int(e["logical_device"]),
                    bytes.fromhex(str(e["system_title"])),
                    e.get("security", "hls") == "hls",
                    None if name is None else str(name),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigurationError(
                f"[hes] manifest {path}, meter {index + 1}: {type(exc).__name__}: {exc}"
            ) from None
    return out


def _targets(
    entries: Sequence[_Entry], keystore: KeyStore | None, seed: int | None
) -> dict[str, MeterTarget]:
    return {
        e.mrid: MeterTarget(
            e.mrid,
            e.host,
            e.port,
            e.logical_device,
            _credentials(e.mrid, e.index, e.system_title, e.hls, keystore, seed),
        )
        for e in entries
    }


def _credentials(
    mrid: str,
    index: int,
    system_title: bytes,
    hls: bool,
    keystore: KeyStore | None,
    seed: int | None,
) -> MeterCredentials:
    if hls and keystore is not None:
        found = keystore.entry(mrid)
        if found is not None:
            pending = keystore.pending(mrid)  # an unsettled key change: tried when refused
            return MeterCredentials(
                Security.HLS,
                system_title=found.system_title,
                keys=found.keys,
                pending_keys=pending.keys if pending else None,
            )
    if seed is None:
        raise ConfigurationError(
            f"no keys for {mrid}: put them in the key store ([hes] keystore) "
            "or, for a simulated fleet, set [hes] simulated_seed"
        )
    sim = make_meter(index, seed, SecurityPolicy.HLS_GMAC if hls else SecurityPolicy.LOW)
    if hls:
        return MeterCredentials(Security.HLS, system_title=system_title, keys=sim.keys)
    return MeterCredentials(Security.LOW, password=sim.password)


class _Reloading(DelegatingSession):
    """A MeterSession whose association, refused for authentication, is tried once more
    with the keys of a changed key store file."""

    def __init__(
        self,
        directory: MeterDirectory,
        sessions: SessionFactory,
        target: MeterTarget,
        timeout: float,
    ) -> None:
        self._directory = directory
        self._sessions = sessions
        self._target = target
        self._timeout = timeout
        super().__init__(sessions(target, timeout))

    def associate(self) -> None:
        try:
            self._inner.associate()
        except AssociationRefused as exc:
            if exc.diagnostic is not AcseDiagnostic.AUTHENTICATION_FAILURE:
                raise
            if not self._directory.refresh():
                raise
            fresh = self._directory.get(self._target.mrid)
            if fresh is None or fresh.credentials == self._target.credentials:
                raise
            self._inner.close()
            self._target = fresh
            self._inner = self._sessions(fresh, self._timeout)
            self._inner.associate()
