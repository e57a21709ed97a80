"""The human-readable API reference served at /docs, generated from the OpenRPC document.

One static HTML page, no JavaScript: an overview of the transport (POST /rpc, /poll,
/files, errors), then every method, every event type and every shared type, all rendered
from the OpenRPC document that rpc/openrpc.py builds from schemas/.
"""
from __future__ import annotations

import html
import json
import re
from typing import Any, Iterator

from rpc.openrpc import COMPONENTS_PREFIX, EVENT_PREFIX

Json = Any
Schema = dict[str, Any]

BASE_URL = "http://127.0.0.1:8000"
WIDE = 100  # characters per line of example JSON
METHOD_ORDER = ["session.connect", "session.status", "session.disconnect", "messages.send",
                "messages.edit", "messages.delete", "messages.history", "messages.search",
                "messages.scheduled", "messages.cancel", "chats.read", "chats.create",
                "chats.invite", "chats.link", "chats.join", "chats.approve", "chats.decline",
                "chats.leave", "users.report", "users.block", "users.unblock", "users.blocked",
                "events.poll", "rpc.discover"]
EVENT_ORDER = ["message", "message_edited", "message_deleted", "read", "scheduled", "chat",
               "join_request", "join_decided", "ban"]
TAG_TITLES = {"session": "Sessions", "messages": "Messages", "chats": "Group chats",
              "users": "Users", "events": "Events", "rpc": "Discovery"}
PROTOCOL_ERRORS = [
    (-32700, "Parse error: the body is not JSON."),
    (-32600, "Invalid Request: not a JSON-RPC 2.0 request object (data.detail says why)."),
    (-32601, "Method not found (data.method)."),
    (-32603, "Internal error: a bug on the server; details go to its log, never to you."),
]
BATCH_EXAMPLE = """curl -s BASE/rpc -H 'Content-Type: application/json' \\
  -d '[{"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"},
       {"jsonrpc": "2.0", "id": 2, "method": "no.such.method"}]'
[{"jsonrpc": "2.0", "result": {"openrpc": "1.3.2", ...}, "id": 1},
 {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found",
  "data": {"method": "no.such.method"}}, "id": 2}]"""
