"""No drift between methods/, schemas/, the OpenRPC document, rpc.discover and /docs."""
from __future__ import annotations

import html
import json
import re
import shlex
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import aiohttp
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

import schemas
from methods.base import Method
from methods.registry import build_registry
from methods.errors import ErrorCode
from rpc.docs import method_anchor, render_docs
from rpc.docs_schema import event_anchor, type_anchor
from rpc.openrpc import build_openrpc
from rpc.validation import compile_schema
from tests.support import Api, ServerProcess

DATA = Path(__file__).parent / "meta_schemas"
# The released OpenRPC meta-schema refers to its JSON Schema meta-schema by these URIs.
JSON_SCHEMA_TOOLS = ("https://meta.json-schema.tools", "https://meta.json-schema.tools/")
VOID_TAGS = {"meta", "br", "hr", "img", "input", "link"}


def registered_methods() -> dict[str, Method]:
    """The server's methods, from the registry the server builds."""
    return dict(build_registry())


@cache
def openrpc_doc() -> dict[str, Any]:
    """The document the server builds at start-up (a JSON round trip, as clients get it)."""
    doc: dict[str, Any] = json.loads(json.dumps(build_openrpc(registered_methods())))
    return doc


@cache
def docs_page() -> str:
    """The /docs page the server serves."""
    return render_docs(openrpc_doc())


