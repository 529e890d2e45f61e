"""metrics.json's schema (distill/metrics_schema.py) holds for every committed run, and says what is wrong when not."""

import copy
import json
import re
from pathlib import Path

import pytest

from polydistill.metrics_schema import DISTILL_KEYS, EMBEDDING_KEYS, SCHEMA_VERSION, metrics_problems, schema_version

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "benchmarks" / "results").rglob("metrics.json"))
DOC = REPO / "docs" / "metrics-schema.md"


def test_there_are_committed_runs_of_both_kinds_to_check():
    kinds = {json.loads(p.read_text()).get("kind", "distill") for p in COMMITTED}
    assert kinds == {"distill", "embedding-kd"} and len(COMMITTED) >= 13


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO / "benchmarks" / "results")))
def test_every_committed_metrics_json_conforms_to_its_schema_version(path):
    m = json.loads(path.read_text())
    assert schema_version(m) in range(SCHEMA_VERSION + 1)
    assert metrics_problems(m) == []


def committed(name: str) -> dict:
    return json.loads((REPO / "benchmarks" / "results" / "recipe-runs" / name / "metrics.json").read_text())


def test_an_old_file_without_a_version_is_read_as_version_0_and_lacks_the_version_1_keys():
    m = committed("sib200-tiny-student")
    assert schema_version(m) == 0 and "per_class" not in m and "labelled_languages" not in m
    assert metrics_problems(m) == []
    m["schema_version"] = 1  # the same file claiming version 1 is missing what version 1 always has
    assert "missing key 'per_class' (every version-1 file has it)" in metrics_problems(m)


def test_unknown_keys_wrong_types_and_out_of_range_scores_are_named():
    m = committed("sib200-zero-shot")
    m["surprise"] = 1
    m["teacher_from_scratch"] = "yes"
    assert metrics_problems(m) == ["unknown key 'surprise'", "'teacher_from_scratch' is str, not bool"]
    m = committed("sib200-zero-shot")
    m["languages"]["eng_Latn"]["student"] = 70.1  # a percentage where a share belongs
    m["mean"]["student"] = True
    assert metrics_problems(m) == [
        "'languages.eng_Latn.student' is 70.1, not a number in [0, 1]",
        "'mean.student' is True, not a number in [0, 1]",
    ]


def test_a_future_version_is_refused_rather_than_misread():
    m = {**committed("sib200-zero-shot"), "schema_version": SCHEMA_VERSION + 1}
    assert metrics_problems(m) == [f"schema_version {SCHEMA_VERSION + 1}: this polydistill reads versions 0 to 1"]


def test_per_class_counts_must_agree_with_their_labels_and_support():
    m = committed("sib200-zero-shot")
    m["schema_version"] = 1
    m["labelled_languages"], m["labelled_train_examples"] = ["eng_Latn"], 48
    models, labels = list(m["mean"]), ["a", "b"]
    m["per_class"] = {
        "labels": labels,
        "support": {"a": 3, "b": 1},
        "f1": {x: {"a": 0.8, "b": None} for x in models},
        "confusion": {x: [[2, 1], [1, 0]] for x in models},
    }
    assert metrics_problems(m) == []
    broken = copy.deepcopy(m)
    broken["per_class"]["confusion"]["student"] = [[2, 1], [0, 0]]
    assert metrics_problems(broken) == ["'per_class.confusion.student' rows do not sum to 'per_class.support'"]
    broken = copy.deepcopy(m)
    broken["per_class"]["f1"]["teacher"]["a"] = 1.5
    assert metrics_problems(broken) == ["'per_class.f1.teacher' has values outside [0, 1] or null: ['a']"]


def test_a_flag_that_contradicts_the_drop_and_the_gate_is_caught():
    m = committed("sib200-zero-shot")
    variant = m["export"]["variants"]["int8-dynamic"]
    variant["flagged"] = not variant["flagged"]
    assert len(metrics_problems(m)) == 1 and "flagged' disagrees" in metrics_problems(m)[0]


def test_the_document_describes_every_top_level_key_of_both_kinds():
    doc = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc, flags=re.MULTILINE))
    assert set(DISTILL_KEYS) | set(EMBEDDING_KEYS) <= documented
    assert f"`schema_version`: {SCHEMA_VERSION}" in doc
