"""MAEASTDataset on real audio files: windows, batching, bad files, odd audio; and one real
fairseq run where a listed file disappeared after the manifest was made."""
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conftest import fairseq_train, read_wav, tiny_model_overrides
from mae_ast import audio
from mae_ast.core.features import fbank, num_frames
from mae_ast.fairseq_log import read_records
from mae_ast.fairseq_plugin.dataset import MAEASTDataset, TooManyBadFiles
from mae_ast.manifest import Manifest

DATASET_LOGGER = "mae_ast.fairseq_plugin.dataset"


def write_manifest(root, rels, path):
    """A manifest as make_manifest writes it (lengths from audio.num_samples)."""
    lines = [str(root)] + [f"{rel}\t{audio.num_samples(os.path.join(root, rel))}" for rel in rels]
    path.write_text("\n".join(lines) + "\n")
    return Manifest.load(str(path))


@pytest.fixture(scope="module")
def speech16(speech_wavs):
    out = []
    for src in speech_wavs:
        wav, rate = read_wav(src)
        out.append(AF.resample(torch.from_numpy(wav), rate, 16000).numpy())
    return out


@pytest.fixture
def corpus_dir(tmp_path, speech16):
    """A fresh folder per test (tests delete and damage files): eight 16 kHz flac utterances."""
    folder = tmp_path / "audio"
    folder.mkdir()
    rels = []
    for i, wav in enumerate(speech16):
        rel = f"spk{i % 2}/utt{i}.flac"
        (folder / rel).parent.mkdir(exist_ok=True)
        sf.write(folder / rel, wav, 16000)
        rels.append(rel)
    return folder, rels


# ---- items and batches ------------------------------------------------------------------------
def test_items_are_windows_of_at_most_max_sample_size(corpus_dir, tmp_path):
    folder, rels = corpus_dir
    m = write_manifest(folder, rels, tmp_path / "train.tsv")
    ds = MAEASTDataset(m, max_sample_size=16000, random_crop=True)
    assert len(ds) == len(rels)
    starts = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["id"] == i and item["bad_audio"] == []
        wav = item["source"]
        assert wav.dtype == torch.float32 and wav.dim() == 1
        assert len(wav) == min(m.sizes[i], 16000)
        whole = audio.read(m.audio_path(i))
        # the window is a real slice of the file, found exactly (flac reads are exact)
        start = int(np.argmax(np.correlate(whole.numpy(), wav.numpy(), "valid")))
        assert torch.equal(wav, whole[start:start + len(wav)])
        starts.add(start)
        # the crop depends on (seed, epoch, index): the same item twice is the same window
        assert torch.equal(ds[i]["source"], wav)
    assert len(starts) > 1  # random offsets, not always the start
    # without random crops the window is the beginning of the file
    ds0 = MAEASTDataset(m, max_sample_size=16000, random_crop=False)
    assert torch.equal(ds0[0]["source"], audio.read(m.audio_path(0))[:16000])
    assert list(ds.num_tokens_vec(np.arange(len(ds)))) == [min(s, 16000) for s in m.sizes]


def test_collater_crops_to_the_shortest(corpus_dir, tmp_path):
    folder, rels = corpus_dir
    m = write_manifest(folder, rels, tmp_path / "train.tsv")
    ds = MAEASTDataset(m, max_sample_size=None, random_crop=False)
    samples = [ds[i] for i in range(4)]
    lengths = [len(s["source"]) for s in samples]
    assert len(set(lengths)) > 1
    batch = ds.collater(samples)
    feats = batch["net_input"]["source"]
    shortest = min(lengths)
    assert feats.shape == (4, num_frames(shortest), 128)
    assert batch["net_input"]["padding_mask"] is None
    assert batch["n_bad_audio"] == 0
    assert batch["id"].tolist() == [0, 1, 2, 3]
    assert torch.isfinite(feats).all()
    for i, s in enumerate(samples):  # random_crop=False: each is cropped from its start
        torch.testing.assert_close(feats[i], fbank(s["source"][:shortest].unsqueeze(0))[0], atol=1e-4, rtol=0)


