"""The method registry: every method, by name, built in one place from each module's
explicit `METHODS` tuple."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType

from methods import chats, discover, essentials, messages, poll, session, users
from methods.base import Method, PublicMethod, UserMethod

# Every module that defines methods; each lists its method classes in `METHODS`.
MODULES: tuple[ModuleType, ...] = (session, messages, essentials, chats, users, poll, discover)


class Registry(Mapping[str, Method]):
    """The methods this server answers, by name (read-only)."""

    def __init__(self, methods: Iterable[Method]) -> None:
        self._methods: dict[str, Method] = {}
        for method in methods:
            if not method.name:
                raise RuntimeError(f"{type(method).__name__} has no name")
            if not isinstance(method, (UserMethod, PublicMethod)):
                raise RuntimeError(f"{method.name} is neither a UserMethod nor a PublicMethod")
            if method.name in self._methods:
                raise RuntimeError(f"method {method.name} defined twice")
            self._methods[method.name] = method

    def __getitem__(self, name: str) -> Method:
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)


def build_registry(modules: Iterable[ModuleType] = MODULES) -> Registry:
    """One instance of every method class the modules list."""
    classes: list[type[Method]] = []
    for module in modules:
        classes.extend(module.METHODS)
    return Registry(cls() for cls in classes)
