#!/usr/bin/env bash
# One-shot GPU machine session for bloomkit: env, the GPU smoke (timed), the `gpu` tests, and
# fine-tune throughput. Runs from the repository root on a host that has torch, transformers,
# peft and accelerate (bloomkit itself need not be installed: bloomkit/src goes on PYTHONPATH).
# No network is assumed. Everything lands in $OUT (default: a new temp dir):
#   nvidia-smi.txt env.json smoke.json smoke.log smoke.time pytest.log gpu-figures.jsonl
#   bench.json bench.log summary.txt
# Each step has its own time limit so the whole session fits ~8 minutes of device time.
# Usage: [OUT=dir] [PYTHON=python3] [BLOOMKIT_HF_HOME=cache-with-bloom-560m] tests/gpu/run.sh
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-$(mktemp -d -t bloomkit-gpu-XXXXXX)}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

if ! "$PY" -c "import bloomkit" 2>/dev/null; then
  export PYTHONPATH="$PWD/bloomkit/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export BLOOMKIT_GPU_FIGURES="$OUT/gpu-figures.jsonl"
# Where a local copy of bigscience/bloom-560m may be (the tests isolate HF_HOME otherwise).
export BLOOMKIT_HF_HOME=${BLOOMKIT_HF_HOME:-${HF_HOME:-$HOME/.cache/huggingface}}

# step NAME LIMIT_S CMD...: run CMD with a time limit, output to $OUT/NAME.log, rc to summary.
step() {
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $((SECONDS - started)) s" | tee -a "$SUMMARY"
  return $rc
}

{ nvidia-smi; nvidia-smi topo -m; } >"$OUT/nvidia-smi.txt" 2>&1 || true
step env 120 bash -c "'$PY' -m bloomkit env --json >'$OUT/env.json'"

# The verdict, timed as a user sees it (a fresh interpreter, imports included).
if [ -x /usr/bin/time ]; then
  step smoke 180 /usr/bin/time -v -o "$OUT/smoke.time" \
    "$PY" -m bloomkit smoke --require-gpu --json "$OUT/smoke.json"
else
  step smoke 180 bash -c "time '$PY' -m bloomkit smoke --require-gpu --json '$OUT/smoke.json'"
fi
cat "$OUT/smoke.log"

# The gpu tests, under the repository's pytest settings; if those cannot load here (an older
# pytest, a missing plugin), under a minimal config that only registers the markers.
if "$PY" -c "import pytest" 2>/dev/null; then
  if ! step pytest 300 "$PY" -m pytest -m gpu bloomkit/tests -p no:cacheprovider -rs -v; then
    if grep -qE "^(ERROR: |INTERNALERROR|ImportError while loading conftest)" "$OUT/pytest.log"; then
      mv "$OUT/pytest.log" "$OUT/pytest-rootconfig.log"
      printf '[pytest]\nmarkers =\n    gpu: needs CUDA\n    slow: slow\n    integration: x\n' \
        >"$OUT/pytest.ini"
      step pytest 300 "$PY" -m pytest -c "$OUT/pytest.ini" --rootdir "$PWD" \
        --import-mode=importlib -m gpu bloomkit/tests -p no:cacheprovider -rs -v
    fi
  fi
  tail -n 25 "$OUT/pytest.log"
else
  echo "pytest: not installed, gpu tests not run" | tee -a "$SUMMARY"
fi

# Throughput: the tiny model always; bloom-560m only when a local copy is in the cache.
BENCH_ARGS=(--gpu --skip-smoke --json "$OUT/bench.json")
export HF_HOME="$BLOOMKIT_HF_HOME"
if [ "${RUN_BENCH:-1}" = 0 ]; then
  echo "bench: skipped (RUN_BENCH=0)" | tee -a "$SUMMARY"
elif "$PY" -c "from huggingface_hub import try_to_load_from_cache as f; import sys; \
sys.exit(0 if isinstance(f('bigscience/bloom-560m', 'config.json'), str) else 1)" 2>/dev/null; then
  BENCH_ARGS+=(--model bigscience/bloom-560m)
fi
if [ "${RUN_BENCH:-1}" != 0 ]; then
  [[ " ${BENCH_ARGS[*]} " == *" --model "* ]] ||
    echo "bloom-560m: not in the local HF cache, skipped" | tee -a "$SUMMARY"
  step bench 240 "$PY" bench/bench_bloomkit.py "${BENCH_ARGS[@]}"
  grep -E "^(finetune|smoke)" "$OUT/bench.log" | tee -a "$SUMMARY"
fi

if [ -f "$OUT/smoke.json" ]; then
  "$PY" - "$OUT/smoke.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
g = next(s for s in r["stages"] if s["name"] == "gemm")
print(f"smoke verdict {r['verdict']}, stages {r['duration_s']} s, process {r.get('process_s')} s, "
      f"gemm {g['figures'].get('tflops_bf16')} TFLOP/s bf16")
for f in r["failures"]:
    print("  failure:", f)
EOF
fi
grep -E "Elapsed|Maximum resident" "$OUT/smoke.time" 2>/dev/null | tee -a "$SUMMARY"

# The CUDA 12 variant (torch 2.10.0, what 535/550 hosts get) on this GPU, from its own lock
# target: a venv of lock/cu128-cp3XX.txt (needs an index, or CU12_WHEELS=a folder of its wheels:
# about 3 GB, too big to carry to an offline machine), then a bf16 matmul on the GPU.
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CU12_LOCK="lock/cu128-cp$PYVER.txt"
if [ "${RUN_CU12:-1}" = 0 ] || [ ! -f "$CU12_LOCK" ] || ! command -v uv >/dev/null; then
  echo "cu12 variant: skipped (RUN_CU12=0, no $CU12_LOCK, or no uv)" | tee -a "$SUMMARY"
else
  SOURCES=(--index-url https://pypi.org/simple)
  [ -n "${CU12_WHEELS:-}" ] && SOURCES=(--no-index --find-links "$CU12_WHEELS")
  step cu12-venv 600 bash -c "uv venv -q -p '$PY' '$OUT/cu12' && uv pip install -q \
    --python '$OUT/cu12/bin/python' --require-hashes -r '$CU12_LOCK' ${SOURCES[*]}" &&
    step cu12-torch 120 "$OUT/cu12/bin/python" -c "
import torch
assert torch.version.cuda.startswith('12.'), torch.version.cuda
assert torch.cuda.is_available(), 'CUDA 12 torch cannot use this GPU'
a = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
torch.cuda.synchronize(); print('torch', torch.__version__, 'CUDA', torch.version.cuda,
      'on', torch.cuda.get_device_name(), 'matmul ok', float((a @ a).float().abs().mean()) > 0)"
  tail -n 3 "$OUT/cu12-torch.log" 2>/dev/null | tee -a "$SUMMARY"
  rm -rf "$OUT/cu12"  # gigabytes: not a result
fi
echo "results in $OUT"
