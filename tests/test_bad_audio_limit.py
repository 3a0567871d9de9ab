"""``task.max_bad_audio_fraction`` is really reached: the dataset stops at its 10th failed read
and not before, past that floor the share of failed reads decides, and through fairseq with
loader worker processes a corpus of mostly missing files stops with the error naming the
manifest while one missing file among many is only counted.

(tests/test_dataset.py covers a mostly broken manifest stopping and three failures not
stopping with one process; here: the floor exactly, the share past the floor, and workers.)"""
import logging
import math
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import fairseq_train, read_wav, tiny_model_overrides
from mae_ast import fairseq_log
from mae_ast.fairseq_plugin.dataset import MIN_FAILURES_BEFORE_STOP, MAEASTDataset, TooManyBadFiles
from mae_ast.manifest import Manifest

DATASET_LOGGER = "mae_ast.fairseq_plugin.dataset"
SR = 16000


@pytest.fixture(scope="module")
def speech16(speech_wavs):
    out = []
    for src in speech_wavs:
        wav, rate = read_wav(src)
        out.append(AF.resample(torch.from_numpy(wav), rate, SR).numpy())
    return out


def write_clips(folder, speech16, count, seconds=1.5):
    """``count`` flac clips of real speech, ``seconds`` long each: their relative names."""
    folder.mkdir(parents=True, exist_ok=True)
    rels = []
    for i in range(count):
        wav = np.resize(speech16[i % len(speech16)], int(seconds * SR) + 160 * i)
        rel = f"utt{i}.flac"
        sf.write(folder / rel, wav, SR)
        rels.append(rel)
    return rels


def write_manifest(path, root, rels):
    """A manifest as make_manifest writes it; entries may name the same file more than once."""
    lines = [str(root)] + [f"{rel}\t{sf.info(str(root / rel)).frames}" for rel in rels]
    path.write_text("\n".join(lines) + "\n")
    return Manifest.load(str(path))


def failure_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "skipping unreadable audio" in r.getMessage()]


# ---- the dataset ---------------------------------------------------------------------------------
def test_nine_failures_do_not_stop_the_tenth_does(tmp_path, speech16, caplog):
    """Nine failed reads out of eighteen (a share ten times the limit) pass, each logged; the
    tenth stops the loader with the manifest named. Entries 0-9 name missing files; the other
    990 name one real clip, so a missing entry's substitute is nearly always readable."""
    folder = tmp_path / "audio"
    (good,) = write_clips(folder, speech16, 1)
    missing = [f"gone{i}.flac" for i in range(MIN_FAILURES_BEFORE_STOP)]
    for rel in missing:  # listed while they existed, deleted afterwards
        sf.write(folder / rel, speech16[0][:SR], SR)
    m = write_manifest(tmp_path / "train.tsv", folder, missing + [good] * 990)
    for rel in missing:
        os.remove(folder / rel)
    ds = MAEASTDataset(m, max_sample_size=SR, max_bad_audio_fraction=0.05)
    caplog.set_level(logging.WARNING, logger=DATASET_LOGGER)
    for i in range(MIN_FAILURES_BEFORE_STOP - 1):
        item = ds[i]
        assert item["bad_audio"] == [m.audio_path(i)] and len(item["source"]) == SR
    assert ds.failures == MIN_FAILURES_BEFORE_STOP - 1 == 9, "a substitute was a missing entry too"
    assert ds.failures > 0.05 * ds.reads * 5, (ds.failures, ds.reads)  # far past the share
    assert len(failure_warnings(caplog)) == 9
    with pytest.raises(TooManyBadFiles) as err:
        ds[MIN_FAILURES_BEFORE_STOP - 1]
    message = str(err.value)
    assert ds.failures == 10 and f"10 of {ds.reads} audio reads failed" in message, message
    assert m.path in message and "max_bad_audio_fraction=0.05" in message, message
    assert len(failure_warnings(caplog)) == 10


