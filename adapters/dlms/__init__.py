"""The hub's head-end port (``hub.headend.HeadEnd``) on amihub's DLMS/COSEM head-end ``hes``.

Public API::

    from adapters.dlms import DlmsHeadEnd, MeterDirectory, headend_from_settings

See docs/controls.md.
"""

from adapters.dlms.directory import MeterDirectory
from adapters.dlms.headend import (
    DlmsHeadEnd,
    directory_from_settings,
    headend_from_settings,
)

__all__ = [
    "DlmsHeadEnd",
    "MeterDirectory",
    "directory_from_settings",
    "headend_from_settings",
]
