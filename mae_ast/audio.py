"""Reading audio: soundfile for what libsndfile reads (flac, wav, ogg), PyAV for the rest
(mkv/mp4/webm with opus or aac, mp3, ...). Always mono float32 at the requested rate.

Only the requested window is decoded: soundfile seeks to the exact sample, PyAV to the
nearest earlier packet. So reading a 10 s crop from an hour-long file costs 10 s of audio.
"""
import math
import os
from typing import Optional, Tuple

import numpy as np
import torch

from .core.features import SAMPLE_RATE

SOUNDFILE_EXTS = {".flac", ".wav", ".ogg", ".oga", ".aiff", ".aif", ".au", ".w64", ".rf64"}
# What the tools look for by default (make_manifest.py): every common audio file that
# libsndfile (above) or ffmpeg through PyAV decodes. Video containers only where audio
# datasets ship in them: mkv, mp4 and webm (AudioSet, YouTube); phones record m4a, amr, 3gp.
AUDIO_EXTENSIONS = tuple(sorted(SOUNDFILE_EXTS | {
    ".opus", ".mp3", ".mp2", ".m4a", ".m4b", ".aac", ".ac3", ".wma", ".amr", ".3gp", ".spx",
    ".aifc", ".caf", ".mka", ".mkv", ".mp4", ".webm"}))


class AudioReadError(RuntimeError):
    """A file that cannot be read as audio; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _uses_soundfile(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in SOUNDFILE_EXTS


def probe(path: str) -> Tuple[int, int]:
    """(native sample rate, exact number of native samples). Decodes PyAV files whole,
    because container durations are estimates; soundfile reads the header only."""
    if not os.path.isfile(path):
        raise AudioReadError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise AudioReadError(path, "empty file")
    if _uses_soundfile(path):
        import soundfile as sf

        try:
            info = sf.info(path)
            # decode the last block too: a truncated flac has a valid header
            if info.frames > 0:
                with sf.SoundFile(path) as f:
                    f.seek(max(0, info.frames - 1024))
                    tail = f.read(1024, dtype="float32")
                    if len(tail) == 0:
                        raise AudioReadError(path, "truncated: last samples cannot be decoded")
        except AudioReadError:
            raise
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, ...
            raise AudioReadError(path, f"soundfile cannot read it ({e})") from None
        return info.samplerate, info.frames
    rate, samples = None, 0
    for chunk, rate in _av_chunks(path):
        samples += chunk.shape[1]
    return rate, samples


def _av_chunks(path: str, start: int = 0, sample_rate: Optional[int] = None):
    """Yield (float32 (channels, n) array, native sample rate) from the native sample where
    the window of ``start`` (at ``sample_rate``) begins (see ``_native_window``); the first
    chunk starts exactly there (sample accuracy where timestamps allow)."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:
        raise AudioReadError(path, f"PyAV cannot open it ({e})") from None
    with container:
        if not container.streams.audio:
            raise AudioReadError(path, "no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        start_seconds = 0.0
        if start > 0:
            start_seconds = (_native_window(rate, sample_rate or rate, start, None)[0] / rate if rate
                             else start / (sample_rate or 1))
        if start_seconds > 0 and stream.time_base is not None:
            container.seek(int(start_seconds / stream.time_base), stream=stream, backward=True)
        else:
            start_seconds = 0.0
        # positions count from the stream's first sample, as a whole read does: decoders with
        # a start offset (opus pre-skip: pts start at ~6.5 ms) must not shift windows
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        resampler = av.AudioResampler(format="fltp")
        skip = None
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    data = out.to_ndarray()
                    if skip is None:
                        pos = (float(out.pts * out.time_base) - origin) if (start_seconds and out.pts is not None) else 0
                        skip = max(0, int(round((start_seconds - float(pos)) * rate)))
                    if skip >= data.shape[1]:
                        skip -= data.shape[1]
                        continue
                    yield data[:, skip:], rate
                    skip = 0
        except AudioReadError:
            raise
        except Exception as e:
            raise AudioReadError(path, f"PyAV cannot decode it ({e})") from None
        if rate is None or skip is None:
            raise AudioReadError(path, "no audio could be decoded")


def read(path: str, sample_rate: int = SAMPLE_RATE, start: int = 0, num: Optional[int] = None) -> torch.Tensor:
    """Mono float32 waveform at ``sample_rate``: ``num`` samples (all when None) from sample
    ``start`` (both counted at ``sample_rate``). Shorter when the file ends first."""
    if not os.path.isfile(path):
        raise AudioReadError(path, "no such file")
    if _uses_soundfile(path):
        wav, rate = _read_soundfile(path, sample_rate, start, num)
    else:
        wav, rate = _read_av(path, sample_rate, start, num)
    wav = torch.from_numpy(np.ascontiguousarray(wav))
    if rate != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, rate, sample_rate)
        wav = wav[_native_window(rate, sample_rate, start, num)[2]:]
    if num is not None:
        wav = wav[:num]
    if not torch.isfinite(wav).all():
        raise AudioReadError(path, "decoded samples are not finite")
    return wav


def _native_window(rate: int, sample_rate: int, start: int, num: Optional[int]):
    """(first native sample, native samples to read or None, output samples to drop after
    resampling). With resampling, the window starts on a sample where both rates' grids meet
    (so the output lies on the grid of a whole-file read, not a fraction of a sample off) and
    carries >= 5 ms of context on each side for the resampling filter."""
    if rate == sample_rate:
        return start, None if num is None else num + 1, 0
    step = sample_rate // math.gcd(rate, sample_rate)  # output samples between grid meetings
    context = sample_rate // 200
    aligned = max(0, (start - context) // step * step)
    first = aligned * rate // sample_rate  # exact: aligned is a multiple of step
    drop = start - aligned
    count = None if num is None else int(math.ceil((num + drop + context) * rate / sample_rate)) + 1
    return first, count, drop


def _read_soundfile(path, sample_rate, start, num):
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            first, count, _ = _native_window(rate, sample_rate, start, num)
            f.seek(min(first, f.frames))
            data = f.read(-1 if count is None else count, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioReadError(path, f"soundfile cannot read it ({e})") from None
    if data.shape[0] == 0 and (num is None or num > 0):
        raise AudioReadError(path, f"no samples at offset {start} (file shorter than expected?)")
    return data.mean(axis=1), rate


def _read_av(path, sample_rate, start, num):
    chunks, got, rate = [], 0, None
    for data, rate in _av_chunks(path, start, sample_rate):
        chunks.append(data)
        got += data.shape[1]
        _, count, _ = _native_window(rate, sample_rate, start, num)
        if count is not None and got >= count:
            break
    if not chunks:
        raise AudioReadError(path, f"no samples at offset {start} (file shorter than expected?)")
    data = np.concatenate(chunks, axis=1)
    _, count, _ = _native_window(rate, sample_rate, start, num)
    if count is not None:
        data = data[:, :count]
    return data.mean(axis=0), rate


def num_samples(path: str, sample_rate: int = SAMPLE_RATE) -> int:
    """Length in samples at ``sample_rate`` (what manifests store)."""
    rate, frames = probe(path)
    return int(frames * sample_rate // rate)


def write_mkv_opus(wav: np.ndarray, rate: int, path):
    """Write opus in Matroska (48 kHz), as AudioSet ships it, with PyAV; for tests and
    benchmarks of the decoding path. ``wav``: (n,) mono or (channels, n) with one or two
    channels, at ``rate``. Returns ``path``."""
    import av

    data = np.atleast_2d(wav).astype(np.float32)
    layout = "mono" if data.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="s16", layout=layout, rate=48000)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
