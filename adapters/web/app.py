"""The operator interface as one WSGI application (Flask).

::

    /healthz, /readyz, /metrics          monitoring (no credentials; /metrics: [web] metrics_public)
    /api/openapi.json, /api/docs         the API's OpenAPI document and its readable form
    /api/...                             the JSON API (adapters/web/api.py)
    /login, /logout, /, /ui/...          the web UI (adapters/web/ui.py)
    /static/...                          its stylesheet (no script, no chart library)

Who is calling: HTTP Basic, checked as the SOAP front door checks it
(``adapters.soap.auth.Authenticator`` over the ``[[users]]`` directory), or the UI's
session cookie (signed; ``[web] session_secret``) set by ``/login`` with the same
password check. The principal's permissions and utility then rule every operation
(adapters/web/operations.py). A change made with the session cookie needs the
session's CSRF token (a form field, or the ``X-CSRF-Token`` header); a change a
browser sends from another site (``Sec-Fetch-Site: cross-site`` / ``same-site``) is
refused whatever its credentials.

Each request gets an id (``X-Request-ID`` when the caller sends one, else made up),
answered in the response's ``X-Request-ID`` header and bound to the log lines of the
request (hub/logs.py).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

from adapters.soap.auth import AuthenticationFailed, Authenticator
from adapters.web.api import SPEC, BadRequest, api
from adapters.web.context import WebContext, web
from adapters.web.hub_app import HubApp
from adapters.web.observability import HTTP_SECONDS, Exposition, readiness
from adapters.web.operations import Forbidden, NotFound, Operations, Refused
from adapters.web.ui import ui
from cim_schemas.errors import AmihubError, RecoverableError
from hub.logs import action_id, request_id
from hub.security import Principal, UserDirectory
from hub.web_settings import WebSettings
from mdm.views import OperatorViews

log = logging.getLogger("amihub.web")
access_log = logging.getLogger("amihub.web.access")

#: paths anyone may fetch (monitoring, the login form, the stylesheet, the API's document)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login", "/api/openapi.json", "/api/docs"})
SESSION_COOKIE = "amihub_session"


class _CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once (Flask
    builds one, and derives its key, on every request, API calls included)."""

    def __init__(self) -> None:
        self._serializer: URLSafeTimedSerializer | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if self._serializer is None:
            self._serializer = super().get_signing_serializer(app)
        return self._serializer


