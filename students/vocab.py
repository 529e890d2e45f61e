"""Vocabulary trimming: keep only the pieces a deployment's languages use, and slice the embedding to match.

69% of XLM-R base (192M of 278M parameters) is its 250,002 x 768 word embedding; text in five languages uses
a few tens of thousands of those pieces. `trim_vocab(model, tokenizer, texts, TrimConfig())` counts the
pieces the model's own tokenizer produces on `texts`, keeps those (optionally only the `top_k` most frequent,
or those seen `min_freq` times) plus every special and added token, and returns a stock model of the same
class with the embedding rows (and a masked-LM decoder's rows and bias) of the kept ids, and a tokenizer of
the same class that segments with the kept pieces only.

Ids keep their original order, so ids below the first dropped one do not move: XLM-R's <s>=0, <pad>=1,
</s>=2, <unk>=3 stay put (position ids are derived from the pad id, which must stay 1) and <mask> becomes
the last id. Identical segmentation of text made of kept pieces:

- WordPiece (BERT) is greedy longest-match-first: if every piece of a word's segmentation is kept, the
  longest kept match at each step is the same piece, so the word segments identically. A word that used a
  dropped piece re-segments (or becomes [UNK]).
- Unigram (XLM-R) picks the highest-scoring path; scores are kept, so every path of the trimmed vocabulary
  existed before and scored the same, and the old best path, if all its pieces are kept, still wins. One
  catch: an unknown character is scored min(score) - 10, and dropping the lowest-scoring piece would raise
  that minimum and make <unk> paths more attractive than before. The lowest-scoring piece is therefore
  always kept (one piece), which keeps the guarantee exact.

`coverage(old, new, texts)` measures the share of sentences that tokenise into the same pieces; the logits of
such a sentence are unchanged, since its embedding rows are copied and nothing else changes.

The tokenizer is rewritten by `polydistill.students.vocab_tokenizer`.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from polydistill.config import TrimConfig
from polydistill.io import atomic_directory
from polydistill.students.vocab_tokenizer import (
    BATCH,
    backend_json,
    check_ascending,
    plain_backend,
    tokenizer_kind,
    trim_tokenizer,
)

# the tokenizer side, importable from here as before
from polydistill.students.vocab_tokenizer import coverage as coverage
from polydistill.students.vocab_tokenizer import same_tokenisation as same_tokenisation

# weights with one row per vocabulary id: the word embedding, and a masked-LM head's decoder and bias
_VOCAB_ROWS = re.compile(
    r"((^|\.)embeddings\.word_embeddings\.weight|^(lm_head|cls\.predictions)\.decoder\.(weight|bias)"
    r"|^(lm_head|cls\.predictions)\.bias)$"
)
# config fields holding token ids, remapped when the ids move
_CONFIG_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
REPORT_FILE = "vocab_trim.json"


@dataclass(frozen=True)
class TrimReport:
    """What `trim_vocab` did; `kept_ids[new_id]` is the original id of each kept piece."""

    kind: str  # "unigram" or "wordpiece"
    vocab_before: int
    vocab_after: int
    always_kept: int  # special and added tokens (and, for Unigram, the lowest-scoring piece)
    texts: int
    tokens: int  # tokens counted in the texts (no special tokens)
    params_before: int
    params_after: int
    embedding_params_before: int  # the input word embedding
    embedding_params_after: int
    kept_ids: tuple[int, ...]

    def lines(self) -> list[str]:
        """Human-readable summary, one fact a line."""
        share_before = self.embedding_params_before / self.params_before
        share_after = self.embedding_params_after / self.params_after
        return [
            f"counted {self.tokens:,} tokens in {self.texts:,} sentences",
            f"vocabulary ({self.kind}): {self.vocab_before:,} -> {self.vocab_after:,} pieces "
            f"({self.vocab_after / self.vocab_before:.1%}; {self.always_kept} always kept)",
            f"parameters: {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_after / self.params_before:.1%})",
            f"word embedding: {self.embedding_params_before:,} ({share_before:.1%} of the model) -> "
            f"{self.embedding_params_after:,} ({share_after:.1%})",
        ]

    def to_dict(self, *, with_ids: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["kept_ids"] = list(self.kept_ids) if with_ids else len(self.kept_ids)
        return data


# ----------------------------------------------------------------------------------------------
# counting and choosing


def count_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> Counter[int]:
    """How often each id occurs when `tokenizer` encodes `texts` (no special tokens, no truncation)."""
    backend = plain_backend(tokenizer)
    counts: Counter[int] = Counter()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH:
            counts.update(i for enc in backend.encode_batch(batch, add_special_tokens=False) for i in enc.ids)
            batch = []
    if batch:
        counts.update(i for enc in backend.encode_batch(batch, add_special_tokens=False) for i in enc.ids)
    return counts


def always_kept_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids kept whatever the counts: special and added tokens, and for Unigram the lowest-scoring piece
    (its score sets the <unk> penalty; see the module docstring). Sorted."""
    ids = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    if tokenizer_kind(tokenizer) == "unigram":
        vocab = backend_json(tokenizer)["model"]["vocab"]
        ids.add(min(range(len(vocab)), key=lambda i: (vocab[i][1], i)))
    return sorted(ids)


