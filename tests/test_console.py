"""What `distill run` prints: no third-party warnings or bar redraws, -q the summary alone, and library calls that
put transformers' and datasets' settings back as they found them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import datasets
import pytest
import torch
from tiny import REPO, TINY_RECIPE, TinyRun
from transformers.utils import logging as hf_logging

from polydistill.cli import main
from polydistill.console import library_logging, third_party_quiet


@pytest.fixture()
def quick(tiny_run) -> TinyRun:
    """The tiny recipe made quicker; one int8-dynamic export still runs the ONNX export and quantization that warned."""
    return tiny_run(TINY_RECIPE, "teacher.train.epochs=1", "distill.train.epochs=1", "export.variants=[int8-dynamic]")


@pytest.mark.slow
def test_a_tiny_run_prints_no_python_warnings_and_no_progress_bar_redraws(tmp_path, quick):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    command = [sys.executable, "-m", "polydistill", *quick.args(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout
    assert "Warning" not in done.stdout and "WARNING" not in done.stdout, done.stdout
    assert "\r" not in done.stdout, done.stdout  # "Loading weights" / "Writing model shards" bars
    assert "== stage export" in done.stdout and "int8-dynamic: " in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == f"run directory: {quick.directory(tmp_path)}"


@pytest.mark.slow
def test_quiet_prints_only_the_summary_and_run_log_keeps_every_line(tmp_path, quick, capsys):
    assert main(quick.args(tmp_path, "-q")) == 0
    out = capsys.readouterr().out.splitlines()
    directory = quick.directory(tmp_path)
    assert out[0].startswith("summary: mean over languages of the test accuracy")
    assert out[-2:] == [f"report: {directory / 'report.md'}", f"run directory: {directory}"]
    assert not any("stage" in line or "epoch" in line for line in out)
    log = (directory / "run.log").read_text(encoding="utf-8")
    assert "== stage teacher" in log and "teacher epoch 1: train loss" in log and "int8-dynamic: " in log
    assert log.splitlines()[-len(out) :] == out  # the summary once, after the progress


def test_third_party_settings_are_put_back_after_a_library_call():
    hf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    hf_logging.set_verbosity_info()
    try:
        with third_party_quiet():
            assert not hf_logging.is_progress_bar_enabled() and datasets.are_progress_bars_disabled()
            assert hf_logging.get_verbosity() == logging.ERROR
        assert hf_logging.is_progress_bar_enabled() and not datasets.are_progress_bars_disabled()
        assert hf_logging.get_verbosity() == logging.INFO
        with third_party_quiet(enabled=False):  # -v
            assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity_warning()
        datasets.disable_progress_bars()  # as conftest.py leaves them


def test_library_lines_reach_stdout_only_while_nobody_configured_logging(capsys):
    log = logging.getLogger("polydistill")
    log.propagate = False  # pytest's own handlers on the root logger would count as configured logging
    try:
        with library_logging() as say:
            say("epoch 1")
    finally:
        log.propagate = True
    assert capsys.readouterr().out == "epoch 1\n"
    assert log.handlers == [] and log.level == logging.NOTSET  # nothing left configured
    handler = logging.StreamHandler(sys.stderr)
    log.addHandler(handler)
    try:
        with library_logging() as say:
            say("epoch 2")  # below the WARNING the logger inherits from the root: not shown
        log.setLevel(logging.INFO)
        with library_logging() as say:
            say("epoch 3")
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == "epoch 3\n"  # the user's handler and level decide
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)


def test_only_the_known_export_warnings_are_hidden_and_only_during_the_export():
    from polydistill.export.onnx import _known_export_warnings_hidden

    tracer = "Converting a tensor to a Python boolean might cause the trace to be incorrect"
    index = "Exporting aten::index operator of advanced indexing in opset 17"
    other = "Converting a tensor to a NumPy array might cause the trace to be incorrect"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _known_export_warnings_hidden():
            warnings.warn(tracer, torch.jit.TracerWarning, stacklevel=1)
            warnings.warn(index, UserWarning, stacklevel=1)
            warnings.warn(other, torch.jit.TracerWarning, stacklevel=1)
        warnings.warn(index, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [other, index]


def test_only_the_quantizers_preprocessing_advice_is_hidden_and_root_handlers_stay_as_they_were(capsys):
    from polydistill.export.quantize import _preprocessing_advice_hidden

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []  # a plain `python` process: logging.warning() would call basicConfig() for good
    try:
        with _preprocessing_advice_hidden():
            logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
            logging.warning("something else")
        assert root.handlers == [] and root.filters == []
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert "pre-processing" not in err and "something else" in err
