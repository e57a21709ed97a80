"""JSON-RPC 2.0 as a pipeline of small functions: parse, envelope, find, auth, validate, call."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from methods import errors
from methods.auth import authenticate
from methods.base import Method
from methods.context import Caller, Request, Services
from rpc.validation import ParamsValidator

log = logging.getLogger(__name__)

Json = dict[str, Any]
_MISSING = object()


@dataclass(frozen=True)
class Call:
    """A well-formed request: method, params, and its id (absent for a notification)."""

    method: str
    params: Json
    id: object
    is_notification: bool


MAX_DEPTH = 32


def parse(body: bytes) -> object:
    """Decode the body, or raise -32700 (-32600 when nested deeper than any request needs)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.parse_error(str(exc)) from None
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise errors.invalid_request(f"JSON nested deeper than {MAX_DEPTH} levels")
    return payload


def _depth(node: object) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(node, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in value)
    return deepest


def envelope(item: object) -> Call:
    """Check one request object's envelope, or raise -32600."""
    if not isinstance(item, dict):
        raise errors.invalid_request("a request must be a JSON object")
    if item.get("jsonrpc") != "2.0":
        raise errors.invalid_request('"jsonrpc" must be exactly "2.0"')
    method = item.get("method")
    if not isinstance(method, str):
        raise errors.invalid_request('"method" must be a string')
    req_id = item.get("id", _MISSING)
    if req_id is not _MISSING and not (req_id is None or isinstance(req_id, (str, int, float))
                                       ) or isinstance(req_id, bool):
        raise errors.invalid_request('"id" must be a string, a number or null')
    extra = set(item) - {"jsonrpc", "method", "params", "id"}
    if extra:
        raise errors.invalid_request(f"unexpected member {sorted(extra)[0]!r}")
    params = item.get("params", {})
    if isinstance(params, list):
        if params:
            raise errors.invalid_params("params must be passed by name (an object)", "")
        params = {}
    if not isinstance(params, dict):
        raise errors.invalid_request('"params" must be an object or an array')
    return Call(method, params, None if req_id is _MISSING else req_id, req_id is _MISSING)


def _id_of(item: object) -> object:
    """The id to answer an invalid request with (null when it cannot be read)."""
    if isinstance(item, dict):
        rid = item.get("id")
        if isinstance(rid, (str, int, float)) and not isinstance(rid, bool):
            return rid
    return None


def error_response(err: errors.RpcError, req_id: object) -> Json:
    """A JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "error": err.to_dict(), "id": req_id}


class Dispatcher:
    """Runs JSON-RPC payloads against the method registry; knows nothing about HTTP."""

    def __init__(self, methods: dict[str, Method], params_schemas: dict[str, Json],
                 services: Services, max_batch: int) -> None:
        self.methods = methods
        self.validators = {name: ParamsValidator(params_schemas[name]) for name in methods}
        self.services = services
        self.max_batch = max_batch

    async def handle(self, body: bytes, token: str | None,
                     request: Request) -> Json | list[Json] | None:
        """The response to a body: one object, a list (batch), or None (notifications only)."""
        try:
            payload = parse(body)
        except errors.RpcError as err:
            log.warning("rejected unparsable request from %s: %s", request.remote, err.data)
            return error_response(err, None)
        if isinstance(payload, list):
            if not payload:
                return error_response(errors.invalid_request("empty batch"), None)
            if len(payload) > self.max_batch:
                log.warning("rejected batch of %d from %s", len(payload), request.remote)
                return error_response(errors.too_large(
                    f"batch longer than {self.max_batch} requests", max_batch=self.max_batch),
                    None)
            responses = [r for r in [await self.one(item, token, request) for item in payload]
                         if r is not None]
            return responses or None
        return await self.one(payload, token, request)

    async def one(self, item: object, token: str | None, request: Request) -> Json | None:
        """Answer one request object (None for a notification)."""
        try:
            call = envelope(item)
        except errors.RpcError as err:
            log.warning("rejected request from %s: %s", request.remote, err.data)
            return error_response(err, _id_of(item))
        started = time.perf_counter()
        try:
            result = await self.invoke(call, token, request)
        except errors.RpcError as err:
            level = logging.DEBUG if int(err.code) in (404, 409) else logging.WARNING
            log.log(level, "%s from %s: %d %s", call.method, request.remote, err.code,
                    err.message)
            return None if call.is_notification else error_response(err, call.id)
        except Exception:
            log.exception("internal error in %s", call.method)
            return None if call.is_notification else error_response(errors.internal_error(),
                                                                    call.id)
        log.debug("%s ok in %.1f ms", call.method, (time.perf_counter() - started) * 1000)
        return None if call.is_notification else {"jsonrpc": "2.0", "result": result,
                                                  "id": call.id}

    async def invoke(self, call: Call, token: str | None, request: Request) -> Json:
        """Find, authenticate, validate and run one call."""
        method = self.methods.get(call.method)
        if method is None:
            raise errors.method_not_found(call.method)
        caller: Caller | None = None
        if method.auth:
            caller = await authenticate(self.services, token)
        self.validators[call.method].check(call.params)
        return await method.call(self.services, caller, call.params, request)
