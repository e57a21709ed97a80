"""CORS (--cors-origins): lets pages of the allowed origins call /rpc, /poll and /files.

Nothing is allowed unless origins are configured. A preflight (`OPTIONS` with
`Access-Control-Request-Method`) is answered here; every other answer of a covered path,
errors included, gets `Access-Control-Allow-Origin` just before its headers are sent.
Tokens travel in the `Authorization` header, never in cookies, so no credentials mode.
"""
from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

ALLOW_HEADERS = "Authorization, Content-Type"
# What a page may read of an answer besides the always-safe headers.
EXPOSE_HEADERS = "Content-Disposition, Content-Length, Retry-After"
MAX_AGE = "600"


def allowed_methods(path: str) -> str | None:
    """The methods a covered path answers, or None for a path CORS does not cover."""
    if path in ("/rpc", "/files"):
        return "POST"
    if path == "/poll" or (path.startswith("/files/") and "/" not in path[7:] and path[7:]):
        return "GET, HEAD"
    if path == "/openrpc.json":
        return "GET"
    return None


def normalize(origin: str) -> str:
    """An origin as browsers send it: lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


class Cors:
    """The allowed origins, and the middleware and hook that apply them."""

    def __init__(self, origins: frozenset[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(normalize(o) for o in origins if o != "*")

    def allow_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request's Origin, if it is allowed."""
        if not origin:
            return None
        if self.any:
            return "*"
        return origin if normalize(origin) in self.origins else None

    def middleware(self) -> Middleware:
        """Answers preflights of covered paths (before routing would say 405)."""

        @web.middleware
        async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
            methods = allowed_methods(request.path)
            if (request.method != "OPTIONS" or methods is None
                    or "Access-Control-Request-Method" not in request.headers):
                return await handler(request)
            origin = self.allow_origin(request.headers.get("Origin"))
            if origin is None:
                return web.Response(status=403, content_type="application/json", body=orjson.dumps(
                    {"error": {"code": 403, "message": "origin not allowed (--cors-origins)"}}))
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
                "Vary": "Origin"})

        return cors_preflight

    async def on_response_prepare(self, request: web.Request,
                                  response: web.StreamResponse) -> None:
        """Adds the CORS headers to an answer of a covered path for an allowed origin."""
        if request.method == "OPTIONS" or allowed_methods(request.path) is None:
            return
        if not self.any:
            response.headers.add("Vary", "Origin")
        origin = self.allow_origin(request.headers.get("Origin"))
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def install(app: web.Application, origins: frozenset[str]) -> None:
    """Enable CORS for `origins` on the app (nothing at all when there are none)."""
    if not origins:
        return
    cors = Cors(origins)
    app.middlewares.insert(0, cors.middleware())
    app.on_response_prepare.append(cors.on_response_prepare)
