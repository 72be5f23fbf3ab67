"""The unit of work: one connection, one transaction, every repository on it."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine

from adapters.sql.counters import SqlInvocationCounterRepository
from adapters.sql.errors import guard
from adapters.sql.groups import SqlEndDeviceGroupRepository
from adapters.sql.hes_jobs import SqlHeadEndJobRepository
from adapters.sql.outbox import SqlOutboxRepository
from adapters.sql.readings import DEFAULT_BATCH_SIZE, DIRECT_FROM_ROWS, SqlReadingRepository
from adapters.sql.registry import (
    SqlAuditRepository,
    SqlDeadLetterRepository,
    SqlEndDeviceRepository,
    SqlEventRepository,
    SqlInstallationRepository,
    SqlMessageLogRepository,
    SqlUsagePointRepository,
    SqlUtilityRepository,
)
from adapters.sql.vee import SqlValidationStore
from mdm.groups import EndDeviceGroupRepository
from mdm.hes_jobs import HeadEndJobRepository
from mdm.ports import (
    AuditRepository,
    DeadLetterRepository,
    EndDeviceRepository,
    EventRepository,
    InstallationRepository,
    MessageLogRepository,
    OutboxRepository,
    ReadingRepository,
    UnitOfWork,
    UnitOfWorkFactory,
    UsagePointRepository,
    UtilityRepository,
)
from mdm.security_counters import InvocationCounterRepository
from mdm.vee.ports import ValidationStore


class SqlUnitOfWork:
    """``with uow:`` opens a connection and a transaction; leaving the block rolls
    back whatever was not committed. :meth:`commit` may be called more than once:
    the next statement starts a new transaction on the same connection."""

    def __init__(
        self,
        engine: Engine,
        *,
        staging_batch_size: int = DEFAULT_BATCH_SIZE,
        read_only: bool = False,
        direct_from_rows: int | None = DIRECT_FROM_ROWS,
    ) -> None:
        self.engine = engine
        #: nothing to commit; on PostgreSQL each statement on its own (autocommit), no
        #: transaction to begin and roll back; on SQLite an ordinary one (rolled back)
        self.read_only = read_only
        self._autocommit = read_only and engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._staging_number = 0
        self.transaction_number = 0  # bumped by commit / rollback
        self._readings = SqlReadingRepository(self, staging_batch_size, direct_from_rows)
        self.utilities: UtilityRepository = SqlUtilityRepository(self)
        self.usage_points: UsagePointRepository = SqlUsagePointRepository(self)
        self.devices: EndDeviceRepository = SqlEndDeviceRepository(self)
        self.installations: InstallationRepository = SqlInstallationRepository(self)
        self.readings: ReadingRepository = self._readings
        self.events: EventRepository = SqlEventRepository(self)
        self.messages: MessageLogRepository = SqlMessageLogRepository(self)
        self.dead_letters: DeadLetterRepository = SqlDeadLetterRepository(self)
        self.audit: AuditRepository = SqlAuditRepository(self)
        self.outbox: OutboxRepository = SqlOutboxRepository(self)
        self.hes_jobs: HeadEndJobRepository = SqlHeadEndJobRepository(self)
        self.end_device_groups: EndDeviceGroupRepository = SqlEndDeviceGroupRepository(self)
        self.invocation_counters: InvocationCounterRepository = SqlInvocationCounterRepository(self)
        self.vee: ValidationStore = SqlValidationStore(self)

    def next_staging_number(self) -> int:
        """Temp table names are unique within a unit of work and reused across them
        (so the driver's statement caches hit)."""
        self._staging_number += 1
        return self._staging_number

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._conn

    def __enter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("the unit of work is already open")
        with guard():
            conn = self.engine.connect()
            try:
                if self._autocommit:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                else:
                    conn.begin()
            except BaseException:
                conn.close()
                raise
        self._conn = conn
        self._staging_number = 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._readings.forget()
        try:
            if conn.in_transaction():
                conn.rollback()
        except Exception:
            if exc is None:
                with guard():
                    raise
        finally:
            conn.close()

    def commit(self) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        self.transaction_number += 1
        try:
            with guard():
                self.connection.commit()
        except BaseException:
            self._readings.forget()  # nothing of this transaction may be remembered
            raise
        self._readings.committed()

    def rollback(self) -> None:
        self.transaction_number += 1
        self._readings.forget()
        with guard():
            self.connection.rollback()


class SqlUnitOfWorkFactory:
    """``factory()`` -> a new :class:`SqlUnitOfWork` on the shared engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        staging_batch_size: int = DEFAULT_BATCH_SIZE,
        direct_from_rows: int | None = DIRECT_FROM_ROWS,
    ) -> None:
        self.engine = engine
        self.staging_batch_size = staging_batch_size
        #: PostgreSQL: readings of a feed larger than this try the direct path first
        #: (adapters/sql/ingest.py); None: the staged path only (tests compare the two)
        self.direct_from_rows = direct_from_rows

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(
            self.engine,
            staging_batch_size=self.staging_batch_size,
            direct_from_rows=self.direct_from_rows,
        )

    def read_only(self) -> SqlUnitOfWork:
        """A unit of work that only reads, one statement at a time: on PostgreSQL in
        autocommit (no BEGIN and ROLLBACK round trips; no snapshot across statements,
        and no server-side cursor, so no streamed ``query``)."""
        return SqlUnitOfWork(self.engine, read_only=True)


def _conforms(engine: Engine) -> tuple[UnitOfWork, UnitOfWorkFactory]:
    """Never called: mypy checks here that the classes satisfy the ports."""
    return SqlUnitOfWork(engine), SqlUnitOfWorkFactory(engine)
