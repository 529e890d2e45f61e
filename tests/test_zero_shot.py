"""Zero-shot transfer: `data.train_languages` limits the labels the models learn from; every language is
still scored, and the report gets a languages x models transfer matrix, a heat map and collapse flags."""

import json

import pytest
from tiny import REPO

from polydistill.data import Encoded
from polydistill.errors import RecipeError
from polydistill.metrics_schema import metrics_problems
from polydistill.recipe import load_recipe
from polydistill.run_state import Run
from polydistill.scoring import COLLAPSE_BELOW, transfer_matrix

RECIPE = REPO / "recipes" / "sib200-zero-shot.yaml"
TINY = [
    "data.languages=[eng_Latn, hau_Latn, amh_Ethi]",
    "data.train_languages=[eng_Latn]",
    "data.max_train_per_language=48",
    "data.max_eval_per_language=12",
    "teacher.model=null",
    "teacher.scratch.vocab_size=400",
    "teacher.scratch.hidden_size=32",
    "teacher.scratch.num_layers=2",
    "teacher.scratch.num_heads=2",
    "teacher.scratch.intermediate_size=64",
    "teacher.train.epochs=2",
    "student.layers=[1]",
    "student.hidden_size=null",
    "student.intermediate_size=null",
    "distill.train.epochs=1",
    "stages=[teacher, distill, export]",
    "export.variants=[int8-dynamic]",
]


def test_train_languages_must_be_recipe_languages(sib200_path):
    base = [f"data.path={sib200_path}", *TINY]
    with pytest.raises(RecipeError, match="'data.train_languages' names 'fra_Latn', which is not in 'data.languages'"):
        load_recipe(RECIPE, [*base, "data.train_languages=[fra_Latn]"])
    with pytest.raises(RecipeError, match="'data.train_languages' is empty"):
        load_recipe(RECIPE, [*base, "data.train_languages=[]"])


def test_only_the_labelled_languages_examples_are_trained_and_selected_on(sib200_path, tmp_path):
    recipe = load_recipe(RECIPE, [f"data.path={sib200_path}", *TINY])
    run = Run(recipe=recipe, directory=tmp_path, data=None)
    enc = {lang: Encoded(input_ids=[[0, n, 2]], labels=[n]) for n, lang in enumerate(recipe.data.languages)}
    run.encoded = {"train": enc, "dev": enc, "test": enc}
    assert run.joined("train").labels == [0] and run.joined("dev").labels == [0]
    assert run.labelled_languages == ["eng_Latn"]
    assert run.zero_shot_languages == ["hau_Latn", "amh_Ethi"]


def test_transfer_matrix_flags_languages_under_90_percent_of_the_teacher():
    metrics = {
        "languages": {
            "eng_Latn": {"teacher": 0.80, "student": 0.80},
            "hau_Latn": {"teacher": 0.50, "student": 0.46},  # 92%: kept
            "amh_Ethi": {"teacher": 0.40, "student": 0.35},  # 87.5%: collapsed
            "wol_Latn": {"teacher": 0.00, "student": 0.10},  # no ratio to a teacher that scores 0
        },
        "mean": {"teacher": 0.425, "student": 0.4275},
        "labelled_languages": ["eng_Latn"],
        "zero_shot_languages": ["hau_Latn", "amh_Ethi", "wol_Latn"],
    }
    t = transfer_matrix(metrics)
    assert COLLAPSE_BELOW == 0.9
    assert t["collapsed"] == {"student": ["amh_Ethi"]}
    assert t["retention"]["student"]["hau_Latn"] == pytest.approx(0.92)
    assert t["retention"]["student"]["wol_Latn"] is None
    assert t["teacher_vs_source"]["hau_Latn"] == pytest.approx(0.625)
    assert t["teacher_transfer_collapsed"] == ["hau_Latn", "amh_Ethi", "wol_Latn"]


@pytest.mark.slow
def test_zero_shot_recipe_reports_the_transfer_matrix_heat_map_and_collapse_flags(tiny_run, tmp_path):
    run = tiny_run(RECIPE, *TINY).run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics_problems(metrics) == []
    assert metrics["zero_shot_languages"] == ["hau_Latn", "amh_Ethi"]
    transfer = metrics["transfer"]
    assert transfer["source_languages"] == ["eng_Latn"]
    assert set(transfer["collapsed"]) == {"student", "student-int8-dynamic"}
    assert set(transfer["retention"]["student"]) == {"eng_Latn", "hau_Latn", "amh_Ethi"}
    assert (run / transfer["plot"]).stat().st_size > 0
    report = (run / "report.md").read_text()
    assert "## Cross-lingual transfer" in report and "| hau_Latn (zero-shot) |" in report
    collapsed = [(model, lang) for model, langs in transfer["collapsed"].items() for lang in langs]
    assert report.count("**COLLAPSED** |") == len(collapsed)  # one flag per collapsed cell of the matrix
    # the teacher and student learnt from eng_Latn's 48 labelled sentences only
    assert metrics["labelled_languages"] == ["eng_Latn"] and metrics["labelled_train_examples"] == 48
