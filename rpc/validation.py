"""Validators compiled once at start-up from schemas/."""
from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Any, Hashable, Iterator

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

import schemas
from rpc.fastcheck import Check, compile_check
from methods import errors

_FORMATS = FormatChecker()
# Enough to find the most relevant error without walking every item of a huge array.
_MAX_ERRORS = 64


@functools.lru_cache(maxsize=256)
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` with ECMA-262's `$`: the very end, not also before a final newline."""
    out: list[str] = []
    escaped = in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "$":
            out.append(r"\Z")
            continue
        out.append(ch)
    return re.compile("".join(out))


def _pattern(validator: Validator, pattern: str, instance: Any,
             schema: Any) -> Iterator[ValidationError]:
    # jsonschema uses re.search, where `^[a-z]+$` also matches "bob\n".
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"does not match the pattern {pattern}")


def _canonical(value: Any) -> Hashable:
    """A hashable stand-in, equal exactly when two JSON values are equal (1 == 1.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, list):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("value", value)


def _unique_items(validator: Validator, unique: bool, instance: Any,
                  schema: Any) -> Iterator[ValidationError]:
    # jsonschema compares every pair when the items do not sort (objects): quadratic, so
    # one hostile request could stall the server for minutes. Hashing is linear.
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Hashable] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError("array has non-unique elements")
            return
        seen.add(key)


_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern, "uniqueItems": _unique_items})


def compile_schema(schema: schemas.Schema) -> Validator:
    """A 2020-12 validator for one schema, with shared definitions inlined up front.

    Resolving `$ref` at validation time costs more than the rest of the check; our
    schemas are not recursive, so every reference is replaced by its target once here.
    """
    validator: Validator = _Validator(lean(inline_refs(schema, schemas.defs())),
                                      registry=schemas.registry(), format_checker=_FORMATS)
    return validator


def inline_refs(node: Any, defs: schemas.Schema) -> Any:
    """`node` with every `defs.json#/$defs/X` (and defs-local `#/$defs/X`) and every
    `events/<type>.json` replaced."""
    if isinstance(node, list):
        return [inline_refs(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return out
    event_type = schemas.event_type_of_ref(ref)
    if event_type is not None and event_type in schemas.event_schemas():
        event = inline_refs({k: v for k, v in schemas.event_schemas()[event_type].items()
                             if k != "$schema"}, defs)
        return {"allOf": [event], **out} if out else event
    name = ref.rsplit("/", 1)[-1]
    if not ref.startswith((schemas.DEFS_URI + "#/$defs/", "#/$defs/")) or name not in defs[
            "$defs"]:
        out["$ref"] = ref
        return out
    target = inline_refs(defs["$defs"][name], defs)
    # Keywords beside a $ref apply too; keep them next to the target, not over it.
    return {"allOf": [target], **out} if out else target


_ANNOTATIONS = {"description", "examples", "title", "default", "$comment", "$schema", "$id",
                "deprecated", "readOnly", "writeOnly"}


def lean(schema: Any) -> Any:
    """The schema without annotations, single-branch `allOf`s folded: same verdicts, fewer
    steps for the validator (each keyword and each `allOf` level costs a descent)."""
    if not isinstance(schema, dict):
        return schema
    out = schemas.map_subschemas(
        schema, lean, drop=lambda key: key in _ANNOTATIONS or key.startswith("x-"))
    if list(out) == ["allOf"] and len(out["allOf"]) == 1:
        folded: Any = out["allOf"][0]
        return folded
    return out


def fast_check(schema: Any) -> Check | None:
    """The compiled yes/no check for a (lean, inlined) schema, if it fits the subset."""
    return compile_check(schema, _ecma_regex, _canonical,
                         lambda text: _FORMATS.conforms(text, "date-time"))


def _pointer(parts: Any) -> str:
    return "".join(f"/{p}" for p in parts)


def first_error(validator: Validator, instance: Any) -> ValidationError | None:
    """The most relevant error, or None when the instance is valid."""
    best: ValidationError | None = None
    for err in itertools.islice(validator.iter_errors(instance), _MAX_ERRORS):
        if best is None or len(err.absolute_path) > len(best.absolute_path):
            best = err
    return best


def nul_path(value: Any) -> str | None:
    """The path of the first string holding U+0000, which PostgreSQL text cannot store."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            stack.extend((v, f"{path}/{k}") for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}") for i, v in reversed(list(enumerate(node))))
    return None


class ParamsValidator:
    """Checks one method's params; raises -32602 naming the failing path."""

    def __init__(self, schema: schemas.Schema) -> None:
        self.validator = compile_schema(schema)
        self.fast = fast_check(self.validator.schema)

    def is_valid(self, params: Any) -> bool:
        """The verdict, from the compiled check when the schema allows one."""
        if self.fast is not None:
            return self.fast(params)
        return self.validator.is_valid(params)

    def check(self, params: Any) -> None:
        """Raise `invalid_params` if `params` does not match."""
        if self.is_valid(params):
            bad = nul_path(params)
            if bad is not None:  # refused on every backend alike, not only where it breaks
                raise errors.invalid_params("strings must not contain U+0000", bad)
            return
        err = first_error(self.validator, params)
        assert err is not None
        raise errors.invalid_params(describe(err)[:300], _pointer(err.absolute_path),
                                    _pointer(err.absolute_schema_path))


