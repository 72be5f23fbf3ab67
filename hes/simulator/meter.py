"""One simulated meter's state: identity, keys, energy model, events, relay, faults.

Pure state and arithmetic (no IO, no gurux). Consumption is a closed-form,
reproducible function of (seed, serial, interval): any range can be read at
any time without replaying history, which is what lets one process hold
10,000 meters.

Energy model: a daily 96-interval load shape (night base, morning and evening
peaks) times a per-meter scale and a weekday factor, plus a bounded noise term
that telescopes (interval delta = shape + n(k) - n(k-1)), so the cumulative
register is O(1) to compute and every interval is positive. Rate 1 (day,
07:00-23:00) and rate 2 (night) registers are the noise-free split of the same
shape; +A is their sum plus the bounded noise.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import IntEnum

from hes.dlms.cosem_data import ActivityCalendar, Day, DayAction, Season, Week
from hes.security.gcm import InvocationCounter, SecurityKeys
from hes.security.keywrap import KeyId, KeyTransferError, decode_key_transfer

INTERVAL = timedelta(minutes=15)
INTERVALS_PER_DAY = 96
EPOCH = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday: interval 0 starts here
PROFILE_DEPTH_DAYS = 40  # entries kept by the load profile


def _shape() -> list[float]:
    out = []
    for k in range(INTERVALS_PER_DAY):
        h = k / 4
        base = 0.35
        morning = 0.9 * math.exp(-((h - 7.5) ** 2) / 2.0)
        evening = 1.4 * math.exp(-((h - 19.5) ** 2) / 4.0)
        midday = 0.3 * math.exp(-((h - 13.0) ** 2) / 6.0)
        out.append(base + morning + evening + midday)
    total = sum(out)
    return [x / total for x in out]  # fractions of a day's energy


SHAPE = _shape()
DAY_RATE = [1 if 28 <= k < 92 else 2 for k in range(INTERVALS_PER_DAY)]  # 07:00-23:00 = rate 1
WEEK_FACTOR = [1.0, 0.97, 0.98, 1.0, 1.05, 1.2, 1.25]  # Monday..Sunday
WEEK_SUM = sum(WEEK_FACTOR)


def _prefix(rate: int | None) -> list[float]:
    out = [0.0]
    for k in range(INTERVALS_PER_DAY):
        include = rate is None or DAY_RATE[k] == rate
        out.append(out[-1] + (SHAPE[k] if include else 0.0))
    return out


PREFIX = {None: _prefix(None), 1: _prefix(1), 2: _prefix(2)}
WEEK_PREFIX = [sum(WEEK_FACTOR[:d]) for d in range(8)]


class ControlState(IntEnum):
    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


class EventCode(IntEnum):
    """Standard event log codes (IDIS/DLMS standard event list)."""

    POWER_DOWN = 1
    POWER_UP = 2
    CLOCK_ADJUSTED_OLD = 4
    CLOCK_ADJUSTED_NEW = 5
    TERMINAL_COVER_OPENED = 40
    STRONG_DC_FIELD = 47
    FIRMWARE_READY_FOR_ACTIVATION = 17
    FIRMWARE_ACTIVATED = 18
    PASSIVE_CALENDAR_ACTIVATED = 20
    DISCONNECTED_REMOTE = 59
    CONNECTED_REMOTE = 60
    FIRMWARE_VERIFICATION_FAILED = 64
    LIMITER_THRESHOLD_EXCEEDED = 71  # the limiter opened the relay
    LIMITER_THRESHOLD_CHANGED = 73


@dataclass
class Faults:
    """Fault injection, changeable at run time (tests flip them)."""

    no_answer: bool = False  # accept TCP, never answer
    slow_answer_s: float = 0.0  # delay every answer
    drop_mid_profile: bool = False  # close the connection during a profile block transfer
    drop_profile_after: datetime | None = None  # one shot: die when asked rows after this
    clock_drift_s: float = 0.0  # meter clock = true time + drift
    rewind_counter: bool = False  # the meter reuses an old invocation counter
    flip_bit: bool = False  # the meter flips one bit of its ciphered answers
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)  # no consumption
    tamper_at: datetime | None = None  # cover opened
    load_w: int | None = None  # instantaneous +A power forced (limiter tests); None: the model
    drop_after_image_block: int | None = None  # one shot: die after storing this image block
    drop_before_key_transfer: bool = False  # one shot: die on a key transfer, keys unchanged
    drop_after_key_transfer: bool = False  # one shot: die after applying a key transfer
    #: one shot: after applying a key transfer, die and stay silent (sets no_answer)
    silent_after_key_transfer: bool = False
    #: a hostile or broken meter: every GET of the management client is answered with
    #: this Data (raw A-XDR, ciphered as the association is), e.g. 1,000 nested arrays
    answer_get_with: bytes | None = None
    #: one shot: the meter carries out the next ACTION (e.g. opens the relay), then its
    #: ciphered answer is tampered on the way (one bit flipped: the tag fails)
    tamper_action_answer: bool = False
    #: one shot: after answering the next ciphered ACTION, stay silent (sets no_answer)
    silent_after_action: bool = False


class ImageTransferStatus(IntEnum):
    """Image transfer (class 18) image_transfer_status."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


