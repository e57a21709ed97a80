"""A compiled yes/no check for the JSON Schema subset our params schemas use.

jsonschema walks the schema anew for every request (tens of microseconds for a small
object); this compiles a schema once into nested closures that answer only "valid or
not". The dispatcher asks it first and lets jsonschema explain a "no", so error messages
come from jsonschema. A schema with any keyword outside the subset compiles to None and
jsonschema does all the work. tests/test_fastcheck.py checks both agree.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Hashable

Check = Callable[[Any], bool]

_IGNORED = {"description", "examples", "title", "default", "$comment", "$schema", "$id",
            "deprecated", "readOnly", "writeOnly"}


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not know."""


def _is_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer())


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def compile_check(schema: Any, pattern: Callable[[str], re.Pattern[str]],
                  canonical: Callable[[Any], Hashable],
                  date_time: Callable[[str], bool]) -> Check | None:
    """A yes/no check equivalent to the schema, or None if it uses unsupported keywords."""
    try:
        return _Compiler(pattern, canonical, date_time).schema(schema)
    except Unsupported:
        return None


def _every(checks: tuple[Check, ...]) -> Check:
    """All of `checks` (a plain loop: no generator per call on the hot path)."""
    def check(v: Any) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True
    return check


def _members(props: dict[str, Check], extra: Check | None) -> Check:
    """`properties` (and `additionalProperties` when given) in one walk over an object's
    members, which are few, instead of one lookup per declared property."""
    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name, item in v.items():
            c = props.get(name, extra)
            if c is not None and not c(item):
                return False
        return True
    return check


class _Compiler:
    def __init__(self, pattern: Callable[[str], re.Pattern[str]],
                 canonical: Callable[[Any], Hashable],
                 date_time: Callable[[str], bool]) -> None:
        self.pattern = pattern
        self.canonical = canonical
        self.date_time = date_time

    def schema(self, s: Any) -> Check:
        if s is True or s == {}:
            return lambda v: True
        if s is False:
            return lambda v: False
        if not isinstance(s, dict):
            raise Unsupported(repr(s))
        compiled = [self.keyword(k, val, s) for k, val in s.items() if k not in _IGNORED]
        checks = tuple(c for c in compiled if c is not None)
        if len(checks) == 1:
            return checks[0]
        return _every(checks)

    def keyword(self, key: str, val: Any, s: dict[str, Any]) -> Check | None:
        if key == "type":
            kinds = [val] if isinstance(val, str) else list(val)
            tests = [_TYPES[k] for k in kinds]
            if len(tests) == 1:
                return tests[0]
            return lambda v: any(t(v) for t in tests)
        if key == "properties":
            if "patternProperties" in s:
                raise Unsupported(key)
            return _members({name: self.schema(sub) for name, sub in val.items()},
                            self.schema(s["additionalProperties"])
                            if "additionalProperties" in s else None)
        if key == "required":
            names = list(val)
            return lambda v: not isinstance(v, dict) or all(n in v for n in names)
        if key == "additionalProperties":
            if "properties" in s:
                return None  # checked with them, in one walk over the object's members
            known: set[str] = set()
            if "patternProperties" in s:
                raise Unsupported(key)
            extra = self.schema(val)
            return lambda v: not isinstance(v, dict) or all(
                extra(item) for k, item in v.items() if k not in known)
        if key in ("minLength", "maxLength"):
            n = int(val)
            if key == "minLength":
                return lambda v: not isinstance(v, str) or len(v) >= n
            return lambda v: not isinstance(v, str) or len(v) <= n
        if key == "pattern":
            rx = self.pattern(val)
            return lambda v: not isinstance(v, str) or rx.search(v) is not None
        if key == "format":
            if val != "date-time":
                raise Unsupported(f"format {val}")
            return lambda v: not isinstance(v, str) or self.date_time(v)
        if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            return self.bound(key, val)
        if key in ("minItems", "maxItems"):
            n = int(val)
            if key == "minItems":
                return lambda v: not isinstance(v, list) or len(v) >= n
            return lambda v: not isinstance(v, list) or len(v) <= n
        if key == "items":
            item = self.schema(val)
            return lambda v: not isinstance(v, list) or all(item(x) for x in v)
        if key == "uniqueItems":
            if not val:
                return None
            canon = self.canonical
            return lambda v: not isinstance(v, list) or len({canon(x) for x in v}) == len(v)
        if key in ("enum", "const"):
            allowed = [self.canonical(x) for x in (val if key == "enum" else [val])]
            canon = self.canonical
            return lambda v: canon(v) in allowed
        if key in ("allOf", "anyOf", "oneOf"):
            subs = [self.schema(x) for x in val]
            if key == "allOf":
                return lambda v: all(c(v) for c in subs)
            if key == "anyOf":
                return lambda v: any(c(v) for c in subs)
            return lambda v: sum(1 for c in subs if c(v)) == 1
        if key == "not":
            inner = self.schema(val)
            return lambda v: not inner(v)
        raise Unsupported(key)

    def bound(self, key: str, limit: Any) -> Check:
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if key == "minimum":
            return lambda v: not number(v) or v >= limit
        if key == "maximum":
            return lambda v: not number(v) or v <= limit
        if key == "exclusiveMinimum":
            return lambda v: not number(v) or v > limit
        return lambda v: not number(v) or v < limit
