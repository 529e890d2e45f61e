"""SIB-200 through `datasets`, from a local folder of `<lang>/{train,dev,test}.tsv` or a hub id.

Batches are built by length (sentences of similar length together, padded to the longest in the
batch), never padded to 512: on a 2-core CPU the padding would cost more than the model.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from polydistill.config import DataConfig
from polydistill.errors import DistillError, first_line, suggest

SPLITS = ("train", "dev", "test")
HUB_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class TaskData:
    """Texts and integer labels per language and split, plus the label names."""

    labels: list[str]
    splits: dict[str, dict[str, datasets.Dataset]]  # split -> language -> Dataset(text, label)

    def texts(self, split: str) -> list[str]:
        return [t for ds in self.splits[split].values() for t in ds["text"]]


def resolve_local_root(path: str) -> Path:
    """Accept the dataset folder itself or its parent holding `data/` (as in ../shared/data/sib-200)."""
    root = Path(path)
    if not any(root.glob("*/train.tsv")) and any((root / "data").glob("*/train.tsv")):
        return root / "data"
    return root


def check_local_dataset(path: str, languages: list[str]) -> None:
    """Fail early, with the culprit named, if the folder or a language split is missing."""
    root = Path(path)
    if not root.is_dir():
        raise DistillError(f"data path not found: {path} (set 'data.path' or POLYDISTILL_DATA)")
    root = resolve_local_root(path)
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    for lang in languages:
        if not (root / lang).is_dir():
            raise DistillError(f"unknown language code '{lang}': no folder {root / lang}{suggest(lang, available)}")
        for split in SPLITS:
            if not (root / lang / f"{split}.tsv").is_file():
                raise DistillError(f"missing split file {root / lang / f'{split}.tsv'}")


def load_task_data(cfg: DataConfig) -> TaskData:
    if cfg.path is not None:
        check_local_dataset(cfg.path, cfg.languages)
        root = resolve_local_root(cfg.path)
        labels = _read_labels(root / cfg.languages[0] / "labels.txt")
        raw = {lang: _load_local_language(root / lang) for lang in cfg.languages}
    else:
        raw = {lang: _load_hub_language(cfg.hub_id, lang) for lang in cfg.languages}
        labels = sorted(set(raw[cfg.languages[0]]["train"]["category"]))
    splits: dict[str, dict[str, datasets.Dataset]] = {s: {} for s in SPLITS}
    for lang, by_split in raw.items():
        for split in SPLITS:
            ds = by_split[split]
            limit = cfg.max_train_per_language if split == "train" else cfg.max_eval_per_language
            if split == "dev" and cfg.max_dev_per_language is not None:
                limit = cfg.max_dev_per_language
            if limit is not None and limit < len(ds):
                ds = ds.select(stratified_indices(ds["category"], limit))
            if len(ds) == 0:
                raise DistillError(f"empty split: {lang}/{split} has no rows")
            where = str(root / lang / f"{split}.tsv") if cfg.path is not None else f"{lang}/{split}"
            splits[split][lang] = _encode_labels(ds, labels, where)
    return TaskData(labels=labels, splits=splits)


def stratified_indices(labels: list, n: int, seed: int = 0) -> list[int]:
    """`n` row indices drawn evenly across the label classes (round robin over the classes, each class's rows in
    a seeded random order), returned in file order. SIB-200's files are sorted by label: their first n rows
    would often be one class, and an evaluation set of one class cannot tell models apart."""
    rng = np.random.default_rng(seed)
    by_class: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    queues = [list(rng.permutation(rows)) for _, rows in sorted(by_class.items(), key=lambda kv: str(kv[0]))]
    chosen: list[int] = []
    while len(chosen) < min(n, len(labels)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop()))
    return sorted(chosen)


def _read_labels(path: Path) -> list[str]:
    """One label name a line; a byte-order mark is dropped (an editor's, not part of the first name)."""
    if not path.is_file():
        raise DistillError(f"label file not found: {path}")
    labels: list[str] = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        name = line.strip()
        if name in labels:
            raise DistillError(f"{path} line {number}: label {name!r} is listed twice")
        if name:
            labels.append(name)
    if not labels:
        raise DistillError(f"label file is empty: {path}")
    return labels


def _read_text(path: Path) -> str:
    """A UTF-8 text file (a leading byte-order mark dropped), or one line naming the file and the bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DistillError(f"{path} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8") from None


def read_split_file(path: Path) -> datasets.Dataset:
    """A SIB-200 split: a tab-separated file with a header naming at least `category` and `text`, written with
    pandas' default quoting (a cell holding a tab or quote is wrapped in quotes, inner quotes doubled). Read
    with the csv module in strict mode, so every malformed row is one error naming the file and line."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t", strict=True)
    rows: list[list[str]] = []
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            raise DistillError(f"empty split: {path} has no rows")
        missing = [column for column in ("category", "text") if column not in header]
        if missing:
            raise DistillError(f"{path} lacks column(s) {missing} (its header: {header})")
        bad = [name for name in header if not name.isprintable() or not name.strip() or header.count(name) > 1]
        if bad:
            raise DistillError(f"{path} line 1: column name {bad[0]!r} is empty, repeated or holds control characters")
        start = reader.line_num + 1
        for row in reader:
            if len(row) != len(header):
                raise DistillError(f"{path} line {start}: {len(row)} fields, but the header names {len(header)}")
            if reader.line_num != start:
                raise DistillError(
                    f"{path} line {start}: a quoted cell runs on to line {reader.line_num} (a stray '\"'?)"
                )
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DistillError(f"{path} line {start}: {exc} (a stray '\"'?)") from None
    if not rows:
        raise DistillError(f"empty split: {path} has no rows")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    if "index_id" in columns:
        bad = next((n for n, value in enumerate(columns["index_id"]) if not value.strip().lstrip("-").isdigit()), None)
        if bad is not None:
            raise DistillError(f"{path}: index_id {columns['index_id'][bad]!r} of data row {bad + 1} is not an integer")
    return datasets.Dataset.from_dict(columns)


