"""What the web server's views share: the app, the settings, the operations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import current_app

from adapters.soap.auth import Authenticator
from adapters.web.hub_app import HubApp
from adapters.web.operations import Operations
from hub.security import UserDirectory
from hub.web_settings import WebSettings
from mdm.views import OperatorViews


@dataclass
class WebContext:
    app: HubApp
    settings: WebSettings
    ops: Operations
    views: OperatorViews
    users: UserDirectory
    #: HTTP Basic checked exactly as the SOAP front door checks it
    authenticator: Authenticator


def web() -> WebContext:
    return cast(WebContext, current_app.extensions["amihub"])
