"""Where each meter is and how to authenticate to it: MDM mRID -> ``hes.engine.MeterTarget``.

Sources:

* :meth:`MeterDirectory.from_fleet`: an in-process simulated fleet (tests, demo);
* :meth:`MeterDirectory.from_manifest`: the JSON ``hes simulate --manifest`` writes
  (serial, host, port, logical_device, system_title, security), with keys from a
  :class:`hes.security.keystore.KeyStore` (HLS meters) or, for a simulated fleet only,
  re-derived from the simulator's seed (``simulated_seed``; LLS passwords too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from hes.client.session import MeterCredentials, Security
from hes.engine import MeterTarget
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet
from hes.simulator.meter import SecurityPolicy, make_meter
from hub.errors import ConfigurationError


class MeterDirectory(Mapping[str, MeterTarget]):
    def __init__(self, targets: Mapping[str, MeterTarget]) -> None:
        self._targets = dict(targets)

    def __getitem__(self, mrid: str) -> MeterTarget:
        return self._targets[mrid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:  # never the credentials
        return f"MeterDirectory({len(self._targets)} meters)"

    @classmethod
    def from_fleet(cls, fleet: Fleet, mrid_format: str = "MTR-{serial}") -> MeterDirectory:
        targets = {}
        for i, m in enumerate(fleet.meters):
            ep = fleet.endpoint(i)
            creds = (
                MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys)
                if m.policy is SecurityPolicy.HLS_GMAC
                else MeterCredentials(Security.LOW, password=m.password)
            )
            mrid = mrid_format.format(serial=m.serial)
            targets[mrid] = MeterTarget(mrid, ep.host, ep.port, ep.logical_device, creds)
        return cls(targets)

    @classmethod
    def from_manifest(
        cls,
        path: Path,
        *,
        mrid_format: str = "MTR-{serial}",
        keystore: KeyStore | None = None,
        simulated_seed: int | None = None,
    ) -> MeterDirectory:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"[hes] manifest {path}: {exc}") from None
        if not isinstance(entries, list):
            raise ConfigurationError(f"[hes] manifest {path} is not a JSON list of meters")
        targets = {}
        for index, e in enumerate(entries):
            try:
                serial = str(e["serial"])
                mrid = mrid_format.format(serial=serial)
                system_title = bytes.fromhex(str(e["system_title"]))
                hls = e.get("security", "hls") == "hls"
                target = MeterTarget(
                    mrid,
                    str(e["host"]),
                    int(e["port"]),
                    int(e["logical_device"]),
                    _credentials(mrid, index, system_title, hls, keystore, simulated_seed),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(
                    f"[hes] manifest {path}, meter {index + 1}: {type(exc).__name__}: {exc}"
                ) from None
            targets[mrid] = target
        return cls(targets)


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