#: the simulated meters' firmware image format: magic, version, payload, SHA-256 of all that
FIRMWARE_MAGIC = b"AMHFW1"
FIRMWARE = "AMH-1.0.0"  # what every simulated meter runs at first


def make_firmware_image(version: str, payload: bytes = b"") -> bytes:
    """A firmware image the simulated meters accept (tests, demo)."""
    v = version.encode()
    head = FIRMWARE_MAGIC + bytes([len(v)]) + v + payload
    return head + hashlib.sha256(head).digest()


def firmware_image_version(image: bytes) -> str | None:
    """The version inside an image, or None if the image is corrupted."""
    if len(image) < len(FIRMWARE_MAGIC) + 33 or not image.startswith(FIRMWARE_MAGIC):
        return None
    head, digest = image[:-32], image[-32:]
    if hashlib.sha256(head).digest() != digest:
        return None
    n = head[len(FIRMWARE_MAGIC)]
    return head[len(FIRMWARE_MAGIC) + 1 : len(FIRMWARE_MAGIC) + 1 + n].decode(errors="replace")


@dataclass
class Limiter:
    """Limiter (class 71) state; thresholds in W of instantaneous +A (1.0.1.7.0.255).

    A threshold of 0 means no limit (the simulator's convention)."""

    threshold_normal: int = 0
    threshold_emergency: int = 0
    emergency: bool = False
    min_over_s: int = 60
    min_under_s: int = 60
    over_since: datetime | None = None

    @property
    def threshold_active(self) -> int:
        return self.threshold_emergency if self.emergency else self.threshold_normal