def _load_local_language(folder: Path) -> dict[str, datasets.Dataset]:
    return {split: read_split_file(folder / f"{split}.tsv") for split in SPLITS}


def _load_hub_language(hub_id: str, lang: str) -> dict[str, datasets.Dataset]:
    try:
        loaded = datasets.load_dataset(hub_id, lang)
    except Exception as exc:  # network, missing config: one line, the cause kept
        raise DistillError(f"could not load {hub_id!r} config {lang!r} from the hub: {exc}") from exc
    return {split: loaded[HUB_SPLIT_NAMES[split]] for split in SPLITS}


def _encode_labels(ds: datasets.Dataset, labels: list[str], where: str) -> datasets.Dataset:
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(ds["category"]) - index.keys())
    if unknown:
        raise DistillError(f"label {unknown[0]!r} in {where} is not in the label set {labels}")
    columns = {"text": [str(t) for t in ds["text"]], "label": [index[c] for c in ds["category"]]}
    if "index_id" in ds.column_names:  # SIB-200's sentence id, the same across languages (parallel rows)
        columns["index_id"] = [int(i) for i in ds["index_id"]]
    return datasets.Dataset.from_dict(columns)


# ----------------------------------------------------------------------------------------------
# tokenisation and batching


IGNORE_INDEX = -100  # label of positions that are not scored (torch's cross_entropy default ignore_index)


@dataclass(frozen=True)
class Encoded:
    """Token ids (unpadded) and labels of one split, ready for length-bucketed batching.

    A sentence task has one label id per example; a token task a list per example, aligned with
    its `input_ids`, holding IGNORE_INDEX where a position is not scored.
    """

    input_ids: list[list[int]]
    labels: list[int] | list[list[int]]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def per_token(self) -> bool:
        return bool(self.labels) and isinstance(self.labels[0], list)


