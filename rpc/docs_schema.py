"""Schemas as HTML for /docs: readable types, field tables and constraints, with links to the
named types (`#type-NAME`) and event types (`#event-TYPE`) of the page."""
from __future__ import annotations

import html
import json
import re
from typing import Any, Iterator

from rpc.openrpc import COMPONENTS_PREFIX, EVENT_PREFIX

Json = Any
Schema = dict[str, Any]


def inline(text: str) -> str:
    """Escape text and render its `backticks` as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def code(value: str) -> str:
    """Inline code."""
    return f"<code>{html.escape(value)}</code>"


def pre(text: str) -> str:
    """A code block."""
    return f"<pre><code>{html.escape(text)}</code></pre>"


def pretty(value: Json, indent: int = 0, width: int = 80) -> str:
    """JSON for people: indented, but anything that fits on its line stays on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if indent + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: "
                 f"{pretty(v, indent + 2, width).lstrip()}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + pretty(v, indent + 2, width).lstrip() for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def event_anchor(type_: str) -> str:
    """The id of an event type's section."""
    return "event-" + type_


def type_anchor(name: str) -> str:
    """The id of a shared type's section."""
    return "type-" + name


class Renderer:
    """Renders schemas of one OpenRPC document readably, resolving refs to named types."""

    def __init__(self, openrpc: dict[str, Json]) -> None:
        schemas = openrpc.get("components", {}).get("schemas", {})
        self.types: dict[str, Schema] = {
            k: v for k, v in schemas.items() if not k.startswith(EVENT_PREFIX)}
        events = {k.removeprefix(EVENT_PREFIX): v for k, v in schemas.items()
                  if k.startswith(EVENT_PREFIX)}
        self.events: dict[str, Schema] = {k: events[k] for k in sorted(events)}

    def ref_name(self, schema: Json) -> str | None:
        """The component a schema stands for: a bare `$ref` or a one-ref `allOf`."""
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf", [])) == 1:
            ref = schema["allOf"][0].get("$ref")
        if isinstance(ref, str) and ref.startswith(COMPONENTS_PREFIX):
            return ref.removeprefix(COMPONENTS_PREFIX)
        return None

    def resolve(self, schema: Json) -> Schema:
        """The named type's schema if `schema` refers to one, else `schema` itself."""
        name = self.ref_name(schema)
        if name is not None and name in self.types:
            return self.types[name]
        return schema if isinstance(schema, dict) else {}

    def describe(self, schema: Json) -> str:
        """A schema's description, else that of the type it refers to."""
        if isinstance(schema, dict) and schema.get("description"):
            return str(schema["description"])
        name = self.ref_name(schema)
        if name is not None:
            return str(self.types.get(name, {}).get("description", ""))
        return ""

    def type_link(self, name: str) -> str:
        """A link to a named type (or to an event type's section)."""
        if name.startswith(EVENT_PREFIX):
            type_ = name.removeprefix(EVENT_PREFIX)
            return f"<a href='#{event_anchor(type_)}'><code>{html.escape(type_)}</code> event</a>"
        return f"<a href='#{type_anchor(name)}'><code>{html.escape(name)}</code></a>"

    def type_html(self, schema: Json) -> str:
        """A short readable type: `array of message`, `username or null`, `one of "a", "b"`."""
        if not isinstance(schema, dict) or not schema:
            return "any"
        name = self.ref_name(schema)
        if name is not None:
            return self.type_link(name)
        for key in ("oneOf", "anyOf"):
            if key in schema and "type" not in schema:
                return " or ".join(self.type_html(s) for s in schema[key])
        if "const" in schema:
            return code(json.dumps(schema["const"]))
        if "enum" in schema:
            return "one of " + ", ".join(code(json.dumps(v)) for v in schema["enum"])
        kind = schema.get("type")
        if kind == "array":
            return "array of " + self.type_html(schema.get("items", {}))
        if isinstance(kind, list):
            return " or ".join(html.escape(k) for k in kind)
        if isinstance(kind, str):
            fmt = schema.get("format")
            return html.escape(kind) + (f" ({html.escape(fmt)})" if fmt else "")
        if "allOf" in schema:
            return " and ".join(self.type_html(s) for s in schema["allOf"])
        return "any"

    def constraints(self, schema: Json) -> str:
        """Limits of a value (lengths, ranges, pattern, default), its named type's included."""
        if not isinstance(schema, dict):
            return ""
        parts = list(self._own_constraints(schema))
        target = self.resolve(schema)
        if target is not schema and target.get("type") != "object":
            parts.extend(self._own_constraints(target))
        return "; ".join(parts)

    def _own_constraints(self, s: Schema) -> Iterator[str]:
        if "minLength" in s or "maxLength" in s:
            yield self._range(s.get("minLength"), s.get("maxLength"), "characters")
        if "minimum" in s or "maximum" in s:
            yield self._range(s.get("minimum"), s.get("maximum"), "")
        if "minItems" in s or "maxItems" in s:
            yield self._range(s.get("minItems"), s.get("maxItems"), "items")
        if s.get("uniqueItems"):
            yield "no duplicates"
        if "pattern" in s:
            yield "pattern " + code(s["pattern"])
        if "default" in s:
            yield "default " + code(json.dumps(s["default"]))
        items = s.get("items")
        if isinstance(items, dict) and "$ref" not in items:
            yield from self._own_constraints(items)

    @staticmethod
    def _range(low: Json, high: Json, unit: str) -> str:
        unit = f" {unit}" if unit else ""
        if low is not None and high is not None:
            return f"{low}–{high}{unit}"
        if low is not None:
            return "not empty" if low == 1 and unit else f"≥ {low}{unit}"
        return f"≤ {high}{unit}"

    def properties(self, schema: Json) -> tuple[dict[str, Schema], set[str]]:
        """An object's properties and required names, merged from its `allOf` parts."""
        if not isinstance(schema, dict):
            return {}, set()
        props: dict[str, Schema] = {}
        required: set[str] = set()
        for part in schema.get("allOf", []):
            sub_props, sub_required = self.properties(self.resolve(part))
            props.update(sub_props)
            required |= sub_required
        props.update(schema.get("properties", {}))
        required |= set(schema.get("required", []))
        return props, required

    def field_rows(self, schema: Json, prefix: str = "") -> list[str]:
        """Table rows for an object's fields; inline objects and arrays of them are nested."""
        props, required = self.properties(schema)
        rows = []
        for name, prop in props.items():
            path = prefix + name
            marker = "" if name in required else " <span class='opt'>(optional)</span>"
            rows.append(f"<tr><td class='name'>{code(path)}{marker}</td>"
                        f"<td>{self.type_html(prop)}</td>"
                        f"<td>{inline(self.describe(prop))}"
                        f"{self.constraint_note(prop)}</td></tr>")
            if prop.get("type") == "object" and prop.get("properties"):
                rows.extend(self.field_rows(prop, path + "."))
            items = prop.get("items")
            if isinstance(items, dict) and items.get("properties"):
                rows.extend(self.field_rows(items, path + "[]."))
        return rows

    def constraint_note(self, schema: Json) -> str:
        """The constraints of a value as a small note under its description."""
        text = self.constraints(schema)
        return f"<div class='cons'>{text}</div>" if text else ""

    def fields_table(self, schema: Json) -> str:
        """An object's fields as a table (or a note when it has none)."""
        rows = self.field_rows(schema)
        if not rows:
            if self.ref_name(schema) == "empty" or schema.get("additionalProperties") is False:
                return "<p>An empty object <code>{}</code>.</p>"
            return f"<p>{self.type_html(schema)}</p>"
        return ("<table><tr><th>field</th><th>type</th><th>description</th></tr>"
                + "".join(rows) + "</table>")

    def result_html(self, schema: Json) -> str:
        """A result: its fields, or each alternative's fields."""
        branches = schema.get("oneOf") if isinstance(schema, dict) else None
        if branches:
            parts = [f"<p>One of {len(branches)} shapes:</p>"]
            for branch in branches:
                parts.append(f"<p><em>{inline(self.describe(branch))}</em></p>")
                parts.append(self.fields_table(branch))
            return "".join(parts)
        return self.fields_table(self.resolve(schema) if self.ref_name(schema) else schema)
