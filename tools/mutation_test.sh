#!/usr/bin/env bash
# Mutation testing, a developer's check (not run in CI): which small changes to FILE does no
# quick test notice? Works on a scratch copy of the tree (mutmut writes a mutants/ folder and
# its own config), so the working tree is never touched.
#
#   bash tools/mutation_test.sh mae_ast/core/masking.py                 # the quick tests that cover it
#   bash tools/mutation_test.sh mae_ast/labels.py tests/test_labels.py  # or the tests you name
#
# Prints the survivors; the last lines name the scratch folder, where
# `../main/.venv/bin/mutmut show NAME` (from that folder) prints one as a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
file=${1:?usage: bash tools/mutation_test.sh FILE [TEST_FILE ...]}
shift
if [ $# -gt 0 ]; then
  tests="$*"
else
  # the quick tests that exercise each file that is routinely mutation-tested
  case "$file" in
    mae_ast/core/masking.py)    tests="tests/test_masking.py tests/test_core.py tests/test_padding.py" ;;
    mae_ast/core/loss.py)       tests="tests/test_loss.py tests/test_masks_per_clip.py tests/test_core.py tests/test_padding.py" ;;
    mae_ast/core/metrics.py)    tests="tests/test_finetune_units.py tests/test_classify_tools.py" ;;
    mae_ast/core/features.py)   tests="tests/test_audio.py tests/test_extractor.py" ;;
    # test_hear.py also reaches the extractor, but its fixtures make a mutant take about a minute
    mae_ast/core/extractor.py)  tests="tests/test_extractor.py tests/test_batch_independence.py" ;;
    mae_ast/core/checkpoint.py) tests="tests/test_core.py tests/test_tools.py tests/test_classify_tools.py tests/test_hub.py" ;;
    mae_ast/manifest.py)        tests="tests/test_manifest.py" ;;
    mae_ast/labels.py)          tests="tests/test_labels.py tests/test_manifest.py" ;;
    *) echo "name the tests that cover $file: bash tools/mutation_test.sh $file tests/test_x.py" >&2; exit 2 ;;
  esac
  tests=$(for t in $tests; do [ -f "$t" ] && echo -n "$t "; done)
fi
# a dev dependency, not part of tools/setup.sh; 3.x forks per mutant from one loaded process and
# runs only the tests that reach the mutated function (2.x re-imports torch for every mutant)
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q "mutmut==3.8.1"
scratch=$(mktemp -d /tmp/mutation.XXXXXX)
tar -C "$ROOT" --exclude=./.venv --exclude=./.venv-hear --exclude=./.git --exclude=./demo_runs \
    --exclude='*/__pycache__' --exclude=./mutants -cf - . | tar -C "$scratch" -xf -
# setup.cfg lists are one item a line
{ echo; echo "[mutmut]"; echo "source_paths = mae_ast"; echo "only_mutate = $file"
  echo "process_isolation = forkserver"  # torch is not fork-safe once it has run
  # docs/ and README.md: some tests check that the docs show the commands the tools accept
  echo "also_copy ="; for d in config/ tools/ s3prl_upstream/ hydra_plugins/ docs/ README.md; do echo "    $d"; done
  echo "pytest_add_cli_args_test_selection ="; for t in $tests; do echo "    $t"; done
  echo "pytest_add_cli_args ="; for a in -m "not slow" -p no:cacheprovider; do echo "    $a"; done
} >> "$scratch/setup.cfg"
cd "$scratch"
echo "[mutation] $file against: $tests (scratch copy: $scratch)"
"$ROOT/.venv/bin/mutmut" run --max-children "${MUTATION_JOBS:-2}" || true
"$ROOT/.venv/bin/mutmut" results || true
echo "[mutation] scratch copy: $scratch"
