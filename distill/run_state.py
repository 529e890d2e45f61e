"""The state of one run and its directory: the `Run` every stage reads and fills, the checkpoint names, run
directories and the `latest` link, progress.json (what --resume restores), the environment a run records.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
import transformers
import yaml

from polydistill.benchmarks.environment import cpu_info
from polydistill.checkpoint import ResumePoint
from polydistill.config import (
    ATTN_IMPLEMENTATION,
    Recipe,
    recipe_to_dict,
)
from polydistill.data import (
    Encoded,
    TaskData,
    encode,
)
from polydistill.distributed import world
from polydistill.errors import DistillError
from polydistill.io import (
    atomic_write_json,
)
from polydistill.models import AUTO_CLASSES, load_model_folder, load_tokenizer
from polydistill.ud import encode_words

TEACHER, STUDENT, STUDENT_PRUNED = "teacher", "student", "student_pruned"


STUDENT_TRIMMED = "student_trimmed"  # the student after vocabulary trimming (stage trim)


STUDENT_AGNOSTIC = "student_agnostic"  # checkpoint after task-agnostic distillation (not scored)


# the stages every rank of a data-parallel run takes part in; the later ones (trim, export, bench) run on rank 0
TRAINING_STAGES = ("adapt", "teacher", "agnostic", "distill", "prune")


# a `Run` field that progress.json keeps for --resume; save_progress and restore_progress read this mark, so a
# field is declared persisted in one place (the models themselves live in their checkpoints)
PERSISTED = {"persisted": True}


@dataclass
class Run:
    """Everything the stages share; each stage reads what earlier ones left here."""

    recipe: Recipe
    directory: Path
    data: TaskData
    tokenizer: Any = None
    encoded: dict[str, dict[str, Encoded]] = field(default_factory=dict)  # split -> lang -> Encoded
    teacher: Any = None
    teacher_from_scratch: bool = field(default=False, metadata=PERSISTED)
    student: Any = None
    # STUDENT, or STUDENT_PRUNED / STUDENT_TRIMMED once those stages have run
    student_name: str = field(default=STUDENT, metadata=PERSISTED)
    # the checkpoints (under checkpoints/) that hold `teacher` and `student` now, for --resume
    teacher_checkpoint: str | None = field(default=None, metadata=PERSISTED)
    student_checkpoint: str | None = field(default=None, metadata=PERSISTED)
    # the student's own tokenizer and encodings once the trim stage gave it a smaller vocabulary; until then
    # it shares the teacher's: read them through `student_tokenizer` / `student_encoded`
    trimmed_tokenizer: Any = None
    trimmed_encoded: dict[str, dict[str, Encoded]] = field(default_factory=dict)
    student_layers: list[int] = field(default_factory=list, metadata=PERSISTED)
    models: dict[str, Any] = field(default_factory=dict)  # name -> model, for the size table
    onnx_dirs: dict[str, Path] = field(default_factory=dict, metadata=PERSISTED)
    # model name -> language -> predicted labels on the test split
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, metadata=PERSISTED)
    metrics: dict[str, Any] = field(default_factory=dict, metadata=PERSISTED)
    # where the stages' progress lines go (run_recipe's `say`); not persisted: a resumed run gets its own
    say: Callable[[str], None] = field(default=print, repr=False, compare=False)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def student_tokenizer(self) -> Any:
        """The tokenizer whose ids the current student reads: the teacher's until the trim stage."""
        return self.trimmed_tokenizer if self.trimmed_tokenizer is not None else self.tokenizer

    @property
    def student_encoded(self) -> dict[str, dict[str, Encoded]]:
        """`encoded` as the current student's tokenizer encodes it (split -> lang -> Encoded)."""
        return self.trimmed_encoded or self.encoded

    @property
    def student_pad_id(self) -> int:
        return self.student_tokenizer.pad_token_id

    def joined(self, split: str, *, student: bool = False) -> Encoded:
        """The labelled examples of `split` the models learn from (train) or are selected on (dev): every
        labelled language's (`data.train_languages`, default all; a language without that split adds none).
        `student`: as the student's tokenizer encodes them (differs once its vocabulary is trimmed); example i
        is the same sentence either way, so teacher outputs cached by index still pair with it."""
        labelled = self.labelled_languages
        encoded = self.student_encoded if student else self.encoded
        parts = [enc for lang, enc in encoded[split].items() if lang in labelled]
        return Encoded([x for p in parts for x in p.input_ids], [y for p in parts for y in p.labels])

    def joined_sentence_ids(self, split: str) -> list[int]:
        """The parallel-corpus sentence id (`index_id`) of each example of `joined(split)`, in its order."""
        labelled = self.labelled_languages
        ids = []
        for lang, enc in self.encoded[split].items():
            if lang not in labelled:
                continue
            ds = self.data.splits[split][lang]
            if "index_id" not in ds.column_names or len(ds) != len(enc):
                raise DistillError(f"distill.parallel_targets: the {split} split of {lang} has no index_id column")
            ids.extend(int(i) for i in ds["index_id"])
        return ids

    @property
    def labelled_languages(self) -> list[str]:
        """Languages whose train/dev labels are used; the others' test scores are zero-shot transfer."""
        chosen = self.recipe.data.train_languages
        return (
            list(chosen)
            if chosen is not None
            else [lang for lang in self.recipe.data.languages if lang in self.encoded["train"]]
        )

    @property
    def zero_shot_languages(self) -> list[str]:
        return [lang for lang in self.encoded["test"] if lang not in self.labelled_languages]

    @property
    def task(self) -> str:
        return self.recipe.data.task