def meta_validator() -> Draft7Validator:
    """The OpenRPC 1.3 meta-schema, offline (tests/meta_schemas/README.md says where it is from).

    Its `$schema` names the json-schema.tools dialect, which is draft-07 with its own
    meta-schema: so it is checked as draft-07, with that meta-schema shipped beside it.
    """
    meta = json.loads((DATA / "openrpc-meta-schema.json").read_text(encoding="utf-8"))
    tools = json.loads((DATA / "json-schema-tools-meta-schema.json").read_text(encoding="utf-8"))
    resource: Resource[Any] = Resource.from_contents(tools, default_specification=DRAFT7)
    registry: Registry[Any] = Registry().with_resources(
        [(uri, resource) for uri in JSON_SCHEMA_TOOLS])
    return Draft7Validator(meta, registry=registry)


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` value in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def undescribed(schema: Any, path: str) -> Iterator[str]:
    """Paths of properties (at any depth) with no description of their own or by `$ref`."""
    if not isinstance(schema, dict):
        return
    for name, prop in schema.get("properties", {}).items():
        target = schemas.defs()["$defs"].get(str(prop.get("$ref", "")).rpartition("/")[2], {})
        if not prop.get("description") and not target.get("description"):
            yield f"{path}/{name}"
        yield from undescribed(prop, f"{path}/{name}")
    for key in ("items", "allOf", "oneOf", "anyOf"):
        value = schema.get(key)
        for i, sub in enumerate(value if isinstance(value, list) else [value]):
            yield from undescribed(sub, f"{path}/{key}/{i}")


def test_every_method_has_a_schema_file_and_every_file_a_method() -> None:
    """methods/ and schemas/methods/ name the same methods, each file after its method."""
    assert set(registered_methods()) == set(schemas.method_schemas())
    for path in (schemas.SCHEMA_DIR / "methods").glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8"))["name"] == path.stem


def test_every_schema_is_described_and_has_examples() -> None:
    """Methods, params, results, events, types and all their fields say what they are."""
    methods = registered_methods()
    known = {int(code) for code in ErrorCode}
    for name, ms in schemas.method_schemas().items():
        assert ms.summary and ms.description, name
        assert ms.params.get("description") and ms.result.get("description"), name
        assert ms.examples, f"{name} has no example"
        assert all(ex.get("description") for ex in ms.examples), name
        assert ms.auth == methods[name].auth, f"{name}: auth differs from the method class"
        assert set(ms.errors) <= known, name
        assert 401 in ms.errors or not ms.auth, f"{name} needs a token but does not list 401"
        for part in ("params", "result"):
            assert not list(undescribed(getattr(ms, part), f"{name}/{part}"))
    for type_, schema in schemas.event_schemas().items():
        assert schema.get("description") and schema.get("examples"), type_
        assert schema["properties"]["type"]["const"] == type_
        assert not list(undescribed(schema, type_))
    for name, schema in schemas.defs()["$defs"].items():
        assert schema.get("description") and schema.get("examples"), name
        assert not list(undescribed(schema, name))


def test_documented_params_and_results_match_their_schemas() -> None:
    """Every example's params and result, and every event example, validate."""
    for ms in schemas.method_schemas().values():
        params, result = compile_schema(ms.params), compile_schema(ms.result)
        for example in ms.examples:
            params.validate(example["params"])
            result.validate(example["result"])
    for schema in schemas.event_schemas().values():
        validator = compile_schema(schema)
        for event in schema["examples"]:
            validator.validate(event)
    for name, schema in schemas.defs()["$defs"].items():
        validator = compile_schema({"$ref": f"{schemas.DEFS_URI}#/$defs/{name}"})
        for value in schema["examples"]:
            validator.validate(value)


def test_openrpc_document_is_valid_against_the_meta_schema() -> None:
    """The served document is OpenRPC 1.3; the meta-schema does reject a broken one."""
    validator = meta_validator()
    doc = openrpc_doc()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert doc["openrpc"].startswith("1.3.")
    broken = json.loads(json.dumps(doc))
    del broken["methods"][0]["params"]
    broken["methods"][1]["errors"].append({"code": "401"})
    assert len(list(validator.iter_errors(broken))) == 2


def test_openrpc_document_is_self_contained_and_its_examples_validate() -> None:
    """Every `$ref` resolves inside the document, and its examples fit its own schemas."""
    doc = openrpc_doc()
    components = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rpartition("/")[2] in components, ref
    registry: Registry[Any] = Registry().with_resource(
        "openrpc.json", Resource.from_contents(doc, default_specification=DRAFT202012))

    def validator(pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": "openrpc.json#" + pointer}, registry=registry)

    assert {m["name"] for m in doc["methods"]} == set(registered_methods())
    for i, method in enumerate(doc["methods"]):
        assert method["examples"], method["name"]
        for example in method["examples"]:
            validator(f"/methods/{i}/result/schema").validate(example["result"]["value"])
            for param in example["params"]:
                j = [p["name"] for p in method["params"]].index(param["name"])
                validator(f"/methods/{i}/params/{j}/schema").validate(param["value"])
    for name, schema in components.items():
        for value in schema.get("examples", []):
            validator(f"/components/schemas/{name}").validate(value)


class TagBalance(HTMLParser):
    """Records ids, internal links and nesting errors of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open a tag; note its id and internal link."""
        found = dict(attrs)
        if found.get("id"):
            self.ids.append(str(found["id"]))
        href = found.get("href") or ""
        if href.startswith("#"):
            self.links.append(href[1:])
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        """Close a tag: it must be the innermost open one."""
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unexpected </{tag}>")


def test_docs_page_covers_every_method_event_and_type_with_working_links() -> None:
    """/docs has a section for each, well-nested HTML, no script, and no dangling link."""
    page = docs_page()
    parser = TagBalance()
    parser.feed(page)
    assert parser.problems == [] and parser.stack == []
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    assert set(parser.links) <= set(parser.ids)
    assert "<script" not in page.lower()
    for name in registered_methods():
        assert method_anchor(name) in parser.ids and f"#{method_anchor(name)}" in page
    for type_ in schemas.event_schemas():
        assert event_anchor(type_) in parser.ids
    for name in schemas.defs()["$defs"]:
        assert type_anchor(name) in parser.ids
    for section in ("transport", "auth", "poll", "files", "health", "errors"):
        assert section in parser.ids
    assert "<code>GET /health</code>" in page
    for code in (-32700, -32600, -32601, -32602, -32603, 401, 403, 404, 409, 413, 429):
        assert f"<code>{code}</code>" in page, code


def test_docs_curl_examples_are_valid_requests() -> None:
    """Each method example on /docs is a curl call whose body is a valid request to it."""
    blocks = re.findall(r"<div class='example'>.*?<pre><code>(.*?)</code></pre>", docs_page(),
                        flags=re.S)
    commands = [html.unescape(b) for b in blocks]
    by_method: dict[str, int] = {}
    for command in commands:
        words = shlex.split(command.replace("\\\n", " "))
        assert words[:3] == ["curl", "-s", "http://127.0.0.1:8000/rpc"], words
        request = json.loads(words[words.index("-d") + 1])
        assert request["jsonrpc"] == "2.0" and "id" in request
        ms = schemas.method_schemas()[request["method"]]
        compile_schema(ms.params).validate(request.get("params", {}))
        assert ("Authorization: Bearer $TOKEN" in words) == ms.auth, ms.name
        by_method[ms.name] = by_method.get(ms.name, 0) + 1
    assert by_method == {name: len(ms.examples) for name, ms in schemas.method_schemas().items()}


async def test_served_document_and_page_are_the_generated_ones(
        http: aiohttp.ClientSession, server: ServerProcess) -> None:
    """rpc.discover == GET /openrpc.json == the built document; GET /docs is that page."""
    discovered = await Api(http, server.url).call("rpc.discover")
    async with http.get(server.url + "/openrpc.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        served = await r.json()
    # Served with the absolute URL the client reached (tests/test_openrpc_tools.py).
    built = {**openrpc_doc(), "servers": [{**openrpc_doc()["servers"][0],
                                           "url": server.url + "/rpc"}]}
    assert discovered == served == built
    async with http.get(server.url + "/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert await r.text() == docs_page()
