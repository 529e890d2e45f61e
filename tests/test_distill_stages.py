"""Token task, task-agnostic stage and narrow students through `distill run`, shrunk by overrides."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer

from polydistill.cli import main
from polydistill.metrics_schema import metrics_problems
from polydistill.ud import UPOS_TAGS

REPO = Path(__file__).resolve().parents[1]

TINY_POS = [
    "data.languages=[wol_Latn, mlt_Latn, yor_Latn]",
    "data.max_train_per_language=40",
    "data.max_eval_per_language=8",
    "teacher.scratch.vocab_size=500",
    "teacher.scratch.hidden_size=32",
    "teacher.scratch.num_heads=4",
    "teacher.scratch.intermediate_size=64",
    "teacher.train.epochs=2",
    "student.hidden_size=16",  # 2 heads of the teacher's 8
    "student.intermediate_size=32",
    "distill.train.epochs=1",
    "distill.losses.minilm_relations.relation_heads=2",
    "bench.runs=3",
    "bench.warmup=1",
    "bench.seq=16",
    "bench.max_seconds=3",
]


@pytest.fixture(scope="module")
def pos_run(tmp_path_factory, ud_path) -> Path:
    out = tmp_path_factory.mktemp("runs")
    recipe = REPO / "recipes" / "udpos-tiny-student.yaml"
    assert main(["run", str(recipe), f"output_dir={out}", f"data.path={ud_path}", *TINY_POS]) == 0
    return (out / "udpos-tiny-student" / "latest").resolve()


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
def test_agnostic_stage_trains_on_relations_then_distill_continues_from_it(tmp_path, sib200_path):
    out = tmp_path / "runs"
    code = main(
        ["run", str(REPO / "recipes" / "quickstart-scratch.yaml"), f"output_dir={out}", f"data.path={sib200_path}",
         "data.languages=[eng_Latn, hau_Latn]", "data.max_train_per_language=32", "data.max_eval_per_language=8",
         "teacher.scratch.vocab_size=300", "teacher.scratch.hidden_size=32", "teacher.scratch.intermediate_size=64",
         "teacher.train.epochs=1", "student.num_layers=2", "student.hidden_size=16",
         "agnostic.train.epochs=2", "agnostic.losses={minilm_relations: {weight: 1, relation_heads: 2}, "
         "hidden_mse: {weight: 1}}", "distill.train.epochs=1",
         "stages=[teacher, agnostic, distill]"]
    )  # fmt: skip
    assert code == 0
    run_dir = (out / "quickstart-scratch" / "latest").resolve()
    m = json.loads((run_dir / "metrics.json").read_text())
    history = m["training"]["student_agnostic"]["history"]
    assert len(history) == 2 and all(h["dev_score"] <= 0 for h in history)  # minus the dev loss
    assert (run_dir / "checkpoints" / "student_agnostic" / "model.safetensors").is_file()
    assert "student_agnostic" not in m["mean"]  # not a task model: not scored
    assert m["params"]["student"] < m["params"]["teacher"]


def test_agnostic_stage_refuses_task_losses(tmp_path, sib200_path, capsys):
    code = main(
        ["run", str(REPO / "recipes" / "quickstart-scratch.yaml"), f"output_dir={tmp_path}", f"data.path={sib200_path}",
         "stages=[teacher, agnostic, distill]", "agnostic.losses={logit_kl: {weight: 1}}"]
    )  # fmt: skip
    assert code == 2
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
def test_parallel_targets_change_what_the_student_learns_from(tmp_path, sib200_path, capsys):
    out = tmp_path / "runs"
    common = ["run", str(REPO / "recipes" / "quickstart-scratch.yaml"), f"data.path={sib200_path}",
              "data.languages=[eng_Latn, hau_Latn]", "data.max_train_per_language=32", "data.max_eval_per_language=8",
              "teacher.scratch.vocab_size=300", "teacher.scratch.hidden_size=32",
              "teacher.scratch.intermediate_size=64", "teacher.train.epochs=1", "student.num_layers=2",
              "student.hidden_size=16", "distill.train.epochs=1", "stages=[teacher, distill]"]  # fmt: skip
    losses = {}
    for parallel in ("false", "true"):
        assert main([*common, f"output_dir={out / parallel}", f"distill.parallel_targets={parallel}"]) == 0
        m = json.loads(((out / parallel) / "quickstart-scratch" / "latest" / "metrics.json").read_text())
        losses[parallel] = m["training"]["student"]["history"][0]["train_loss"]
    assert "teacher targets: each training sentence's mean over its translations" in capsys.readouterr().out
    assert losses["true"] != losses["false"]  # same seed and data: only the targets differ


def test_parallel_targets_refuse_a_token_task(tmp_path, ud_path, capsys):
    code = main(["run", str(REPO / "recipes" / "udpos-tiny-student.yaml"), f"output_dir={tmp_path}",
                 f"data.path={ud_path}", "distill.parallel_targets=true"])  # fmt: skip
    assert code == 2
    assert "'distill.parallel_targets' averages sentence outputs over translations" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
