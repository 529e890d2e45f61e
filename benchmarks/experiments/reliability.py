"""Every fault and bad input of the reliability issue, tried through the real `distill` command line.

    python -m polydistill.benchmarks.experiments.reliability --out benchmarks/results/reliability

Each case runs `python -m polydistill ...` in a fresh process (tiny recipes, a scratch folder), and records the
exit code, the last line the user saw on stderr, how many lines stderr had, and what was left on disk:
no half-written artifact (no `*.tmp`), and for faults, that the run could be continued or its files read.
Writes `reliability.json` and `reliability.md` with this command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polydistill.benchmarks.outputs import command_line, write_results

REPO = Path(__file__).resolve().parents[2]
DATA_ROOT = Path(os.environ.get("POLYDISTILL_DATA", REPO.parent / "shared" / "data"))
RECIPE = str(REPO / "recipes" / "tiny.yaml")  # the quickstart shrunk: runs in seconds
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY = [
    "teacher.train.epochs=2",
    "teacher.train.batch_size=8",
    "distill.train.epochs=2",
    "distill.train.batch_size=8",
    "checkpoint_every=1",
    "stages=[teacher, distill]",
]


def distill(*args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "polydistill", *args], env=ENV, capture_output=True, text=True, preexec_fn=limit
    )


def torn(folder: Path) -> list[str]:
    """Temporary files or folders a writer left behind (a killed process may leave its own; nothing else may)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name) if folder.exists() else []


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what a command must leave as it found it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def lost(before: dict[str, bytes], folder: Path) -> list[str]:
    """Files that were under `folder` before a command and are gone or changed after it."""
    after = snapshot(folder)
    return sorted(name for name, data in before.items() if after.get(name) != data)


def outcome(result: subprocess.CompletedProcess, out: Path, **extra: Any) -> dict[str, Any]:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return {
        "exit_code": result.returncode,
        "message": lines[-1] if lines else "",
        "error_lines": sum(line.startswith("distill: error:") for line in lines),
        "traceback": "Traceback (most recent call last)" in result.stderr,
        "files_written": sum(1 for p in out.rglob("*") if p.is_file()) if out.exists() else 0,
        "half_written": torn(out),
        "files_lost": [],
        **extra,
    }


def guarded(tmp: Path, *args: str) -> dict[str, Any]:
    """`distill ARGS` with everything under `tmp` snapshotted first: any file it deletes or changes is lost."""
    before = snapshot(tmp)
    result = distill(*args)
    return outcome(result, tmp / "runs", files_lost=lost(before, tmp))


def run_dirs(out: Path, name: str = "tiny") -> list[Path]:
    base = out / name
    return sorted(p for p in base.iterdir() if p.name != "latest") if base.is_dir() else []


# ----------------------------------------------------------------------------------------------
# the cases: each takes a scratch folder and returns its outcome


def malformed_yaml(tmp: Path) -> dict[str, Any]:
    bad = tmp / "broken.yaml"
    bad.write_text("name: broken\nstages: [teacher, distill\ndata:\n  path: x\n")
    return outcome(distill("run", str(bad)), tmp / "runs")


def override(*overrides: str) -> Callable[[Path], dict[str, Any]]:
    def case(tmp: Path) -> dict[str, Any]:
        data = f"data.path={DATA_ROOT / 'sib-200'}"
        return guarded(tmp, "run", RECIPE, f"output_dir={tmp / 'runs'}", data, *overrides)

    return case


def vocabulary_mismatch(tmp: Path) -> dict[str, Any]:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from polydistill.tokenizer import train_unigram_tokenizer

    tokenizer = train_unigram_tokenizer(["a small corpus of words for a tokenizer"] * 50 + ["more text here"] * 50, 40)
    config = XLMRobertaConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32)  # fmt: skip
    folder = tmp / "mismatched"
    XLMRobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return override(f"teacher.model={folder}")(tmp)


def copy_language(tmp: Path, edit: Callable[[Path], None]) -> Path:
    root = tmp / "sib"
    for lang in ("eng_Latn", "hau_Latn"):
        source, target = DATA_ROOT / "sib-200" / "data" / lang, root / lang
        target.mkdir(parents=True)
        for f in source.iterdir():
            (target / f.name).write_bytes(f.read_bytes())
    edit(root)
    return root


