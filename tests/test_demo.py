"""The main job, shortened: tools/demo.py builds a small corpus from two Debian packages
(installed by tools/setup.sh), pretrains for a minute on the CPU and writes the report; a rerun
reuses every step."""
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGES = ["fillets-ng-data-nl", "sonic-pi-samples"]


def installed(package):
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def demo(out, *extra):
    cmd = [sys.executable, str(REPO / "tools" / "demo.py"), "--minutes", "1", "--hours-of-audio", "0.1",
           "--packages", ",".join(PACKAGES), "--out", str(out), "--cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


def finite_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from finite_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_end_to_end(tmp_path):
    if not all(map(installed, PACKAGES)) and os.geteuid() != 0:
        pytest.skip(f"needs Debian packages {PACKAGES} (tools/setup.sh installs them as root)")
    out = tmp_path / "demo"
    proc = demo(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "report: " in proc.stdout and "index.html" in proc.stdout.splitlines()[-2]

    # corpus: 16 kHz mono flac chunks of at most 10 s from both packages, listed in index.tsv
    import soundfile as sf

    rows = [line.split("\t") for line in (out / "corpus" / "index.tsv").read_text().splitlines()[1:]]
    assert {r[1] for r in rows} == {"speech", "effects"} and {r[3] for r in rows} == set(PACKAGES)
    total = sum(float(r[7]) for r in rows)
    assert 0.08 * 3600 < total < 0.12 * 3600
    for r in rows[:: max(1, len(rows) // 20)]:
        info = sf.info(str(out / "corpus" / r[0]))
        assert info.samplerate == 16000 and info.channels == 1 and info.duration <= 10.01

    report = out / "report"
    html = (report / "index.html").read_text()
    s = json.loads((report / "report.json").read_text())
    for name in ["loss_curves.png"] + [r["figure"] for r in s["reconstructions"]]:
        assert (report / name).stat().st_size > 10000 and name in html
    assert len(s["reconstructions"]) >= 2
    assert s["updates"] >= 10
    for part in ("train", "valid"):
        for key in ("loss", "loss_recon", "loss_info_nce"):
            assert math.isfinite(s[part][key])
    assert all(math.isfinite(x) for x in finite_numbers(s))
    probe = s["probe"]["category"]
    assert probe["classes"] == ["effects", "speech"] and probe["test_clips"] > 10
    for name in ("pretrained", "random"):
        assert set(probe[name]) == {f"layer{i}" for i in range(1, 5)} | {"all"}
    for res in [probe["logmel"], *probe["pretrained"].values(), *probe["random"].values()]:
        assert 0 <= res["accuracy"] <= 1
    assert "Linear probe" in html and "random init" in html

    # a rerun reuses the corpus, manifests, checkpoint and report
    again = demo(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for step in ("corpus: reusing", "manifests: reusing", "training: reusing", "report: reusing"):
        assert step in again.stdout, again.stdout


def test_corpus_plan_shares_hours_between_categories_then_sources():
    """A third of the time per category and, within one, an equal share per source; a category
    or source with too little audio gives what it has and leaves the rest to the others."""
    from mae_ast.demo.corpus import CHUNK_SECONDS, AudioFile, plan_chunks

    def files(source, category, seconds, count):
        return [AudioFile(f"/usr/share/{source}/{i}.ogg", "pkg", source, category, "", seconds) for i in range(count)]

    library = (files("long-talk", "speech", 95.0, 40) + files("short-talk", "speech", 3.0, 200)
               + files("songs", "music", 180.0, 30) + files("clicks", "effects", 1.5, 60))
    plan = plan_chunks(library, hours=0.5)
    seconds = {}
    for chunk in plan:
        seconds[chunk["source"]] = seconds.get(chunk["source"], 0.0) + chunk["seconds"]
        assert chunk["seconds"] <= CHUNK_SECONDS
    assert seconds["clicks"] == 90.0  # all the effects there are
    rest = (1800 - 90) / 2  # 855 s each for speech and music
    assert rest <= seconds["songs"] < rest + CHUNK_SECONDS
    assert rest / 2 <= seconds["long-talk"] < rest / 2 + CHUNK_SECONDS
    assert rest / 2 <= seconds["short-talk"] < rest / 2 + 3.0
    assert len({chunk["path"] for chunk in plan}) == len(plan)
    assert plan == plan_chunks(library, hours=0.5)  # the same plan on every run: finished chunks are reused
