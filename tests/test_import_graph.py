"""The package's import graph: arrows go one way (policies -> sim -> workloads) and no module imports itself back
through others. Every import counts, at module level, inside functions and under TYPE_CHECKING alike: a deferred
import only hides a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("policies", "sim", "workloads")
LAYERS = {"workloads": 0, "sim": 1, "policies": 2}
"""A package may import only packages of its own layer or below."""

KNOWN_CIRCLES: list[set[str]] = []
"""Circles still to break: none. The engine builds ``Results`` (``sim.engine.tables``); results and accounting
know nothing of the engine. A new circle fails."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Edges ``a -> b``: module ``a`` imports module ``b`` (or a name from it), anywhere in its source."""
    modules = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a module importing its own package (``from sim import registry`` in sim.engine) reads a sibling,
                # which the name that follows resolves; the package itself is not an edge
                if target and target != module and not module.startswith(target + "."):
                    graph.add_edge(module, target)
    return graph


def test_no_import_circles_but_the_known_ones() -> None:
    graph = import_graph()
    circles = [set(component) for component in nx.strongly_connected_components(graph) if len(component) > 1]
    unexpected = [sorted(c) for c in circles if c not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles: {unexpected}"


def test_the_known_circles_are_still_there_or_the_list_shrinks() -> None:
    # when a known circle is broken, this fails until it is removed from KNOWN_CIRCLES, so the list stays true
    circles = [set(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert all(known in circles for known in KNOWN_CIRCLES), "a known circle is gone: remove it from KNOWN_CIRCLES"


def test_arrows_go_from_policies_to_sim_to_workloads() -> None:
    upward = [(a, b) for a, b in import_graph().edges
              if LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]]
    assert not upward, f"imports against the layers (policies -> sim -> workloads): {upward}"


def test_the_graph_sees_deferred_and_type_checking_imports() -> None:
    # the checks above are only as good as the graph: it has the edges the hidden kinds of import make
    graph = import_graph()
    # inside the Cluster.topology property
    assert graph.has_edge("sim.platform.cluster", "sim.platform.network.builders")
    assert graph.has_edge("sim.engine.tables", "sim.training.subsystem")  # under TYPE_CHECKING
    assert graph.has_edge("sim.engine.simulation", "sim.registry")  # from sim import registry


INSIDE_SIM: dict[str, tuple[str, ...]] = {
    # a module (or package prefix) -> the sim modules (or prefixes) it must not import
    "sim.engine.kernel": ("sim.engine.", "sim.training", "sim.serving", "sim.platform", "sim.output",
                          "sim.experiments", "sim.gym"),
    "sim.platform": ("sim.engine", "sim.training.subsystem", "sim.serving.subsystem", "sim.output", "sim.experiments",
                     "sim.gym"),
    "sim.training": ("sim.serving", "sim.engine.colocation", "sim.engine.simulation", "sim.output", "sim.experiments",
                     "sim.gym"),
    "sim.serving": ("sim.engine.simulation", "sim.engine.tables", "sim.output", "sim.experiments", "sim.gym"),
    "sim.output": ("sim.engine", "sim.training.subsystem", "sim.serving.subsystem", "sim.experiments", "sim.gym"),
    "sim.engine": ("sim.experiments", "sim.gym"),
    "sim.experiments": ("sim.gym",),
}
"""The layers inside sim: the kernel knows nothing of jobs, requests or devices; the platform (cluster, hardware,
network) knows no run; training knows nothing of serving (they meet in the broker); results and accounting do not
import the engine that fills them; nothing below the experiments imports them, and nothing in sim imports the
Gymnasium environment (``sim.gym``, on top of the experiments; gymnasium is an optional extra)."""


def test_arrows_inside_sim_go_down_the_layers() -> None:
    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix if prefix.endswith(".") else prefix + ".")

    wrong = [(a, b) for a, b in import_graph().edges for source, banned in INSIDE_SIM.items()
             if within(a, source) and any(within(b, p) for p in banned) and not within(b, source)]
    assert not wrong, f"imports against the layers inside sim: {sorted(set(wrong))}"