def unknown_label(tmp: Path) -> dict[str, Any]:
    def edit(root: Path) -> None:
        path = root / "hau_Latn" / "train.tsv"
        lines = path.read_text().splitlines()
        index_id, _, text = lines[5].split("\t", 2)
        lines[5] = f"{index_id}\tcooking\t{text}"
        path.write_text("\n".join(lines) + "\n")

    root = copy_language(tmp, edit)
    return override(f"data.path={root}", "data.languages=[eng_Latn, hau_Latn]")(tmp)


def empty_split(tmp: Path) -> dict[str, Any]:
    def edit(root: Path) -> None:
        path = root / "hau_Latn" / "test.tsv"
        path.write_text(path.read_text().splitlines()[0] + "\n")

    root = copy_language(tmp, edit)
    return override(f"data.path={root}", "data.languages=[eng_Latn, hau_Latn]")(tmp)


def output_dir_is_a_file(tmp: Path) -> dict[str, Any]:
    (tmp / "a-file").write_text("not a folder\n")
    data = f"data.path={DATA_ROOT / 'sib-200'}"
    return outcome(distill("run", RECIPE, f"output_dir={tmp / 'a-file'}", data, *TINY), tmp / "runs")


def pickle_checkpoint(tmp: Path) -> dict[str, Any]:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32)  # fmt: skip
    folder = tmp / "pickled"
    config.save_pretrained(folder)
    torch.save(XLMRobertaForSequenceClassification(config).state_dict(), folder / "pytorch_model.bin")
    return override(f"teacher.model={folder}")(tmp)


def remote_code(tmp: Path) -> dict[str, Any]:
    folder = tmp / "remote"
    folder.mkdir()
    config = {"model_type": "custom-thing", "auto_map": {"AutoConfig": "modeling.CustomConfig"}, "architectures": []}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling.py").write_text("raise SystemExit('this code must never run')\n")
    (folder / "model.safetensors").write_bytes(b"")
    return override(f"teacher.model={folder}")(tmp)


def nonfinite_loss(tmp: Path) -> dict[str, Any]:
    # an absurd learning rate: the weights overflow within a few steps, and the loss turns NaN/inf
    return override(*TINY, "teacher.train.lr=1.0e+30", "teacher.train.max_grad_norm=1.0e+30")(tmp)


def disk_full(tmp: Path) -> dict[str, Any]:
    data = f"data.path={DATA_ROOT / 'sib-200'}"
    args = ["run", RECIPE, f"output_dir={tmp / 'runs'}", data, *TINY]
    full = distill(*args, limit_bytes=64 * 1024)  # every file over 64 KB fails, as on a full disk
    result = outcome(full, tmp / "runs")
    (directory,) = run_dirs(tmp / "runs")
    resumed = distill(*args, "--resume", str(directory))
    result["then"] = f"`--resume` with space again: exit code {resumed.returncode}"
    result["resumed_ok"] = resumed.returncode == 0 and (directory / "metrics.json").is_file()
    return result


def killed_and_resumed(tmp: Path) -> dict[str, Any]:
    """SIGKILL in the middle of distillation, resume, compare with a run never stopped."""
    data = f"data.path={DATA_ROOT / 'sib-200'}"
    whole = distill("run", RECIPE, f"output_dir={tmp / 'whole'}", data, *TINY)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((run_dirs(tmp / "whole")[0] / "metrics.json").read_text())
    args = [sys.executable, "-m", "polydistill", "run", RECIPE, f"output_dir={tmp / 'runs'}", data, *TINY]
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline and process.poll() is None:
        dirs = run_dirs(tmp / "runs")
        try:
            state = (
                json.loads((dirs[0] / "checkpoints" / ".resume-student" / "state.json").read_text()) if dirs else None
            )
        except (OSError, ValueError):
            state = None
        if state and state["epoch"] * 1000 + state["step"] >= 1005:  # epoch 2, step 5 of distillation
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    (directory,) = run_dirs(tmp / "runs")
    resumed = distill("run", RECIPE, f"output_dir={tmp / 'runs'}", data, *TINY, "--resume", str(directory))
    metrics = json.loads((directory / "metrics.json").read_text())
    return {
        "exit_code": process.returncode,
        "message": f"killed at distillation epoch {state['epoch'] + 1}, step {state['step']}"
        if state
        else "not killed",
        "traceback": False,
        "files_written": sum(1 for p in directory.rglob("*") if p.is_file()),
        "half_written": [],
        "then": f"`--resume`: exit code {resumed.returncode}",
        "same_metrics_as_uninterrupted": metrics["languages"] == expected["languages"]
        and metrics["training"] == expected["training"],
    }


