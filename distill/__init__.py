"""polydistill: distil multilingual teachers into small, fast students for low-resource languages.

The Python API (README, "Python API"), the commands without the shell:

    import polydistill

    result = polydistill.run("recipes/quickstart.yaml", {"distill.train.epochs": 5})
    result.directory, result.metrics, result.accuracy_table()
    polydistill.export_checkpoint(result.directory / "checkpoints" / "student", "out/student-int8")
    polydistill.trim_vocab(model_dir, out_dir, corpus=["train.tsv"])
    polydistill.bench([result.directory], max_seconds=60)

They are imported on first use (polydistill.api), so `import polydistill` and `distill validate` load neither torch nor
transformers.
"""

from typing import Any

from polydistill.version import __version__ as __version__  # re-exported

__all__ = ["RunResult", "bench", "export_checkpoint", "run", "trim_vocab"]


def __getattr__(name: str) -> Any:
    """`polydistill.run` and the rest of `__all__`, from polydistill.api when first asked for."""
    if name in __all__:
        from polydistill import api  # lazy: every `import polydistill.x` runs this file; the API loads on first use

        return getattr(api, name)
    raise AttributeError(f"module 'polydistill' has no attribute {name!r}")