def gold_labels(enc: Encoded) -> np.ndarray:
    """The scored gold labels as one flat array: one per sentence, or one per scored token."""
    if not enc.per_token:
        return np.asarray(enc.labels, dtype=np.int64)
    flat = np.concatenate([np.asarray(row, dtype=np.int64) for row in enc.labels])
    return flat[flat != IGNORE_INDEX]


def predicted_labels(logits: np.ndarray | list[np.ndarray], enc: Encoded) -> np.ndarray:
    """Argmax of `predict_logits`' output at the positions `gold_labels` scores, in the same order."""
    if not enc.per_token:
        return np.asarray(logits).argmax(-1)
    rows = [
        row[: len(gold)].argmax(-1)[np.asarray(gold) != IGNORE_INDEX]
        for row, gold in zip(logits, enc.labels, strict=True)
    ]
    return np.concatenate(rows)


def encode(tokenizer, texts: list[str], labels: list[int], max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return Encoded(input_ids=ids, labels=list(labels))


def length_batches(lengths: list[int], batch_size: int, *, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Group indices of similar length into batches.

    When shuffling, sentences are sorted by length only inside windows of 50 batches, and the
    batches are then shuffled, so each epoch sees a different mix at little padding cost.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(encoded: Encoded, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad one batch to its longest sentence (onnxruntime's fused attention assumes right padding)."""
    longest = max(len(encoded.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), longest), dtype=torch.long)
    for row, i in enumerate(indices):
        seq = encoded.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    if encoded.per_token:  # per-token labels are padded with IGNORE_INDEX, like the ids with pad_id
        labels = torch.full((len(indices), longest), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(indices):
            labels[row, : len(encoded.labels[i])] = torch.tensor(encoded.labels[i], dtype=torch.long)
    else:
        labels = torch.tensor([encoded.labels[i] for i in indices])
    # "index" lets a step look up per-example data computed once, such as cached teacher logits
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": torch.tensor(indices)}


def iterate_batches(
    encoded: Encoded, batch_size: int, pad_id: int, *, shuffle: bool, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    lengths = [len(x) for x in encoded.input_ids]
    for indices in length_batches(lengths, batch_size, shuffle=shuffle, seed=seed):
        yield collate(encoded, indices, pad_id)


def read_corpus(path: str | Path, what: str = "corpus file") -> list[str]:
    """Sentences of a corpus file: a SIB-200 `.tsv` (its `text` column, read as `load_task_data` reads it),
    a CoNLL-U file (`.conllu`, `.conllu.gz`: its `# text = ` lines) or plain text (one sentence a line).
    A missing, unreadable or empty file raises a one-line `DistillError` naming it (as `what`)."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{what} {path} not found")
    try:
        if path.suffix == ".tsv":
            texts = _read_tsv(path, what)
        elif path.name.endswith((".conllu", ".conllu.gz")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8-sig") as f:
                texts = [line[len("# text =") :] for line in f if line.startswith("# text =")]
        else:
            texts = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DistillError(f"cannot read {what} {path}: {exc}") from exc
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise DistillError(f"{what} {path} has no sentences")
    return texts


def _read_tsv(path: Path, what: str) -> list[str]:
    try:
        # as load_task_data reads SIB-200: pandas-written TSV, default quoting, "NA" is a word
        loaded = datasets.load_dataset(
            "csv", data_files=str(path), delimiter="\t", keep_default_na=False, split="train"
        )
    except Exception as exc:  # pandas / arrow parse errors: one line, the cause kept
        raise DistillError(f"cannot parse {what} {path} as a tab-separated file: {first_line(exc)}") from exc
    if "text" not in loaded.column_names:
        raise DistillError(f"{what} {path} has no 'text' column (columns: {', '.join(loaded.column_names)})")
    return [str(t) for t in loaded["text"]]
