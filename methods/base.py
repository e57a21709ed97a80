"""The method interfaces: one for methods a session calls, one for methods anyone calls.

Params arrive already validated against the method's schema, typed as the method's own
TypedDict (named after the method, next to its class).
"""
from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from methods.context import Caller, Request, Services

Result = dict[str, Any]
P = TypeVar("P")


class Method:
    """One JSON-RPC method: its name and whether it needs a session (see the two kinds)."""

    name: ClassVar[str] = ""
    auth: ClassVar[bool] = True


class UserMethod(Method, Generic[P]):
    """A method a session calls: it runs for the authenticated caller."""

    auth: ClassVar[bool] = True

    async def call(self, services: Services, caller: Caller, params: P,
                   request: Request) -> Result:
        """Run the method with already validated params."""
        raise NotImplementedError


class PublicMethod(Method, Generic[P]):
    """A method anyone may call, without a token."""

    auth: ClassVar[bool] = False

    async def call(self, services: Services, params: P, request: Request) -> Result:
        """Run the method with already validated params."""
        raise NotImplementedError
