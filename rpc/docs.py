"""The human-readable API reference served at /docs, generated from the OpenRPC document."""
from __future__ import annotations

import html
import json
from typing import Any


def render_docs(openrpc: dict[str, Any]) -> str:
    """A single HTML page describing every method."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Messenger API</title>",
             "</head><body><h1>Messenger API</h1>"]
    for m in openrpc["methods"]:
        parts.append(f"<h2 id='{html.escape(m['name'])}'>{html.escape(m['name'])}</h2>")
        parts.append(f"<p>{html.escape(m['description'])}</p>")
        for ex in m.get("examples", []):
            params = {p["name"]: p["value"] for p in ex["params"]}
            parts.append(f"<pre>{html.escape(json.dumps(params, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)
