"""The recipes shipped inside the package (`polydistill.recipes`, the checkout's recipes/ folder), as torchtune's
`tune ls` / `tune cp` offer theirs: `distill recipes list` names them, `distill recipes copy NAME [DEST]` writes one
where the user can edit it and `distill run` it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from polydistill.errors import DistillError
from polydistill.io import atomic_write_text


def packaged_recipes() -> dict[str, str]:
    """Recipe name (file name without .yaml) -> the first sentence of its opening comment, for every packaged
    recipe."""
    found = {}
    for entry in resources.files("polydistill.recipes").iterdir():
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = _first_sentence(entry.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def _first_sentence(text: str) -> str:
    comment = []
    for line in text.splitlines():
        if not line.startswith("#") or (comment and line.strip() == "#"):
            break
        comment.append(line.lstrip("#").strip())
    joined = " ".join(comment)
    sentence = joined.split(". ", 1)[0].rstrip(".")
    return sentence if len(sentence) <= 110 else sentence[:107].rsplit(" ", 1)[0] + " …"


def copy_recipe(name: str, dest: str | Path | None = None) -> Path:
    """Write packaged recipe `name` (with or without .yaml) to `dest` (a file, or a folder to put NAME.yaml in;
    default ./NAME.yaml). Refuses an unknown name and an existing file; the copy is written whole or not at all."""
    name = name.removesuffix(".yaml")
    source = resources.files("polydistill.recipes") / f"{name}.yaml"
    if not source.is_file():  # one file looked up, not every recipe read and summarised
        raise DistillError(f"no packaged recipe {name!r} (distill recipes list names them)")
    target = Path(dest) if dest is not None else Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists():
        raise DistillError(f"{target} exists: not overwritten")
    if not target.parent.is_dir():
        raise DistillError(f"{target.parent} is not a folder")
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    return target
