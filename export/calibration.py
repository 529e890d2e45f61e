"""Calibration data for the int8 modes that need real sentences: tokenized batches and the reader that feeds
them to onnxruntime's calibrators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from polydistill.errors import DistillError
from polydistill.export.onnx import INPUT_NAMES

Batch = dict[str, np.ndarray]
CalibrationName = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class BatchReader(CalibrationDataReader):
    """Feeds prepared batches to onnxruntime's calibrator.

    `__len__` and `set_range` let `quantize_static` collect one batch at a time
    (`CalibStridedMinMax=1`): the histogram calibrators (Entropy, Percentile) otherwise stack every
    batch's activations into one array, which fails for batches of different sequence lengths and
    holds all of them in memory at once.
    """

    def __init__(self, batches: Sequence[Batch]) -> None:
        if not batches:
            raise DistillError("static quantization needs at least one calibration batch")
        self.batches = [{name: np.asarray(b[name], dtype=np.int64) for name in INPUT_NAMES} for b in batches]
        self.start, self.end = 0, len(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> Batch | None:
        if self.start >= self.end:
            return None
        self.start += 1
        return self.batches[self.start - 1]

    def rewind(self) -> None:
        self.start, self.end = 0, len(self.batches)


def calibration_batches(tokenizer, texts: list[str], *, batch_size: int = 8, max_length: int = 128) -> list[Batch]:
    """Real sentences, tokenized and right-padded in length-sorted batches as the pipeline batches them.

    Right padding matters: onnxruntime's fused Attention assumes it, and calibration should see the
    activations inference will.
    """
    from polydistill.data import collate, encode, length_batches  # lazy: it imports datasets; the bench may lack it

    if not texts:
        raise DistillError("static quantization needs calibration sentences")
    enc = encode(tokenizer, texts, [0] * len(texts), max_length)
    batches = []
    for indices in length_batches([len(x) for x in enc.input_ids], batch_size, shuffle=False):
        batch = collate(enc, indices, tokenizer.pad_token_id)
        batches.append({name: batch[name].numpy() for name in INPUT_NAMES})
    return batches
