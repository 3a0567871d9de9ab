"""Issue 6 through real fairseq runs: several processes, broken manifests."""
import os
import signal
import subprocess

import pytest
import torch

from conftest import REPO, VENV_BIN, fairseq_train, tiny_model_overrides
from test_training import train_log

pytestmark = pytest.mark.slow


def run_process_group(cmd, env, timeout):
    """subprocess.run, but a timeout kills torchrun's workers too, not only torchrun."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
            raise AssertionError(f"timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, popen.returncode, out, err)


def test_two_cpu_processes_train_in_step(corpus, tmp_path):
    """`torchrun --nproc_per_node=2 fairseq-hydra-train ... common.cpu=true`: both ranks
    start equal, each reads its own share of the data, and they end with equal parameters."""
    run_dir, probe = tmp_path / "run", tmp_path / "probe"
    probe.mkdir()
    cmd = [
        str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node=2",
        str(VENV_BIN / "fairseq-hydra-train"), "--config-name", "mae_ast",  # no --config-dir: our Hydra plugin adds it
        f"common.user_dir={REPO / 'tests' / 'rank_probe'}", "task._name=mae_ast_rank_probe",
        f"task.data={corpus['manifests']}", f"hydra.run.dir={run_dir}",
        "common.cpu=true", "common.fp16=false", "common.log_interval=1", "common.log_format=json",
        "dataset.num_workers=0", "dataset.max_tokens=800000", "task.min_sample_size=8000",
        "distributed_training.distributed_world_size=2", "distributed_training.distributed_backend=gloo",
        "optimization.max_update=3", "optimization.lr=[0.001]", "lr_scheduler.warmup_updates=1",
        *tiny_model_overrides(patch=True),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", RANK_PROBE_DIR=str(probe))
    proc = run_process_group(cmd, env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    train_examples = sum(1 for _ in open(corpus["manifests"] / "train.tsv")) - 1
    inner = [r for kind, r in train_log(proc) if kind == "train_inner"]
    assert [int(r["num_updates"]) for r in inner] == [1, 2, 3]
    # bsz is summed over ranks: every clip once per update means each rank read its own half
    assert all(int(r["bsz"]) == train_examples for r in inner)

    start = [torch.load(probe / f"start_rank{r}.pt") for r in (0, 1)]
    end = [torch.load(probe / f"valid_rank{r}.pt") for r in (0, 1)]
    assert start[0].keys() == end[1].keys() and len(end[0]) > 10
    for name in end[0]:
        assert torch.equal(start[0][name], start[1][name]), f"{name} differs at start"
        assert torch.equal(end[0][name], end[1][name]), f"{name} differs between ranks after training"
    moved = [n for n in end[0] if not torch.equal(start[0][n], end[0][n])]
    assert len(moved) > len(end[0]) // 2, "training changed the parameters"
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").is_file()


MALFORMED = {
    "no_tab": lambda root, rows: [root, rows[0], rows[1].replace("\t", " "), *rows[2:]],
    "length_not_a_number": lambda root, rows: [root, rows[0], rows[1].split("\t")[0] + "\t12k", *rows[2:]],
    "no_root_line": lambda root, rows: rows,
}
WHAT = {"no_tab": ":3: expected 'relative/path<TAB>num_samples'",
        "length_not_a_number": ":3: length '12k' is not a whole number",
        "no_root_line": ":1: the first line must be the audio root folder"}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_stops_training_at_start(corpus, tmp_path, case):
    lines = (corpus["manifests"] / "train.tsv").read_text().splitlines()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "train.tsv").write_text("\n".join(MALFORMED[case](lines[0], lines[1:])) + "\n")
    (manifests / "valid.tsv").write_text((corpus["manifests"] / "valid.tsv").read_text())
    proc = fairseq_train(manifests, tmp_path / "run", *tiny_model_overrides(), "optimization.max_update=2",
                         check=False, timeout=300)
    assert proc.returncode != 0
    message = f"{manifests / 'train.tsv'}{WHAT[case]}"
    assert message in proc.stdout + proc.stderr
    assert "train_inner" not in proc.stdout, "no update happened"
