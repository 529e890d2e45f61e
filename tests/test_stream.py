"""Streamed corpora for task-agnostic distillation: every sentence once per epoch in a seeded shuffled order,
read lazily through `datasets` streaming, resumable mid-epoch, and usable by `distill run` (agnostic.corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tiny import QUICKSTART
from transformers import AutoConfig, AutoTokenizer

from polydistill.errors import DistillError
from polydistill.stream import TextStream


class Words:
    """A stand-in tokenizer: one id per word plus <s> and </s>, so lengths are easy to check."""

    def __call__(self, texts: list[str], truncation: bool, max_length: int) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0, *[len(w) for w in t.split()][: max_length - 2], 2] for t in texts]}


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    lines = [f"sentence {i} " + "word " * (i % 7) for i in range(103)]
    path.write_text("\n".join(lines[:50]) + "\n\n   \n" + "\n".join(lines[50:]) + "\n", encoding="utf-8")
    return path


def texts_of(stream: TextStream, epoch: int, skip: int = 0) -> list[list[int]]:
    return [data.input_ids[i] for data, indices in stream.batches(epoch, skip) for i in indices]


def test_each_epoch_yields_every_sentence_once_in_a_seeded_shuffled_order(corpus):
    stream = TextStream([str(corpus)], Words(), batch_size=10, max_length=16, shuffle_buffer=32, seed=3)
    assert stream.sentences == 103 and stream.steps_per_epoch == 11  # the two blank lines are skipped
    batches = list(stream.batches(0))
    assert [len(indices) for _, indices in batches] == [10] * 10 + [3]
    first, again, second = texts_of(stream, 0), texts_of(stream, 0), texts_of(stream, 1)
    assert first == again and first != second  # reproducible, and reshuffled each epoch
    assert sorted(map(tuple, first)) == sorted(map(tuple, second))  # the same sentences, each once
    assert len(first) == 103


def test_a_resumed_epoch_continues_with_the_batch_it_stopped_at(corpus):
    stream = TextStream([str(corpus)], Words(), batch_size=10, max_length=16, shuffle_buffer=32, seed=0)
    whole = list(stream.batches(2))
    resumed = list(stream.batches(2, skip=4))
    assert [d.input_ids for d, _ in resumed] == [d.input_ids for d, _ in whole[4:]]


def test_the_corpus_is_read_through_datasets_streaming(corpus, monkeypatch):
    seen = {}
    real = datasets.load_dataset

    def spy(*args, **kwargs):
        seen.update(kwargs)
        result = real(*args, **kwargs)
        seen["type"] = type(result)
        return result

    monkeypatch.setattr(datasets, "load_dataset", spy)
    stream = TextStream([str(corpus)], Words(), batch_size=10, max_length=16)
    next(stream.batches(0))
    assert seen["streaming"] is True and issubclass(seen["type"], datasets.IterableDataset)


def test_missing_and_empty_corpora_are_named(tmp_path):
    with pytest.raises(DistillError, match="corpus file .*missing.txt not found"):
        TextStream([str(tmp_path / "missing.txt")], Words(), batch_size=4, max_length=8)
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DistillError, match="has no text"):
        TextStream([str(tmp_path / "blank.txt")], Words(), batch_size=4, max_length=8)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DistillError, match="latin1.txt is not UTF-8 text"):
        TextStream([str(tmp_path / "latin1.txt")], Words(), batch_size=4, max_length=8)


@pytest.mark.slow
def test_agnostic_stage_streams_a_corpus_file_and_reports_tokens_per_second(tmp_path, sib200_path, tiny_run, capsys):
    corpus = tmp_path / "hau.txt"
    lines = (sib200_path / "data" / "hau_Latn" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:121]
    corpus.write_text("\n".join(line.split("\t")[-1] for line in lines) + "\n", encoding="utf-8")
    streaming = tiny_run(
        QUICKSTART, "data.languages=[eng_Latn, hau_Latn]", "data.max_train_per_language=24",
        "data.max_eval_per_language=8", "teacher.scratch.vocab_size=300", "teacher.scratch.hidden_size=32",
        "teacher.scratch.num_heads=2", "teacher.scratch.intermediate_size=64", "teacher.train.epochs=1",
        "student.num_layers=2", "agnostic.train.epochs=2", "agnostic.train.batch_size=16",
        f"agnostic.corpus=[{corpus}]", "agnostic.shuffle_buffer=50", "distill.train.epochs=1",
        "stages=[teacher, agnostic, distill]",
    )  # fmt: skip
    directory = streaming.run(tmp_path / "out")
    captured = capsys.readouterr()
    assert "streaming 120 sentences from 1 corpus file(s), teacher run live" in captured.out
    assert "agnostic epoch 2: train loss" in captured.out and "tokens/s)" in captured.out
    assert "tokens_per_s=" not in captured.err  # the training bar is drawn on a terminal only, not into a capture
    metrics = json.loads((directory / "metrics.json").read_text())
    assert len(metrics["training"]["student_agnostic"]["history"]) == 2
    folder = directory / "checkpoints" / "student_agnostic"
    tokenizer, config = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
    ids = tokenizer(corpus.read_text(encoding="utf-8").splitlines()[0])["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and max(ids) < config.vocab_size
