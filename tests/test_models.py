"""Tokenizer, teacher and student round trips through from_pretrained."""

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from polydistill.models import count_parameters
from polydistill.students import pick_layers, student_from_teacher


def test_trained_tokenizer_has_xlmr_special_ids(tiny_tokenizer):
    assert [tiny_tokenizer.convert_tokens_to_ids(t) for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3]
    assert tiny_tokenizer.mask_token_id == len(tiny_tokenizer) - 1
    ids = tiny_tokenizer("Orile ede Turkey")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2


def test_tokenizer_and_tiny_teacher_round_trip_through_from_pretrained(
    tmp_path, tiny_tokenizer, tiny_teacher, small_texts
):
    tiny_teacher.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert model.config.model_type == "xlm-roberta"
    assert all(tokenizer(t)["input_ids"] == tiny_tokenizer(t)["input_ids"] for t in small_texts)
    batch = tokenizer(small_texts[:8], padding=True, return_tensors="pt")
    with torch.inference_mode():
        # the reloaded model may pick SDPA attention instead of eager: equal up to float rounding
        torch.testing.assert_close(model(**batch).logits, tiny_teacher(**batch).logits, atol=1e-6, rtol=0)
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_pick_layers_spreads_evenly_and_keeps_the_last():
    assert pick_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert pick_layers(4, 2) == [1, 3]
    assert pick_layers(6, 3) == [1, 3, 5]
    assert pick_layers(4, 4) == [0, 1, 2, 3]


def test_student_copies_the_chosen_teacher_layers(tiny_teacher):
    student = student_from_teacher(tiny_teacher, [1, 3])
    assert student.config.num_hidden_layers == 2
    t, s = tiny_teacher.state_dict(), student.state_dict()
    for new, old in enumerate([1, 3]):
        key = "roberta.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(new)], t[key.format(old)])
    assert torch.equal(s["classifier.out_proj.weight"], t["classifier.out_proj.weight"])
    assert count_parameters(student)["non_embedding"] < count_parameters(tiny_teacher)["non_embedding"]


def test_student_keeping_all_layers_reproduces_the_teacher(tiny_teacher, tiny_tokenizer, small_texts):
    student = student_from_teacher(tiny_teacher, [0, 1, 2, 3]).eval()
    batch = tiny_tokenizer(small_texts[:4], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(student(**batch).logits, tiny_teacher(**batch).logits)
