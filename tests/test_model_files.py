"""Damaged model artifacts and a run still being written: one line naming the culprit, exit code 2, no traceback,
nothing written. Every command loads a saved model through the one loader (polydistill.models.load_model_folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from polydistill.checkpoint import ResumePoint, Trainables
from polydistill.cli import main
from polydistill.errors import DistillError
from polydistill.tokenizer import train_unigram_tokenizer
from polydistill.train import FitResult

REPO = Path(__file__).resolve().parents[1]
WORDS = ["a small corpus of words", "and more text to learn pieces from", "some other sentence here"]


def _save_classifier(folder: Path, *, embedding_rows: int | None = None) -> Path:
    """A tiny XLM-R classifier with a tokenizer trained for it; `embedding_rows` below the tokenizer's size
    makes the pair inconsistent."""
    tokenizer = train_unigram_tokenizer(WORDS * 20, 60)
    config = XLMRobertaConfig(vocab_size=embedding_rows or len(tokenizer), hidden_size=16, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=32)  # fmt: skip
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _commands(model: Path, tmp_path: Path, sib200_path: Path) -> dict[str, list[str]]:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(WORDS) + "\n")
    recipe = str(REPO / "recipes" / "quickstart-scratch.yaml")
    return {
        "export": ["export", str(model), str(tmp_path / "out"), "--texts", str(texts)],
        "trim-vocab": ["trim-vocab", str(model), str(tmp_path / "out"), "--corpus", str(texts)],
        "run (teacher)": ["run", recipe, f"data.path={sib200_path}", f"teacher.model={model}",
                          f"output_dir={tmp_path / 'runs'}", "data.languages=[eng_Latn]"],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["export", "trim-vocab", "run (teacher)"])
@pytest.mark.parametrize("damage", ["truncated safetensors", "tokenizer larger than the embedding"])
def test_a_damaged_model_folder_is_one_line_exit_2_and_nothing_written(tmp_path, sib200_path, capsys, command, damage):
    if damage == "truncated safetensors":
        model = _save_classifier(tmp_path / "model")
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        message = "model.safetensors is truncated or corrupt"
    else:
        model = _save_classifier(tmp_path / "model", embedding_rows=20)
        message = "but the model's embedding only 20"
    argv = _commands(model, tmp_path, sib200_path)[command]
    before = _tree(tmp_path)
    capsys.readouterr()  # the fixture's own "Writing model shards" bar
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err and "Traceback" not in err
    assert _tree(tmp_path) == before


def _resume_point(tmp_path: Path) -> tuple[ResumePoint, Trainables]:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    parts = Trainables(model, [], optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), None)
    point = ResumePoint(tmp_path / "resume")
    point.save(parts, FitResult(-1.0, 0), None, epoch=0, step=3, running=[0.5])
    return point, parts


@pytest.mark.parametrize("file", ["optimizer.pt", "model.safetensors", "state.json"])
def test_a_damaged_resume_point_is_one_line_without_torchs_unsafe_advice(tmp_path, file):
    point, parts = _resume_point(tmp_path)
    assert point.load(parts, FitResult(-1.0, 0))[:2] == (0, 3)  # the undamaged point restores
    damaged = point.directory / file
    damaged.write_bytes(b"\x80\x04not what was written" + damaged.read_bytes()[:5])
    with pytest.raises(DistillError) as caught:
        point.load(parts, FitResult(-1.0, 0))
    message = str(caught.value)
    assert f"{damaged} is damaged" in message and "weights_only" not in message


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_resume_refuses_a_run_another_live_process_is_writing(tmp_path, sib200_path, capsys):
    """A --resume of a run whose writer still lives (here: a process holding the run's lock) is refused."""
    recipe = REPO / "recipes" / "tiny.yaml"
    args = [f"output_dir={tmp_path}", f"data.path={sib200_path}", "data.languages=[eng_Latn]",
            "data.max_train_per_language=16", "data.max_eval_per_language=7", "teacher.train.epochs=1",
            "stages=[teacher]"]  # fmt: skip
    run = tmp_path / "tiny" / "20990101-000000"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: tiny\n")  # what makes a folder a run; the lock is checked before it is read
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", str(recipe), *args, "--resume", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and "is being written by another distill process" in err
        assert [p.name for p in run.iterdir()] == ["recipe.yaml"], "the refused resume wrote into the run"
    finally:
        holder.kill()
        holder.wait()