def saved_student(tmp: Path) -> Path:
    """A small trained-shape classifier folder, as a run's checkpoints/student is."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    from polydistill.io import save_pretrained_atomic
    from polydistill.tokenizer import train_unigram_tokenizer

    tokenizer = train_unigram_tokenizer(["a small corpus of words for a tokenizer"] * 50 + ["more text here"] * 50, 40)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, num_labels=2)  # fmt: skip
    config.architectures = ["XLMRobertaForSequenceClassification"]
    return save_pretrained_atomic(XLMRobertaForSequenceClassification(config), tokenizer, tmp / "work" / "student")


def texts_file(tmp: Path) -> Path:
    path = tmp / "texts.txt"
    path.write_text("a small corpus of words\nmore text here\n")
    return path


def export_into(where: Callable[[Path, Path], Path]) -> Callable[[Path], dict[str, Any]]:
    """`distill export MODEL OUT` with OUT chosen relative to the model folder, beside a user's own files."""

    def case(tmp: Path) -> dict[str, Any]:
        model = saved_student(tmp)
        (tmp / "work" / "NOTES.txt").write_text("the user's own notes\n")
        (tmp / "work" / "data").mkdir()
        (tmp / "work" / "data" / "keep.tsv").write_text("a\tb\n")
        return guarded(tmp, "export", str(model), str(where(tmp, model)), "--texts", str(texts_file(tmp)))

    return case


def trim_into_parent(tmp: Path) -> dict[str, Any]:
    model = saved_student(tmp)
    (tmp / "work" / "NOTES.txt").write_text("the user's own notes\n")
    return guarded(tmp, "trim-vocab", str(model), str(model.parent), "--corpus", str(texts_file(tmp)))


def broken_split(edit: Callable[[list[bytes]], None]) -> Callable[[Path], dict[str, Any]]:
    """A copy of eng_Latn + hau_Latn whose hau_Latn/train.tsv lines get `edit`ed (bytes, line 1 the header)."""

    def case(tmp: Path) -> dict[str, Any]:
        def change(root: Path) -> None:
            path = root / "hau_Latn" / "train.tsv"
            lines = path.read_bytes().splitlines(keepends=True)
            edit(lines)
            path.write_bytes(b"".join(lines))

        root = copy_language(tmp, change)
        return override(f"data.path={root}", "data.languages=[eng_Latn, hau_Latn]", *TINY)(tmp)

    return case


def labels_edit(edit: Callable[[bytes], bytes]) -> Callable[[Path], dict[str, Any]]:
    def case(tmp: Path) -> dict[str, Any]:
        def change(root: Path) -> None:
            for lang in ("eng_Latn", "hau_Latn"):  # the first language's labels.txt is the label set
                path = root / lang / "labels.txt"
                path.write_bytes(edit(path.read_bytes()))

        root = copy_language(tmp, change)
        return override(f"data.path={root}", "data.languages=[eng_Latn, hau_Latn]", *TINY, "stages=[teacher]")(tmp)

    return case


def truncated_teacher(tmp: Path) -> dict[str, Any]:
    model = saved_student(tmp)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return override(f"teacher.model={model}")(tmp)