def test_collater_random_crop_takes_a_slice_of_each(corpus_dir, tmp_path):
    folder, rels = corpus_dir
    m = write_manifest(folder, rels, tmp_path / "train.tsv")
    ds = MAEASTDataset(m, max_sample_size=None, random_crop=True)
    samples = [ds[i] for i in range(4)]
    shortest = min(len(s["source"]) for s in samples)
    feats = ds.collater(samples)["net_input"]["source"]
    assert feats.shape == (4, num_frames(shortest), 128)
    for i, s in enumerate(samples):
        alone = fbank(s["source"].unsqueeze(0))[0]
        # the batch's frames are a run of the example's own frames (crops move in whole samples,
        # so compare against every offset that lands on the same 10 ms grid, loosely)
        n = feats.shape[1]
        dist = min((feats[i] - alone[k:k + n]).abs().mean().item() for k in range(alone.shape[0] - n + 1))
        assert dist < 1.0


def test_pad_audio_gives_a_padding_mask_matching_lengths(corpus_dir, tmp_path):
    folder, rels = corpus_dir
    m = write_manifest(folder, rels, tmp_path / "train.tsv")
    ds = MAEASTDataset(m, max_sample_size=None, pad_audio=True, random_crop=False)
    samples = [ds[i] for i in range(4)]
    lengths = [len(s["source"]) for s in samples]
    batch = ds.collater(samples)
    feats, mask = batch["net_input"]["source"], batch["net_input"]["padding_mask"]
    assert feats.shape == (4, num_frames(max(lengths)), 128)
    assert mask is not None and mask.shape == feats.shape[:2] and mask.dtype == torch.bool
    for i, n in enumerate(lengths):
        valid = num_frames(n)
        assert not mask[i, :valid].any() and mask[i, valid:].all()
        torch.testing.assert_close(feats[i, :valid], fbank(samples[i]["source"].unsqueeze(0))[0],
                                   atol=1e-4, rtol=0)
    assert torch.isfinite(feats).all()
    # sizes for batching: padded batches count the whole clip
    assert ds.size(0) == m.sizes[0]


# ---- files that break after the manifest was made -----------------------------------------------
def warnings_naming(caplog, path):
    return [r for r in caplog.records if r.levelno == logging.WARNING and path in r.getMessage()]


@pytest.mark.parametrize("damage", ["deleted", "truncated", "replaced_by_text"])
def test_file_broken_after_manifest_is_substituted_logged_and_counted(corpus_dir, tmp_path, caplog, damage):
    folder, rels = corpus_dir
    m = write_manifest(folder, rels, tmp_path / "train.tsv")
    victim = 3
    path = m.audio_path(victim)
    if damage == "deleted":
        os.remove(path)
    elif damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 3])
    else:
        open(path, "w").write("this used to be audio\n" * 100)
    ds = MAEASTDataset(m, max_sample_size=None, random_crop=False)
    caplog.set_level(logging.WARNING, logger=DATASET_LOGGER)
    item = ds[victim]
    assert item["id"] == victim  # the slot keeps its id, another file fills it
    assert item["bad_audio"] == [path]
    wav = item["source"]
    assert wav is not None and len(wav) > 0
    others = [audio.read(m.audio_path(i)) for i in range(len(m)) if i != victim]
    assert any(len(o) == len(wav) and torch.equal(o, wav) for o in others)
    records = warnings_naming(caplog, path)
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    assert f"{m.path}:{m.line_numbers[victim]}" in records[0].getMessage()
    batch = ds.collater([ds[0], ds[victim], ds[5]])
    assert batch["n_bad_audio"] == 1
    assert batch["net_input"]["source"].shape[0] == 3
    assert ds.collater([ds[0], ds[1]])["n_bad_audio"] == 0


def twenty_clips(tmp_path, speech16):
    """20 one-second-ish flac clips and their manifest: (folder, relative names, Manifest)."""
    folder = tmp_path / "audio"
    folder.mkdir()
    rels = [f"utt{i}.flac" for i in range(20)]
    for i, rel in enumerate(rels):
        sf.write(folder / rel, speech16[i % len(speech16)], 16000)
    return folder, rels, write_manifest(folder, rels, tmp_path / "train.tsv")