POLL_EXAMPLE = """curl -s "BASE/poll?timeout=30" -H "Authorization: Bearer $TOKEN"
{"events": [{"seq": 1, "type": "message", "message": {...}}], "cursor": 1, "more": false}

# next: acknowledge 1 and wait for what comes after it
curl -s "BASE/poll?cursor=1&timeout=30" -H "Authorization: Bearer $TOKEN\""""
FILES_EXAMPLE = """curl -s "BASE/files?name=route.png" -H "Authorization: Bearer $TOKEN" \\
  -H "Content-Type: image/png" --data-binary @route.png
{"file_id": "f_8JcNw1hbGxvd29y", "name": "route.png", "size": 48213, "content_type": "image/png"}

curl -s -o route.png BASE/files/f_8JcNw1hbGxvd29y -H "Authorization: Bearer $TOKEN\""""

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1f2328;background:#fff}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
nav{position:fixed;top:0;left:0;bottom:0;width:250px;overflow-y:auto;padding:18px 16px 40px;
background:#f6f8fa;border-right:1px solid #d8dee4;font-size:14px}
nav h1{font-size:18px;margin:0 0 2px}nav .ver{color:#656d76;font-size:12px;margin-bottom:10px}
nav h2{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:#656d76;
margin:16px 0 4px}
nav ul{list-style:none;margin:0;padding:0}nav li{margin:1px 0}
nav li a{display:block;padding:1px 6px;border-radius:4px;color:#1f2328}
nav li a:hover{background:#e7ecf0;text-decoration:none}
nav code{font-size:12.5px}
main{margin-left:250px;padding:24px 40px 80px;max-width:1060px}
h1.title{font-size:30px;margin:0 0 6px}
section{margin-bottom:8px}
h2.part{font-size:24px;border-bottom:2px solid #d8dee4;padding-bottom:4px;margin:42px 0 12px}
h3{font-size:19px;margin:34px 0 6px;padding-top:10px;border-top:1px solid #eaeef2}
h3 code{font-size:18px;background:none;padding:0}
h4{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#57606a;
margin:16px 0 4px}
p{margin:6px 0 10px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eff1f3;
padding:1px 4px;border-radius:4px}
pre{background:#161b22;color:#e6edf3;padding:10px 14px;border-radius:6px;overflow-x:auto;
font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:6px 0 12px}
pre code{background:none;padding:0;color:inherit;font:inherit}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:14px}
th,td{border:1px solid #d8dee4;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.name{white-space:nowrap}th.code{width:90px}td.name code{font-weight:600}
.summary{font-size:16px;color:#424a53;margin-top:0}
.badge{display:inline-block;font-size:11px;font-weight:600;padding:1px 7px;border-radius:10px;
vertical-align:middle;margin-left:8px}
.auth{background:#ddf4ff;color:#0550ae}.open{background:#dafbe1;color:#116329}
.req{color:#cf222e;font-weight:600}.opt{color:#656d76}
.muted{color:#656d76}.cons{color:#57606a;font-size:13px}
.example{border-left:3px solid #d8dee4;padding-left:12px;margin:10px 0 16px}
.example .ename{font-weight:600}
"""


def in_order(names: Any, preferred: list[str]) -> list[str]:
    """`names` in the preferred order, unknown names last (sorted)."""
    known = [n for n in preferred if n in names]
    return known + sorted(n for n in names if n not in preferred)


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


def shell_quote(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def method_anchor(name: str) -> str:
    """The id of a method's section."""
    return "method-" + name


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
        self.events: dict[str, Schema] = {k: events[k] for k in in_order(events, EVENT_ORDER)}

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


def curl_command(method: Json, params: dict[str, Json]) -> str:
    """A ready-to-paste curl call of `method` with `params`."""
    head = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method["name"]},
                      ensure_ascii=False)[:-1]
    args = pretty(params, 7, 78)
    body = f'{head},\n       "params": {args}}}' if params else head + "}"
    lines = [f"curl -s {BASE_URL}/rpc", "-H 'Content-Type: application/json'"]
    if method.get("x-auth") != "none":
        lines.append('-H "Authorization: Bearer $TOKEN"')
    lines.append("-d " + shell_quote(body))
    return " \\\n  ".join(lines)


def example_params(example: Json) -> dict[str, Json]:
    """An OpenRPC example pairing's params as a by-name object."""
    return {p["name"]: p["value"] for p in example.get("params", [])}


def _overview(doc: Json, methods: list[Json]) -> str:
    """Transport, authentication, long poll, files and errors."""
    app_errors: dict[int, tuple[str, list[str]]] = {}
    for m in methods:
        for err in m.get("errors", []):
            entry = app_errors.setdefault(err["code"], (err["message"], []))
            entry[1].append(m["name"])
    rows = [f"<tr><td class='name'>{code(str(c))}</td><td>{inline(text)}</td>"
            "<td class='muted'>any request</td></tr>" for c, text in PROTOCOL_ERRORS]
    rows.insert(0, "<tr><th class='code'>code</th><th>meaning</th><th>returned by</th></tr>")
    for c, (text, names) in sorted(app_errors.items()):
        links = _returned_by(names, methods)
        rows.append(f"<tr><td class='name'>{code(str(c))}</td><td>{inline(text)}</td>"
                    f"<td>{links}</td></tr>")
    login = curl_command({"name": "session.connect", "x-auth": "none"},
                         {"username": "alice", "password": "correct horse"})
    keep_token = ("# log in and keep the token for the other examples (needs jq):\n"
                  f"TOKEN=$({login} \\\n  | jq -r .result.token)")
    batch = BATCH_EXAMPLE.replace("BASE", BASE_URL)
    poll = POLL_EXAMPLE.replace("BASE", BASE_URL)
    files = FILES_EXAMPLE.replace("BASE", BASE_URL)
    return f"""
<section id="overview">
<h1 class="title">{html.escape(doc["info"]["title"])}</h1>
<p class="muted">Version {html.escape(doc["info"]["version"])} · OpenRPC {html.escape(
        doc["openrpc"])} · the machine-readable form of this page is
<a href="/openrpc.json"><code>GET /openrpc.json</code></a> (or the method
<a href="#{method_anchor('rpc.discover')}"><code>rpc.discover</code></a>).</p>
<p>A long-polling JSON-RPC 2.0 messenger: calls go to <code>POST /rpc</code>, each user's
events come from <code>GET /poll</code>, attachments go through <code>/files</code>. Everything
on this page is generated from the JSON Schemas the server validates requests with, and every
method example below is run against a real server by the test suite.</p>
</section>

<section id="transport">
<h2 class="part">Transport</h2>
<p>Every call is a <a href="https://www.jsonrpc.org/specification">JSON-RPC 2.0</a> request
sent with <code>POST /rpc</code>. Params are passed <em>by name</em> (a JSON object; leave
them out, or send <code>{{}}</code>, for methods without params). Every result is a JSON
object. A request without an <code>id</code> is a notification: it runs, and gets no answer.
A JSON array of requests is a batch (up to <code>--max-batch</code>, 100 by default): the
answer is the array of the answers, and HTTP 204 with no body when all were notifications.
A body over <code>--max-body</code> (1 MiB) is refused with HTTP 413. The answers of one
request share <code>--max-response</code> bytes (4 MiB): an answer that does not fit is
error <code>413</code> in its place, and once one does not fit the later calls of the batch
answer 413 without running. Headers and body must arrive within <code>--read-timeout</code>
(30 s) of the request's first byte (HTTP 408 or the connection is closed). The id of an answer is
the id of its request exactly as sent, even a number beyond 64 bits. Examples on this page
use <code>{BASE_URL}</code>, the server's default address; <code>/openrpc.json</code> names
the address you reached it at (or <code>--public-url</code>, behind a proxy). Pages of other
origins may call <code>/rpc</code>, <code>/poll</code> and <code>/files</code> only when the
server lists them in <code>--cors-origins</code>.</p>
{pre(batch)}
</section>

<section id="auth">
<h2 class="part">Authentication</h2>
<p>Call <a href="#{method_anchor('session.connect')}"><code>session.connect</code></a> (no
token needed: the first connect of a new username registers it) and send the
<code>token</code> it returns as <code>Authorization: Bearer &lt;token&gt;</code> with every
other call, and with <code>/poll</code> and <code>/files</code>. Only
<code>session.connect</code> and <code>rpc.discover</code> work without it. A token lasts
until <a href="#{method_anchor('session.disconnect')}"><code>session.disconnect</code></a>,
across server restarts. Each client (laptop, phone) should open its own session.</p>
{pre(keep_token)}
<p>A missing or bad token is error <code>401</code>: as a JSON-RPC error on
<code>/rpc</code>, and as HTTP 401 with the body
<code>{{"error": {{"code": 401, "message": ...}}}}</code> on <code>/poll</code> and
<code>/files</code>.</p>
</section>

<section id="poll">
<h2 class="part">Events: long poll and cursors</h2>
<p>Every user has one ordered event stream; each event carries an integer <code>seq</code>
that only grows. <code>GET /poll?cursor=C&amp;timeout=T&amp;limit=L</code> answers
<code>{{"events": [...], "cursor": C2, "more": bool}}</code> with the caller's events whose
<code>seq</code> &gt; C, oldest first, at most L of them; when there are none yet it waits up to
T seconds (then <code>events</code> is empty and <code>cursor</code> is C). Continue with the
returned <code>cursor</code>; <code>more</code> says that further events are already
waiting. The same params and answer, as a JSON-RPC method:
<a href="#{method_anchor('events.poll')}"><code>events.poll</code></a>.</p>
{_poll_tables(doc, methods)}
<p><strong>The cursor acknowledges.</strong> Polling with cursor C acknowledges everything up
to C: it moves your read marker forward to C. So a client that reconnects
<em>without</em> a cursor gets every event it has not acknowledged, from the general chat and
private chats alike, and the <code>unread</code> counts of
<a href="#{method_anchor('session.status')}"><code>session.status</code></a> follow the
marker. <strong>Nothing is ever skipped:</strong> an event is returned again until a later
poll acknowledges it, so redelivery is normal and a client should handle an event it has
seen before. All of a user's clients see the same stream, their own sent messages included,
so two clients of one user stay in sync. Every event is <code>{{"seq", "type", ...}}</code>
with its fields beside them; see <a href="#events">Events</a> for each type.</p>
{pre(poll)}
</section>

<section id="files">
<h2 class="part">Files</h2>
<p><code>POST /files?name=N</code> with the file's bytes as the raw request body (its
<code>Content-Type</code> is kept) answers
<code>{{"file_id", "name", "size", "content_type"}}</code>; send the <code>file_id</code> in
the <code>attachments</code> of
<a href="#{method_anchor('messages.send')}"><code>messages.send</code></a>. A file over
<code>--max-file-size</code> (5 MiB) is refused with HTTP 413 and nothing is stored, and so is
one that would take your files past <code>--user-storage</code> (100 MiB; files count until
they expire, those attached to pending scheduled messages included, each at least 4 KiB).
A malformed header (a <code>Content-Type</code> that is not printable ASCII) is HTTP 400.
<code>GET /files/{{file_id}}</code> returns the bytes, only to the uploader and to members of
a chat where the file was sent (others get 404).</p>
{pre(files)}
</section>

<section id="errors">
<h2 class="part">Errors</h2>
<p>A failed call answers a JSON-RPC error object <code>{{"code", "message", "data"}}</code>.
The codes are those of JSON-RPC 2.0, and application codes that mirror the HTTP status they
resemble, with details in <code>data</code>. An error never leaves half-done state behind.</p>
<table>{"".join(rows)}</table>
</section>
"""


def _poll_tables(doc: Json, methods: list[Json]) -> str:
    """GET /poll's query and answer, from the schemas of events.poll (its twin)."""
    twin = next((m for m in methods if m["name"] == "events.poll"), None)
    if twin is None:
        return ""
    r = Renderer(doc)
    rows = ["<table><tr><th>query</th><th>type</th><th>meaning</th></tr>"]
    for p in twin.get("params", []):
        rows.append(f"<tr><td class='name'>{code(p['name'])}</td>"
                    f"<td>{r.type_html(p['schema'])}</td>"
                    f"<td>{inline(p.get('description') or r.describe(p['schema']))}"
                    f"{r.constraint_note(p['schema'])}</td></tr>")
    rows.append("</table>")
    result = twin.get("result", {})
    rows.append(f"<p>The answer: {inline(result.get('description', ''))} A refused query "
                "(a bad number, or a cursor beyond the newest event) is HTTP 400 with error "
                "code <code>-32602</code> and moves nothing; <code>HEAD /poll</code> moves "
                "nothing either. If the session ends while a poll waits, the poll answers "
                "HTTP 401 at once.</p>")
    rows.append(r.result_html(result.get("schema", {})))
    return "".join(rows)


def _returned_by(names: list[str], methods: list[Json]) -> str:
    """Which methods answer an error code, summarised when it is all (token) methods."""
    everyone = {m["name"] for m in methods}
    with_token = {m["name"] for m in methods if m.get("x-auth") != "none"}
    rest, prefix = set(names), ""
    if rest == everyone:
        return "every method"
    if with_token <= rest:
        rest -= with_token
        prefix = "every method that needs a token" + (", and " if rest else "")
    return prefix + ", ".join(f"<a href='#{method_anchor(n)}'>{html.escape(n)}</a>"
                              for n in in_order(rest, METHOD_ORDER))


def _method(r: Renderer, m: Json) -> str:
    """One method's section."""
    name = m["name"]
    badge = ("<span class='badge open'>no token</span>" if m.get("x-auth") == "none"
             else "<span class='badge auth'>Bearer token</span>")
    parts = [f"<section id='{method_anchor(name)}'>",
             f"<h3><code>{html.escape(name)}</code>{badge}</h3>",
             f"<p class='summary'>{inline(m.get('summary', ''))}</p>",
             f"<p>{inline(m.get('description', ''))}</p>", "<h4>Params</h4>"]
    params = m.get("params", [])
    if params:
        parts.append("<table><tr><th>name</th><th>type</th><th>required</th>"
                     "<th>description</th></tr>")
        for p in params:
            req = ("<span class='req'>required</span>" if p.get("required")
                   else "<span class='opt'>optional</span>")
            parts.append(f"<tr><td class='name'>{code(p['name'])}</td>"
                         f"<td>{r.type_html(p['schema'])}</td><td>{req}</td>"
                         f"<td>{inline(p.get('description', ''))}"
                         f"{r.constraint_note(p['schema'])}</td></tr>")
        parts.append("</table>")
        parts.append(_param_rules(m.get("x-params-constraints", {})))
    else:
        parts.append("<p>None: send <code>{}</code> or leave <code>params</code> out.</p>")
    parts.append("<h4>Result</h4>")
    result = m.get("result", {})
    if r.ref_name(result.get("schema")) == "empty":
        parts.append("<p>An empty object <code>{}</code>: it worked.</p>")
    else:
        if result.get("description"):
            parts.append(f"<p>{inline(result['description'])}</p>")
        parts.append(r.result_html(result.get("schema", {})))
    parts.append("<h4>Errors</h4><table><tr><th>code</th><th>meaning</th></tr>")
    parts.extend(f"<tr><td class='name'>{code(str(e['code']))}</td>"
                 f"<td>{inline(e['message'])}</td></tr>" for e in m.get("errors", []))
    parts.append("</table><h4>Examples</h4>")
    for ex in m.get("examples", []):
        parts.append("<div class='example'>"
                     f"<p><span class='ename'>{html.escape(ex['name'])}</span>"
                     + (f" — {inline(ex['description'])}" if ex.get("description") else "")
                     + "</p>" + pre(curl_command(m, example_params(ex)))
                     + "<p class='muted'>result:</p>"
                     + pre(pretty(ex.get("result", {}).get("value"), width=WIDE)) + "</div>")
    parts.append("</section>")
    return "".join(parts)


def _param_rules(constraints: Json) -> str:
    """`oneOf` / `anyOf` over required params, in words."""
    notes = []
    for key, words in (("oneOf", "Exactly one of"), ("anyOf", "At least one of")):
        names = [n for alt in constraints.get(key, []) for n in alt.get("required", [])]
        if names:
            notes.append(f"{words} {', '.join(code(n) for n in names)}.")
    return f"<p>{' '.join(notes)}</p>" if notes else ""


def _examples(values: list[Json]) -> str:
    """Example values, each in its own block, under one heading."""
    if not values:
        return ""
    title = "Example" if len(values) == 1 else "Examples"
    return f"<h4>{title}</h4>" + "".join(pre(pretty(v, width=WIDE)) for v in values)


def _event(r: Renderer, type_: str, schema: Schema) -> str:
    """One event type's section."""
    return (f"<section id='{event_anchor(type_)}'><h3><code>{html.escape(type_)}</code></h3>"
            f"<p>{inline(schema.get('description', ''))}</p><h4>Fields</h4>"
            f"{r.fields_table(schema)}{_examples(schema.get('examples', []))}</section>")


def _type(r: Renderer, name: str, schema: Schema) -> str:
    """One shared type's section."""
    head = (f"<section id='{type_anchor(name)}'><h3><code>{html.escape(name)}</code></h3>"
            f"<p>{inline(schema.get('description', ''))}</p>")
    if r.properties(schema)[0] or name == "empty":
        return head + r.fields_table(schema) + _examples(schema.get("examples", [])) + "</section>"
    facts = [r.type_html(schema)]
    cons = r.constraints(schema)
    if cons:
        facts.append(cons)
    values = schema.get("examples", [])
    if values:
        facts.append("e.g. " + ", ".join(code(json.dumps(v)) for v in values))
    return head + f"<p>{' · '.join(facts)}</p></section>"


def _sidebar(doc: Json, r: Renderer, groups: dict[str, list[Json]]) -> str:
    """The table of contents."""
    def item(anchor: str, label: str) -> str:
        return f"<li><a href='#{anchor}'>{label}</a></li>"

    parts = ["<nav>", f"<h1>{html.escape(doc['info']['title'])}</h1>",
             f"<div class='ver'>v{html.escape(doc['info']['version'])}</div>",
             "<h2>Overview</h2><ul>",
             item("transport", "Transport"), item("auth", "Authentication"),
             item("poll", "Events: long poll"), item("files", "Files"),
             item("errors", "Errors"), "</ul>"]
    for tag, ms in groups.items():
        parts.append(f"<h2>{html.escape(TAG_TITLES.get(tag, tag))}</h2><ul>")
        parts.extend(item(method_anchor(m["name"]), code(m["name"])) for m in ms)
        parts.append("</ul>")
    parts.append("<h2><a href='#events'>Events</a></h2><ul>")
    parts.extend(item(event_anchor(t), code(t)) for t in r.events)
    parts.append("</ul><h2><a href='#types'>Types</a></h2><ul>")
    parts.extend(item(type_anchor(t), code(t)) for t in r.types)
    parts.append("</ul></nav>")
    return "".join(parts)


def render_docs(openrpc: dict[str, Any]) -> str:
    """The whole reference as one HTML page."""
    r = Renderer(openrpc)
    groups: dict[str, list[Json]] = {tag: [] for tag in TAG_TITLES}
    by_name = {m["name"]: m for m in openrpc["methods"]}
    for m in (by_name[n] for n in in_order(by_name, METHOD_ORDER)):
        tag = (m.get("tags") or [{"name": m["name"].split(".")[0]}])[0]["name"]
        groups.setdefault(tag, []).append(m)
    groups = {tag: ms for tag, ms in groups.items() if ms}
    body = [_sidebar(openrpc, r, groups), "<main>", _overview(openrpc, openrpc["methods"])]
    body.append("<h2 class='part' id='methods'>Methods</h2>")
    for ms in groups.values():
        body.extend(_method(r, m) for m in ms)
    body.append("<h2 class='part' id='events'>Events</h2>"
                "<p>What <a href='#poll'><code>GET /poll</code></a> returns, one object per "
                "event: <code>seq</code> and <code>type</code>, and the fields of its type.</p>")
    body.extend(_event(r, t, s) for t, s in r.events.items())
    body.append("<h2 class='part' id='types'>Types</h2>"
                "<p>Shared shapes that params, results and events refer to.</p>")
    body.extend(_type(r, t, s) for t, s in r.types.items())
    body.append("</main>")
    title = html.escape(openrpc["info"]["title"])
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{title} reference</title><style>{STYLE}</style></head><body>"
            + "".join(body) + "</body></html>")