PROGRESS_FILE = "progress.json"  # in a run directory: the finished stages and what `resume` needs to restore


TEACHER_ADAPTED = "teacher_adapted"  # the teacher after stage adapt, before its task fine-tuning


ADAPTED = "adapted"  # the masked-LM model stage adapt trained (distill.adapt.checkpoint_path)


LATEST = "latest"  # `resume=LATEST`: the newest unfinished run of the recipe


def output_base(output_dir: str, name: str) -> Path:
    """`output_dir/name`, created; a path in the way that is not a folder is named in a one-line error."""
    base = Path(output_dir) / name
    for path in (Path(output_dir), base):
        if path.exists() and not path.is_dir():
            raise DistillError(f"output path {path} exists and is not a directory ('output_dir')")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DistillError(f"cannot create the output folder {base}: {exc.strerror} ('output_dir')") from exc
    return base


def resume_point(run: Run, name: str) -> ResumePoint:
    """Where the training of checkpoint `name` keeps its resume state (removed once it is trained)."""
    return ResumePoint(run.directory / "checkpoints" / f".resume-{name}", every_steps=run.recipe.checkpoint_every)


def resumable_run(base: Path, resume: str | Path) -> Path:
    if str(resume) == LATEST:
        runs = (
            sorted(p for p in base.glob("*") if (p / "recipe.yaml").is_file() and not _finished(p))
            if base.is_dir()
            else []
        )
        if not runs:
            raise DistillError(f"--resume: no unfinished run under {base}")
        return runs[-1]
    directory = Path(resume)
    if not (directory / "recipe.yaml").is_file():
        raise DistillError(f"--resume: {directory} is not a run directory (it has no recipe.yaml)")
    if _finished(directory):
        raise DistillError(f"--resume: {directory} has finished; nothing to resume")
    return directory


def _finished(directory: Path) -> bool:
    path = directory / PROGRESS_FILE
    return path.is_file() and json.loads(path.read_text()).get("finished", False)


STAGE_SECTIONS = ("adapt", "agnostic", "prune", "trim", "export", "bench")  # a stage's own recipe section


def check_same_recipe(recipe: Recipe, directory: Path) -> None:
    """A run resumes only with the recipe it started with; the first differing key is named."""
    stored = yaml.safe_load((directory / "recipe.yaml").read_text(encoding="utf-8"))
    now = recipe_to_dict(recipe)
    # the section of a stage the run does not have cannot matter to it (and its defaults may have moved since)
    for stage in set(STAGE_SECTIONS) - set(recipe.stages):
        stored.pop(stage, None)
        now.pop(stage, None)
    difference = _first_difference(stored, now, "")
    if difference:
        key, before, now = difference
        raise DistillError(
            f"--resume: the recipe differs from {directory / 'recipe.yaml'} at '{key}' ({before!r} there, {now!r} now)"
        )


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    return None if a == b else (path, a, b)


def save_progress(run: Run, completed: list[str], timings: dict[str, float], *, finished: bool = False) -> None:
    """Record the finished stages and the state later stages need; models are in their checkpoints."""
    state = {
        "finished": finished,
        "completed": completed,
        "timings_s": timings,
        "trimmed": run.trimmed_tokenizer is not None,
        "models": list(run.models),
        **{f.name: _to_json(run, f.name) for f in dataclasses.fields(Run) if f.metadata.get("persisted")},
    }
    atomic_write_json(run.directory / PROGRESS_FILE, state)


