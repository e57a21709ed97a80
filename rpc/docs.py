"""The human-readable API reference served at /docs, generated from the OpenRPC document.

One static HTML page, no JavaScript: an overview of the transport (POST /rpc, /poll,
/files, errors), then every method, every event type and every shared type, all rendered
from the OpenRPC document that rpc/openrpc.py builds from schemas/.
"""
from __future__ import annotations

import html
import json
import string
from pathlib import Path
from typing import Any

from rpc.docs_schema import (Json, Renderer, Schema, code, event_anchor, inline, pre, pretty,
                             type_anchor)

BASE_URL = "http://127.0.0.1:8000"
WIDE = 100  # characters per line of example JSON
# Methods are listed by area (the name's prefix) in this order, then by name; an area not
# named here comes after these, titled by its prefix. Event types are listed by name.
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

TEMPLATES = Path(__file__).parent / "templates"


def _template(name: str) -> string.Template:
    """A page template of rpc/templates/ (`$name` placeholders)."""
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def area(name: str) -> str:
    """A method's area: the prefix of its name (`messages` of `messages.send`)."""
    return name.split(".")[0]


def method_key(name: str) -> tuple[int, str, str]:
    """Where a method is listed: by area (TAG_TITLES order, other areas after), then name."""
    areas = list(TAG_TITLES)
    rank = areas.index(area(name)) if area(name) in areas else len(areas)
    return rank, area(name), name


def ordered_methods(methods: list[Json]) -> list[Json]:
    """OpenRPC method objects in the order the page lists them."""
    return sorted(methods, key=lambda m: method_key(m["name"]))


def shell_quote(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def method_anchor(name: str) -> str:
    """The id of a method's section."""
    return "method-" + name


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
    return "\n" + _template("docs_overview.html").substitute(
        title=html.escape(doc["info"]["title"]), version=html.escape(doc["info"]["version"]),
        openrpc=html.escape(doc["openrpc"]), base_url=BASE_URL, batch=pre(batch),
        keep_token=pre(keep_token), poll_tables=_poll_tables(doc, methods), poll=pre(poll),
        files=pre(files), errors="".join(rows))


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
                              for n in sorted(rest, key=method_key))


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
             item("health", "Health"), item("errors", "Errors"), "</ul>"]
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
    groups: dict[str, list[Json]] = {}
    for m in ordered_methods(openrpc["methods"]):
        groups.setdefault(area(m["name"]), []).append(m)
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
    page = _template("docs.html").substitute(
        title=title, style=(TEMPLATES / "docs.css").read_text(encoding="utf-8"),
        body="".join(body))
    return page.removesuffix("\n")
