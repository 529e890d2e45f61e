"""predictions.jsonl of a run directory: every scored model's label for every test example, beside the gold one.

metrics.json holds aggregates; this file is for reading the errors themselves (which sentences a student gets
wrong that the teacher got right, which words of a language every model mistags) without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.data import gold_labels
from polydistill.errors import DistillError
from polydistill.io import atomic_file
from polydistill.run_state import Run
from polydistill.scoring import per_sentence

PREDICTIONS_FILE = "predictions.jsonl"


def prediction_records(run: Run) -> Iterator[dict[str, Any]]:
    """One record per (model, language, test example), in the order of `run.predictions` and the test sets.

    A sentence task's record holds one label id and name each for gold and predicted and the sentence's text;
    a token task's holds lists, one per scored word, and those words (words cut off at data.max_length are not
    scored and not listed). `index` is the example's row in the language's test split as the run loaded it.
    """
    names = run.data.labels
    for model, per_language in run.predictions.items():
        for lang, enc in run.encoded["test"].items():
            gold, predicted = gold_labels(enc), np.asarray(per_language[lang])
            if len(predicted) != len(gold):
                raise DistillError(f"{model}/{lang}: {len(predicted)} predictions for {len(gold)} gold labels")
            test = run.data.splits["test"][lang]
            if enc.per_token:
                rows = zip(per_sentence(gold, enc), per_sentence(predicted, enc), test["words"], strict=True)
                for index, (g, p, words) in enumerate(rows):
                    yield {
                        "model": model, "language": lang, "index": index, "gold": g.tolist(),
                        "predicted": p.tolist(), "gold_label": [names[i] for i in g],
                        "predicted_label": [names[i] for i in p], "words": list(words[: len(g)]),
                    }  # fmt: skip
            else:
                for index, (g, p, text) in enumerate(zip(gold.tolist(), predicted.tolist(), test["text"], strict=True)):
                    yield {
                        "model": model, "language": lang, "index": index, "gold": g, "predicted": p,
                        "gold_label": names[g], "predicted_label": names[p], "text": text,
                    }  # fmt: skip


def write_predictions(run: Run, path: Path) -> Path:
    """Stream `prediction_records` into `path` atomically: a killed run leaves the previous file or the whole
    new one, never a file cut off mid-model that a reader would take for complete."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in prediction_records(run):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    return atomic_file(path, write)
