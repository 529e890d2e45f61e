"""A text corpus read as a stream, for task-agnostic distillation on more text than fits in memory.

`TextStream` reads plain-text files (one sentence a line) with `datasets`' streaming mode (an
IterableDataset: lines are read as they are needed), shuffles them through a bounded buffer with a seed per
epoch, and hands `distill.train.fit` one global batch at a time, tokenised only then. Nothing holds more than
the shuffle buffer and one batch. An epoch is one pass over the files; its number of batches comes from one
counting pass over the same stream at the start (constant memory), so the learning-rate schedule knows its length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from polydistill.data import Encoded
from polydistill.errors import DistillError


@dataclass
class TextStream:
    """Global batches of `batch_size` tokenised sentences from `files`, in a seeded shuffled order per epoch."""

    files: list[str]
    tokenizer: Any
    batch_size: int
    max_length: int
    shuffle_buffer: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.files:
            if not Path(name).is_file():
                raise DistillError(f"corpus file {name} not found")
        try:  # one pass over the same stream the epochs read, so the count is theirs
            self.sentences = sum(1 for _ in self._lines())
        except UnicodeDecodeError as exc:
            raise DistillError(f"the corpus {', '.join(self.files)} is not UTF-8 text: {exc}") from exc
        if self.sentences == 0:
            raise DistillError(f"the corpus {', '.join(self.files)} has no text (only empty lines)")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sentences / self.batch_size)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[Encoded, list[int]]]:
        """Epoch `epoch`'s global batches as (encoded batch, its row indices), after the first `skip` (read past,
        not tokenised: a resumed run continues with the batch it stopped at)."""
        stream = self._lines().shuffle(seed=self.seed * 1000 + epoch, buffer_size=self.shuffle_buffer)
        batch: list[str] = []
        done = 0
        for row in stream:
            batch.append(row["text"])
            if len(batch) == self.batch_size:
                if done >= skip:
                    yield self._encode(batch)
                done += 1
                batch = []
        if batch and done >= skip:
            yield self._encode(batch)

    def _lines(self) -> Any:
        """The files' non-empty lines as a `datasets` IterableDataset (read lazily, never all at once)."""
        stream = datasets.load_dataset("text", data_files=self.files, split="train", streaming=True)
        return stream.filter(lambda row: bool(row["text"].strip()))

    def _encode(self, texts: list[str]) -> tuple[Encoded, list[int]]:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return Encoded(input_ids=ids, labels=[0] * len(ids)), list(range(len(ids)))
