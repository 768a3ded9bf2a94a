"""Audio front end: waveform → log-frequency log-magnitude spectrogram (the MSMD/madmom recipe).

One module used by corpus building, training and queries, so that every spectrogram the models see
is made the same way. 22,050 Hz mono, frame 2048 (Hann), 20 frames/s, triangular filterbank with
16 bands per octave between 30 and 6,000 Hz (duplicate filters merged: 92 bins), then log(1 + x).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import scipy.fft


@dataclass(frozen=True)
class SpectrogramConfig:
    sample_rate: int = 22050  # Hz, mono
    frame_size: int = 2048  # samples per STFT frame (Hann window)
    fps: float = 20.0  # frames per second (hop = sample_rate / fps, may be fractional)
    bands_per_octave: int = 16  # logarithmic filterbank resolution
    fmin: float = 30.0  # Hz, lowest filter centre
    fmax: float = 6000.0  # Hz, highest filter centre

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT = SpectrogramConfig()


@lru_cache(maxsize=8)
def filterbank(cfg: SpectrogramConfig = DEFAULT) -> np.ndarray:
    """Triangular log-frequency filterbank, shape (frame_size // 2, n_bins), each filter sums to 1."""
    n_fft_bins = cfg.frame_size // 2
    bin_freqs = np.fft.fftfreq(cfg.frame_size, 1.0 / cfg.sample_rate)[:n_fft_bins]
    fref = 440.0
    left = np.floor(np.log2(cfg.fmin / fref) * cfg.bands_per_octave)
    right = np.ceil(np.log2(cfg.fmax / fref) * cfg.bands_per_octave)
    freqs = fref * 2.0 ** (np.arange(left, right) / cfg.bands_per_octave)
    freqs = freqs[np.searchsorted(freqs, cfg.fmin):]
    freqs = freqs[: np.searchsorted(freqs, cfg.fmax, "right")]
    # nearest FFT bin of every centre frequency; identical bins are merged
    idx = np.clip(np.searchsorted(bin_freqs, freqs), 1, n_fft_bins - 1)
    idx = idx - (freqs - bin_freqs[idx - 1] < bin_freqs[idx] - freqs)
    bins = np.unique(idx)
    fb = np.zeros((n_fft_bins, len(bins) - 2), dtype=np.float32)
    for i, (start, centre, stop) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        if stop - start < 2:  # too narrow for a triangle: a single-bin filter
            centre, stop = start, start + 1
        rise = np.linspace(0, 1, centre - start, endpoint=False)
        fall = np.linspace(1, 0, stop - centre, endpoint=False)
        tri = np.concatenate([rise, fall])
        fb[start:stop, i] = tri / tri.sum()
    return fb


@lru_cache(maxsize=8)
def _window(frame_size: int) -> np.ndarray:
    return np.hanning(frame_size).astype(np.float32)


def n_bins(cfg: SpectrogramConfig = DEFAULT) -> int:
    return filterbank(cfg).shape[1]


def spectrogram(audio: np.ndarray, cfg: SpectrogramConfig = DEFAULT, chunk: int = 2048) -> np.ndarray:
    """Log-filtered spectrogram of a mono float waveform at ``cfg.sample_rate``.

    Returns float32 array (n_frames, n_bins): frame i is centred on sample round(i * hop),
    n_frames = ceil(len(audio) / hop), so frame i covers time i / fps.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"spectrogram expects mono audio (1-d), got shape {audio.shape}")
    hop = cfg.sample_rate / cfg.fps
    n_frames = int(np.ceil(len(audio) / hop)) if len(audio) else 0
    half = cfg.frame_size // 2
    padded = np.pad(audio, (half, half + cfg.frame_size))
    starts = np.round(np.arange(n_frames) * hop).astype(np.int64)
    fb = filterbank(cfg)
    win = _window(cfg.frame_size)
    out = np.empty((n_frames, fb.shape[1]), dtype=np.float32)
    offsets = np.arange(cfg.frame_size)
    for a in range(0, n_frames, chunk):  # bounded memory for long recordings
        frames = padded[starts[a:a + chunk, None] + offsets] * win
        mag = np.abs(scipy.fft.rfft(frames, axis=1)[:, : fb.shape[0]])  # float32 in, complex64 out
        np.log1p(mag @ fb, out=out[a:a + chunk])
    return out


def onset_strength(spec: np.ndarray) -> np.ndarray:
    """Spectral flux (sum of positive log-magnitude rises), one value per frame; 0 for frame 0."""
    flux = np.zeros(len(spec), dtype=np.float32)
    if len(spec) > 1:
        flux[1:] = np.maximum(np.diff(spec.astype(np.float32), axis=0), 0).sum(axis=1)
    return flux
