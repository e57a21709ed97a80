"""rpc.discover: the OpenRPC document built from schemas/ at start-up."""
from __future__ import annotations

from methods.base import Method, Params, Result
from methods.context import Caller, Request, Services


class Discover(Method):
    """The OpenRPC description of this API (same as GET /openrpc.json)."""

    name = "rpc.discover"
    auth = False

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        return services.openrpc
