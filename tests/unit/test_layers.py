"""The layers hold: the project's import graph, read from the source with ``ast``.

Every ``import`` counts, at the top of a module or inside a function (a function-level import
is still a dependency, only a later one); what an ``if TYPE_CHECKING:`` block imports does not
(it never runs). Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so those are edges too.
"""
from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "detectors", "retrain_trigger")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """The dotted names a module imports (``from a import b`` gives ``a.b``: b may be a module),
    each with whether it runs at import time (module level) or later (in a function)."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.names: list[tuple[str, bool]] = []
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        self.names.extend((alias.name, self._depth == 0) for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        self.names.append((base, self._depth == 0))
        self.names.extend((f"{base}.{alias.name}", self._depth == 0) for alias in node.names if alias.name != "*")


@cache
def _tree(module: str) -> ast.Module:
    path = _sources()[module]
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@cache
def _imports(module: str) -> tuple[tuple[str, bool], ...]:
    visitor = _Imports(module, _sources()[module].name == "__init__.py")
    visitor.visit(_tree(module))
    return tuple(visitor.names)


def _project_targets(name: str) -> set[str]:
    """The project modules importing ``name`` runs: it (or its longest project prefix) and its packages."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in _sources()}


def graph(top_level_only: bool = False) -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    edges = {}
    for module in _sources():
        targets = set()
        for name, at_top in _imports(module):
            if at_top or not top_level_only:
                targets |= _project_targets(name)
        edges[module] = targets - {module}
    return edges


def external(module: str, top_level_only: bool = False) -> set[str]:
    """The top-level names of what ``module`` imports from outside the project."""
    return {name.split(".")[0] for name, at_top in _imports(module)
            if (at_top or not top_level_only) and name.split(".")[0] not in PACKAGES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def all_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles, one at a time: a found cycle's edges among its modules are set aside before the
    next is looked for (so a cycle through those same edges shows once the first is fixed)."""
    edges = {node: set(targets) for node, targets in edges.items()}
    found = []
    while (cycle := find_cycle(edges)) is not None:
        found.append(cycle)
        members = set(cycle)
        for node in members:
            edges[node] -= members
    return found


def closure(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# -- the graph ---------------------------------------------------------------------------------
def test_the_graph_sees_imports_in_functions_and_skips_type_checking_blocks():
    edges = graph()
    assert "streams.tools.report" in edges["streams.tools.backtest"]  # imported inside a function
    assert "streams.core.monitor" not in edges["streams.tools.report"]  # only under TYPE_CHECKING
    assert "detectors.base" in edges["detectors.registry"]  # from .base import ...
    assert {"streams", "streams.core", "streams.core.config"} <= edges["streams.core.statistics"]  # and the packages


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert all_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b", "a"], ["c", "d", "c"]]


def test_no_import_cycle_among_the_project_modules():
    cycles = all_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_a_project_module_by_a_computed_name():
    """importlib.import_module / __import__ would hide an edge from the graph above."""
    for module in _sources():
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                assert name not in ("import_module", "__import__"), f"{module}:{node.lineno} imports by a computed name"


# -- the layers --------------------------------------------------------------------------------
KAFKA_OR_PROMETHEUS = {"confluent_kafka", "faust", "aiokafka", "prometheus_client"}


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "streams.core")])
def test_the_core_has_no_kafka_and_no_prometheus(module):
    assert not external(module) & KAFKA_OR_PROMETHEUS, module


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "streams.core")])
def test_the_core_imports_nothing_above_it(module):
    above = [t for t in graph()[module] if _under(t, "streams.runtime", "streams.cli", "streams.tools", "streams.client")]
    assert not above, (module, above)


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "streams.client")])
def test_the_client_imports_no_runtime_cli_or_tools(module):
    """What a model server imports: the producer helper stands alone."""
    assert not [t for t in graph()[module] if _under(t, "streams.runtime", "streams.cli", "streams.tools")]


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "detectors", "retrain_trigger")])
def test_detectors_and_retrain_trigger_import_nothing_from_streams(module):
    assert not [t for t in graph()[module] if _under(t, "streams")], module


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "detectors")])
def test_detectors_import_no_retrain_trigger_kafka_or_prometheus(module):
    """The dependency direction: streams -> retrain_trigger -> detectors, never back; no I/O."""
    assert not [t for t in graph()[module] if _under(t, "retrain_trigger")], module
    assert not external(module) & KAFKA_OR_PROMETHEUS, module


@pytest.mark.parametrize("module", [m for m in _sources() if _under(m, "retrain_trigger")])
def test_only_the_listener_of_retrain_trigger_talks_to_kafka(module):
    if module != "retrain_trigger.listener":
        assert not external(module) & KAFKA_OR_PROMETHEUS, module


# -- what each install provides ----------------------------------------------------------------
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def _extra_closure(extra: str) -> set[str]:
    """The distributions ``pip install 'driftline[extra]'`` brings (extras may name other extras)."""
    names: set[str] = set()
    for text in PYPROJECT["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if requirement.name == PYPROJECT["name"]:
            for inner in requirement.extras:
                names |= _extra_closure(inner)
        else:
            names.add(requirement.name.lower().replace("_", "-"))
    return names


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    """The distributions that provide the top-level module ``module`` in this environment."""
    return {d.lower().replace("_", "-") for d in _installed().get(module, ())}


def _third_party(modules: set[str], top_level_only: bool = False) -> set[str]:
    names = set().union(*(external(m, top_level_only) for m in modules))
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def test_the_core_install_is_what_the_producer_helper_imports():
    """``pip install driftline`` (no extra) is for model servers that log predictions: exactly
    the distributions streams.client and what it imports need."""
    needed = set().union(*(_distributions(n) for n in _third_party(closure(graph(), "streams.client.producer"))))
    assert _names(PYPROJECT["dependencies"]) == needed == {"confluent-kafka", "msgspec", "prometheus-client"}


def test_the_cli_starts_with_the_core_install():
    """``driftline --help`` imports only the core install's packages before a command runs, so a
    command whose extra is missing can say which one to install."""
    core = _names(PYPROJECT["dependencies"])
    started = closure(graph(top_level_only=True), "streams.cli.main")
    for name in _third_party(started, top_level_only=True):
        assert _distributions(name) <= core, (name, _distributions(name))


def test_every_third_party_import_is_declared_and_the_extras_nest():
    extras = PYPROJECT["optional-dependencies"]
    everything = _names(PYPROJECT["dependencies"]) | _extra_closure("all")
    for name in _third_party(set(_sources())):
        assert _distributions(name) and _distributions(name) <= everything, name
    for extra in ("service", "faust", "report", "sim"):
        assert extra in extras
        assert _extra_closure(extra) <= _extra_closure("all") <= _extra_closure("test")
    for extra in ("faust", "report", "sim"):
        assert _extra_closure("service") <= _extra_closure(extra), extra  # each runs on the service's numerics


def test_the_missing_extra_table_matches_the_extras():
    """Each module the CLI names an extra for is in that extra (and not in the core install)."""
    from streams.cli.common import EXTRA_OF_MODULE

    core = _names(PYPROJECT["dependencies"])
    for module, extra in EXTRA_OF_MODULE.items():
        provided = _distributions(module)
        assert provided and provided <= _extra_closure(extra) and not provided & core, (module, extra)
    beyond_core = {name for name in _third_party(set(_sources())) if not _distributions(name) <= core}
    assert beyond_core <= set(EXTRA_OF_MODULE), beyond_core - set(EXTRA_OF_MODULE)
