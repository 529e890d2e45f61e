"""Stages `agnostic`, `distill` and `prune`: build the student from the teacher, distil it (task-agnostic,
then on the task), prune its heads and FFN neurons and distil again to recover.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from polydistill.config import (
    AugmentConfig,
    TrainConfig,
)
from polydistill.data import (
    Encoded,
    collate,
    encode,
)
from polydistill.distill_step import distill_step, negative_dev_loss
from polydistill.errors import DistillError
from polydistill.io import (
    save_pretrained_atomic,
)
from polydistill.models import count_parameters
from polydistill.run_state import STUDENT, STUDENT_AGNOSTIC, STUDENT_PRUNED, Run, resume_point
from polydistill.scoring import evaluate_torch
from polydistill.stages.teacher import adapt_model
from polydistill.stream import TextStream
from polydistill.train import dev_accuracy, fit


def stage_agnostic(run: Run, say: Callable[[str], None]) -> None:
    """Task-agnostic distillation: the new student imitates the teacher's internals (hidden states,
    attention relations) on the training text of every language, labels unused, or on the text files of
    `agnostic.corpus`, streamed (distill.stream)."""
    from polydistill.stream import TextStream

    cfg = run.recipe.agnostic
    run.student = build_student(run, say)
    stream = None
    if cfg.corpus:
        stream = TextStream(
            list(cfg.corpus), run.tokenizer, cfg.train.batch_size, run.recipe.data.max_length,
            shuffle_buffer=cfg.shuffle_buffer, seed=run.recipe.seed,
        )  # fmt: skip
        say(f"streaming {stream.sentences:,} sentences from {len(cfg.corpus)} corpus file(s), teacher run live")
    train_student(run, STUDENT_AGNOSTIC, cfg.train, cfg.losses, cfg.layer_map, say, scored=False, stream=stream)


def stage_distill(run: Run, say: Callable[[str], None]) -> None:
    """Task-specific distillation of the student (built here unless the agnostic stage built it)."""
    cfg = run.recipe.distill
    if run.student is None:
        run.student = build_student(run, say)
    train = transfer_set(run, cfg.augment, say)
    train_student(run, STUDENT, cfg.train, cfg.losses, cfg.layer_map, say, parallel=cfg.parallel_targets, train=train)


def transfer_set(run: Run, cfg: AugmentConfig, say: Callable[[str], None]) -> tuple[Encoded, Encoded]:
    """What the student distils on, as the teacher and as the student encode it (example i the same sentence in
    both): the labelled training sentences, then `cfg.copies` augmented copies of each (distill.augment),
    carrying their source's label."""
    teacher_set, student_set = run.joined("train"), run.joined("train", student=True)
    if not cfg.copies:
        return teacher_set, student_set
    from polydistill.augment import augment_texts

    # the texts in joined()'s order, so the copies' labels are the joined labels repeated
    texts = [t for lang, ds in run.data.splits["train"].items() if lang in run.labelled_languages for t in ds["text"]]
    copies = augment_texts(texts, cfg, seed=run.recipe.seed)
    labels, max_length = teacher_set.labels * cfg.copies, run.recipe.data.max_length
    extra = encode(run.tokenizer, copies, labels, max_length)
    # one encoding when the student still reads the teacher's pieces (not trimmed before distillation)
    trimmed = run.trimmed_tokenizer is not None
    extra_student = encode(run.student_tokenizer, copies, labels, max_length) if trimmed else extra
    words = sum(len(t.split()) for t in copies) / max(1, sum(len(t.split()) for t in texts) * cfg.copies)
    say(
        f"transfer set: {len(texts):,} training sentences and {len(copies):,} augmented copies "
        f"({cfg.copies} each, {words:.0%} of their words on average), labelled by the teacher"
    )
    return (
        Encoded(teacher_set.input_ids + extra.input_ids, teacher_set.labels + extra.labels),
        Encoded(student_set.input_ids + extra_student.input_ids, student_set.labels + extra_student.labels),
    )


