"""Language-adaptive pretraining: continued masked-LM training of an encoder on raw target-language text.

The task model (a classifier) is wrapped in the masked-LM model of its architecture (XLM-R or BERT), sharing
the encoder's weights by copy; after training the adapted encoder is copied back into the task model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, PreTrainedModel

from polydistill.batch_shares import WHOLE_BATCH
from polydistill.data import IGNORE_INDEX, Encoded, encode, iterate_batches
from polydistill.errors import DistillError


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    prob: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: each ordinary token is chosen with probability `prob`; of those 80% become the mask
    token, 10% a random token, 10% stay. Special and pad tokens are never chosen. Returns (inputs, labels),
    labels = the original id at chosen positions, IGNORE_INDEX elsewhere. At least one token is chosen
    whenever the batch has one that may be (an all-ignored batch would have a NaN loss)."""
    eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids, dtype=input_ids.dtype))
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = eligible & (draw < prob)
    if not chosen.any() and eligible.any():
        chosen.view(-1)[torch.where(eligible.view(-1), draw.view(-1), 2.0).argmin()] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    inputs = input_ids.clone()
    how = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (how < 0.8)] = mask_id
    random_positions = chosen & (how >= 0.8) & (how < 0.9)
    inputs[random_positions] = torch.randint(
        vocab_size, (int(random_positions.sum()),), generator=generator, dtype=input_ids.dtype
    )
    return inputs, labels


def masked_lm_for(model: PreTrainedModel, pretrained: str | None = None, **kwargs: Any) -> PreTrainedModel:
    """The masked-LM model of `model`'s architecture with `model`'s encoder weights. Its LM head is the one of
    checkpoint `pretrained` when that loads as a masked LM (xlm-roberta-base has one), else a fresh one; tied to
    the word embedding as the architecture does."""
    mlm = None
    if pretrained is not None:
        # not models.load_model_folder: the checkpoint is optional here (any failure means a fresh head, where
        # that raises), need not hold a tokenizer, and the teacher stage loaded and checked the same path already
        try:
            mlm = AutoModelForMaskedLM.from_pretrained(
                pretrained, attn_implementation="eager", use_safetensors=True, **kwargs
            )
        except (OSError, ValueError):
            mlm = None  # no safetensors, or no masked-LM class for it: a fresh head below
        if mlm is not None and mlm.get_input_embeddings().weight.shape != model.get_input_embeddings().weight.shape:
            mlm = None
    if mlm is None:
        config = copy.deepcopy(model.config)
        config.architectures = None
        try:
            mlm = AutoModelForMaskedLM.from_config(config, attn_implementation="eager")
        except ValueError as exc:
            raise DistillError(f"no masked-LM model for a {type(model).__name__}: {exc}") from exc
    copy_encoder(model, mlm)
    return mlm


def copy_encoder(source: PreTrainedModel, target: PreTrainedModel) -> None:
    """Copy the encoder (`base_model`: roberta / bert) of `source` into `target`; a pooler only one has is left."""
    state = {k: v for k, v in source.base_model.state_dict().items() if not k.startswith("pooler.")}
    missing, unexpected = target.base_model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.")]
    if missing or unexpected:
        raise DistillError(f"encoders differ: missing {missing[:3]}, unexpected {unexpected[:3]}")


class MLMStep:
    """(mlm model, batch) -> (loss, terms) for `fit`: masks the batch's ids and returns the MLM loss."""

    def __init__(self, tokenizer: Any, vocab_size: int, prob: float, seed: int):
        self.special_ids = list(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        if self.mask_id is None:
            raise DistillError("the tokenizer has no mask token: masked-LM training needs one")
        self.vocab_size, self.prob = vocab_size, prob
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
        """The masked-token mean of this batch, weighted by its share of the global batch's real tokens (the
        masked count is random, so a split batch's loss is an unbiased estimate of the whole one's, not equal)."""
        inputs, labels = mask_tokens(
            batch["input_ids"].cpu(), batch["attention_mask"].cpu(), special_ids=self.special_ids, mask_id=self.mask_id,
            vocab_size=self.vocab_size, prob=self.prob, generator=self.generator,
        )  # fmt: skip
        device = batch["input_ids"].device
        loss = model(input_ids=inputs.to(device), attention_mask=batch["attention_mask"], labels=labels.to(device)).loss
        return loss * share["tokens"], {"mlm": float(loss.detach())}


def dev_mlm_loss(
    tokenizer: Any, dev: Encoded, pad_id: int, vocab_size: int, prob: float, seed: int
) -> Callable[[torch.nn.Module], float]:
    """Mean masked-LM loss on `dev`, the same masks every call (so epochs compare)."""

    def evaluate(model: torch.nn.Module) -> float:
        step = MLMStep(tokenizer, vocab_size, prob, seed)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            batches = ({k: v.to(device) for k, v in b.items()} for b in iterate_batches(dev, 64, pad_id, shuffle=False))
            values = [float(step(model, batch, WHOLE_BATCH)[0]) for batch in batches]
        model.train(was_training)
        return float(np.mean(values))

    return evaluate


def as_unlabelled(tokenizer: Any, texts: list[str], max_length: int) -> Encoded:
    return encode(tokenizer, texts, [0] * len(texts), max_length)  # labels unused by the masked-LM step


def checkpoint_path(run_directory: Path) -> Path:
    return run_directory / "checkpoints" / "adapted"
