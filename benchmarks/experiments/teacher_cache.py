"""What caching the teacher's outputs saves: a distillation epoch with the teacher run live vs read from disk.

The teacher is frozen, so `polydistill.cache.teacher_cache` writes its outputs once (Arrow, via `datasets`)
and every later epoch — and every later student on the same data — reads them. This measures, on real
SIB-200 sentences, an XLM-R-base-architecture teacher (12 layers × 768, an 8,000-piece Unigram
vocabulary trained here; random weights — timing does not depend on them) and a 4-layer × 384 student:

- live: per batch, the teacher's forward (no grad) + the student's forward/backward/step;
- cached: per batch, reading the teacher's outputs from the cache + the same student step;
- the one-time cost of writing the cache, its size on disk, and after how many epochs it pays off.

    python -m polydistill.benchmarks.experiments.teacher_cache --sentences 512 --out benchmarks/results/teacher_cache

Two loss mixes: logits only (KL + CE: the cache holds [N, labels]) and logits + MiniLMv2 relations on the
teacher's last layer (the cache also holds that layer's q, k, v for every token). Both modes run the recipe
pipeline's own step (`polydistill.distill_step.DistillStep`), built with and without the training data to cache.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from polydistill.batch_shares import WHOLE_BATCH
from polydistill.benchmarks.outputs import command_line, write_results
from polydistill.config import DataConfig
from polydistill.data import Encoded, encode, iterate_batches, load_task_data
from polydistill.distill_step import DistillStep
from polydistill.tokenizer import train_unigram_tokenizer

DATA = Path(os.environ.get("POLYDISTILL_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
MIXES = {
    "KL+CE (logits)": {"logit_kl": {"weight": 1.0, "temperature": 2.0}, "cross_entropy": {"weight": 0.5}},
    "KL+CE+relations (logits, last-layer q/k/v)": {
        "logit_kl": {"weight": 1.0, "temperature": 2.0},
        "cross_entropy": {"weight": 0.5},
        "minilm_relations": {"weight": 1.0, "relation_heads": 12},
    },
}


def build_models(vocab_size: int, labels: int):
    def make(hidden: int, layers: int, heads: int) -> torch.nn.Module:
        config = XLMRobertaConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * hidden, max_position_embeddings=514, pad_token_id=1, num_labels=labels,
        )  # fmt: skip
        config._attn_implementation = "eager"
        return XLMRobertaForSequenceClassification(config)

    torch.manual_seed(0)
    return make(768, 12, 12).eval(), make(384, 4, 6)


def epoch_seconds(student: torch.nn.Module, step: DistillStep, data: Encoded, batch_size: int) -> float:
    """One epoch of student training with `step`: the teacher's outputs read from its cache, or live without one."""
    optimizer = torch.optim.AdamW([*student.parameters(), *step.loss.parameters()], lr=1e-4)
    student.train()
    started = time.perf_counter()
    for batch in iterate_batches(data, batch_size, pad_id=1, shuffle=True, seed=0):
        loss, _ = step(student, batch, WHOLE_BATCH)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=512, help="training sentences (spread over 15 languages)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per mode (median reported)")
    parser.add_argument("--out", default="benchmarks/results/teacher_cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    task = load_task_data(DataConfig(path=str(DATA / "sib-200")))
    per_language = max(1, args.sentences // len(task.splits["train"]))
    texts = [t for ds in task.splits["train"].values() for t in ds["text"][:per_language]]
    labels = [y for ds in task.splits["train"].values() for y in ds["label"][:per_language]]
    tokenizer = train_unigram_tokenizer(task.texts("train"), 8000)
    data = encode(tokenizer, texts, labels, 128)
    teacher, student0 = build_models(len(tokenizer), len(task.labels))
    rows = []
    for name, losses in MIXES.items():
        root = Path(tempfile.mkdtemp(prefix="teacher-cache-"))
        try:
            live_step = DistillStep(student0, teacher, losses, "last", None, cache_root=root, pad_id=1)
            t0 = time.perf_counter()  # the cached step writes the cache as it is built
            cached_step = DistillStep(student0, teacher, losses, "last", data, cache_root=root, pad_id=1)
            build = time.perf_counter() - t0
            spec, size = cached_step.cache.spec, folder_mb(root)
            live, cached = [], []
            for _ in range(args.epochs):  # alternate, so drift hits both modes alike
                live.append(epoch_seconds(copy.deepcopy(student0), live_step, data, args.batch_size))
                cached.append(epoch_seconds(copy.deepcopy(student0), cached_step, data, args.batch_size))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        live_s, cached_s = float(np.median(live)), float(np.median(cached))
        saved = live_s - cached_s
        rows.append({
            "losses": name, "cached_features": list(spec.features), "cached_layers": list(spec.layers),
            "live_epoch_s": live_s, "cached_epoch_s": cached_s, "speedup": live_s / cached_s,
            "cache_build_s": build, "cache_mb": size, "live_runs_s": live, "cached_runs_s": cached,
            "break_even_epochs": build / saved if saved > 0 else None,
        })  # fmt: skip
        print(f"{name}: live {live_s:.1f} s/epoch, cached {cached_s:.1f} s/epoch ({live_s / cached_s:.1f}x), "
              f"cache written in {build:.1f} s, {size:.1f} MB", flush=True)  # fmt: skip
    doc = {
        "command": command_line("polydistill.benchmarks.experiments.teacher_cache", argv),
        "sentences": len(data), "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "teacher": "XLM-R-base architecture 12 x 768, 8,000-piece vocabulary, random weights",
        "student": "4 x 384, 6 heads", "rows": rows,
    }  # fmt: skip
    write_results(args.out, doc, render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    lines = [
        "# Teacher-output cache: distillation epoch, teacher live vs read from disk",
        "",
        f"Command: `{doc['command']}`. {doc['sentences']} SIB-200 training sentences (15 languages), batch "
        f"{doc['batch_size']}, {doc['threads']} threads, CPU. Teacher: {doc['teacher']}; student: {doc['student']}. "
        "Median epoch time over the timed epochs (live and cached alternated).",
        "",
        "| losses | cached | epoch, teacher live | epoch, teacher cached | speed-up | cache written once | "
        "cache on disk | pays off after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        layers = f" (layer {', '.join(map(str, r['cached_layers']))})" if r["cached_layers"] else ""
        pays = f"{r['break_even_epochs']:.2f} epochs" if r["break_even_epochs"] is not None else "never"
        lines.append(
            f"| {r['losses']} | {', '.join(r['cached_features'])}{layers} | {r['live_epoch_s']:.1f} s "
            f"| {r['cached_epoch_s']:.1f} s | **{r['speedup']:.1f}×** | {r['cache_build_s']:.1f} s "
            f"| {r['cache_mb']:.2f} MB | {pays} |"
        )
    lines += [
        "",
        "The cache is keyed by the teacher's weights, the token ids and the features, so every later student "
        "distilled from the same teacher on the same data (an ablation grid, another seed, pruning recovery) "
        "starts with it already written: for them the saving is the whole teacher forward from the first epoch.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
