"""Training throughput of one distillation step on CPU: tokens/s and model FLOPs utilisation (MFU).

    python -m benchmarks.train_throughput --out benchmarks/results/train_throughput --procs 1 2

Teacher: the XLM-R-base architecture (12 layers x 768, 12 heads, FFN 3072, 250,002-piece vocabulary;
random weights, none can be downloaded here); student: 4 of its layers (`students.student_from_teacher`).
One step = teacher forward (inference mode) + student forward + backward + AdamW step, on logit KL + CE,
for a global batch of `--batch` sequences of `--seq` tokens. With N processes the step is data-parallel:
torch.distributed DDP over gloo, each process `--batch / N` rows and `cores / N` threads, the same global
batch as one process. FLOPs are counted analytically (benchmarks.flops): teacher forward + 3 x student
forward (forward + a backward twice as costly). MFU = achieved FLOP/s / the fp32 matmul peak measured now
at the same total thread count (benchmarks.probe). Warm-up steps first, then the timed ones; every process
waits at a barrier before the clock starts and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.outputs import command_line, write_results

XLMR_BASE = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072}  # fmt: skip
STUDENT_LAYERS = [2, 5, 8, 11]
LABELS = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, args: argparse.Namespace, threads: int, out: str) -> None:
    """One process of the measurement; rank 0 writes its timings as JSON to `out`."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from students import student_from_teacher

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same teacher and student weights in every process
    config = XLMRobertaConfig(**XLMR_BASE, num_labels=LABELS, max_position_embeddings=514)
    config._attn_implementation = "eager"
    teacher = XLMRobertaForSequenceClassification(config).eval()
    student = student_from_teacher(teacher, STUDENT_LAYERS).train()
    model = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    rows = args.batch // world
    generator = torch.Generator().manual_seed(1000 + rank)  # each process its own slice of the global batch
    ids = torch.randint(5, XLMR_BASE["vocab_size"], (rows, args.seq), generator=generator)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, LABELS, (rows,), generator=generator)

    def step() -> None:
        with torch.inference_mode():
            teacher_logits = teacher(input_ids=ids, attention_mask=mask).logits
        logits = model(input_ids=ids, attention_mask=mask).logits
        kl = F.kl_div(F.log_softmax(logits / 2, -1), F.log_softmax(teacher_logits.clone() / 2, -1),
                      log_target=True, reduction="batchmean") * 4  # fmt: skip
        loss = kl + 0.5 * F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        barrier()
        start = time.perf_counter()
        step()
        barrier()
        times.append(time.perf_counter() - start)
    if rank == 0:
        params = {"teacher": sum(p.numel() for p in teacher.parameters()),
                  "student": sum(p.numel() for p in student.parameters())}  # fmt: skip
        student_config = {**XLMR_BASE, "num_hidden_layers": len(STUDENT_LAYERS), "num_labels": LABELS}
        Path(out).write_text(json.dumps({"times_s": times, "params": params, "student_config": student_config}))
    if world > 1:
        dist.destroy_process_group()


def measure(procs: int, args: argparse.Namespace, cores: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    from benchmarks.flops import encoder_flops

    if args.batch % procs:
        raise SystemExit(f"--batch {args.batch} must divide among {procs} processes")
    threads = max(1, cores // procs)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        if procs == 1:
            worker(0, 1, 0, args, threads, out)
        else:
            mp.spawn(worker, args=(procs, _free_port(), args, threads, out), nprocs=procs, join=True)
        timings = json.loads(Path(out).read_text())
    teacher_config = {**XLMR_BASE, "num_labels": LABELS}
    flops = encoder_flops(teacher_config, args.batch, args.seq) + 3 * encoder_flops(
        timings["student_config"], args.batch, args.seq
    )
    times = sorted(timings["times_s"])
    median = times[len(times) // 2]
    return {
        "processes": procs,
        "threads_per_process": threads,
        "global_batch": args.batch,
        "seq": args.seq,
        "median_step_s": median,
        "steps_s": timings["times_s"],
        "tokens_per_s": args.batch * args.seq / median,
        "flops_per_step": flops,
        "achieved_gflops": flops / median / 1e9,
        "params": timings["params"],
    }


def render(doc: dict[str, Any]) -> str:
    peak = doc["peak_fp32_gflops"]
    lines = [
        "# Distillation step throughput (CPU)",
        "",
        f"Command: `{doc['command']}`. Machine: {doc['cpu']}, {doc['cores']} cores; torch {doc['torch']}. "
        f"Teacher XLM-R-base architecture ({doc['rows'][0]['params']['teacher'] / 1e6:.1f}M parameters, random "
        f"weights) -> 4-layer student ({doc['rows'][0]['params']['student'] / 1e6:.1f}M, layers {STUDENT_LAYERS}); "
        f"global batch {doc['batch']} x {doc['seq']} tokens; {doc['warmup']} warm-up + {doc['steps']} timed steps. "
        f"FLOPs per step: teacher forward + 3 x student forward. MFU against the fp32 matmul peak measured now "
        f"on {doc['cores']} threads: {peak:.1f} GFLOP/s.",
        "",
        "| processes | threads each | median step (s) | tokens/s | achieved GFLOP/s | MFU |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['median_step_s']:.2f} | {r['tokens_per_s']:.0f} "
            f"| {r['achieved_gflops']:.1f} | {r['mfu']:.1%} |"
        )
    one = next((r for r in doc["rows"] if r["processes"] == 1), None)
    if one is not None:
        for r in doc["rows"]:
            if r["processes"] > 1:
                lines += ["", f"{r['processes']} processes on the same {doc['cores']} cores: "
                          f"{r['tokens_per_s'] / one['tokens_per_s']:.2f}x the tokens/s of one (DDP all-reduces the "
                          "student's gradients, its embedding's included, over gloo every step)."]  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.environment import cpu_info
    from benchmarks.probe import peak_flops_per_s, probe_peaks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/train_throughput", help="output path without extension")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    peaks = probe_peaks(["cpu"], [cores], say=lambda _line: None)
    peak = peak_flops_per_s(peaks, "cpu", "fp32", cores)
    rows = []
    for procs in args.procs:
        print(f"-- {procs} process(es)", flush=True)
        row = measure(procs, args, cores)
        row["mfu"] = row["achieved_gflops"] * 1e9 / peak
        rows.append(row)
    doc = {
        "command": command_line("benchmarks.train_throughput", argv),
        "cpu": cpu_info()["model"],
        "cores": cores,
        "torch": torch.__version__,
        "batch": args.batch,
        "seq": args.seq,
        "warmup": args.warmup,
        "steps": args.steps,
        "peak_fp32_gflops": peak / 1e9,
        "rows": rows,
    }
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
