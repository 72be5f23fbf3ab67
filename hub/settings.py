"""Typed settings, loaded from ``amihub.toml`` and ``AMIHUB_*`` environment variables.

Precedence: explicit arguments > environment > TOML file > defaults. Nested
sections use a double underscore in the environment, e.g.
``AMIHUB_LIMITS__MAX_MESSAGE_BYTES=1048576``. ``AMIHUB_CONFIG`` names the TOML file.
Nothing here connects to anything; :func:`load_settings` only reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hub.read_schedule_settings import ReadSchedules
from hub.security import UserSettings
from hub.vee_settings import VeeSettings
from hub.web_settings import WebSettings

DEFAULT_CONFIG_FILE = "amihub.toml"


class LimitSettings(BaseModel):
    #: Largest message any adapter accepts (bytes). Larger input is refused while it is read.
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: Messages up to this size are parsed as a tree (exact xpaths in schema errors);
    #: larger ones (files) are streamed with bounded memory.
    tree_limit_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    #: Largest file `amihub import` or an SFTP inbox accepts (bytes).
    max_file_bytes: int = Field(default=16 * 1024 * 1024 * 1024, gt=0)
    #: Largest IntervalBlock (readings of one meter and ReadingType in one block).
    max_block_readings: int = Field(default=200_000, gt=0)
    #: Readings held in memory between flushes to the store while ingesting.
    ingest_batch_rows: int = Field(default=50_000, gt=0)
    #: Meters one get MeterReadings may read through EndDeviceGroups (all its groups
    #: together); more: the get is refused (2013), nothing is read.
    max_group_meters: int = Field(default=10_000, gt=0)
    #: Meters x days one get MeterReadings may read (meters named, one per usage point,
    #: the groups' members; a period open at either end counts 366 days); more: the get
    #: is refused with a Fault (1003) naming this limit, nothing is read.
    max_get_meter_days: int = Field(default=100_000, gt=0)


class StoreSettings(BaseModel):
    """``[store]``: timeouts of every store connection (adapters/sql/engine.py), so that
    no request holds a worker, a database session or its locks for ever."""

    model_config = {"extra": "forbid"}

    #: PostgreSQL ``statement_timeout`` (seconds; 0 = none): a statement running longer
    #: is cancelled (the request fails with 3001, retry later)
    statement_timeout: float = Field(default=300.0, ge=0)
    #: PostgreSQL ``idle_in_transaction_session_timeout`` (seconds; 0 = none): a session
    #: idle inside a transaction this long is ended by the server
    idle_in_transaction_timeout: float = Field(default=120.0, ge=0)
    #: SQLite busy timeout (seconds): how long a writer waits for another's lock
    busy_timeout: float = Field(default=30.0, ge=0)


class SoapSettings(BaseModel):
    """``[soap]``: the IEC 61968-9 web services (adapters/soap, docs/soap.md)."""

    model_config = {"extra": "forbid"}

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: worker threads of the WSGI server (one per concurrent request)
    threads: int = Field(default=16, gt=0)
    #: server processes sharing the port (SO_REUSEPORT; Linux), each with ``threads``;
    #: more than 1 needs a fixed port. Outbox delivery runs in the first process only.
    processes: int = Field(default=1, gt=0)
    #: seconds a connection may stay silent (an idle kept-alive connection; a worker
    #: reading a large or chunked body waits at most this long for each part)
    socket_timeout: float = Field(default=30.0, gt=0)
    #: seconds a client has to send a whole request (headers and body) from its first
    #: byte: until then no worker waits for it (adapters/soap/front.py); later: 408 and
    #: the connection is closed
    request_timeout: float = Field(default=30.0, gt=0)
    #: memory a request takes while it arrives; the rest of its body waits in a
    #: temporary file
    request_buffer_bytes: int = Field(default=1024 * 1024, ge=0)
    #: HTTPS: PEM certificate (chain) and private key; both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: largest request body accepted (bytes); refused while it is read
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    #: the base URL clients see (behind a proxy), for soap:address in the WSDL;
    #: default: taken from each request's Host header
    public_url: str | None = None
    #: accept calls without credentials as the principal "anonymous" with all permissions
    #: (only for a closed test network)
    allow_anonymous: bool = False
    #: WS-Security UsernameToken: how old Created may be (seconds), also the nonce memory
    token_max_age: float = Field(default=300.0, gt=0)
    #: noun -> subscriber endpoint URLs that receive Created<Noun> events through Send<Noun>
    subscribers: dict[str, list[str]] = Field(default_factory=dict)
    #: outbound delivery (async replies, events): attempts before dead-lettering, backoff
    delivery_max_attempts: int = Field(default=8, gt=0)
    delivery_first_delay: float = Field(default=1.0, ge=0)
    delivery_max_delay: float = Field(default=600.0, gt=0)
    delivery_poll_interval: float = Field(default=0.5, gt=0)
    #: seconds an outbound call may take
    delivery_timeout: float = Field(default=10.0, gt=0)
    #: log every request (remote, user, method, path, status, bytes, ms) to amihub.soap.access
    access_log: bool = True


class AmqpTlsSettings(BaseModel):
    """TLS for ``amqps://`` URLs (see docs/amqp.md)."""

    model_config = {"extra": "forbid"}

    #: CA bundle that signs the broker's certificate (None: the system store)
    ca_certs: str | None = None
    #: client certificate and key, for brokers that authenticate by certificate (EXTERNAL)
    certfile: str | None = None
    keyfile: str | None = None
    #: check the broker's certificate and host name (never turn off in production)
    verify: bool = True
    #: name expected in the broker's certificate (default: the URL's host)
    server_hostname: str | None = None


