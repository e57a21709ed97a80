"""JSON-RPC 2.0 as a pipeline of small functions: parse, envelope, find, auth, validate, call."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from methods import errors
from methods.auth import authenticate
from methods.base import Method, PublicMethod, UserMethod
from methods.context import Request, Services
from methods.logsafe import RateLimitedLog, clean
from rpc.budget import BodyBudget
from rpc.exactjson import ID_TYPES, loads_exact, needs_exact_ids
from rpc.validation import ParamsValidator
from store.base import StoreError

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
        exact = needs_exact_ids(payload)
    except orjson.JSONDecodeError as exc:
        # A number beyond a double's range may be an id, which is echoed as written.
        if "infinity" not in str(exc):
            raise errors.parse_error(str(exc)) from None
        exact = True
    if exact:
        try:
            payload = loads_exact(body)
        except ValueError as exc:
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
    if req_id is not _MISSING and not (req_id is None or isinstance(req_id, ID_TYPES)
                                       ) or isinstance(req_id, bool):
        raise errors.invalid_request('"id" must be a string, a number or null')
    extra = set(item) - {"jsonrpc", "method", "params", "id"}
    if extra:
        name = orjson.dumps(sorted(extra)[0]).decode()
        raise errors.invalid_request(f"unexpected member {name}")
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
        if isinstance(rid, ID_TYPES) and not isinstance(rid, bool):
            return rid
    return None


def _is_notification(item: object) -> bool:
    """Whether a batch item is a well-formed notification (it gets no answer)."""
    try:
        return envelope(item).is_notification
    except errors.RpcError:
        return False


def error_response(err: errors.RpcError, req_id: object) -> Json:
    """A JSON-RPC error response object."""
    return {"jsonrpc": "2.0", "error": err.to_dict(), "id": req_id}


class Dispatcher:
    """Runs JSON-RPC payloads against the method registry; knows nothing about HTTP."""

    def __init__(self, methods: Mapping[str, Method], params_schemas: Mapping[str, Json],
                 services: Services, max_batch: int,
                 max_response: int = 4 * 1024 * 1024) -> None:
        self.methods = methods
        self.validators = {name: ParamsValidator(params_schemas[name]) for name in methods}
        self.services = services
        self.max_batch = max_batch
        self.max_response = max_response
        # Rejected input is logged at WARNING, but a flood of it writes a bounded log.
        self.warn = RateLimitedLog(log)
        # Bytes of batch answers being built, all requests together (None: unbounded).
        self.memory: BodyBudget | None = None

    async def handle(self, body: bytes, token: str | None,
                     request: Request) -> Json | list[Json] | None:
        """The response to a body: one object, a list (batch), or None (notifications only)."""
        answer = await self.answer(body, token, request)
        return None if answer is None else orjson.loads(answer)

    async def answer(self, body: bytes, token: str | None, request: Request) -> bytes | None:
        """The serialized response to a body (None: notifications only), within --max-response.

        Each answer is serialized as soon as it is produced, so one request never holds much
        more than the budget in memory.
        """
        try:
            payload = parse(body)
        except errors.RpcError as err:
            self.warn.warning("unparsable", "rejected unparsable request from %s: %s",
                              clean(request.remote), clean(err.data))
            return orjson.dumps(error_response(err, None))
        if isinstance(payload, list):
            if not payload:
                return orjson.dumps(error_response(errors.invalid_request("empty batch"), None))
            if len(payload) > self.max_batch:
                self.warn.warning("batch", "rejected batch of %d from %s", len(payload),
                                  clean(request.remote))
                return orjson.dumps(error_response(errors.too_large(
                    f"batch longer than {self.max_batch} requests", max_batch=self.max_batch),
                    None))
            return await self._batch(payload, token, request)
        answer = await self.one(payload, token, request)
        if answer is None:
            return None
        out = orjson.dumps(answer)
        return out if len(out) <= self.max_response else self._over_budget(answer["id"], False)

    def _over_budget(self, req_id: object, skipped: bool) -> bytes:
        """The 413 answer of a call whose answer does not fit the response budget."""
        message = ("response budget used up by earlier answers; not run" if skipped
                   else "answer larger than the response budget")
        return orjson.dumps(error_response(
            errors.too_large(message, max_response=self.max_response), req_id))

    async def _batch(self, items: list[object], token: str | None,
                     request: Request) -> bytes | None:
        """A batch's answers within one budget, room kept for a 413 of every later item.

        Once an answer does not fit, the budget counts as used up: later calls answer 413
        without running (so nothing is done whose answer would be thrown away).
        """
        answered = [not _is_notification(item) for item in items]
        reserve = [len(self._over_budget(_id_of(item), True)) + 1 if a else 0
                   for item, a in zip(items, answered)]
        pending = sum(reserve)
        used = 2  # the brackets
        parts: list[bytes] = []
        exhausted = False
        held = 0  # bytes reserved in self.memory
        try:
            for item, will_answer, kept in zip(items, answered, reserve):
                pending -= kept
                if exhausted and will_answer:
                    part: bytes | None = self._over_budget(_id_of(item), True)
                else:
                    request.response_budget = self.max_response - used - pending
                    try:
                        answer = await self.one(item, token, request)
                    finally:
                        request.response_budget = None
                    part = None if answer is None else orjson.dumps(answer)
                    if part is not None and used + len(part) + 1 + pending > self.max_response:
                        exhausted = True
                        part = self._over_budget(_id_of(item), False)
                    elif part is not None and not self._hold(len(part), request):
                        exhausted = True
                        part = orjson.dumps(error_response(errors.unavailable(
                            "server busy building other answers; try again", 1),
                            _id_of(item)))
                    elif part is not None:
                        held += len(part)
                    await asyncio.sleep(0)  # let other clients in between a batch's calls
                if part is not None:
                    parts.append(part)
                    used += len(part) + 1
            if exhausted:
                self.warn.warning("response", "answer of a batch from %s over %d bytes",
                                  clean(request.remote), self.max_response)
            return b"[" + b",".join(parts) + b"]" if parts else None
        finally:
            if held and self.memory is not None:
                self.memory.release(held)

    def _hold(self, size: int, request: Request) -> bool:
        """Reserve `size` bytes of answers being built (False: busy; the caller drops the
        answer at once, so batches over the budget never hold their answers)."""
        if self.memory is None or size < 16 * 1024:
            return True  # small answers are not worth counting
        if self.memory.try_acquire(size):
            return True
        self.warn.warning("busy", "answers being built fill memory: a batch of %s cut short",
                          clean(request.remote))
        return False

    async def one(self, item: object, token: str | None, request: Request) -> Json | None:
        """Answer one request object (None for a notification)."""
        try:
            call = envelope(item)
        except errors.RpcError as err:
            self.warn.warning("envelope", "rejected request from %s: %s",
                              clean(request.remote), clean(err.data))
            return error_response(err, _id_of(item))
        started = time.perf_counter()
        try:
            result = await self.invoke(call, token, request)
        except errors.RpcError as err:
            if int(err.code) in (404, 409):
                log.debug("%s from %s: %d %s", clean(call.method), clean(request.remote),
                          err.code, clean(err.message))
            else:
                self.warn.warning(f"error {int(err.code)}", "%s from %s: %d %s",
                                  clean(call.method), clean(request.remote), err.code,
                                  clean(err.message))
            return None if call.is_notification else error_response(err, call.id)
        except StoreError as exc:  # the store's health log says it once, not per call
            log.debug("%s: %s", clean(call.method), exc)
            return None if call.is_notification else error_response(errors.from_store(exc),
                                                                    call.id)
        except Exception:
            log.exception("internal error in %s", clean(call.method))
            return None if call.is_notification else error_response(errors.internal_error(),
                                                                    call.id)
        log.debug("%s ok in %.1f ms", call.method, (time.perf_counter() - started) * 1000)
        return None if call.is_notification else {"jsonrpc": "2.0", "result": result,
                                                  "id": call.id}

    async def invoke(self, call: Call, token: str | None, request: Request) -> Json:
        """Find, authenticate, validate and run one call.

        Params that passed their schema are the method's typed params (hence `Any`).
        """
        method = self.methods.get(call.method)
        if isinstance(method, UserMethod):
            caller = await authenticate(self.services, token)
            self.validators[call.method].check(call.params)
            params: Any = call.params
            return await method.call(self.services, caller, params, request)
        if isinstance(method, PublicMethod):
            self.validators[call.method].check(call.params)
            return await method.call(self.services, call.params, request)
        raise errors.method_not_found(call.method)
