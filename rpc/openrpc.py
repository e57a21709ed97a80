"""The OpenRPC 1.3 document, built from schemas/ (nothing about the API is written twice)."""
from __future__ import annotations

import re
from typing import Any, Mapping

import schemas
from methods.base import Method
from methods.errors import ErrorCode

OPENRPC_VERSION = "1.3.2"
ERROR_MESSAGES: dict[int, str] = {
    ErrorCode.INVALID_PARAMS: "Invalid params; data.path and data.schema_path say what failed",
    ErrorCode.UNAUTHORIZED: "No or bad token; wrong password for an existing username",
    ErrorCode.FORBIDDEN: ("Not a member / not the owner; data.reason = banned with data.until, "
                          "or blocked when the other user blocks you"),
    ErrorCode.NOT_FOUND: "No such chat, user, message, scheduled message, file or link",
    ErrorCode.CONFLICT: "Conflicts with current state",
    ErrorCode.TOO_LARGE: "Text or batch too large",
    ErrorCode.TOO_MANY_REQUESTS: "Over the send quota or login throttle; data.retry_after",
}
REF_PREFIX = schemas.DEFS_URI + "#/$defs/"
COMPONENTS_PREFIX = "#/components/schemas/"
EVENT_PREFIX = "event."
# Keywords whose values are schemas (by name, in a list, or one): the ones to rewrite.
INFO_DESCRIPTION = (
    "Long-polling JSON-RPC 2.0 messenger. POST /rpc for calls (single, batch or "
    "notification; params by name), GET /poll for each user's event stream, POST /files and "
    "GET /files/{file_id} for attachments. Authenticate with `Authorization: Bearer <token>` "
    "from session.connect. Event schemas are under components.schemas as `event.<type>`. "
    "Every schema means the same as JSON Schema draft-07 and 2020-12 (no keyword of one "
    "only; a `$ref` with sibling keywords is wrapped in `allOf`). A readable reference is "
    "served at /docs.")


# A Host header a URL can be built from: a DNS name or IPv4 address, or a bracketed IPv6 one.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
                   r"(?::[0-9]{1,5})?")


def server_url(public_url: str | None, scheme: str, host: str, local: str) -> str:
    """The absolute URL of POST /rpc for a client: under --public-url when set, else at the
    host the client asked for (the listening address `local` when that is no usable host)."""
    if public_url:
        return public_url.rstrip("/") + "/rpc"
    return f"{scheme}://{host if _HOST.fullmatch(host) else local}/rpc"


def component_name(ref: str) -> str:
    """The components.schemas key a `$ref` of schemas/ points at."""
    event_type = schemas.event_type_of_ref(ref)
    if event_type is not None:
        return EVENT_PREFIX + event_type
    return ref.removeprefix(REF_PREFIX).removeprefix("#/$defs/")


def to_components(schema: Any) -> Any:
    """A schema of schemas/ with its `$ref`s pointing into components.schemas.

    A `$ref` with sibling keywords becomes `allOf: [{$ref}, ...]` plus the siblings: JSON
    Schema 2020-12 applies both, while draft-07 (which OpenRPC tools assume) would ignore the
    siblings. Values that are data (examples, const, enum, default) are copied as they are.
    """
    if not isinstance(schema, dict):
        return schema
    out = schemas.map_subschemas(schema, to_components, drop=lambda key: key == "$ref")
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return out
    target = {"$ref": COMPONENTS_PREFIX + component_name(ref)}
    if not out:
        return target
    out["allOf"] = [target, *out.get("allOf", [])]
    return out


def _description(schema: schemas.Schema) -> str:
    """A schema's own description, else that of the definition it refers to."""
    if schema.get("description"):
        return str(schema["description"])
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = schemas.defs()["$defs"].get(component_name(ref), {})
        return str(target.get("description", ""))
    return ""


def _params(schema: schemas.Schema) -> list[dict[str, Any]]:
    """By-name params as OpenRPC content descriptors."""
    if "$ref" in schema:
        return []
    required = set(schema.get("required", []))
    return [{"name": name, "required": name in required, "description": _description(prop),
             "schema": to_components(prop)}
            for name, prop in schema.get("properties", {}).items()]


def _errors(codes: list[int]) -> list[dict[str, Any]]:
    """The codes a method can answer: its own, then -32602 (params are schema-checked)."""
    return [{"code": code, "message": ERROR_MESSAGES[code]}
            for code in [*codes, ErrorCode.INVALID_PARAMS]]


def _example(example: dict[str, Any]) -> dict[str, Any]:
    """A schemas/ example as an OpenRPC example pairing."""
    out: dict[str, Any] = {"name": example["name"]}
    if example.get("description"):
        out["description"] = example["description"]
    out["params"] = [{"name": k, "value": v} for k, v in example["params"].items()]
    out["result"] = {"name": "result", "value": example["result"]}
    return out


def build_openrpc(methods: Mapping[str, Method], version: str = "0.1.0") -> dict[str, Any]:
    """The OpenRPC document for the registered methods."""
    out_methods = []
    for name, ms in sorted(schemas.method_schemas().items()):
        if name not in methods:
            continue
        auth = methods[name].auth
        constraints = {k: v for k, v in ms.params.items() if k in ("oneOf", "anyOf")}
        entry: dict[str, Any] = {
            "name": name,
            "summary": ms.summary,
            "description": ms.description + ("" if auth else " No token needed."),
            "tags": [{"name": name.split(".")[0]}],
            "paramStructure": "by-name",
            "params": _params(ms.params),
            "result": {"name": "result", "description": _description(ms.result),
                       "schema": to_components(ms.result)},
            "errors": _errors(ms.errors),
            "examples": [_example(ex) for ex in ms.examples],
            "x-auth": "bearer" if auth else "none",
        }
        if constraints:
            entry["x-params-constraints"] = to_components(constraints)
        out_methods.append(entry)
    # A title names the type in generated clients (else tools invent names from hashes).
    components = {name: {"title": name, **to_components(s)}
                  for name, s in schemas.defs()["$defs"].items()}
    for type_, schema in schemas.event_schemas().items():
        components[EVENT_PREFIX + type_] = to_components(
            {k: v for k, v in schema.items() if k != "$schema"})
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {"title": "Messenger JSON-RPC API", "version": version,
                 "description": INFO_DESCRIPTION},
        # Served with the absolute URL each client reached (server_url); "/rpc" until then.
        "servers": [{"name": "this server", "url": "/rpc",
                     "description": "JSON-RPC 2.0 over HTTP POST."}],
        "methods": out_methods,
        "components": {"schemas": components},
    }
