"""Rewriting a fast tokenizer to a subset of its vocabulary, and checking that text still segments as before
(see `polydistill.students.vocab`, which chooses the ids and slices the model to match).

The tokenizer is rebuilt by editing its `tokenizer.json` (vocabulary, unk id, added tokens, post-processor
and padding ids) and loading it with the tokenizer's own class, i.e. exactly what `from_pretrained` of the
saved directory returns; the rebuilt normalizer, pre-tokenizer, model, post-processor and decoder are then
checked against the edited JSON, so a class that cannot represent the trimmed tokenizer raises instead of
silently segmenting differently.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

# what `save_pretrained` of a tokenizers-backed tokenizer needs to reload: anything else (a stale
# sentencepiece.bpe.model or vocab.txt of the untrimmed vocabulary) is left out of the rebuilt one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BATCH = 1024  # texts per encode_batch call


def tokenizer_kind(tokenizer: PreTrainedTokenizerBase) -> str:
    """'unigram' (XLM-R, SentencePiece) or 'wordpiece' (BERT); ValueError for anything else."""
    model_type = backend_json(tokenizer)["model"].get("type")
    if model_type == "Unigram":
        return "unigram"
    if model_type == "WordPiece":
        return "wordpiece"
    raise ValueError(
        f"{type(tokenizer).__name__}: vocabulary trimming supports fast Unigram (XLM-R) and WordPiece (BERT) "
        f"tokenizers, not {model_type!r}"
    )


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase, keep: Sequence[int]) -> PreTrainedTokenizerBase:
    """A tokenizer of the same class whose vocabulary is `keep` (original ids, ascending), renumbered 0..n-1:
    same pieces (Unigram scores, WordPiece prefix and unk token), normalizer, pre-tokenizer, post-processor
    and decoder. Must keep every special and added token."""
    keep = list(keep)
    check_ascending(keep)
    kind = tokenizer_kind(tokenizer)
    missing = sorted((set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)) - set(keep))
    if missing:
        raise ValueError(
            f"special/added token id {missing[0]} ({tokenizer.convert_ids_to_tokens(missing[0])}) is not kept"
        )
    new_id = {old: new for new, old in enumerate(keep)}
    with tempfile.TemporaryDirectory(prefix="vocab-trim-") as tmp_name:
        tmp = Path(tmp_name)
        tokenizer.save_pretrained(tmp)
        for item in tmp.iterdir():
            if item.name not in TOKENIZER_FILES:
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        data = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))
        _trim_tokenizer_json(data, kind, keep, new_id)
        (tmp / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        config_path = tmp / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if isinstance(config.get("added_tokens_decoder"), dict):
                config["added_tokens_decoder"] = {
                    str(new_id[int(i)]): tok for i, tok in config["added_tokens_decoder"].items()
                }
            config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        new = type(tokenizer).from_pretrained(tmp)
    new.name_or_path = tokenizer.name_or_path  # not the temporary folder
    _check_rebuilt(new, data)
    return new


def _trim_tokenizer_json(data: dict[str, Any], kind: str, keep: list[int], new_id: dict[int, int]) -> None:
    """Edit a `tokenizer.json` dict in place to the kept ids."""
    model = data["model"]
    if kind == "unigram":
        vocab = model["vocab"]
        model["vocab"] = [vocab[i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        piece_of = {i: piece for piece, i in model["vocab"].items()}
        model["vocab"] = {piece_of[old]: new for new, old in enumerate(keep)}
        if model.get("unk_token") not in model["vocab"]:
            raise ValueError(f"WordPiece unk token {model.get('unk_token')!r} is not kept")
    data["added_tokens"] = [{**tok, "id": new_id[tok["id"]]} for tok in data.get("added_tokens") or []]
    if data.get("padding") and data["padding"].get("pad_id") is not None:
        data["padding"]["pad_id"] = new_id[data["padding"]["pad_id"]]
    if data.get("post_processor"):
        _remap_processor(data["post_processor"], new_id)


def _remap_processor(proc: dict[str, Any], new_id: dict[int, int]) -> None:
    """Remap the special-token ids a post-processor carries (Template, Bert, Roberta, Sequence)."""
    kind = proc.get("type")
    if kind == "Sequence":
        for inner in proc.get("processors", []):
            _remap_processor(inner, new_id)
    elif kind == "TemplateProcessing":
        for token in proc.get("special_tokens", {}).values():
            token["ids"] = [new_id[i] for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            piece, old = proc[key]
            proc[key] = [piece, new_id[old]]
    elif kind not in ("ByteLevel", None):
        raise ValueError(f"don't know the token ids of a {kind} post-processor")


def _check_rebuilt(new: PreTrainedTokenizerBase, expected: dict[str, Any]) -> None:
    """The rebuilt tokenizer's backend must be the edited JSON, part for part."""
    got = backend_json(new)
    for part in ("normalizer", "pre_tokenizer", "model", "post_processor", "decoder", "added_tokens"):
        if got.get(part) != expected.get(part):
            raise ValueError(
                f"{type(new).__name__} rebuilds the trimmed tokenizer with a different {part} than the original's; "
                "it could not be trimmed faithfully"
            )


def same_tokenisation(old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[bool]:
    """Per text: does `new` split it into the same pieces as `old`?

    Pieces are compared as vocabulary entries (id -> piece string), not as `Encoding.tokens`: a Unigram
    <unk> reports the text it covers as its token, so a character whose piece was dropped would look the same.
    """
    old_backend, new_backend = plain_backend(old), plain_backend(new)
    old_pieces, new_pieces = _pieces(old_backend), _pieces(new_backend)
    same: list[bool] = []
    for start in range(0, len(texts), BATCH):
        batch = list(texts[start : start + BATCH])
        before = old_backend.encode_batch(batch, add_special_tokens=False)
        after = new_backend.encode_batch(batch, add_special_tokens=False)
        same += [
            [old_pieces[i] for i in a.ids] == [new_pieces[i] for i in b.ids] for a, b in zip(before, after, strict=True)
        ]
    return same


def coverage(old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, texts: Sequence[str]) -> float:
    """Share of `texts` that `new` tokenises into the same pieces as `old`."""
    if not texts:
        raise ValueError("coverage of no texts")
    same = same_tokenisation(old, new, texts)
    return sum(same) / len(same)


def backend_json(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer")
    return json.loads(backend.to_str())


def plain_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of the backend without padding or truncation."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def _pieces(backend: Tokenizer) -> list[str | None]:
    """id -> piece string, added tokens included."""
    vocab = backend.get_vocab(with_added_tokens=True)
    pieces: list[str | None] = [None] * (max(vocab.values()) + 1)
    for piece, i in vocab.items():
        pieces[i] = piece
    return pieces


def check_ascending(keep: list[int]) -> None:
    if not keep:
        raise ValueError("no ids to keep")
    if any(b <= a for a, b in zip(keep, keep[1:], strict=False)) or keep[0] < 0:
        raise ValueError("kept ids must be distinct, non-negative and in ascending (original) order")
