"""The ``amihub-mapping`` header: a non-CIM body (CSV, JSON, custom XML) and the mapping for it.

A message without the header must be a CIM RequestMessage/EventMessage (XML).
A message with it names an inbound mapping spec of mappings/ (``name = ...``
in the spec file):

* a name that is no inbound mapping is refused: FAILED reply 1012, dead-lettered;
* a ``cim-variant`` mapping: the body is a CIM message in that vendor's variant,
  normalised by the pipeline before it is validated (the importer hands it over);
* a known mapping: the body goes to the ``importer``, a callable
  ``(InboundMessage, mapping_name) -> Outcome`` that behaves like
  ``Pipeline.process`` (one transaction with the message log and the stored
  reply, idempotent per source and message id, dead letters on permanent
  failure, ``RecoverableError`` raised for retry): ``hub.bootstrap.amqp_service``
  plugs in :func:`hub.mapped.mapping_importer`. Without an importer (tests), a
  known mapping is refused with 1011.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from cim_schemas.errors import ErrorDetail
from hub.messages import InboundMessage, Outcome

log = logging.getLogger("amihub.amqp")

#: runs a body through a named inbound mapping, like Pipeline.process
MappingImporter = Callable[[InboundMessage, str], Outcome]


class MappingGate:
    """Decides what happens to a message that names a mapping."""

    def __init__(
        self,
        mappings_dir: str | Path | None = None,
        importer: MappingImporter | None = None,
        names: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.mappings_dir = mappings_dir
        self.importer = importer
        self._names_fn = names
        self._names: frozenset[str] | None = None
        self._lock = threading.Lock()

    def known(self) -> frozenset[str]:
        """Names of the inbound mappings (loaded once)."""
        with self._lock:
            if self._names is None:
                self._names = self._names_fn() if self._names_fn else self._load()
            return self._names

    def _load(self) -> frozenset[str]:
        from mappings.load import BUILTIN_DIR, scan_dir
        from mappings.spec import CimVariantSpec, CsvSpec, XmlSpec

        folder = Path(self.mappings_dir) if self.mappings_dir else BUILTIN_DIR
        catalog, problems = scan_dir(folder)
        for problem in problems:
            log.warning("mapping spec problem in %s: %s", folder, problem)
        return frozenset(
            name
            for name, spec in catalog.specs.items()
            if isinstance(spec, CsvSpec | XmlSpec | CimVariantSpec)
        )

    def refusal(self, name: str) -> ErrorDetail | None:
        """Why a message naming ``name`` cannot be imported; None if the importer takes it."""
        if name not in self.known():
            known = ", ".join(sorted(self.known())) or "none"
            return ErrorDetail(
                "1012",
                f"no inbound mapping named {name!r} (header amihub-mapping); known: {known}",
            )
        if self.importer is None:
            return ErrorDetail(
                "1011",
                f"mapping {name!r} exists, but importing message bodies through a mapping "
                "is not available over AMQP in this release; send a CIM message",
            )
        return None

    def run(self, msg: InboundMessage, name: str) -> Outcome:
        assert self.importer is not None
        return self.importer(msg, name)
