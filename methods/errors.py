"""Error codes and the exceptions that carry them; the dispatcher renders them in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from store.base import DiskFull, StoreError, StoreUnavailable


class ErrorCode(IntEnum):
    """Every error code a client can see (JSON-RPC 2.0 codes, then HTTP-like application codes)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    TOO_LARGE = 413
    TOO_MANY_REQUESTS = 429
    SERVICE_UNAVAILABLE = 503
    INSUFFICIENT_STORAGE = 507


@dataclass
class RpcError(Exception):
    """An error a client caused; carries its code, a human message and structured data."""

    code: ErrorCode
    message: str
    data: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-RPC `error` member."""
        out: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def parse_error(detail: str) -> RpcError:
    """The body is not JSON."""
    return RpcError(ErrorCode.PARSE_ERROR, "Parse error", {"detail": detail})


def invalid_request(detail: str) -> RpcError:
    """The JSON is not a valid JSON-RPC 2.0 request."""
    return RpcError(ErrorCode.INVALID_REQUEST, "Invalid Request", {"detail": detail})


def method_not_found(name: str) -> RpcError:
    """No method of that name."""
    return RpcError(ErrorCode.METHOD_NOT_FOUND, "Method not found", {"method": name})


def invalid_params(detail: str, path: str, schema_path: str = "") -> RpcError:
    """Params do not match the method's schema."""
    return RpcError(ErrorCode.INVALID_PARAMS, "Invalid params",
                    {"detail": detail, "path": path, "schema_path": schema_path})


def internal_error() -> RpcError:
    """A bug: the details go to the server log, never to the client."""
    return RpcError(ErrorCode.INTERNAL_ERROR, "Internal error")


def unauthorized(message: str = "missing or invalid token") -> RpcError:
    """No or bad credentials."""
    return RpcError(ErrorCode.UNAUTHORIZED, message)


def forbidden(message: str, **data: Any) -> RpcError:
    """The caller may not do this."""
    return RpcError(ErrorCode.FORBIDDEN, message, data or None)


def not_found(what: str, **data: Any) -> RpcError:
    """No such thing (or the caller may not know it exists)."""
    return RpcError(ErrorCode.NOT_FOUND, f"no such {what}", data or None)


def conflict(message: str, **data: Any) -> RpcError:
    """The request conflicts with current state."""
    return RpcError(ErrorCode.CONFLICT, message, data or None)


def too_large(message: str, **data: Any) -> RpcError:
    """Text, body or batch over a limit."""
    return RpcError(ErrorCode.TOO_LARGE, message, data or None)


def too_many(message: str, retry_after: int, **data: Any) -> RpcError:
    """Over a quota or throttle; `retry_after` seconds until it resets."""
    return RpcError(ErrorCode.TOO_MANY_REQUESTS, message,
                    {"retry_after": retry_after, **data})


def unavailable(message: str = "the database is unreachable; try again shortly",
                retry_after: int = 2) -> RpcError:
    """The database cannot be reached for now; the server recovers by itself."""
    return RpcError(ErrorCode.SERVICE_UNAVAILABLE, message, {"retry_after": retry_after})


def disk_full(message: str = "out of disk space; nothing was written") -> RpcError:
    """No space left to write; nothing was stored."""
    return RpcError(ErrorCode.INSUFFICIENT_STORAGE, message)


def from_store(exc: StoreError) -> RpcError:
    """The client's view of a store failure: 507 when out of space, 503 otherwise."""
    if isinstance(exc, DiskFull):
        return disk_full()
    retry_after = exc.retry_after if isinstance(exc, StoreUnavailable) else 2
    return unavailable(retry_after=retry_after)
