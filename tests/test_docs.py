"""Every example in README.md, CHANGELOG.md and docs/*.md is checked, without starting a run (issue 18, item 7).

- ```python blocks are executed, or only compiled where they need a finished run (COMPILE_ONLY says which and why);
  an executed block's `print(x)  # literal` lines are checked against the literal;
- ```yaml blocks are recipe fragments: merged into recipes/tiny.yaml and validated;
- every line of a ```bash / ```sh / ```console block is one of: `distill run|validate RECIPE …` (validated as
  `distill validate` would, on the shared data), `distill export|bench|trim-vocab|convert|recipes …` (parsed by the
  real argument parser), `python -m MODULE` and `torchrun … -m MODULE` (the module exists; a `polydistill run` is
  validated too), `make TARGET` (the Makefile has it), `bash SCRIPT` (the script exists);
- `python -m MODULE` anywhere in the text names a module that exists;
- every relative Markdown link points at an existing file, and its #anchor at a heading of that page.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from polydistill.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
SHELL = {"bash", "sh", "console", "shell"}
PARSED_ONLY = {"export", "bench", "trim-vocab", "convert", "recipes"}

# (page, index among that page's python blocks) -> why the block is compiled but not run
COMPILE_ONLY = {
    ("README.md", 0): "the Python API example runs a recipe; tests/test_python_api.py executes it as written",
    ("export.md", 0): "loads out/student-int8, the folder a finished run's distill export writes",
    ("metrics-schema.md", 0): "reads runs/quickstart/latest/metrics.json, which only a finished run writes",
}

# recipes a documented `distill run` names that cannot be validated here, and why
NOT_VALIDATED = {
    "recipes/sib200-zero-shot.yaml": "its teacher is the student a finished sib200-embedding-kd run writes "
    "(runs/sib200-embedding-kd/latest/student, or POLYDISTILL_EMBED_STUDENT)",
}


def blocks(language: set[str]) -> list[tuple[str, int, str]]:
    """(page name, index among the page's blocks of these languages, body) for every fenced block."""
    found = []
    for page in PAGES:
        bodies = [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8")) if lang in language]
        found += [(page.name, i, body) for i, body in enumerate(bodies)]
    return found


def shell_lines() -> list[tuple[str, str]]:
    """(page name, command) for every command line of the shell blocks, continuations joined, comments dropped."""
    lines = []
    for page, _, body in blocks(SHELL):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                lines.append((page, line))
    return lines


def words(command: str) -> list[str]:
    """The command's words without a leading `time` or environment assignments."""
    tokens = shlex.split(command, comments=True)
    while tokens and (tokens[0] == "time" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0])):
        tokens = tokens[1:]
    return tokens


def test_every_page_has_examples_to_check():
    assert {"README.md", "recipes.md", "losses.md", "export.md", "results.md"} <= {p.name for p in PAGES}
    assert len(shell_lines()) > 20 and len(blocks({"python"})) >= 4


def test_compile_only_names_existing_blocks():
    python = {(page, i) for page, i, _ in blocks({"python"})}
    assert set(COMPILE_ONLY) <= python, "a COMPILE_ONLY entry names no python block: update it"


@pytest.mark.parametrize(("page", "index", "code"), blocks({"python"}), ids=lambda v: str(v)[:30])
def test_python_blocks_run_or_compile(page, index, code, tmp_path, monkeypatch, capsys):
    compiled = compile(code, f"{page}, python block {index}", "exec")
    if (page, index) in COMPILE_ONLY:
        return
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compiled, namespace)
    capsys.readouterr()
    for line in code.splitlines():
        printed = re.fullmatch(r"print\((.*)\)\s+#\s*(.*)", line.strip())
        if not printed:
            continue
        try:
            expected = ast.literal_eval(printed[2])
        except (ValueError, SyntaxError):
            continue  # a comment in words, not a value
        assert eval(printed[1], namespace) == expected, f"{page}: {line.strip()}"


