"""Recipe stage `trim`: the distilled student's vocabulary is cut to the recipe languages' pieces, and
export (and bench) follow the trimmed student with its own tokenizer while the teacher keeps its own."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tiny import QUICKSTART, SMALL_QUICKSTART, SMALL_UDPOS, THREE_LANGUAGES, UDPOS_TINY
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from polydistill.cli import main
from polydistill.errors import RecipeError
from polydistill.recipe import load_recipe

TINY = [
    *SMALL_QUICKSTART,
    "stages=[teacher, distill, trim, export, bench]",
    # the 400-piece tokenizer was trained on this very text, so min_freq 1 would keep almost every piece;
    # dropping the pieces seen once leaves some sentences tokenised differently and most the same
    "trim.min_freq=2",
    "export.variants=[int8-dynamic, none]",
    "bench.threads=1",
    "bench.max_seconds=2",
]
# the token task (UD POS) with a teacher trained one epoch
TINY_POS = [*SMALL_UDPOS, "teacher.train.epochs=1", "trim.min_freq=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run) -> Path:
    return tiny_run(QUICKSTART, *TINY).run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def load(run_dir: Path, name: str):
    path = run_dir / "checkpoints" / name
    return AutoModelForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.slow
def test_trimmed_student_has_fewer_embedding_rows_keeps_pad_id_1_and_reloads_with_auto_classes(run_dir, metrics):
    student, _ = load(run_dir, "student")
    trimmed, tokenizer = load(run_dir, "student_trimmed")
    rows = trimmed.get_input_embeddings().weight.shape[0]
    assert rows < student.get_input_embeddings().weight.shape[0] == metrics["trim"]["vocab_before"]
    assert rows == len(tokenizer) == trimmed.config.vocab_size == metrics["trim"]["vocab_after"]
    assert trimmed.config.pad_token_id == tokenizer.pad_token_id == 1
    assert trimmed.config.num_labels == 7
    assert (run_dir / "checkpoints" / "student_trimmed" / "vocab_trim.json").is_file()
    assert metrics["params"]["student_trimmed"] < metrics["params"]["student"]
    # only the word embedding shrank: everything outside the embedding tables is the student's
    assert metrics["params"]["student_trimmed_non_embedding"] == metrics["params"]["student_non_embedding"]


@pytest.mark.slow
def test_teacher_keeps_its_own_tokenizer(run_dir, metrics):
    _, tokenizer = load(run_dir, "teacher")
    assert len(tokenizer) == metrics["trim"]["vocab_before"]


@pytest.mark.slow
def test_metrics_hold_coverage_per_language_and_score_the_trimmed_student_beside_the_others(metrics):
    trim = metrics["trim"]
    for key in ("dev_coverage", "test_identical", "test_identical_agreement"):
        assert set(trim[key]) == set(THREE_LANGUAGES), key
    assert all(0.0 < v <= 1.0 for v in trim["dev_coverage"].values())
    assert any(v < 1.0 for v in trim["test_identical"].values())  # min_freq 2 changed some segmentations
    assert all(v == 1.0 for v in trim["test_identical_agreement"].values())
    assert trim["embedding_share_after"] < trim["embedding_share_before"]
    assert (trim["untrimmed"], trim["checkpoint"]) == ("student", "checkpoints/student_trimmed")
    assert {"teacher", "student", "student_trimmed", "student-int8-dynamic"} <= set(metrics["mean"])
    for scores in metrics["languages"].values():
        assert {"teacher", "student", "student_trimmed"} <= set(scores)


def test_export_follows_the_trimmed_student_and_its_tokenizer(run_dir, metrics):
    vocab_after = metrics["trim"]["vocab_after"]
    for variant in ("int8-dynamic", "fp32"):
        onnx_dir = run_dir / "onnx" / f"student-{variant}"
        assert json.loads((onnx_dir / "config.json").read_text())["vocab_size"] == vocab_after
        assert len(AutoTokenizer.from_pretrained(onnx_dir)) == vocab_after
    variants = metrics["export"]["variants"]
    assert variants["none"]["label_agreement"] == 1.0  # the fp32 graph is the trimmed student
    assert variants["none"]["fp32_max_abs_diff"] <= 1e-4
    assert variants["int8-dynamic"]["label_agreement"] >= 0.8
    for lang, v in variants["none"]["languages"].items():
        assert v["pytorch_accuracy"] == metrics["languages"][lang]["student_trimmed"]


def test_bench_times_the_trimmed_student_and_its_export(metrics):
    rows = {(r["model"], r["backend"], r["precision"]) for r in metrics["bench"]["rows"] if r["stage"] == "forward"}
    assert {("student", "torch", "fp32"), ("student_trimmed", "torch", "fp32")} <= rows
    assert ("student_trimmed", "onnxruntime", "int8-dynamic") in rows  # the exported trimmed variant's own file
    assert metrics["latency_ms"]["student-int8-dynamic"]["p50"] > 0


def test_every_checkpoint_has_a_hub_card_with_language_codes_licence_and_its_own_scores(run_dir, metrics):
    from huggingface_hub import ModelCard

    for name in ("teacher", "student", "student_trimmed"):
        card = ModelCard.load(run_dir / "checkpoints" / name / "README.md")
        assert card.data.language == ["amh", "eng", "yor"] and card.data.license == "other"  # a scratch teacher
        assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
        scores = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
        assert scores[("yor_Latn", "accuracy")] == metrics["languages"]["yor_Latn"][name]
        assert scores[("amh_Ethi", "macro-F1")] == metrics["macro_f1"]["amh_Ethi"][name]
        params, outside = metrics["params"][name], metrics["params"][f"{name}_non_embedding"]
        assert f"| parameters | {params:,} ({outside:,} outside the embedding tables) |" in card.text
        assert "AutoModelForSequenceClassification.from_pretrained(model_dir)" in card.text
    assert "own tokenizer" in (run_dir / "checkpoints" / "student_trimmed" / "README.md").read_text()
    assert not list((run_dir / "checkpoints").glob(".README.md*"))  # written atomically, nothing left over


def test_identically_tokenised_test_sentences_get_the_untrimmed_students_logits(run_dir, sib200_path):
    from polydistill.config import DataConfig
    from polydistill.data import load_task_data
    from polydistill.students.vocab import same_tokenisation

    data = load_task_data(DataConfig(path=str(sib200_path), languages=THREE_LANGUAGES, max_eval_per_language=12))
    student, old = load(run_dir, "student")
    trimmed, new = load(run_dir, "student_trimmed")
    texts = data.texts("test")
    same = [t for t, s in zip(texts, same_tokenisation(old, new, texts), strict=True) if s]
    assert len(same) >= len(texts) // 2
    with torch.no_grad():
        before = student(**old(same, padding=True, return_tensors="pt")).logits
        after = trimmed(**new(same, padding=True, return_tensors="pt")).logits
    assert torch.allclose(before, after, atol=1e-5, rtol=0)
    assert np.array_equal(before.argmax(-1).numpy(), after.argmax(-1).numpy())


def test_report_has_a_vocabulary_trimming_section_with_coverage_per_language(run_dir, metrics):
    report = (run_dir / "report.md").read_text()
    trim = metrics["trim"]
    assert "## Vocabulary trimming" in report
    assert f"- pieces: {trim['vocab_before']:,} → {trim['vocab_after']:,}" in report
    assert f"| yor_Latn | {trim['dev_coverage']['yor_Latn']:.1%} |" in report
    assert "student_trimmed acc" in report and "| student_trimmed |" in report  # scores and size tables


@pytest.mark.slow
def test_token_task_student_is_trimmed_and_a_zero_shot_language_gets_test_coverage_only(tmp_path, tiny_run, ud_path):
    run_dir = tiny_run(UDPOS_TINY, *TINY_POS, data=ud_path).run(
        tmp_path / "runs", "data.languages=[wol_Latn, mlt_Latn, yor_Latn]",
        "distill.losses.minilm_relations.relation_heads=2", "stages=[teacher, distill, trim, export]",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    trim = m["trim"]
    assert trim["vocab_after"] < trim["vocab_before"]
    assert set(trim["dev_coverage"]) == {"wol_Latn", "mlt_Latn"}  # yor_Latn has a test split only
    assert set(trim["test_identical"]) == {"wol_Latn", "mlt_Latn", "yor_Latn"}
    assert all(v in (1.0, None) for v in trim["test_identical_agreement"].values())
    assert all("student_trimmed" in scores for scores in m["languages"].values())
    assert m["export"]["variants"]["int8-dynamic"]["label_agreement"] >= 0.8
    assert "| yor_Latn | – |" in (run_dir / "report.md").read_text()


# ----------------------------------------------------------------------------------------------
# validation


def recipe(tmp_path: Path, sib200_path: Path, extra: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: t\noutput_dir: {tmp_path}/runs\ndata:\n  path: {sib200_path}\nstudent:\n  num_layers: 1\n{extra}"
    )
    return path


def test_trim_without_a_student_before_it_is_one_line_naming_the_stage(tmp_path, sib200_path, capsys):
    path = recipe(tmp_path, sib200_path, "stages: [teacher, trim, export]\n")
    with pytest.raises(RecipeError, match=r"^stage 'trim' needs a student: put 'distill' before it in 'stages'$"):
        load_recipe(path)
    assert main(["run", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'trim'" in err
    assert not (tmp_path / "runs").exists()


def test_trim_after_export_breaks_the_stage_order(tmp_path, sib200_path):
    with pytest.raises(RecipeError, match="must keep the order"):
        load_recipe(recipe(tmp_path, sib200_path, "stages: [teacher, distill, export, trim]\n"))


@pytest.mark.parametrize(
    "section, message",
    [("top_k: 0", r"'trim\.top_k' must be at least 1, got 0"), ("min_freq: 0", r"'trim\.min_freq' must be at least 1")],
)
def test_trim_settings_are_checked_before_any_work(tmp_path, sib200_path, section, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe(tmp_path, sib200_path, f"trim:\n  {section}\n"))


def test_trim_section_is_read_into_the_recipe(tmp_path, sib200_path):
    loaded = load_recipe(recipe(tmp_path, sib200_path, "stages: [teacher, distill, trim]\ntrim:\n  top_k: 5000\n"))
    assert (loaded.trim.top_k, loaded.trim.min_freq) == (5000, 1)


# ----------------------------------------------------------------------------------------------
# trimmed before distillation: the student learns on the pieces it keeps


@pytest.mark.slow
def test_trimmed_before_distillation_the_student_learns_and_ships_with_its_own_pieces(tmp_path, tiny_run):
    """Also with cls_mse: it pairs by sentence, so it crosses the two vocabularies; the teacher's vectors are
    cached once per sentence beside its logits."""
    out = tmp_path / "runs"
    tiny = [o for o in TINY if not o.startswith("stages=")]
    run_dir = tiny_run(QUICKSTART, *tiny).run(
        out, "stages=[teacher, trim, distill, export]", "distill.losses.cls_mse={weight: 1.0}"
    )
    caches = [p for p in (out / ".teacher-cache").iterdir() if not p.name.startswith(".")]
    (cache,) = [datasets.load_from_disk(str(p)) for p in caches]
    assert {"logits", "cls"} <= set(cache.column_names)
    assert len(cache[0]["cls"]) == 32  # the tiny teacher's hidden size: one vector per sentence
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["trim"]["before_distill"] is True
    student, tokenizer = load(run_dir, "student")
    rows = student.get_input_embeddings().weight.shape[0]
    assert rows == len(tokenizer) == m["trim"]["vocab_after"] < m["trim"]["vocab_before"]
    # scored once, after distillation, under its own name; no untrimmed student exists to compare with
    assert all("student" in s and "student_trimmed" not in s for s in m["languages"].values())
    assert m["params"]["student"] < m["params"]["teacher"]
    onnx_dir = run_dir / "onnx" / "student-int8-dynamic"
    assert len(AutoTokenizer.from_pretrained(onnx_dir)) == rows
    for lang, v in m["export"]["variants"]["int8-dynamic"]["languages"].items():
        assert v["pytorch_accuracy"] == m["languages"][lang]["student"]
    assert m["export"]["variants"]["int8-dynamic"]["label_agreement"] >= 0.8
    assert "Trimmed **before distillation**" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_token_task_trimmed_before_distillation_pairs_teacher_logits_word_by_word(tmp_path, tiny_run, ud_path):
    # the run finishing is the first claim: a teacher/student word-count mismatch would fail the KL's shapes
    run_dir = tiny_run(UDPOS_TINY, *TINY_POS, data=ud_path).run(
        tmp_path / "runs", "data.languages=[wol_Latn, mlt_Latn]",
        "distill.losses={logit_kl: {weight: 1.0}, cross_entropy: {weight: 0.5}}", "stages=[teacher, trim, distill]",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    # the re-segmentation really changed some sentences, so the teacher's positions differ from the student's
    assert min(m["trim"]["test_identical"].values()) < 1.0
    assert set(m["training"]["student"]) >= {"best_epoch", "history"}
    assert all(0.0 <= s["student"] <= 1.0 for s in m["languages"].values())


def test_trim_before_distill_refuses_losses_that_pair_tokens(tmp_path, sib200_path):
    extra = "stages: [teacher, trim, distill]\ndistill:\n  losses:\n    hidden_mse: {weight: 1.0}\n"
    with pytest.raises(RecipeError, match=r"'distill\.losses\.hidden_mse' compares the models token by token"):
        load_recipe(recipe(tmp_path, sib200_path, extra))


def test_trim_may_come_right_before_distill_but_not_before_the_teacher(tmp_path, sib200_path):
    loaded = load_recipe(recipe(tmp_path, sib200_path, "stages: [teacher, trim, distill, export]\n"))
    assert loaded.stages == ["teacher", "trim", "distill", "export"]
    with pytest.raises(RecipeError, match="'stages' must start with 'teacher'"):
        load_recipe(recipe(tmp_path, sib200_path, "stages: [trim, teacher, distill]\n"))
    with pytest.raises(RecipeError, match="must keep the order"):
        load_recipe(recipe(tmp_path, sib200_path, "stages: [teacher, trim, distill, trim]\n"))
