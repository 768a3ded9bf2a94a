"""Audio ingestion: a sound file → mono waveform → spectrogram → sliding audio snippets.

The recording-side twin of ``pages``. Any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3,
AIFF, ...) at any sample rate and channel count: channels are averaged to mono and the result is
resampled with soxr to the front end's rate (``spectrogram.DEFAULT``: 22,050 Hz, 20 frames/s,
92 bins). Frame ``i`` of a spectrogram covers time ``i / fps`` from the start of what was read;
``AudioIngest.start`` says where that is in the file when only an excerpt was read.

Audio snippets are (92, context) windows, bins × frames, centred on a frame as in
``SnippetPairs.audio``, padded with 0 (silence) where they leave the recording.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .snippets import AUDIO_FRAMES
from .spectrogram import DEFAULT, SpectrogramConfig, spectrogram

HOP = 2  # frames between audio snippet centres (0.1 s at 20 fps)
SILENCE = 1e-4  # peak amplitude under which a recording is silent (-80 dBFS)
BLOCK = 1 << 18  # frames read at a time (bounded memory for many-channel files)


class AudioError(ValueError):
    """A file that gives no usable audio; the message is one line, ``"{path}: {reason}"``."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def _detail(exc: BaseException) -> str:
    """libsndfile's own words for an error, one line, without the "Error opening 'path': " part."""
    text = getattr(exc, "error_string", None) or str(exc)
    text = " ".join(str(text).split())
    if text.startswith("Error : "):
        text = text[len("Error : "):]
    return text.rstrip(".")[:200] or type(exc).__name__


def _read(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None):
    """(mono float32 at ``sample_rate``, file sample rate, file channels, file seconds,
    start and length of what was read in seconds)."""
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        f = sf.SoundFile(str(path))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        detail = _detail(exc)
        if "does not exist" in detail:  # libsndfile's words for some garbage files
            detail = "format not recognised"
        raise AudioError(path, f"not a readable audio file ({detail.lower()})") from None
    with f:
        sr, channels, n = int(f.samplerate), int(f.channels), int(f.frames)
        if sr <= 0 or channels <= 0:
            raise AudioError(path, f"not a readable audio file ({sr} Hz, {channels} channels)")
        file_seconds = n / sr
        a = 0 if start is None else int(round(max(start, 0.0) * sr))
        b = n if end is None else min(int(round(end * sr)), n)
        if n and (a >= n or b <= a):
            span = f"{a / sr:g}–{file_seconds if end is None else end:g} s"
            raise AudioError(path, f"excerpt {span} is outside the recording "
                                   f"({file_seconds:.1f} s long)")
        mono, peak = [], 0.0
        try:
            if a:
                f.seek(a)
            for block in f.blocks(BLOCK, frames=b - a, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(path, "non-finite samples (NaN or infinity)")
                if len(block):
                    peak = max(peak, float(np.abs(block).max()))
                mono.append(block.mean(axis=1, dtype=np.float32))
        except sf.SoundFileError as exc:
            raise AudioError(path, f"corrupt or truncated audio data ({_detail(exc)})") from None
    audio = np.concatenate(mono) if mono else np.zeros(0, np.float32)
    seconds = len(audio) / sr
    if len(audio) == 0:
        raise AudioError(path, "no audio (0 samples)")
    if peak < SILENCE:
        raise AudioError(path, "silent (peak below -80 dBFS)")
    if np.abs(audio).max() < SILENCE:
        raise AudioError(path, "silent when mixed to mono (the channels cancel out)")
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return audio, sr, channels, file_seconds, a / sr, seconds


def load_audio(path: str | Path, sample_rate: int = DEFAULT.sample_rate, start: float = 0.0,
               end: float | None = None) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate`` (channels averaged, resampled with
    soxr). ``start``/``end`` (seconds) read only an excerpt; ``end`` past the file is clipped.

    ``AudioError`` for a missing, unreadable, corrupt, empty or silent file. A recording too short
    for one snippet is fine here (snippets are padded with silence).
    """
    return _read(path, sample_rate, start, end)[0]


def audio_snippets(spec: np.ndarray, context: int = AUDIO_FRAMES,
                   hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    """Sliding spectrogram windows centred on frames 0, hop, 2 hop, ... < T.

    ``spec``: (T, bins). Returns (float32 (N, bins, context), bins × frames as ``Embedder.audio``
    and ``SnippetPairs.audio``; centres int (N,)). Window k is
    ``spec[centres[k] - context // 2 : ... + context].T`` with 0 (silence) beyond the ends.
    """
    spec = np.asarray(spec, dtype=np.float32)
    context, hop = int(context), int(hop)
    if spec.ndim != 2 or context < 1 or hop < 1:
        raise ValueError(f"audio_snippets: spec (T, bins), context ≥ 1, hop ≥ 1; got shape "
                         f"{spec.shape}, context {context}, hop {hop}")
    t, bins = spec.shape
    centres = np.arange(0, t, hop, dtype=np.int64)
    lo = context // 2
    padded = np.zeros((lo + t + context - lo, bins), np.float32)
    padded[lo:lo + t] = spec
    view = np.lib.stride_tricks.sliding_window_view(padded, context, axis=0)  # (., bins, context)
    return np.ascontiguousarray(view[centres]), centres


@dataclass
class AudioIngest:
    """A recording read for queries: its spectrogram and audio snippets."""

    path: str
    seconds: float  # length of the audio read (the excerpt, if one was asked for)
    file_seconds: float  # length of the whole file
    start: float  # where frame 0 is in the file, seconds
    sample_rate: int  # the file's
    channels: int  # the file's
    fps: float  # spectrogram frames per second
    spec: np.ndarray  # float32 (T, 92)
    snippets: np.ndarray  # float32 (N, 92, context)
    centres: np.ndarray  # int (N,) spectrogram frame of each snippet's centre

    def cut(self, context: int = AUDIO_FRAMES, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
        """Snippets for another context or hop (see ``audio_snippets``)."""
        return audio_snippets(self.spec, context, hop)

    def times(self, frames=None) -> np.ndarray:
        """Seconds into the file of spectrogram frames (default: the snippet centres)."""
        frames = self.centres if frames is None else np.asarray(frames)
        return self.start + frames / self.fps


def ingest_audio(path: str | Path, context: int = AUDIO_FRAMES, hop: int = HOP,
                 start: float | None = None, end: float | None = None,
                 cfg: SpectrogramConfig = DEFAULT) -> AudioIngest:
    """Read a sound file (or its ``start``–``end`` seconds), make its spectrogram and cut audio
    snippets every ``hop`` frames. ``AudioError`` as ``load_audio``."""
    audio, sr, channels, file_seconds, t0, seconds = _read(path, cfg.sample_rate, start or 0.0, end)
    spec = spectrogram(audio, cfg)
    snippets, centres = audio_snippets(spec, context, hop)
    return AudioIngest(str(path), seconds, file_seconds, t0, sr, channels,
                       float(cfg.fps), spec, snippets, centres)
