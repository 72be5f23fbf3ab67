"""The meter data store on SQLAlchemy Core: SQLite (embedded default) and PostgreSQL.

Public API::

    from adapters.sql import make_engine, upgrade, SqlUnitOfWorkFactory

    engine = make_engine("sqlite:///var/amihub.db")   # or postgresql://...
    upgrade(engine)                                    # Alembic, programmatically
    uow_factory = SqlUnitOfWorkFactory(engine)         # mdm.ports.UnitOfWorkFactory
    with uow_factory() as uow:
        ...
        uow.commit()

See docs/store.md.
"""

from adapters.sql.engine import make_engine, normalise_url
from adapters.sql.migrate import current_revision, head_revision, upgrade
from adapters.sql.readings import SqlReadingRepository
from adapters.sql.uow import SqlUnitOfWork, SqlUnitOfWorkFactory

__all__ = [
    "SqlReadingRepository",
    "SqlUnitOfWork",
    "SqlUnitOfWorkFactory",
    "current_revision",
    "head_revision",
    "make_engine",
    "normalise_url",
    "upgrade",
]
