"""README.md model card for an exported artifact directory.

The card travels with the model, so it carries what a user of the folder alone needs: what the model
does and for which languages, how well (per language, when measured), how big and fast, which
data it learnt from under which licences, and a runnable onnxruntime example. The usage example is
executed by the tests, so it cannot drift from the artifact's real inputs and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError
from distill.io import atomic_write_text

CARD_FILE = "README.md"


@dataclass(frozen=True)
class Source:
    """A data set (or the teacher) with its licence and the citation its authors ask for; `hub_id` and
    `license_id` (an SPDX-style id as the Hugging Face Hub spells it) go into the card's YAML front matter."""

    name: str
    licence: str
    citation: str
    hub_id: str | None = None
    license_id: str | None = None


SIB200 = Source(
    name="SIB-200 (topic classification labels)",
    licence="annotations Apache-2.0",
    citation=(
        "Adelani et al. 2023. SIB-200: A Simple, Inclusive, and Big Evaluation Dataset for Topic Classification "
        "in 200+ Languages and Dialects. arXiv:2309.07445"
    ),
    hub_id="Davlan/sib200",
)
FLORES200 = Source(
    name="FLORES-200 (the sentences SIB-200 labels)",
    licence="CC-BY-SA 4.0",
    citation="NLLB Team 2022. No Language Left Behind: Scaling Human-Centered Machine Translation. arXiv:2207.04672",
)
UD = Source(
    name="Universal Dependencies treebanks (UPOS tags)",
    licence="CC BY-SA 4.0 (each treebank used)",
    citation=(
        "de Marneffe et al. 2021. Universal Dependencies. Computational Linguistics 47(2); and each treebank as "
        "its README asks"
    ),
    hub_id="universal_dependencies",
)
TASK_SOURCES = {"sequence": (SIB200, FLORES200), "token": (UD,)}
PIPELINE_TAGS = {"sequence": "text-classification", "token": "token-classification"}
TASK_DESCRIPTIONS = {
    "sequence": "sentence classification (one label per sentence)",
    "token": "token classification (one label per subword token)",
}


@dataclass(frozen=True)
class CardInfo:
    """What the card reports; everything optional is left out of the card when not given."""

    name: str
    task: str  # "sequence" or "token"
    variant: str  # quantization mode, e.g. "int8-dynamic"
    labels: list[str]
    model_bytes: int
    languages: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None  # language -> metric name -> value
    latency_ms: dict[str, float] | None = None  # e.g. {"p50": 4.1, "batch": 1, "seq": 128, "threads": 2}
    parity: dict[str, float] | None = None  # e.g. {"fp32_max_abs_diff": 2e-7, "label_agreement": 1.0}
    fused_attention: str | None = None  # e.g. "4/4 layers"
    sources: tuple[Source, ...] | None = None  # default: by task
    treebanks: list[str] = field(default_factory=list)  # UD treebank names, for token models
    base_model: str | None = None