def create_app(app: HubApp, settings: WebSettings, views: OperatorViews | None = None) -> Flask:
    from adapters.sql.views import SqlOperatorViews

    views = views or SqlOperatorViews(app.engine)
    flask = Flask(__name__, static_folder="static", template_folder="templates")
    flask.session_interface = _CookieSessions()
    secret = settings.session_secret
    flask.secret_key = secret.get_secret_value() if secret else secrets.token_hex(32)
    flask.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.session_max_age),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    users = UserDirectory(app.settings.users)
    flask.extensions["amihub"] = WebContext(
        app=app,
        settings=settings,
        ops=Operations(app, views),
        views=views,
        users=users,
        authenticator=Authenticator(users),
    )
    exposition = Exposition(views, app.settings)
    flask.register_blueprint(api)
    flask.register_blueprint(ui)

    @flask.before_request
    def _start() -> Any:
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")[:100] or uuid.uuid4().hex
        g.request_id = rid
        g.tokens = [(request_id, request_id.set(rid)), (action_id, action_id.set(None))]
        return _authenticate()

    @flask.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_SECONDS.labels(rule, request.method, str(response.status_code)).observe(seconds)
        if web().settings.access_log:
            principal = g.get("principal")
            access_log.info(
                "%s %s %s %s %d %.1fms",
                request.remote_addr,
                principal.name if principal else "-",
                request.method,
                request.full_path.rstrip("?"),
                response.status_code,
                seconds * 1000,
            )
        return response

    @flask.teardown_request
    def _reset(_: BaseException | None) -> None:
        for var, token in reversed(g.get("tokens", [])):
            var.reset(token)

    @flask.errorhandler(Exception)
    def _error(exc: Exception) -> Any:
        return _answer_error(exc)

    @flask.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', mimetype="application/json")

    @flask.get("/readyz")
    def readyz() -> Response:
        import json

        checks = readiness(views, app.settings, app.engine)
        ready = all(v == "ok" for v in checks.values())
        body = json.dumps({"ready": ready, "checks": checks})
        return Response(body, status=200 if ready else 503, mimetype="application/json")

    @flask.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(exposition.render(), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    openapi_json: list[str] = []  # the document's text, written once

    @flask.get("/api/openapi.json")
    def openapi() -> Response:
        import json

        if not openapi_json:
            openapi_json.append(json.dumps(SPEC.document(), indent=1))
        return Response(openapi_json[0], mimetype="application/json")

    @flask.get("/api/docs")
    def docs() -> str:
        return render_template("api_docs.html", doc=SPEC.document())

    return flask


def _authenticate() -> Any:
    ctx = web()
    path = request.path
    if path in OPEN_PATHS or path.startswith("/static/"):
        return None
    if path == "/metrics" and ctx.settings.metrics_public:
        return None
    unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
    if unsafe and request.headers.get("Sec-Fetch-Site", "same-origin") not in (
        "same-origin",
        "none",
    ):
        # a browser sending another site's form or script here: refused whatever the
        # credentials (a browser that once answered the Basic challenge resends them)
        return _json_error(403, "cross-site request refused")
    authorization = request.headers.get("Authorization")
    principal: Principal | None = None
    if authorization:
        try:
            principal = ctx.authenticator.authenticate(None, authorization)
        except AuthenticationFailed as exc:
            _audit_refusal(exc.user, exc.reason)
            return _unauthorised(exc.reason)
    else:
        name = session.get("user")
        if isinstance(name, str):
            principal = ctx.users.principal(name)
        if principal is not None and unsafe:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
            expected = session.get("csrf", "")
            if not sent or not expected or not hmac.compare_digest(str(sent), str(expected)):
                return _json_error(403, "missing or wrong CSRF token")
    if principal is None:
        if path.startswith("/api/") or path == "/metrics":
            return _unauthorised("authentication required: HTTP Basic or a session")
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    g.principal = principal
    return None


def _audit_refusal(user: str | None, reason: str) -> None:
    web().app.message_journal.record_audit(
        user or "unknown", "refused", "WebRequest", request.path, reason
    )


def check_login(name: str, password: str) -> Principal | None:
    principal = web().users.check_password(name, password)
    if principal is None:
        _audit_refusal(name, "invalid user name or password (web login)")
        return None
    session.clear()
    session.permanent = True
    session["user"] = principal.name
    session["csrf"] = secrets.token_urlsafe(32)
    return principal


def _json_error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> Response:
    import json

    body: dict[str, Any] = {"error": message}
    if errors is not None:
        body["errors"] = errors
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _unauthorised(message: str) -> Response:
    response = _json_error(401, message)
    response.headers["WWW-Authenticate"] = 'Basic realm="amihub", charset="UTF-8"'
    return response


def _answer_error(exc: Exception) -> Any:
    status, message, errors = 500, "internal error", None
    if isinstance(exc, HTTPException):
        status, message = exc.code or 500, exc.description or exc.name
    elif isinstance(exc, BadRequest):
        status, message = 400, str(exc)
    elif isinstance(exc, Forbidden):
        status, message = 403, str(exc)
    elif isinstance(exc, NotFound):
        status, message = 404, str(exc)
    elif isinstance(exc, Refused):
        status, message = 422, str(exc)
        errors = [{"code": e.code, "reason": e.reason, "xpath": e.xpath} for e in exc.errors]
    elif isinstance(exc, RecoverableError):
        status, message = 503, f"try again later: {exc}"
    elif isinstance(exc, AmihubError):
        status, message = 422, str(exc)
    else:
        log.exception("web request %s %s failed", request.method, request.path)
    if request.path.startswith("/api/") or request.path in ("/metrics", "/readyz"):
        return _json_error(status, message, errors)
    return (
        render_template("error.html", status=status, message=message, errors=errors or []),
        status,
    )
