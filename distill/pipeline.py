"""Run a recipe's stages in order and write one run directory.

    runs/<name>/<timestamp>/          (runs/<name>/latest points at the newest)
      recipe.yaml                     the resolved recipe
      checkpoints/teacher, student    safetensors + tokenizer, loadable with from_pretrained; every checkpoint
                                      folder gets a README.md card once its stage is over (write_checkpoint_cards)
      checkpoints/adapted             the masked-LM model after language-adaptive pretraining (stage adapt)
      checkpoints/student_trimmed     the student with a trimmed vocabulary and its own tokenizer (stage trim)
      checkpoints/teacher_adapted     the teacher after stage adapt, before fine-tuning (read by --resume)
      checkpoints/.resume-<name>/     the training state of the model being trained (see distill.checkpoint)
      onnx/student-<variant>/         one ONNX artifact directory per export variant, with its card
      progress.json                   the finished stages and the state --resume restores
      metrics.json, report.md, plots/ (distill.report; metrics.json's keys: docs/metrics-schema.md)
      predictions.jsonl               every model's label for every test example (distill.predictions)
      run.log                         everything the run printed (progress-bar redraws left out)

Each stage is a plain function of the `Run` state; the order is the recipe's `stages` list.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from polydistill.checkpoint_cards import write_checkpoint_cards
from polydistill.config import (
    STAGES,
    Recipe,
    recipe_to_dict,
)
from polydistill.console import NORMAL, QUIET, VERBOSE, third_party_quiet
from polydistill.data import (
    TaskData,
)
from polydistill.distributed import from_main, world
from polydistill.errors import DistillError
from polydistill.io import (
    RUN_LOG,
    atomic_write_text,
    console_logged,
    run_directory_lock,
)
from polydistill.report import summary_lines, write_report
from polydistill.run_state import (
    TRAINING_STAGES,
    Run,
    check_same_recipe,
    environment,
    new_run_directory,
    output_base,
    point_latest,
    restore_progress,
    resumable_run,
    save_progress,
)
from polydistill.stages.bench import stage_bench
from polydistill.stages.export import stage_export
from polydistill.stages.student import stage_agnostic, stage_distill, stage_prune
from polydistill.stages.teacher import stage_adapt, stage_teacher
from polydistill.stages.trim import stage_trim
from polydistill.tasks import load_data

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, file-size limit, quota


def run_recipe(
    recipe: Recipe,
    *,
    say: Callable[[str], None] = print,
    resume: str | Path | None = None,
    verbosity: int = NORMAL,
) -> Path:
    """Run every stage of `recipe`; returns the run directory.

    `resume`: a run directory of this same recipe (or LATEST, the newest unfinished one) to continue: its
    finished stages are restored from their checkpoints, not redone, and a stage that was interrupted
    continues from its last resume point (see distill.checkpoint), so the result equals an uninterrupted run.

    `verbosity` (distill.console): NORMAL says each stage's progress and the end summary; QUIET only the summary
    (run.log still gets every line); VERBOSE also lets transformers' and datasets' progress bars and logs
    through, which are otherwise held back for the call and restored after it.
    """
    with third_party_quiet(verbosity < VERBOSE):
        data = load_data(recipe.data)  # data errors surface before anything is written
        base = output_base(recipe.output_dir, recipe.name)
        place = world()  # in a data-parallel run rank 0 picks the directory and alone writes to it (distill.io)
        if resume is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            directory = from_main(new_run_directory(base, stamp) if place.main else None)
        else:
            directory = from_main(resumable_run(base, resume) if place.main else None)
        with (
            run_directory_lock(directory if place.main else None),
            console_logged(directory / RUN_LOG, place.main) as log_only,
        ):
            progress = log_only if verbosity == QUIET else say
            return _run_stages(recipe, data, directory, base, resumed=resume is not None, say=progress, summary=say)


def _run_stages(
    recipe: Recipe,
    data: TaskData,
    directory: Path,
    base: Path,
    *,
    resumed: bool,
    say: Callable[[str], None],
    summary: Callable[[str], None],
) -> Path:
    """The stages, the report and the summary; `say` gets the progress lines, `summary` the closing ones."""
    place = world()
    run = Run(recipe=recipe, directory=directory, data=data, say=say)
    if not resumed:
        atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        completed: list[str] = []
        timings: dict[str, float] = {}
    else:
        check_same_recipe(recipe, directory)
        completed, timings = restore_progress(run)
        say(f"resuming {directory}: finished stages {completed or 'none'} are kept")
    for name in recipe.stages:
        if name in completed:
            continue
        if not place.main and name not in TRAINING_STAGES:  # scoring, export, bench, report: rank 0's alone
            return directory
        say(f"== stage {name}")
        torch.manual_seed(recipe.seed)  # each stage starts from the same RNG state, resumed or not
        t0 = time.perf_counter()
        with _failures_named(f"stage '{name}'", directory):
            STAGE_FUNCTIONS[name](run)
            timings[name] = round(time.perf_counter() - t0, 1)
            save_progress(run, [*completed, name], timings)
            if place.main:  # the stage's checkpoints are final and its models scored: their cards can say so
                write_checkpoint_cards(run)
        completed.append(name)
    run.metrics["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
    run.metrics["environment"] = environment()
    with _failures_named("the report", directory):
        written = write_report(run)
        save_progress(run, completed, timings, finished=True)
    point_latest(base, directory)
    for line in summary_lines(written, directory):  # the metrics the report wrote: scores and sizes filled in
        summary(line)
    summary(f"run directory: {directory}")
    return directory


@contextmanager
def _failures_named(what: str, directory: Path) -> Iterator[None]:
    """Turn a DistillError, or a full disk, inside a stage into one line naming the stage and how to resume."""
    try:
        yield
    except DistillError as exc:
        raise DistillError(
            f"{what} failed: {exc} (finished stages' artifacts kept in {directory}; continue with --resume {directory})"
        ) from exc
    except Exception as exc:
        code = _disk_full(exc)
        if code is None:
            raise
        where = getattr(exc, "filename", None) or "its output"
        raise DistillError(
            f"{what} could not write {where}: {os.strerror(code)}; nothing half-written was kept: free space, "
            f"then continue with --resume {directory}"
        ) from exc


def _disk_full(exc: BaseException) -> int | None:
    """The errno of a full disk / file-size limit behind `exc`: an OSError's, or one a Rust writer (safetensors,
    tokenizers) quotes as "(os error 28)"; None for any other failure."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in DISK_FULL else None
    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found and int(found.group(1)) in DISK_FULL else None


# every stage is a plain function of the run state: it reads what earlier stages left in `run`, adds its own,
# and tells its progress to `run.say`
STAGE_FUNCTIONS: dict[str, Callable[[Run], None]] = {
    "adapt": stage_adapt,
    "teacher": stage_teacher,
    "agnostic": stage_agnostic,
    "distill": stage_distill,
    "prune": stage_prune,
    "trim": stage_trim,
    "export": stage_export,
    "bench": stage_bench,
}


assert tuple(STAGE_FUNCTIONS) == STAGES, "polydistill.config.STAGES lists the stages in their order"
