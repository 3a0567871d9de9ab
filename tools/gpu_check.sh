#!/usr/bin/env bash
# One GPU check: every path that only a GPU takes (fp16 and bf16 pre-training with
# fairseq-hydra-train, fine-tuning with common.amp, the s3prl upstream, HEAR and classify.py on
# cuda, bench.py --device cuda --quick), one summary line each; tools/gpu_check.py says what
# each path checks. What any session lent a GPU runs first; about 5 minutes after setup.
#
#   bash tools/gpu_check.sh
#
# Without a GPU (CI, a laptop) it says so and exits 0. Otherwise it sets itself up with
# tools/setup.sh (idempotent) and runs the paths with .venv/bin/python. Environment:
#   GPU_CHECK_PYTHON=python3   use this Python instead of setting up .venv (one with the
#                              project's packages, e.g. a GPU image's own with wheels added)
#   GPU_CHECK_WHEELS=DIR       pip-install the wheels and sdists in DIR (no index, no network) into
#                              /tmp/gpu_check_site first and put it on PYTHONPATH; tools/gpu_wheels.sh
#                              prepares .whl (and .espeak) for this workplace's H200
#   GPU_CHECK_OUT=DIR          where gpu_check.log and summary.txt go (default /tmp/gpu_check_out)
#   GPU_CHECK_BUDGET_S=480     the whole check's time; a command still running then is stopped
#   GPU_CHECK_DEVICE=cpu       run the pipeline on the CPU (fp16 and amp skipped, tiny models):
#                              a check of this script, not of a GPU
# Exit status: 0 when every path passed (or there is no GPU), 1 when one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}

if [ "$DEVICE" = cuda ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no GPU on this machine (nvidia-smi finds none): nothing to check"
    exit 0
  fi
  echo "gpu_check: $(nvidia-smi -L | head -1)"
fi

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY=$GPU_CHECK_PYTHON
else
  # a GPU machine without network access cannot set up: say so, and name the way around
  if ! bash tools/setup.sh; then
    echo "FAIL setup            tools/setup.sh failed (above); with a Python that has the packages, run" \
         "GPU_CHECK_PYTHON=python3 [GPU_CHECK_WHEELS=DIR] bash tools/gpu_check.sh"
    exit 1
  fi
  PY=.venv/bin/python
fi

if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  SITE=/tmp/gpu_check_site
  rm -rf "$SITE"  # a warm machine keeps the last run's packages: start from the wheels given
  # sdists too (fairseq-fixed has no wheel: it builds its extensions against the torch there)
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
       --no-build-isolation --target "$SITE" $(ls "$GPU_CHECK_WHEELS"/*.whl "$GPU_CHECK_WHEELS"/*.tar.gz 2>/dev/null); then
    echo "FAIL setup            pip could not install the wheels in $GPU_CHECK_WHEELS"
    exit 1
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
fi
# the tools import mae_ast from this tree also where it is not installed (GPU_CHECK_PYTHON)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# what every path imports, checked once so that a missing package is named, not a traceback
missing=$("$PY" - <<'EOF'
import importlib
names = ["torch", "torchaudio", "numpy", "soundfile", "av", "fairseq", "hydra", "omegaconf", "safetensors",
         "s3prl", "mae_ast"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: $PY lacks: $missing (the paths that need them will fail)"
fi

export PYTHONUNBUFFERED=1 GPU_CHECK_DEVICE="$DEVICE"
exec "$PY" tools/gpu_check.py
