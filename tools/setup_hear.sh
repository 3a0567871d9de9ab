#!/usr/bin/env bash
# The HEAR 2021 tools' environment: a virtual environment at .venv-hear with tensorflow-cpu,
# hearvalidator, hear-eval-kit (heareval), hearbaseline and this project (editable); torch is
# borrowed from .venv. It is kept apart from .venv because hearvalidator and heareval import
# tensorflow at start and tensorflow brings its own protobuf, keras, grpcio, ... that the main
# environment (fairseq, s3prl) has no use for.
# Idempotent: a stamp in .venv-hear records the hash of this script and setup.cfg, so a second
# run with nothing changed returns at once.
#
#   bash tools/setup_hear.sh && .venv-hear/bin/hear-validator mae_ast.hear --model ckpt.pt
#   source .venv-hear/bin/activate && python3 -m heareval.embeddings.runner mae_ast.hear ...
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
# tensorflow-cpu 2.17.1: hearvalidator 2021.0.2 and heareval's embeddings runner import
# tensorflow at start (any 2.x works); 2.17 is the newest release whose metadata still asks for
# numpy<2, which this project pins (2.18+ are built against numpy 2). numpy<2 for the same
# reason as in .venv.
$PIP install "setuptools>=65.5.1,<81" "numpy<2" "tensorflow-cpu==2.17.1" soundfile
# What hear-eval-kit (heareval 2021.1.3) imports, pinned to the versions tests/test_heareval.py
# runs end to end; heareval itself goes in below with --no-deps, as its own metadata pins
# numpy==1.19.2 (its sdist fails to build on Python 3.11: a Cython error), numba==0.48 (no
# Python 3.11 build) and the full `tensorflow` (see above):
# - pytorch-lightning 1.9.5 (+ torchmetrics 1.9.0): heareval calls Trainer(gpus=...) and the
#   *_epoch_end hooks, which Lightning 2.0 removed; 1.9.5 is the last 1.x.
# - sed_eval 0.2.1 and dcase_util 0.2.20: the event scores (onset F-measure, segment error rate).
# - librosa 0.9.2: dcase_util imports librosa, and hearbaseline (below) calls librosa 0.9's API
#   (positional arguments to librosa.filters.mel, keyword-only since 0.10).
# - intervaltree, torchinfo, python-slugify, more-itertools, pandas, click: imported at load.
# - nvidia-ml-py 13.615.71: heareval imports its `pynvml` module at load when torch sees a GPU,
#   to report GPU memory. (The `pynvml` distribution heareval names is now a deprecated wrapper
#   of it that warns on import.)
# - scikit-learn, scipy, tqdm: imported at load too; unpinned, as .venv's copies (seen through
#   the .pth above) satisfy them and pip then installs nothing.
$PIP install "pytorch-lightning==1.9.5" "torchmetrics==1.9.0" "sed_eval==0.2.1" "dcase_util==0.2.20" \
  "librosa==0.9.2" "intervaltree==3.2.1" "torchinfo==1.8.0" "python-slugify==9.2.0" \
  "more-itertools==11.2.1" "pandas==3.0.6" "click==8.5.1" "nvidia-ml-py==13.615.71" \
  scikit-learn scipy tqdm "numpy<2"
# hearvalidator 2021.0.2 asks for `tensorflow` (the full package): --no-deps so that pip does
# not pull a second tensorflow beside tensorflow-cpu (both install the same `tensorflow`
# module). heareval: see above. hearbaseline 2021.1.1, for its naive baseline (a log-mel
# spectrogram and a random projection, nothing to download) to compare scores with: its
# metadata has heareval's pins and pulls speechbrain, transformers and torchcrepe for its other
# baselines; hearbaseline.naive needs only librosa (above) and reads audio at 44.1 kHz. These
# --no-deps installs come last, so that no later install has pip print their unmet pins as
# conflicts.
$PIP install --no-deps "hearvalidator==2021.0.2" "heareval==2021.1.3" "hearbaseline==2021.1.1"
# Three small edits to the installed heareval, each applied once (a rerun finds it done) and
# marked with "mae_ast setup_hear.sh":
"$VENV/bin/python" - <<'PY'
import importlib.util, pathlib

MARK = "  # mae_ast setup_hear.sh"


def patch(module, old, new, why):
    """Replace the one ``old`` in ``module``'s file by ``new``, whose changed line ends with MARK."""
    path = pathlib.Path(importlib.util.find_spec(module).origin)
    text = path.read_text()
    if new in text:
        return
    if text.count(old) != 1:
        raise SystemExit(f"setup_hear.sh: cannot patch {path} ({why}): the text to change is not there once")
    path.write_text(text.replace(old, new))


# 1. The predictions runner reloads its own Lightning checkpoints (heareval's torch.load and
#    Lightning's trainer.test) with plain torch.load, which torch >= 2.6 runs with
#    weights_only=True: UnpicklingError. They are files the same run has just written, so the
#    runner process allows full unpickling (explicit weights_only=True calls stay as they are).
patch("heareval.predictions.runner", "\nimport click\n",
      '\nimport click\nimport os; os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")' + MARK + "\n",
      "torch.load on torch >= 2.6")
# 2. hear-eval-kit issue 432 (open upstream): before testing, heareval sets
#    trainer.fit_loop.current_epoch to the best validation epoch, so that the test step looks up
#    that epoch's event post-processing. Since Lightning 1.6, trainer.current_epoch reads
#    fit_loop.epoch_progress.current.completed and FitLoop has no current_epoch of its own: the
#    assignment adds an attribute nobody reads, the test step looks up the last epoch, and event
#    tasks die with a KeyError in epoch_best_postprocessing_or_default. Set the counter instead.
patch("heareval.predictions.task_predictions",
      "trainer.fit_loop.current_epoch = grid_point.epoch",
      "trainer.fit_loop.epoch_progress.current.completed = grid_point.epoch" + MARK,
      "hear-eval-kit issue 432")
# 3. The embeddings runner refuses to start when torch sees a GPU and tensorflow does not, a
#    check meant for tensorflow models. tensorflow-cpu never sees one, so on a GPU machine it
#    would refuse every (torch) model: warn instead. (Read from heareval's code; no GPU machine
#    was at hand to try it.)
patch("heareval.embeddings.runner",
      'raise ValueError("GPUs not available in tensorflow, but found by pytorch")',
      'print("warning: GPUs not available in tensorflow, but found by pytorch")' + MARK,
      "tensorflow-cpu on a GPU machine")
PY
# this project, editable, without its own dependencies (torchaudio, av: not needed by
# mae_ast.hear), so `hear-validator mae_ast.hear` can import it from anywhere
$PIP install --no-deps -e .

echo "$stamp_now" > "$VENV/.setup-stamp"
echo "[setup_hear] ready: $VENV"
