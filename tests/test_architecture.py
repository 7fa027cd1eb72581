"""The house rules of the package layout (../shared/DESIGN.md section 1, extended; README.md
"Package layout"), read from the source's imports.

Every ``import`` and ``from ... import`` in ``vjepa_pipeline/`` counts, including imports inside
functions and under ``TYPE_CHECKING``: a lazy import is still an arrow. The rules:

- packages sit on layers; a package imports only from packages on lower layers (arrows point
  down), never sideways into another package of its own layer, never up;
- no import cycle between modules;
- the pure-PyTorch core (models, objectives, planning, ...) never imports Lightning, DeepSpeed,
  submitit or wandb; environments import nothing of ours but utilities;
- nothing imports the CLI.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path


PACKAGE_DIR = Path(__file__).resolve().parents[1] / "vjepa_pipeline"

# Lowest first. A package (top-level sub-package or module of vjepa_pipeline) may import from
# packages on strictly lower layers and from itself. Keep DESIGN.md section 1 and the README's
# layout table in step with this list.
LAYERS: list[set[str]] = [
    {"errors", "utils"},          # shared exceptions, atomic writes, JSONL
    {"envs"},                     # embedded environments: utilities only, like a user's robot
    {"config"},                   # the typed config tree, loader, validation, named sizes
    {"models"},                   # pure torch: ViT, predictors, masks, positions, optim, EMA
    {"shards"},                   # shard format (index, tar reading, decoders), builder, inspector
    {"data"},                     # streaming loader, sampling, augmentation, batches
    {"objectives", "checkpoint"},  # pure-torch training objectives; checkpoint layouts / export
    {"eval", "planning"},         # frozen-backbone evaluation; latent planning
    {"train"},                    # Lightning adapter, strategies, callbacks, run directory
    {"launch"},                   # SLURM submission and job records
    {"demo"},                     # embedded end-to-end demos
    {"cli"},                      # the `vjepa` command
    {"__main__"},                 # `python -m vjepa_pipeline`
]
PURE = {"errors", "utils", "envs", "config", "models", "objectives", "planning"}
FORBIDDEN_IN_PURE = ("lightning", "pytorch_lightning", "deepspeed", "submitit", "wandb")
ENV_ALLOWED = {"envs", "utils", "errors"}
KNOWN = set().union(*LAYERS)


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise KeyError(package)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports() -> dict[str, set[str]]:
    """module -> set of imported names (``vjepa_pipeline.x.y`` modules and third-party tops)."""
    modules = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from pkg import module` imports that module
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
        graph.setdefault(name, set())
    return dict(graph)


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = read_imports()


def test_every_package_has_a_layer():
    unknown = sorted({top_package(m) for m in GRAPH if top_package(m)} - KNOWN)
    assert not unknown, f"packages without a layer in LAYERS (add them, and to DESIGN.md section 1): {unknown}"


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in graph.items():
        src = top_package(mod)
        if src not in KNOWN:  # packages without a layer fail test_every_package_has_a_layer
            continue
        for t in targets:
            dst = top_package(t)
            if t.startswith("vjepa_pipeline.") and dst in KNOWN and dst != src and layer_of(dst) >= layer_of(src):
                bad.append(f"{mod} -> {t}")
    return sorted(bad)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) with more than one module."""
    internal = {m: sorted(t for t in ts if t in graph and t != m) for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in internal[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(internal):
        if v not in index:
            visit(v)
    return cycles


def test_arrows_point_down():
    bad = upward_arrows(GRAPH)
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = import_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_pure_core_never_imports_the_frameworks():
    bad = []
    for mod, targets in GRAPH.items():
        if top_package(mod) not in PURE:
            continue
        for t in targets:
            if t.split(".")[0] in FORBIDDEN_IN_PURE:
                bad.append(f"{mod} -> {t}")
    assert not bad, "the pure-PyTorch core imports a framework:\n" + "\n".join(sorted(bad))


def test_environments_depend_only_on_utilities():
    bad = [f"{m} -> {t}" for m, ts in GRAPH.items() if top_package(m) == "envs"
           for t in ts if t.startswith("vjepa_pipeline.") and top_package(t) not in ENV_ALLOWED]
    assert not bad, "\n".join(sorted(bad))


def test_the_checks_catch_an_upward_arrow_a_sideways_arrow_and_a_cycle():
    graph = {
        "vjepa_pipeline.models.vit": {"vjepa_pipeline.train.module", "torch"},
        "vjepa_pipeline.train.module": {"vjepa_pipeline.models.vit"},
        "vjepa_pipeline.eval.grid": {"vjepa_pipeline.planning.cem"},
        "vjepa_pipeline.planning.cem": {"vjepa_pipeline.models.vit"},
    }
    assert upward_arrows(graph) == ["vjepa_pipeline.eval.grid -> vjepa_pipeline.planning.cem",
                                    "vjepa_pipeline.models.vit -> vjepa_pipeline.train.module"]
    assert import_cycles(graph) == [["vjepa_pipeline.models.vit", "vjepa_pipeline.train.module"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