class AmqpPartnerSettings(BaseModel):
    """A partner's own queue: its replies (``reply_to``) and the events it subscribes to."""

    model_config = {"extra": "forbid"}

    #: the partner's user name (the ``[[users]]`` entry and its RabbitMQ user)
    name: str = Field(min_length=1)
    #: queue name; default ``amihub.partner.<name>``
    queue: str | None = None
    #: binding keys on the events exchange, e.g. ["created.MeterReadings", "*.EndDeviceEvents"]
    events: list[str] = Field(default_factory=list)

    @property
    def queue_name(self) -> str:
        return self.queue or f"amihub.partner.{self.name}"


class AmqpSettings(BaseModel):
    """The AMQP adapter (adapters/amqp, docs/amqp.md).

    ``url`` is a kombu URL: ``memory://`` (in-process, the embedded default),
    ``amqp://user:password@host:5672/vhost`` or ``amqps://...`` with ``tls``.
    The password may instead come from ``password`` (e.g. ``AMIHUB_AMQP__PASSWORD``),
    which overrides the one in the URL.
    """

    model_config = {"extra": "forbid"}

    enabled: bool = False
    url: str = "memory://"
    password: SecretStr | None = None
    tls: AmqpTlsSettings | None = None
    heartbeat: int = Field(default=30, ge=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    #: unacknowledged messages the broker hands one worker at a time (a worker has up to
    #: four batches in hand: received, prepared, applying, publishing)
    prefetch: int = Field(default=1024, gt=0)
    #: messages handed to the pipeline together (at most half the ``prefetch``)
    batch_size: int = Field(default=256, gt=0)
    #: seconds to wait for more messages before a partial batch is processed
    batch_wait: float = Field(default=0.02, ge=0)
    #: declare exchanges, queues and bindings at start (off when an operator owns them)
    declare: bool = True
    request_exchange: str = "amihub.requests"
    request_queue: str = "amihub.requests"
    events_exchange: str = "amihub.events"
    dead_letter_exchange: str = "amihub.dead-letter"
    dead_letter_queue: str = "amihub.dead-letter"
    #: declare queues as quorum queues (replicated; counts redeliveries, so even a
    #: message that crashes the worker is dead-lettered after ``max_attempts``)
    quorum: bool = False
    partners: list[AmqpPartnerSettings] = Field(default_factory=list)
    #: deliveries of one message (recoverable failures, crashes on quorum queues)
    #: before it goes to the dead-letter queue and store
    max_attempts: int = Field(default=5, gt=0)
    #: backoff before a recoverable failure is retried: first, doubling up to max (seconds)
    retry_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    #: backoff between reconnection attempts (seconds)
    reconnect_delay: float = Field(default=0.5, gt=0)
    reconnect_max_delay: float = Field(default=30.0, gt=0)
    #: broker users (e.g. a shovel or gateway) allowed to name the partner in the
    #: ``amihub-partner`` header; everyone else is the ``user_id`` RabbitMQ validated
    relay_users: list[str] = Field(default_factory=list)
    #: folder of mapping specs for the ``amihub-mapping`` header (default: the built-in ones)
    mappings_dir: str | None = None
    #: deliver the outbox's "amqp" channel (events, async replies) from this process
    outbox: bool = True
    outbox_batch: int = Field(default=200, gt=0)
    #: seconds to wait for the broker's publisher confirms of one batch
    confirm_timeout: float = Field(default=30.0, gt=0)
    #: on ``amqp://``, read frames in large chunks (adapters/amqp/buffered.py, ~5 % less
    #: worker CPU); false: py-amqp's own frame reader. ``amqps://`` always uses py-amqp's
    buffered_reader: bool = True


class SftpPartnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    #: jail folder (default: <root>/<name>)
    home: Path | None = None
    authorized_keys: list[str] = Field(default_factory=list)
    #: an OpenSSH authorized_keys file, read at start (comments and blank lines skipped)
    authorized_keys_file: Path | None = None
    password_hash: SecretStr | None = None
    #: inbound mapping of this partner's files (readings or events), or a ``cim-variant``:
    #: the files are CIM messages in that vendor's variant, through the hub pipeline
    mapping: str
    #: utility code (default: the settings' default_utility)
    utility: str | None = None
    max_upload_bytes: int | None = Field(default=4 * 1024**3, gt=0)
    #: what a partner sending CIM messages (a ``cim-variant`` mapping) may do, as
    #: ``verb:Noun`` (``*`` allowed); mapped files are readings or events anyway
    permissions: list[str] = Field(
        default_factory=lambda: [
            "create:MeterReadings",
            "created:MeterReadings",
            "create:EndDeviceEvents",
            "created:EndDeviceEvents",
        ]
    )


class SftpPushTargetSettings(BaseModel):
    """``[[sftp.push_targets]]``: a partner's own SFTP server amihub pushes files to
    (``amihub export --push NAME``, replies of the partner's CIM messages whose
    ReplyAddress is ``sftp://NAME/``). The server's host key is pinned here."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    #: the ``[[sftp.partners]]`` name whose replies may be pushed here (default: ``name``)
    partner: str | None = None
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(min_length=1)
    #: private key file (RSA, ECDSA or Ed25519) and/or a password (better: environment)
    key_file: Path | None = None
    password: SecretStr | None = None
    remote_dir: str = "."
    #: the server's public host key as in known_hosts / ssh-keyscan: ``type base64``
    host_key: str = Field(min_length=1)
    timeout: float = Field(default=15.0, gt=0)
    #: connection attempts of one push (transport failures only), backoff doubling
    attempts: int = Field(default=5, gt=0)
    retry_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=60.0, ge=0)

    @property
    def owner(self) -> str:
        return self.partner or self.name


class SftpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=2222, ge=0, le=65535)
    host_key: Path = Path("var/sftp_host_key")
    root: Path = Path("var/sftp")
    #: work folder, outside every jail
    state_dir: Path = Path("var/sftp-state")
    #: folder of mapping specs (default: the built-in ones)
    mappings_dir: str | None = None
    settle_seconds: float = Field(default=2.0, ge=0)
    poll_interval: float = Field(default=1.0, gt=0)
    max_auth_failures: int = Field(default=6, gt=0)
    #: applied checksums are kept in the message log; "file" (the earlier JSON-lines
    #: ledger in state_dir) is accepted for old settings files: the ledger is read into
    #: the message log once and the setting is otherwise ignored (warned at start)
    ledger: Literal["store", "file"] = "store"
    partners: list[SftpPartnerSettings] = Field(default_factory=list)
    #: partners' SFTP servers amihub pushes to (``amihub export --push``, replies)
    push_targets: list[SftpPushTargetSettings] = Field(default_factory=list)

    def push_target(self, name: str) -> SftpPushTargetSettings:
        from cim_schemas.errors import ConfigurationError

        for target in self.push_targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.push_targets) or "none configured"
        raise ConfigurationError(f"no [[sftp.push_targets]] named {name!r} ({known})")


class HesPushSettings(BaseModel):
    """``[hes.push]``: the DLMS push listener ``amihub serve`` runs (adapters/dlms/push_service.py,
    docs/hes.md "Push"). It finds meters in the ``[hes]`` manifest and key store."""

    model_config = {"extra": "forbid"}

    enabled: bool = False
    host: str = "127.0.0.1"
    #: TCP port of the WRAPPER listener (4059: the IANA port of DLMS/COSEM; 0: any free one)
    port: int = Field(default=4059, ge=0, le=65535)
    #: largest APDU one WRAPPER frame may announce (bytes); a larger frame is refused
    #: (security event) and its connection closed
    max_frame_bytes: int = Field(default=4096, ge=64, le=65535)
    #: seconds a connection may stay silent before it is closed
    idle_timeout: float = Field(default=120.0, gt=0)
    #: pushes stored (and published) together in one transaction, and how long the
    #: writer waits for more before it writes a partial batch (seconds)
    batch_size: int = Field(default=500, gt=0)
    batch_wait: float = Field(default=0.2, ge=0)
    #: pushes held between the listener and the writer; when full the listener stops
    #: reading (TCP backpressure on the meters) until the store catches up
    queue_size: int = Field(default=20_000, gt=0)
    #: accept plain (unauthenticated) pushes of meters the manifest knows without keys
    #: (LLS meters); off: every unauthenticated push is refused (a security event)
    accept_unauthenticated: bool = False
    #: register a meter of the manifest that authenticated its push (ciphered under its
    #: keys) but is not in the MDM, as DISCOVERED, and store its readings; off: its
    #: events are stored, its readings are not. Never from an unauthenticated push.
    register_unknown: bool = False


class HesSettings(BaseModel):
    """``[hes]``: the DLMS/COSEM head-end the hub drives (adapters/dlms, docs/controls.md).

    Meters are reached through a fleet manifest (the JSON ``hes simulate --manifest``
    writes: serial, host, port, logical_device, system_title, security); their keys
    come from a key store (``keystore`` + ``master_key``) or, for a simulated fleet
    only, from the simulator's seed. A manifest serial is the MDM meter ``mrid_format``.
    """

    model_config = {"extra": "forbid"}

    #: run the control-job scheduler under ``amihub serve`` (CIM routes work whenever a
    #: manifest is configured)
    enabled: bool = False
    manifest: Path | None = None
    #: keys re-derived from the simulator's seed (simulation only; never for real meters)
    simulated_seed: int | None = None
    #: key store file (hes.security.keystore JSON) and its master key (64 hex digits)
    keystore: Path | None = None
    master_key: SecretStr | None = None
    #: MDM mRID of a manifest meter
    mrid_format: str = "MTR-{serial}"
    #: firmware images a firmware update (3.11.0.24) may name (EndDeviceAction/command
    #: ``image=<file> version=<id> sha256=<hex>``); engines need the same folder
    firmware_dir: Path | None = None
    #: ToU calendar definitions ``<name>.json`` a calendar update (3.20.0.24) may name
    #: (EndDeviceAction/command ``calendar=<name>``), read and checked by the hub
    calendars_dir: Path | None = None
    #: per-meter connection timeout (seconds), attempts of a read, parallel meters
    timeout: float = Field(default=5.0, gt=0)
    attempts: int = Field(default=3, gt=0)
    concurrency: int = Field(default=8, gt=0)
    #: seconds between scheduler ticks (due control jobs are started)
    tick_seconds: float = Field(default=1.0, gt=0)
    #: a scheduler holds a claimed job this long (renewed while it runs); a job whose
    #: lease expired (its process died) is taken over by another scheduler
    lease_seconds: float = Field(default=60.0, gt=0)
    #: most meters one on-demand read (create MeterReadSchedule) may name
    read_limit: int = Field(default=100, gt=0)
    #: where reads run: "inprocess" (the embedded default, no broker) or "amqp" (jobs of
    #: ``job_meters`` meters on ``jobs_queue`` over ``[amqp] url``, run by ``amihub engine``)
    dispatch: Literal["inprocess", "amqp"] = "inprocess"
    jobs_queue: str = "amihub.hes.jobs"
    #: meters per read job
    job_meters: int = Field(default=50, gt=0)
    #: jobs one engine process takes from the broker at a time (its prefetch)
    engine_prefetch: int = Field(default=4, gt=0)
    #: deliveries of a job whose run failed (store down, a bug) before it is replied failed
    job_attempts: int = Field(default=3, gt=0)
    #: seconds a submitter waits for the replies of its jobs
    job_timeout: float = Field(default=300.0, gt=0)
    #: ``[[hes.read_schedules]]``: standing reads kept in the job table by the scheduler
    #: service (hub/read_schedule_settings.py, hub/configured_schedules.py)
    read_schedules: ReadSchedules = Field(default_factory=list)
    #: the push listener (``[hes.push]``)
    push: HesPushSettings = HesPushSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AMIHUB_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=DEFAULT_CONFIG_FILE,
    )

    #: SQLAlchemy URL of the meter data store. SQLite is the embedded default.
    database_url: str = "sqlite:///amihub.db"
    #: The utility used when neither the adapter nor the message names one.
    default_utility: str = "DEFAULT"
    default_utility_name: str = "Default utility"
    log_level: str = "INFO"
    #: "json": one JSON object a log line, with the request's and the action's ids (hub/logs.py)
    log_format: Literal["text", "json"] = "text"
    limits: LimitSettings = LimitSettings()
    store: StoreSettings = StoreSettings()
    #: principals for every adapter (see hub/security.py)
    users: list[UserSettings] = Field(default_factory=list)
    soap: SoapSettings = SoapSettings()
    amqp: AmqpSettings = AmqpSettings()
    sftp: SftpSettings = SftpSettings()
    hes: HesSettings = HesSettings()
    #: the operator interface: JSON API, web UI, metrics, health (hub/web_settings.py)
    web: WebSettings = WebSettings()
    #: validation rules and runs (hub/vee_settings.py, docs/vee.md)
    vee: VeeSettings = VeeSettings()
    #: folder of mapping specs for `amihub import --mapping` / `export` (default: shipped)
    mappings_dir: str | None = None
    #: the cyclic garbage collector's thresholds in `amihub serve` (gc.set_threshold):
    #: Python's (700, 10, 10) collect young objects every 700 net allocations, which a
    #: worker holding a few rounds of parsed messages reaches thousands of times a
    #: second (measured: ~42 us of GC a CIM message over AMQP, ~7 % of the worker's CPU).
    #: Cycles are still collected, in larger and rarer collections (docs/amqp.md).
    #: Each at least 1: 0 would switch the collector off.
    gc_thresholds: tuple[PositiveInt, PositiveInt, PositiveInt] = (50_000, 20, 10)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("AMIHUB_CONFIG", DEFAULT_CONFIG_FILE))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read settings now (TOML file, environment), with explicit overrides on top."""
    import tomllib

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from cim_schemas.errors import ConfigurationError

    named = os.environ.get("AMIHUB_CONFIG")
    if named and not Path(named).is_file():  # never a silent fallback to the defaults
        raise ConfigurationError(f"settings file {named} (AMIHUB_CONFIG) does not exist")
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # an AMIHUB_* value that is not the JSON its field needs
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise ConfigurationError(f"invalid settings: {exc}{cause}") from exc
    except tomllib.TOMLDecodeError as exc:
        where = named or DEFAULT_CONFIG_FILE
        raise ConfigurationError(f"settings file {where} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
