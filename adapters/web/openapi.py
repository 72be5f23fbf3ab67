"""The OpenAPI 3.1 document of the JSON API, built from the routes as they are declared.

Each API route is declared once, with one decorator (:meth:`ApiSpec.route`): its path
(in OpenAPI's form, ``/api/meters/{mrid}``), method, summary, the permission it needs,
its parameters and its pydantic response (and body) model. That decorator registers
both the Flask view on the blueprint (the rule derived from the path: ``{mrid}`` ->
``<mrid>``, an integer path parameter -> ``<int:id>``) and its entry in the document,
so the document cannot describe a route that is not there nor miss one that is; the
models' JSON Schemas come from pydantic. The document is built once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint
from pydantic import BaseModel

OPENAPI_VERSION = "3.1.0"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query"
    description: str
    required: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass
class Operation:
    path: str  # OpenAPI form: /api/meters/{mrid}
    method: str
    summary: str
    permission: str | None
    params: list[Param]
    response: type[BaseModel] | None
    body: type[BaseModel] | None
    status: int
    tag: str


_PATH_PARAM = re.compile(r"\{(\w+)\}")


class ApiSpec:
    def __init__(self, blueprint: Blueprint, title: str, version: str, description: str) -> None:
        self.blueprint = blueprint
        self.title = title
        self.version = version
        self.description = description
        self.operations: list[Operation] = []
        self._document: dict[str, Any] | None = None

    def flask_rule(self, path: str, params: tuple[Param, ...]) -> str:
        """The blueprint's rule of an OpenAPI path (without the blueprint's prefix)."""
        prefix = self.blueprint.url_prefix or ""
        if not path.startswith(prefix + "/"):
            raise ValueError(f"API path {path!r} is not under the blueprint's {prefix!r}")
        integers = {
            p.name for p in params if p.where == "path" and p.schema.get("type") == "integer"
        }
        declared = {p.name for p in params if p.where == "path"}
        for name in _PATH_PARAM.findall(path):
            if name not in declared:
                raise ValueError(f"API path {path!r}: path parameter {name!r} is not declared")

        def convert(match: re.Match[str]) -> str:
            name = match.group(1)
            return f"<int:{name}>" if name in integers else f"<{name}>"

        return _PATH_PARAM.sub(convert, path[len(prefix) :])

    def route(
        self,
        path: str,
        method: str,
        *,
        summary: str,
        tag: str,
        permission: str | None = None,
        params: tuple[Param, ...] = (),
        response: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        status: int = 200,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        rule = self.flask_rule(path, params)

        def register(view: Callable[..., Any]) -> Callable[..., Any]:
            self.blueprint.add_url_rule(rule, view_func=view, methods=[method.upper()])
            self._document = None
            self.operations.append(
                Operation(
                    path,
                    method.lower(),
                    summary,
                    permission,
                    list(params),
                    response,
                    body,
                    status,
                    tag,
                )
            )
            return view

        return register

    def document(self) -> dict[str, Any]:
        """The OpenAPI document (built on first use: the routes are declared at import)."""
        if self._document is None:
            self._document = self._build()
        return self._document

    def _build(self) -> dict[str, Any]:
        schemas: dict[str, Any] = {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "reason": {"type": "string"},
                                "xpath": {"type": ["string", "null"]},
                            },
                        },
                    },
                },
                "required": ["error"],
            }
        }
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            entry: dict[str, Any] = {
                "summary": op.summary,
                "tags": [op.tag],
                "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_')}".replace(
                    "{", ""
                ).replace("}", ""),
                "parameters": [
                    {
                        "name": p.name,
                        "in": p.where,
                        "required": p.required or p.where == "path",
                        "description": p.description,
                        "schema": p.schema,
                    }
                    for p in op.params
                ],
                "responses": {},
            }
            if op.permission:
                entry["description"] = f"Needs the permission `{op.permission}`."
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": self._ref(op.response, schemas)}}
            entry["responses"][str(op.status)] = ok
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            for code, text in (
                ("401", "no or wrong credentials"),
                ("403", "the user's permissions do not allow it"),
                ("404", "no such object in the user's utility"),
            ):
                entry["responses"][code] = {"description": text, "content": error}
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": self._ref(op.body, schemas)}},
                }
                entry["responses"]["422"] = {
                    "description": "the request was refused (the hub's errors)",
                    "content": error,
                }
            paths.setdefault(op.path, {})[op.method] = entry
        return {
            "openapi": OPENAPI_VERSION,
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "basic": {"type": "http", "scheme": "basic"},
                    "session": {"type": "apiKey", "in": "cookie", "name": "amihub_session"},
                },
            },
            "security": [{"basic": []}, {"session": []}],
        }

    @staticmethod
    def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}
