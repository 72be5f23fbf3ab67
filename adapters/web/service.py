"""``amihub serve`` with ``[web] enabled = true``: the operator interface on cheroot.

The composition root builds it (``hub.bootstrap.web_service``, which
:data:`hub.serve.SERVICE_ALIASES` names).

A server of its own (``[web] host``/``port``, ``threads``), beside the SOAP services:
the operators' UI, the JSON API and monitoring live on a port partners never see, with
their own TLS certificate and proxy rules; cheroot is the WSGI server SOAP already
runs on, so nothing new serves HTTP.
"""

from __future__ import annotations

import logging
import threading

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from adapters.web.app import create_app
from adapters.web.hub_app import HubApp
from cim_schemas.errors import ConfigurationError
from hub.web_settings import WebSettings

log = logging.getLogger("amihub.web")


class WebService:
    name = "web"

    def __init__(self, app: HubApp, settings: WebSettings | None = None) -> None:
        self.app = app
        self.settings = s = settings or app.settings.web
        if (s.tls_cert is None) != (s.tls_key is None):
            raise ConfigurationError("[web] needs both tls_cert and tls_key, or neither")
        if s.session_secret is None:
            log.warning(
                "[web] session_secret is not set: browser sessions end when this process "
                "restarts and are not shared with other serve processes"
            )
        self.wsgi = create_app(app, s)
        self.server = wsgi.Server(
            (s.host, s.port),
            self.wsgi,
            numthreads=s.threads,
            timeout=int(max(1, s.socket_timeout)),
            server_name="amihub-web",
            # several serve processes of one host may share a fixed port (SO_REUSEPORT;
            # `amihub serve --workers N`): the kernel spreads connections over them
            reuse_port=s.port != 0,
        )
        if s.tls_cert is not None and s.tls_key is not None:
            self.server.ssl_adapter = BuiltinSSLAdapter(str(s.tls_cert), str(s.tls_key))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.server.ssl_adapter is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def start(self) -> None:
        self.server.prepare()
        self._thread = threading.Thread(target=self.server.serve, name="web-server", daemon=True)
        self._thread.start()
        log.info("operator interface at %s/ (API docs %s/api/docs)", self.url, self.url)

    def stop(self) -> None:
        self.server.stop()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
