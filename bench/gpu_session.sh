#!/usr/bin/env bash
# The GPU checks of issue 17, as one prepared script for a machine with one CUDA GPU (run from
# the repository root; figures go to $OUT, default /tmp/gpu-out). Three stages, so that a short
# lease can run them as two calls:
#
#   bench/gpu_session.sh bench               # the card, packing + regulariser benchmarks, smoke study
#   bench/gpu_session.sh baselines SECONDS   # docs/experiments/baselines.py on shapes, on the GPU,
#                                            # starting no run after SECONDS (resumable)
#   bench/gpu_session.sh moasha SECONDS      # bench/mo_asha.py on shapes, trials packed on the GPU
#
# Where Ray, Optuna and MLflow are not installed, the wheels in `.whl/` are installed into
# ~/site first: fill it beforehand on a machine with network, for the GPU machine's Python,
# e.g. `pip download --only-binary=:all: --python-version 3.12 -d .whl "ray[tune]" optuna mlflow-skinny`
# in the versions pyproject.toml allows.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
stage=${1:-bench}
PY=${PYTHON:-python3}

if ! $PY -c "import ray, optuna, mlflow" 2>/dev/null; then
  [ -d .whl ] || { echo "Ray/Optuna/MLflow missing and no .whl/ to install them from" >&2; exit 3; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$HOME/site" .whl/*.whl >/dev/null || exit 3
  export PYTHONPATH="$HOME/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
syncstudy() { $PY -c "from pipeline.cli import console; console()" "$@"; }
step() { echo "== $(date -u +%T) $*"; }

if [ "$stage" = bench ]; then
  step card
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/versions.txt"
  $PY - <<'EOF' | tee -a "$OUT/versions.txt"
import mlflow, optuna, ray, torch
print(f"python torch {torch.__version__} cuda {torch.version.cuda} ray {ray.__version__} "
      f"optuna {optuna.__version__} mlflow {mlflow.__version__} card {torch.cuda.get_device_name(0)}")
EOF
  step "packing + regulariser overhead (bench/gpu_packing.py)"
  timeout 200 $PY bench/gpu_packing.py --n-train 8192 --epochs 3 --out "$OUT/gpu_packing.json" > "$OUT/gpu_packing.log" 2>&1
  echo "gpu_packing rc=$?"; tail -3 "$OUT/gpu_packing.log"
  step "smoke study (bench/gpu_smoke.yaml: 8 trials, 0.25 GPU each, mo_asha)"
  rm -rf runs/gpu-smoke /tmp/gpu-smoke-export
  timeout 170 $PY -c "from pipeline.cli import console; console()" launch bench/gpu_smoke.yaml \
    > "$OUT/smoke.log" 2>&1
  echo "smoke rc=$?"; tail -25 "$OUT/smoke.log"
  syncstudy runs bench/gpu_smoke.yaml > "$OUT/smoke_runs.txt" 2>&1; head -20 "$OUT/smoke_runs.txt"
  syncstudy export bench/gpu_smoke.yaml --out /tmp/gpu-smoke-export 2>&1 | tail -5
  echo "export rc=${PIPESTATUS[0]}"
  cp runs/gpu-smoke/trials.parquet "$OUT/" 2>/dev/null  # at most 8 files come back
  exit 0
fi

if [ "$stage" = baselines ]; then
  secs=${2:-300}
  stop_at=$(( $(date +%s) + secs ))
  # runs already in docs/experiments/baselines.jsonl are skipped (the script resumes)
  cp docs/experiments/baselines.jsonl "$OUT/baselines_gpu.jsonl"
  nproc_=$(nproc); workers=$(( nproc_ / 2 > 1 ? nproc_ / 2 - 1 : 1 ))
  step "baselines on shapes: $workers processes, no run started after $secs s"
  # shapes-hard: does a plain net stay clearly below 100%? (one process, 5 seeds)
  $PY docs/experiments/baselines.py --datasets shapes-hard --conditions plain --device cuda --threads 2 \
    --stop-at "$stop_at" --out "$OUT/baselines_gpu.jsonl" --table-out /tmp/baselines_hard.md \
    > /tmp/baselines_0.log 2>&1 &
  for i in $(seq 1 "$workers"); do
    $PY docs/experiments/baselines.py --datasets shapes --device cuda --threads 2 --stop-at "$stop_at" \
      --out "$OUT/baselines_gpu.jsonl" --table-out "/tmp/baselines_gpu_$i.md" > "/tmp/baselines_$i.log" 2>&1 &
  done
  wait
  cat /tmp/baselines_*.log > "$OUT/baselines_gpu.log"  # the tables are rebuilt from the jsonl
  grep -h "seed=" "$OUT/baselines_gpu.log" | sort | tail -100; grep -h -A3 Traceback "$OUT/baselines_gpu.log" | tail -20
  wc -l "$OUT/baselines_gpu.jsonl"
  exit 0
fi
if [ "$stage" = moasha ]; then
  # bench/mo_asha.py on the shapes study (64 px: hours on a 2-core CPU), trials packed 8 to the
  # GPU; resumable through its JSON, so a cut-off run keeps the studies that finished
  step "mo_asha vs none on shapes, 3 seeds, 8 trials at 0.125 GPU"
  timeout "${2:-400}" $PY bench/mo_asha.py --datasets shapes --seeds 0 1 2 --gpu 0.125 --concurrency 8 \
    --json "$OUT/mo_asha_shapes_gpu.json"
  echo "mo_asha rc=$?"
  exit 0
fi
echo "usage: bench/gpu_session.sh bench | baselines SECONDS | moasha SECONDS" >&2
exit 2