_ARTICLE_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
                  "object": "an object", "array": "an array", "boolean": "true or false",
                  "null": "null"}
_FORMATS_TEXT = {"date-time": "an RFC 3339 date-time such as 2026-11-28T12:00:00Z"}


def _json(value: Any, limit: int = 40) -> str:
    """A value as a person reads it in a message: JSON, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _field(path: Any) -> str:
    """A path as a person names a field: `attachments[0]`, `members[2]`, `text`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _names(names: Any) -> str:
    return ", ".join(str(n) for n in names)


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _required_only(branches: Any) -> list[list[str]] | None:
    """The field lists of `oneOf`/`anyOf` branches that only say `required`, else None."""
    if not isinstance(branches, list) or not all(
            isinstance(b, dict) and list(b) == ["required"] for b in branches):
        return None
    return [list(b["required"]) for b in branches]


@functools.cache
def _pattern_hints() -> dict[str, str]:
    """Shared types' patterns in words, from their descriptions ("3 to 32 letters, ...")."""
    return {d["pattern"]: str(d.get("description", "")).split(";")[0].rstrip(".")
            for d in schemas.defs()["$defs"].values()
            if isinstance(d.get("pattern"), str) and d.get("description")}


def _problem(err: ValidationError) -> str:
    """What is wrong, in words, for the keyword that failed (no Python reprs)."""
    keyword = str(err.validator)
    expected: Any = err.validator_value
    instance: Any = err.instance
    schema: Any = err.schema if isinstance(err.schema, dict) else {}
    if keyword == "required":
        missing = [n for n in expected if isinstance(instance, dict) and n not in instance]
        return f"missing required field{'s' if len(missing) > 1 else ''} {_names(missing)}"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = set(schema.get("properties", {}))
        extra = [_json(k) for k in instance if k not in known][:3]
        allowed = f"; allowed: {_names(sorted(known))}" if known else "; it takes none"
        return f"unknown field{'s' if len(extra) > 1 else ''} {', '.join(extra)}{allowed}"
    if keyword in ("oneOf", "anyOf"):
        fields = _required_only(expected)
        if fields is not None and all(len(f) == 1 for f in fields):
            names = _names(f[0] for f in fields)
            if keyword == "anyOf":
                return f"at least one of {names} is required"
            given = [f[0] for f in fields if isinstance(instance, dict) and f[0] in instance]
            return f"exactly one of {names}" + (
                f" ({' and '.join(given)} were given)" if given else " is required")
        types: list[Any] = [c.validator_value for c in err.context or []
                            if c.validator == "type"]
        if err.context and len(types) == len(err.context):
            flat = [t for ts in types for t in (ts if isinstance(ts, list) else [ts])]
            return "must be " + " or ".join(_ARTICLE_TYPES.get(t, t) for t in flat)
        if keyword == "oneOf" and not err.context:
            return "matches more than one of the allowed forms"
        return "does not match any of the allowed forms"
    if keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return "must be " + " or ".join(_ARTICLE_TYPES.get(k, str(k)) for k in kinds)
    if keyword == "minLength":
        return "must not be empty" if expected == 1 else \
            f"must be at least {_plural(expected, 'character')} long"
    if keyword == "maxLength":
        return f"must be at most {_plural(expected, 'character')} long"
    if keyword == "minItems":
        return f"must have at least {_plural(expected, 'item')}"
    if keyword == "maxItems":
        return f"must have at most {_plural(expected, 'item')}"
    if keyword == "uniqueItems":
        return "must not repeat an item"
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most",
                 "exclusiveMinimum": "greater than", "exclusiveMaximum": "less than"}
        return f"must be {words[keyword]} {_json(expected)}"
    if keyword == "pattern":
        hint = _pattern_hints().get(expected)
        return f"must be {hint} (pattern {expected})" if hint else \
            f"must match the pattern {expected}"
    if keyword == "format":
        return "must be " + _FORMATS_TEXT.get(expected, f"a valid {expected}")
    if keyword == "enum":
        return "must be one of " + ", ".join(_json(v) for v in expected)
    if keyword == "const":
        return f"must be {_json(expected)}"
    if keyword in ("minProperties", "maxProperties"):
        word = "at least" if keyword == "minProperties" else "at most"
        return f"must have {word} {_plural(expected, 'field')}"
    return f"fails the {keyword} rule of its schema"


def describe(err: ValidationError) -> str:
    """A person's message for a validation error, naming the field to fix (`text: ...`)."""
    field = _field(err.absolute_path)
    return f"{field}: {_problem(err)}" if field else _problem(err)
