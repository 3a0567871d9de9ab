"""tools/bench.py's short-clip fine-tuning rows (issue 22: bf16 autocast was reported 10x slower
than fp32 on 16 clips of 1 s with a small encoder): the table is printed with every row timed,
so the comparison cannot silently drop out of the bench. The tiny model's figures mean nothing."""
import re
import subprocess
import sys

import pytest

from conftest import REPO


def test_bench_prints_short_clip_rows_fp32_beside_bf16():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--quick", "--tiny", "--threads", "1",
                           "--sections", "finetune", "--models", "patch"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### finetune, short clips"))
    rows = {}
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    # 16 one-second clips and the longest batch (--quick: 4 x 3 s), each in fp32 and bf16
    assert set(rows) == {f"{clips}, {p}" for clips in ("16 x 1 s", "4 x 3 s") for p in ("fp32", "bf16-autocast")}, rows
    for name, (plain, kernels, ratio) in rows.items():
        for cell in (plain, kernels):
            assert re.fullmatch(r"[0-9.]+ \([0-9.]+\)", cell) and float(cell.split()[0]) > 0, (name, cell)
        assert re.fullmatch(r"[0-9.]+x", ratio) and float(ratio[:-1]) > 0, (name, ratio)
        if name.endswith("fp32"):
            assert ratio == "1.00x"


def test_bench_prints_a_row_per_masks_per_clip_with_its_sequences():
    """The masks section (task.masks_per_clip): K = 1, 4, 16 on the same clips, K x B sequences each,
    time per clip and per masked sequence, each timed (a failing K would print 'fails')."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--quick", "--tiny", "--threads", "1",
                           "--sections", "masks", "--models", "patch"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### masks per clip: patch model"))
    assert "4 clips x 3 s" in lines[start]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start + 3:start + 6]]
    assert [(r[0], r[1]) for r in rows] == [("1", "4"), ("4", "16"), ("16", "64")], rows
    for k, sequences, step, per_clip, per_sequence, ratio in rows:
        seconds = float(step.split()[0])
        assert re.fullmatch(r"[0-9.]+ \([0-9.]+\)", step) and seconds > 0, step
        assert float(per_clip) == pytest.approx(seconds / 4, abs=6e-3)
        assert float(per_sequence) == pytest.approx(seconds / int(sequences), abs=6e-3)
    assert rows[0][5] == "1.00x"
    assert any(line.startswith("masks per clip, patch, 3 s clips: K=1 ") for line in lines)
