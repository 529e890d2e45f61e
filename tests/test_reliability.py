"""Faults: NaN/inf losses, pickle checkpoints, a full disk, and kills while artifacts are written."""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from tiny import ONE_THREAD, QUICKSTART, TINY_RECIPE

from polydistill.checkpoint import ResumePoint
from polydistill.cli import main
from polydistill.config import TrainConfig
from polydistill.data import Encoded
from polydistill.train import FitSetup, NonFiniteLoss, fit


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(input_ids).mean(1))


def nan_at(calls: set[int]):
    """A step loss that is NaN on the given (1-based) calls and a real cross-entropy otherwise."""
    seen = []

    def step(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: dict[str, float]):
        seen.append(1)
        loss = torch.nn.functional.cross_entropy(model(batch["input_ids"]), batch["labels"])
        if len(seen) in calls:
            loss = loss * float("nan")
        return loss * share["logits"], {"cross_entropy": float(loss.detach())}

    return step


DATA = Encoded(input_ids=[[0, i % 9 + 1, 2] for i in range(16)], labels=[i % 2 for i in range(16)])


def test_nonfinite_loss_stops_naming_the_step_the_terms_and_the_last_good_state(tmp_path):
    resume = ResumePoint(tmp_path / "state", every_steps=1)
    with pytest.raises(NonFiniteLoss) as caught:
        setup = FitSetup("teacher", pad_id=0, seed=0, resume=resume)
        fit(Tiny(), DATA, nan_at({3}), TrainConfig(epochs=1, batch_size=4), setup, evaluate=lambda m: 0.0,
            on_best=lambda m: None)  # fmt: skip
    message = str(caught.value)
    assert "teacher: non-finite loss nan at epoch 1, step 3 (loss terms: cross_entropy nan)" in message
    assert f"last good training state: {resume.directory} (continue with --resume)" in message
    assert json.loads((resume.directory / "state.json").read_text())["step"] == 2  # the state before step 3


def test_nonfinite_batches_are_skipped_and_counted_when_the_recipe_allows_it():
    result = fit(Tiny(), DATA, nan_at({2, 5}), TrainConfig(epochs=2, batch_size=4, skip_nonfinite=2),
                 FitSetup("distill", pad_id=0, seed=0), evaluate=lambda m: 0.5, on_best=lambda m: None)  # fmt: skip
    assert result.skipped_batches == 2
    with pytest.raises(NonFiniteLoss, match="2 such batches may be skipped"):
        fit(Tiny(), DATA, nan_at({2, 5, 6}), TrainConfig(epochs=2, batch_size=4, skip_nonfinite=2),
            FitSetup("distill", pad_id=0, seed=0), evaluate=lambda m: 0.5, on_best=lambda m: None)  # fmt: skip


def test_pickle_only_checkpoint_is_refused_with_the_conversion_command(tmp_path, capsys, tiny_run):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification(XLMRobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))  # fmt: skip
    model.config.save_pretrained(tmp_path / "pickled")
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    (tmp_path / "texts.txt").write_text("a sentence\n")
    assert (
        main(["export", str(tmp_path / "pickled"), str(tmp_path / "out"), "--texts", str(tmp_path / "texts.txt")]) == 2
    )
    err = capsys.readouterr().err
    assert "has only pickle weights (pytorch_model.bin), which polydistill does not load" in err
    assert "save_pretrained" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert main(["bench", str(tmp_path / "pickled")]) == 2
    assert "bench: " in (err := capsys.readouterr().err) and "has only pickle weights" in err
    args = tiny_run(QUICKSTART, f"teacher.model={tmp_path / 'pickled'}").args(tmp_path / "runs")
    assert main(args) == 2  # refused at validation, before a run directory exists
    assert "'teacher.model': " in (err := capsys.readouterr().err) and "has only pickle weights" in err
    assert not (tmp_path / "runs").exists()


