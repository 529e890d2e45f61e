"""Hub cards for a run's checkpoints/<name> folders, written after each stage (`write_checkpoint_cards`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from polydistill.export.card import HEADS, CheckpointCardInfo, teacher_card_source, write_checkpoint_card
from polydistill.run_state import (
    ADAPTED,
    STUDENT,
    STUDENT_AGNOSTIC,
    STUDENT_PRUNED,
    STUDENT_TRIMMED,
    TEACHER,
    TEACHER_ADAPTED,
    Run,
)
from polydistill.scoring import score_table


def write_checkpoint_cards(run: Run) -> list[Path]:
    """A README.md card (export.card) in every checkpoint folder saved so far, with the scores known now.

    Called after each stage: training saves its best epoch again and again, each save replacing the folder, so a
    folder gets its card once its stage is over and its model scored. Rewriting every card is cheap, and mends a
    card a killed run did not get to write."""
    root = run.directory / "checkpoints"
    folders = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    scores = score_table(run) if run.predictions else None
    cards = [checkpoint_card_info(run, folder, scores) for folder in folders if (folder / "config.json").is_file()]
    return [write_checkpoint_card(run.directory / "checkpoints" / card.folder, card) for card in cards if card]


def checkpoint_card_info(run: Run, folder: Path, scores: dict[str, Any] | None) -> Any:
    """The polydistill.export.card.CheckpointCardInfo of one checkpoint folder (None for a model whose head
    polydistill does not save): size and shape read from the folder itself, test scores per language for a model
    the run scored."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    head = next((h for suffix, h in HEADS.items() if any(a.endswith(suffix) for a in architectures)), None)
    if head is None:
        return None
    name = folder.name
    total, outside = safetensors_parameters(folder / "model.safetensors")
    metrics = None
    if scores and name in run.predictions:
        metrics = {lang: {"accuracy": scores["languages"][lang][name], "macro-F1": scores["macro_f1"][lang][name]}
                   for lang in scores["languages"]}  # fmt: skip
    labels = [str(config["id2label"][k]) for k in sorted(config.get("id2label", {}), key=int)]
    return CheckpointCardInfo(
        name=f"{run.recipe.name}: {name}", folder=name, head=head, task=run.task, about=checkpoint_about(run, name),
        parameters=total, non_embedding_parameters=outside, shape=shape_text(config),
        labels=labels if head != "masked-lm" else [], languages=list(run.recipe.data.languages), metrics=metrics,
        teacher=teacher_card_source(run.recipe.teacher.model),
    )  # fmt: skip


def checkpoint_about(run: Run, name: str) -> str:
    """What checkpoint `name` of this run is, for its card: the model a user would otherwise have to work out from
    the recipe and the stage order."""
    model = run.recipe.teacher.model
    if run.teacher_from_scratch:
        teacher = "an XLM-R-architecture classifier trained from scratch in this run, its tokenizer too"
    else:
        source = teacher_card_source(model)
        teacher = f"{source.name if source else f'`{model}`'}, fine-tuned on the task in this run"
    trimmed_first = run.metrics.get("trim", {}).get("before_distill", False)
    adapted = run.metrics.get("adapt", {}).get("target", "model")
    if run.recipe.student.init == "random":
        built = f"{len(run.student_layers)} layers initialised at random"
    else:
        built = f"initialised from the teacher's layers {run.student_layers}"
    about = {
        TEACHER: f"The teacher of a polydistill run: {teacher}.",
        TEACHER_ADAPTED: "The teacher's encoder after language-adaptive pretraining (stage adapt), under a task head "
        "not trained yet: where stage teacher started from. Not a usable classifier.",
        ADAPTED: f"The masked-LM model of language-adaptive pretraining (stage adapt) of the {adapted}: continued "
        "masked-LM training on unlabelled text, the best epoch by dev MLM loss.",
        STUDENT_AGNOSTIC: "The student after task-agnostic distillation: it imitated the teacher's hidden states and "
        "attention on unlabelled text. Its classification head is untrained; task distillation starts from it.",
        STUDENT: f"The student of a polydistill run, {built}, then distilled from its teacher: {teacher}.",
        STUDENT_PRUNED: "The student after structured pruning of attention heads and FFN neurons, recovered by "
        "distillation from the teacher.",
        STUDENT_TRIMMED: "The student with its vocabulary trimmed to the pieces the recipe languages use, with its "
        "own tokenizer"
        + (
            ", trimmed before distillation: not distilled yet (the distilled student is checkpoints/student)."
            if trimmed_first
            else ": a sentence tokenised into the same pieces as before gets the same logits."
        ),
    }
    return about.get(name, f"Checkpoint {name} of a polydistill run.")


def safetensors_parameters(path: Path) -> tuple[int, int]:
    """(all parameters, those outside the embedding tables) as saved in `path`, read from its header alone: the
    card of a folder is written without loading the model."""
    total = outside = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            count = int(np.prod(f.get_slice(key).get_shape()))
            total += count
            if not key.endswith(EMBEDDING_TABLES):
                outside += count
    return total, outside


EMBEDDING_TABLES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")


def shape_text(config: dict[str, Any]) -> str:
    """A model's shape in words, from its config.json."""
    return (
        f"layers {config.get('num_hidden_layers')}, hidden {config.get('hidden_size')}, "
        f"heads {config.get('num_attention_heads')}, FFN {config.get('intermediate_size')}, "
        f"vocabulary {config.get('vocab_size', 0):,} pieces"
    )
