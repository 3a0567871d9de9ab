#!/usr/bin/env bash
# Test-only environment for the HEAR 2021 validator: a virtual environment at .venv-hear with
# tensorflow-cpu, hearvalidator and this project (editable); torch is borrowed from .venv. It is kept apart from .venv
# because hearvalidator imports tensorflow at start and tensorflow brings its own protobuf,
# keras, grpcio, ... that the main environment (fairseq, s3prl) has no use for.
# Idempotent: a stamp in .venv-hear records the hash of this script and setup.cfg, so a second
# run with nothing changed returns at once.
#
#   bash tools/setup_hear.sh && .venv-hear/bin/hear-validator mae_ast.hear --model ckpt.pt
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${HEAR_VENV:-$ROOT/.venv-hear}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp_now=$(cat tools/setup_hear.sh setup.cfg 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp_now" ]; then
  exit 0
fi

# torch comes from the main environment: a .pth file puts .venv's site-packages at the end of
# .venv-hear's path (its own packages win), which saves a second multi-GB torch download.
bash tools/setup.sh
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
MAIN_SITE=$("$ROOT/.venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
HEAR_SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$MAIN_SITE" > "$HEAR_SITE/mae_ast_main_venv.pth"
# tensorflow-cpu 2.17.1: hearvalidator 2021.0.2 imports tensorflow at start (any 2.x works);
# 2.17 is the newest release whose metadata still asks for numpy<2, which this project pins
# (2.18+ are built against numpy 2). numpy<2 for the same reason as in .venv.
$PIP install "setuptools>=65.5.1,<81" "numpy<2" "tensorflow-cpu==2.17.1" soundfile
# hearvalidator asks for `tensorflow` (the full package): --no-deps so that pip does not pull
# a second tensorflow beside tensorflow-cpu (both install the same `tensorflow` module).
$PIP install --no-deps "hearvalidator==2021.0.2"
# this project, editable, without its own dependencies (torchaudio, av: not needed by
# mae_ast.hear), so `hear-validator mae_ast.hear` can import it from anywhere
$PIP install --no-deps -e .

echo "$stamp_now" > "$VENV/.setup-stamp"
echo "[setup_hear] ready: $VENV"