TINY_RUN = [
    "data.languages=[eng_Latn]",
    "data.max_train_per_language=32",
    "data.max_eval_per_language=8",
    "teacher.train.epochs=1",
    "stages=[teacher]",
]


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_leaves_a_resumable_run(tmp_path, tiny_run):
    teacher_only = tiny_run(TINY_RECIPE, *TINY_RUN)
    command = [sys.executable, "-m", "polydistill", *teacher_only.args(tmp_path)]

    def small_files() -> None:  # any file over 64 KB fails with EFBIG, as on a full disk (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    full = subprocess.run(command, env=ONE_THREAD, preexec_fn=small_files, capture_output=True, text=True)
    assert full.returncode == 2, full.stderr
    (line,) = full.stderr.strip().splitlines()[-1:]
    assert line.startswith("distill: error: stage 'teacher' could not write ") and "File too large" in line
    directory = teacher_only.directory(tmp_path)
    assert not any(p.name.endswith(".tmp") for p in directory.rglob("*")), "a half-written temporary was left"
    assert not (directory / "checkpoints" / "teacher").exists()
    resumed = subprocess.run([*command, "--resume", str(directory)], env=ONE_THREAD, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (directory / "checkpoints" / "teacher" / "model.safetensors").is_file()
    score = json.loads((directory / "metrics.json").read_text())["languages"]["eng_Latn"]["teacher"]
    assert 0 <= score <= 1 and (score * 8).is_integer()  # an accuracy over the 8 test sentences the run scored


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from polydistill.io import atomic_directory, atomic_write_text

    kind, target = sys.argv[1], Path(sys.argv[2])
    if kind == "checkpoint":  # a model + tokenizer folder, every weight equal to the version number
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
        from polydistill.io import save_pretrained_atomic
        from polydistill.tokenizer import train_unigram_tokenizer

        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(
            vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128))
        tokenizer = train_unigram_tokenizer(["some words to train a small tokenizer on"] * 50, 60)
    version = 0
    while True:  # rewrite the artifact forever, until killed
        version += 1
        text = (str(version) + "\\n") * 500_000  # 4 MB a version
        if kind == "file":
            atomic_write_text(target, text)
        elif kind == "checkpoint":
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(version)
            save_pretrained_atomic(model, tokenizer, target)
        else:
            def write(tmp, text=text):
                (tmp / "a.txt").write_text(text)
                (tmp / "b.txt").write_text(text)
            atomic_directory(target, write)
        print(version, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "directory", "checkpoint"])
def test_sigkill_while_an_artifact_is_written_leaves_a_whole_old_or_new_version(kind, tmp_path):
    """metrics.json, report.md, plots and cards are written by atomic_file; checkpoints, tokenizers and ONNX
    folders by atomic_directory: kill each at random moments and read back a whole version every time."""
    target = tmp_path / ("artifact.txt" if kind == "file" else "artifact")
    if kind == "checkpoint":
        for _ in range(3):
            process = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], env=ONE_THREAD,
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert process.stdout.readline().strip() == "1"
            time.sleep(random.uniform(0.0, 0.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            model = AutoModelForSequenceClassification.from_pretrained(target)
            values = {float(v) for p in model.parameters() for v in p.detach().unique()}
            assert len(values) == 1  # every weight from one version: a whole checkpoint, not a mix
            assert AutoTokenizer.from_pretrained(target).pad_token_id == 1
        return
    for _ in range(5):
        process = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], env=ONE_THREAD,
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert process.stdout.readline().strip() == "1"  # one whole version is on disk before the kill
        time.sleep(random.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        files = [target] if kind == "file" else [target / "a.txt", target / "b.txt"]
        texts = [f.read_text() for f in files]
        lines = set(texts[0].splitlines())
        assert len(lines) == 1 and len(texts[0]) == len(next(iter(lines))) * 500_000 + 500_000  # whole, one version
        assert all(t == texts[0] for t in texts)  # a folder's files all come from the same version


def test_a_tokenizer_larger_than_the_models_embedding_is_named(tmp_path, capsys, tiny_run):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from polydistill.tokenizer import train_unigram_tokenizer

    folder = tmp_path / "mismatched"
    config = XLMRobertaConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32)  # fmt: skip
    XLMRobertaForSequenceClassification(config).save_pretrained(folder)  # 2 labels: SIB's 7 get a fresh head
    train_unigram_tokenizer(["a small corpus of words"] * 20 + ["and more text"] * 20, 40).save_pretrained(folder)
    assert main(tiny_run(QUICKSTART, f"teacher.model={folder}").args(tmp_path / "runs")) == 2
    assert "but the model's embedding only 10" in capsys.readouterr().err


def test_an_empty_language_split_is_named(tmp_path, capsys, sib200_path, tiny_run):
    root = tmp_path / "sib"
    for lang in ("eng_Latn", "hau_Latn"):
        (root / lang).mkdir(parents=True)
        for f in (sib200_path / "data" / lang).iterdir():
            (root / lang / f.name).write_bytes(f.read_bytes())
    test = root / "hau_Latn" / "test.tsv"
    test.write_text(test.read_text().splitlines()[0] + "\n")
    args = tiny_run(QUICKSTART, "data.languages=[eng_Latn, hau_Latn]", data=root).args(tmp_path / "runs")
    assert main(args) == 2
    assert f"empty split: {test} has no rows" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # found before anything was written
