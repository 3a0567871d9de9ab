#!/usr/bin/env bash
# The test command: sets everything up (tools/setup.sh, idempotent) and runs the suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k masking`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
exec .venv/bin/python -m pytest "$@"
