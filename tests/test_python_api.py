"""The Python API (README, "Python API"): the README's example runs as written, overrides read as on the command
line, options are the commands' own, and `import polydistill` stays free of torch."""

from __future__ import annotations

import logging
import subprocess
import sys

import datasets
import pytest
from tiny import REPO, TINY_RECIPE
from transformers.utils import logging as hf_logging

import polydistill
from polydistill.api import _with_overrides
from polydistill.recipe import load_recipe


def third_party_settings() -> tuple[int, bool, bool]:
    return hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), datasets.are_progress_bars_disabled()


def readme_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readme_example_runs_and_leaves_third_party_settings_as_they_were(
    tmp_path, sib200_path, tiny_run, monkeypatch, capsys
):
    code = readme_example()
    assert '"recipes/tiny.yaml"' in code and '"../shared/data/sib-200"' in code
    code = code.replace('"recipes/tiny.yaml"', repr(str(TINY_RECIPE)))
    code = code.replace('"../shared/data/sib-200"', repr(str(sib200_path)))
    monkeypatch.chdir(tmp_path)  # the example's relative runs/ and out/ land here
    # as in a fresh notebook: pytest's handlers on the root logger would count as logging configured by the user
    monkeypatch.setattr(logging.getLogger("polydistill"), "propagate", False)
    before = third_party_settings()
    exec(compile(code, "README.md, Python API", "exec"), {})
    assert third_party_settings() == before
    out = capsys.readouterr().out
    run = tiny_run(TINY_RECIPE).directory(tmp_path / "runs")
    assert "summary: mean over languages" in out and "== stage" not in out  # quiet=True
    assert "{'language': 'eng_Latn', 'zero_shot': False, 'teacher': " in out
    assert f"dev sentences of the run {run.resolve()}" in out  # export defaulted to the run's dev sentences
    assert "exported sequence classifier (int8-dynamic) to out/student-int8" in out
    assert (tmp_path / "out" / "student-int8" / "model.onnx").is_file()
    assert "== stage teacher" in (run / "run.log").read_text(encoding="utf-8")


def test_overrides_read_the_same_as_a_list_a_mapping_or_over_a_loaded_recipe(sib200_path):
    as_list = _with_overrides(
        TINY_RECIPE, [f"data.path={sib200_path}", "distill.train.lr=3e-4", "export.variants=[none]"]
    )
    as_mapping = _with_overrides(
        TINY_RECIPE, {"data.path": str(sib200_path), "distill.train.lr": 3e-4, "export.variants": ["none"]}
    )
    over_loaded = _with_overrides(load_recipe(TINY_RECIPE, [f"data.path={sib200_path}"]), {"export.variants": ["none"]})
    assert as_list == as_mapping and as_list.distill.train.lr == 3e-4
    assert over_loaded.export.variants == ["none"] and over_loaded.data == as_list.data


def test_an_option_the_command_does_not_have_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="unexpected option.*textz"):
        polydistill.export_checkpoint(tmp_path / "model", tmp_path / "out", textz="dev.txt")
    with pytest.raises(TypeError, match="unexpected option.*model_dir"):
        polydistill.bench(["xlmr-arch:2x32"], model_dir="x")


def test_importing_distill_loads_neither_torch_nor_transformers():
    code = (
        "import sys, polydistill\npolydistill.run, polydistill.RunResult\n"
        "assert not {'torch', 'transformers'} & {*sys.modules}"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
