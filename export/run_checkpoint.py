"""What `distill export` learns when MODEL_DIR is a run's checkpoints/NAME: the run's dev sentences (the default
parity and calibration set) and, for the card, the run's languages, teacher and that model's test scores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from polydistill.config import load_data_config, read_yaml
from polydistill.errors import DistillError
from polydistill.export.card_sources import Source, teacher_card_source
from polydistill.tasks import load_data

CHECKPOINT_SCORES = "(PyTorch checkpoint)"  # how a standalone export's card labels the scores its run measured


def run_of_checkpoint(model_dir: str | Path) -> Path | None:
    """The run directory when `model_dir` is a run's checkpoints/NAME (its recipe.yaml snapshot beside
    checkpoints/), else None."""
    path = Path(model_dir).resolve()
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / "recipe.yaml").is_file() else None


@dataclass(frozen=True)
class RunRecord:
    """What a run directory knows about one of its checkpoints, for the card of its standalone export."""

    directory: Path
    languages: list[str]  # the recipe's data.languages
    metrics: dict[str, dict[str, float]] | None  # this model's test scores per language; None if not scored
    teacher: Source | None  # the run's teacher when polydistill knows its licence, else None


def run_record(model_dir: str | Path) -> RunRecord | None:
    """The languages, teacher and per-language test scores of a run's checkpoint (recipe.yaml and metrics.json of
    its run directory), so its export's card need not say "not recorded"; None outside a run."""
    run = run_of_checkpoint(model_dir)
    if run is None:
        return None
    teacher = (read_yaml(run / "recipe.yaml").get("teacher") or {}).get("model")
    return RunRecord(
        directory=run,
        languages=list(load_data_config(run / "recipe.yaml").languages),
        metrics=run_scores(run / "metrics.json", Path(model_dir).resolve().name),
        teacher=teacher_card_source(teacher),
    )


def run_scores(path: Path, model: str) -> dict[str, dict[str, float]] | None:
    """`model`'s test accuracy and macro-F1 per language from a run's metrics.json, named as what they are: the
    PyTorch checkpoint's scores, not the export's (a standalone export is not scored). None when the run has not
    written metrics.json yet or did not score that model (a run stopped early, an unscored checkpoint)."""
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DistillError(f"export: cannot read the run's {path}: {exc}") from exc
    table, f1 = m.get("languages", {}), m.get("macro_f1", {})
    scores = {
        lang: {
            f"accuracy {CHECKPOINT_SCORES}": row[model],
            **({f"macro-F1 {CHECKPOINT_SCORES}": f1[lang][model]} if model in f1.get(lang, {}) else {}),
        }
        for lang, row in table.items()
        if model in row
    }
    return scores or None


def run_dev_sentences(model_dir: str) -> tuple[Path, list[str]]:
    """(run directory, its dev sentences) when `model_dir` is a run's checkpoints/NAME: the sentences that run's
    export stage gated on, read as it read them (its recipe.yaml snapshot names data.path, the languages and
    the sample sizes). Anything else is one line asking for --texts."""
    run = run_of_checkpoint(model_dir)
    if run is None:
        raise DistillError(
            f"export: pass --texts FILE: {model_dir} is not a run's checkpoints/NAME folder, so there are no dev "
            "sentences to default to (the parity gate compares ONNX with PyTorch on real sentences)"
        )
    return run, load_data(load_data_config(run / "recipe.yaml")).texts("dev")
