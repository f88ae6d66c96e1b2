"""The package's layout, checked from its source (fast, no crawl): settings
are read in one place, modules import each other without cycles, and each
module is small and says what it owns."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import scrapy_sticky_proxy

PACKAGE = Path(scrapy_sticky_proxy.__file__).parent
ROOT = PACKAGE.name
PREFIX = "STICKY_PROXY_"
MAX_LINES = 300
# Modules over MAX_LINES that are being split (issue 12) by their owners.
# Remove each one here when its split lands.
# Methods of Scrapy's settings objects that read a value.
GETTERS = {
    "get",
    "getbool",
    "getint",
    "getfloat",
    "getlist",
    "getdict",
    "getdictorlist",
    "getwithbase",
    "getpriority",
    "__getitem__",
}


def modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def string_names(tree: ast.Module) -> dict[str, set[str]]:
    """Every name this module binds to a string literal, anywhere in it
    (``SETTING = "STICKY_PROXY_X"`` at the top, ``name = "..."`` in a
    function), with the values it is bound to."""
    names: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(
            node.value, ast.Constant
        ):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    names.setdefault(target.id, set()).add(node.value.value)
    return names


def all_string_names() -> dict[str, dict[str, set[str]]]:
    return {name: string_names(parse(path)) for name, path in modules()}


def resolve(module: str, level: int, name: str | None, is_package: bool) -> str:
    """The absolute name of ``from <level dots><name> import ...`` in *module*."""
    if not level:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imported_strings(
    module: str, path: Path, tree: ast.Module, known: dict[str, dict[str, set[str]]]
) -> dict[str, set[str]]:
    """String names this module imports from other modules of the package."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(
                module, node.level, node.module, path.name == "__init__.py"
            )
            for alias in node.names:
                values = known.get(source, {}).get(alias.name)
                if values:
                    found.setdefault(alias.asname or alias.name, set()).update(values)
    return found


def is_setting_name(node: ast.AST, strings: dict[str, set[str]]) -> bool:
    """Whether *node* evaluates to a STICKY_PROXY_* name: a literal, an
    f-string starting with it, or a name (``SETTING``, ``mod.SETTING``)
    bound to one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.startswith(PREFIX)
    if isinstance(node, ast.JoinedStr):
        return bool(node.values) and is_setting_name(node.values[0], strings)
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return any(value.startswith(PREFIX) for value in strings.get(name, ()))
    return False


def setting_reads(
    tree: ast.Module, strings: dict[str, set[str]]
) -> Iterator[tuple[int, str]]:
    """(line, what) of every read of a STICKY_PROXY_* setting in *tree*:
    ``x.get*("STICKY_PROXY_...")``, ``x["STICKY_PROXY_..."]``,
    ``read_*(settings, "STICKY_PROXY_...")``, and any parse of the whole
    configuration (``StickyProxyConfig.from_settings``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_setting_name(node.slice, strings):
            yield node.lineno, f"[{ast.unparse(node.slice)}]"
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = (
            func.attr
            if isinstance(func, ast.Attribute)
            else func.id
            if isinstance(func, ast.Name)
            else ""
        )
        if called == "from_settings" and "StickyProxyConfig" in ast.unparse(func):
            yield node.lineno, ast.unparse(func)
            continue
        reader = called in GETTERS or called.startswith("read_")
        arguments = [*node.args, *(k.value for k in node.keywords)]
        if reader and any(is_setting_name(arg, strings) for arg in arguments):
            yield node.lineno, ast.unparse(node)[:80]


def test_only_the_config_package_reads_settings() -> None:
    known = all_string_names()
    found = []
    for module, path in modules():
        if module == f"{ROOT}.config" or module.startswith(f"{ROOT}.config."):
            continue
        tree = parse(path)
        strings = {**imported_strings(module, path, tree, known), **known[module]}
        found += [
            f"{relative(path)}:{line}: {what}"
            for line, what in setting_reads(tree, strings)
        ]
    assert not found, "STICKY_PROXY_* settings read outside config/:\n" + "\n".join(
        found
    )


def test_config_privates_stay_inside() -> None:
    """Code outside the config package uses its public names only."""
    found = []
    for module, path in modules():
        if module == f"{ROOT}.config" or module.startswith(f"{ROOT}.config."):
            continue
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = resolve(
                module, node.level, node.module, path.name == "__init__.py"
            )
            if source.startswith(f"{ROOT}.config"):
                found += [
                    f"{relative(path)}:{node.lineno}: {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert not found, "private names of config/ imported:\n" + "\n".join(found)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: at its top level, also in
    ``try``/``if`` blocks, but not under ``if TYPE_CHECKING:`` nor inside
    functions or classes."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            pending += (
                node.orelse if _is_type_checking(node) else node.body + node.orelse
            )
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            pending += node.body


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports at import time,
    counting the subpackages an import passes through (importing
    ``pkg.config.readers`` runs ``pkg/config/__init__.py``). A module's
    own packages are left out: Python imports them before the module."""
    names = dict(modules())
    graph: dict[str, set[str]] = {name: set() for name in names}

    def targets(dotted: str) -> Iterator[str]:
        parts = dotted.split(".")
        for end in range(2, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if candidate in names:
                yield candidate

    for module, path in names.items():
        is_package = path.name == "__init__.py"
        for node in module_level_imports(parse(path)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    graph[module].update(targets(alias.name))
                continue
            source = resolve(module, node.level, node.module, is_package)
            graph[module].update(targets(source))
            for alias in node.names:  # `from . import _meta`: a submodule
                graph[module].update(targets(f"{source}.{alias.name}"))
        parts = module.split(".")
        own = {".".join(parts[:end]) for end in range(1, len(parts) + 1)}
        graph[module] -= own
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# What the config package may import, anywhere in its code (also inside
# functions): the pure parts it parses settings into, never a component.
CONFIG_DEPENDS_ON = ("config", "errors", "routing", "state", "sandbox")


def test_config_imports_no_component() -> None:
    found = []
    allowed = tuple(f"{ROOT}.{name}" for name in CONFIG_DEPENDS_ON)
    for module, path in modules():
        if not module.startswith(f"{ROOT}.config"):
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom):
                is_package = path.name == "__init__.py"
                source = resolve(module, node.level, node.module, is_package)
                sources = (
                    [source]
                    if node.module
                    else [f"{source}.{alias.name}" for alias in node.names]
                )
            elif isinstance(node, ast.Import):
                sources = [alias.name for alias in node.names]
            else:
                continue
            found += [
                f"{relative(path)}:{node.lineno}: {name}"
                for name in sources
                if (name == ROOT or name.startswith(f"{ROOT}."))
                and not any(
                    name == prefix or name.startswith(f"{prefix}.")
                    for prefix in allowed
                )
            ]
    assert not found, "config/ imports components:\n" + "\n".join(found)


def test_the_import_graph_finds_a_cycle() -> None:
    """The cycle finder itself, on a graph with one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert graph[f"{ROOT}.middleware"], "the graph saw no imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("path", [p for _, p in modules()], ids=relative)
def test_modules_are_small_and_say_what_they_own(path: Path) -> None:
    tree = parse(path)
    assert ast.get_docstring(tree), f"{relative(path)} has no module docstring"
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{relative(path)}: {lines} lines"
