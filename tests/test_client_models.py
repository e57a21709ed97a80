"""The client's TypedDicts (client/models.py) mirror the JSON Schemas in schemas/.

For every result and event type: the same property names, the same required keys, the same
JSON types (nullability included), recursively through nested objects (messages, chats,
scheduled entries, attachments, sessions...). Every event type and every method with a
non-empty result has its TypedDict, and every method has a client method in client/api.py.
No server is started.
"""
from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

import client.models as models
from client.api import MessengerClient
from schemas import Schema, defs, event_schemas, event_type_of_ref, method_schemas
from tests.support import ROOT


def client_results() -> dict[str, Any]:
    """The TypedDict each method's result mirrors: what its MessengerClient method returns.

    Read from client/api.py: a coroutine method calling `self.call("area.name", ...)` and
    annotated to return a TypedDict. Methods answering `{}` are checked apart.
    """
    out: dict[str, Any] = {}
    for fn in vars(MessengerClient).values():
        if not inspect.iscoroutinefunction(fn):
            continue
        called = set(re.findall(r'self\.call\(\s*"([a-z_]+\.[a-z_]+)"', inspect.getsource(fn)))
        returned = get_type_hints(fn).get("return")
        if len(called) == 1 and is_typeddict(returned):
            out[called.pop()] = returned
    return out


RESULTS = client_results()
UNTYPED_RESULTS = {"rpc.discover"}  # the OpenRPC document: a plain dict in the client
SHARED = {"attachment": models.FileInfo, "message": models.Message,
          "scheduled": models.Scheduled, "chat": models.Chat, "chat_status": models.ChatInfo,
          "poll_answer": models.PollResult}


def resolve(schema: Schema) -> Schema:
    """The schema behind `$ref`s (sibling keywords such as `description` kept)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        event_type = event_type_of_ref(ref)
        if event_type is not None:
            target = event_schemas()[event_type]
        else:
            assert "#/$defs/" in ref, ref
            target = defs()["$defs"][ref.rsplit("/", 1)[1]]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def json_kinds(schema: Schema) -> set[str]:
    """The JSON types a schema allows ("any" when it does not say)."""
    schema = resolve(schema)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return set().union(*(json_kinds(sub) for sub in schema[key]))
    if "const" in schema:
        return {kind_of(schema["const"])}
    if "enum" in schema:
        return {kind_of(value) for value in schema["enum"]}
    declared = schema.get("type")
    if declared is None:
        return {"any"}
    return {declared} if isinstance(declared, str) else set(declared)


def kind_of(value: object) -> str:
    """The JSON type of a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def is_union(tp: Any) -> bool:
    """Whether a type is `X | Y`."""
    return get_origin(tp) in (Union, types.UnionType)


def py_kinds(tp: Any) -> set[str]:
    """The JSON types a Python annotation allows."""
    if is_union(tp):
        return set().union(*(py_kinds(arg) for arg in get_args(tp)))
    if get_origin(tp) is Literal:
        return {kind_of(value) for value in get_args(tp)}
    if tp is type(None):
        return {"null"}
    if tp is Any:
        return {"any"}
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return {simple[tp]}
    if tp is list or get_origin(tp) is list:
        return {"array"}
    if tp is dict or get_origin(tp) is dict or is_typeddict(tp):
        return {"object"}
    raise AssertionError(f"unexpected annotation {tp!r}")


def typed_dicts(tp: Any) -> list[Any]:
    """The TypedDicts an annotation holds (through `| None` and unions), for recursion."""
    if is_union(tp):
        return [td for arg in get_args(tp) for td in typed_dicts(arg)]
    return [tp] if is_typeddict(tp) else []


def object_branches(schema: Schema) -> list[Schema]:
    """The object schemas a schema allows (one, or each branch of a oneOf)."""
    schema = resolve(schema)
    if "properties" in schema:
        return [schema]
    branches = [resolve(sub) for sub in schema.get("oneOf", []) + schema.get("anyOf", [])]
    return [b for b in branches if "properties" in b]


def event_type(td: Any) -> str:
    """The `type` Literal of an event TypedDict."""
    (value,) = get_args(get_type_hints(td)["type"])
    return str(value)


