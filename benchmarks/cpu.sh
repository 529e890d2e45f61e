#!/usr/bin/env bash
# CPU latency of the XLM-R-base-architecture teacher next to trained students, measured twice back
# to back so run-to-run drift is visible (benchmarks/results/cpu.md says which rows repeat within 10%).
#
#   bash benchmarks/cpu.sh RUN_DIR [OUT_DIR]     RUN_DIR: a quickstart run (runs/quickstart/latest);
#                                                OUT_DIR defaults to benchmarks/results
# Environment: DISTILL (default .venv/bin/distill), PYTHON (default .venv/bin/python),
# BENCH_MAX_SECONDS (timing budget per run, default 240), BENCH_MIN_RUNS (default 20), POLYDISTILL_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
run=${1:?usage: bash benchmarks/cpu.sh RUN_DIR [OUT_DIR]}
out=${2:-benchmarks/results}
distill=${DISTILL:-.venv/bin/distill}
python=${PYTHON:-.venv/bin/python}
data=${POLYDISTILL_DATA:-../shared/data}/sib-200

# real sentences for the length mix and the tokenisation rows: every language's dev split
texts=$(mktemp)
trap 'rm -f "$texts"' EXIT
"$python" - "$data" >"$texts" <<'PY'
import csv, pathlib, sys
root = pathlib.Path(sys.argv[1])
root = root / "data" if (root / "data").is_dir() else root
for tsv in sorted(root.glob("*/dev.tsv")):
    with tsv.open(encoding="utf-8") as f:
        for row in list(csv.reader(f, delimiter="\t"))[1:]:
            print(row[2])
PY

# teacher: XLM-R base architecture (random weights); students: the run's trained student (torch,
# ONNX fp32 and int8) and an mMiniLM-sized 4x384 architecture with XLM-R's vocabulary (random weights)
for i in 1 2; do
  "$distill" bench teacher=xlmr-base-arch "$run" student=xlmr-arch:4x384 \
    --batch 1 --seq 128 --texts "$texts" --precisions fp32,bf16,int8-dynamic \
    --min-runs "${BENCH_MIN_RUNS:-20}" --max-seconds "${BENCH_MAX_SECONDS:-240}" --out "$out/cpu/run$i"
done
"$python" -m polydistill.benchmarks.experiments.cpu_summary "$out/cpu/run1" "$out/cpu/run2" "$out/cpu"
