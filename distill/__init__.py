"""polydistill: distil multilingual teachers into small, fast students for low-resource languages.

The Python API (README, "Python API"), the commands without the shell:

    import distill

    result = distill.run("recipes/quickstart.yaml", {"distill.train.epochs": 5})
    result.directory, result.metrics, result.accuracy_table()
    distill.export(result.directory / "checkpoints" / "student", "out/student-int8")
    distill.trim_vocab(model_dir, out_dir, corpus=["train.tsv"])
    distill.bench([result.directory], max_seconds=60)

They are imported on first use (distill.api), so `import distill` and `distill validate` load neither torch nor
transformers.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunResult", "bench", "export", "run", "trim_vocab"]


def __getattr__(name: str) -> Any:
    """`distill.run` and the rest of `__all__`, from distill.api when first asked for."""
    if name in __all__:
        from distill import api

        return getattr(api, name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
