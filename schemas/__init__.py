"""Loads the JSON Schema files: the single source of truth for params, results and events."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).parent
DEFS_URI = "defs.json"
DEFS_PARTS = "defs"  # schemas/defs/<area>.json: more shared definitions, merged into defs.json
EVENT_REF_PREFIX = "events/"  # `{"$ref": "events/<type>.json"}`: one event type's schema

Schema = dict[str, Any]


# Where subschemas sit in a JSON Schema (everything else is data: enum, const, examples...).
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SCHEMA_VALUES = frozenset({"items", "not", "if", "then", "else", "contains", "propertyNames",
                           "additionalProperties", "unevaluatedProperties", "unevaluatedItems"})


def map_subschemas(schema: Schema, fn: Callable[[Any], Any],
                   drop: Callable[[str], bool] = lambda key: False) -> Schema:
    """A copy of one schema level with `fn` applied to each subschema and `drop`ped keys left
    out; property names and data values are copied as they are."""
    out: Schema = {}
    for key, value in schema.items():
        if drop(key):
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: fn(sub) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [fn(sub) for sub in value]
        elif key in SCHEMA_VALUES:
            out[key] = fn(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class MethodSchema:
    """One method's file: params and result schemas, error codes and examples."""

    name: str
    summary: str
    description: str
    params: Schema
    result: Schema
    errors: list[int]
    examples: list[dict[str, Any]] = field(default_factory=list)
    auth: bool = True


def _read(path: Path) -> Schema:
    data: Schema = json.loads(path.read_text(encoding="utf-8"))
    return data


@cache
def defs() -> Schema:
    """Shared definitions (message, chat, ...), referenced as `defs.json#/$defs/NAME`.

    defs.json holds the simple types; the `$defs` of each schemas/defs/<area>.json (objects,
    by area) follow them, in file-name order, as if written in defs.json. `event` (any event,
    by its `type`) is made here from schemas/events/, so a new event type is part of every
    schema that mentions events (GET /poll, events.poll) at once.
    """
    loaded = _read(SCHEMA_DIR / DEFS_URI)
    for path in sorted((SCHEMA_DIR / DEFS_PARTS).glob("*.json")):
        for name, schema in _read(path)["$defs"].items():
            if name in loaded["$defs"]:
                raise ValueError(f"{path.name}: {name} is defined twice in defs.json")
            loaded["$defs"][name] = schema
    events = event_schemas()
    loaded["$defs"]["event"] = {
        "description": "One event of a user's stream: seq, type, and the fields of its type.",
        "oneOf": [{"$ref": event_ref(type_)} for type_ in events],
        "examples": [schema["examples"][0] for schema in events.values()
                     if schema.get("examples")],
    }
    return loaded


def event_ref(type_: str) -> str:
    """The `$ref` of an event type's schema."""
    return f"{EVENT_REF_PREFIX}{type_}.json"


def event_type_of_ref(ref: str) -> str | None:
    """The event type an `events/<type>.json` `$ref` names, else None."""
    if ref.startswith(EVENT_REF_PREFIX) and ref.endswith(".json"):
        return ref.removeprefix(EVENT_REF_PREFIX).removesuffix(".json")
    return None


@cache
def method_schemas() -> dict[str, MethodSchema]:
    """Every method's schema file, by method name."""
    out: dict[str, MethodSchema] = {}
    for path in sorted((SCHEMA_DIR / "methods").glob("*.json")):
        raw = _read(path)
        out[raw["name"]] = MethodSchema(
            name=raw["name"], summary=raw["summary"], description=raw["description"],
            params=raw["params"], result=raw["result"], errors=list(raw.get("errors", [])),
            examples=list(raw.get("examples", [])), auth=bool(raw.get("auth", True)))
    return out


@cache
def event_schemas() -> dict[str, Schema]:
    """Every event type's schema, by type."""
    return {path.stem: _read(path) for path in sorted((SCHEMA_DIR / "events").glob("*.json"))}


@cache
def registry() -> Registry[Any]:
    """A registry resolving `defs.json` references."""
    resource: Resource[Any] = Resource.from_contents(defs(), default_specification=DRAFT202012)
    reg: Registry[Any] = Registry().with_resource(DEFS_URI, resource)
    for type_, schema in event_schemas().items():
        reg = reg.with_resource(event_ref(type_), Resource.from_contents(
            schema, default_specification=DRAFT202012))
    return reg
