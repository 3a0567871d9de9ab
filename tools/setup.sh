#!/usr/bin/env bash
# Sets up everything MAE-AST needs on a fresh Debian machine with Python 3.11:
# Debian packages (as root), a virtual environment at .venv, and every pip package, pinned.
# Idempotent: a stamp in .venv records the hash of this script and setup.cfg, so a
# second run with nothing changed returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp_now=$(cat tools/setup.sh setup.cfg 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp_now" ]; then
  exit 0
fi

# --- Debian packages -------------------------------------------------------------
# espeak-ng: real speech for tests and examples; libsox-dev: torchaudio.sox_effects,
# which s3prl's downstream datasets call; sox: handy for users to inspect audio.
# fillets-ng-data-nl (33 MB, Dutch game dialogue) and sonic-pi-samples (22 MB, sound effects):
# the smallest two of the demo corpus's packages, for the shortened demo in tests/test_demo.py
# (tools/demo.py installs the other six itself); no recommends: they would pull in the games.
DEBS="espeak-ng libsox-dev sox fillets-ng-data-nl sonic-pi-samples"
missing=$(for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install $missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] missing Debian packages: $missing; run: sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
  fi
fi

# --- virtual environment -----------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# pip stays below 24.1: catalyst 22.4 (imported by s3prl's speech_commands downstream)
# has metadata that pip>=24.1 rejects.
$PIP install "pip==23.3.2" "setuptools<81" wheel
# torch/torchaudio 2.8.0: s3prl 0.4.18 needs torchaudio.sox_effects and torchaudio.load,
# which torchaudio 2.9 removed. torch 2.6+ loads with weights_only=True (docs/troubleshooting.md).
$PIP install "torch==2.8.0" "torchaudio==2.8.0"
# fairseq 0.12.2 neither builds nor imports on Python 3.11; fairseq-fixed is the same
# `fairseq` package patched for it. Its C++ extensions build against the installed torch,
# hence --no-build-isolation (and cython/numpy first). numpy<2: fairseq 0.12 and s3prl
# 0.4.18 predate numpy 2.
$PIP install "numpy<2" cython
$PIP install --no-build-isolation "fairseq-fixed==0.12.3.1" "hydra-core==1.3.2" "omegaconf==2.3.0"
# s3prl and its runner: huggingface_hub>=1.0 dropped HfFolder/Repository, which
# s3prl's run_downstream.py imports; transformers 5 needs huggingface_hub>=1.0.
$PIP install "s3prl==0.4.18" "huggingface_hub<1.0" "transformers<5" tensorboardX tensorboard \
  soundfile av matplotlib pytest pytest-timeout "numpy<2"
# safetensors: the weights of hub folders (mae_ast/core/hub.py), read without pickle; the
# core imports it, so it is pinned here rather than left to transformers' requirements.
$PIP install "safetensors==0.8.0"
# catalyst only for its DistributedSamplerWrapper; its own pins would downgrade torch.
$PIP install --no-deps "catalyst==22.4"
# this project, editable, so `import mae_ast` works from anywhere
$PIP install --no-build-isolation --no-deps -e .

echo "$stamp_now" > "$VENV/.setup-stamp"
echo "[setup] ready: $VENV"
