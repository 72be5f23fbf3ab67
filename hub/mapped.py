"""Bodies in another format (CSV, custom XML) through a named inbound mapping, with the
pipeline's bookkeeping: the AMQP ``amihub-mapping`` header uses this. A header naming a
``cim-variant`` mapping marks the body as a CIM message in that vendor's variant: it
goes through :meth:`hub.pipeline.Pipeline.process` normalised (hub/variants.py).

:func:`mapping_importer` returns a callable ``(InboundMessage, mapping name) ->
Outcome`` that applies the body with :mod:`mappings.importer` inside
:meth:`hub.pipeline.Pipeline.process_with`: one transaction, a CIM reply with
one Error per bad line, idempotency on the transport message id, dead letters.
A file with any bad line is refused whole (the mapping's unknown-meter policy
decides whether unknown meters refuse it or are reported and skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import IO

from cim_schemas.errors import ERROR_CODES, ErrorDetail, PayloadInvalid
from hub.messages import InboundMessage, Outcome
from hub.pipeline import Pipeline
from hub.routing import RouteResult
from hub.variants import VARIANT
from mappings.importer import import_stream
from mappings.load import Catalog
from mappings.rows import LineError
from mappings.spec import CimVariantSpec
from mdm.ports import UnitOfWork

MAX_ERRORS = 100


def _detail(error: LineError) -> ErrorDetail:
    code = error.code if error.code in ERROR_CODES else "2013"
    return ErrorDetail(code, str(error), details=error.field)


def mapping_importer(
    pipeline: Pipeline, catalog: Catalog
) -> Callable[[InboundMessage, str], Outcome]:
    def run(msg: InboundMessage, name: str) -> Outcome:
        if isinstance(catalog.specs.get(name), CimVariantSpec):  # a CIM message in a variant
            return pipeline.process(replace(msg, metadata={**msg.metadata, VARIANT: name}))
        spec = catalog.inbound(name)

        def apply(uow: UnitOfWork, source: IO[bytes], utility: str) -> RouteResult:
            result = import_stream(
                uow,
                spec,
                source,
                bus=pipeline.bus,
                utility=utility,
                tables=catalog.tables,
                name=name,
                actor=msg.source,
            )
            errors = [_detail(e) for e in result.all_errors()[:MAX_ERRORS]]
            if not result.applied:
                raise PayloadInvalid(
                    f"{name}: {len(result.all_errors())} error(s); nothing applied",
                    errors=errors or [ErrorDetail("2013", f"{name}: nothing applied")],
                )
            return RouteResult(
                errors=errors,
                applied=result.stats.total,
                counts={
                    "lines": result.lines,
                    "readings": result.readings,
                    "stored": result.stats.stored,
                    "superseded": result.stats.superseded,
                    "unchanged": result.stats.unchanged,
                    "skipped": result.skipped_readings,
                },
            )

        return pipeline.process_with(msg, "MeterReadings", apply)

    return run
