"""tools/bench.py's short-clip fine-tuning rows (issue 22: bf16 autocast was reported 10x slower
than fp32 on 16 clips of 1 s with a small encoder): the table is printed with every row timed,
so the comparison cannot silently drop out of the bench. The tiny model's figures mean nothing."""
import re
import subprocess
import sys

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
