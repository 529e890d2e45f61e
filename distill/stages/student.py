"""Stages `agnostic`, `distill` and `prune`: build the student from the teacher, distil it (task-agnostic,
then on the task), prune its heads and FFN neurons and distil again to recover.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from polydistill.augment import augment_texts
from polydistill.config import (
    AugmentConfig,
    TrainConfig,
)
from polydistill.data import (
    Encoded,
    collate,
    encode,
    length_batches,
)
from polydistill.distill_step import distill_step, negative_dev_loss
from polydistill.errors import DistillError
from polydistill.io import (
    save_pretrained_atomic,
)
from polydistill.logits import dev_accuracy
from polydistill.models import count_parameters
from polydistill.run_state import STUDENT, STUDENT_AGNOSTIC, STUDENT_PRUNED, Run, resume_point
from polydistill.scoring import evaluate_torch
from polydistill.stages.teacher import adapt_model
from polydistill.stream import TextStream
from polydistill.students import (
    pick_layers,
    prune_with_summary,
    shrink_width,
    student_from_config,
    student_from_teacher,
)
from polydistill.train import FitSetup, fit


def stage_agnostic(run: Run) -> None:
    """Task-agnostic distillation: the new student imitates the teacher's internals (hidden states,
    attention relations) on the training text of every language, labels unused, or on the text files of
    `agnostic.corpus`, streamed (distill.stream)."""
    cfg = run.recipe.agnostic
    run.student = build_student(run)
    stream = None
    if cfg.corpus:
        stream = TextStream(
            list(cfg.corpus), run.tokenizer, cfg.train.batch_size, run.recipe.data.max_length,
            shuffle_buffer=cfg.shuffle_buffer, seed=run.recipe.seed,
        )  # fmt: skip
        run.say(f"streaming {stream.sentences:,} sentences from {len(cfg.corpus)} corpus file(s), teacher run live")
    train_student(run, STUDENT_AGNOSTIC, cfg.train, cfg.losses, cfg.layer_map, scored=False, source=stream)


def stage_distill(run: Run) -> None:
    """Task-specific distillation of the student (built here unless the agnostic stage built it)."""
    cfg = run.recipe.distill
    if run.student is None:
        run.student = build_student(run)
    train = transfer_set(run, cfg.augment)
    train_student(run, STUDENT, cfg.train, cfg.losses, cfg.layer_map, source=train, parallel=cfg.parallel_targets)


def transfer_set(run: Run, cfg: AugmentConfig) -> tuple[Encoded, Encoded]:
    """What the student distils on, as the teacher and as the student encode it (example i the same sentence in
    both): the labelled training sentences, then `cfg.copies` augmented copies of each (distill.augment),
    carrying their source's label."""
    teacher_set, student_set = run.joined("train"), run.joined("train", student=True)
    if not cfg.copies:
        return teacher_set, student_set
    # the texts in joined()'s order, so the copies' labels are the joined labels repeated
    texts = [t for lang, ds in run.data.splits["train"].items() if lang in run.labelled_languages for t in ds["text"]]
    copies = augment_texts(texts, cfg, seed=run.recipe.seed)
    labels, max_length = teacher_set.labels * cfg.copies, run.recipe.data.max_length
    extra = encode(run.tokenizer, copies, labels, max_length)
    # one encoding when the student still reads the teacher's pieces (not trimmed before distillation)
    trimmed = run.trimmed_tokenizer is not None
    extra_student = encode(run.student_tokenizer, copies, labels, max_length) if trimmed else extra
    words = sum(len(t.split()) for t in copies) / max(1, sum(len(t.split()) for t in texts) * cfg.copies)
    run.say(
        f"transfer set: {len(texts):,} training sentences and {len(copies):,} augmented copies "
        f"({cfg.copies} each, {words:.0%} of their words on average), labelled by the teacher"
    )
    return (
        Encoded(teacher_set.input_ids + extra.input_ids, teacher_set.labels + extra.labels),
        Encoded(student_set.input_ids + extra_student.input_ids, student_set.labels + extra_student.labels),
    )


