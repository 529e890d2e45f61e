"""README.md model card for an exported artifact directory.

The card travels with the model, so it carries what a user of the folder alone needs: what the model
does and for which languages, how well (per language, when measured), how big and fast, which
data it learnt from under which licences, and a runnable onnxruntime example. The usage example is
executed by the tests, so it cannot drift from the artifact's real inputs and outputs. A run's PyTorch
checkpoint folders get a card of the same kind (`render_checkpoint_card`); the data sets and teacher either
card credits are in `polydistill.export.card_sources`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from polydistill.errors import DistillError
from polydistill.export.card_sources import TASK_SOURCES, Source

# re-exported: the stages, scoring and checkpoint cards import the teacher's card row from here
from polydistill.export.card_sources import teacher_card_source as teacher_card_source
from polydistill.io import atomic_write_text

CARD_FILE = "README.md"
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


def hub_front_matter(
    *,
    name: str,
    pipeline_tag: str,
    languages: list[str],
    metrics: dict[str, dict[str, float]] | None,
    sources: tuple[Source, ...],
    library_name: str,
    tags: list[str],
) -> str:
    """The Hugging Face Hub's YAML metadata (`huggingface_hub.ModelCardData`) of any polydistill model: licence (the
    teacher's, which the student's weights derive from; "other" when polydistill does not know it), languages as
    ISO 639-3 codes (`eng_Latn` -> `eng`), pipeline tag, datasets, base model and each language's scores as eval
    results. One function for the ONNX and the checkpoint cards, so the two never disagree on a field."""
    teacher = next((s for s in sources if s.license_id), None)
    datasets = [s.hub_id for s in sources if s.hub_id and not s.license_id]
    results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=datasets[0],
            dataset_name=f"{datasets[0]} ({lang})",
            dataset_config=lang,
            dataset_split="test",
            metric_type=metric.split(" ")[0],
            metric_name=metric,
            metric_value=float(value),
        )  # fmt: skip
        for lang, scores in (metrics or {}).items()
        if datasets
        for metric, value in scores.items()
    ]
    data = ModelCardData(
        language=sorted({lang.split("_")[0] for lang in languages}) or None,
        license=teacher.license_id if teacher else "other",
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=datasets or None,
        base_model=teacher.hub_id if teacher else None,
        model_name=name,
        eval_results=results or None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def front_matter(info: CardInfo) -> str:
    """The ONNX artifact's front matter (`hub_front_matter`), tagged with its quantization variant."""
    return hub_front_matter(
        name=info.name, pipeline_tag=PIPELINE_TAGS[info.task], languages=info.languages,
        metrics=info.metrics, sources=info.sources or TASK_SOURCES[info.task], library_name="onnx",
        tags=["polydistill", "onnx", info.variant, "distillation"],
    )  # fmt: skip


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
    lines += _results_section(info.metrics, "the run (or the metrics file given to `distill export`)")
    lines += ["## Usage", "", "```python", usage_example(info.task).rstrip(), "```", ""]
    lines += ["Pad on the right (the tokenizer's default): onnxruntime's fused attention assumes it.", ""]
    lines += _sources_section(info.sources or TASK_SOURCES[info.task], info.treebanks)
    return "\n".join(lines)


def _results_section(metrics: dict[str, dict[str, float]] | None, measured_by: str) -> list[str]:
    """The per-language score table of a card; nothing when the model was not scored."""
    if not metrics:
        return []
    names = sorted({m for per_lang in metrics.values() for m in per_lang})
    lines = [
        "## Results per language",
        "",
        f"Test-split scores per language, as measured by {measured_by}.",
        "",
        "| language | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for lang, per_lang in metrics.items():
        lines.append(f"| {lang} | " + " | ".join(_fmt(per_lang[m]) if m in per_lang else "" for m in names) + " |")
    return lines + [""]


def _sources_section(sources: tuple[Source, ...], treebanks: list[str]) -> list[str]:
    """Every data set and the teacher with its licence and citation: attribution travels with the model."""
    lines = ["## Data, licences and citations", "", "| data | licence | cite |", "|---|---|---|"]
    lines += [f"| {source.name} | {source.licence} | {source.citation} |" for source in sources]
    if treebanks:
        lines += ["", f"UD treebanks used: {', '.join(treebanks)} (CC BY-SA 4.0; cite as each README asks)."]
    return lines + [
        "",
        "Keep this section with the model: the CC-BY-SA 4.0 sources ask for attribution wherever they are used.",
        "",
    ]


def write_card(directory: str | Path, info: CardInfo) -> Path:
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render_card(info))
    return path


# ----------------------------------------------------------------------------------------------
# cards of a run's PyTorch checkpoints (checkpoints/<name>/)

