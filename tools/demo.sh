#!/usr/bin/env bash
# The main job: set up (tools/setup.sh, idempotent), then pretrain a small MAE-AST on a
# built-in corpus and write a report. Arguments go to tools/demo.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
exec .venv/bin/python tools/demo.py "$@"
