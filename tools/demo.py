#!/usr/bin/env python
"""Pretrain a small MAE-AST on real recordings that Debian ships, and write a report.

    bash tools/demo.sh [--minutes 7] [--hours-of-audio 1.5] [--audio DIR] [--out demo_runs/default]

Steps (each is reused when the command runs again):
  1. corpus: speech (game dialogue in Czech and Dutch, spoken descriptions, letters and words in
     ~20 languages), music (Wesnoth, Hedgewars) and sound effects (Tux Paint, Hedgewars, Sonic Pi)
     from Debian packages, cut into 16 kHz mono flac chunks of at most 10 s, a balanced mix of the
     three categories, near-silent chunks dropped -> OUT/corpus (index.tsv lists every chunk)
  2. manifests (tools/make_manifest.py)                                  -> OUT/manifests
  3. pre-training with fairseq-hydra-train for --minutes (total: a rerun with a larger value
     continues from checkpoint_last.pt): a 4-layer patch model on CPU, a 6-layer wider one with
     bigger batches on a GPU                                               -> OUT/run
  4. report: loss curves, reconstructions of validation clips, a linear probe of the pretrained
     encoder against the same encoder at random init and plain log-mel   -> OUT/report/index.html

The packages are installed with apt-get when running as root; otherwise the command prints
the apt-get line to run. --audio DIR trains on your own audio instead (no probe then, unless
DIR holds sub-folders, which then serve as the probe's classes).
"""
import argparse
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
SAMPLE_RATE = 16000
CHUNK_SECONDS = 10.0
MIN_SECONDS = 0.5  # the training's task.min_sample_size
SILENCE_DBFS = -45.0  # a chunk whose loud frames (95th percentile) stay below this is dropped
CATEGORIES = ("speech", "music", "effects")
PACKAGES = ("fillets-ng-data-cs", "fillets-ng-data-nl", "tuxpaint-stamps-default", "klettres-data",
            "ktuberling-data", "wesnoth-1.16-music", "hedgewars-data", "sonic-pi-samples")
AUDIO_EXTS = (".ogg", ".opus", ".wav", ".flac")
T0 = time.time()


def log(msg):
    print(f"[demo {time.time() - T0:6.0f}s] {msg}", flush=True)


# ---- 1. corpus --------------------------------------------------------------------------------
def classify(package: str, path: str):
    """(source, category, language or '') of one audio file of a package, or None to skip."""
    parts = path.split("/")
    if package.startswith("fillets-ng-data-"):
        lang = package.rsplit("-", 1)[1]
        return f"fillets-{lang}", "speech", lang
    if package == "tuxpaint-stamps-default":
        m = re.search(r"_desc_([A-Za-z_@]+)\.ogg$", path)
        return ("tuxpaint-speech", "speech", m.group(1)) if m else ("tuxpaint-effects", "effects", "")
    if package == "klettres-data":
        return "klettres", "speech", parts[4]
    if package == "ktuberling-data":
        return "ktuberling", "speech", parts[5] if len(parts) > 6 else ""
    if package.startswith("wesnoth") and "/music/" in path:
        return "wesnoth-music", "music", ""
    if package == "hedgewars-data":
        if "/Data/Music/" in path:
            return "hedgewars-music", "music", ""
        if "/Data/Sounds/voices/" in path:
            return "hedgewars-voices", "speech", ""
        if "/Data/Sounds/" in path:
            return "hedgewars-effects", "effects", ""
        return None
    if package == "sonic-pi-samples" and "/samples/" in path:
        return "sonic-pi", "effects", ""
    return None


