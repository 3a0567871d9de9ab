"""tools/gpu_check.sh: without a GPU it says so and exits 0 at once (no setup, no runs); with
GPU_CHECK_DEVICE=cpu its whole pipeline runs on the CPU (the real fairseq-hydra-train runs,
s3prl upstream, HEAR, classify.py and bench.py, tiny), each path with its summary line."""
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

SCRIPT = REPO / "tools" / "gpu_check.sh"


def run_script(env, timeout=60):
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO))


def bare_env(path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env["PATH"] = path
    return env


def test_without_nvidia_smi_it_says_so_and_exits_0(tmp_path):
    # bash and coreutils, nothing else: no nvidia-smi
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("bash", "dirname", "cat", "head"):
        found = subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        (tools / name).symlink_to(found)
    started = time.time()
    proc = run_script(bare_env(str(tools)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "gpu_check: no GPU on this machine (nvidia-smi finds none): nothing to check\n"
    assert time.time() - started < 10  # nothing set up, nothing run


def test_a_driver_without_a_gpu_is_no_gpu(tmp_path):
    """nvidia-smi present but finding no device (a driver on a machine without a GPU)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    (tools / "nvidia-smi").chmod(0o755)
    proc = run_script(bare_env(f"{tools}:{os.environ['PATH']}"))
    assert proc.returncode == 0 and "no GPU on this machine" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_pipeline_runs_on_a_cpu(tmp_path):
    # GPU_CHECK_PYTHON: the way a GPU machine without network runs it (CI has set up already)
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_OUT=str(tmp_path / "out"), OMP_NUM_THREADS="2",
               GPU_CHECK_PYTHON=sys.executable)
    proc = run_script(env, timeout=1200)
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert proc.returncode == 0, proc.stdout + log[-5000:]
    status = {line.split()[1]: line.split()[0] for line in summary[:-1]}
    assert status == {"pretrain-fp16": "SKIP", "pretrain-bf16": "PASS", "finetune-fp32": "PASS",
                      "s3prl-upstream": "PASS", "hear": "PASS", "classify": "PASS", "bench": "PASS"}, summary
    assert summary[-1].startswith("gpu_check: 7 of 7 paths passed or skipped")
    # the figures are the runs' own: the loss fell over the 50 logged updates
    line = next(l for l in summary if "pretrain-bf16" in l)
    first, last = (float(x) for x in line.split("loss ")[1].split(" over")[0].split(" -> "))
    assert last < first and "over 50 updates" in line
    assert "fairseq-hydra-train" in log and "tools/bench.py --device cpu --quick --tiny" in log


@pytest.mark.slow
def test_the_check_ends_within_its_budget(tmp_path):
    """GPU_CHECK_BUDGET_S bounds the whole run: commands still running then are stopped and
    their paths fail, each path still with its line."""
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_OUT=str(tmp_path / "out"), OMP_NUM_THREADS="2",
               GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_BUDGET_S="3")
    started = time.time()
    proc = run_script(env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    names = [line.split()[1] for line in summary[:-1]]
    assert names[:3] == ["corpus", "pretrain-fp16", "pretrain-bf16"] and "bench" in names, summary
    assert "stopped after" in summary[0]
    assert time.time() - started < 120
