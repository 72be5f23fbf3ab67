"""CIM variants by name, for the pipeline: a vendor's deviations undone before validation.

A source names the ``cim-variant`` mapping (docs/mappings.md) its CIM messages
follow: an SFTP partner's ``mapping``, the AMQP header ``amihub-mapping``, a
user's ``cim_variant`` (SOAP and AMQP senders). The pipeline asks
:class:`CimVariants` for the normaliser of that name and applies it to the
parsed tree before the XSD sees it. The specs are read from the configured
mapping folders at first use (nothing is read at import or bootstrap).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cim_schemas.errors import UnknownMapping

if TYPE_CHECKING:
    from lxml import etree

    from hub.settings import Settings
    from mappings.spec import CimVariantSpec

log = logging.getLogger(__name__)

#: InboundMessage.metadata key naming the CIM variant of the input (set by an adapter)
VARIANT = "cim-variant"

#: the tree of a parsed message -> number of changes (mappings.cim_variant.normalise)
Normaliser = Callable[["etree._ElementTree"], int]


class CimVariants:
    """``cim-variant`` specs of the configured mapping folders (the first folder naming
    one wins; None = the shipped specs), looked up by name."""

    def __init__(self, folders: Sequence[str | Path | None]) -> None:
        self._folders = list(dict.fromkeys(folders)) or [None]
        self._specs: dict[str, CimVariantSpec] | None = None
        self._lock = threading.Lock()

    def specs(self) -> dict[str, CimVariantSpec]:
        with self._lock:
            if self._specs is None:
                self._specs = self._load()
            return self._specs

    def _load(self) -> dict[str, CimVariantSpec]:
        from mappings.load import BUILTIN_DIR, scan_dir
        from mappings.spec import CimVariantSpec

        out: dict[str, CimVariantSpec] = {}
        for folder in self._folders:
            where = Path(folder) if folder else BUILTIN_DIR
            catalog, problems = scan_dir(where)
            for problem in problems:
                log.warning("mapping spec problem in %s: %s", where, problem)
            for name, spec in catalog.specs.items():
                if isinstance(spec, CimVariantSpec):
                    out.setdefault(name, spec)
        return out

    def __call__(self, name: str) -> Normaliser:
        """The normaliser of the variant ``name``; :class:`UnknownMapping` (1012) if no
        configured folder has a ``cim-variant`` of that name."""
        from mappings.cim_variant import normalise

        spec = self.specs().get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs())) or "none"
            raise UnknownMapping(f"no CIM variant named {name!r}; known: {known}")
        return functools.partial(normalise, spec)


def cim_variants(settings: Settings) -> CimVariants:
    """The variants of every mapping folder the settings name (top level, AMQP, SFTP)."""
    return CimVariants(
        [settings.mappings_dir, settings.amqp.mappings_dir, settings.sftp.mappings_dir]
    )
