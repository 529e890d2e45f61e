"""Tiny recipe runs for the tests: `distill run` of a recipe shrunk by overrides, in this process or as a
subprocess, and where its run directory is. The `tiny_run` fixture (conftest.py) binds these to the shared data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from polydistill.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny.yaml"  # two languages, 96 train sentences, a 4 x 32 scratch teacher
QUICKSTART = REPO / "recipes" / "quickstart-scratch.yaml"
UDPOS_TINY = REPO / "recipes" / "udpos-tiny-student.yaml"

THREE_LANGUAGES = ["eng_Latn", "yor_Latn", "amh_Ethi"]
# the quickstart recipe on three languages with a 400-piece, 32-wide scratch teacher: the whole path in seconds
SMALL_QUICKSTART = [
    f"data.languages=[{', '.join(THREE_LANGUAGES)}]",
    "data.max_train_per_language=48",
    "data.max_eval_per_language=12",
    "teacher.scratch.vocab_size=400",
    "teacher.scratch.hidden_size=32",
    "teacher.scratch.num_heads=2",
    "teacher.scratch.intermediate_size=64",
    "teacher.train.epochs=2",
    "distill.train.epochs=1",
    "bench.runs=3",
    "bench.warmup=1",
    "bench.seq=32",
]
# the quickstart recipe with 32 train sentences a language, a 300-piece 32-wide scratch teacher trained one epoch
# and a 2-layer student distilled one; the caller names the languages
TWO_LAYER_QUICKSTART = [
    "data.max_train_per_language=32",
    "data.max_eval_per_language=8",
    "teacher.scratch.vocab_size=300",
    "teacher.scratch.hidden_size=32",
    "teacher.scratch.intermediate_size=64",
    "teacher.train.epochs=1",
    "student.num_layers=2",
    "distill.train.epochs=1",
]
# the token task (UD POS): 40 train sentences a language, a 500-piece 32-wide teacher (4 heads of 8) and a
# 16-wide student (2 such heads) distilled one epoch; the caller sets the teacher's epochs
SMALL_UDPOS = [
    "data.max_train_per_language=40",
    "data.max_eval_per_language=8",
    "teacher.scratch.vocab_size=500",
    "teacher.scratch.hidden_size=32",
    "teacher.scratch.num_heads=4",
    "teacher.scratch.intermediate_size=64",
    "student.hidden_size=16",
    "student.intermediate_size=32",
    "distill.train.epochs=1",
]
# threads fixed, so a killed-and-resumed run (or a 2-process one) and an uninterrupted one add up floats in the
# same order
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass(frozen=True)
class TinyRun:
    """`distill run <recipe> output_dir=<out> data.path=<data> <overrides> <extra>`."""

    recipe: Path
    data: Path
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The recipe's `name`: the folder below output_dir that holds its runs."""
        return yaml.safe_load(self.recipe.read_text(encoding="utf-8"))["name"]

    def args(self, out: Path, *extra: str) -> list[str]:
        """The command line for `polydistill.cli.main`."""
        return ["run", str(self.recipe), f"output_dir={out}", f"data.path={self.data}", *self.overrides, *extra]

    def run(self, out: Path, *extra: str) -> Path:
        """Run in this process; the finished run's directory (the one `latest` points at)."""
        assert main(self.args(out, *extra)) == 0
        return (out / self.name / "latest").resolve()

    def start(
        self, out: Path, *extra: str, nproc: int | None = None, stdout: int = subprocess.PIPE
    ) -> subprocess.Popen:
        """Start `python -m polydistill run` (on `nproc` processes when given) with one thread a process."""
        launch = ["--nproc", str(nproc)] if nproc else []
        run, *recipe_and_overrides = self.args(out, *extra)
        command = [sys.executable, "-m", "polydistill", run, *launch, *recipe_and_overrides]
        return subprocess.Popen(command, env=ONE_THREAD, stdout=stdout, stderr=subprocess.PIPE, text=True)

    def directory(self, out: Path) -> Path:
        """The one run directory below `out` (not the `latest` link to it)."""
        (directory,) = self.directories(out)
        return directory

    def directories(self, out: Path) -> list[Path]:
        """The run directories below `out` so far: none before the run has read its data."""
        base = out / self.name
        return [p for p in base.iterdir() if p.name != "latest"] if base.is_dir() else []

    def kill_past(
        self,
        process: subprocess.Popen,
        out: Path,
        checkpoint: str,
        epoch: int,
        step: int,
        kill: Callable[[subprocess.Popen], None],
    ) -> Path:
        """`kill` the run started in `out` once the resume state of `checkpoint` has passed (epoch, step);
        the killed run's directory."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read()[-2000:]}"
            runs = self.directories(out)
            try:
                saved = json.loads((runs[0] / "checkpoints" / f".resume-{checkpoint}" / "state.json").read_text())
            except (IndexError, OSError, ValueError):  # not written yet, or being swapped in
                saved = None
            if saved is not None and saved["epoch"] * 1000 + saved["step"] >= epoch * 1000 + step:
                kill(process)
                return runs[0]
            time.sleep(0.005)
        kill(process)
        pytest.fail(f"no resume state of {checkpoint} past epoch {epoch} step {step} within 300 s")
