"""Run a recipe's stages in order and write one run directory.

    runs/<name>/<timestamp>/          (runs/<name>/latest points at the newest)
      recipe.yaml                     the resolved recipe
      checkpoints/teacher, student    safetensors + tokenizer, loadable with from_pretrained
      onnx/student-<variant>/         one ONNX artifact directory per export variant, with its card
      metrics.json, report.md, plots/

Each stage is a plain function of the `Run` state; the order is the recipe's `stages` list.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from distill.config import STAGES, Recipe, recipe_to_dict
from distill.data import Encoded, TaskData, encode, load_task_data
from distill.errors import DistillError
from distill.io import atomic_write_text, save_pretrained_atomic
from distill.losses import WeightedLoss
from distill.metrics import accuracy, macro_f1
from distill.models import build_scratch_teacher, count_parameters, load_pretrained
from distill.tokenizer import train_unigram_tokenizer
from distill.train import fit, predict_logits

TEACHER, STUDENT, STUDENT_PRUNED = "teacher", "student", "student_pruned"


@dataclass
class Run:
    """Everything the stages share; each stage reads what earlier ones left here."""

    recipe: Recipe
    directory: Path
    data: TaskData
    tokenizer: Any = None
    encoded: dict[str, dict[str, Encoded]] = field(default_factory=dict)  # split -> lang -> Encoded
    teacher: Any = None
    teacher_from_scratch: bool = False
    student: Any = None
    student_name: str = STUDENT  # STUDENT, or STUDENT_PRUNED once the prune stage has run
    student_layers: list[int] = field(default_factory=list)
    teacher_train_logits: torch.Tensor | None = None  # cached once, reused by distill and prune recovery
    models: dict[str, Any] = field(default_factory=dict)  # name -> model, for the size table
    onnx_dirs: dict[str, Path] = field(default_factory=dict)
    # model name -> language -> predicted labels on the test split
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def joined(self, split: str) -> Encoded:
        parts = self.encoded[split].values()
        return Encoded([x for p in parts for x in p.input_ids], [y for p in parts for y in p.labels])


def run_recipe(recipe: Recipe, *, say: Callable[[str], None] = print) -> Path:
    """Run every stage of `recipe`; returns the run directory."""
    torch.manual_seed(recipe.seed)
    data = load_task_data(recipe.data)  # data errors surface before anything is written
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(recipe.output_dir) / recipe.name
    if base.exists() and not base.is_dir():
        raise DistillError(f"output path {base} exists and is not a directory")
    directory = base / stamp
    directory.mkdir(parents=True, exist_ok=False)
    run = Run(recipe=recipe, directory=directory, data=data)
    atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    started = time.perf_counter()
    timings = {}
    for name in recipe.stages:
        say(f"== stage {name}")
        t0 = time.perf_counter()
        try:
            STAGE_FUNCTIONS[name](run, say)
        except DistillError as exc:
            raise DistillError(
                f"stage '{name}' failed: {exc} (finished stages' artifacts kept in {directory})"
            ) from exc
        timings[name] = round(time.perf_counter() - t0, 1)
    run.metrics["timings_s"] = {**timings, "total": round(time.perf_counter() - started, 1)}
    run.metrics["environment"] = environment()
    from distill.report import write_report  # matplotlib is imported only when reporting

    write_report(run)
    _point_latest(base, directory)
    say(f"run directory: {directory}")
    return directory


def _point_latest(base: Path, directory: Path) -> None:
    link = base / "latest"
    tmp = base / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(directory.name)
    os.replace(tmp, link)


# ----------------------------------------------------------------------------------------------
# stages


def stage_teacher(run: Run, say: Callable[[str], None]) -> None:
    """Load or build the teacher; fine-tune it on the task unless it is already a task classifier."""
    recipe = run.recipe
    labels = run.data.labels
    if recipe.teacher.model is None:
        cfg = recipe.teacher.scratch
        say(f"training a {cfg.vocab_size}-piece Unigram tokenizer on {len(run.data.texts('train'))} train sentences")
        run.tokenizer = train_unigram_tokenizer(run.data.texts("train"), cfg.vocab_size)
        run.teacher = build_scratch_teacher(cfg, len(run.tokenizer), labels)
        run.teacher_from_scratch = True
        needs_training = True
    else:
        run.teacher, run.tokenizer, is_classifier = load_pretrained(
            recipe.teacher.model, labels, trust_remote_code=recipe.teacher.trust_remote_code
        )
        needs_training = not is_classifier
    _encode_all(run)
    run.models[TEACHER] = run.teacher
    params = count_parameters(run.teacher)
    say(f"teacher: {params['total'] / 1e6:.2f}M parameters ({params['non_embedding'] / 1e6:.2f}M outside embeddings)")
    if needs_training:
        result = fit(
            run.teacher,
            run.joined("train"),
            run.joined("dev"),
            _cross_entropy_step,
            recipe.teacher.train,
            pad_id=run.pad_id,
            seed=recipe.seed,
            on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, run.directory / "checkpoints" / TEACHER),
            desc="teacher",
        )
        run.metrics.setdefault("training", {})[TEACHER] = vars(result)
    else:
        say("teacher is already a classifier for these labels: no fine-tuning")
        save_pretrained_atomic(run.teacher, run.tokenizer, run.directory / "checkpoints" / TEACHER)
    _evaluate_torch(run, TEACHER, run.teacher)


def stage_distill(run: Run, say: Callable[[str], None]) -> None:
    """Student = a subset of the teacher's layers; trained on the recipe's weighted losses."""
    from students import pick_layers, student_from_teacher

    recipe = run.recipe
    n = run.teacher.config.num_hidden_layers
    layers = recipe.student.layers or pick_layers(n, recipe.student.num_layers)
    if any(not 0 <= i < n for i in layers):
        raise DistillError(f"'student.layers' {layers} must index the teacher's {n} layers")
    run.student_layers = list(layers)
    run.student = student_from_teacher(run.teacher, layers)
    params = count_parameters(run.student)
    say(f"student: teacher layers {layers}, {params['total'] / 1e6:.2f}M parameters")
    _train_student(run, STUDENT, recipe.distill.train, say)


def stage_prune(run: Run, say: Callable[[str], None]) -> None:
    """Structured pruning of the student (heads + FFN), then distillation again to recover."""
    from distill.data import collate, length_batches
    from students import PruneConfig, prune_with_summary

    if run.student is None:
        raise DistillError("stage 'prune' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.prune
    batches = None
    if cfg.importance == "taylor":
        train = run.joined("train")
        order = length_batches([len(x) for x in train.input_ids], 32, shuffle=True, seed=run.recipe.seed)
        batches = [collate(train, idx, run.pad_id) for idx in order[: cfg.calibration_batches]]
    try:
        pruned, summary = prune_with_summary(  # prunes in place: keep the distilled student intact
            copy.deepcopy(run.student), PruneConfig(heads=cfg.heads, ffn=cfg.ffn, importance=cfg.importance), batches
        )
    except ValueError as exc:
        raise DistillError(f"cannot prune the student: {exc}") from exc
    say(f"pruned: {summary}")
    run.student = pruned
    run.metrics["pruning"] = {"heads": cfg.heads, "ffn": cfg.ffn, "importance": cfg.importance, "summary": str(summary)}
    _train_student(run, STUDENT_PRUNED, cfg.recover, say)


def _train_student(run: Run, name: str, train_cfg, say: Callable[[str], None]) -> None:
    """Distil `run.student` from the teacher's cached logits; keep the best dev checkpoint as `name`."""
    loss = WeightedLoss(run.recipe.distill.losses)
    train = run.joined("train")
    if run.teacher_train_logits is None:
        # The teacher is frozen and dropout is off, so its logits per sentence never change: compute
        # them once instead of once per epoch (a teacher forward costs more than a small student's step).
        say(f"caching teacher logits for {len(train)} training sentences")
        run.teacher_train_logits = torch.from_numpy(predict_logits(run.teacher, train, run.pad_id))
    teacher_logits = run.teacher_train_logits

    def step(student: torch.nn.Module, batch: dict[str, torch.Tensor]):
        student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return loss(
            student_logits=student_logits, teacher_logits=teacher_logits[batch["index"]], labels=batch["labels"]
        )

    result = fit(
        run.student,
        train,
        run.joined("dev"),
        step,
        train_cfg,
        pad_id=run.pad_id,
        seed=run.recipe.seed,
        on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, run.directory / "checkpoints" / name),
        desc="distill" if name == STUDENT else "recover",
    )
    run.metrics.setdefault("training", {})[name] = vars(result)
    run.student_name = name
    run.models[name] = run.student
    _evaluate_torch(run, name, run.student)


