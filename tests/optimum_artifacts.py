"""Artifacts for the optimum loading proof (`make test-optimum`), made in the main venv.

    python tests/optimum_artifacts.py OUT_DIR

optimum-onnx needs transformers < 4.58 and cannot share a venv with this project (transformers 5), so
the proof is split: this script exports tiny sequence and token classifiers with `distill export`'s
own code path and writes `expected.json` beside them (input ids, PyTorch labels, plain onnxruntime
labels); tests/test_optimum.py then runs under `.venv-optimum` and needs nothing from transformers 5.
The checkpoints have random weights (scaled up so labels vary) and a tokenizer trained on SIB-200
sentences: what is proven is loading and identical outputs, not accuracy.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification

from polydistill.export.artifact import ExportOptions, export_directory, load_classifier_dir
from polydistill.export.onnx import MODEL_FILE, pytorch_reference, run_onnx
from polydistill.io import atomic_directory, atomic_write_json
from polydistill.tokenizer import train_unigram_tokenizer

EXPECTED_FILE = "expected.json"
LANGUAGES = ("eng_Latn", "yor_Latn", "amh_Ethi", "mlt_Latn")
# (artifact directory, task, quantization mode)
ARTIFACTS = (
    ("sequence-fp32", "sequence", "none"),
    ("sequence-int8-dynamic", "sequence", "int8-dynamic"),
    ("token-int8-dynamic", "token", "int8-dynamic"),
)


def sib200_rows(root: Path, split: str, per_language: int) -> list[tuple[str, int]]:
    """(sentence, topic index) pairs from the shared SIB-200 TSVs (the topic is unused by the proof)."""
    topics = (root / "data" / LANGUAGES[0] / "labels.txt").read_text(encoding="utf-8").split()
    rows: list[tuple[str, int]] = []
    for lang in LANGUAGES:
        with open(root / "data" / lang / f"{split}.tsv", encoding="utf-8", newline="") as f:
            table = list(csv.reader(f, delimiter="\t"))[1 : per_language + 1]  # pandas quoting: csv.reader reads it
        rows += [(row[2], topics.index(row[1])) for row in table]
    return rows


def _init_std(name: str) -> float:
    """Random weights whose labels differ between sentences. With the default 0.02 init (or any small one)
    the first token's vector hardly depends on the sentence and every sentence gets the same label;
    wide query/key weights make attention peaky, so `<s>` picks up the sentence's own tokens."""
    if ".query." in name or ".key." in name:
        return 0.6
    return 0.5 if name.startswith("classifier") else 0.2


def tiny_checkpoint(directory: Path, task: str, tokenizer, num_labels: int) -> None:
    """A 2-layer XLM-R-architecture classifier saved with save_pretrained, as the pipeline saves students."""
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=num_labels,
    )
    cls = XLMRobertaForSequenceClassification if task == "sequence" else XLMRobertaForTokenClassification
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0.0, _init_std(name))
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def produce(out_dir: str | Path, data_root: str | Path) -> Path:
    """Write every artifact of `ARTIFACTS` and `expected.json` into `out_dir`, atomically."""
    data_root = Path(data_root)
    train = sib200_rows(data_root, "train", 150)
    parity = [text for text, _ in sib200_rows(data_root, "dev", 8)]
    probe = [text for text, _ in sib200_rows(data_root, "test", 5)]  # sentences no gate saw
    tokenizer = train_unigram_tokenizer([text for text, _ in train], vocab_size=800)

    def write(tmp: Path) -> None:
        expected = {"languages": list(LANGUAGES), "texts": probe, "artifacts": {}}
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".checkpoints.") as scratch:
            for name, task, mode in ARTIFACTS:
                checkpoint = Path(scratch) / task
                if not checkpoint.exists():
                    tiny_checkpoint(checkpoint, task, tokenizer, 7 if task == "sequence" else 17)
                export_directory(checkpoint, tmp / name, parity, ExportOptions(mode=mode, name=f"optimum proof {name}"))
                model, _, _ = load_classifier_dir(checkpoint)
                inputs, torch_logits = pytorch_reference(model, tokenizer, probe)
                onnx_logits = run_onnx(tmp / name / MODEL_FILE, inputs)
                expected["artifacts"][name] = {
                    "task": task,
                    "mode": mode,
                    "input_ids": inputs["input_ids"].tolist(),
                    "attention_mask": inputs["attention_mask"].tolist(),
                    "labels_pytorch": torch_logits.argmax(-1).tolist(),
                    "labels_onnxruntime": onnx_logits.argmax(-1).tolist(),
                    "logits_onnxruntime": np.round(onnx_logits, 6).tolist(),
                }
        atomic_write_json(tmp / EXPECTED_FILE, expected)

    return atomic_directory(out_dir, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/optimum_artifacts.py", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    default_data = os.environ.get("POLYDISTILL_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", default=str(Path(default_data) / "sib-200"), help="SIB-200 folder")
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    out = produce(args.out_dir, args.data)
    print(f"optimum proof artifacts: {', '.join(name for name, _, _ in ARTIFACTS)} and {EXPECTED_FILE} in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