def ensure_packages(packages):
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    line = "apt-get install -y --no-install-recommends " + " ".join(missing)
    if os.geteuid() != 0:
        sys.exit(f"[demo] the built-in corpus needs Debian packages that are not installed; run\n"
                 f"    sudo {line}\n[demo] or train on your own audio with --audio DIR")
    log(f"installing {len(missing)} Debian packages (about 650 MB for all eight, a few minutes): {line}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(line.split(), env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(line.split(), env=env, check=True, stdout=subprocess.DEVNULL)


def survey(packages):
    """Every usable audio file of the packages with its duration: [(path, package, source,
    category, language, seconds)]."""
    import soundfile as sf

    files, unreadable = [], []
    for package in packages:
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
        for path in sorted(listing.splitlines()):
            if not path.lower().endswith(AUDIO_EXTS) or not os.path.isfile(path):
                continue
            kind = classify(package, path)
            if kind is None:
                continue
            try:
                seconds = sf.info(path).duration
            except Exception:
                try:
                    from mae_ast import audio

                    rate, n = audio.probe(path)
                    seconds = n / rate
                except Exception:
                    unreadable.append(path)
                    continue
            if seconds >= MIN_SECONDS:
                files.append((path, package, *kind, seconds))
    if unreadable:
        log(f"corpus: left out {len(unreadable)} unreadable files: {', '.join(unreadable[:5])}"
            + (" ..." if len(unreadable) > 5 else ""))
    return files


def plan_chunks(files, hours, seed=0):
    """Choose chunks (<= 10 s windows of the files) for ``hours`` of audio: a third per category
    (a category short of material leaves its share to the others), and within a category an equal
    share per source (likewise). Chunks are drawn at random, so long tracks contribute windows
    from everywhere and many different files are used."""
    rng = random.Random(seed)
    chunks = defaultdict(list)  # source -> chunks
    category_of = {}
    for path, package, source, category, lang, seconds in files:
        n = max(1, math.ceil(seconds / CHUNK_SECONDS))
        length = seconds / n
        for i in range(n):
            chunks[source].append(dict(file=path, package=package, source=source, category=category,
                                       language=lang, start=round(i * length, 3), seconds=round(length, 3)))
        category_of[source] = category
    for source in sorted(chunks):
        rng.shuffle(chunks[source])
    available = {s: sum(c["seconds"] for c in cs) for s, cs in chunks.items()}

    def share(total, demands):
        """Water-filling: equal shares, capped by what each can give."""
        out, left, open_ = {}, total, dict(demands)
        while open_ and left > 1e-6:
            each = left / len(open_)
            small = {k: v for k, v in open_.items() if v <= each}
            if not small:
                out.update({k: each for k in open_})
                return out
            for k, v in small.items():
                out[k] = v
                left -= v
                del open_[k]
        out.update({k: 0.0 for k in open_})
        return out

    per_category = share(hours * 3600, {c: sum(v for s, v in available.items() if category_of[s] == c)
                                        for c in CATEGORIES if any(category_of[s] == c for s in available)})
    chosen = []
    for category, seconds in per_category.items():
        sources = {s: v for s, v in available.items() if category_of[s] == category}
        for source, quota in share(seconds, sources).items():
            got = 0.0
            for c in chunks[source]:
                if got >= quota:
                    break
                chosen.append(c)
                got += c["seconds"]
    for c in chosen:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(c["file"].split("/usr/share/", 1)[-1])[0])
        c["path"] = f"{c['category']}/{c['source']}/{stem}_{int(c['start'] * 1000)}.flac"
    return sorted(chosen, key=lambda c: c["path"])