def variant_tag(variant: str) -> str:
    """`export.variants` entry -> the name its files and scores go by ("none" is the fp32 graph)."""
    return "fp32" if variant == "none" else variant


def onnx_model_name(variant: str) -> str:
    """The name an exported variant of the student has in metrics.json ("student_onnx_int8-dynamic")."""
    return f"student_onnx_{variant_tag(variant)}"


STUDENT_INT8 = onnx_model_name("int8-dynamic")


def stage_export(run: Run, say: Callable[[str], None]) -> None:
    """Every variant in `export.variants` through `distill export`'s gated path, then scored per language.

    Each variant is its own artifact directory, onnx/student-<variant>/ (student-fp32 for "none"):
    parity-gated fp32 export, optimizer with the fused-Attention check, the quantization, a model card.
    It is then run on every language's test split: label agreement with the PyTorch student and the accuracy drop per
    language; a variant that loses more than `export.max_drop_points` in any language is flagged.
    """
    from export.card import write_card
    from export.cli import ExportOptions, export_directory
    from export.onnx import session

    if run.student is None:
        raise DistillError("stage 'export' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.export
    dev_texts = run.data.texts("dev")
    student_dir = run.directory / "checkpoints" / run.student_name
    torch_predictions = run.predictions[run.student_name]
    gold = {lang: np.array(enc.labels) for lang, enc in run.encoded["test"].items()}
    report: dict[str, Any] = {}
    for variant in cfg.variants:
        options = ExportOptions(
            mode=variant, optimize=cfg.optimize, calibration_method=cfg.calibration_method,
            tolerance=cfg.parity_tolerance, opset=cfg.opset, max_parity_sentences=cfg.parity_sentences,
            languages=list(run.recipe.data.languages), name=f"{run.recipe.name} student ({variant})",
        )  # fmt: skip
        # dev sentences of every language: the parity gate, and int8-static's calibration set
        out_dir = run.directory / "onnx" / f"student-{variant_tag(variant)}"
        summary = export_directory(student_dir, out_dir, dev_texts, options)
        run.onnx_dirs[variant] = summary.directory
        name = onnx_model_name(variant)
        sess = session(summary.directory / "model.onnx")
        for lang, enc in run.encoded["test"].items():
            run.predictions.setdefault(name, {})[lang] = _onnx_logits(sess, enc, run.pad_id).argmax(-1)
        entry = {
            "directory": str(summary.directory.relative_to(run.directory)),
            "size_mb": round(summary.model_bytes / 1e6, 3),
            "fp32_max_abs_diff": summary.fp32_max_abs_diff,
            "optimized_max_abs_diff": summary.optimized_max_abs_diff,
            "fused_attention": summary.fused_attention,
            **gate_variant(run.predictions[name], torch_predictions, gold, cfg.max_drop_points),
        }
        report[variant] = entry
        worst = entry["worst_language"]
        card_metrics = {lang: {"accuracy": v["accuracy"], "accuracy (PyTorch fp32)": v["pytorch_accuracy"]}
                        for lang, v in entry["languages"].items()}  # fmt: skip
        write_card(summary.directory, dataclasses.replace(summary.card, metrics=card_metrics))
        flag = f"  FLAGGED: {worst} drops {entry['worst_drop_points']:.1f} points" if entry["flagged"] else ""
        say(
            f"{variant}: {entry['size_mb']:.2f} MB, fused Attention {summary.fused_attention or 'not optimized'}, "
            f"label agreement {entry['label_agreement']:.4f}, worst language {worst} "
            f"{-entry['worst_drop_points']:+.1f} points{flag}"
        )
    run.metrics["export"] = {
        "max_drop_points": cfg.max_drop_points,
        "parity_sentences": min(cfg.parity_sentences, len(dev_texts)),
        "parity_tolerance": cfg.parity_tolerance,
        "variants": report,
    }


def gate_variant(
    predicted: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    gold: dict[str, np.ndarray],
    max_drop_points: float,
) -> dict[str, Any]:
    """Label agreement of a variant with its reference model, its accuracy drop in every language
    (points, positive = worse), and whether any language dropped by more than `max_drop_points`."""
    per_language = {}
    for lang, labels in gold.items():
        acc, ref = accuracy(predicted[lang], labels), accuracy(reference[lang], labels)
        per_language[lang] = {"accuracy": acc, "pytorch_accuracy": ref, "drop_points": 100 * (ref - acc)}
    worst = max(per_language, key=lambda lang: per_language[lang]["drop_points"])
    agreement = np.concatenate([predicted[lang] == reference[lang] for lang in gold])
    return {
        "label_agreement": float(agreement.mean()),
        "worst_language": worst,
        "worst_drop_points": per_language[worst]["drop_points"],
        "flagged": per_language[worst]["drop_points"] > max_drop_points,
        "languages": per_language,
    }


def stage_bench(run: Run, say: Callable[[str], None]) -> None:
    """Every variant of the teacher and student, interleaved, with the benchmark harness.

    Writes `bench/results.{json,md}` and `bench/pareto.png` in the run directory; the teacher's
    PyTorch fp32 and the student's int8 ONNX rows become `metrics.json`'s `latency_ms`.
    """
    from benchmarks.harness import Settings, run_benchmark
    from benchmarks.report import write_outputs
    from benchmarks.variants import cpu_has_bf16, hf_source, onnx_source

    cfg = run.recipe.bench
    threads = cfg.threads or os.cpu_count() or 1
    mean = score_table(run)["mean"]
    checkpoints = run.directory / "checkpoints"
    sources = [hf_source(checkpoints / TEACHER, TEACHER, "teacher", {"torch/fp32": mean[TEACHER]})]
    for name in [n for n in run.models if n != TEACHER]:  # the distilled student, and the pruned one
        sources.append(hf_source(checkpoints / name, name, "student", {"torch/fp32": mean[name]}))
    for variant, directory in run.onnx_dirs.items():
        if variant == "none":
            continue  # the student's fp32 onnxruntime row is exported by the harness itself
        # int8-dynamic keeps the student's name (it replaces the harness's own int8 export of it);
        # the other variants are rows of their own
        label = run.student_name if variant == "int8-dynamic" else onnx_model_name(variant)
        source = onnx_source(directory, label, "student")
        source.accuracy[f"onnxruntime/{source.onnx_precision}"] = mean[onnx_model_name(variant)]
        sources.append(source)
    settings = Settings(
        device="cpu",
        precisions=["fp32", "int8-dynamic"] + (["bf16"] if cpu_has_bf16() else []),
        batches=[cfg.batch],
        seqs=[cfg.seq],
        threads=[threads],
        texts=run.data.texts("dev") if cfg.length_mix else None,  # real sentence lengths + tokenisation rows
        warmup=cfg.warmup,
        min_runs=cfg.runs,
        max_seconds=cfg.max_seconds,
        command=f"distill run (stage bench of {run.recipe.name})",
    )
    say(f"benchmark: batch {cfg.batch}, sequence {cfg.seq} and the dev length mix, {threads} threads")
    doc = run_benchmark(sources, settings, say=lambda _line: None)
    write_outputs(run.directory / "bench", doc)
    run.metrics["latency_ms"] = _latency_summary(doc["results"], cfg.seq, run.student_name)
    run.metrics["latency_setup"] = {"batch": cfg.batch, "seq": cfg.seq, "threads": threads, "warmup": cfg.warmup}
    rows = [{k: v for k, v in row.items() if k != "samples_ms"} for row in doc["results"]]
    run.metrics["bench"] = {"results": "bench/results.json", "markdown": "bench/results.md", "rows": rows}
    if (run.directory / "bench" / "pareto.png").exists():
        run.metrics["bench"]["pareto"] = "bench/pareto.png"
    for name, r in run.metrics["latency_ms"].items():
        say(f"  {name}: p50 {r['p50']:.2f} ms, p90 {r['p90']:.2f} ms over {r['runs']} runs")


def _latency_summary(rows: list[dict[str, Any]], seq: int, student: str) -> dict[str, dict[str, float]]:
    """The two headline variants at the fixed sequence length, under the report's names."""
    wanted = {
        (TEACHER, "torch", "fp32"): "teacher_torch_fp32",
        (student, "onnxruntime", "int8-dynamic"): STUDENT_INT8,
    }
    out = {}
    for row in rows:
        key = (row.get("model"), row.get("backend"), row.get("precision"))
        if row.get("stage") == "forward" and row.get("seq") == seq and key in wanted:
            out[wanted[key]] = {
                "p50": row["p50_ms"], "p90": row["p90_ms"], "p99": row["p99_ms"], "mean": row["mean_ms"],
                "stdev": row["stdev_ms"], "runs": row["runs"], "settled": row["settled"],
            }  # fmt: skip
    return out


STAGE_FUNCTIONS: dict[str, Callable[[Run, Callable[[str], None]], None]] = {
    "teacher": stage_teacher,
    "distill": stage_distill,
    "prune": stage_prune,
    "export": stage_export,
    "bench": stage_bench,
}
assert tuple(STAGE_FUNCTIONS) == STAGES, "distill.config.STAGES lists the stages in their order"


# ----------------------------------------------------------------------------------------------
# helpers


def _cross_entropy_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {"cross_entropy": float(loss.detach())}


def _encode_all(run: Run) -> None:
    max_length = run.recipe.data.max_length
    for split, by_lang in run.data.splits.items():
        run.encoded[split] = {
            lang: encode(run.tokenizer, ds["text"], ds["label"], max_length) for lang, ds in by_lang.items()
        }


def _evaluate_torch(run: Run, name: str, model: torch.nn.Module) -> None:
    for lang, enc in run.encoded["test"].items():
        run.predictions.setdefault(name, {})[lang] = predict_logits(model, enc, run.pad_id).argmax(-1)


def _onnx_logits(sess, enc: Encoded, pad_id: int, batch_size: int = 64) -> np.ndarray:
    from distill.data import collate, length_batches

    out = None
    for indices in length_batches([len(x) for x in enc.input_ids], batch_size, shuffle=False):
        batch = collate(enc, indices, pad_id)
        logits = sess.run(
            None, {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        )[0]
        if out is None:
            out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
        out[indices] = logits
    return out


def _benchmark_input(run: Run, batch: int, seq: int) -> torch.Tensor:
    """Real token ids: dev sentences run together and cut into rows of exactly `seq` tokens."""
    stream = [t for enc in run.encoded["dev"].values() for ids in enc.input_ids for t in ids[1:-1]]
    need = batch * (seq - 2)
    if len(stream) < need:
        stream = stream * (need // max(1, len(stream)) + 1)
    rows = [
        [run.tokenizer.bos_token_id, *stream[i * (seq - 2) : (i + 1) * (seq - 2)], run.tokenizer.eos_token_id]
        for i in range(batch)
    ]
    return torch.tensor(rows, dtype=torch.long)


def score_table(run: Run) -> dict[str, Any]:
    """Per-language test accuracy and macro-F1 of every evaluated model, and their means."""
    languages: dict[str, dict[str, float]] = {}
    f1: dict[str, dict[str, float]] = {}
    num_labels = len(run.data.labels)
    for lang, enc in run.encoded["test"].items():
        gold = np.array(enc.labels)
        languages[lang] = {m: accuracy(p[lang], gold) for m, p in run.predictions.items()}
        f1[lang] = {m: macro_f1(p[lang], gold, num_labels) for m, p in run.predictions.items()}
    models = list(run.predictions)
    mean = {m: float(np.mean([languages[lang][m] for lang in languages])) for m in models}
    mean_f1 = {m: float(np.mean([f1[lang][m] for lang in f1])) for m in models}
    return {"languages": languages, "mean": mean, "macro_f1": f1, "mean_macro_f1": mean_f1}


def environment() -> dict[str, Any]:
    import onnxruntime
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def file_size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)
