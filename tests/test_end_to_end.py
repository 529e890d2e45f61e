"""The quickstart recipe, shrunk by overrides, runs every stage and writes the run directory."""

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import QUICKSTART, SMALL_QUICKSTART
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from polydistill.metrics_schema import SCHEMA_VERSION, metrics_problems
from polydistill.plots import PLOTS
from polydistill.scoring import drop_text

TINY = [*SMALL_QUICKSTART, "bench.max_seconds=4"]
VARIANTS = ["int8-smooth", "int8-dynamic", "int8-static", "none"]  # the first int8 one is the headline row
SCORED = {"teacher", "student", "student-int8-smooth", "student-int8-dynamic", "student-int8-static",
          "student-fp32"}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_run) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_dir = tiny_run(QUICKSTART, *TINY).run(out, f"export.variants=[{', '.join(VARIANTS)}]")
    assert (out / "quickstart-scratch" / "latest").is_symlink()
    return run_dir


@pytest.mark.slow
def test_run_directory_holds_every_artifact(run_dir):
    for name in ["recipe.yaml", "metrics.json", "report.md", "plots/accuracy_per_language.png",
                 "checkpoints/teacher/model.safetensors", "checkpoints/student/model.safetensors",
                 "onnx/student-fp32/model.onnx", "onnx/student-int8-dynamic/model.onnx",
                 "onnx/student-int8-static/model.onnx", "onnx/student-int8-static/README.md",
                 "onnx/student-int8-smooth/model.onnx",
                 "bench/results.json", "bench/results.md", "bench/pareto.png"]:  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob(".*.old"))


@pytest.mark.slow
def test_run_log_keeps_what_the_run_printed_with_its_summary(run_dir):
    log = (run_dir / "run.log").read_text(encoding="utf-8")
    assert "== stage teacher" in log and "== stage bench" in log and "\r" not in log  # no bar redraws
    summary = log[log.index("summary: mean over languages of the test accuracy") :]
    assert "student-int8-smooth" in summary and f"report: {run_dir / 'report.md'}" in summary
    assert "recommended for deployment: student-" in summary or "no export kept every language" in summary


@pytest.mark.slow
def test_metrics_have_the_documented_shape(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["languages"]) == {"eng_Latn", "yor_Latn", "amh_Ethi"}
    for scores in m["languages"].values():
        assert set(scores) == SCORED
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert set(m["mean"]) == SCORED
    assert {"teacher", "student", "teacher_non_embedding", "student_non_embedding"} <= set(m["params"])
    assert m["params"]["student_non_embedding"] < m["params"]["teacher_non_embedding"]
    assert {"teacher", "student-int8-dynamic", "student-int8-static"} <= set(m["size_mb"])
    assert set(m["latency_ms"]) == {"teacher_torch_fp32", "student-int8-smooth"}  # the headline rows
    for variant in ("teacher_torch_fp32", "student-int8-smooth"):
        assert m["latency_ms"][variant]["p90"] >= m["latency_ms"][variant]["p50"] > 0
    assert list(m["export"]["variants"]) == VARIANTS
    for v in m["export"]["variants"].values():
        assert v["fp32_max_abs_diff"] <= 1e-4
        assert v["fused_attention"] == "1/1"  # the one-layer student's attention fused by the optimizer
        assert 0.0 <= v["label_agreement"] <= 1.0
        assert set(v["languages"]) == set(m["languages"])
        assert v["flagged"] == (v["worst_drop_points"] > m["export"]["max_drop_points"])
    assert m["export"]["variants"]["none"]["label_agreement"] == 1.0  # the fp32 graph is the student
    assert m["teacher_from_scratch"] is True


def test_report_shows_the_table_and_says_the_teacher_was_trained_here(run_dir):
    report = (run_dir / "report.md").read_text()
    assert "trained from scratch in this run" in report
    assert "| yor_Latn |" in report and "**mean**" in report
    assert "![accuracy vs latency](bench/pareto.png)" in report
    assert "| length mix |" in report  # the dev sentences' real lengths were benchmarked too
    assert "## Exported variants" in report and "| int8-static | onnx/student-int8-static |" in report
    assert "student-int8-smooth (ONNX) p50" in report  # the latency headline names the variant it measured
    assert report.count("Tokenisation (timed apart") == 1 and "teacher p50" in report  # one line, each tokenizer named


