"""One distillation step: the student's weighted losses against the teacher's outputs, read from the
teacher cache written once per (teacher, data) or computed live; the training loop (`polydistill.train.fit`)
calls it per batch. `DistillStep` needs no `Run`: the recipe pipeline builds it with `distill_step`, and
`polydistill.benchmarks.experiments.teacher_cache` times this same step, teacher live against cached.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.batch_shares import WHOLE_BATCH
from polydistill.cache import CacheSpec, teacher_cache
from polydistill.data import (
    IGNORE_INDEX,
    Encoded,
    collate,
    iterate_batches,
)
from polydistill.distributed import main_first, world
from polydistill.errors import DistillError
from polydistill.features import WantedFeatures, features_for, features_to, forward_features
from polydistill.losses import WeightedLoss, aligned, map_layers, needs
from polydistill.run_state import Run


class DistillStep:
    """(student, batch) -> (loss, terms): the student's features against the teacher's, paired by layer.

    The teacher's logits, hidden states and q/k/v of the layers the losses read come from a cache
    written once per (teacher, data) (`distill.cache`): the teacher is frozen and runs without
    dropout, so they never change. Attention maps and pooled embeddings are computed per batch.
    """

    def __init__(
        self,
        student: torch.nn.Module,
        teacher: torch.nn.Module,
        losses: dict[str, dict[str, Any]],
        layer_map: str | list[int],
        data: Encoded | None,
        *,
        cache_root: Path,
        pad_id: int,
        retokenized: bool = False,
    ) -> None:
        """`losses` (name -> settings, `losses.WeightedLoss`) pair the student's layers with the teacher's by
        `layer_map` (`losses.map_layers`). `data`: the training examples, as the teacher encodes them, whose
        teacher features are cached under `cache_root` (`distill.cache`); None (streamed text): all live.
        `pad_id`: the teacher tokenizer's. `retokenized`: the student reads other pieces than the teacher
        (its vocabulary trimmed before distillation), so per-token teacher outputs are read by example index."""
        self.loss = WeightedLoss(
            losses,
            student_hidden_size=student.config.hidden_size,
            teacher_hidden_size=teacher.config.hidden_size,
        )
        needed = needs(losses)
        self.student_wants = features_for(needed, "student")
        teacher_wants = features_for(needed, "teacher")
        self.pairs = map_layers(student.config.num_hidden_layers, teacher.config.num_hidden_layers, layer_map)
        self.cached = teacher_wants & {"logits", "hidden", "qkv", "cls"} if data is not None else set()
        self.live = teacher_wants - self.cached
        self.teacher = teacher
        self.cache_root, self.pad_id = cache_root, pad_id
        # the student reads other pieces than the teacher (vocabulary trimmed before distillation): only
        # per-example teacher outputs pair with it, looked up by example index (the recipe check allows no others)
        self.retokenized = retokenized
        self.teacher_data = data
        self.cache = self._cache_for(data)
        self.targets: dict[str, torch.Tensor] = {}  # sentence outputs that replace the cached ones (parallel_targets)
        if "attentions" in self.student_wants:  # HF returns attention maps after dropout: not distributions
            for module in student.modules():
                if type(module).__name__.endswith("SelfAttention") and hasattr(module, "dropout"):
                    module.dropout.p = 0.0
            student.config.attention_probs_dropout_prob = 0.0

    def _cache_for(self, data: Encoded):
        if not self.cached:
            return None
        layers = sorted({t for _, t in self.pairs}) if self.cached & {"hidden", "qkv"} else []
        spec = CacheSpec(features=tuple(sorted(self.cached)), layers=tuple(layers))
        with main_first():  # rank 0 computes and writes the cache; the other ranks then read it
            try:  # on this process's GPU when there is one; the teacher goes back to the CPU after
                return teacher_cache(self.teacher.to(world().device), data, spec, self.cache_root, pad_id=self.pad_id)
            finally:
                self.teacher.to("cpu")

    def ddp_module(self, student: torch.nn.Module) -> torch.nn.Module:
        """What `fit` wraps in DDP: the student returning only the features the losses read."""
        return WantedFeatures(student, self.student_wants)

    def on(self, data: Encoded) -> DistillStep:
        """The same step (same loss module and projections) reading the teacher cache of `data`."""
        other = copy.copy(self)
        other.teacher_data = data
        other.cache = self._cache_for(data)
        other.targets = {}  # they index the training examples
        return other

    def __call__(self, student: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if isinstance(student, torch.nn.parallel.DistributedDataParallel):  # wraps ddp_module(student)
            own = student(ids, mask)
        else:
            own = forward_features(student, ids, mask, self.student_wants)
        theirs, index = {}, batch["index"].cpu()
        if self.cache is not None:
            longest = ids.shape[1]
            if self.retokenized:  # per-token teacher outputs are padded to the teacher's own lengths
                longest = max(len(self.teacher_data.input_ids[i]) for i in index.tolist())
            theirs = features_to(self.cache.batch(index, longest), ids.device)
        theirs |= {name: table[index].to(ids.device) for name, table in self.targets.items()}
        if self.live:
            with torch.no_grad():
                self.teacher.eval().to(ids.device)
                theirs |= forward_features(self.teacher, ids, mask, self.live)
        tensors: dict[str, Any] = {"attention_mask": mask}
        for kind in ("hidden", "attentions", "qkv"):
            if kind in own:
                pair = aligned(own[kind], theirs[kind], self.pairs)
                tensors[f"student_{kind}"], tensors[f"teacher_{kind}"] = pair
        if "pooled" in own:
            tensors["student_pooled"], tensors["teacher_pooled"] = own["pooled"], theirs["pooled"]
        if "cls" in own:
            tensors["student_cls"], tensors["teacher_cls"] = own["cls"], theirs["cls"]
        if "logits" in own:
            logits, labels, teacher_logits = own["logits"], batch["labels"], theirs.get("logits")
            if logits.ndim == 3:  # token task: only each word's first sub-token is scored
                keep = labels != IGNORE_INDEX
                logits, labels = logits[keep], labels[keep]
                if teacher_logits is not None:
                    teacher_keep = keep
                    if self.retokenized:  # the same words, at the teacher's own first-sub-token positions
                        teacher_labels = collate(self.teacher_data, index.tolist(), self.pad_id)["labels"]
                        teacher_keep = teacher_labels.to(ids.device) != IGNORE_INDEX
                    teacher_logits = teacher_logits[teacher_keep]
            tensors |= {"student_logits": logits, "labels": labels, "teacher_logits": teacher_logits}
        return self.loss(share=share, **tensors)


def distill_step(
    run: Run,
    losses: dict[str, dict[str, Any]],
    layer_map: str | list[int],
    train: Encoded | None,
    *,
    parallel: bool = False,
) -> DistillStep:
    """The step that distils `run.student` from `run.teacher`, its teacher cache under the recipe's output_dir.
    `train`: the examples as the teacher encodes them, whose outputs are cached; None (streamed text): all live."""
    if train is not None:
        run.say(f"teacher outputs for {len(train)} training examples: cached on disk once (reused while unchanged)")
    try:
        step = DistillStep(
            run.student, run.teacher, losses, layer_map, train,
            cache_root=Path(run.recipe.output_dir) / ".teacher-cache", pad_id=run.pad_id,
            retokenized=run.trimmed_tokenizer is not None,
        )  # fmt: skip
    except ValueError as exc:  # e.g. a relation head count that does not divide a width
        raise DistillError(f"cannot set up the losses {sorted(losses)}: {exc}") from exc
    if parallel:
        step.targets = parallel_targets(step.cache, run.joined_sentence_ids("train"))
        run.say(f"teacher targets: each training sentence's mean over its translations ({sorted(step.targets)})")
    return step


def parallel_targets(cache, sentence_ids: list[int]) -> dict[str, torch.Tensor]:
    """The teacher's cached sentence outputs (logits, <s> vector) of example i replaced by their mean over
    every example with sentence id `sentence_ids[i]`: its translations, in a parallel corpus.

    Why: on SIB-200 the teacher reads each topic far better in some languages (English 0.89) than in others
    (Quechua 0.60); the translations' mean is one ensemble target per sentence that no language's slip
    decides alone, in the spirit of Reimers & Gurevych 2020 (students matched to the teacher's output for
    the translation it knows best)."""
    features = [f for f in ("logits", "cls") if cache is not None and f in cache.spec.features]
    if not features:
        raise DistillError("distill.parallel_targets: the losses read no cached teacher logits or <s> vector")
    ids = np.asarray(sentence_ids)
    groups, position = np.unique(ids, return_inverse=True)
    rows = cache.batch(list(range(len(ids))), 1)
    out = {}
    for name in features:
        values = rows[name].numpy()
        sums = np.zeros((len(groups), values.shape[1]), np.float64)
        np.add.at(sums, position, values)
        out[name] = torch.from_numpy((sums / np.bincount(position)[:, None])[position].astype(np.float32))
    return out


def negative_dev_loss(step: DistillStep, dev: Encoded, pad_id: int) -> Callable[[torch.nn.Module], float]:
    """`fit`'s score when there are no labels to score: minus the mean distillation loss on dev."""

    def evaluate(student: torch.nn.Module) -> float:
        student.eval()
        with torch.no_grad():
            device = next(student.parameters()).device
            batches = ({k: v.to(device) for k, v in b.items()} for b in iterate_batches(dev, 64, pad_id, shuffle=False))
            values = [float(step(student, batch, WHOLE_BATCH)[0]) for batch in batches]
        student.train()
        return -float(np.mean(values))

    return evaluate
