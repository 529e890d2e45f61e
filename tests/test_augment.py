"""distill.augment: cropped, word-dropped copies of the training sentences, labelled by the teacher."""

import json
import random

import pytest
from tiny import QUICKSTART, TWO_LAYER_QUICKSTART, UDPOS_TINY, TinyRun

from polydistill.augment import augment_texts, augmented_copy
from polydistill.cli import main
from polydistill.config import AugmentConfig

SENTENCE = "the quick brown fox jumps over the lazy dog near the river bank today"


def test_a_copy_is_an_in_order_subsequence_of_a_contiguous_run_of_at_least_keep_of_the_words():
    words = SENTENCE.split()
    rng = random.Random(0)
    cfg = AugmentConfig(copies=1, keep=0.6, word_dropout=0.2)
    lengths = []
    for _ in range(200):
        copy = augmented_copy(SENTENCE, cfg, rng).split()
        start = words.index(copy[0])
        it = iter(words[start:])
        assert all(word in it for word in copy)  # same words, same order, none invented
        lengths.append(len(copy))
    assert min(lengths) >= 1 and max(lengths) <= len(words)
    assert len(set(lengths)) > 3  # crops and drops vary from copy to copy


def test_without_cropping_or_dropping_a_copy_is_the_sentence_and_one_word_is_never_emptied():
    rng = random.Random(0)
    assert augmented_copy(SENTENCE, AugmentConfig(copies=1, keep=1.0, word_dropout=0.0), rng) == SENTENCE
    assert augmented_copy("Ẹ", AugmentConfig(copies=1, keep=0.1, word_dropout=0.9), rng) == "Ẹ"
    assert augmented_copy("a b", AugmentConfig(copies=1, keep=0.5, word_dropout=0.99), rng) in {"a", "b"}


def test_copies_come_copy_by_copy_in_text_order_and_are_the_same_for_the_same_seed():
    texts = [SENTENCE, "one two three four five", "alpha beta gamma delta"]
    cfg = AugmentConfig(copies=2)
    copies = augment_texts(texts, cfg, seed=3)
    assert len(copies) == 6
    assert copies == augment_texts(texts, cfg, seed=3)
    assert copies != augment_texts(texts, cfg, seed=4)
    assert set(copies[1].split()) <= set(texts[1].split()) and set(copies[4].split()) <= set(texts[1].split())
    assert augment_texts(texts, AugmentConfig(copies=0), seed=3) == []


@pytest.fixture()
def augmenting(tiny_run) -> TinyRun:
    """The quickstart recipe on English and Yoruba with a 2-layer student."""
    return tiny_run(
        QUICKSTART, "data.languages=[eng_Latn, yor_Latn]", *TWO_LAYER_QUICKSTART, "distill.train.batch_size=16",
        "trim.min_freq=2",
    )  # fmt: skip


@pytest.mark.slow
def test_augmented_copies_join_the_transfer_set_of_a_student_trimmed_before_distillation(tmp_path, augmenting, capsys):
    losses = {}
    for copies in (0, 2):
        args = ["stages=[teacher, trim, distill]", f"distill.augment.copies={copies}"]
        run_dir = augmenting.run(tmp_path / str(copies), *args, "distill.losses.cls_mse={weight: 1.0}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        losses[copies] = metrics["training"]["student"]["history"][0]["train_loss"]
        assert metrics["trim"]["before_distill"] is True
    assert "64 training sentences and 128 augmented copies (2 each" in capsys.readouterr().out
    assert losses[2] != losses[0]  # same seed: only the transfer set differs


@pytest.mark.slow
def test_augmented_copies_train_a_student_that_reads_the_teachers_own_pieces(tmp_path, augmenting, capsys):
    run_dir = augmenting.run(tmp_path, "stages=[teacher, distill]", "distill.augment.copies=1")
    assert "64 training sentences and 64 augmented copies (1 each" in capsys.readouterr().out
    assert (run_dir / "checkpoints" / "student" / "model.safetensors").is_file()


def test_augmentation_refuses_a_token_task_and_parallel_targets(tmp_path, tiny_run, augmenting, ud_path, capsys):
    assert main(tiny_run(UDPOS_TINY, data=ud_path).args(tmp_path, "distill.augment.copies=1")) == 2
    assert "'distill.augment' crops and drops words" in capsys.readouterr().err
    assert main(augmenting.args(tmp_path, "distill.augment.copies=1", "distill.parallel_targets=true")) == 2
    assert "'distill.augment' and 'distill.parallel_targets' do not combine" in capsys.readouterr().err
    assert main(augmenting.args(tmp_path, "distill.augment.keep=0")) == 2
    assert "distill.augment.keep" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
