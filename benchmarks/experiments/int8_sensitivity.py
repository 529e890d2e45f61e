"""Which matrices cost a student its label agreement under dynamic int8? Each variant leaves one group of
matrices fp32 (or changes one quantization setting) and is scored against the PyTorch student on every test
sentence of a recipe's languages.

    python -m polydistill.benchmarks.experiments.int8_sensitivity --run runs/sib200-e5-small/latest \
        --out benchmarks/results/int8-sensitivity

The student is the run's final one (trimmed if the run trimmed it); its fp32 graph is exported and optimized as
`distill export` does (fused Attention), then quantized by onnxruntime's `quantize_dynamic` with the variant's
settings; the last rows are `distill export --per-channel --quantize int8-blocks` and `--quantize int8-smooth`
(export/quantize.py; int8-smooth calibrated on the dev sentences of every language, as stage export does).
Writes `<out>.json` and `<out>.md` with this command.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from polydistill.benchmarks.environment import cpu_info
from polydistill.benchmarks.outputs import command_line, write_results
from polydistill.data import load_task_data
from polydistill.export.onnx import MODEL_FILE, export_onnx, session
from polydistill.export.optimize import optimize_export
from polydistill.export.quantize import calibration_batches, quantize
from polydistill.recipe import load_recipe

# variant -> (per_channel, which nodes stay fp32: a predicate on (node name, op type))
VARIANTS: dict[str, tuple[bool, Any]] = {
    "per matrix (the default)": (False, None),
    "per channel": (True, None),
    "per channel, word embedding fp32": (True, lambda name, op: op == "EmbedLayerNormalization"),
    "per channel, fused attention fp32": (True, lambda name, op: op == "Attention"),
    "per channel, attention output fp32": (True, lambda name, op: "attention/output/dense" in name),
    "per channel, FFN input fp32": (True, lambda name, op: "intermediate/dense" in name),
    "per channel, FFN output fp32": (True, lambda name, op: "/output/dense" in name and "attention" not in name),
    "per channel, pooler and head fp32": (True, lambda name, op: "pooler" in name or "classifier" in name),
}
QUANTIZED_OPS = ("MatMul", "Attention", "Gather", "Gemm", "EmbedLayerNormalization")
BLOCKS = "int8-blocks: FFN matrices by blocks of 32, word embedding per row, attention per channel"
SMOOTH = "int8-smooth: FFN input smoothed, FFN output by blocks of 128, word embedding per row, attention per channel"


def student_dir(run: Path) -> Path:
    """The run's final student, the checkpoint its progress.json names (the pipeline's `student_checkpoint`)."""
    name = json.loads((run / "progress.json").read_text()).get("student_checkpoint")
    if not name or not (run / "checkpoints" / name / "config.json").is_file():
        raise SystemExit(f"no final student checkpoint recorded in {run / 'progress.json'}")
    return run / "checkpoints" / name


def batches(tokenizer, texts: list[str], size: int = 32):
    """(row indices, onnx inputs), sentences of similar length together."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        chunk = [texts[i] for i in rows]
        encoded = tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="np")
        yield rows, {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a sib200 run directory (runs/<recipe>/latest)")
    parser.add_argument("--out", default="benchmarks/results/int8-sensitivity")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run = Path(args.run).resolve()
    source = student_dir(run)
    recipe = load_recipe(run / "recipe.yaml")
    data = load_task_data(recipe.data)
    texts = [text for ds in data.splits["test"].values() for text in ds["text"]]
    model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    reference = np.zeros((len(texts), model.config.num_labels), np.float32)
    with torch.inference_mode():
        for rows, inputs in batches(tokenizer, texts):
            reference[rows] = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        parity = data.texts("dev")[:64]
        export_onnx(model, tokenizer, Path(tmp) / "raw", parity)
        optimize_export(Path(tmp) / "raw", Path(tmp) / "fp32", model, tokenizer, parity)
        graph = onnx.load(str(Path(tmp) / "fp32" / MODEL_FILE)).graph
        nodes = [(node.name, node.op_type) for node in graph.node if node.op_type in QUANTIZED_OPS]

        def score(name: str, path: Path, excluded: list[str]) -> None:
            ort = session(path, threads=2)
            got = np.zeros_like(reference)
            for rows, inputs in batches(tokenizer, texts):
                got[rows] = ort.run(None, inputs)[0]
            agreement = float((got.argmax(-1) == reference.argmax(-1)).mean())
            results.append({"variant": name, "fp32_nodes": excluded, "label_agreement": round(agreement, 4),
                            "megabytes": round(path.stat().st_size / 1e6, 2)})  # fmt: skip
            print(f"{name}: agreement {agreement:.4f}, {results[-1]['megabytes']} MB", flush=True)

        for name, (per_channel, keep_fp32) in VARIANTS.items():
            excluded = [n for n, op in nodes if keep_fp32 is not None and keep_fp32(n, op)]
            path = Path(tmp) / f"variant-{len(results)}.onnx"
            quantize_dynamic(Path(tmp) / "fp32" / MODEL_FILE, path, weight_type=QuantType.QInt8,
                             per_channel=per_channel, nodes_to_exclude=excluded,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
            score(name, path, excluded)
        # `distill export --quantize int8-blocks`: the same optimized graph with the word embedding left a Gather
        optimize_export(Path(tmp) / "raw", Path(tmp) / "gather", model, tokenizer, parity, fuse_embedding=False)
        score(
            BLOCKS,
            quantize(Path(tmp) / "gather", Path(tmp) / "blocks", "int8-blocks", per_channel=True) / MODEL_FILE,
            [],
        )
        calibration = calibration_batches(tokenizer, data.texts("dev"))
        smooth = quantize(Path(tmp) / "gather", Path(tmp) / "smooth", "int8-smooth", calibration, per_channel=True)
        score(SMOOTH, smooth / MODEL_FILE, [])
    doc = {"command": command_line("polydistill.benchmarks.experiments.int8_sensitivity", argv), "run": str(run),
           "student": source.name, "sentences": len(texts), "cpu": cpu_name(), "variants": results,
           "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    write_results(args.out, doc, render(doc))
    return 0


def cpu_name() -> str:
    info = cpu_info()
    return info["model"] + (", AVX-512" if info["has_avx512"] else "") + (", AMX" if info["has_amx"] else "")


def render(doc: dict[str, Any]) -> str:
    lines = [
        "# Dynamic int8: where the label agreement goes",
        "",
        f"Command: `{doc['command']}` ({doc['seconds']} s, {doc['cpu']}). Student: `{doc['student']}` of "
        f"`{doc['run']}`; agreement = share of its {doc['sentences']} test sentences (every language) whose int8 "
        "ONNX label equals the PyTorch student's. Activations are quantized per tensor, per batch, in every variant "
        "but int8-blocks (per block of 32 values in its FFN matrices) and int8-smooth (per block of 128 in its FFN "
        "output matrices; its FFN input activations divided by per-channel scales calibrated on the dev sentences).",
        "",
        "| variant | nodes left fp32 | label agreement | model.onnx MB |",
        "|---|---|---|---|",
    ]
    for row in doc["variants"]:
        fp32 = len(row["fp32_nodes"])
        lines.append(f"| {row['variant']} | {fp32} | {row['label_agreement']:.4f} | {row['megabytes']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