def test_with_every_read_failing_the_stop_comes_at_exactly_ten(tmp_path, speech16):
    """Every entry missing: one item's substitutes fail one after another; the check after
    each failure lets nine pass (at a 100 % share) and stops at the tenth, long before the
    21 substitutions an item may try."""
    folder = tmp_path / "audio"
    rels = write_clips(folder, speech16, 12)
    m = write_manifest(tmp_path / "train.tsv", folder, rels)
    for rel in rels:
        os.remove(folder / rel)
    ds = MAEASTDataset(m, max_sample_size=SR, max_bad_audio_fraction=0.5)
    with pytest.raises(TooManyBadFiles, match="max_bad_audio_fraction") as err:
        ds[0]
    assert (ds.failures, ds.reads) == (10, 10)
    assert "10 of 10 audio reads failed" in str(err.value) and m.path in str(err.value)


def read_epochs(ds, epochs):
    """Every item of ``epochs`` epochs: the failed reads the items report."""
    reported = 0
    for epoch in range(1, epochs + 1):
        ds.set_epoch(epoch)
        reported += sum(len(ds[i]["bad_audio"]) for i in range(len(ds)))
    return reported


def test_past_the_floor_the_share_decides(tmp_path, speech16):
    """One missing entry in twenty, read over twelve epochs: more than ten failures at about
    5 % of the reads. A limit of 10 % lets them all pass (each counted); 2 % stops the loader
    at the tenth failure, naming the manifest."""
    folder = tmp_path / "audio"
    rels = write_clips(folder, speech16, 20, seconds=0.5)
    m = write_manifest(tmp_path / "train.tsv", folder, rels)
    os.remove(folder / rels[4])

    tolerant = MAEASTDataset(m, max_sample_size=SR, max_bad_audio_fraction=0.10)
    reported = read_epochs(tolerant, 12)
    assert reported == tolerant.failures >= 12 > MIN_FAILURES_BEFORE_STOP
    assert 0.02 * tolerant.reads < tolerant.failures <= 0.10 * tolerant.reads, (tolerant.failures, tolerant.reads)

    strict = MAEASTDataset(m, max_sample_size=SR, max_bad_audio_fraction=0.02)
    with pytest.raises(TooManyBadFiles) as err:
        read_epochs(strict, 12)
    assert strict.failures == MIN_FAILURES_BEFORE_STOP and m.path in str(err.value)
    assert "max_bad_audio_fraction=0.02" in str(err.value)


# ---- through fairseq, with loader worker processes --------------------------------------------------
def worker_corpus(tmp_path, speech16, count=16):
    """``count`` clips of 1.5 s in train.tsv, two others in valid.tsv: (manifests, folder, rels)."""
    folder = tmp_path / "audio"
    rels = write_clips(folder, speech16, count + 2)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    write_manifest(manifests / "train.tsv", folder, rels[:count])
    write_manifest(manifests / "valid.tsv", folder, rels[count:])
    return manifests, folder, rels[:count]


WORKER_RUN = [*tiny_model_overrides(), "dataset.num_workers=2", "dataset.max_tokens=100000",
              "task.max_sample_size=32000", "checkpoint.no_save=true"]


