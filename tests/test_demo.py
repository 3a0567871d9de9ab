"""The main job, shortened: tools/demo.py builds a small corpus from two Debian packages
(installed by tools/setup.sh), pretrains for a minute on the CPU and writes the report; a rerun
reuses every step, and one with more minutes continues the training."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGES = ["fillets-ng-data-nl", "sonic-pi-samples"]


def installed(package):
    return subprocess.run(["dpkg", "-s", package], capture_output=True).returncode == 0


def demo(out, minutes=1, finetune_minutes=0.2):
    cmd = [sys.executable, str(REPO / "tools" / "demo.py"), "--minutes", str(minutes), "--hours-of-audio", "0.1",
           "--finetune-minutes", str(finetune_minutes),
           "--packages", ",".join(PACKAGES), "--out", str(out), "--cpu"]
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


def snapshot_mtimes(*folders):
    """{path: mtime_ns} of every file under the folders."""
    return {str(p): p.stat().st_mtime_ns for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def check_losses_are_the_logs(s, run):
    """report.json's last train and validation losses are the last records of hydra_train.log,
    as mae_ast.fairseq_log reads them, and its update count the last one logged (that of
    checkpoint_last.pt: a run ends with a validation)."""
    from mae_ast import fairseq_log

    records = fairseq_log.read_log_file(run / "hydra_train.log")
    for part, kind in (("train", "train_inner"), ("valid", "valid")):
        last = [r for r in fairseq_log.last_per_update(records, kind) if r.number("loss") is not None][-1]
        assert s[part] == {key: last.number(key) for key in ("loss", "loss_recon", "loss_info_nce")}, (part, last)
    assert s["updates"] == max(r.number("num_updates") for r in records if r.kind in ("train_inner", "valid"))
    return records


def check_html_shows_the_report(s, html):
    """The numbers of index.html are report.json's, formatted as html.py formats them."""
    from mae_ast.demo.console import format_number

    assert f"trained for {s['updates']} updates" in html
    for label, part in (("first validation", "first_valid"), ("last validation", "valid"), ("last train", "train")):
        row = "".join(f"<td>{format_number(s[part][key])}</td>" for key in ("loss", "loss_recon", "loss_info_nce"))
        assert f"<tr><td>{label}</td>{row}</tr>" in html, (label, s[part])
    for r in s["reconstructions"]:
        assert f"<p>masked MSE {r['mse']:.3f}</p><img src='{r['figure']}'>" in html

    def acc(res):
        return f"{format_number(res['accuracy'])} ({format_number(res['balanced_accuracy'])})"

    for task, res in s["probe"].items():
        assert f"{res['train_clips']} training clips from {res['train_files']} files, {res['test_clips']} " in html
        rows = [("pretrained MAE-AST, mean of all layers", res["pretrained"]["all"]),
                ("random init, mean of all layers", res["random"]["all"]),
                ("pretrained MAE-AST, last layer", res["pretrained"]["layer4"]),
                ("random init, last layer", res["random"]["layer4"]), ("log-mel mean", res["logmel"])]
        for label, r in rows:
            assert f"<tr><td>{label}</td><td>{acc(r)}</td></tr>" in html, (task, label, r)
        for i in range(1, 5):
            layer = f"layer{i}"
            assert f"<tr><td>{layer}</td><td>{acc(res['pretrained'][layer])}</td><td>{acc(res['random'][layer])}</td></tr>" in html


