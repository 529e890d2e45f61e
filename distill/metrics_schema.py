"""The schema of a run directory's metrics.json, checkable by machine; docs/metrics-schema.md explains each key.

Two kinds of run write a metrics.json: a distillation recipe (`distill run`, distill/report.py) and an
embedding-kd recipe (distill/embed.py), told apart by the top-level `kind` ("embedding-kd"; absent for a
distillation run). `schema_version` is 1 since it was introduced; files written before it have none and are
read as version 0: the same keys, minus those that came with version 1 and the ones older runs never wrote.
A key added, renamed or given another meaning bumps SCHEMA_VERSION, so a reader can tell which shape it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
EMBEDDING_KIND = "embedding-kd"

Number = (int, float)


@dataclass(frozen=True)
class Key:
    """A top-level key: its JSON type, and the first schema version every file has it in (None: it is there only
    when the stage or the task that fills it ran)."""

    type: type | tuple[type, ...]
    required_since: int | None


DISTILL_KEYS: dict[str, Key] = {
    "schema_version": Key(int, 1),
    "languages": Key(dict, 0),
    "mean": Key(dict, 0),
    "macro_f1": Key(dict, 0),
    "mean_macro_f1": Key(dict, 0),
    "per_class": Key(dict, 1),
    "params": Key(dict, 0),
    "size_mb": Key(dict, 0),
    "teacher_from_scratch": Key(bool, 0),
    "student_layers": Key(list, 0),
    "task": Key(str, 0),
    "metric": Key(str, 0),
    "zero_shot_languages": Key(list, 0),
    "labelled_languages": Key(list, 1),  # absent from runs older than data.train_languages
    "labelled_train_examples": Key(int, 1),
    "test_sentences_per_language": Key(dict, 0),
    "teacher_source": Key(dict, None),
    "baseline": Key(dict, None),
    "transfer": Key(dict, None),
    "training": Key(dict, None),
    "adapt": Key(dict, None),
    "pruning": Key(dict, None),
    "trim": Key(dict, None),
    "export": Key(dict, None),
    "latency_ms": Key(dict, None),
    "latency_setup": Key(dict, None),
    "bench": Key(dict, None),
    "timings_s": Key(dict, 0),
    "environment": Key(dict, 0),
    "plots": Key(list, 0),
}

EMBEDDING_KEYS: dict[str, Key] = {
    "schema_version": Key(int, 1),
    "kind": Key(str, 0),
    "source_language": Key(str, 0),
    "teacher": Key(str, 0),
    "pairs": Key(dict, 0),
    "student": Key(dict, 0),
    "teacher_params": Key(int, 0),
    "retrieval": Key(dict, 0),
    "beats_tfidf": Key(dict, 0),
    "probe": Key(dict, 0),
    "training": Key(dict, 0),
    "timings_s": Key(dict, 0),
    "environment": Key(dict, 0),
}


def schema_version(m: dict[str, Any]) -> int:
    """The version a metrics dict was written under; 0 for files older than the key."""
    return m.get("schema_version", 0)


def metrics_problems(m: dict[str, Any]) -> list[str]:
    """Every way `m` departs from the schema of its kind and version, one readable line each; [] when it conforms.
    Unknown keys are problems too: a key the code writes must be documented before it ships."""
    version = schema_version(m)
    if not isinstance(version, int) or not 0 <= version <= SCHEMA_VERSION:
        return [f"schema_version {version!r}: this polydistill reads versions 0 to {SCHEMA_VERSION}"]
    embedding = m.get("kind") == EMBEDDING_KIND
    keys = EMBEDDING_KEYS if embedding else DISTILL_KEYS
    problems = _top_level_problems(m, keys, version)
    if problems:  # the deeper checks assume the top level is right
        return problems
    return _embedding_problems(m) if embedding else _distill_problems(m, version)


def _top_level_problems(m: dict[str, Any], keys: dict[str, Key], version: int) -> list[str]:
    problems = [f"unknown key '{k}'" for k in m if k not in keys]
    for name, key in keys.items():
        if name not in m:
            if key.required_since is not None and version >= key.required_since:
                problems.append(f"missing key '{name}' (every version-{version} file has it)")
        elif not _is(m[name], key.type):
            problems.append(f"'{name}' is {type(m[name]).__name__}, not {_type_name(key.type)}")
    return problems


def _distill_problems(m: dict[str, Any], version: int) -> list[str]:
    models = set(m["mean"])
    problems = []
    if m["task"] not in ("sequence", "token"):
        problems.append(f"'task' is {m['task']!r}, not 'sequence' or 'token'")
    for key in ("languages", "macro_f1"):
        problems += _score_table_problems(m[key], models, key)
    if set(m["macro_f1"]) != set(m["languages"]):
        problems.append("'macro_f1' and 'languages' name different languages")
    for key in ("mean", "mean_macro_f1"):
        problems += _shares_problems(m[key], key)
    if set(m["mean_macro_f1"]) != models:
        problems.append("'mean_macro_f1' and 'mean' name different models")
    if set(m["test_sentences_per_language"]) != set(m["languages"]):
        problems.append("'test_sentences_per_language' and 'languages' name different languages")
    if not all(isinstance(p, str) for p in m["plots"]):
        problems.append("'plots' holds something other than paths")
    if "per_class" in m:
        problems += _per_class_problems(m["per_class"], models)
    for name, result in m.get("training", {}).items():
        problems += _history_problems(result, f"training.{name}", ("epoch", "train_loss", "dev_score"))
    for variant, entry in m.get("export", {}).get("variants", {}).items():
        problems += _variant_problems(entry, m["export"].get("max_drop_points"), f"export.variants.{variant}")
    return problems


def _score_table_problems(table: dict[str, Any], models: set[str], key: str) -> list[str]:
    """language -> model -> share in [0, 1], for exactly the models of `mean`."""
    problems = []
    for lang, scores in table.items():
        if not isinstance(scores, dict) or set(scores) != models:
            problems.append(f"'{key}.{lang}' does not score exactly the models of 'mean'")
            continue
        problems += _shares_problems(scores, f"{key}.{lang}")
    return problems


def _shares_problems(scores: dict[str, Any], where: str) -> list[str]:
    return [
        f"'{where}.{name}' is {value!r}, not a number in [0, 1]"
        for name, value in scores.items()
        if not (_is(value, Number) and 0.0 <= value <= 1.0)
    ]


def _per_class_problems(p: dict[str, Any], models: set[str]) -> list[str]:
    """labels, support, f1 and confusion agree with each other: one row and column per label, row sums = support."""
    missing = [k for k in ("labels", "support", "f1", "confusion") if k not in p]
    if missing:
        return [f"'per_class' lacks {', '.join(missing)}"]
    labels, problems = p["labels"], []
    if list(p["support"]) != labels:
        problems.append("'per_class.support' does not follow 'per_class.labels'")
    if set(p["f1"]) != models or set(p["confusion"]) != models:
        problems.append("'per_class.f1' / 'per_class.confusion' do not cover exactly the models of 'mean'")
    for model, scores in p["f1"].items():
        if list(scores) != labels:
            problems.append(f"'per_class.f1.{model}' does not follow 'per_class.labels'")
        bad = [c for c, v in scores.items() if v is not None and not (_is(v, Number) and 0.0 <= v <= 1.0)]
        if bad:
            problems.append(f"'per_class.f1.{model}' has values outside [0, 1] or null: {bad}")
    for model, matrix in p["confusion"].items():
        square = len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
        if not square:
            problems.append(f"'per_class.confusion.{model}' is not {len(labels)} x {len(labels)}")
        elif [sum(row) for row in matrix] != [p["support"][c] for c in labels]:
            problems.append(f"'per_class.confusion.{model}' rows do not sum to 'per_class.support'")
    return problems


def _history_problems(result: Any, where: str, fields: tuple[str, ...]) -> list[str]:
    if not isinstance(result, dict) or not isinstance(result.get("history"), list):
        return [f"'{where}' has no 'history' list"]
    return [f"'{where}.history' epoch {h.get('epoch')!r} lacks {f}" for h in result["history"] for f in fields
            if f not in h]  # fmt: skip


VARIANT_FIELDS = ("directory", "size_mb", "label_agreement", "worst_language", "worst_drop_points", "flagged",
                  "languages")  # fmt: skip


def _variant_problems(entry: dict[str, Any], limit: Any, where: str) -> list[str]:
    """An export variant: its gate fields, and `flagged` meaning what the doc says (worst drop above the limit)."""
    missing = [f for f in VARIANT_FIELDS if f not in entry]
    if missing:
        return [f"'{where}' lacks {', '.join(missing)}"]
    if _is(limit, Number) and entry["flagged"] != (entry["worst_drop_points"] > limit):
        return [f"'{where}.flagged' disagrees with worst_drop_points {entry['worst_drop_points']} and limit {limit}"]
    return []


def _embedding_problems(m: dict[str, Any]) -> list[str]:
    problems = _history_problems(m["training"], "training", ("epoch", "train_loss", "dev_score"))
    for row, per_language in m["retrieval"].items():
        for lang, scores in per_language.items():
            if set(scores) != {"src2tgt", "tgt2src"}:
                problems.append(f"'retrieval.{row}.{lang}' is not {{src2tgt, tgt2src}}")
            else:
                problems += _shares_problems(scores, f"retrieval.{row}.{lang}")
    return problems


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not a number (JSON keeps them apart; Python's bool is an int)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
