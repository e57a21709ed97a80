"""The OpenRPC 1.3 document, built from schemas/ (nothing about the API is written twice)."""
from __future__ import annotations

from typing import Any, Mapping

import schemas
from methods.base import Method
from methods.errors import ErrorCode

ERROR_MESSAGES: dict[int, str] = {
    ErrorCode.UNAUTHORIZED: "No or bad token; wrong password for an existing username",
    ErrorCode.FORBIDDEN: "Not a member / not the owner; data.reason = banned with data.until",
    ErrorCode.NOT_FOUND: "No such chat, user, message, scheduled message, file or link",
    ErrorCode.CONFLICT: "Conflicts with current state",
    ErrorCode.TOO_LARGE: "Text or batch too large",
    ErrorCode.TOO_MANY_REQUESTS: "Over the send quota or login throttle; data.retry_after",
}
REF_PREFIX = schemas.DEFS_URI + "#/$defs/"


def to_components(node: Any) -> Any:
    """Rewrite `defs.json#/$defs/X` (and defs-internal `#/$defs/X`) to components refs."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.removeprefix(REF_PREFIX).removeprefix("#/$defs/")
                out[key] = f"#/components/schemas/{name}"
            else:
                out[key] = to_components(value)
        return out
    if isinstance(node, list):
        return [to_components(v) for v in node]
    return node


def _params(schema: schemas.Schema) -> list[dict[str, Any]]:
    """By-name params as OpenRPC content descriptors."""
    if "$ref" in schema:
        return []
    required = set(schema.get("required", []))
    return [{"name": name, "required": name in required,
             "description": prop.get("description", ""),
             "schema": to_components(prop)}
            for name, prop in schema.get("properties", {}).items()]


def build_openrpc(methods: Mapping[str, Method], version: str = "0.1.0") -> dict[str, Any]:
    """The OpenRPC document for the registered methods."""
    out_methods = []
    for name, ms in sorted(schemas.method_schemas().items()):
        if name not in methods:
            continue
        constraints = {k: v for k, v in ms.params.items() if k in ("oneOf", "anyOf")}
        entry: dict[str, Any] = {
            "name": name,
            "summary": ms.summary,
            "description": ms.description + ("" if methods[name].auth
                                             else " No token needed."),
            "paramStructure": "by-name",
            "params": _params(ms.params),
            "result": {"name": "result", "schema": to_components(ms.result)},
            "errors": [{"code": code, "message": ERROR_MESSAGES[code]} for code in ms.errors],
            "examples": [{
                "name": ex["name"],
                "params": [{"name": k, "value": v} for k, v in ex["params"].items()],
                "result": {"name": "result", "value": ex["result"]},
            } for ex in ms.examples],
        }
        if constraints:
            entry["x-params-constraints"] = to_components(constraints)
        out_methods.append(entry)
    components = {name: to_components(s) for name, s in schemas.defs()["$defs"].items()}
    for type_, schema in schemas.event_schemas().items():
        components[f"event.{type_}"] = to_components(
            {k: v for k, v in schema.items() if k != "$schema"})
    return {
        "openrpc": "1.3.2",
        "info": {"title": "Messenger JSON-RPC API", "version": version,
                 "description": "Long-polling JSON-RPC 2.0 messenger. POST /rpc for calls, "
                                "GET /poll for events; see /docs."},
        "servers": [{"name": "this server", "url": "/rpc"}],
        "methods": out_methods,
        "components": {"schemas": components},
    }