def check_finetuning(s, out, html):
    """The fine-tuning stage: three runs on labelled manifests split by recording, each scored
    by tools/evaluate.py on the test clips; the report shows evaluate.py's figures."""
    from mae_ast.demo.console import format_number
    from mae_ast.labels import LabelSet

    ft = s["finetuning"]
    data = out / "finetune" / "data"
    assert ft["task"] == "category" and ft["classes"] == LabelSet.load(str(data / "labels.csv")).names
    assert set(ft["runs"]) == {"pretrained", "random", "probe"}
    test_clips = len((data / "test.tsv").read_text().splitlines()) - 1
    for name, run in ft["runs"].items():
        assert run == dict(json.loads((out / "finetune" / f"eval_{name}" / "metrics.json").read_text()),
                           title=run["title"], updates=run["updates"], confusion_png=run["confusion_png"],
                           best_valid_accuracy=run["best_valid_accuracy"])
        assert run["clips"] == test_clips > 5 and 0 <= run["accuracy"] <= 1 and run["updates"] > 0
        assert f"<td>{run['title']}</td><td>{format_number(run['accuracy'])}</td>" in html
    # chunks of one recording sit on one side only
    files = {}
    for row in (out / "corpus" / "index.tsv").read_text().splitlines()[1:]:
        cells = row.split("\t")
        files[cells[0]] = cells[5]
    sides = [{files[line.split("\t")[0]] for line in (data / f"{split}.tsv").read_text().splitlines()[1:]}
             for split in ("train", "valid", "test")]
    assert not (sides[0] & sides[2]) and not (sides[0] & sides[1]) and not (sides[1] & sides[2])
    assert (out / "report" / "finetune_confusion.png").stat().st_size > 5000 and "finetune_confusion.png" in html
    # the frozen encoder stayed the pretrained one
    import torch

    probe = torch.load(out / "finetune" / "probe" / "checkpoints" / "checkpoint_best.pt", weights_only=False)
    pretrained = torch.load(out / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    for key, value in probe["model"].items():
        if key.startswith("backbone.encoder.layers."):
            assert torch.equal(value, pretrained["model"][key[len("backbone."):]]), key


@pytest.mark.slow
@pytest.mark.timeout(1500)
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

    # the report's numbers are the run's: losses from hydra_train.log, index.html from report.json
    run = out / "run"
    first_records = check_losses_are_the_logs(s, run)
    check_html_shows_the_report(s, html)
    check_finetuning(s, out, html)

    # a rerun reuses the corpus, manifests, checkpoint and report
    again = demo(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for step in ("corpus: reusing", "manifests: reusing", "training: reusing", "fine-tuning: reusing",
                 "report: reusing"):
        assert step in again.stdout, again.stdout

    # a rerun with more minutes continues from checkpoint_last.pt (the update count goes on)
    # on the same corpus and manifests, and rewrites the report
    built = snapshot_mtimes(out / "corpus", out / "manifests")
    more = demo(out, minutes=1.5, finetune_minutes=0)
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    for step in ("corpus: reusing", "manifests: reusing", "training: resuming"):
        assert step in more.stdout, more.stdout
    assert snapshot_mtimes(out / "corpus", out / "manifests") == built
    from mae_ast import fairseq_log

    records = fairseq_log.read_log_file(run / "hydra_train.log")
    assert records[: len(first_records)] == first_records  # the resumed run appends to the log
    loaded = re.findall(r"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)",
                        (run / "hydra_train.log").read_text())
    assert [int(n) for n in loaded] == [s["updates"]]  # the first run's checkpoint, as its report said
    new = [int(r.number("num_updates")) for r in records[len(first_records):]]
    # no restart from update 1: the count goes on (a train_inner record every 10 updates)
    assert new and s["updates"] < new[0] <= s["updates"] + 10 and new == sorted(new), (s["updates"], new)
    s2 = json.loads((report / "report.json").read_text())
    assert s2["updates"] == new[-1] > s["updates"] and s2["checkpoint_stamp"] != s["checkpoint_stamp"]
    check_losses_are_the_logs(s2, run)
    html2 = (report / "index.html").read_text()
    check_html_shows_the_report(s2, html2)

    # the probe accuracies are what mae_ast.demo.probe computes again on that checkpoint and corpus
    import torch

    from mae_ast.demo.corpus import read_index
    from mae_ast.demo.probe import run_probe

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))  # as report.write_report does
    try:
        assert run_probe(run / "checkpoints" / "checkpoint_last.pt", out / "corpus", read_index(out / "corpus")) == s2["probe"]
    finally:
        torch.set_num_threads(threads)


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