def test_a_manifest_of_mostly_broken_files_stops_with_a_clear_error(tmp_path, speech16):
    folder, rels, m = twenty_clips(tmp_path, speech16)
    for rel in rels[:15]:  # three in four go missing
        os.remove(folder / rel)
    ds = MAEASTDataset(m, max_sample_size=16000, max_bad_audio_fraction=0.05)
    with pytest.raises(TooManyBadFiles) as err:
        for i in range(len(ds)):
            ds[i]
    msg = str(err.value)
    assert "max_bad_audio_fraction" in msg and m.path in msg, msg
    assert ds.failures >= 10


def test_a_few_bad_files_within_the_allowed_share_do_not_stop(tmp_path, speech16):
    folder, rels, m = twenty_clips(tmp_path, speech16)
    os.remove(folder / rels[7])
    ds = MAEASTDataset(m, max_sample_size=16000, max_bad_audio_fraction=0.05)
    for epoch in range(1, 4):
        ds.set_epoch(epoch)
        items = [ds[i] for i in range(len(ds))]
        assert sum(len(it["bad_audio"]) for it in items) == 1
    assert ds.failures == 3


# ---- odd audio --------------------------------------------------------------------------------
def test_silent_zero_and_clipped_audio_give_finite_features(tmp_path, speech16):
    folder = tmp_path / "audio"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = 3 * 16000
    clips = {
        "zeros.flac": np.zeros(n, dtype=np.float32),
        "dc.wav": np.full(n, 0.25, dtype=np.float32),  # constant: zero after DC removal
        "near_silent.wav": (rng.standard_normal(n) * 1e-7).astype(np.float32),
        "clipped.flac": np.clip(np.resize(speech16[0], n) * 50, -1, 1).astype(np.float32),
        "speech.flac": np.resize(speech16[1], n).astype(np.float32),
    }
    for name, wav in clips.items():
        sf.write(folder / name, wav, 16000, subtype="FLOAT" if name.endswith(".wav") else "PCM_16")
    assert np.abs(sf.read(folder / "clipped.flac")[0]).max() >= 0.99
    m = write_manifest(folder, sorted(clips), tmp_path / "train.tsv")
    for pad in (False, True):
        ds = MAEASTDataset(m, max_sample_size=32000, pad_audio=pad)
        batch = ds.collater([ds[i] for i in range(len(ds))])
        feats = batch["net_input"]["source"]
        assert feats.shape[0] == len(clips) and feats.shape[2] == 128
        assert torch.isfinite(feats).all(), [m.names[i] for i in range(len(m))
                                              if not torch.isfinite(feats[i]).all()]
        # silence sits at the floor, speech well above it: the features are not all clamped
        zeros = m.names.index("zeros.flac")
        speech = m.names.index("speech.flac")
        assert feats[speech].mean() > feats[zeros].mean() + 10


# ---- a real fairseq run with a file gone ------------------------------------------------------
@pytest.mark.slow
def test_fairseq_run_survives_a_deleted_file(tmp_path, speech16):
    folder = tmp_path / "audio"
    rels = []
    for i, wav in enumerate(speech16):
        rel = f"spk{i % 2}/utt{i}.flac"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / rel, wav, 16000)
        rels.append(rel)
    # odd audio rides along: all zeros and clipped speech must give a finite loss
    sf.write(folder / "zeros.flac", np.zeros(40000, dtype=np.float32), 16000)
    sf.write(folder / "clipped.flac", np.clip(speech16[2] * 50, -1, 1), 16000)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    write_manifest(folder, rels[:6] + ["zeros.flac", "clipped.flac"], manifests / "train.tsv")
    write_manifest(folder, rels[6:], manifests / "valid.tsv")
    gone = folder / rels[2]
    os.remove(gone)
    run_dir = tmp_path / "run"
    proc = fairseq_train(manifests, run_dir, *tiny_model_overrides(),
                         "optimization.max_update=3", "task.mask_type=random_mask")
    log = proc.stdout + proc.stderr
    assert str(gone) in log, log[-3000:]
    train_logs = [r for r in read_records(log) if r.kind in ("train_inner", "train")]
    assert train_logs, log[-3000:]
    assert max(r.number("bad_audio") for r in train_logs) >= 1, train_logs
    losses = [r.number("loss") for r in train_logs]
    assert losses and all(np.isfinite(losses))
    assert os.path.isfile(run_dir / "checkpoints" / "checkpoint_last.pt")
    shutil.rmtree(run_dir / "checkpoints")