def _to_json(run: Run, name: str) -> Any:
    value = getattr(run, name)
    if name == "onnx_dirs":  # relative: a run directory may be moved
        return {v: str(p.relative_to(run.directory)) for v, p in value.items()}
    if name == "predictions":
        return {m: {lang: p.tolist() for lang, p in per.items()} for m, per in value.items()}
    return value


def _from_json(run: Run, name: str, value: Any) -> Any:
    if name == "onnx_dirs":
        return {v: run.directory / p for v, p in value.items()}
    if name == "predictions":
        return {m: {lang: np.asarray(p) for lang, p in per.items()} for m, per in value.items()}
    return value


def restore_progress(run: Run) -> tuple[list[str], dict[str, float]]:
    """Rebuild `run` as the finished stages left it: models from their checkpoints, the rest from progress.json."""
    path = run.directory / PROGRESS_FILE
    if not path.is_file():  # killed before the first stage finished: start it again
        return [], {}
    state = json.loads(path.read_text())
    for f in dataclasses.fields(Run):
        if f.metadata.get("persisted"):
            setattr(run, f.name, _from_json(run, f.name, state[f.name]))
    # then the models the persisted checkpoint names point at
    if run.teacher_checkpoint:
        run.teacher, run.tokenizer = load_checkpoint(run, run.teacher_checkpoint)
        run.encoded = encode_all(run, run.tokenizer)
    for name in state["models"]:
        run.models[name] = run.teacher if name == TEACHER else load_checkpoint(run, name)[0]
    if run.student_checkpoint:
        name = run.student_checkpoint
        run.student = run.models[name] if name in run.models else load_checkpoint(run, name)[0]
    if state["trimmed"]:
        run.trimmed_tokenizer = load_checkpoint(run, STUDENT_TRIMMED, model=False)[1]
        run.trimmed_encoded = encode_all(run, run.trimmed_tokenizer)
    return list(state["completed"]), dict(state["timings_s"])


def load_checkpoint(run: Run, name: str, *, model: bool = True) -> tuple[Any, Any]:
    path = run.directory / "checkpoints" / name
    if not path.is_dir():
        raise DistillError(f"--resume: checkpoint {path} is missing; the run directory is incomplete")
    if not model:
        return None, load_tokenizer(path, "--resume")
    return load_model_folder(path, "--resume", AUTO_CLASSES[run.task], attn_implementation=ATTN_IMPLEMENTATION)


def new_run_directory(base: Path, stamp: str) -> Path:
    """base/stamp, or base/stamp-2, -3, ... when runs started in the same second (mkdir is the lock)."""
    for n in range(1, 1000):
        directory = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            continue
    raise DistillError(f"cannot create a run directory under {base}: {stamp}-1..999 all exist")


def point_latest(base: Path, directory: Path) -> None:
    link = base / "latest"
    tmp = base / f".latest.{os.getpid()}.tmp"  # per process: concurrent runs must not share it
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(directory.name)
    os.replace(tmp, link)


def encode_all(run: Run, tokenizer: Any) -> dict[str, dict[str, Encoded]]:
    """Every split of every language encoded with `tokenizer` (split -> lang -> Encoded); words a token task
    cuts off at `data.max_length` are named in `run.say`."""
    max_length = run.recipe.data.max_length
    encoded: dict[str, dict[str, Encoded]] = {}
    for split, by_lang in run.data.splits.items():
        if run.task == "token":
            encoded[split] = {
                lang: encode_words(tokenizer, ds["words"], ds["tags"], max_length) for lang, ds in by_lang.items()
            }
            dropped = {lang: enc.words_dropped for lang, enc in encoded[split].items() if enc.words_dropped}
            if dropped:
                run.say(f"{split}: words past {max_length} sub-tokens are not scored: {dropped}")
        else:
            encoded[split] = {
                lang: encode(tokenizer, ds["text"], ds["label"], max_length) for lang, ds in by_lang.items()
            }
    return encoded


def environment() -> dict[str, Any]:
    return {
        "cpu": cpu_info()["model"],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        # training processes (distill run --nproc / torchrun) and where each trained
        "processes": world().size,
        "device": world().device,
    }


def file_size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)
