#!/usr/bin/env bash
# The GPU check: install moalign's extra wheels, run the GPU tests, then benchmark one RL step of a
# randomly initialised ~1B Llama against TRL's GRPOTrainer (benchmarks/bench_gpu_step.py).
# Made for one H100 with no network whose Python holds torch (CUDA), transformers, peft, accelerate,
# sacrebleu, scikit-learn, sentence-transformers, pandas and pyarrow; finishes in < 8 minutes.
#
#   bash benchmarks/gpu_check.sh [bench_gpu_step.py options]
#   bash benchmarks/gpu_check.sh --tiny     # or MOALIGN_GPU_CHECK_TINY=1: the benchmark on CPU, tiny model
#
# The wheels live in benchmarks/wheels/ (git-ignored: binaries stay out of history). Build them on a
# machine with network with `bash benchmarks/build_wheels.sh`; the device tool carries them with
# carry=["benchmarks/wheels"]. Without them (and with network) this script builds them first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."
PY=${PYTHON:-python3}
TINY=${MOALIGN_GPU_CHECK_TINY:-0}
ARGS=()
for arg in "$@"; do
  if [ "$arg" = --tiny ]; then TINY=1; else ARGS+=("$arg"); fi
done
if [ "$TINY" = 1 ]; then
  exec "$PY" "$HERE/bench_gpu_step.py" --tiny ${ARGS[@]+"${ARGS[@]}"}
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WHEELS=$HERE/wheels
if ! ls "$WHEELS"/pymoo-*.whl >/dev/null 2>&1; then
  echo "gpu_check: no wheels in $WHEELS; building them (needs network)"
  bash "$HERE/build_wheels.sh"
fi
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('gpu_check:', torch.cuda.get_device_name(0) if ok else 'no CUDA device', '| torch', torch.__version__, '| python', sys.version.split()[0]); sys.exit(0 if ok else 2)"
# --no-deps: the machine's own torch/transformers stay; only what is missing comes from the wheels.
MISSING=$("$PY" - "$HERE/gpu_requirements.txt" <<'PYEOF'
import importlib.util, sys
for line in open(sys.argv[1]):
    if line.strip() and not line.startswith("#"):
        requirement, module = line.split()
        if importlib.util.find_spec(module) is None:
            print(requirement)
PYEOF
)
if [ -n "$MISSING" ]; then
  echo "gpu_check: installing" $MISSING
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" $MISSING
fi
# moalign from this tree (editable: objectives/ and reports/ map onto moalign.objectives/.reports).
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
  || "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" moalign

echo "gpu_check: pytest -m gpu"
GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py || true)
if [ -n "$GPU_TESTS" ]; then
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS || echo "gpu_check: GPU tests FAILED"
fi
echo "gpu_check: benchmark"
timeout 330 "$PY" "$HERE/bench_gpu_step.py" ${ARGS[@]+"${ARGS[@]}"}
