"""The tree's shape: no import circle among our packages, no oversized file.

Imports are read with `ast` from every module under rpc/, methods/, store/, client/ and
schemas/, wherever they sit (inside functions and `if TYPE_CHECKING:` blocks too), so a
circle cannot hide behind a late import.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any, get_args, get_origin

import pytest

import methods
from methods.base import Method, PublicMethod, UserMethod
from methods.registry import MODULES, Registry, build_registry
from schemas import method_schemas
from tests.support import ROOT

PACKAGES = ("rpc", "methods", "store", "client", "schemas")
SERVER_PACKAGES = ("rpc", "methods", "store", "schemas")
MAX_LINES = 450


def module_name(path: Path) -> str:
    """`client/api.py` -> `client.api`; `client/__init__.py` -> `client`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that a module imports (anywhere in it)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def import_graph() -> dict[str, set[str]]:
    """Who imports whom, among our modules."""
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_cycles_hidden_in_functions(tmp_path: Path) -> None:
    """The checker itself: a late (function-level, TYPE_CHECKING) import is an edge."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "x.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from .y import Y\ndef f():\n    from pkg import z\n")
    known = {"pkg", "pkg.x", "pkg.y", "pkg.z"}
    assert imports_of("pkg.x", source, known) == {"pkg.y", "pkg.z"}


def long_files(packages: tuple[str, ...]) -> dict[str, int]:
    """Files (any kind) over MAX_LINES lines under these packages."""
    out: dict[str, int] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            try:
                count = len(path.read_text(encoding="utf-8").splitlines())
            except UnicodeDecodeError:
                continue
            if count > MAX_LINES:
                out[str(path.relative_to(ROOT))] = count
    return out


def test_no_client_file_is_too_long() -> None:
    assert long_files(("client",)) == {}


def test_no_server_file_is_too_long() -> None:
    assert long_files(SERVER_PACKAGES) == {}


# -- the method registry: a name needs its schema, its class and its client method ---------

def client_method_names() -> set[str]:
    """The method names client/api.py calls."""
    source = (ROOT / "client" / "api.py").read_text(encoding="utf-8")
    return set(re.findall(r'self\.call\(\s*"([a-z]+\.[a-z_]+)"', source))


def test_every_name_has_a_schema_a_method_class_and_a_client_method() -> None:
    registered = set(build_registry())
    schemas = set(method_schemas())
    client = client_method_names()
    assert len(registered) > 20 and "messages.send" in client
    assert registered - schemas == set(), "method classes without a schema"
    assert schemas - registered == set(), "schemas without a method class (or METHODS entry)"
    assert schemas - client == set(), "schemas without a client method in client/api.py"
    assert client - schemas == set(), "client methods without a schema"


def method_classes_defined_in(module: ModuleType) -> set[type[Method]]:
    """The named method classes a module defines itself."""
    return {obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, (UserMethod, PublicMethod))
            and obj.__module__ == module.__name__ and obj.name}


def test_every_method_class_is_listed_in_its_modules_methods() -> None:
    listed = {cls for module in MODULES for cls in module.METHODS}
    for info in pkgutil.iter_modules(methods.__path__):
        module = importlib.import_module(f"methods.{info.name}")
        defined = method_classes_defined_in(module)
        if defined:
            assert module in MODULES, f"methods.{info.name} is not in registry.MODULES"
            assert defined <= listed, f"not in METHODS: {sorted(c.name for c in defined - listed)}"


def test_the_registry_refuses_a_name_twice_and_a_nameless_method() -> None:
    from methods.essentials import Edit
    with pytest.raises(RuntimeError, match="defined twice"):
        Registry([Edit(), Edit()])
    with pytest.raises(RuntimeError, match="no name"):
        Registry([UserMethod()])


def params_type(cls: type[Method]) -> Any:
    """The TypedDict a method class declares as its params (`UserMethod[XParams]`)."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if get_origin(base) in (UserMethod, PublicMethod):
                return get_args(base)[0]
    raise AssertionError(f"{cls.__name__} declares no params type")


def typed_required(td: Any) -> set[str]:
    """A TypedDict's required keys (read from the annotation text: with `from __future__
    import annotations` Python 3.11 does not see `Required[...]`)."""
    def marked(key: str, mark: str) -> bool:
        note = td.__annotations__[key]
        text = getattr(note, "__forward_arg__", note)
        return isinstance(text, str) and text.startswith(mark)
    if td.__total__:
        return {k for k in td.__annotations__ if not marked(k, "NotRequired[")}
    return {k for k in td.__annotations__ if marked(k, "Required[")}


@pytest.mark.parametrize("name", sorted(method_schemas()))
def test_typed_params_mirror_the_schema(name: str) -> None:
    td = params_type(type(build_registry()[name]))
    assert td.__name__.endswith("Params")
    schema = method_schemas()[name].params
    assert set(td.__annotations__) == set(schema.get("properties", {})), name
    assert typed_required(td) == set(schema.get("required", [])), name


def test_methods_take_a_caller_not_an_optional_one() -> None:
    for path in sorted((ROOT / "methods").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "caller is not None" not in text, path.name
        assert "Params = dict" not in text, path.name


def test_no_methods_file_is_too_long() -> None:
    assert long_files(("methods",)) == {}