def usage_example(task: str) -> str:
    """About 15 lines of plain onnxruntime + AutoTokenizer that run against this folder as it is."""
    head = """import json

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

model_dir = "."  # this folder
tokenizer = AutoTokenizer.from_pretrained(model_dir)
session = ort.InferenceSession(f"{model_dir}/model.onnx", providers=["CPUExecutionProvider"])
id2label = json.load(open(f"{model_dir}/config.json", encoding="utf-8"))["id2label"]

texts = ["Ìjọba àpapọ̀ ti kéde ètò ìlera tuntun.", "The match ended in a draw."]
# right padding, as exported; only input_ids and attention_mask are inputs
batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
logits = session.run(None, feed)[0]
"""
    if task == "sequence":
        return (
            head
            + """for text, label in zip(texts, logits.argmax(-1)):
    print(id2label[str(label)], "|", text)
"""
        )
    if task == "token":
        return (
            head
            + """for row, text in enumerate(texts):
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][row])
    keep = batch["attention_mask"][row].astype(bool)
    print([(t, id2label[str(i)]) for t, i, k in zip(tokens, logits[row].argmax(-1), keep) if k])
"""
        )
    raise DistillError(f"unknown task {task!r} (sequence or token)")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def front_matter(info: CardInfo) -> str:
    """The Hugging Face Hub's YAML metadata (`huggingface_hub.ModelCardData`): licence (the teacher's, which
    the student's weights derive from; "other" when polydistill does not know it), languages as ISO 639-3 codes
    (`eng_Latn` -> `eng`), pipeline tag, datasets, base model and each language's scores as eval results."""
    from huggingface_hub import EvalResult, ModelCardData

    sources = info.sources or TASK_SOURCES[info.task]
    teacher = next((s for s in sources if s.license_id), None)
    datasets = [s.hub_id for s in sources if s.hub_id and not s.license_id]
    results = [
        EvalResult(
            task_type=PIPELINE_TAGS[info.task],
            dataset_type=datasets[0],
            dataset_name=f"{datasets[0]} ({lang})",
            dataset_config=lang,
            dataset_split="test",
            metric_type=metric.split(" ")[0],
            metric_name=metric,
            metric_value=float(value),
        )  # fmt: skip
        for lang, scores in (info.metrics or {}).items()
        if datasets
        for metric, value in scores.items()
    ]
    data = ModelCardData(
        language=sorted({lang.split("_")[0] for lang in info.languages}) or None,
        license=teacher.license_id if teacher else "other",
        library_name="onnx",
        pipeline_tag=PIPELINE_TAGS[info.task],
        tags=["polydistill", "onnx", info.variant, "distillation"],
        datasets=datasets or None,
        base_model=teacher.hub_id if teacher else None,
        model_name=info.name,
        eval_results=results or None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def render_card(info: CardInfo) -> str:
    """The card as Markdown, after the Hub's YAML front matter."""
    if info.task not in TASK_SOURCES:
        raise DistillError(f"unknown task {info.task!r} (sequence or token)")
    lines = [front_matter(info), f"# {info.name}", ""]
    lines += [
        f"A polydistill student exported to ONNX for {TASK_DESCRIPTIONS[info.task]}, variant **{info.variant}**.",
        "",
        "| | |",
        "|---|---|",
        f"| task | {TASK_DESCRIPTIONS[info.task]} |",
        f"| languages | {', '.join(info.languages) if info.languages else 'not recorded'} |",
        f"| labels | {', '.join(info.labels)} |",
        f"| variant | {info.variant} |",
        f"| model.onnx | {info.model_bytes / 1e6:.2f} MB |",
    ]
    if info.base_model:
        lines.append(f"| distilled from | {info.base_model} |")
    if info.fused_attention:
        lines.append(f"| fused Attention (onnxruntime optimizer) | {info.fused_attention} |")
    if info.latency_ms:
        lines.append(f"| CPU latency | {', '.join(f'{k} {_fmt(v)}' for k, v in info.latency_ms.items())} |")
    if info.parity:
        lines.append(f"| parity | {', '.join(f'{k} {v:.3g}' for k, v in info.parity.items())} |")
    lines.append("")
    if info.metrics:
        names = sorted({m for per_lang in info.metrics.values() for m in per_lang})
        lines += [
            "## Results per language",
            "",
            "Test-split scores per language, as measured by the run (or the metrics file given to `distill export`).",
            "",
            "| language | " + " | ".join(names) + " |",
        ]
        lines.append("|---|" + "---|" * len(names))
        for lang, per_lang in info.metrics.items():
            lines.append(f"| {lang} | " + " | ".join(_fmt(per_lang[m]) if m in per_lang else "" for m in names) + " |")
        lines.append("")
    lines += ["## Usage", "", "```python", usage_example(info.task).rstrip(), "```", ""]
    lines += [
        "Pad on the right (the tokenizer's default): onnxruntime's fused attention assumes it.",
        "",
        "## Data, licences and citations",
        "",
        "| data | licence | cite |",
        "|---|---|---|",
    ]
    for source in info.sources or TASK_SOURCES[info.task]:
        lines.append(f"| {source.name} | {source.licence} | {source.citation} |")
    if info.treebanks:
        lines += ["", f"UD treebanks used: {', '.join(info.treebanks)} (CC BY-SA 4.0; cite as each README asks)."]
    lines += [
        "",
        "Keep this section with the model: the CC-BY-SA 4.0 sources ask for attribution wherever they are used.",
        "",
    ]
    return "\n".join(lines)


def write_card(directory: str | Path, info: CardInfo) -> Path:
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render_card(info))
    return path
