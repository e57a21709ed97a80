"""Exceptions raised by the client library."""
from __future__ import annotations

import re
from typing import Any


class MessengerError(Exception):
    """Base class of every error the client library raises on purpose."""


class RpcError(MessengerError):
    """The server answered with an error: a JSON-RPC error or an HTTP error status."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """The error as `{"code", "message", "data"}`."""
        return {"code": self.code, "message": self.message, "data": self.data}

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying (429 errors), if the server said so."""
        if isinstance(self.data, dict):
            value = self.data.get("retry_after")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    @property
    def reason(self) -> str | None:
        """`data.reason` (e.g. "banned"), if the server gave one."""
        if isinstance(self.data, dict):
            value = self.data.get("reason")
            if isinstance(value, str):
                return value
        return None

    @property
    def is_transient(self) -> bool:
        """True for HTTP 5xx statuses: the server may succeed if asked again later."""
        return 500 <= self.code <= 599


class ServerUnavailable(MessengerError):
    """The server could not be reached, or the connection broke before an answer came."""

    def __init__(self, url: str, reason: str) -> None:
        reason = plain_reason(reason)
        super().__init__(f"cannot reach the server at {url}: {reason}")
        self.url = url
        self.reason = reason


# aiohttp's "Cannot connect to host h:p ssl:default [inner]": only the inner part is news.
_CONNECT = re.compile(r"Cannot connect to host \S+ ssl:\S+ \[(?P<inner>.*)\]\s*$", re.S)
_PLAIN = [
    (re.compile(r"connect call failed|connection refused", re.I), "connection refused"),
    (re.compile(r"name or service not known|nodename nor servname|name resolution|"
                r"no address associated", re.I), "unknown host name"),
    (re.compile(r"timeout|timed out", re.I), "no answer in time"),
    (re.compile(r"server disconnected|connection reset|broken pipe", re.I),
     "the connection was closed"),
    (re.compile(r"network is unreachable|no route to host", re.I), "network unreachable"),
]


def plain_reason(text: str) -> str:
    """A transport error as a person reads it: no aiohttp internals (`ssl:default [...]`)."""
    match = _CONNECT.match(text)
    inner = match.group("inner") if match else text
    for pattern, plain in _PLAIN:
        if pattern.search(inner):
            return plain
    inner = re.sub(r"^\[Errno -?\d+\]\s*", "", inner).strip()
    return inner[:200] or "connection failed"
