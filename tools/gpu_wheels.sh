#!/usr/bin/env bash
# Prepares what tools/gpu_check.sh needs on a lent GPU machine that has no network (this
# workplace's H200: Python 3.12, torch 2.11, numpy 2.x, scipy, sklearn, safetensors; no fairseq,
# hydra, soundfile, PyAV, s3prl or espeak-ng). Run it HERE (it needs PyPI), then on the GPU machine:
#
#   bash tools/gpu_wheels.sh        # writes .whl/ (~22 MB) and .espeak/ (~14 MB), both git-ignored
#   # device run, carrying [".whl", ".espeak"]:
#   PATH=$PWD/.espeak/bin:$PATH GPU_CHECK_PYTHON=python3 GPU_CHECK_WHEELS=.whl GPU_CHECK_OUT=$OUT bash tools/gpu_check.sh
#
# Learned there (docs/troubleshooting.md): do NOT carry numpy<2 (the image's scipy and sklearn
# are built for numpy 2 and fail to import under 1.26, and fairseq imports sklearn); PyAV is
# left out to stay under the 64 MiB a call may carry (bench's data section is then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for d in .whl .espeak; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
rm -rf .whl && mkdir .whl
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
$PY -m pip download -q --no-deps "${plat[@]}" -d .whl "fairseq-fixed==0.12.3.1" "hydra-core==1.3.2" \
  "omegaconf==2.3.0" bitarray "soundfile==0.14.0" cffi pycparser
# pure-Python sdists: built into wheels here
$PY -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3" "s3prl==0.4.18"
# espeak-ng (bench.py speaks its clips): the binary, the libraries it links beyond libc, and
# the data of the voices bench uses, behind a wrapper that points it at them
command -v espeak-ng >/dev/null || { echo "espeak-ng is not installed here (bash tools/setup.sh)" >&2; exit 1; }
rm -rf .espeak && mkdir -p .espeak/bin .espeak/lib
cp "$(command -v espeak-ng)" .espeak/bin/espeak-ng.real
for lib in $(ldd "$(command -v espeak-ng)" | awk '/=>/ {print $3}'); do
  case $(basename "$lib") in libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*) ;; *) cp -L "$lib" .espeak/lib/ ;; esac
done
data=$(dirname "$(dpkg -L espeak-ng-data | grep '/espeak-ng-data/phondata$')")
cp -r "$data" .espeak/
for f in .espeak/espeak-ng-data/*_dict; do
  case $(basename "$f") in en_dict|de_dict|fr_dict|es_dict) ;; *) rm "$f" ;; esac
done
cat > .espeak/bin/espeak-ng <<'WRAP'
#!/bin/sh
here=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH="$here/lib" ESPEAK_DATA_PATH="$here" exec "$here/bin/espeak-ng.real" "$@"
WRAP
chmod +x .espeak/bin/espeak-ng
.espeak/bin/espeak-ng -w /dev/null "ready"
du -sh .whl .espeak
