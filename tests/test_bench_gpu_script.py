"""benchmarks/gpu.sh --dry-run runs end-to-end on the CPU, without datasets or torch-pruning, and
writes the documented files and schema."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polydistill.benchmarks.harness import SCHEMA
from polydistill.benchmarks.rows import ROW_FIELDS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run(tmp_path):
    # stand-ins that make `import datasets` / `import torch_pruning` fail, as on the GPU machine
    blockers = tmp_path / "blockers"
    blockers.mkdir()
    for name in ("datasets", "torch_pruning"):
        (blockers / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the GPU machine')\n")
    out = tmp_path / "h200"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blockers)}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "results.md",
        "nvidia-smi.txt",
        "command.txt",
        "bench.log",
    }
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == SCHEMA and doc["complete"] is True and doc["dry_run"] is True
    assert "benchmarks/gpu.sh --dry-run" in doc["command"]
    assert {"environment", "peaks", "results", "command", "settings", "skipped", "notes"} <= set(doc)
    rows = doc["results"]
    assert rows
    for row in rows:
        assert set(ROW_FIELDS) <= set(row)
        assert row["device"] == "cpu" and row["seq"] == 16 and row["batch"] in (1, 2)
    models = {r["model"].split(" ")[0] for r in rows}
    assert models == {"xlmr-base-arch", "xlmr-arch:6x384", "xlmr-arch:4x384", "xlmr-arch:2x128"}
    assert {(r["backend"], r["precision"]) for r in rows} >= {("torch", "fp32"), ("torch", "bf16")}
    assert any(s["precision"] == "fp16" and "CPU" in s["reason"] for s in doc["skipped"])
    assert "exit status: 0" in (out / "command.txt").read_text()
    assert "## Forward pass" in (out / "results.md").read_text()
