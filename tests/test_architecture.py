"""The layout's rules (issue 17), checked over src/auditmw's source.

The source is parsed with ``ast``, never imported, so a check sees every import a module
makes, wherever it stands: at the top, inside a function, under ``if TYPE_CHECKING:``.
Each failure names every offender, with its file and line.

- **No import cycles.** A module imports another when any ``import``/``from ... import``
  in it names that module: ``from auditmw._stores import sqlite`` imports
  ``auditmw._stores.sqlite`` (a submodule named in ``from ... import``), ``from auditmw
  import Event`` imports ``auditmw`` (a package's ``__init__`` is a module like any
  other). Importing a submodule also runs its parent packages' ``__init__``, but that
  implied step is not an edge: only what a module names counts.
- **No private name reached from another module.** A name is private when it starts with
  one underscore or two without ending in two (``_x``, ``__x``; dunders such as
  ``__name__`` and ``__wrapped__`` are protocol, not private). Private *modules* are how
  the package is laid out, so ``from auditmw._stores.filters import EventFilter`` and
  ``import auditmw._event`` are fine; what is refused is
  * importing a private name: ``from auditmw._stores.store import _helper``;
  * reaching one on another module: ``module._helper`` where ``module`` was bound by an
    import;
  * reaching one on another object, ``obj._x``, unless ``obj`` is ``self``, ``cls`` or
    ``super()`` (the object's own state, whichever class in its MRO defines it), or
    ``_x`` is defined in the same module — a class may read its own private state on
    another instance of itself (``other._key`` in ``__eq__``; the check goes by name, so
    it cannot tell that instance from another class's with a same-named attribute);
  * the same through ``getattr``/``setattr``/``hasattr``/``delattr`` with a literal name.
  Documented names that merely start with an underscore are allowed: namedtuple's
  ``_replace``/``_asdict``/``_fields``/``_make``, ``os._exit`` and ``sys._getframe``.
- **No module over 600 lines.**
- **Every name the documentation shows can be imported**: the ``from auditmw... import
  ...`` lines and the ``auditmw.X`` references of README.md and docs/*.md.
  (``__all__`` itself is checked in test_public_api.py.)
"""

from __future__ import annotations

import ast
import functools
import importlib
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._paths import DOCS, README, ROOT

PACKAGE = ROOT / "src" / "auditmw"
DOCUMENTS = [README, *sorted(DOCS.glob("*.md"))]
MAX_LINES = 600

# Names that start with an underscore and are public all the same (documented as such).
DOCUMENTED_UNDERSCORE_ATTRIBUTES = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
DOCUMENTED_UNDERSCORE_MODULE_NAMES = {("os", "_exit"), ("sys", "_getframe")}
REFLECTION = {"getattr", "setattr", "hasattr", "delattr"}


@dataclass(frozen=True)
class Module:
    name: str  # dotted: auditmw._stores.sqlite; a package's __init__ is the package's name
    path: Path
    tree: ast.Module
    lines: int

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT))


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


@functools.cache
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        text = path.read_text(encoding="utf-8")
        found[name] = Module(name, path, ast.parse(text, str(path)), len(text.splitlines()))
    return found


def is_private(name: str) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return False
    return name.startswith("_") and name != "_"


def absolute_base(module: Module, node: ast.ImportFrom) -> str:
    """The module a ``from X import ...`` reads from, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def imports_of(module: Module) -> Iterator[Import]:
    """Every auditmw module that ``module`` names in an import statement, anywhere in it."""
    known = modules()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield Import(module.name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_base(module, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    yield Import(module.name, submodule, node.lineno)
                elif base in known:
                    yield Import(module.name, base, node.lineno)


def import_graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line that imports it}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in modules()}
    for module in modules().values():
        for edge in imports_of(module):
            if edge.imported != edge.importer:
                lines = graph[edge.importer]
                lines[edge.imported] = min(lines.get(edge.imported, edge.line), edge.line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other (size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, group: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside ``group`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target not in group or target in previous:
                    continue
                previous[target] = node
                if target == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(previous[path[-1]])
                    return path[::-1]
                following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def describe_cycle(graph: dict[str, dict[str, int]], path: list[str]) -> str:
    steps = [path[0]]
    for importer, imported in itertools.pairwise(path):
        where = modules()[importer].where
        steps.append(f"-> {imported} ({where}:{graph[importer][imported]})")
    return " ".join(steps)


def test_no_import_cycles() -> None:
    graph = import_graph()
    report = []
    for group in strongly_connected(graph):
        members = set(group)
        report.append(f"cycle among {', '.join(group)}:")
        for start in group:
            report.append("    " + describe_cycle(graph, shortest_cycle(graph, start, members)))
    assert not report, "modules that import each other:\n" + "\n".join(report)


# --- private names ----------------------------------------------------------------------------


def module_bindings(tree: ast.Module) -> set[str]:
    """Names that ``import`` statements bind to a module object anywhere in ``tree``."""
    known = modules()
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                # ``from package import submodule``; outside auditmw, only the plain
                # ``from os import path`` kind could tell, and those are not reached into.
                if f"{node.module}.{alias.name}" in known:
                    bound.add(alias.asname or alias.name)
    return bound


def private_names_defined(tree: ast.Module) -> set[str]:
    """Private names a module defines itself: functions, classes, assignments (module or
    class level), attributes set on ``self``/``cls`` (directly, through ``setattr`` or
    ``object.__setattr__``), ``__slots__`` entries, and parameters (a dataclass field
    ``_x`` is a parameter of its ``__init__``)."""
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and owns_object(node.value)
        ):
            defined.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
        ):
            defined.update(literal_strings(node.value))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"setattr", "object.__setattr__"}
            and len(node.args) >= 2
            and owns_object(node.args[0])
        ):
            defined.update(literal_strings(node.args[1]))
    return {name for name in defined if is_private(name)}


def literal_strings(node: ast.expr) -> set[str]:
    return {
        child.value
        for child in ast.walk(node)
        if isinstance(child, ast.Constant) and isinstance(child.value, str)
    }


def owns_object(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own state."""
    if isinstance(value, ast.Name):
        return value.id in {"self", "cls"}
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def private_reaches(module: Module) -> Iterator[str]:
    """Each place ``module`` imports or reaches a private name of another module."""
    known = modules()
    bound_modules = module_bindings(module.tree)
    own = private_names_defined(module.tree)
    for node in ast.walk(module.tree):
        where = f"{module.where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            base = absolute_base(module, node)
            for alias in node.names:
                if is_private(alias.name) and f"{base}.{alias.name}" not in known:
                    yield f"{where}: imports {alias.name} from {base}"
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            yield from attribute_reach(where, node.value, node.attr, own, bound_modules)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            reached = attribute_reach(where, node.args[0], node.args[1].value, own, bound_modules)
            for found in reached:
                yield f"{found} (through {node.func.id})"