@pytest.mark.slow
def test_fairseq_with_workers_stops_on_a_mostly_missing_corpus(tmp_path, speech16):
    """Twelve of sixteen training files deleted after the manifest was made, two loader
    worker processes: the run fails with TooManyBadFiles naming the manifest (the last line
    of the traceback), not with another error.

    What workers change: each worker holds its own copy of the dataset and counts its own
    reads, so the limit holds per worker (the error says "in this loader"; the one raised
    counts that worker's reads and exactly 10 failures). Both workers read at once, and a
    worker that stopped goes on to the batches it was asked to prefetch (each fails again at
    its first bad read), so more than 10 failures are logged before the main process sees
    the error: 21 in the run this test was written against. fairseq keeps its workers from
    epoch to epoch (persistent_workers), so a worker's counts add up over epochs."""
    manifests, folder, rels = worker_corpus(tmp_path, speech16)
    for rel in rels[:12]:
        os.remove(folder / rel)
    proc = fairseq_train(manifests, tmp_path / "run", *WORKER_RUN, "optimization.max_update=20", check=False)
    assert proc.returncode != 0
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    train_tsv = str(manifests / "train.tsv")
    assert re.search(r"TooManyBadFiles: \d+ of \d+ audio reads failed in this loader", last), proc.stderr[-3000:]
    assert train_tsv in last and "max_bad_audio_fraction=0.05" in last, last
    assert "Caught TooManyBadFiles in DataLoader worker process" in proc.stderr
    failures, reads = map(int, re.search(r"TooManyBadFiles: (\d+) of (\d+)", last).groups())
    assert failures == MIN_FAILURES_BEFORE_STOP and failures > 0.05 * reads
    logged = (proc.stdout + proc.stderr).count("skipping unreadable audio")
    assert logged >= MIN_FAILURES_BEFORE_STOP, logged
    # a batch or two may finish first (substitutes found before the 10th failure); then it stops
    assert len(fairseq_log.read_records(proc.stdout)) < 5


@pytest.mark.slow
def test_fairseq_with_workers_counts_one_missing_file_and_completes(tmp_path, speech16):
    """One of sixteen training files deleted, two loader worker processes: the run completes
    its two epochs, the warning names the file, and the training log's ``bad_audio`` counts
    the failed reads: some in each epoch (the file is read once an epoch)."""
    manifests, folder, rels = worker_corpus(tmp_path, speech16)
    gone = folder / rels[5]
    os.remove(gone)
    run_dir = tmp_path / "run"
    proc = fairseq_train(manifests, run_dir, *WORKER_RUN, "optimization.max_epoch=2")
    records = fairseq_log.last_per_update(fairseq_log.read_log_file(run_dir / "hydra_train.log"), "train_inner")
    updates = len(records)
    assert updates >= 4 and [int(r.number("num_updates")) for r in records] == list(range(1, updates + 1))
    assert {int(r.number("epoch")) for r in records} == {1, 2}
    assert all(math.isfinite(r.number("loss")) for r in records)
    bad = [r.number("bad_audio") for r in records]
    assert sum(bad) >= 2, [r.values for r in records]
    epochs_with_bad = {int(r.number("epoch")) for r in records if r.number("bad_audio")}
    assert epochs_with_bad == {1, 2}, "each epoch reads the missing file"
    assert f"{gone}: no such file" in proc.stdout + proc.stderr


# ---- loader workers: what else they change --------------------------------------------------------
def epoch_batches(manifests, workers, epochs=2):
    """The batches fairseq's own iterator (the one fairseq-hydra-train uses) gives in each
    epoch, with ``workers`` loader processes."""
    from mae_ast.fairseq_plugin.task import MAEASTPretrainingConfig, MAEASTPretrainingTask

    task = MAEASTPretrainingTask(MAEASTPretrainingConfig(data=str(manifests), max_sample_size=8000, seed=1))
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=10 ** 7, num_workers=workers,
                                       seed=1, epoch=1)
    out = []
    for _ in range(epochs):
        out.append([b["net_input"]["source"] for b in iterator.next_epoch_itr(shuffle=False)])
    return out


def test_crops_change_with_the_epoch_in_loader_workers(tmp_path, speech16):
    """Random crops follow (seed, epoch, clip) (dataset.py): the same in a loader worker as
    in the main process, and different from one epoch to the next. (fairseq sets the epoch on
    the main process's dataset only: with persistent workers, task.persistent_workers=true,
    every epoch repeated epoch 1's crops; the task's default restarts them each epoch.)"""
    manifests, _, _ = worker_corpus(tmp_path, speech16, count=4)
    main = epoch_batches(manifests, workers=0)
    assert not torch.equal(main[0][0], main[1][0]), "the crops change with the epoch"
    worker = epoch_batches(manifests, workers=1)
    for epoch in range(2):
        assert torch.equal(worker[epoch][0], main[epoch][0]), f"epoch {epoch + 1}"