def build_student(run: Run, say: Callable[[str], None]) -> torch.nn.Module:
    """The teacher's layers `student.layers` (or `num_layers` spread evenly), optionally narrower:
    initialised from the teacher's weights (importance-ranked slices when narrower) or at random."""
    from polydistill.students import pick_layers, shrink_width, student_from_config, student_from_teacher

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
        adapt_model(run, student, STUDENT, say)
    if cfg.freeze_word_embeddings:  # frozen where it trains (train_student)
        how += ", word embedding frozen"
    params = count_parameters(student)
    say(
        f"student ({how}): {len(layers)} layers, hidden {hidden}, FFN {ffn}, {params['total'] / 1e6:.2f}M "
        f"parameters ({params['total'] / count_parameters(teacher)['total']:.1%} of the teacher's)"
    )
    return student


def stage_prune(run: Run, say: Callable[[str], None]) -> None:
    """Structured pruning of the student (heads + FFN), then distillation again to recover."""
    from polydistill.data import length_batches
    from polydistill.students import prune_with_summary

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
    say(f"pruned: {summary}")
    run.student = pruned
    run.metrics["pruning"] = {"heads": cfg.heads, "ffn": cfg.ffn, "importance": cfg.importance, "summary": str(summary)}
    distill = run.recipe.distill
    train_student(run, STUDENT_PRUNED, cfg.recover, distill.losses, distill.layer_map, say)


def train_student(
    run: Run,
    name: str,
    train_cfg: TrainConfig,
    losses: dict[str, dict[str, Any]],
    layer_map: str | list[int],
    say: Callable[[str], None],
    *,
    scored: bool = True,
    stream: TextStream | None = None,
    parallel: bool = False,
    train: tuple[Encoded, Encoded] | None = None,
) -> None:
    """Distil `run.student` from the teacher with the weighted `losses`; keep the best dev checkpoint
    as `name`. Scored students are evaluated on the test sets; the agnostic one (no labels) is not,
    and its best epoch is the one with the lowest dev loss. With `stream`, the student learns from that
    streamed text (the teacher's features computed live) instead of the recipe's training split. `parallel`:
    the teacher's sentence outputs averaged over each sentence's translations (`parallel_targets`). `train`:
    the examples to learn from as the teacher and the student encode them (default: the training split)."""
    # here, where every student stage trains: a student built, restored (--resume) or trimmed since holds a
    # fresh table whose requires_grad is back to True
    if run.recipe.student.freeze_word_embeddings:
        run.student.get_input_embeddings().weight.requires_grad_(False)
    if train is None and stream is None:
        train = run.joined("train"), run.joined("train", student=True)
    step = distill_step(run, losses, layer_map, say, None if train is None else train[0], parallel=parallel)
    dev, pad_id = run.joined("dev", student=True), run.student_pad_id
    evaluate = dev_accuracy(dev, pad_id) if scored else negative_dev_loss(step.on(dev), dev, pad_id)
    result = fit(
        run.student,
        stream if stream is not None else train[1],
        step,
        train_cfg,
        evaluate=evaluate,
        on_best=lambda m: save_pretrained_atomic(m, run.student_tokenizer, run.directory / "checkpoints" / name),
        pad_id=pad_id,
        seed=run.recipe.seed,
        desc={STUDENT: "distill", STUDENT_AGNOSTIC: "agnostic"}.get(name, "recover"),
        extra_parameters=list(step.loss.parameters()),
        say=say,
        resume=resume_point(run, name),
    )
    run.teacher.to("cpu")  # if its live features ran on a GPU
    run.metrics.setdefault("training", {})[name] = vars(result)
    run.student_checkpoint = name
    if scored:
        run.student_name = name
        run.models[name] = run.student
        evaluate_torch(run, name, run.student, run.student_encoded["test"], run.student_pad_id)
