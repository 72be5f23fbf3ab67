"""SFTP file exchange with legacy systems: embedded server, inbox watcher, outbound push.

Public API::

    from adapters.sftp import (SftpServer, SftpServerConfig, PartnerAccount, AuthEvent,
                               hash_password, UploadRegistry, InboxWatcher, import_handler,
                               cim_handler,
                               push_file, PushTarget, RetryPolicy,
                               SftpService, SftpSettings, SftpPartnerSettings)

See docs/sftp.md.
"""

from adapters.sftp.client import PushReceipt, PushTarget, RetryPolicy, push_file
from adapters.sftp.inbox import (
    InboxFile,
    InboxWatcher,
    Outcome,
    Processed,
    cim_handler,
    import_handler,
)
from adapters.sftp.server import (
    AuthEvent,
    PartnerAccount,
    SftpServer,
    SftpServerConfig,
    UploadRegistry,
    hash_password,
)
from adapters.sftp.service import SftpService
from hub.settings import SftpPartnerSettings, SftpSettings

__all__ = [
    "AuthEvent",
    "InboxFile",
    "InboxWatcher",
    "Outcome",
    "PartnerAccount",
    "Processed",
    "PushReceipt",
    "PushTarget",
    "RetryPolicy",
    "SftpPartnerSettings",
    "SftpServer",
    "SftpServerConfig",
    "SftpService",
    "SftpSettings",
    "UploadRegistry",
    "cim_handler",
    "hash_password",
    "import_handler",
    "push_file",
]
