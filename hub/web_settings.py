"""``[web]``: the operator interface (adapters/web): JSON API, web UI, metrics, health.

A server of its own beside the SOAP services (its own port and threads): operators
and monitoring reach it from inside, partners reach SOAP, and each can be put behind
its own firewall rule, proxy and TLS certificate (docs/deploy.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class WebSettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    #: worker threads of the WSGI server (one per concurrent request)
    threads: int = Field(default=8, gt=0)
    #: seconds a connection may stay silent
    socket_timeout: float = Field(default=30.0, gt=0)
    #: HTTPS: PEM certificate (chain) and private key; both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: signs the browser's session cookie; every serve process behind one load balancer
    #: needs the same (AMIHUB_WEB__SESSION_SECRET). None: a random one per process
    #: (sessions end when it restarts)
    session_secret: SecretStr | None = None
    #: seconds a browser session lasts
    session_max_age: int = Field(default=8 * 3600, gt=0)
    #: set the session cookie's Secure flag (the UI is served over HTTPS, maybe by a proxy)
    secure_cookies: bool = False
    #: /metrics without credentials (Prometheus scrapes it; keep the port internal)
    metrics_public: bool = True
    #: largest JSON request body (bytes)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: most readings one API call returns (a longer period is refused with 400)
    max_readings: int = Field(default=200_000, gt=0)
    #: log every request (remote, user, method, path, status, ms) to amihub.web.access
    access_log: bool = True
