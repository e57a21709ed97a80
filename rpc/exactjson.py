"""Request ids echoed exactly as sent, even numbers orjson cannot hold.

orjson reads an integer beyond 64 bits as a float (18446744073709551616 would come back as
1.8446744073709552e+19) and refuses a number beyond a double's range (-1e400). JSON-RPC
echoes the id as sent, so for the rare body with such an id the standard library parses it
again, and each request's numeric id is kept as its original text (an `orjson.Fragment`,
written back verbatim). Everything else must read as orjson reads it: numbers elsewhere out
of range and strings orjson refuses still make the body -32700.
"""
from __future__ import annotations

import json
import math
from typing import Any

import orjson

# The types an id may have after parsing (a Fragment is a number kept as written).
ID_TYPES = (str, int, float, orjson.Fragment)
_INT64 = (-2 ** 63, 2 ** 64 - 1)  # what orjson reads as an int


class _ExactInt(int):
    """An integer that remembers how it was written."""

    text: str


class _ExactFloat(float):
    """A number with a fraction or exponent that remembers how it was written."""

    text: str


def _int(text: str) -> _ExactInt:
    value = _ExactInt(text)
    value.text = text
    return value


def _float(text: str) -> _ExactFloat:
    value = _ExactFloat(text)
    value.text = text
    return value


def _constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def needs_exact_ids(payload: object) -> bool:
    """Whether orjson may have changed a request's numeric id (it read it as a float)."""
    items = payload if isinstance(payload, list) else [payload]
    return any(isinstance(item, dict) and isinstance(item.get("id"), float) for item in items)


def loads_exact(body: bytes) -> object:
    """The body parsed with every request's numeric id kept as written; ValueError if it is
    no JSON, or holds a value orjson would refuse anywhere but in an id."""
    payload = json.loads(body.decode("utf-8"), parse_int=_int, parse_float=_float,
                         parse_constant=_constant)
    items = payload if isinstance(payload, list) else [payload]
    ids = {id(item) for item in items if isinstance(item, dict)}
    return _plain(payload, ids)


def _plain(node: Any, requests: set[int]) -> Any:
    """`node` with plain numbers and strings, checked as orjson would; ids as Fragments."""
    stack: list[Any] = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "id" and id(value) in requests and isinstance(item, (int, float)) \
                        and not isinstance(item, bool):
                    value[key] = orjson.Fragment(item.text.encode())  # type: ignore[union-attr]
                else:
                    _check_string(key)
                    value[key] = _number(item)
                    stack.append(item)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = _number(item)
                stack.append(item)
        elif isinstance(value, str):
            _check_string(value)
    return _number(node)


def _number(value: Any) -> Any:
    if isinstance(value, _ExactInt):
        if _INT64[0] <= value <= _INT64[1]:
            return int(value)
        try:
            return float(value)  # as orjson reads it
        except OverflowError:
            raise ValueError("number is infinity when parsed as double") from None
    if isinstance(value, _ExactFloat):
        if math.isinf(value):
            raise ValueError("number is infinity when parsed as double")
        return float(value)
    return value


def _check_string(text: str) -> None:
    # orjson refuses lone surrogates (\ud800); the standard library would accept them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("str is not valid UTF-8: surrogates not allowed") from None
