"""Teacher outputs computed once per (teacher, data, features) and kept on disk as Arrow.

The teacher is frozen and runs without dropout, so its outputs on a training sentence never change:
every epoch, and every student distilled from the same teacher on the same data (an ablation grid,
another seed), can read them instead of running the teacher again. `teacher_cache` writes them with
`datasets` (memory-mapped Arrow, so a cache larger than RAM still works) under a key that hashes the
teacher's weights, the token ids and the features asked for; a changed teacher or a changed
tokenisation gets a new cache, never a stale one.

Per-token features (hidden states, q/k/v: [tokens, width] per layer, most of the bytes) are stored
in float16 — half the disk and read time, and a rounding (~1e-3 relative) far below what a student
matches — and read back as float32; logits stay float32.

Rows hold one example each (with its `index`), unpadded: `logits` ([labels] or [length, labels] for a token task) and,
per cached teacher layer i, `hidden_{i}` and `q_{i}`, `k_{i}`, `v_{i}` ([length, width]).
`TeacherCache.batch(indices, longest)` pads them back into the batch's shape.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from polydistill.data import Encoded, collate, length_batches
from polydistill.features import features_to, forward_features

CACHEABLE = ("logits", "hidden", "qkv", "cls")  # attention maps are [T, T] per head: recomputed instead


@dataclass(frozen=True)
class CacheSpec:
    """What to cache: teacher `features` (a subset of CACHEABLE) of the teacher `layers` (0-based)."""

    features: tuple[str, ...]
    layers: tuple[int, ...] = ()


def cache_key(teacher: torch.nn.Module, data: Encoded, spec: CacheSpec) -> str:
    """A digest of the teacher's weights, the examples' token ids and the spec."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(data.input_ids).encode())
    digest.update(json.dumps([sorted(spec.features), sorted(spec.layers)]).encode())
    return digest.hexdigest()[:20]


class TeacherCache:
    """Cached teacher outputs of one dataset, read back by example index."""

    def __init__(self, dataset: datasets.Dataset, spec: CacheSpec, path: Path) -> None:
        self.dataset = dataset.with_format("numpy")
        self.spec = spec
        self.path = path
        # rows are written in length-bucketed order; example i lives in row position[i]
        self.position = np.argsort(np.asarray(dataset["index"]))

    def batch(self, indices: list[int] | torch.Tensor, longest: int) -> dict[str, Any]:
        """`logits` [B, labels] or [B, longest, labels]; `hidden` and `qkv` as {teacher layer: tensor},
        each [B, longest, width] (zero where a sentence is shorter)."""
        rows = self.dataset[[int(self.position[int(i)]) for i in indices]]
        out: dict[str, Any] = {}
        if "logits" in self.spec.features:
            out["logits"] = _stack(rows["logits"], longest)
        if "cls" in self.spec.features:
            out["cls"] = _stack(rows["cls"], longest)
        if "hidden" in self.spec.features:
            out["hidden"] = {i: _stack(rows[f"hidden_{i}"], longest) for i in self.spec.layers}
        if "qkv" in self.spec.features:
            out["qkv"] = {i: tuple(_stack(rows[f"{part}_{i}"], longest) for part in "qkv") for i in self.spec.layers}
        return out


def _stack(values: Any, longest: int) -> torch.Tensor:
    first = values[0]
    if np.ndim(first) == 1:  # one vector per example (sentence logits)
        return torch.from_numpy(np.stack(values).astype(np.float32))
    out = np.zeros((len(values), longest, first.shape[-1]), dtype=np.float32)
    for row, value in enumerate(values):
        out[row, : len(value)] = value
    return torch.from_numpy(out)


def teacher_cache(
    teacher: torch.nn.Module, data: Encoded, spec: CacheSpec, root: str | Path, *, pad_id: int, batch_size: int = 64
) -> TeacherCache:
    """Load the cache of (teacher, data, spec) under `root`, or compute and write it first."""
    unknown = set(spec.features) - set(CACHEABLE)
    if unknown:
        raise ValueError(f"cannot cache teacher features {sorted(unknown)} (cacheable: {', '.join(CACHEABLE)})")
    path = Path(root) / cache_key(teacher, data, spec)
    if (path / "dataset_info.json").is_file():
        return TeacherCache(datasets.load_from_disk(str(path)), spec, path)

    lengths = [len(ids) for ids in data.input_ids]
    want = set(spec.features)

    def rows() -> Iterator[dict[str, Any]]:
        was_training = teacher.training
        teacher.eval()
        device = next(teacher.parameters()).device  # the teacher runs where it is (a GPU, if it was put there)
        try:
            for indices in length_batches(lengths, batch_size, shuffle=False):
                batch = collate(data, indices, pad_id)
                with torch.no_grad():
                    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                    out = features_to(forward_features(teacher, ids, mask, want), "cpu")
                for row, i in enumerate(indices):
                    n = lengths[i]
                    example: dict[str, Any] = {"index": i}
                    if "logits" in out:
                        logits = out["logits"][row]
                        example["logits"] = (logits[:n] if logits.ndim == 2 else logits).numpy()
                    if "cls" in out:
                        example["cls"] = out["cls"][row].numpy()
                    for layer in spec.layers:
                        if "hidden" in out:
                            example[f"hidden_{layer}"] = out["hidden"][layer][row, :n].half().numpy()
                        if "qkv" in out:
                            for part, tensor in zip("qkv", out["qkv"][layer], strict=True):
                                example[f"{part}_{layer}"] = tensor[row, :n].half().numpy()
                    yield example
        finally:
            teacher.train(was_training)

    # written next to its final name, then renamed: a killed run leaves no half cache behind, and two
    # processes writing the same cache at once each use their own temporary folder
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    # the key is the fingerprint: datasets would otherwise hash the generator, teacher and all
    dataset = datasets.Dataset.from_generator(rows, cache_dir=str(tmp / "build"), fingerprint=path.name)
    dataset.save_to_disk(str(tmp / "final"))
    try:
        (tmp / "final").rename(path)
    except OSError:  # another process wrote the same cache meanwhile: theirs is as good
        if not (path / "dataset_info.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TeacherCache(datasets.load_from_disk(str(path)), spec, path)