def test_metrics_json_is_the_current_schema_version_and_conforms_to_it(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION and metrics_problems(m) == []


def test_per_class_counts_pool_every_languages_test_sentences(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    p, sentences = m["per_class"], m["test_sentences_per_language"]
    assert len(p["labels"]) == 7 and sum(p["support"].values()) == sum(sentences.values())
    for model in SCORED:
        counts = np.asarray(p["confusion"][model])
        pooled = sum(m["languages"][lang][model] * n for lang, n in sentences.items()) / sum(sentences.values())
        assert np.trace(counts) / counts.sum() == pytest.approx(pooled)  # the diagonal is what accuracy counts


def test_predictions_jsonl_holds_every_models_label_for_every_test_sentence(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(SCORED) * sum(m["test_sentences_per_language"].values())
    for model in SCORED:
        for lang, scores in m["languages"].items():
            mine = [r for r in records if r["model"] == model and r["language"] == lang]
            assert [r["index"] for r in mine] == list(range(m["test_sentences_per_language"][lang]))
            assert np.mean([r["gold"] == r["predicted"] for r in mine]) == pytest.approx(scores[model])
    labels = m["per_class"]["labels"]
    assert all(r["gold_label"] == labels[r["gold"]] and r["predicted_label"] == labels[r["predicted"]] for r in records)
    assert all(isinstance(r["text"], str) and r["text"] for r in records)


def test_report_shows_every_plot_and_no_transfer_section_without_zero_shot_languages(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    report = (run_dir / "report.md").read_text()
    assert sorted(m["plots"]) == sorted(PLOTS.values())
    for path in PLOTS.values():
        assert (run_dir / path).stat().st_size > 0 and f"]({path})" in report
    assert "## Cross-lingual transfer" not in report and "## F1 per topic" in report
    assert "of the teacher's accuracy" in report.split("## F1 per topic")[0]  # the 90% line, under the accuracy table


def test_console_and_report_give_each_variants_drop_the_same_sign(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    log, report = (run_dir / "run.log").read_text(encoding="utf-8"), (run_dir / "report.md").read_text()
    for variant, v in m["export"]["variants"].items():
        drop = drop_text(v["worst_drop_points"])
        assert f"{variant}: " in log and f"worst language {v['worst_language']} drop {drop} points" in log
        assert f"| {v['worst_language']} | {drop} |" in report


def test_each_exported_variant_has_a_card_with_its_own_per_language_scores(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    card = (run_dir / "onnx" / "student-int8-static" / "README.md").read_text()
    amh = m["export"]["variants"]["int8-static"]["languages"]["amh_Ethi"]
    assert f"| amh_Ethi | {amh['accuracy']:.4f} | {amh['pytorch_accuracy']:.4f} |" in card
    assert "variant **int8-static**" in card


def test_checkpoints_reload_with_auto_classes(run_dir):
    for name in ("teacher", "student"):
        path = run_dir / "checkpoints" / name
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.num_labels == 7
        assert tokenizer.pad_token_id == 1


@pytest.mark.slow
def test_prune_stage_shrinks_the_student_and_export_follows_it(tmp_path, tiny_run):
    overrides = [o for o in TINY if not o.startswith("teacher.scratch.num_heads")]
    run_dir = tiny_run(QUICKSTART, *overrides).run(
        tmp_path / "runs", "teacher.scratch.num_heads=4", "student.num_layers=2", "prune.heads=0.25", "prune.ffn=0.5",
        "prune.recover.epochs=1", "stages=[teacher, distill, prune, export]",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    assert metrics_problems(m) == [] and m["pruning"]["heads"] == 0.25
    assert {"student", "student_pruned", "student-int8-dynamic"} <= set(m["mean"])
    assert m["params"]["student_pruned"] < m["params"]["student"]
    pruned = AutoModelForSequenceClassification.from_pretrained(run_dir / "checkpoints" / "student_pruned")
    assert (pruned.config.num_attention_heads, pruned.config.hidden_size) == (3, 24)  # 4 x 8 -> 3 x 8
    assert pruned.config.intermediate_size == 32  # FFN 64 -> 32
    exported = json.loads((run_dir / "onnx" / "student-int8-dynamic" / "config.json").read_text())
    assert exported["hidden_size"] == 24
    assert m["export"]["variants"]["int8-dynamic"]["fused_attention"] == "2/2"  # uniform head pruning still fuses


def test_gate_flags_a_variant_that_drops_one_language_beyond_the_tolerance():
    import numpy as np

    from polydistill.scoring import gate_variant

    gold = {"a": np.array([0, 1, 2, 3]), "b": np.array([0, 0, 1, 1])}
    reference = {"a": np.array([0, 1, 2, 0]), "b": np.array([0, 0, 1, 1])}  # 75% and 100%
    variant = {"a": np.array([0, 1, 2, 3]), "b": np.array([0, 0, 1, 0])}  # 100% (+25) and 75% (-25)
    gate = gate_variant(variant, reference, gold, max_drop_points=1.0)
    assert gate["label_agreement"] == 6 / 8
    assert (gate["worst_language"], gate["worst_drop_points"], gate["flagged"]) == ("b", 25.0, True)
    assert gate["languages"]["a"]["drop_points"] == -25.0
    assert gate_variant(variant, reference, gold, max_drop_points=25.0)["flagged"] is False


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    from polydistill.run_state import new_run_directory

    first = new_run_directory(tmp_path, "20260101-000000")
    second = new_run_directory(tmp_path, "20260101-000000")
    assert (first.name, second.name) == ("20260101-000000", "20260101-000000-2")
