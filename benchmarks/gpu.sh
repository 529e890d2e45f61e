#!/usr/bin/env bash
# GPU benchmark in one command (benchmarks/README.md says what it measures):
#
#   bash benchmarks/gpu.sh [OUT_DIR]             on a machine with an NVIDIA GPU; OUT_DIR defaults to
#                                                benchmarks/results/h200
#   bash benchmarks/gpu.sh --dry-run [OUT_DIR]   the same script on the CPU with tiny sizes and few runs
#                                                (CI runs it: tests/test_bench_gpu_script.py); BENCH_DRY_RUN=1 too
#
# Needs only python with torch and transformers (onnxruntime for ONNX rows: with a CPU-only build the
# GPU run has torch rows only). No network, no `datasets`, no `torch-pruning`; polydistill need not be
# installed: it runs from the repository root through benchmarks/from_checkout.py. Writes into OUT_DIR:
#   results.json  results.md  nvidia-smi.txt  command.txt  bench.log
# Environment: PYTHON (default python3), BENCH_MAX_SECONDS (timing budget, default 180),
# BENCH_TIMEOUT_S (hard limit on the python run, default 450 = 7.5 min), BENCH_EXTRA_ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry=${BENCH_DRY_RUN:-0}
out=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    -h | --help)
      sed -n '2,17p' "$0"
      exit 0
      ;;
    -*)
      echo "gpu.sh: unknown option $arg" >&2
      exit 2
      ;;
    *) out=$arg ;;
  esac
done
out=${out:-benchmarks/results/h200}
python=${PYTHON:-python3}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
mkdir -p "$out"

# teacher: the XLM-R base architecture; students: mMiniLM-like 6x384, 4x384, and a tiny 2x128
# (all with XLM-R's 250,002-piece vocabulary and RANDOM weights: latency, not accuracy)
models=(teacher=xlmr-base-arch student=xlmr-arch:6x384 student=xlmr-arch:4x384 student=xlmr-arch:2x128)
if [ "$dry" = 1 ]; then
  # torch only, as on a GPU machine whose onnxruntime is the CPU build (the onnxruntime CPU path is
  # covered by tests/test_bench_schema.py); fp16 on CPU is listed as skipped
  args=(--device cpu --dry-run --threads 1 --batch 1 256 --seq 128 --precisions fp32,bf16,fp16 --backends torch)
  limit=${BENCH_TIMEOUT_S:-120}
else
  args=(--device cuda --batch 1 32 256 --seq 128 --precisions fp32,bf16,fp16 --cuda-graphs
    --warmup 10 --min-runs 20 --max-runs 2000 --max-seconds "${BENCH_MAX_SECONDS:-180}")
  limit=${BENCH_TIMEOUT_S:-450}
fi
# shellcheck disable=SC2206  # extra arguments are meant to be split
extra=(${BENCH_EXTRA_ARGS:-})
cmd=("$python" benchmarks/from_checkout.py bench "${models[@]}" "${args[@]}" ${extra[@]+"${extra[@]}"} --out "$out")

write() { # stdin to $out/$1 atomically: a temporary file in the same folder, then a rename
  local tmp
  tmp=$(mktemp "$out/.$1.XXXXXX")
  cat >"$tmp"
  mv -f "$tmp" "$out/$1"
}

{ nvidia-smi 2>&1 || echo "nvidia-smi: not available on this machine"; } | write nvidia-smi.txt
invocation="$(printf '%q ' bash benchmarks/gpu.sh "$@")"
python_cmd="$(printf '%q ' "${cmd[@]}")"
command_txt="# $(date -u +%Y-%m-%dT%H:%M:%SZ)
gpu.sh: ${invocation% }
python: ${python_cmd% }"
printf '%s\n' "$command_txt" | write command.txt
export BENCH_COMMAND="${invocation% } # runs: ${python_cmd% }"

runner=()
if command -v timeout >/dev/null 2>&1; then
  runner=(timeout -k 15 "$limit")
fi
set +e
"${runner[@]+"${runner[@]}"}" "${cmd[@]}" 2>&1 | tee "$out/.bench.log.tmp"
status=${PIPESTATUS[0]}
set -e
mv -f "$out/.bench.log.tmp" "$out/bench.log"
printf '%s\nexit status: %s%s\n' "$command_txt" "$status" "$([ "$status" = 124 ] && echo ' (timed out: results.json holds the cells finished)')" | write command.txt
exit "$status"