def _write_chunk(job):
    """Decode, resample, check loudness, write flac. Returns (path, kept, reason)."""
    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from mae_ast import audio

    c, folder = job
    out = Path(folder) / c["path"]
    if out.exists():
        return c["path"], True, ""
    try:
        wav = audio.read(c["file"], SAMPLE_RATE, int(c["start"] * SAMPLE_RATE), int(c["seconds"] * SAMPLE_RATE)).numpy()
    except Exception as e:
        return c["path"], False, f"unreadable ({e})"
    frames = wav[: len(wav) // 400 * 400].reshape(-1, 400)
    if len(frames) == 0:
        return c["path"], False, "too short"
    rms_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    if np.percentile(rms_db, 95) < SILENCE_DBFS:
        return c["path"], False, "near-silent"
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        wav = wav / peak
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.flac")
    sf.write(str(tmp), wav, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, out)
    return c["path"], True, ""


def build_corpus(folder: Path, packages, hours: float, jobs: int):
    """Writes the chunks and ``index.tsv``; reused when the plan is unchanged, resumed (finished
    chunks kept) when it was interrupted."""
    from concurrent.futures import ProcessPoolExecutor

    ensure_packages(packages)
    key = hashlib.sha256(json.dumps([sorted(packages), hours, CHUNK_SECONDS, SILENCE_DBFS]).encode()).hexdigest()[:16]
    stamp = folder / ".complete"
    if stamp.exists() and stamp.read_text().strip() == key and (folder / "index.tsv").exists():
        log(f"corpus: reusing {folder} ({len(read_index(folder))} chunks)")
        return
    t = time.time()
    cache = folder / ".survey.json"
    versions = subprocess.run(["dpkg-query", "-W", *packages], capture_output=True, text=True).stdout
    files = None
    if cache.exists():
        cached = json.loads(cache.read_text())
        files = cached["files"] if cached.get("versions") == versions else None
    if files is None:
        files = survey(packages)
        folder.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"versions": versions, "files": files}))
    plan = plan_chunks(files, hours)
    log(f"corpus: {len(files)} audio files in {len(packages)} packages; "
        f"writing {len(plan)} chunks ({sum(c['seconds'] for c in plan) / 3600:.2f} h) to {folder} with {jobs} processes")
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {c["path"] for c in plan}
    for old in folder.rglob("*.flac"):  # chunks of an earlier plan
        if old.relative_to(folder).as_posix() not in wanted:
            old.unlink()
    kept, dropped = set(), Counter()
    with ProcessPoolExecutor(jobs) as pool:
        for i, (path, ok, reason) in enumerate(pool.map(_write_chunk, [(c, str(folder)) for c in plan], chunksize=8)):
            if ok:
                kept.add(path)
            else:
                dropped[reason.split(" (")[0]] += 1
            if (i + 1) % max(1, len(plan) // 10) == 0:
                log(f"corpus: {i + 1}/{len(plan)} chunks")
    rows = [c for c in plan if c["path"] in kept]
    with open(folder / "index.tsv", "w") as f:
        cols = ("path", "category", "source", "package", "language", "file", "start", "seconds")
        f.write("\t".join(cols) + "\n")
        for c in rows:
            f.write("\t".join(str(c[k]) for k in cols) + "\n")
    stamp.write_text(key)
    log(f"corpus: {len(rows)} chunks, {sum(c['seconds'] for c in rows) / 3600:.2f} h, "
        f"dropped {dict(dropped) or 'none'}, in {time.time() - t:.0f} s")


def read_index(folder: Path):
    lines = (folder / "index.tsv").read_text().splitlines()
    cols = lines[0].split("\t")
    rows = [dict(zip(cols, line.split("\t"))) for line in lines[1:]]
    for r in rows:
        r["seconds"] = float(r["seconds"])
    return rows


def index_of_folder(audio: Path):
    """For --audio DIR: every file, its class = its top-level sub-folder (if any)."""
    rows = []
    for p in sorted(audio.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTS + (".mp3", ".mkv", ".mp4", ".webm") and p.is_file():
            rel = p.relative_to(audio)
            top = rel.parts[0] if len(rel.parts) > 1 else ""
            rows.append(dict(path=rel.as_posix(), category=top, source=top, file=str(p), seconds=0.0))
    return rows


# ---- 2./3. manifests and training ---------------------------------------------------------------
def make_manifests(audio: Path, manifests: Path, jobs: int):
    stamp = manifests / ".complete"
    key = str(audio.resolve())
    if stamp.exists() and stamp.read_text() == key:
        log(f"manifests: reusing {manifests}")
        return
    log(f"manifests: tools/make_manifest.py {audio} --dest {manifests}")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_manifest.py"), str(audio), "--dest",
                           str(manifests), "--valid-percent", "0.05", "--jobs", str(jobs), "--min-seconds",
                           str(MIN_SECONDS)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"[demo] make_manifest.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    summary = [l for l in proc.stdout.splitlines() + proc.stderr.splitlines() if l.strip()]
    log("manifests: " + (summary[-1] if summary else "done"))
    stamp.write_text(key)


def model_overrides(gpu: bool):
    if gpu:  # one GPU: a 6-layer 384-wide encoder, ~200 s of audio per batch, fp16
        return ["common.fp16=true", "dataset.num_workers=6", "dataset.max_tokens=3200000",
                "task.max_sample_size=160000", "model.encoder_layers=6", "model.decoder_layers=2",
                "model.encoder_embed_dim=384", "model.decoder_embed_dim=384", "model.encoder_ffn_embed_dim=1536",
                "model.encoder_attention_heads=6", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=300",
                "checkpoint.save_interval_updates=250", "dataset.validate_interval_updates=250"]
    return ["common.cpu=true", "common.fp16=false", "dataset.num_workers=1", "dataset.max_tokens=320000",
            "task.max_sample_size=96000", "model.encoder_layers=4", "model.decoder_layers=1",
            "model.encoder_embed_dim=192", "model.decoder_embed_dim=192", "model.encoder_ffn_embed_dim=768",
            "model.encoder_attention_heads=4", "optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=100",
            "checkpoint.save_interval_updates=100", "dataset.validate_interval_updates=100"]


LOG_RE = re.compile(r"\]\[(train_inner|valid|train)\]\[INFO\] - (\{.*\})")


def train(manifests: Path, run_dir: Path, minutes: float, gpu: bool):
    done = run_dir / ".trained_minutes"
    if done.exists() and float(done.read_text()) >= minutes and (run_dir / "checkpoints" / "checkpoint_last.pt").exists():
        log(f"training: reusing {run_dir} (already trained {float(done.read_text()):g} min; "
            f"pass a larger --minutes to continue)")
        return
    overrides = [
        f"common.user_dir={REPO / 'mae_ast'}", f"task.data={manifests}", f"hydra.run.dir={run_dir}",
        "common.log_interval=10", f"task.min_sample_size={int(MIN_SECONDS * SAMPLE_RATE)}",
        "model.encoder_layerdrop=0", "model.max_token_length=4000", "task.mask_type=chunk_mask",
        "optimization.max_update=100000", f"optimization.stop_time_hours={minutes / 60:.4f}",
        "checkpoint.keep_interval_updates=1", *model_overrides(gpu),
    ]
    cmd = [str(BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / "config" / "pretrain"),
           "--config-name", "mae_ast", *overrides]
    resumed = (run_dir / "checkpoints" / "checkpoint_last.pt").exists()
    log(f"training: {'resuming' if resumed else 'starting'} on {'GPU' if gpu else 'CPU'} until {minutes:g} min "
        f"of training in total; log: {run_dir / 'hydra_train.log'}")
    threads = os.cpu_count() or 1
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        m = LOG_RE.search(line)
        if m and m.group(1) != "train":
            r = json.loads(m.group(2))
            p = "valid_" if m.group(1) == "valid" else ""
            log(f"training: {m.group(1):11s} update {r.get(p + 'num_updates', '?'):>5} loss {r[p + 'loss']} "
                f"(recon {r[p + 'loss_recon']}, InfoNCE {r[p + 'loss_info_nce']})")
    if proc.wait() != 0:
        sys.exit(f"[demo] training failed; see {run_dir / 'hydra_train.log'}\n" + "".join(tail[-15:]))
    done.write_text(str(minutes))


# ---- 4. report ------------------------------------------------------------------------------
def read_curves(run_dir: Path):
    """train_inner and valid records of fairseq's JSON log lines, by update (a resumed run's
    log is appended to the same file; a repeated update keeps the last record)."""
    curves = {"train_inner": {}, "valid": {}}
    log_file = run_dir / "hydra_train.log"
    if not log_file.exists():
        return {"train_inner": [], "valid": []}
    for line in log_file.read_text(errors="replace").splitlines():
        m = LOG_RE.search(line)
        if m and m.group(1) in curves:
            try:
                r = json.loads(m.group(2))
            except json.JSONDecodeError:
                continue
            p = "valid_" if m.group(1) == "valid" else ""
            try:
                rec = {k: float(r[p + k]) for k in ("num_updates", "loss", "loss_recon", "loss_info_nce")}
            except (KeyError, TypeError, ValueError):
                continue
            rec["wall"] = float(r.get(p + "wall", "nan"))
            curves[m.group(1)][int(rec["num_updates"])] = rec
    return {k: [v[u] for u in sorted(v)] for k, v in curves.items()}


def plot_curves(curves, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    titles = {"loss": "total loss (10 x recon + InfoNCE)", "loss_recon": "reconstruction (MSE on masked patches)",
              "loss_info_nce": "InfoNCE (nats)"}
    for ax, key in zip(axes, titles):
        for kind, style in (("train_inner", "-"), ("valid", "o-")):
            pts = [(r["num_updates"], r[key]) for r in curves[kind]]
            if pts:
                ax.plot(*zip(*pts), style, label=kind.replace("_inner", ""), ms=4)
        ax.set_title(titles[key], fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def split_by_file(rows, test_share=0.3, seed=0):
    """Train/test split of labelled clips by source file, stratified by label."""
    rng = random.Random(seed)
    files_of = defaultdict(set)
    for r in rows:
        files_of[r["label"]].add(r["group"])
    test_files = set()
    for label, files in sorted(files_of.items()):
        files = sorted(files)
        rng.shuffle(files)
        if len(files) >= 2:
            test_files.update(files[: max(1, round(test_share * len(files)))])
    return [r for r in rows if r["group"] not in test_files], [r for r in rows if r["group"] in test_files]


PROBE_SECONDS = 2.0
PROBE_SPLITS = 3  # train/test splits by file; the report gives the mean accuracy


def probe_tasks(index, per_class=200, seed=0, min_seconds=PROBE_SECONDS):
    """Labelled clips for the probes: {task: rows with label and group (source file)}. Only
    chunks of at least ``min_seconds``: every probe clip is a window of that length, so that
    clip duration (which differs a lot between sources) cannot give the class away."""
    rng = random.Random(seed)
    index = [r for r in index if r["seconds"] >= min_seconds]
    tasks = {}
    for task, key in (("category", "category"), ("source", "source")):
        by = defaultdict(list)
        for r in index:
            if r.get(key):
                by[r[key]].append(r)
        by = {k: v for k, v in by.items() if len({x["file"] for x in v}) >= 3}
        n_categories = len({r["label"] for r in tasks.get("category", [])})
        if len(by) < 2 or (task == "source" and len(by) <= n_categories):
            continue  # no more sources than categories: the same task again
        rows = []
        for label, items in sorted(by.items()):
            items = sorted(items, key=lambda x: x["path"])
            rng.shuffle(items)
            rows += [dict(r, label=label, group=r["file"]) for r in items[:per_class]]
        tasks[task] = rows
    return tasks


def run_probe(ckpt: Path, corpus: Path, index, out: Path, window=PROBE_SECONDS, device="cpu"):
    import numpy as np
    import torch

    from mae_ast import analysis

    tasks = probe_tasks(index)
    if not tasks:
        return None
    clips = sorted({r["path"] for rows in tasks.values() for r in rows})
    model = analysis.load(str(ckpt), decoder=False, device=device)
    baseline = analysis.random_init_like(model)
    feats = {"logmel": {}, "pretrained": {}, "random": {}}
    t = time.time()
    seconds = {r["path"]: r["seconds"] for r in index}
    for i, rel in enumerate(clips):
        start = max(0.0, (seconds[rel] - window) / 2)  # the middle of the chunk
        wav = analysis.read_audio(str(corpus / rel), max_seconds=window, start_seconds=start)
        feats["logmel"][rel] = analysis.logmel(wav).mean(0).numpy()[None]
        for name, m in (("pretrained", model), ("random", baseline)):
            feats[name][rel] = torch.stack([h.mean(0) for h in analysis.embed_layers(m, wav)]).numpy()
        if (i + 1) % 200 == 0:
            log(f"report: embedded {i + 1}/{len(clips)} probe clips")
    log(f"report: embedded {len(clips)} probe clips in {time.time() - t:.0f} s")
    n_layers = len(model.encoder.layers)
    for name in ("pretrained", "random"):  # the mean of all layers' outputs as one more "layer"
        for rel, v in feats[name].items():
            feats[name][rel] = np.concatenate([v, v.mean(0, keepdims=True)])
    results = {}
    for task, rows in tasks.items():
        splits = [split_by_file(rows, seed=seed) for seed in range(PROBE_SPLITS)]
        labels = sorted({r["label"] for r in rows})
        res = {"classes": labels, "splits": PROBE_SPLITS, "train_clips": len(splits[0][0]), "test_clips": len(splits[0][1]),
               "train_files": len({r['group'] for r in splits[0][0]}), "test_files": len({r['group'] for r in splits[0][1]})}

        def probe(name, layer):
            """Accuracy averaged over PROBE_SPLITS train/test splits by file."""
            pick = lambda rs: np.stack([feats[name][r["path"]][layer] for r in rs])  # noqa: E731
            runs = [analysis.linear_probe(pick(tr), [r["label"] for r in tr], pick(te), [r["label"] for r in te],
                                          groups_train=[r["group"] for r in tr]) for tr, te in splits]
            return {k: float(np.mean([r[k] for r in runs])) for k in ("accuracy", "balanced_accuracy")}

        res["logmel"] = probe("logmel", 0)
        for name in ("pretrained", "random"):
            res[name] = {f"layer{l + 1}": probe(name, l) for l in range(n_layers)}
            res[name]["all"] = probe(name, n_layers)
        results[task] = res
    return results


def pick_validation_clips(manifests: Path, index, count=4):
    """Up to ``count`` validation clips, at least 4 s long where possible, one category after
    another."""
    lines = (manifests / "valid.tsv").read_text().splitlines()
    root = Path(lines[0])
    cat = {r["path"]: r.get("category", "") for r in index}
    clips = [(root / l.split("\t")[0], l.split("\t")[0], int(l.split("\t")[1])) for l in lines[1:] if "\t" in l]
    clips.sort(key=lambda c: (c[2] < 4 * SAMPLE_RATE, c[1]))
    by = defaultdict(list)
    for c in clips:
        by[cat.get(c[1], "")].append(c)
    chosen = []
    while len(chosen) < count and any(by.values()):
        for k in sorted(by):
            if by[k] and len(chosen) < count:
                chosen.append(by[k].pop(0))
    return [(path, rel, cat.get(rel, "")) for path, rel, _ in chosen]


def fmt(x):
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else str(x)


def write_report(run_dir: Path, manifests: Path, corpus: Path, index, out: Path, args, gpu: bool, timings):
    from mae_ast import analysis

    ckpt = run_dir / "checkpoints" / "checkpoint_last.pt"
    out.mkdir(parents=True, exist_ok=True)
    stamp = f"{ckpt.stat().st_mtime_ns}:{ckpt.stat().st_size}"
    if (out / "report.json").exists() and (out / "index.html").exists():
        old = json.loads((out / "report.json").read_text())
        if old.get("checkpoint_stamp") == stamp:
            log(f"report: reusing {out} (checkpoint unchanged)")
            return old
    import torch

    # small per-clip forward passes: more threads than free cores makes them 10-40x slower on a
    # busy 2-core machine (OpenMP threads wait for each other)
    torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))
    device = "cuda" if gpu else "cpu"
    curves = read_curves(run_dir)
    plot_curves(curves, out / "loss_curves.png")
    log("report: loss curves written")

    model = analysis.load(str(ckpt), device=device)
    recon = []
    for i, (path, rel, category) in enumerate(pick_validation_clips(manifests, index)):
        wav = analysis.read_audio(str(path), max_seconds=8.0)
        rec = analysis.reconstruct(model, wav, seed=i)
        name = f"reconstruction_{i}.png"
        analysis.plot_reconstruction(rec, str(out / name), f"{rel} ({category})" if category else rel)
        recon.append({"clip": rel, "category": category, "figure": name, "mse": rec["mse"],
                      "masked_share": float(rec["mask"].mean())})
    log(f"report: {len(recon)} reconstruction figures written")

    probe = run_probe(ckpt, corpus, index, out, device=device)
    last_train = curves["train_inner"][-1] if curves["train_inner"] else {}
    last_valid = curves["valid"][-1] if curves["valid"] else {}
    cfg_model = model.cfg
    summary = {
        "checkpoint": str(ckpt), "checkpoint_stamp": stamp, "device": "GPU" if gpu else "CPU",
        "model": {"encoder_layers": cfg_model.encoder_layers, "encoder_embed_dim": cfg_model.encoder_embed_dim,
                  "decoder_layers": cfg_model.decoder_layers,
                  "patch": f"{cfg_model.ast_kernel_size_time}x{cfg_model.ast_kernel_size_chan}",
                  "mask_type": model.mask_type, "mask_prob": cfg_model.random_mask_prob,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "updates": int(last_train.get("num_updates", last_valid.get("num_updates", 0))),
        "train": {k: last_train.get(k) for k in ("loss", "loss_recon", "loss_info_nce")},
        "valid": {k: last_valid.get(k) for k in ("loss", "loss_recon", "loss_info_nce")},
        "first_valid": {k: curves["valid"][0].get(k) for k in ("loss", "loss_recon", "loss_info_nce")} if curves["valid"] else {},
        "corpus": corpus_summary(index), "reconstructions": recon, "probe": probe, "timings_s": timings,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    (out / "index.html").write_text(render_html(summary, args))
    return summary


def corpus_summary(index):
    by = defaultdict(lambda: [0, 0.0, set()])
    for r in index:
        k = (r.get("category", ""), r.get("source", ""))
        by[k][0] += 1
        by[k][1] += r["seconds"]
        by[k][2].add(r.get("language", ""))
    return [{"category": c, "source": s, "chunks": n, "minutes": round(sec / 60, 1),
             "languages": sorted(l for l in langs if l)} for (c, s), (n, sec, langs) in sorted(by.items())]


def render_html(s, args):
    import html

    def table(header, rows):
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>MAE-AST demo report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%}code{background:#f4f4f4}</style></head><body>",
        "<h1>MAE-AST demo report</h1>",
        f"<p>Checkpoint <code>{html.escape(s['checkpoint'])}</code>: a {s['model']['encoder_layers']}-layer, "
        f"{s['model']['encoder_embed_dim']}-wide encoder ({s['model']['parameters'] / 1e6:.1f} M parameters with the "
        f"decoder), {s['model']['patch']} patches, {s['model']['mask_type']} masking of "
        f"{s['model']['mask_prob']:.0%}, trained for {s['updates']} updates on the {s['device']}.</p>",
        "<h2>Corpus</h2>",
        table(["category", "source", "chunks", "minutes", "languages"],
              [[r["category"], r["source"], r["chunks"], r["minutes"], " ".join(r["languages"])] for r in s["corpus"]]),
        "<h2>Loss curves</h2><p>Train (every 10 updates) and validation; the total is "
        "10 x reconstruction + InfoNCE, as in the paper.</p><img src='loss_curves.png'>",
        table(["", "loss", "loss_recon", "loss_info_nce"],
              [["first validation", *[s["first_valid"].get(k, "") for k in ("loss", "loss_recon", "loss_info_nce")]],
               ["last validation", *[s["valid"].get(k, "") for k in ("loss", "loss_recon", "loss_info_nce")]],
               ["last train", *[s["train"].get(k, "") for k in ("loss", "loss_recon", "loss_info_nce")]]]),
        "<h2>Reconstructions of validation clips</h2><p>Top: the clip's log-mel spectrogram, normalised as "
        "the model sees it. Middle: the patches the encoder was given (masked ones in blue). Bottom: the "
        "decoder's prediction pasted into the masked patches.</p>",
    ]
    for r in s["reconstructions"]:
        parts.append(f"<h3>{html.escape(r['clip'])}</h3><p>masked MSE {r['mse']:.3f}</p><img src='{r['figure']}'>")
    if s["probe"]:
        parts.append("<h2>Linear probe</h2><p>Logistic regression on clip features (mean over time of a 2 s "
                     "window from the middle of each corpus chunk of at least 2 s, so that clip length, which "
                     "differs a lot between sources, gives nothing away), train/test split by source file, so chunks of one "
                     "file never sit on both sides; the L2 weight is chosen on a held-out fifth of the training "
                     "files. <b>Pretrained</b>: our checkpoint's encoder; <b>random init</b>: the same "
                     "architecture freshly initialised (same input normalisation); <b>log-mel</b>: the 128 "
                     "mean log-mel energies. Accuracy on the test files (balanced accuracy in brackets), the mean "
                     f"over {PROBE_SPLITS} random splits by file.</p>")
        for task, res in s["probe"].items():
            layers = sorted((k for k in res["pretrained"] if k != "all"), key=lambda k: int(k[5:]))
            last = layers[-1]
            cell = lambda r: f"{r['accuracy']:.3f} ({r['balanced_accuracy']:.3f})"  # noqa: E731
            parts.append(f"<h3>{html.escape(task)}: {len(res['classes'])} classes</h3><p>"
                         f"{res['train_clips']} training clips from {res['train_files']} files, {res['test_clips']} "
                         f"test clips from {res['test_files']} files; classes: {html.escape(', '.join(res['classes']))}</p>")
            rows = [["pretrained MAE-AST, mean of all layers", cell(res["pretrained"]["all"])],
                    ["random init, mean of all layers", cell(res["random"]["all"])],
                    ["pretrained MAE-AST, last layer", cell(res["pretrained"][last])],
                    ["random init, last layer", cell(res["random"][last])],
                    ["log-mel mean", cell(res["logmel"])]]
            parts.append(table(["features", "test accuracy"], rows))
            parts.append("<details><summary>every layer</summary>" + table(
                ["layer", "pretrained", "random init"],
                [[l, cell(res["pretrained"][l]), cell(res["random"][l])] for l in layers]) + "</details>")
    t = s["timings_s"]
    parts.append("<h2>Run</h2>" + table(["step", "seconds"], [[k, round(v)] for k, v in t.items()]))
    parts.append(f"<p>Command: <code>bash tools/demo.sh {html.escape(' '.join(sys.argv[1:]))}</code>. "
                 "Figures for other clips: <code>python tools/visualize.py CHECKPOINT AUDIO... --out DIR</code>; "
                 "features: <code>python tools/extract_features.py CHECKPOINT AUDIO_DIR --out DIR</code>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=7, help="training time in minutes, in total over reruns (default 7)")
    p.add_argument("--hours-of-audio", type=float, default=1.5,
                   help="size of the built-in corpus in hours (default 1.5; at most ~10)")
    p.add_argument("--audio", type=Path, help="your own audio folder instead of the built-in corpus")
    p.add_argument("--packages", default=",".join(PACKAGES),
                   help="Debian packages for the built-in corpus, comma-separated (default: all eight)")
    p.add_argument("--out", type=Path, default=REPO / "demo_runs" / "default", help="work folder (default demo_runs/default)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the corpus and manifests")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    args = p.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    out = args.out.resolve()
    timings = {}
    t = time.time()
    if args.audio:
        audio = args.audio.resolve()
        index = index_of_folder(audio)
        log(f"corpus: your audio in {audio} ({len(index)} files)")
    else:
        audio = out / "corpus"
        build_corpus(audio, [x for x in args.packages.split(",") if x], args.hours_of_audio, args.jobs)
        index = read_index(audio)
    timings["corpus"] = time.time() - t
    t = time.time()
    make_manifests(audio, out / "manifests", args.jobs)
    if args.audio:  # clip lengths from the manifests (files left out there stay out of the probe)
        lengths = {}
        for split in ("train", "valid"):
            for line in (out / "manifests" / f"{split}.tsv").read_text().splitlines()[1:]:
                rel, n = line.split("\t")
                lengths[rel] = int(n) / SAMPLE_RATE
        index = [dict(r, seconds=lengths[r["path"]]) for r in index if r["path"] in lengths]
    timings["manifests"] = time.time() - t
    t = time.time()
    train(out / "manifests", out / "run", args.minutes, gpu)
    timings["training"] = time.time() - t
    t = time.time()
    s = write_report(out / "run", out / "manifests", audio, index, out / "report", args, gpu, timings)
    timings["report"] = time.time() - t
    v = s["valid"]
    log(f"done in {(time.time() - T0) / 60:.1f} min: {s['updates']} updates; last validation loss "
        f"{fmt(v.get('loss'))} (recon {fmt(v.get('loss_recon'))}, InfoNCE {fmt(v.get('loss_info_nce'))})")
    for task, res in (s.get("probe") or {}).items():
        log(f"probe '{task}' ({len(res['classes'])} classes) test accuracy (all layers): pretrained "
            f"{res['pretrained']['all']['accuracy']:.3f}, random init {res['random']['all']['accuracy']:.3f}, "
            f"log-mel {res['logmel']['accuracy']:.3f}")
    log(f"report: {out / 'report' / 'index.html'}")
    log(f"checkpoint: {out / 'run' / 'checkpoints' / 'checkpoint_last.pt'}")


if __name__ == "__main__":
    main()
