#!/usr/bin/env bash
# Mutation testing, a developer's check (not run in CI): which changes to FILE does no quick
# test notice? mutmut 2 edits files in place, so it works on a scratch copy of the tree and the
# working tree is never touched.
#
#   bash tools/mutation_test.sh mae_ast/core/masking.py            # the quick tests that cover it
#   bash tools/mutation_test.sh mae_ast/labels.py tests/test_labels.py   # or the tests you name
#
# Prints mutmut's results (survivors by line); `cd <scratch> && mutmut show N` shows one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
file=${1:?usage: bash tools/mutation_test.sh FILE [TEST_FILE ...]}
shift
if [ $# -gt 0 ]; then
  tests="$*"
else
  # the quick tests that exercise each file the issue tracker asked to be mutation-tested
  case "$file" in
    mae_ast/core/masking.py)    tests="tests/test_masking.py tests/test_core.py tests/test_padding.py" ;;
    mae_ast/core/loss.py)       tests="tests/test_loss.py tests/test_core.py tests/test_padding.py" ;;
    mae_ast/core/metrics.py)    tests="tests/test_metrics.py tests/test_finetune_units.py" ;;
    mae_ast/core/features.py)   tests="tests/test_features.py tests/test_extractor.py tests/test_core.py" ;;
    mae_ast/core/extractor.py)  tests="tests/test_extractor.py tests/test_batch_independence.py tests/test_hear.py" ;;
    mae_ast/core/checkpoint.py) tests="tests/test_core.py tests/test_tools.py tests/test_classify_tools.py tests/test_hub.py" ;;
    mae_ast/manifest.py)        tests="tests/test_manifest.py" ;;
    mae_ast/labels.py)          tests="tests/test_labels.py" ;;
    *) echo "name the tests that cover $file: bash tools/mutation_test.sh $file tests/test_x.py" >&2; exit 2 ;;
  esac
  tests=$(for t in $tests; do [ -f "$t" ] && echo -n "$t "; done)
fi
# mutmut 2.5 (3.x runs tests differently); a dev dependency, not part of tools/setup.sh
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q "mutmut==2.5.1"
scratch=$(mktemp -d /tmp/mutmut.XXXXXX)
tar -C "$ROOT" --exclude=./.venv --exclude=./.venv-hear --exclude=./.git --exclude=./demo_runs \
    --exclude='*/__pycache__' -cf - . | tar -C "$scratch" -xf -
cd "$scratch"
echo "[mutation] $file against: $tests (scratch copy: $scratch)"
# `python -m pytest` puts the scratch copy first on sys.path, ahead of the editable install
"$ROOT/.venv/bin/mutmut" run --paths-to-mutate "$file" --no-progress \
  --runner "$ROOT/.venv/bin/python -m pytest -x -q -p no:cacheprovider -m 'not slow' $tests" || true
"$ROOT/.venv/bin/mutmut" results || true
