"""Audio reading and features on real files: espeak-ng speech written as flac, 22.05 kHz wav,
opus in Matroska (as AudioSet ships it) and stereo files. No mocks."""
import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from conftest import read_wav, write_mkv_opus
from mae_ast import audio
from mae_ast.core.features import fbank, num_frames


# ---- helpers ----------------------------------------------------------------------------------
def to16k(wav: np.ndarray, rate: int) -> torch.Tensor:
    return AF.resample(torch.from_numpy(wav), rate, 16000)


def best_lag(whole: np.ndarray, window: np.ndarray) -> int:
    """Offset in ``whole`` where ``window`` fits best (cross-correlation peak)."""
    return int(np.argmax(np.correlate(whole, window, "valid")))


def corr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech_wavs):
    """One utterance (two sentences joined, ~7 s) in every format we read."""
    folder = tmp_path_factory.mktemp("audio_files")
    a, rate = read_wav(speech_wavs[0])
    b, _ = read_wav(speech_wavs[2])
    wav22 = np.concatenate([a, b]).astype(np.float32)
    wav16 = to16k(wav22, rate).numpy()
    paths = {
        "wav22": folder / "speech_22k.wav",
        "flac16": folder / "speech.flac",
        "mkv": folder / "speech.mkv",
    }
    sf.write(paths["wav22"], wav22, rate)
    sf.write(paths["flac16"], wav16, 16000, subtype="PCM_24")
    write_mkv_opus(wav22, rate, paths["mkv"])
    return {"paths": paths, "wav22": wav22, "rate": rate, "wav16": wav16}


# ---- features ---------------------------------------------------------------------------------
def test_fbank_matches_torchaudio_kaldi_on_real_speech(speech_wavs):
    for src in speech_wavs[:4]:
        wav, rate = read_wav(src)
        wav16 = to16k(wav, rate)
        ours = fbank(wav16.unsqueeze(0))[0]
        ref = kaldi.fbank(wav16.unsqueeze(0), sample_frequency=16000, use_energy=False, num_mel_bins=128)
        assert ours.shape == ref.shape == (num_frames(len(wav16)), 128)
        assert ours.dtype == torch.float32
        # real speech spans a wide dynamic range: the comparison means something
        assert ref.max() - ref.min() > 10
        diff = (ours - ref).abs().max().item()
        assert diff < 1e-3, f"{src.name}: max |ours - torchaudio| = {diff}"


def test_fbank_batched_with_padding_equals_one_by_one(speech_wavs):
    clips = []
    for src in speech_wavs[:4]:
        wav, rate = read_wav(src)
        clips.append(to16k(wav, rate))
    lengths = [len(c) for c in clips]
    assert len(set(lengths)) == len(lengths)
    longest = max(lengths)
    # padding holds loud noise: valid frames must not see it
    batch = torch.randn(len(clips), longest, generator=torch.Generator().manual_seed(0)) * 0.5
    for i, c in enumerate(clips):
        batch[i, :len(c)] = c
    feats = fbank(batch)
    assert feats.shape == (len(clips), num_frames(longest), 128)
    for i, c in enumerate(clips):
        alone = fbank(c.unsqueeze(0))[0]
        n = num_frames(len(c))
        assert alone.shape[0] == n
        torch.testing.assert_close(feats[i, :n], alone, atol=1e-4, rtol=0)
        if n < feats.shape[1]:  # the padded frames are different (the test can see padding)
            assert not torch.allclose(feats[i, n:n + 1], alone[-1:], atol=1e-2)


@pytest.mark.parametrize("samples", [0, 399, 400, 559, 560, 561, 16000])
def test_fbank_frame_counts_at_the_window_edges_equal_torchaudio_kaldi(samples):
    """One 400-sample window gives one frame, one sample less gives none; ints, tensors, 1-D
    input and float64 input agree (the features are float32 whatever comes in)."""
    wav = torch.randn(samples, generator=torch.Generator().manual_seed(samples), dtype=torch.float64) * 0.1
    expected = 0 if samples < 400 else kaldi.fbank(wav.float()[None], sample_frequency=16000, use_energy=False,
                                                    num_mel_bins=128).shape[0]
    assert num_frames(samples) == expected == {0: 0, 399: 0, 400: 1, 559: 1, 560: 2, 561: 2, 16000: 98}[samples]
    assert num_frames(torch.tensor([samples, 400])).tolist() == [expected, 1]
    one = fbank(wav)  # 1-D: one clip
    assert one.shape == (1, expected, 128) and one.dtype == torch.float32
    two = fbank(torch.stack([wav, wav]).float())
    assert two.shape == (2, expected, 128)
    torch.testing.assert_close(two[1:], one)


