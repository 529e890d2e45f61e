"""How a benchmark script leaves its results: `<stem>.json` + `<stem>.md`, atomically, with its command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from polydistill.io import atomic_write_json, atomic_write_text


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, e.g. `python -m polydistill.benchmarks.baselines --out x`."""
    return f"python -m {module} {shlex.join(argv if argv is not None else sys.argv[1:])}".rstrip()


def write_results(stem: str | Path, doc: dict[str, Any], markdown: str) -> None:
    """`stem.json` (the data) and `stem.md` (the table people read), then the table on stdout."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stem.with_suffix(".json"), doc)
    atomic_write_text(stem.with_suffix(".md"), markdown)
    print(markdown)
