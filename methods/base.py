"""The method interface and the registry that finds every method class."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from methods.context import Caller, Request, Services

Params = dict[str, Any]
Result = dict[str, Any]


class Method:
    """One JSON-RPC method: its name, whether it needs a session, and its use case."""

    name: ClassVar[str] = ""
    auth: ClassVar[bool] = True

    async def call(self, services: Services, caller: Caller | None, params: Params,
                   request: Request) -> Result:
        """Run the method with already validated params."""
        raise NotImplementedError


def discover_methods() -> dict[str, Method]:
    """Instantiate every `Method` subclass defined in the `methods` package, by name."""
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        importlib.import_module(f"methods.{info.name}")
    found: dict[str, Method] = {}
    stack: list[type[Method]] = list(Method.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.name and cls.__module__.startswith("methods."):
            if cls.name in found:
                raise RuntimeError(f"method {cls.name} defined twice")
            found[cls.name] = cls()
    return found
