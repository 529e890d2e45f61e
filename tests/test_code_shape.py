"""The package's shape, enforced (issue 18): no module over 400 lines, no function over 80 lines or 8 parameters,
and every import inside a function says why it is not at the module's top (`# lazy: <reason>`: a torch-free
command stays torch-free, an optional extra, a module whose import changes global state). The one-off scripts
under benchmarks/experiments/ are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("distill", "students", "export", "benchmarks")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8


def package_files() -> list[Path]:
    files = [path for folder in FOLDERS for path in sorted((REPO / folder).rglob("*.py"))]
    return [path for path in files if not {"experiments", "results"} & set(path.relative_to(REPO).parts)]


def functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [arg.arg for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return (
        len([name for name in names if name not in ("self", "cls")])
        + (args.vararg is not None)
        + (args.kwarg is not None)
    )


def too_long(path: Path) -> list[str]:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    return [f"{path.name}: {lines} lines"] if lines > MAX_MODULE_LINES else []


def oversized_functions(path: Path) -> list[str]:
    found = []
    for node in functions(ast.parse(path.read_text(encoding="utf-8"))):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES or parameters(node) > MAX_PARAMETERS:
            found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines, {parameters(node)} parameters)")
    return found


def unexplained_imports(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for node in functions(ast.parse("\n".join(lines))):
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                if "# lazy:" not in lines[sub.lineno - 1] + lines[sub.end_lineno - 1]:
                    found.append(f"{path.name}:{sub.lineno} {lines[sub.lineno - 1].strip()}")
    return found


def test_no_module_is_over_400_lines():
    assert not [line for path in package_files() for line in too_long(path)]


def test_no_function_is_over_80_lines_or_8_parameters():
    found = [line for path in package_files() for line in oversized_functions(path)]
    assert not found, "\n".join(found)


def test_every_function_local_import_says_why_it_is_lazy():
    found = [line for path in package_files() for line in unexplained_imports(path)]
    assert not found, "imports inside functions without a `# lazy:` reason:\n" + "\n".join(found)


def test_the_checks_find_a_long_module_a_long_function_and_an_unexplained_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(a, b, c, d, e, g, h, i, j):\n    import torch\n    import json  # lazy: a reason\n"
        + "    x = 1\n" * (MAX_MODULE_LINES + 1)
    )
    assert too_long(bad) and oversized_functions(bad) == [f"bad.py:1 f ({MAX_MODULE_LINES + 4} lines, 9 parameters)"]
    assert unexplained_imports(bad) == ["bad.py:2 import torch"]
    assert len(package_files()) > 50