def check_top_k(tokenizer: PreTrainedTokenizerBase, cfg: TrimConfig) -> None:
    """ValueError when `cfg.top_k` leaves no room for the ids that are always kept."""
    always = always_kept_ids(tokenizer)
    if cfg.top_k is not None and cfg.top_k < len(always):
        what = "special and added tokens"
        if tokenizer_kind(tokenizer) == "unigram":
            what += ", the lowest-scoring piece"
        raise ValueError(f"top-k {cfg.top_k} is below the {len(always)} ids that are always kept ({what})")


def kept_ids(counts: Counter[int], tokenizer: PreTrainedTokenizerBase, cfg: TrimConfig) -> list[int]:
    """The ids to keep, in their original order: `always_kept_ids`, plus the counted ids seen at least
    `cfg.min_freq` times, the most frequent first when `cfg.top_k` caps the total (ties: lower id)."""
    check_top_k(tokenizer, cfg)
    always = always_kept_ids(tokenizer)
    size = len(tokenizer)
    unknown = sorted(i for i in counts if not 0 <= i < size)
    if unknown:
        raise ValueError(f"counted id {unknown[0]} is outside the tokenizer's {size} ids")
    keep = set(always)
    chosen = sorted(
        ((i, c) for i, c in counts.items() if c >= cfg.min_freq and i not in keep), key=lambda ic: (-ic[1], ic[0])
    )
    if cfg.top_k is not None:
        chosen = chosen[: cfg.top_k - len(always)]
    keep.update(i for i, _ in chosen)
    return sorted(keep)


# ----------------------------------------------------------------------------------------------
# trimming


def trim_vocab(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], cfg: TrimConfig = TrimConfig()
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrimReport]:
    """Trim `model` and `tokenizer` to the pieces `tokenizer` produces on `texts` (see `TrimConfig`).

    Returns a new model and tokenizer of the same classes (the inputs are not modified) and a report.
    """
    if not texts:
        raise ValueError("no texts to count pieces on")
    kind = tokenizer_kind(tokenizer)
    counts = count_token_ids(tokenizer, texts)
    if not counts:
        raise ValueError(f"the {len(texts)} texts tokenise to no pieces at all")
    keep = kept_ids(counts, tokenizer, cfg)
    new_tokenizer = trim_tokenizer(tokenizer, keep)
    new_model = trim_model(model, keep)
    report = TrimReport(
        kind=kind,
        vocab_before=len(tokenizer),
        vocab_after=len(keep),
        always_kept=len(always_kept_ids(tokenizer)),
        texts=len(texts),
        tokens=sum(counts.values()),
        params_before=_count(model),
        params_after=_count(new_model),
        embedding_params_before=model.get_input_embeddings().weight.numel(),
        embedding_params_after=new_model.get_input_embeddings().weight.numel(),
        kept_ids=tuple(keep),
    )
    return new_model, new_tokenizer, report


def trim_model(model: PreTrainedModel, keep: Sequence[int]) -> PreTrainedModel:
    """A stock `type(model)` whose vocabulary is `keep` (original ids, ascending): word-embedding rows and
    masked-LM decoder rows and bias sliced, `config.vocab_size` and the config's token ids updated, tied
    weights still tied. `model` itself is not modified."""
    keep = list(keep)
    check_ascending(keep)
    old_vocab = model.get_input_embeddings().weight.shape[0]
    if keep[-1] >= old_vocab:
        raise ValueError(f"id {keep[-1]} is outside the model's {old_vocab}-row embedding")
    new_id = {old: new for new, old in enumerate(keep)}
    config = copy.deepcopy(model.config)
    for name in _CONFIG_IDS:
        old = getattr(config, name, None)
        if old is None:
            continue
        if old not in new_id:
            raise ValueError(f"config.{name}={old} is not among the kept ids")
        setattr(config, name, new_id[old])
    if getattr(model.config, "pad_token_id", None) is not None and config.pad_token_id != model.config.pad_token_id:
        raise ValueError(
            f"the pad id would move from {model.config.pad_token_id} to {config.pad_token_id}; XLM-R derives "
            "position ids from it, so every id below it must be kept"
        )
    config.vocab_size = len(keep)
    index = torch.tensor(keep, dtype=torch.long)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach()
        if _VOCAB_ROWS.search(key):
            if value.shape[0] != old_vocab:
                raise ValueError(f"{key} has {value.shape[0]} rows, the word embedding {old_vocab}")
            value = value.index_select(0, index.to(value.device))
        state[key] = value.clone()
    new = type(model)(config)
    try:
        new.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a vocabulary-sized weight this module does not know how to slice
        mismatch = str(exc).strip().splitlines()[-1].strip()  # the last line names the weight and both shapes
        raise ValueError(f"cannot trim {type(model).__name__}: {mismatch}") from exc
    if _tied(model) and not _tied(new):
        raise RuntimeError(f"{type(model).__name__}: the output embedding is no longer tied to the input one")
    new.to(device=model.device, dtype=model.dtype)
    return new.train(model.training)


def save_trimmed(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report: TrimReport, out_dir: str | Path
) -> Path:
    """`save_pretrained` (safetensors) of model and tokenizer plus `vocab_trim.json` (the report with the
    kept original ids), into `out_dir` atomically."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict()) + "\n", encoding="utf-8")

    return atomic_directory(out_dir, write)


# ----------------------------------------------------------------------------------------------
# helpers


def _tied(model: PreTrainedModel) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _count(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())