HEADS = {  # config.architectures suffix -> what the saved model's head does
    "ForSequenceClassification": "sequence",
    "ForTokenClassification": "token",
    "ForMaskedLM": "masked-lm",
}
HEAD_PIPELINE_TAGS = {**PIPELINE_TAGS, "masked-lm": "fill-mask"}
AUTO_CLASSES = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
}


@dataclass(frozen=True)
class CheckpointCardInfo:
    """What the card of one checkpoint folder reports; `metrics` only for a model the run scored."""

    name: str
    folder: str  # its name under checkpoints/, which is its name in metrics.json and the report
    head: str  # a HEADS value: what the saved head does
    task: str  # the run's task, "sequence" or "token": which data (and licences) it learnt from
    about: str  # what this checkpoint is, in a sentence or two
    parameters: int
    non_embedding_parameters: int
    shape: str  # e.g. "layers 4, hidden 384, heads 12, FFN 1536, vocabulary 13,528 pieces"
    labels: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None
    teacher: Source | None = None  # the pretrained teacher, for its licence and citation


def checkpoint_usage(head: str) -> str:
    """A few lines of transformers that load this folder as it is and use it."""
    auto = AUTO_CLASSES[head]
    head_lines = f"""import torch
from transformers import {auto}, AutoTokenizer

model_dir = "."  # this folder
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = {auto}.from_pretrained(model_dir).eval()
"""
    if head == "masked-lm":
        return (
            head_lines
            + """texts = [f"The match ended in a {tokenizer.mask_token}."]
batch = tokenizer(texts, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
where = batch["input_ids"][0] == tokenizer.mask_token_id
print(tokenizer.convert_ids_to_tokens(logits[0, where].argmax(-1)))
"""
        )
    body = """texts = ["Ìjọba àpapọ̀ ti kéde ètò ìlera tuntun.", "The match ended in a draw."]
batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
"""
    if head == "sequence":
        return (
            head_lines
            + body
            + """for text, label in zip(texts, logits.argmax(-1).tolist()):
    print(model.config.id2label[label], "|", text)
"""
        )
    return (
        head_lines
        + body
        + """for row, text in enumerate(texts):
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][row])
    keep = batch["attention_mask"][row].bool()
    print([(t, model.config.id2label[i]) for t, i, k in zip(tokens, logits[row].argmax(-1).tolist(), keep) if k])
"""
    )


def render_checkpoint_card(info: CheckpointCardInfo) -> str:
    """A checkpoint folder's card: the Hub's front matter (`hub_front_matter`), what the model is, its size, its
    scores per language when the run scored it, how to load it, and the licences and citations it carries."""
    if info.task not in TASK_SOURCES or info.head not in AUTO_CLASSES:
        raise DistillError(f"unknown task {info.task!r} or head {info.head!r} for a checkpoint card")
    sources = (*TASK_SOURCES[info.task], info.teacher) if info.teacher else TASK_SOURCES[info.task]
    lines = [
        hub_front_matter(
            name=info.name,
            pipeline_tag=HEAD_PIPELINE_TAGS[info.head],
            languages=info.languages,
            metrics=info.metrics,
            sources=sources,
            library_name="transformers",
            tags=["polydistill", "distillation", info.folder],
        ),  # fmt: skip
        f"# {info.name}",
        "",
        info.about,
        "",
        "| | |",
        "|---|---|",
        f"| head | {AUTO_CLASSES[info.head]} |",
        f"| languages | {', '.join(info.languages) if info.languages else 'not recorded'} |",
    ]
    if info.labels:
        lines.append(f"| labels | {', '.join(info.labels)} |")
    lines += [
        f"| parameters | {info.parameters:,} ({info.non_embedding_parameters:,} outside the embedding tables) |",
        f"| shape | {info.shape} |",
    ]
    if info.teacher:
        lines.append(f"| teacher | {info.teacher.name} (licence: {info.teacher.licence}) |")
    lines.append("")
    if not info.teacher:
        lines += ["Licence `other` in the front matter: no pretrained teacher whose licence polydistill knows; the "
                  "data's licences below apply.", ""]  # fmt: skip
    if info.head != "masked-lm" and not info.metrics:
        lines += ["Not scored on the test sets: its classification head is not a trained one.", ""]
    lines += _results_section(info.metrics, "the polydistill run that saved this folder")
    lines += ["## Usage", "", "```python", checkpoint_usage(info.head).rstrip(), "```", ""]
    lines += _sources_section(sources, [])  # the teacher's licence and citation among the data's
    return "\n".join(lines)


def write_checkpoint_card(directory: str | Path, info: CheckpointCardInfo) -> Path:
    """README.md of a checkpoint folder, written atomically beside its weights."""
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render_checkpoint_card(info))
    return path