def attribute_reach(
    where: str, value: ast.expr, attribute: str, own: set[str], bound_modules: set[str]
) -> Iterable[str]:
    if owns_object(value) or attribute in DOCUMENTED_UNDERSCORE_ATTRIBUTES:
        return []
    if isinstance(value, ast.Name) and value.id in bound_modules:
        if (value.id, attribute) in DOCUMENTED_UNDERSCORE_MODULE_NAMES:
            return []
        return [f"{where}: reaches {attribute} on module {value.id}"]
    if attribute in own:
        return []
    return [f"{where}: reaches {attribute} on {ast.unparse(value)}"]


def test_no_private_names_across_modules() -> None:
    def line(found: str) -> int:
        return int(found.split(":")[1])

    by_file = {
        module.where: sorted(private_reaches(module), key=line) for module in modules().values()
    }
    report = [
        f"{where} ({len(found)}):\n" + "\n".join(f"    {line}" for line in found)
        for where, found in by_file.items()
        if found
    ]
    assert not report, "private names used outside their module:\n" + "\n".join(report)


# --- size -------------------------------------------------------------------------------------


def test_no_module_over_600_lines() -> None:
    over = [
        f"{module.where}: {module.lines} lines"
        for module in modules().values()
        if module.lines > MAX_LINES
    ]
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)


# --- documented names -------------------------------------------------------------------------

_FROM_IMPORT = re.compile(
    r"^\s*from\s+(auditmw(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#]+)", re.MULTILINE
)
_REFERENCE = re.compile(r"(?<![\w.])auditmw(?:\.[A-Za-z_]\w*)+")


def documented_names() -> dict[str, str]:
    """Each documented dotted name (``auditmw.litestar.AuditPlugin``) -> where it first
    appears (``docs/frameworks.md:12``)."""
    found: dict[str, str] = {}
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        where = str(document.relative_to(ROOT))

        def note(name: str, offset: int, *, where: str = where, text: str = text) -> None:
            found.setdefault(name, f"{where}:{text.count(chr(10), 0, offset) + 1}")

        for match in _FROM_IMPORT.finditer(text):
            names = match.group(2).strip().strip("()")
            for entry in names.split(","):
                name = entry.split(" as ")[0].strip()
                if name.isidentifier():
                    note(f"{match.group(1)}.{name}", match.start())
        for match in _REFERENCE.finditer(text):
            note(match.group(0), match.start())
    return found


DOCUMENTED = documented_names()


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: its longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: object = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a missing dependency, not a missing module
                raise
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_the_documents_name_something() -> None:
    assert "auditmw.AuditMiddleware" in DOCUMENTED
    assert len(DOCUMENTED) > 20, sorted(DOCUMENTED)


@pytest.mark.parametrize("dotted", sorted(DOCUMENTED))
def test_documented_name_imports(dotted: str) -> None:
    try:
        resolve(dotted)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{DOCUMENTED[dotted]} names {dotted}, which does not import: {error}")


# --- the checks check -------------------------------------------------------------------------


def _module_from(source: str, name: str = "auditmw._probe") -> Module:
    tree = ast.parse(source)
    return Module(name, PACKAGE / "_probe.py", tree, len(source.splitlines()))


def test_private_rule_tells_own_state_from_another_modules() -> None:
    source = """
import os
from auditmw._stores import store
from auditmw._stores.store import _helper

class Key:
    __slots__ = ("_raw",)
    def __eq__(self, other):
        return self._raw == other._raw and super()._check() and self.__class__ is Key

def run(thing):
    os._exit(0)
    store._commit()
    getattr(thing, "_secret")
    return thing._append_internal(), thing.__wrapped__, thing._replace(a=1)
"""
    found = sorted(line.split(": ", 1)[1] for line in private_reaches(_module_from(source)))
    assert found == [
        "imports _helper from auditmw._stores.store",
        "reaches _append_internal on thing",
        "reaches _commit on module store",
        "reaches _secret on thing (through getattr)",
    ]


def test_cycle_finder_names_the_path() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7}, "d": {"a": 1}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, "a", {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_relative_and_submodule_imports_resolve() -> None:
    probe = _module_from(
        "from . import _event\nfrom ._stores import sqlite\nfrom auditmw import Event\n"
        "def later():\n    from auditmw._transparency.merkle import root\n",
        name="auditmw._probe",
    )
    imported = defaultdict(list)
    for edge in imports_of(probe):
        imported[edge.imported].append(edge.line)
    assert dict(imported) == {
        "auditmw._event": [1],
        "auditmw._stores.sqlite": [2],
        "auditmw": [3],
        "auditmw._transparency.merkle": [5],
    }
