"""The meter data store schema (SQLAlchemy Core).

The Alembic revisions in ``adapters/sql/migrations`` create exactly this schema;
``tests/unit/sql/test_migrations.py`` compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from adapters.sql.types import ExactDecimal, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

utility = Table(
    "utility",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

usage_point = Table(
    "usage_point",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("mrid", String(100), nullable=False),
    Column("name", String(200)),
    Column("service_category", String(20), nullable=False),
    Column("location", Text),
    Column("transformer_area", String(100)),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("utility_id", "mrid"),
    Index(None, "utility_id", "name"),
)

end_device = Table(
    "end_device",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("mrid", String(100), nullable=False),
    Column("serial_number", String(100)),
    Column("name", String(200)),
    Column("kind", String(20), nullable=False),
    Column("manufacturer", String(100)),
    Column("model", String(100)),
    Column("firmware_version", String(100)),
    Column("state", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("utility_id", "mrid"),
    Index(None, "utility_id", "name"),
    Index(None, "utility_id", "serial_number"),
)

installation = Table(
    "installation",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("device_id", Id, ForeignKey("end_device.id"), nullable=False),
    Column("usage_point_id", Id, ForeignKey("usage_point.id"), nullable=False),
    Column("start_at", UTCDateTime(), nullable=False),
    Column("end_at", UTCDateTime()),
    Index(None, "device_id", "start_at"),
    Index(None, "usage_point_id", "start_at"),
)
# At most one open installation per device (the repository checks it too).
Index(
    "uq_installation_open_device",
    installation.c.device_id,
    unique=True,
    postgresql_where=installation.c.end_at.is_(None),
    sqlite_where=installation.c.end_at.is_(None),
)

reading_type = Table(
    "reading_type",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(120), nullable=False, unique=True),
)

# reading and reading_history carry no FOREIGN KEY constraints on purpose: on
# PostgreSQL the per-row RI triggers made a 1M-row bulk insert ~4x slower
# (8.6 s instead of 2.3 s). Their ids come only from ReadingStaging.apply (which
# joins end_device and registers reading_type first), and
# EndDeviceRepository.delete refuses a device that has readings.
reading = Table(
    "reading",
    metadata,
    Column("device_id", Id, primary_key=True),  # no FK: see the note above
    Column("reading_type_id", Integer, primary_key=True),
    Column("ts", UTCDateTime(), primary_key=True),
    Column("value", ExactDecimal(), nullable=False),
    Column("quality", Text, nullable=False),  # codes + notes (mdm/qualities.py)
    Column("version", Integer, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    sqlite_with_rowid=False,
)

reading_history = Table(
    "reading_history",
    metadata,
    Column("device_id", Id, primary_key=True),  # no FK: see the note above
    Column("reading_type_id", Integer, primary_key=True),
    Column("ts", UTCDateTime(), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("value", ExactDecimal(), nullable=False),
    Column("quality", Text, nullable=False),  # codes + notes (mdm/qualities.py)
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("superseded_at", UTCDateTime(), nullable=False),
    sqlite_with_rowid=False,
)

end_device_event = Table(
    "end_device_event",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("device_id", Id, ForeignKey("end_device.id")),  # null: device not (yet) known
    Column("device_mrid", String(100), nullable=False),
    Column("mrid", String(100)),
    Column("event_type", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("reason", Text),
    Column("severity", String(32)),
    Column("details", JSON, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Index(None, "device_id", "created_at"),
    Index(None, "utility_id", "created_at"),
)
# An event's mRID names one event of the utility: two processes storing the same event
# insert it once (EventRepository.add_new: INSERT ... ON CONFLICT DO NOTHING).
Index(
    "uq_end_device_event_utility_id_mrid",
    end_device_event.c.utility_id,
    end_device_event.c.mrid,
    unique=True,
    postgresql_where=end_device_event.c.mrid.is_not(None),
    sqlite_where=end_device_event.c.mrid.is_not(None),
)

message_log = Table(
    "message_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("message_id", String(200)),
    Column("endpoint", String(200), nullable=False),
    Column("verb", String(32)),
    Column("noun", String(100)),
    Column("correlation_id", String(200)),
    Column("content_hash", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("state", String(32), nullable=False),
    Column("result", String(32)),
    Column("reply", LargeBinary),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "received_at"),
    Index(None, "correlation_id"),
)
Index(
    "uq_message_log_source_message_id",
    message_log.c.source,
    message_log.c.message_id,
    unique=True,
    postgresql_where=message_log.c.message_id.is_not(None),
    sqlite_where=message_log.c.message_id.is_not(None),
)

message_lifecycle = Table(
    "message_lifecycle",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_log_id", Id, ForeignKey("message_log.id"), nullable=False),
    Column("state", String(32), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("detail", Text),
    Index(None, "message_log_id", "id"),
)

dead_letter = Table(
    "dead_letter",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("error_code", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("message_log_id", Id, ForeignKey("message_log.id")),
    Column("replay_count", Integer, nullable=False),
    Column("resolved_at", UTCDateTime()),
    Index(None, "resolved_at", "received_at"),
    Index(None, "message_log_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("object_type", String(100), nullable=False),
    Column("object_id", String(200)),
    Column("details", Text),
    Index(None, "at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(20), nullable=False),
    Column("destination", String(500), nullable=False),
    Column("verb", String(20), nullable=False),
    Column("noun", String(100), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("correlation_id", String(200)),
    Column("state", String(10), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Index(None, "channel", "state", "next_attempt_at"),
)

# Head-end jobs (mdm/hes_jobs.py): control jobs and read schedules, with a lease.
hes_job = Table(
    "hes_job",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("kind", String(10), nullable=False),  # control | read
    Column("mrid", String(200), nullable=False),
    Column("state", String(12), nullable=False),
    Column("control_type", String(30)),
    Column("targets", JSON, nullable=False),  # meter mRIDs
    Column("spec", JSON, nullable=False),  # ControlRequest.to_json() / the read schedule
    Column("message_id", String(200)),  # MessageID of the request
    Column("start_at", UTCDateTime()),
    Column("end_at", UTCDateTime()),
    Column("recurrence_seconds", Integer),
    Column("recurrence_pattern", String(200)),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("runs", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", String(200)),
    Column("lease_until", UTCDateTime()),
    Column("last_run_at", UTCDateTime()),
    Column("last_outcome", Text),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    UniqueConstraint("utility_id", "kind", "mrid"),
    Index(None, "state", "due_at"),
)

# End device groups (mdm/groups.py): named groups of meters, targets of jobs.
end_device_group = Table(
    "end_device_group",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("mrid", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime()),
    UniqueConstraint("utility_id", "mrid"),
)
# Names/name resolves to one group: a name is unique among the utility's open groups.
Index(
    "uq_end_device_group_open_name",
    end_device_group.c.utility_id,
    end_device_group.c.name,
    unique=True,
    postgresql_where=end_device_group.c.closed_at.is_(None),
    sqlite_where=end_device_group.c.closed_at.is_(None),
)

end_device_group_member = Table(
    "end_device_group_member",
    metadata,
    Column("group_id", Id, ForeignKey("end_device_group.id"), primary_key=True),
    Column("device_id", Id, ForeignKey("end_device.id"), primary_key=True),
    Column("added_at", UTCDateTime(), nullable=False),
    Index(None, "device_id"),
)

# Invocation counters accepted per meter (mdm/security_counters.py): replay protection
# that outlives the process. system_title is 16 hex digits; channel push | response.
invocation_counter = Table(
    "invocation_counter",
    metadata,
    Column("system_title", String(16), primary_key=True),
    Column("channel", String(10), primary_key=True),
    Column("last_counter", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "channel", "updated_at"),  # the rows other processes changed lately
)

# Validation runs (mdm/vee): a run of the rules over a period, and its result set. The
# kind (validate; estimate will follow) and trigger (demand; ingest will follow) keep
# room for the rest of VEE. vee_finding has no FOREIGN KEY to end_device for the same
# bulk reason as reading: its rows come only from the rules' INSERT ... SELECT over
# stored readings, whose devices exist.
vee_run = Table(
    "vee_run",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("utility_id", Id, ForeignKey("utility.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # validate
    Column("trigger", String(20), nullable=False),  # demand
    Column("scope", String(300), nullable=False),  # all meters | meter M | group G
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("actor", String(200), nullable=False),
    Column("state", String(10), nullable=False),  # running | done
    Column("meters", Integer, nullable=False),
    Column("readings", BigInteger, nullable=False),
    Column("findings", BigInteger, nullable=False),
    Column("failing_meters", Integer, nullable=False),
    Column("marked", BigInteger, nullable=False),
    Column("rules", JSON, nullable=False),  # the rules as configured, and their counts
    Index(None, "utility_id", "id"),
)

vee_finding = Table(
    "vee_finding",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("vee_run.id"), nullable=False),
    Column("device_id", Id, nullable=False),  # no FK: see the note above
    Column("reading_type_id", Integer, nullable=False),
    Column("rule", String(100), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("quality", String(20), nullable=False),  # the ReadingQuality code of the finding
    Column("ts", UTCDateTime(), nullable=False),  # the reading, or the first missing interval
    Column("ts_end", UTCDateTime(), nullable=False),  # the last reading / interval
    Column("intervals", Integer, nullable=False),
    Column("value", ExactDecimal()),  # None: missing
    Column("detail", Text, nullable=False),
    Index(None, "run_id", "rule"),
    Index(None, "device_id", "reading_type_id", "ts"),
)
