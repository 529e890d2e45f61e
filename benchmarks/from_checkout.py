"""`python benchmarks/from_checkout.py ARGS` runs `distill ARGS` from a checkout that was never installed (the GPU
machine: no pip install there), by mapping `polydistill` and its subpackages onto the root folders exactly as
pyproject.toml's [tool.setuptools.package-dir] does for an install."""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """The [tool.setuptools.package-dir] table: package name -> its folder in the checkout."""
    section = pyproject.read_text(encoding="utf-8").split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    found = re.findall(r'^"?([\w.]+)"?\s*=\s*"([^"]+)"', section, flags=re.MULTILINE)
    return {name: ROOT / folder for name, folder in found}


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds each mapped package in its folder; their modules are then found the usual way (`__path__`)."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the MetaPathFinder signature
        folder = self.dirs.get(name)
        if folder is None:
            return None
        init = folder / "__init__.py"
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])


if __name__ == "__main__":
    sys.meta_path.insert(0, CheckoutFinder(package_dirs()))
    from polydistill.cli import main

    sys.exit(main(sys.argv[1:]))