def damaged_resume_point(tmp: Path) -> dict[str, Any]:
    """A run killed after its first resume point, whose optimizer.pt is then overwritten with junk."""
    data = f"data.path={DATA_ROOT / 'sib-200'}"
    args = ["run", RECIPE, f"output_dir={tmp / 'runs'}", data, *TINY]
    process = subprocess.Popen([sys.executable, "-m", "polydistill", *args], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        dirs = run_dirs(tmp / "runs")
        if dirs and (dirs[0] / "checkpoints" / ".resume-teacher" / "optimizer.pt").is_file():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    (directory,) = run_dirs(tmp / "runs")
    (directory / "checkpoints" / ".resume-teacher" / "optimizer.pt").write_bytes(b"\x80\x04junk")
    return guarded(tmp, *args, "--resume", str(directory))


def resume_while_running(tmp: Path) -> dict[str, Any]:
    """--resume of a run another live process is still writing (started, then a second process resumes it)."""
    data = f"data.path={DATA_ROOT / 'sib-200'}"
    args = ["run", RECIPE, f"output_dir={tmp / 'runs'}", data, *TINY, "teacher.train.epochs=50"]
    process = subprocess.Popen([sys.executable, "-m", "polydistill", *args], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (
            run_dirs(tmp / "runs") and (run_dirs(tmp / "runs")[0] / "recipe.yaml").is_file()
        ):
            time.sleep(0.01)
        time.sleep(2)  # the first process is past loading and training
        return outcome(distill(*args, "--resume", "latest"), tmp / "runs")
    finally:
        process.kill()
        process.wait()


def duplicated_key(tmp: Path) -> dict[str, Any]:
    recipe = tmp / "twice.yaml"
    recipe.write_text(Path(RECIPE).read_text() + "\nseed: 3\n")
    return guarded(tmp, "run", str(recipe), f"output_dir={tmp / 'runs'}", f"data.path={DATA_ROOT / 'sib-200'}")


CASES: list[tuple[str, str, Callable[[Path], dict[str, Any]]]] = [
    ("malformed YAML", "a recipe with an unclosed list", malformed_yaml),
    ("misspelt key", "distill.train.epoch=3", override("distill.train.epoch=3")),
    ("wrong type", "teacher.train.batch_size=large", override("teacher.train.batch_size=large")),
    ("unknown language code", "data.languages=[eng_Latn, hau_Latm]", override("data.languages=[eng_Latn, hau_Latm]")),
    ("missing data path", "data.path=/nonexistent/sib-200", override("data.path=/nonexistent/sib-200")),
    ("missing model dir", "teacher.model=/nonexistent/model", override("teacher.model=/nonexistent/model")),
    ("tokenizer/model vocabulary mismatch", "a trained tokenizer beside a 10-row embedding", vocabulary_mismatch),
    ("label not in the label set", "one hau_Latn train row labelled 'cooking'", unknown_label),
    ("empty language split", "hau_Latn/test.tsv with its header only", empty_split),
    ("output dir is a file", "output_dir=<a file>", output_dir_is_a_file),
    ("pickle-only checkpoint", "teacher.model=<folder with pytorch_model.bin only>", pickle_checkpoint),
    ("remote code", "teacher.model=<folder whose config needs its own modeling.py>", remote_code),
    ("NaN/inf loss", "teacher.train.lr=1e30", nonfinite_loss),
    ("no disk space while checkpointing", "every file over 64 KB fails (RLIMIT_FSIZE)", disk_full),
    ("SIGKILL during distillation", "kill -9 at distillation epoch 2, step 5; then --resume", killed_and_resumed),
    # second round (issue 17): data loss
    (
        "export into a folder with the user's files",
        "distill export MODEL work/ (beside NOTES.txt, data/)",
        export_into(lambda tmp, model: tmp / "work"),
    ),
    ("export onto its own input", "distill export MODEL MODEL", export_into(lambda tmp, model: model)),
    (
        "export into a non-empty folder",
        "distill export MODEL work/data",
        export_into(lambda tmp, model: tmp / "work" / "data"),
    ),
    ("trim-vocab into the model's parent", "distill trim-vocab MODEL work/", trim_into_parent),
    # values validate once accepted
    *[
        (f"out of range: {o}", o, override(o))
        for o in (
            "teacher.scratch.num_heads=0",
            "distill.train.lr=-1",
            "distill.train.lr=.nan",
            "teacher.train.lr=.inf",
            "student.num_layers=0",
            "student.num_layers=99",
            "data.max_length=1000",
            "distill.train.warmup_ratio=2",
            "distill.train.max_grad_norm=-1",
            "export.parity_tolerance=-1",
            "bench.runs=-1",
            "export.opset=1",
            "teacher.scratch.hidden_size=0",
            "teacher.scratch.vocab_size=0",
            "distill.losses.logit_kl.temperature=0",
        )
    ],
    (
        "empty student layer list",
        "student.num_layers=null student.layers=[]",
        override("student.num_layers=null", "student.layers=[]"),
    ),
    # data files
    (
        "split file without 'category'",
        "hau_Latn/train.tsv header says 'topic'",
        broken_split(lambda lines: lines.__setitem__(0, lines[0].replace(b"category", b"topic"))),
    ),
    (
        "row with an extra field",
        "hau_Latn/train.tsv line 3 has a 4th field",
        broken_split(lambda lines: lines.__setitem__(2, lines[2].rstrip(b"\n") + b"\textra\n")),
    ),
    (
        "unbalanced quote",
        "hau_Latn/train.tsv line 4 opens a '\"' it never closes",
        broken_split(lambda lines: lines.__setitem__(3, lines[3].replace(b"\t", b'\t"', 2))),
    ),
    (
        "invalid UTF-8",
        "hau_Latn/train.tsv line 5 holds bytes ff fe",
        broken_split(lambda lines: lines.__setitem__(4, lines[4][:8] + b"\xff\xfe" + lines[4][8:])),
    ),
    (
        "labels.txt with a BOM",
        "labels.txt starts with EF BB BF (a run that works)",
        labels_edit(lambda b: b"\xef\xbb\xbf" + b),
    ),
    (
        "labels.txt with a name twice",
        "labels.txt lists its 2nd name again",
        labels_edit(lambda b: b + b.splitlines(True)[1]),
    ),
    # models and resume points
    ("truncated model.safetensors", "teacher.model=<folder whose weights file is cut in half>", truncated_teacher),
    ("damaged resume point", "optimizer.pt of a killed run overwritten, then --resume", damaged_resume_point),
    (
        "--resume of a run still being written",
        "a second process resumes LATEST while the first trains",
        resume_while_running,
    ),
    # paths
    ("run name with a path", "name=../../elsewhere", override("name=../../elsewhere")),
    ("key given twice", "a recipe with 'seed:' twice", duplicated_key),
]


def clean(case: dict[str, Any]) -> bool:
    """As intended: a success, a kill we caused, or exit code 2 with the one-line error and nothing lost."""
    if case["traceback"] or case["files_lost"]:
        return False
    return case["exit_code"] in (0, -9) or (case["exit_code"] == 2 and case.get("error_lines", 1) == 1)


def render(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    lines = [
        "# Reliability: every fault and bad input, through the `distill` command line",
        "",
        f"Command: `{doc['command']}` ({doc['seconds']} s). Each case ran `python -m polydistill ...` in a fresh "
        "process on tiny recipes and small model folders. *Half-written*: temporary files left anywhere under the "
        "output folder. "
        "*Traceback*: whether stderr held a Python traceback (it should only ever hold the one-line error).",
        "",
        f"{len(doc['cases'])} cases: {summary['clean']} ended as intended (exit code 0, or 2 with one "
        f"`distill: error:` line and no traceback), {summary['tracebacks']} with a traceback, "
        f"{summary['files_lost']} files lost "
        "(present under the case's scratch folder before the command, gone or changed after it). The resume "
        "checks run on `recipes/tiny.yaml`, whose evaluation sets are seeded samples stratified by label "
        f"({doc['tiny_eval_classes']} classes in each language's test sentences), so a resumed run that learnt "
        "something else would score differently.",
        "",
        "| case | input | exit code | traceback | what the user saw | half-written | files lost | afterwards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in doc["cases"]:
        after = case.get("then", "")
        if "resumed_ok" in case:
            after += ", run complete" if case["resumed_ok"] else ", NOT complete"
        if "same_metrics_as_uninterrupted" in case:
            same = case["same_metrics_as_uninterrupted"]
            after += ", metrics identical to an uninterrupted run" if same else ", metrics DIFFER"
        message = case["message"].replace("|", "\\|")
        lines.append(
            f"| {case['case']} | {case['input']} | {case['exit_code']} | {'yes' if case['traceback'] else 'no'} | "
            f"`{message}` | "
            f"{', '.join(case['half_written']) or 'none'} | {', '.join(case['files_lost']) or 'none'} | "
            f"{after or '-'} |"
        )
    lines += [
        "",
        "Not a case here, by design: recipes name losses, stages and export variants from fixed registries, "
        "never a Python import path, so there is no import-path allow-list to bypass; recipes are read with "
        "`yaml.safe_load`; `trust_remote_code` is off unless a recipe sets `teacher.trust_remote_code: true`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/reliability", help="output path without extension")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cases = []
    for name, given, case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"-- {name}", flush=True)
            cases.append({"case": name, "input": given, "files_lost": [], **case(Path(tmp))})
    doc = {"command": command_line("polydistill.benchmarks.experiments.reliability", argv), "cases": cases}
    from polydistill.data import load_task_data
    from polydistill.recipe import load_recipe

    tiny = load_recipe(RECIPE, [f"data.path={DATA_ROOT / 'sib-200'}"])
    test = load_task_data(tiny.data).splits["test"]
    doc["tiny_eval_classes"] = min(len(set(ds["label"])) for ds in test.values())
    doc["summary"] = {
        "cases": len(cases),
        "clean": sum(clean(c) for c in cases),
        "tracebacks": sum(c["traceback"] for c in cases),
        "files_lost": sum(len(c["files_lost"]) for c in cases),
    }
    doc["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, doc, render(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
