"""Training throughput of one distillation step on CPU or GPUs: tokens/s and model FLOPs utilisation (MFU).

    python -m polydistill.benchmarks.experiments.train_throughput --out benchmarks/results/train_throughput \
        --procs 1 2 --precision fp32 bf16

Teacher: the XLM-R-base architecture (12 layers x 768, 12 heads, FFN 3072, 250,002-piece vocabulary;
random weights, none can be downloaded here); student: 4 of its layers (`students.student_from_teacher`).
One step = teacher forward (inference mode) + student forward + backward + AdamW step, on logit KL + CE,
for a global batch of `--batch` sequences of `--seq` tokens. With N processes the step is data-parallel:
torch.distributed DDP over gloo, each process `--batch / N` rows and `cores / N` threads, the same global
batch as one process. FLOPs are counted analytically (benchmarks.flops): teacher forward + 3 x student
forward (forward + a backward twice as costly). `--precision bf16` runs teacher and student under bf16
autocast (distill's `train.precision: bf16`; AMX on recent Xeons). MFU = achieved FLOP/s / the matmul peak of
the same precision measured now at the same total thread count (benchmarks.probe). Warm-up steps first,
then the timed ones; every process waits at a barrier before the clock starts and stops.

On GPUs (`--device cuda`, one process per GPU over NCCL; not run yet: no GPU was lent to the sessions that
wrote this):

    python -m polydistill.benchmarks.experiments.train_throughput --device cuda --procs 1 --precision bf16 --batch 64 \
        --out benchmarks/results/h200/train
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

from polydistill.benchmarks.outputs import command_line, write_results

XLMR_BASE = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072}  # fmt: skip
STUDENT_LAYERS = [2, 5, 8, 11]
LABELS = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, args: argparse.Namespace, threads: int, precision: str, out: str) -> None:
    """One process of the measurement; rank 0 writes its timings as JSON to `out`."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from polydistill.students import student_from_teacher

    cuda = args.device == "cuda"
    device = f"cuda:{rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(rank)
    torch.set_num_threads(threads)
    if world > 1:
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same teacher and student weights in every process
    config = XLMRobertaConfig(**XLMR_BASE, num_labels=LABELS, max_position_embeddings=514)
    config._attn_implementation = "eager"
    teacher = XLMRobertaForSequenceClassification(config).eval()
    student = student_from_teacher(teacher, STUDENT_LAYERS).train().to(device)
    teacher.to(device)
    ddp_devices = [rank] if cuda else None
    model = torch.nn.parallel.DistributedDataParallel(student, device_ids=ddp_devices) if world > 1 else student
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    rows = args.batch // world
    generator = torch.Generator().manual_seed(1000 + rank)  # each process its own slice of the global batch
    ids = torch.randint(5, XLMR_BASE["vocab_size"], (rows, args.seq), generator=generator)
    labels = torch.randint(0, LABELS, (rows,), generator=generator).to(device)
    ids = ids.to(device)
    mask = torch.ones_like(ids)

    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with torch.inference_mode(), autocast:
            teacher_logits = teacher(input_ids=ids, attention_mask=mask).logits.float()
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        kl = F.kl_div(F.log_softmax(logits / 2, -1), F.log_softmax(teacher_logits.clone() / 2, -1),
                      log_target=True, reduction="batchmean") * 4  # fmt: skip
        loss = kl + 0.5 * F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def barrier() -> None:  # every process, and the GPU's queued work, done
        if cuda:
            torch.cuda.synchronize()
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


