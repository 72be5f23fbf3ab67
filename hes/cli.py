"""Head-end commands: ``simulate`` (a fleet of DLMS meters) and ``read`` (one run).

The group is registered in ``hub/cli.py`` by the CLI owner, e.g.
``main.add_command(hes.cli.hes)`` (giving ``amihub hes simulate ...``) or
``main.add_command(hes.cli.simulate)`` (giving ``amihub simulate ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.engine import EnginePolicy, MeterOutcome, MeterResult, MeterTarget, ReadCommand
from hes.engine import ReadingEngine as _Engine
from hes.simulator.fleet import Addressing, Fleet
from hes.simulator.meter import SecurityPolicy, interval_end, interval_index, make_meter
from mdm.model import IngestStats

log = logging.getLogger(__name__)

_POLICIES = {"low": SecurityPolicy.LOW, "hls": SecurityPolicy.HLS_GMAC}


@click.group(name="hes")
def hes() -> None:
    """Head-end: simulated DLMS/COSEM meters and reading runs."""


@hes.command()
@click.option("--meters", "count", type=click.IntRange(1, 65534), default=10, show_default=True)
@click.option("--base-port", type=click.IntRange(1, 65535), default=4059, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Same seed, same meters: serials, keys and consumption.",
)
@click.option(
    "--security",
    type=click.Choice(sorted(_POLICIES)),
    default="hls",
    show_default=True,
    help="What the management client must use.",
)
@click.option(
    "--addressing",
    type=click.Choice([a.value for a in Addressing]),
    default=Addressing.SHARED.value,
    show_default=True,
    help="shared: one port, meter = WRAPPER wPort (index+1); per-port: one port each.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep invocation counters across restarts in this file (saved every 10 s).",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write serials, endpoints and (simulated) keys as JSON for a head-end.",
)
def simulate(
    count: int,
    base_port: int,
    seed: int,
    security: str,
    addressing: str,
    host: str,
    state: Path | None,
    manifest: Path | None,
) -> None:
    """Run a fleet of simulated meters until interrupted."""
    fleet = Fleet.build(count, base_port, seed, _POLICIES[security], Addressing(addressing), host)
    if state is not None and (restored := fleet.load_state(state)):
        click.echo(f"invocation counters of {restored} meters restored from {state}", err=True)
    if manifest is not None:
        manifest.write_text(json.dumps(fleet_manifest(fleet), indent=1))
    where = (
        f"{host}:{base_port} (wPort 1..{count})"
        if fleet.addressing is Addressing.SHARED
        else f"{host}:{base_port}..{base_port + count - 1}"
    )
    click.echo(f"simulating {count} meters ({security}) on {where}; Ctrl-C stops", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fleet.serve_forever(state))


def fleet_manifest(fleet: Fleet) -> list[dict[str, object]]:
    """What a head-end needs to read the fleet. Simulated keys only: never do this for real ones."""
    out: list[dict[str, object]] = []
    for i, m in enumerate(fleet.meters):
        ep = fleet.endpoint(i)
        out.append(
            {
                "serial": m.serial,
                "host": ep.host,
                "port": ep.port,
                "logical_device": ep.logical_device,
                "system_title": m.system_title.hex(),
                "security": "hls" if m.policy is SecurityPolicy.HLS_GMAC else "low",
                "logical_device_name": m.logical_device_name,  # plain pushes name it
            }
        )
    return out


def simulated_targets(
    count: int,
    base_port: int,
    seed: int,
    security: str,
    addressing: str = Addressing.SHARED.value,
    host: str = "127.0.0.1",
) -> tuple[MeterTarget, ...]:
    """Targets of a simulated fleet: keys re-derived from the seed, as the simulator does."""
    policy = _POLICIES[security]
    fleet = Fleet(
        [make_meter(i, seed, policy) for i in range(count)], base_port, host, Addressing(addressing)
    )
    out = []
    for i, m in enumerate(fleet.meters):
        ep = fleet.endpoint(i)
        creds = (
            MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys)
            if policy is SecurityPolicy.HLS_GMAC
            else MeterCredentials(Security.LOW, password=m.password)
        )
        out.append(MeterTarget(f"MTR-{m.serial}", ep.host, ep.port, ep.logical_device, creds))
    return tuple(out)


class _CountingSink:
    def __init__(self) -> None:
        self.rows = 0

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        n = sum(len(r.readings) for r in results)
        self.rows += n
        return IngestStats(stored=n), 0


@hes.command()
@click.option("--meters", "count", type=click.IntRange(1, 65534), default=10, show_default=True)
@click.option("--base-port", type=click.IntRange(1, 65535), default=4059, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--security", type=click.Choice(sorted(_POLICIES)), default="hls", show_default=True)
@click.option(
    "--addressing",
    type=click.Choice([a.value for a in Addressing]),
    default=Addressing.SHARED.value,
    show_default=True,
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--hours",
    type=click.IntRange(1, 24 * 40),
    default=24,
    show_default=True,
    help="Load profile window ending at the last complete interval.",
)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--timeout", type=float, default=5.0, show_default=True)
def read(
    count: int,
    base_port: int,
    seed: int,
    security: str,
    addressing: str,
    host: str,
    hours: int,
    concurrency: int,
    timeout: float,
) -> None:
    """Read a simulated fleet once (registers + load profile) and print a summary; stores
    nothing (a trial run: `amihub engine read` reads the [hes] manifest into the store).

    Every meter that failed or was read in part is printed with the reason on stderr;
    then the exit code is 1. Storing into the MDM is the engine's job inside the hub
    (``hub.headend_store.MdmReadingSink``); this command only counts what it would store."""
    targets = simulated_targets(count, base_port, seed, security, addressing, host)
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    sink = _CountingSink()
    engine = _Engine(
        sink,
        policy=EnginePolicy(concurrency=concurrency, timeout=timeout),
        identity=ClientIdentity(),
    )
    started = time.perf_counter()
    report = engine.run(ReadCommand(targets, end - timedelta(hours=hours), end))
    seconds = time.perf_counter() - started
    for outcome in MeterOutcome:
        n = report.count(outcome)
        if n:
            click.echo(f"{outcome.value:>8}: {n}")
    click.echo(
        f"{sink.rows} readings from {count} meters in {seconds:.2f} s "
        f"({count / seconds:.0f} meters/s); nothing stored (a trial read: "
        "`amihub engine read` stores)"
    )
    failures = report.failures()
    if failures:
        click.echo(f"{len(failures)} of {count} meter(s) failed or read in part:", err=True)
        for mrid, reason in sorted(failures.items()):
            click.echo(f"  {mrid}: {reason}", err=True)
        raise SystemExit(1)