# ---- whole-file reads ------------------------------------------------------------------------
def test_read_flac_16k_is_exact(files):
    got = audio.read(str(files["paths"]["flac16"]))
    ref, rate = sf.read(files["paths"]["flac16"], dtype="float32")
    assert rate == 16000
    assert got.dtype == torch.float32 and got.dim() == 1
    assert torch.equal(got, torch.from_numpy(ref))
    assert audio.num_samples(str(files["paths"]["flac16"])) == len(ref)


def test_read_wav_22k_is_resampled_to_16k(files):
    path = str(files["paths"]["wav22"])
    got = audio.read(path)
    wav22, rate = files["wav22"], files["rate"]
    ref = AF.resample(torch.from_numpy(wav22), rate, 16000)
    expected_len = len(wav22) * 16000 / rate
    assert abs(len(got) - expected_len) <= 1
    assert abs(audio.num_samples(path) - expected_len) <= 1
    n = min(len(got), len(ref))
    assert (got[:n] - ref[:n]).abs().max() < 1e-4
    # and it is not the 22.05 kHz signal played at 16 kHz
    assert corr(got[:n], wav22[:n]) < 0.5


def test_read_opus_in_mkv(files):
    path = str(files["paths"]["mkv"])
    with av.open(path) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 48000
        assert c.streams.audio[0].codec_context.name == "opus"
    got = audio.read(path)
    src = to16k(files["wav22"], files["rate"]).numpy()
    # opus keeps the length to within a few ms (its pre-skip is removed)
    assert abs(len(got) - len(src)) <= 16 * 5, (len(got), len(src))
    assert abs(audio.num_samples(path) - len(src)) <= 16 * 5
    n = min(len(got), len(src))
    # lossy, but the same speech, in place (no shift)
    assert corr(got[:n], src[:n]) > 0.9
    assert abs(best_lag(np.pad(src, 200), got[200:n - 200].numpy()) - 400) <= 2


# ---- window reads -----------------------------------------------------------------------------
@pytest.mark.parametrize("start,num", [(0, 16000), (12345, 16000), (40000, 3000), (1, 1)])
def test_window_read_flac_equals_slice_of_whole(files, start, num):
    path = str(files["paths"]["flac16"])
    whole = audio.read(path)
    assert start + num <= len(whole)
    window = audio.read(path, 16000, start, num)
    assert torch.equal(window, whole[start:start + num])


def test_window_read_past_the_end_is_shorter(files):
    path = str(files["paths"]["flac16"])
    whole = audio.read(path)
    window = audio.read(path, 16000, len(whole) - 500, 16000)
    assert torch.equal(window, whole[-500:])


@pytest.mark.parametrize("start,num", [(20000, 16000), (1, 500), (12345, 8000), (100, 30000)])
def test_window_read_22k_wav_equals_slice_of_whole(files, start, num):
    """A resampled window lies on the same sample grid as the whole resampled file (not a
    fraction of a sample off) and the filter has context: the same values, not just similar."""
    path = str(files["paths"]["wav22"])
    whole = audio.read(path)
    window = audio.read(path, 16000, start, num)
    assert len(window) == num
    assert (window - whole[start:start + num]).abs().max() < 1e-4


@pytest.mark.parametrize("start", [1000, 12345, 20000, 40000, 64000])
def test_window_read_mkv_close_to_slice_of_whole(files, start):
    path = str(files["paths"]["mkv"])
    whole = audio.read(path).numpy()
    num = 8000
    assert start + num <= len(whole)
    window = audio.read(path, 16000, start, num).numpy()
    assert len(window) == num
    # the window comes from the right place: no shift of even a few samples
    assert best_lag(whole, window) == start
    # the decoder restarts after the seek, so the first few ms may differ a little
    assert corr(window[800:], whole[start + 800:start + num]) > 0.98
    assert corr(window, whole[start:start + num]) > 0.95


# ---- channels ---------------------------------------------------------------------------------
def test_stereo_flac_is_downmixed(files, tmp_path):
    left = files["wav16"]
    right = np.roll(left, 4000) * 0.5
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    got = audio.read(str(path))
    assert got.dim() == 1 and len(got) == len(left)
    ref = torch.from_numpy(((left + right) / 2).astype(np.float32))
    assert (got - ref).abs().max() < 1e-5
    window = audio.read(str(path), 16000, 5000, 1000)
    assert window.shape == (1000,)
    assert (window - ref[5000:6000]).abs().max() < 1e-5


def test_stereo_opus_mkv_is_downmixed(files, tmp_path):
    left = files["wav22"]
    right = np.roll(left, 11025) * 0.8  # a different signal on the right
    path = write_mkv_opus(np.stack([left, right]), files["rate"], tmp_path / "stereo.mkv")
    got = audio.read(str(path)).numpy()
    assert got.ndim == 1
    mono = to16k(((left + right) / 2).astype(np.float32), files["rate"]).numpy()
    n = min(len(got), len(mono))
    assert abs(len(got) - len(mono)) <= 80
    assert corr(got[:n], mono[:n]) > 0.9
    # neither channel alone
    only_left = to16k(left, files["rate"]).numpy()[:n]
    assert corr(got[:n], only_left) < 0.95


