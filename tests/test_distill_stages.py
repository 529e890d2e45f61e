"""Token task, task-agnostic stage and narrow students through `distill run`, shrunk by overrides."""

import json
from pathlib import Path

import pytest
from tiny import QUICKSTART, SMALL_UDPOS, TWO_LAYER_QUICKSTART, UDPOS_TINY
from transformers import AutoModelForTokenClassification, AutoTokenizer

from polydistill.cli import main
from polydistill.metrics_schema import metrics_problems
from polydistill.ud import UPOS_TAGS

TINY_POS = [
    "data.languages=[wol_Latn, mlt_Latn, yor_Latn]",
    *SMALL_UDPOS,
    "teacher.train.epochs=2",
    "distill.losses.minilm_relations.relation_heads=2",
    "bench.runs=3",
    "bench.warmup=1",
    "bench.seq=16",
    "bench.max_seconds=3",
]
# the quickstart recipe on English and Hausa with a 2-layer, 16-wide student
TWO_LANGUAGES = ["data.languages=[eng_Latn, hau_Latn]", *TWO_LAYER_QUICKSTART, "student.hidden_size=16"]


@pytest.fixture(scope="module")
def pos_run(tmp_path_factory, tiny_run, ud_path) -> Path:
    return tiny_run(UDPOS_TINY, *TINY_POS, data=ud_path).run(tmp_path_factory.mktemp("runs"))


@pytest.mark.slow
def test_token_task_scores_every_language_including_the_zero_shot_one(pos_run):
    m = json.loads((pos_run / "metrics.json").read_text())
    assert set(m["languages"]) == {"wol_Latn", "mlt_Latn", "yor_Latn"}  # yor: test split only
    for scores in m["languages"].values():
        assert {"teacher", "student", "student-int8-dynamic"} <= set(scores)
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert m["export"]["variants"]["int8-dynamic"]["fused_attention"] == "2/2"
    assert set(m["training"]["student"]["history"][0]) == {"epoch", "train_loss", "dev_score"}


@pytest.mark.slow
def test_token_task_scores_each_upos_tag_and_lists_every_scored_words_prediction(pos_run):
    m = json.loads((pos_run / "metrics.json").read_text())
    assert metrics_problems(m) == []
    p = m["per_class"]
    assert p["labels"] == list(UPOS_TAGS) and set(p["f1"]) == set(m["mean"])
    records = [json.loads(line) for line in (pos_run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    teacher = [r for r in records if r["model"] == "teacher"]
    assert len(teacher) == sum(m["test_sentences_per_language"].values())
    assert sum(len(r["gold"]) for r in teacher) == sum(p["support"].values())  # one tag per scored word
    for r in teacher:
        assert len(r["words"]) == len(r["gold"]) == len(r["predicted_label"])
        assert r["gold_label"] == [UPOS_TAGS[i] for i in r["gold"]]
    report = (pos_run / "report.md").read_text()
    assert "## F1 per tag" in report and "| NOUN |" in report


@pytest.mark.slow
def test_narrow_token_student_reloads_with_auto_classes(pos_run):
    path = pos_run / "checkpoints" / "student"
    model = AutoModelForTokenClassification.from_pretrained(path)
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.num_hidden_layers) == (16, 2, 2)
    assert model.config.intermediate_size == 32 and model.config.num_labels == 17
    assert AutoTokenizer.from_pretrained(path).pad_token_id == 1
    exported = json.loads((pos_run / "onnx" / "student-int8-dynamic" / "config.json").read_text())
    assert exported["architectures"] == ["XLMRobertaForTokenClassification"]


@pytest.mark.slow
def test_agnostic_stage_trains_on_relations_then_distill_continues_from_it(tmp_path, tiny_run):
    run_dir = tiny_run(QUICKSTART, *TWO_LANGUAGES).run(
        tmp_path / "runs", "agnostic.train.epochs=2",
        "agnostic.losses={minilm_relations: {weight: 1, relation_heads: 2}, hidden_mse: {weight: 1}}",
        "stages=[teacher, agnostic, distill]",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    history = m["training"]["student_agnostic"]["history"]
    assert len(history) == 2 and all(h["dev_score"] <= 0 for h in history)  # minus the dev loss
    assert (run_dir / "checkpoints" / "student_agnostic" / "model.safetensors").is_file()
    assert "student_agnostic" not in m["mean"]  # not a task model: not scored
    assert m["params"]["student"] < m["params"]["teacher"]


def test_agnostic_stage_refuses_task_losses(tmp_path, tiny_run, capsys):
    args = tiny_run(QUICKSTART).args(
        tmp_path, "stages=[teacher, agnostic, distill]", "agnostic.losses={logit_kl: {weight: 1}}"
    )
    assert main(args) == 2
    assert "'agnostic.losses' may use only the models' internals" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_parallel_targets_are_the_mean_over_each_sentences_translations():
    import numpy as np
    import torch

    from polydistill.cache import CacheSpec
    from polydistill.distill_step import parallel_targets

    logits = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0], [0.0, 0.0], [5.0, 5.0]])
    cls = torch.arange(15, dtype=torch.float32).reshape(5, 3)

    class Cache:  # polydistill.cache.TeacherCache's interface: the spec and rows by example index
        spec = CacheSpec(features=("cls", "logits"))

        def batch(self, indices, longest):
            return {"logits": logits[indices], "cls": cls[indices]}

    # examples 0 and 2 are one sentence in two languages, 1 and 3 another; 4 has no translation here
    targets = parallel_targets(Cache(), [548, 12, 548, 12, 7])
    assert np.allclose(targets["logits"], [[2, 1], [0, 2], [2, 1], [0, 2], [5, 5]])
    assert np.allclose(targets["cls"][0], (cls[0] + cls[2]) / 2) and np.allclose(targets["cls"][4], cls[4])


@pytest.mark.slow
def test_parallel_targets_change_what_the_student_learns_from(tmp_path, tiny_run, capsys):
    two_languages = tiny_run(QUICKSTART, *TWO_LANGUAGES, "stages=[teacher, distill]")
    losses = {}
    for parallel in ("false", "true"):
        run_dir = two_languages.run(tmp_path / "runs" / parallel, f"distill.parallel_targets={parallel}")
        m = json.loads((run_dir / "metrics.json").read_text())
        losses[parallel] = m["training"]["student"]["history"][0]["train_loss"]
    assert "teacher targets: each training sentence's mean over its translations" in capsys.readouterr().out
    assert losses["true"] != losses["false"]  # same seed and data: only the targets differ


def test_parallel_targets_refuse_a_token_task(tmp_path, tiny_run, ud_path, capsys):
    assert main(tiny_run(UDPOS_TINY, data=ud_path).args(tmp_path, "distill.parallel_targets=true")) == 2
    assert "'distill.parallel_targets' averages sentence outputs over translations" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