def measure(procs: int, precision: str, args: argparse.Namespace, cores: int) -> dict[str, Any]:
    import torch.multiprocessing as mp

    from polydistill.benchmarks.flops import encoder_flops

    if args.batch % procs:
        raise SystemExit(f"--batch {args.batch} must divide among {procs} processes")
    threads = max(1, cores // procs) if args.device == "cpu" else 1
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        if procs == 1:
            worker(0, 1, 0, args, threads, precision, out)
        else:
            mp.spawn(worker, args=(procs, _free_port(), args, threads, precision, out), nprocs=procs, join=True)
        timings = json.loads(Path(out).read_text())
    teacher_config = {**XLMR_BASE, "num_labels": LABELS}
    flops = encoder_flops(teacher_config, args.batch, args.seq) + 3 * encoder_flops(
        timings["student_config"], args.batch, args.seq
    )
    times = sorted(timings["times_s"])
    median = times[len(times) // 2]
    return {
        "processes": procs,
        "precision": precision,
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
    peaks = ", ".join(f"{k} {v:.1f}" for k, v in doc["peak_gflops"].items())
    lines = [
        f"# Distillation step throughput ({doc['device'].upper()})",
        "",
        f"Command: `{doc['command']}`. Machine: {doc['cpu']}, {doc['cores']} cores; torch {doc['torch']}. "
        f"Teacher XLM-R-base architecture ({doc['rows'][0]['params']['teacher'] / 1e6:.1f}M parameters, random "
        f"weights) -> 4-layer student ({doc['rows'][0]['params']['student'] / 1e6:.1f}M, layers {STUDENT_LAYERS}); "
        f"global batch {doc['batch']} x {doc['seq']} tokens; {doc['warmup']} warm-up + {doc['steps']} timed steps. "
        f"FLOPs per step: teacher forward + 3 x student forward. MFU against the matmul peak of the row's "
        f"precision measured now on {doc['cores']} threads (GFLOP/s): {peaks}.",
        "",
        "| processes | precision | threads each | median step (s) | tokens/s | achieved GFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['processes']} | {r['precision']} | {r['threads_per_process']} | {r['median_step_s']:.2f} "
            f"| {r['tokens_per_s']:.0f} | {r['achieved_gflops']:.1f} | {r['mfu']:.1%} |"
        )
    lines.append("")
    for r in doc["rows"]:
        one = next((o for o in doc["rows"] if o["processes"] == 1 and o["precision"] == r["precision"]), None)
        if r["processes"] > 1 and one is not None:
            lines.append(f"- {r['processes']} {r['precision']} processes on the same {doc['cores']} cores: "
                         f"{r['tokens_per_s'] / one['tokens_per_s']:.2f}x the tokens/s of one (DDP all-reduces the "
                         "student's gradients, its embedding's included, over gloo every step).")  # fmt: skip
    fp32 = next((r for r in doc["rows"] if r["processes"] == 1 and r["precision"] == "fp32"), None)
    bf16 = next((r for r in doc["rows"] if r["processes"] == 1 and r["precision"] == "bf16"), None)
    if fp32 and bf16:
        lines.append(f"- bf16 autocast, 1 process: {bf16['tokens_per_s'] / fp32['tokens_per_s']:.2f}x the tokens/s "
                     "of fp32.")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from polydistill.benchmarks.environment import cpu_info
    from polydistill.benchmarks.probe import peak_flops_per_s, probe_peaks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/train_throughput", help="output path without extension")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: one process per GPU, NCCL")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    found = probe_peaks([args.device], [cores], say=lambda _line: None)
    peaks = {p: peak_flops_per_s(found, args.device, p, cores) for p in args.precision}
    rows = []
    for precision in args.precision:
        for procs in args.procs:
            print(f"-- {procs} process(es), {precision}", flush=True)
            row = measure(procs, precision, args, cores)
            row["mfu"] = row["achieved_gflops"] * 1e9 / peaks[precision]
            rows.append(row)
    doc = {
        "command": command_line("polydistill.benchmarks.experiments.train_throughput", argv),
        "device": args.device,
        "cpu": cpu_info()["model"] if args.device == "cpu" else torch.cuda.get_device_name(0),
        "cores": cores,
        "torch": torch.__version__,
        "batch": args.batch,
        "seq": args.seq,
        "warmup": args.warmup,
        "steps": args.steps,
        "peak_gflops": {p: v / 1e9 for p, v in peaks.items()},
        "rows": rows,
    }
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