# ---- long files: only the window is decoded ---------------------------------------------------
def peak_python_memory(fn):
    """Peak bytes allocated through Python/NumPy during fn() (decoded audio lands in NumPy arrays)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory, files):
    """Ten minutes of speech (the utterance tiled) as 16 kHz flac."""
    wav = files["wav16"]
    reps = int(np.ceil(600 * 16000 / len(wav)))
    long = np.tile(wav, reps)[:600 * 16000]
    path = tmp_path_factory.mktemp("long") / "ten_minutes.flac"
    sf.write(path, long, 16000, subtype="PCM_16")
    return path, len(long), wav


def test_long_flac_window_read_decodes_only_the_window(long_flac):
    path, total, wav = long_flac
    path = str(path)
    assert audio.num_samples(path) == total
    start = 8 * 60 * 16000 + 777  # at 8 min
    window, window_peak = peak_python_memory(lambda: audio.read(path, 16000, start, 16000))
    assert len(window) == 16000
    # right content: the tiled utterance at that offset
    offset = start % len(wav)
    expected = np.concatenate([wav, wav])[offset:offset + 16000]
    assert corr(window, expected) > 0.999
    whole, whole_peak = peak_python_memory(lambda: audio.read(path))
    assert len(whole) == total
    # the whole file is 9.6 M samples (38 MB as float32); a 1 s window must cost about 1 s of audio
    assert whole_peak > total * 4
    assert window_peak < 2_000_000, window_peak
    assert window_peak * 50 < whole_peak


def test_long_mkv_window_read_decodes_only_the_window(tmp_path, files):
    wav = files["wav22"]
    rate = files["rate"]
    reps = int(np.ceil(120 * rate / len(wav)))
    long = np.tile(wav, reps)[:120 * rate]
    path = str(write_mkv_opus(long, rate, tmp_path / "two_minutes.mkv"))
    start = 100 * 16000
    window, window_peak = peak_python_memory(lambda: audio.read(path, 16000, start, 16000))
    assert len(window) == 16000
    expected = to16k(long, rate).numpy()[start:start + 16000]
    assert corr(window, expected) > 0.9
    # the whole stream decoded is 5.8 M samples at 48 kHz; the window must not decode it
    assert window_peak < 3_000_000, window_peak


# ---- errors name the file ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("broken")
    out = {"missing": folder / "missing.flac"}
    out["empty"] = folder / "empty.wav"
    out["empty"].write_bytes(b"")
    out["text"] = folder / "notes.wav"
    out["text"].write_text("this is a text file, not audio\n" * 20)
    out["text_mkv"] = folder / "notes.mkv"
    out["text_mkv"].write_text("this is a text file, not audio\n" * 20)
    data = files["paths"]["flac16"].read_bytes()
    out["truncated"] = folder / "truncated.flac"
    out["truncated"].write_bytes(data[:len(data) // 3])
    return out


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "text_mkv", "truncated"])
def test_broken_files_raise_audio_read_error_naming_the_file(broken, kind):
    path = str(broken[kind])
    with pytest.raises(audio.AudioReadError) as err:
        audio.read(path)
    assert path in str(err.value)
    assert err.value.path == path and err.value.reason
    with pytest.raises(audio.AudioReadError) as err:
        audio.num_samples(path)
    assert path in str(err.value)


def test_truncated_flac_window_past_the_cut_raises(broken, files):
    path = str(broken["truncated"])
    # the header still claims the full length
    assert sf.info(path).frames == len(files["wav16"])
    with pytest.raises(audio.AudioReadError) as err:
        audio.read(path, 16000, len(files["wav16"]) - 20000, 16000)
    assert path in str(err.value)


# ---- which files count as audio ---------------------------------------------------------------
def test_audio_extensions_are_one_list_of_the_common_formats():
    """The default of tools/make_manifest.py (and what other tools look for): one list, dotted,
    lower case, holding every common container and codec and all that soundfile reads.
    tests/test_manifest.py reads m4a and opus files found through it."""
    exts = audio.AUDIO_EXTENSIONS
    common = {".flac", ".wav", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mkv", ".mka",
              ".mp4", ".webm", ".aiff", ".aif", ".wma", ".amr"}
    assert common <= set(exts), sorted(common - set(exts))
    assert audio.SOUNDFILE_EXTS <= set(exts)
    assert len(set(exts)) == len(exts)
    assert all(ext.startswith(".") and ext == ext.lower() and len(ext) > 2 for ext in exts)