def required_keys(td: Any) -> set[str]:
    """A TypedDict's required keys. With `from __future__ import annotations` Python 3.11
    does not see `NotRequired[...]` in its annotations (mypy does): read them here."""
    def optional(annotation: object) -> bool:
        text = getattr(annotation, "__forward_arg__", annotation)  # a typing.ForwardRef
        text = text if isinstance(text, str) else repr(text)
        return text.startswith(("NotRequired[", "typing.NotRequired["))
    return {key for key in td.__required_keys__ if not optional(td.__annotations__[key])}


def check(td: Any, schema: Schema, where: str) -> None:
    """Fail unless the TypedDict matches the (object) schema, nested objects included."""
    branches = object_branches(schema)
    assert branches, f"{where}: the schema is not an object"
    hints = get_type_hints(td)
    props: dict[str, Schema] = {}
    for branch in branches:
        props.update(branch["properties"])
    if len(branches) == 1:
        required = set(branches[0].get("required", []))
    else:  # one of several shapes: each key is there in some answers only
        required = set()
    assert set(hints) == set(props), \
        f"{where}: {td.__name__} has {sorted(hints)}, the schema {sorted(props)}"
    assert required_keys(td) == required, \
        f"{where}: {td.__name__} requires {sorted(required_keys(td))}, " \
        f"the schema {sorted(required)}"
    for key, sub in props.items():
        want, have = json_kinds(sub), py_kinds(hints[key])
        if "any" not in want:
            assert want == have, f"{where}.{key}: schema {sorted(want)}, TypedDict {sorted(have)}"
        check_nested(hints[key], sub, f"{where}.{key}")


def check_nested(tp: Any, sub: Schema, where: str) -> None:
    """Recurse into a property's TypedDict, list of TypedDicts, or union of events."""
    sub = resolve(sub)
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        check_nested(item, sub.get("items", {}), f"{where}[]")
        return
    found = typed_dicts(tp)
    if len(found) == 1:
        check(found[0], sub, where)
    elif found:  # the Event union: each member against its event type's schema
        by_type = {event_type(td): td for td in found}
        refs = [resolve(s) for s in sub.get("oneOf", [])]
        schema_types = {r["properties"]["type"]["const"]: r for r in refs}
        assert set(by_type) == set(schema_types), where
        for name, td in by_type.items():
            check(td, schema_types[name], f"{where}<{name}>")


@pytest.mark.parametrize("method", sorted(RESULTS))
def test_result_types_mirror_the_method_schemas(method: str) -> None:
    check(RESULTS[method], method_schemas()[method].result, method)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_types_mirror_defs(name: str) -> None:
    check(SHARED[name], defs()["$defs"][name], f"defs.{name}")


def test_every_event_type_has_its_typed_dict() -> None:
    members = {event_type(td): td for td in get_args(models.Event)}
    assert set(members) == set(event_schemas())
    for name, td in members.items():
        check(td, event_schemas()[name], f"event {name}")


def test_every_method_result_is_typed_or_empty() -> None:
    for name, method in method_schemas().items():
        if name in RESULTS or name in UNTYPED_RESULTS:
            continue
        result = resolve(method.result)
        assert not result.get("properties") and result.get("additionalProperties") is False, \
            f"{name} answers an object with fields: add a TypedDict to client/models.py " \
            "and return it from its client method in client/api.py"


def test_every_method_has_a_client_method() -> None:
    source = (ROOT / "client" / "api.py").read_text(encoding="utf-8")
    missing = [name for name in method_schemas() if f'"{name}"' not in source]
    assert not missing, f"no MessengerClient method calls {missing}"


def test_results_are_read_from_the_client_methods() -> None:
    """The reader itself: it finds the TypedDicts the client methods return."""
    assert RESULTS["session.status"] is models.Status
    assert RESULTS["messages.send"] is models.SendResult
    assert RESULTS["events.poll"] is models.PollResult
    assert "messages.delete" not in RESULTS and "rpc.discover" not in RESULTS


def test_the_check_fails_on_drift() -> None:
    """The checker itself: a TypedDict that differs from its schema is caught."""
    class Loose(typing.TypedDict):
        chat_id: str
        kind: str
        title: str | None
        members: list[str]
        owner: typing.NotRequired[str | None]

    with pytest.raises(AssertionError, match="requires"):
        check(Loose, defs()["$defs"]["chat"], "drift")

    class NotNull(typing.TypedDict):
        chat_id: str
        kind: str
        title: str
        members: list[str]
        owner: str | None

    with pytest.raises(AssertionError, match="title"):
        check(NotNull, defs()["$defs"]["chat"], "drift")