def data_override(recipe: Path, sib200_path: Path, ud_path: Path) -> list[str]:
    """`data.path=` on the shared data for a recipe that reads a local folder (a hub recipe reads none)."""
    path = str((yaml.safe_load(recipe.read_text(encoding="utf-8")).get("data") or {}).get("path", ""))
    if "ud-pos" in path:
        return [f"data.path={ud_path}"]
    return [f"data.path={sib200_path}"] if "sib-200" in path else []


def validate(run_args: list[str], sib200_path: Path, ud_path: Path, capsys) -> None:
    """Parse `run …` as `distill run` would, then validate its recipe and overrides as `distill validate`."""
    args = build_parser().parse_args(run_args)
    if args.recipe in NOT_VALIDATED:
        pytest.skip(f"{args.recipe}: {NOT_VALIDATED[args.recipe]}")
    overrides = [*args.overrides, *data_override(REPO / args.recipe, sib200_path, ud_path)]
    code = main(["validate", args.recipe, *overrides])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "is valid" in captured.out


@pytest.mark.parametrize(("page", "command"), shell_lines(), ids=lambda v: str(v)[:60])
def test_shell_lines(page, command, sib200_path, ud_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # recipes read ${POLYDISTILL_DATA:-../shared/data} and name files from the root
    tokens = words(command)
    assert tokens, f"{page}: {command!r} is not a command"
    program = tokens[0]
    if program == "distill":
        assert len(tokens) > 1, f"{page}: {command}"
        if tokens[1] in ("run", "validate"):
            validate(["run", *tokens[2:]], sib200_path, ud_path, capsys)
        else:
            assert tokens[1] in PARSED_ONLY, f"{page}: no check for `distill {tokens[1]}`"
            build_parser().parse_args(tokens[1:])
    elif program in ("python", "python3", "torchrun"):
        module = tokens[tokens.index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, f"{page}: no module {module}"
        rest = tokens[tokens.index("-m") + 2 :]
        if module == "polydistill" and rest[:1] in (["run"], ["validate"]):
            validate(["run", *rest[1:]], sib200_path, ud_path, capsys)
    elif program == "make":
        makefile = (REPO / "Makefile").read_text(encoding="utf-8")
        for target in tokens[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{page}: no make target {target}"
    elif program == "bash":
        assert (REPO / tokens[1]).is_file(), f"{page}: no script {tokens[1]}"
    else:
        pytest.fail(f"{page}: {command!r} is a command this test does not know how to check")


def documented_modules() -> list[str]:
    """Every `python -m MODULE` in the pages' text; a placeholder part in capitals (experiments.NAME) is left out."""
    found = {m for page in PAGES for m in re.findall(r"python -m ([\w.]+)", page.read_text(encoding="utf-8"))}
    return sorted(m.rstrip(".") for m in found if not any(part.isupper() for part in m.split(".")))


@pytest.mark.parametrize("module", documented_modules())
def test_every_python_dash_m_module_exists(module):
    assert importlib.util.find_spec(module) is not None


@pytest.mark.parametrize(("page", "index", "fragment"), blocks({"yaml"}), ids=lambda v: str(v)[:30])
def test_yaml_blocks_are_valid_recipe_fragments(page, index, fragment, tmp_path, sib200_path, capsys):
    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    recipe = merge(yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text()), yaml.safe_load(fragment))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["validate", str(path), f"data.path={sib200_path}"])
    assert code == 0, f"{page}, yaml block {index}: {capsys.readouterr().err}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+:", target):
                found.append((str(page.relative_to(REPO)), target))
    return found


@pytest.mark.parametrize(("page", "target"), links(), ids=lambda v: str(v)[:50])
def test_relative_links_resolve(page, target):
    path, _, anchor = target.partition("#")
    file = (REPO / page).parent / path if path else REPO / page
    assert file.exists(), f"{page}: {target} points at nothing"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), f"{page}: {target}: no heading gives #{anchor}"
