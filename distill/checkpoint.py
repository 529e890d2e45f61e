"""Resumable training state: what `distill.train.fit` needs to continue a killed run exactly.

One folder, replaced atomically (polydistill.io.atomic_directory), so a kill while it is written leaves the
previous state whole:

- `model.safetensors`, `best.safetensors`, `extra.safetensors`: the weights now, the best epoch's, and a
  loss's learned projections (safetensors: loading them runs no code);
- `optimizer.pt`: optimizer and scheduler state and the RNG states, saved with `torch.save` and read back
  with `torch.load(weights_only=True)`, which accepts only tensors and plain containers, never code;
- `state.json`: epoch, step within it, the epoch losses so far, and the best dev score and epoch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from polydistill.distributed import is_main
from polydistill.errors import DistillError
from polydistill.io import atomic_directory

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Trainables:
    """The objects `fit` trains and steps: all a resume point restores besides the loop's own counters."""

    model: torch.nn.Module
    extra: list[torch.nn.Parameter]  # a loss's learned projections
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator | None  # a training step's own RNG (masked-LM masking), if it has one


@dataclass(frozen=True)
class ResumePoint:
    """Where `fit` keeps its resume state and how often (in optimizer steps) it writes it."""

    directory: Path
    every_steps: int = 50

    def exists(self) -> bool:
        return (self.directory / STATE_FILE).is_file()

    def save(
        self, parts: Trainables, result: Any, best_state: dict[str, torch.Tensor] | None, epoch: int, step: int,
        running: list[float],
    ) -> None:  # fmt: skip
        """Write the state after `step` optimizer steps of (0-based) `epoch`; `result` is fit's FitResult."""

        def write(tmp: Path) -> None:
            save_model(parts.model, str(tmp / "model.safetensors"))  # save_model handles tied weights
            if best_state is not None:
                save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
            extra = {str(i): p.detach().contiguous() for i, p in enumerate(parts.extra)}
            save_file(extra, str(tmp / "extra.safetensors"))
            torch.save(
                {
                    "optimizer": parts.optimizer.state_dict(),
                    "scheduler": parts.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "generator": parts.generator.get_state() if parts.generator is not None else None,
                },
                tmp / "optimizer.pt",
            )
            state = {
                "epoch": epoch,
                "step": step,
                "running": running,
                "best_dev_score": result.best_dev_score,
                "best_epoch": result.best_epoch,
                "history": result.history,
                "skipped_batches": result.skipped_batches,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state))

        atomic_directory(self.directory, write)

    def load(self, parts: Trainables, result: Any) -> tuple[int, int, list[float], dict[str, torch.Tensor] | None]:
        """Restore `parts` and `result` in place; returns (epoch, step within it, epoch losses so far, best weights).
        A damaged file is one line naming it (`_restore`)."""
        state = self._restore(STATE_FILE, _read_state)
        self._restore("model.safetensors", lambda path: load_model(parts.model, str(path)))
        self._restore("extra.safetensors", lambda path: _copy_into(parts.extra, load_file(str(path))))
        self._restore("optimizer.pt", lambda path: _restore_optimizer(parts, torch.load(path, weights_only=True)))
        best_path = self.directory / "best.safetensors"
        best_state = self._restore(best_path.name, lambda path: load_file(str(path))) if best_path.is_file() else None
        result.best_dev_score, result.best_epoch = state["best_dev_score"], state["best_epoch"]
        result.history, result.skipped_batches = state["history"], state["skipped_batches"]
        return state["epoch"], state["step"], state["running"], best_state

    def _restore(self, name: str, read: Callable[[Path], Any]) -> Any:
        """`read(directory / name)`; any failure is one line naming that file (the libraries' own messages are
        tracebacks, and torch's for a bad optimizer.pt even suggests the unsafe `weights_only=False`)."""
        try:
            return read(self.directory / name)
        except Exception as exc:  # noqa: BLE001 - json, safetensors, torch and the state dicts raise many types
            raise DistillError(
                f"--resume: {self.directory / name} is damaged or truncated; delete {self.directory} to redo "
                "this training stage from its start"
            ) from exc

    def clear(self) -> None:
        if is_main():  # rank 0 owns the run directory (distill.io)
            shutil.rmtree(self.directory, ignore_errors=True)


def _read_state(path: Path) -> dict[str, Any]:
    """state.json with every key `load` reads (a KeyError here is a damaged file, named by `_restore`)."""
    state = json.loads(path.read_text())
    keys = ("epoch", "step", "running", "best_dev_score", "best_epoch", "history", "skipped_batches")
    return {key: state[key] for key in keys}


def _copy_into(params: list[torch.nn.Parameter], stored: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for i, param in enumerate(params):
            param.copy_(stored[str(i)])


def _restore_optimizer(parts: Trainables, bundle: dict[str, Any]) -> None:
    parts.optimizer.load_state_dict(bundle["optimizer"])
    parts.scheduler.load_state_dict(bundle["scheduler"])
    torch.set_rng_state(bundle["torch_rng"])
    if parts.generator is not None and bundle["generator"] is not None:
        parts.generator.set_state(bundle["generator"])
