"""rpc.discover: the OpenRPC document built from schemas/ at start-up."""
from __future__ import annotations

from typing import Any, TypedDict

from methods.base import PublicMethod, Result
from methods.context import Request, Services


def document_for(openrpc: dict[str, Any], rpc_url: str | None) -> dict[str, Any]:
    """The document as served to one client: its server is the absolute URL it called."""
    if not rpc_url or not openrpc.get("servers"):
        return openrpc
    return {**openrpc, "servers": [{**openrpc["servers"][0], "url": rpc_url}]}


class DiscoverParams(TypedDict):
    """rpc.discover's params (none)."""


class Discover(PublicMethod[DiscoverParams]):
    """The OpenRPC description of this API (same as GET /openrpc.json)."""

    name = "rpc.discover"

    async def call(self, services: Services, params: DiscoverParams,
                   request: Request) -> Result:
        return document_for(services.openrpc, request.rpc_url)


METHODS = (Discover,)
