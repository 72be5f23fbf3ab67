"""Key changes audited into the MDM store's audit log (``amihub keys change --audit
store``): the application's :class:`hes.security.keychange.KeyAudit`."""

from __future__ import annotations

from collections.abc import Sequence

from hes.security.keychange import KeyChangeResult, audit_details
from hub.journal import MessageJournal
from mdm.ports import UnitOfWorkFactory


class StoreKeyAudit:
    """Audit into the MDM store's audit log: the entries of a batch in one transaction."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self.uow_factory = uow_factory

    def record(self, actor: str, action: str, results: Sequence[KeyChangeResult]) -> None:
        if not results:
            return
        with self.uow_factory() as uow:
            for r in results:
                MessageJournal.audit(uow, actor, action, "EndDevice", r.mrid, audit_details(r))
            uow.commit()