def build_student(run: Run) -> torch.nn.Module:
    """The teacher's layers `student.layers` (or `num_layers` spread evenly), optionally narrower:
    initialised from the teacher's weights (importance-ranked slices when narrower) or at random."""
    cfg, teacher = run.recipe.student, run.teacher
    n = teacher.config.num_hidden_layers
    layers = cfg.layers or pick_layers(n, cfg.num_layers)
    if any(not 0 <= i < n for i in layers):
        raise DistillError(f"'student.layers' {layers} must index the teacher's {n} layers")
    run.student_layers = list(layers)
    hidden = cfg.hidden_size or teacher.config.hidden_size
    ffn = cfg.intermediate_size or teacher.config.intermediate_size
    try:
        if cfg.init == "random":
            torch.manual_seed(run.recipe.seed)
            student = student_from_config(teacher, hidden_size=hidden, intermediate_size=ffn, num_layers=len(layers))
            how = "random init"
        elif (hidden, ffn) != (teacher.config.hidden_size, teacher.config.intermediate_size):
            student = shrink_width(teacher, hidden_size=hidden, intermediate_size=ffn, layers=list(layers))
            how = f"teacher layers {layers}, importance-sliced"
        else:
            student = student_from_teacher(teacher, list(layers))
            how = f"teacher layers {layers}"
    except ValueError as exc:
        raise DistillError(f"cannot build the student: {exc}") from exc
    if "adapt" in run.recipe.stages and run.recipe.adapt.target == STUDENT:
        adapt_model(run, student, STUDENT)
    if cfg.freeze_word_embeddings:  # frozen where it trains (train_student)
        how += ", word embedding frozen"
    params = count_parameters(student)
    run.say(
        f"student ({how}): {len(layers)} layers, hidden {hidden}, FFN {ffn}, {params['total'] / 1e6:.2f}M "
        f"parameters ({params['total'] / count_parameters(teacher)['total']:.1%} of the teacher's)"
    )
    return student


def stage_prune(run: Run) -> None:
    """Structured pruning of the student (heads + FFN), then distillation again to recover."""
    if run.student is None:
        raise DistillError("stage 'prune' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.prune
    batches = None
    if cfg.importance == "taylor":
        train = run.joined("train", student=True)
        order = length_batches([len(x) for x in train.input_ids], 32, shuffle=True, seed=run.recipe.seed)
        batches = [collate(train, idx, run.student_pad_id) for idx in order[: cfg.calibration_batches]]
    try:
        pruned, summary = prune_with_summary(  # prunes in place: keep the distilled student intact
            copy.deepcopy(run.student), cfg, batches
        )
    except ValueError as exc:
        raise DistillError(f"cannot prune the student: {exc}") from exc
    run.say(f"pruned: {summary}")
    run.student = pruned
    run.metrics["pruning"] = {"heads": cfg.heads, "ffn": cfg.ffn, "importance": cfg.importance, "summary": str(summary)}
    distill = run.recipe.distill
    train_student(run, STUDENT_PRUNED, cfg.recover, distill.losses, distill.layer_map)


def train_student(
    run: Run,
    name: str,
    train_cfg: TrainConfig,
    losses: dict[str, dict[str, Any]],
    layer_map: str | list[int],
    *,
    scored: bool = True,
    source: TextStream | tuple[Encoded, Encoded] | None = None,
    parallel: bool = False,
) -> None:
    """Distil `run.student` from the teacher with the weighted `losses`; keep the best dev checkpoint
    as `name`. Scored students are evaluated on the test sets; the agnostic one (no labels) is not,
    and its best epoch is the one with the lowest dev loss. `source`: what the student learns from: streamed
    text (a TextStream; the teacher's features computed live), or the examples as the teacher and the student
    encode them (default: the training split). `parallel`: the teacher's sentence outputs averaged over each
    sentence's translations (`parallel_targets`)."""
    # here, where every student stage trains: a student built, restored (--resume) or trimmed since holds a
    # fresh table whose requires_grad is back to True
    if run.recipe.student.freeze_word_embeddings:
        run.student.get_input_embeddings().weight.requires_grad_(False)
    if source is None:
        source = run.joined("train"), run.joined("train", student=True)
    streamed = isinstance(source, TextStream)
    step = distill_step(run, losses, layer_map, None if streamed else source[0], parallel=parallel)
    dev, pad_id = run.joined("dev", student=True), run.student_pad_id
    evaluate = dev_accuracy(dev, pad_id) if scored else negative_dev_loss(step.on(dev), dev, pad_id)
    desc = {STUDENT: "distill", STUDENT_AGNOSTIC: "agnostic"}.get(name, "recover")
    result = fit(
        run.student,
        source if streamed else source[1],
        step,
        train_cfg,
        FitSetup(desc=desc, pad_id=pad_id, seed=run.recipe.seed, resume=resume_point(run, name), say=run.say),
        evaluate=evaluate,
        on_best=lambda m: save_pretrained_atomic(m, run.student_tokenizer, run.directory / "checkpoints" / name),
        extra_parameters=list(step.loss.parameters()),
    )
    run.teacher.to("cpu")  # if its live features ran on a GPU
    run.metrics.setdefault("training", {})[name] = vars(result)
    run.student_checkpoint = name
    if scored:
        run.student_name = name
        run.models[name] = run.student
        evaluate_torch(run, name, run.student, run.student_encoded["test"], run.student_pad_id)