@dataclass
class ImageTransfer:
    """Image transfer (class 18) state."""

    block_size: int = 128
    enabled: bool = True
    status: ImageTransferStatus = ImageTransferStatus.NOT_INITIATED
    identifier: bytes = b""
    size: int = 0
    blocks: dict[int, bytes] = field(default_factory=dict)
    received: list[int] = field(default_factory=list)  # block numbers, in arrival order

    @property
    def block_count(self) -> int:
        return -(-self.size // self.block_size) if self.block_size else 0

    def first_not_transferred(self) -> int:
        for n in range(self.block_count):
            if n not in self.blocks:
                return n
        return self.block_count

    def image(self) -> bytes:
        return b"".join(self.blocks.get(n, b"") for n in range(self.block_count))[: self.size]


def default_calendar() -> ActivityCalendar:
    """Two rates: rate 1 07:00-23:00, rate 2 at night, all year."""
    day = Day(1, (DayAction(time(0, 0), 2), DayAction(time(7, 0), 1), DayAction(time(23, 0), 2)))
    return ActivityCalendar(
        b"AMH-STD",
        (Season(b"ALL", datetime(2020, 1, 1, tzinfo=UTC), b"WEEK"),),
        (Week(b"WEEK", (1, 1, 1, 1, 1, 1, 1)),),
        (day,),
    )


class SecurityPolicy(IntEnum):
    """What the management client must use to associate."""

    LOW = 1  # LLS password, plain APDUs
    HLS_GMAC = 5  # HLS-GMAC, authenticated and encrypted APDUs


_MASK64 = (1 << 64) - 1
MIN_SHAPE = min(SHAPE)


def _mix(x: int) -> float:
    """splitmix64 finaliser -> [0, 1): a cheap, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) / 2**64


def _unit_hash(*parts: object) -> float:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def interval_index(ts: datetime) -> int:
    """Index of the interval ENDING at ``ts`` (rounded down to 15 minutes)."""
    return int((ts - EPOCH) // INTERVAL)


def interval_end(k: int) -> datetime:
    return EPOCH + k * INTERVAL


@dataclass
class MeterState:
    """A simulated meter. Thread-safe where the fleet shares it between connections."""

    index: int
    serial: str
    seed: int
    system_title: bytes
    keys: SecurityKeys
    password: bytes
    policy: SecurityPolicy = SecurityPolicy.HLS_GMAC
    kek: bytes = field(default=b"", repr=False)  # master key: new keys come wrapped in it
    annual_kwh: float = 3500.0
    control_state: ControlState = ControlState.CONNECTED
    faults: Faults = field(default_factory=Faults)
    counter: InvocationCounter = field(default_factory=InvocationCounter)
    client_counters: dict[int, int] = field(default_factory=dict)  # client SAP -> last IC
    events: list[tuple[datetime, int]] = field(default_factory=list)
    profile_requests: list[tuple[datetime, datetime]] = field(default_factory=list)  # served
    requests: int = 0  # APDUs received (all associations)
    key_changes: int = 0  # key transfers applied
    limiter: Limiter = field(default_factory=Limiter)
    calendar_active: ActivityCalendar = field(default_factory=default_calendar)
    calendar_passive: ActivityCalendar = field(default_factory=lambda: ActivityCalendar(b""))
    calendar_activate_at: datetime | None = None
    firmware: str = FIRMWARE
    image: ImageTransfer = field(default_factory=ImageTransfer)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._base_wh = 1_000_000.0 * _unit_hash(self.seed, self.serial, "base")
        self._noise_key = int(_unit_hash(self.seed, self.serial, "noise") * 2**40) << 20

    @property
    def logical_device_name(self) -> str:
        return f"AMI{self.serial}"  # 16 characters max in IDIS; ours are short

    @property
    def day_wh(self) -> float:
        return self.annual_kwh * 1000.0 / 365.25 * 7 / WEEK_SUM

    # --- clock ---
    def now(self, true_now: datetime | None = None) -> datetime:
        return (true_now or datetime.now(UTC)) + timedelta(seconds=self.faults.clock_drift_s)

    # --- energy ---
    def _noise(self, k: int) -> float:
        # bounded in [-0.2, 0.2] of the smallest interval's energy: deltas stay positive
        return (_mix(self._noise_key ^ k) - 0.5) * 0.4 * MIN_SHAPE * self.day_wh

    def _outage_loss(self, k: int) -> float:
        """Energy not consumed because of outages before interval end k."""
        if not self.faults.outages:
            return 0.0
        lost = 0.0
        for start, end in self.faults.outages:
            a, b = interval_index(start), interval_index(end)
            lost += self._pure(min(b, k), None) - self._pure(min(a, k), None)
        return lost

    def _pure(self, k: int, rate: int | None) -> float:
        """Noise-free cumulative Wh from EPOCH to the end of interval k (k intervals)."""
        days, within = divmod(k, INTERVALS_PER_DAY)
        weeks, dow = divmod(days, 7)
        full = weeks * WEEK_SUM + WEEK_PREFIX[dow]
        prefix = PREFIX[rate]
        return self.day_wh * (full * prefix[-1] + WEEK_FACTOR[dow] * prefix[within])

    def base_wh(self) -> float:
        return self._base_wh

    def energy_wh(self, k: int, rate: int | None = None) -> int:
        """Cumulative import (rate None = total, 1 = day, 2 = night) at the end of interval k."""
        if rate is not None:
            return int(self.base_wh() / 2 + self._pure(k, rate))
        return int(self.base_wh() + self._pure(k, None) + self._noise(k) - self._outage_loss(k))

    def export_wh(self, k: int) -> int:
        """-A: a small PV export around midday for every fifth meter, else none."""
        if self.index % 5:
            return 0
        return int(self._pure(k, 1) * 0.05)

    def current_interval(self, true_now: datetime | None = None) -> int:
        return interval_index(self.now(true_now))

    def interval_wh(self, k: int) -> int:
        """Energy used during interval k (ending at interval_end(k))."""
        return self.energy_wh(k) - self.energy_wh(k - 1)

    # --- relay ---
    def remote_disconnect(self, at: datetime) -> bool:
        with self.lock:
            if self.control_state == ControlState.DISCONNECTED:
                return True  # idempotent, as real meters answer
            self.control_state = ControlState.DISCONNECTED
            self.events.append((at, EventCode.DISCONNECTED_REMOTE))
            return True

    def remote_reconnect(self, at: datetime) -> bool:
        with self.lock:
            if self.control_state == ControlState.CONNECTED:
                return True
            self.control_state = ControlState.CONNECTED
            self.events.append((at, EventCode.CONNECTED_REMOTE))
            return True

    def power_w(self, at: datetime) -> int:
        """Instantaneous +A: the current interval's mean power, or the forced load."""
        if self.faults.load_w is not None:
            return self.faults.load_w
        return self.interval_wh(interval_index(at)) * 4

    # --- time-driven behaviour (evaluated whenever the meter is observed) ---
    def supervise(self, at: datetime) -> None:
        """The limiter and a pending calendar activation, at meter time ``at``."""
        with self.lock:
            if self.calendar_activate_at is not None and at >= self.calendar_activate_at:
                self._activate_calendar(at)
            lim = self.limiter
            threshold = lim.threshold_active
            if threshold <= 0 or self.control_state != ControlState.CONNECTED:
                lim.over_since = None
                return
            if self.power_w(at) <= threshold:
                lim.over_since = None
                return
            if lim.over_since is None:
                lim.over_since = at
            if (at - lim.over_since).total_seconds() >= lim.min_over_s:
                self.control_state = ControlState.DISCONNECTED
                self.events.append((at, EventCode.LIMITER_THRESHOLD_EXCEEDED))
                lim.over_since = None

    def set_limiter(self, attribute: int, value: int, at: datetime) -> None:
        with self.lock:
            lim = self.limiter
            if attribute == 4:
                lim.threshold_normal = value
            elif attribute == 5:
                lim.threshold_emergency = value
            elif attribute == 6:
                lim.min_over_s = value
            else:
                lim.min_under_s = value
            lim.over_since = None
            if attribute in (4, 5):
                self.events.append((at, EventCode.LIMITER_THRESHOLD_CHANGED))

    # --- activity calendar ---
    def _activate_calendar(self, at: datetime) -> None:
        self.calendar_active = self.calendar_passive
        self.calendar_activate_at = None
        self.events.append((at, EventCode.PASSIVE_CALENDAR_ACTIVATED))

    def activate_calendar(self, at: datetime) -> None:
        with self.lock:
            self._activate_calendar(at)

    # --- image transfer ---
    def image_initiate(self, identifier: bytes, size: int) -> bool:
        with self.lock:
            img = self.image
            if not img.enabled or size <= 0:
                return False
            if not (img.identifier == identifier and img.size == size):
                img.blocks.clear()  # a new image; the same one again resumes
            img.identifier, img.size = identifier, size
            img.status = ImageTransferStatus.INITIATED
            return True

    def image_block(self, number: int, data: bytes) -> bool:
        with self.lock:
            img = self.image
            if img.status != ImageTransferStatus.INITIATED or not 0 <= number < img.block_count:
                return False
            last = number == img.block_count - 1
            if len(data) != img.block_size and not last:
                return False
            img.blocks[number] = data
            img.received.append(number)
            return True

    def image_verify(self, at: datetime) -> bool:
        with self.lock:
            img = self.image
            if img.status not in (
                ImageTransferStatus.INITIATED,
                ImageTransferStatus.VERIFICATION_FAILED,
                ImageTransferStatus.VERIFICATION_SUCCESSFUL,
            ):
                return False
            complete = img.first_not_transferred() == img.block_count
            version = firmware_image_version(img.image()) if complete else None
            if version is None or version.encode() != img.identifier:
                img.status = ImageTransferStatus.VERIFICATION_FAILED
                self.events.append((at, EventCode.FIRMWARE_VERIFICATION_FAILED))
                return False
            img.status = ImageTransferStatus.VERIFICATION_SUCCESSFUL
            self.events.append((at, EventCode.FIRMWARE_READY_FOR_ACTIVATION))
            return True

    def image_activate(self, at: datetime) -> bool:
        with self.lock:
            img = self.image
            if img.status != ImageTransferStatus.VERIFICATION_SUCCESSFUL:
                return False
            self.firmware = img.identifier.decode(errors="replace")
            img.status = ImageTransferStatus.ACTIVATION_SUCCESSFUL
            img.blocks.clear()
            self.events.append((at, EventCode.FIRMWARE_ACTIVATED))
            return True

    # --- security setup: global_key_transfer ---
    def transfer_keys(self, parameters: object) -> None:
        """Unwrap every key of a global_key_transfer with the current KEK and apply them
        all, or none (KeyTransferError). New keys serve from the next association on
        (a session keeps the keys it associated with); counters go on, never reset."""
        with self.lock:
            if len(self.kek) != 16:
                raise KeyTransferError("this meter has no master key (KEK)")
            new = decode_key_transfer(self.kek, parameters)
            self.keys = SecurityKeys(
                new.get(KeyId.GLOBAL_UNICAST_ENCRYPTION, self.keys.encryption_key),
                new.get(KeyId.AUTHENTICATION, self.keys.authentication_key),
            )
            self.kek = new.get(KeyId.MASTER, self.kek)
            self.key_changes += 1

    # --- events ---
    def event_log(self) -> list[tuple[datetime, int]]:
        out = list(self.events)
        for start, end in self.faults.outages:
            out += [(start, EventCode.POWER_DOWN), (end, EventCode.POWER_UP)]
        if self.faults.tamper_at is not None:
            out.append((self.faults.tamper_at, EventCode.TERMINAL_COVER_OPENED))
        return sorted(out)

    # --- invocation counters ---
    def accept_client_counter(self, client: int, ic: int) -> bool:
        """The meter's side of replay protection: a client counter must go forward."""
        with self.lock:
            last = self.client_counters.get(client, 0)
            if ic <= last:
                return False
            self.client_counters[client] = ic
            return True

    def client_counter(self, client: int) -> int:
        with self.lock:
            return self.client_counters.get(client, 0)

    def next_counter(self) -> int:
        """The meter's own sending counter (never repeats unless the fault says so)."""
        if self.faults.rewind_counter:
            return max(1, self.counter.value - 5)
        return self.counter.next()


def make_meter(
    index: int, seed: int, policy: SecurityPolicy = SecurityPolicy.HLS_GMAC
) -> MeterState:
    """A reproducible meter: serial, system title, keys, KEK and password derived from the seed.

    The derivation is for simulation only: real keys come from the key store.
    """
    serial = f"{seed % 100:02d}{index:08d}"
    material = hashlib.blake2b(f"amihub-sim:{seed}:{index}".encode(), digest_size=48).digest()
    kek = hashlib.blake2b(f"amihub-sim-kek:{seed}:{index}".encode(), digest_size=16).digest()
    return MeterState(
        index=index,
        serial=serial,
        seed=seed,
        system_title=b"AMH" + index.to_bytes(5, "big"),
        keys=SecurityKeys(material[:16], material[16:32]),
        password=material[32:40].hex()[:8].encode(),
        policy=policy,
        kek=kek,
        annual_kwh=1500.0 + 5000.0 * _unit_hash(seed, index, "size"),
    )
