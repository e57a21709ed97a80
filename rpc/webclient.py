"""The browser client: the static files under rpc/static, served at / with a strict CSP."""
from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page loads nothing from elsewhere and runs no inline script or style: a stolen
# message text can never become code. Framing is refused (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ClientFile:
    """One static file, read once at start-up (the whole client is a few dozen KB)."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"%s"' % hashlib.sha256(body).hexdigest()[:20]


CLIENT_FILES = web.AppKey("client_files", dict[str, ClientFile])


def load_client_files(root: Path = STATIC_DIR) -> dict[str, ClientFile]:
    """Every servable file under `root`, keyed by its path relative to it ("js/app.js")."""
    files: dict[str, ClientFile] = {}
    for path in sorted(root.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.relative_to(root).as_posix()] = ClientFile(path.read_bytes(), content_type)
    return files


def client_size(files: dict[str, ClientFile]) -> int:
    """Bytes of the whole client (what a first visit downloads)."""
    return sum(len(f.body) for f in files.values())


def _serve(request: web.Request, name: str) -> web.Response:
    found = request.app[CLIENT_FILES].get(name)
    if found is None:
        raise web.HTTPNotFound(text="not found", headers=SECURITY_HEADERS)
    # no-cache: revalidate each time (cheap with the ETag) so an upgraded server's client is
    # picked up at once, never mixed with stale modules.
    headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": "no-cache"}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})


async def handle_index(request: web.Request) -> web.StreamResponse:
    """GET /: the browser client's page."""
    return _serve(request, "index.html")


async def handle_static(request: web.Request) -> web.StreamResponse:
    """GET /static/{path}: the client's scripts, style sheet and icon."""
    return _serve(request, request.match_info["path"])


def add_client_routes(app: web.Application) -> None:
    """Serve the browser client at / and its files under /static/."""
    app[CLIENT_FILES] = load_client_files()
    app.router.add_get("/", handle_index)
    app.router.add_get("/static/{path:.+}", handle_static)
