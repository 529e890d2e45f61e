"""Resume: a run killed with SIGKILL at a random training step, then `distill run --resume`, ends with the
same metrics as a run never stopped; finished stages are restored, not redone."""

from __future__ import annotations

import json
import random
import signal
import subprocess

import pytest
from tiny import TINY_RECIPE, TinyRun

from polydistill.cli import main

TINY = [
    "adapt.train.epochs=2",
    "adapt.train.batch_size=16",
    "teacher.train.epochs=3",
    "teacher.train.batch_size=8",
    "distill.train.epochs=3",
    "distill.train.batch_size=8",
    "prune.heads=0.25",
    "prune.ffn=0.5",
    "prune.recover.epochs=2",
    "prune.recover.batch_size=8",
    "checkpoint_every=1",
    "stages=[adapt, teacher, distill, prune]",
]
# stage -> (the checkpoint its training writes, its progress name, epochs, steps an epoch); 96 train
# sentences in batches of 8 (adapt: of 16, labels unused)
STAGES = {
    "adapt": ("adapted", "adapt", 2, 6),
    "teacher": ("teacher", "teacher", 3, 12),
    "distill": ("student", "distill", 3, 12),
    "prune": ("student_pruned", "recover", 2, 12),
}


@pytest.fixture(scope="module")
def resumable(tiny_run) -> TinyRun:
    """The tiny recipe (two languages, 96 train sentences, a 4 x 32 teacher) with every stage that trains."""
    return tiny_run(TINY_RECIPE, *TINY)


def sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, resumable) -> dict:
    out = tmp_path_factory.mktemp("whole")
    process = resumable.start(out, stdout=subprocess.DEVNULL)
    assert process.wait() == 0, process.stderr.read()
    return json.loads((resumable.directory(out) / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_run_killed_at_a_random_step_resumes_to_the_same_metrics(stage, uninterrupted, tmp_path, resumable):
    checkpoint, desc, epochs, steps = STAGES[stage]
    rng = random.Random()
    epoch, step = rng.randrange(epochs), rng.randrange(1, steps)
    process = resumable.start(tmp_path, stdout=subprocess.DEVNULL)
    directory = resumable.kill_past(process, tmp_path, checkpoint, epoch, step, sigkill)
    state = directory / "checkpoints" / f".resume-{checkpoint}"
    assert not (directory / "metrics.json").exists()
    progress = directory / "progress.json"
    finished = json.loads(progress.read_text())["completed"] if progress.exists() else []
    assert finished == list(STAGES)[: list(STAGES).index(stage)]

    saved = json.loads((state / "state.json").read_text())  # the last resume point the killed run wrote
    resumed = resumable.start(tmp_path, "--resume", str(directory))
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert f"{desc}: resuming at epoch {saved['epoch'] + 1}, step {saved['step']}" in out  # not from scratch
    assert f"finished stages {finished or 'none'} are kept" in out
    assert not any(f"== stage {name}\n" in out for name in finished)  # finished stages are not redone
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["languages"] == uninterrupted["languages"]
    assert metrics["training"] == uninterrupted["training"]
    assert metrics["adapt"]["history"] == uninterrupted["adapt"]["history"]
    assert not (directory / "checkpoints" / f".resume-{checkpoint}").exists()  # removed once trained


@pytest.mark.slow
def test_resume_refuses_a_changed_recipe_and_a_finished_run(tmp_path, resumable, capsys):
    args = resumable.args(tmp_path, "stages=[teacher]", "teacher.train.epochs=1")
    assert main(args) == 0
    directory = resumable.directory(tmp_path)
    assert main([*args, "--resume", str(directory)]) == 2
    assert "has finished; nothing to resume" in capsys.readouterr().err
    progress = json.loads((directory / "progress.json").read_text())
    (directory / "progress.json").write_text(json.dumps({**progress, "finished": False}))
    assert main([*args, "teacher.train.epochs=2", "--resume", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "the recipe differs from" in err and "at 'teacher.train.epochs' (1 there, 2 now)" in err
    # unchanged recipe: every stage is finished, so nothing is redone and the report is written again
    assert main([*args, "--resume", str(directory)]) == 0
    assert "finished stages ['teacher'] are kept" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_trim_restores_the_trimmed_student_and_its_tokenizer(tmp_path, resumable, capsys):
    """A run stopped after stage trim (progress rolled back to that point) resumes into export with the
    trimmed student and tokenizer restored from their checkpoint, and ends with the same scores."""
    args = resumable.args(
        tmp_path, "stages=[teacher, distill, trim, export]", "trim.min_freq=2", "export.variants=[int8-dynamic]"
    )
    assert main(args) == 0
    directory = resumable.directory(tmp_path)
    whole = json.loads((directory / "metrics.json").read_text())
    progress = json.loads((directory / "progress.json").read_text())
    assert progress["completed"] == ["teacher", "distill", "trim", "export"]
    # what the run had written when trim had just finished: export's folders and the report came later
    import shutil

    shutil.rmtree(directory / "onnx")
    (directory / "metrics.json").unlink()
    rolled_back = {**progress, "finished": False, "completed": ["teacher", "distill", "trim"]}
    rolled_back["onnx_dirs"] = {}
    rolled_back["metrics"] = {k: v for k, v in progress["metrics"].items() if k != "export"}
    rolled_back["predictions"] = {k: v for k, v in progress["predictions"].items() if "onnx" not in k}
    (directory / "progress.json").write_text(json.dumps(rolled_back))
    capsys.readouterr()
    assert main([*args, "--resume", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "finished stages ['teacher', 'distill', 'trim'] are kept" in out and "== stage export" in out
    resumed = json.loads((directory / "metrics.json").read_text())
    assert resumed["languages"] == whole["languages"]
    assert resumed["trim"] == whole["trim"]
    variant = "int8-dynamic"
    exported, before = resumed["export"]["variants"][variant], whole["export"]["variants"][variant]
    assert exported["label_agreement"] == before["label_agreement"]
