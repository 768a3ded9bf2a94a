"""Spectrogram front end: the MSMD recipe (92 log-spaced bins, 20 frames/s, log(1 + x))."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audiosheet.frontend.audio import load_audio
from audiosheet.frontend.spectrogram import DEFAULT, filterbank, n_bins, onset_strength, spectrogram

SR = DEFAULT.sample_rate


def _centres() -> np.ndarray:
    fb = filterbank()
    freqs = np.fft.fftfreq(DEFAULT.frame_size, 1 / SR)[: fb.shape[0]]
    return freqs[fb.argmax(axis=0)]


def test_filterbank_shape_and_normalisation():
    fb = filterbank()
    assert n_bins() == 92 and fb.shape == (1024, 92)
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, rtol=1e-5)
    c = _centres()
    assert np.all(np.diff(c) > 0)  # duplicates merged: strictly increasing centres
    assert 25 < c[0] < 60 and 5000 < c[-1] < 6100


def test_frames_and_hop():
    spec = spectrogram(np.zeros(SR * 2, np.float32))
    assert spec.shape == (40, 92) and spec.dtype == np.float32
    assert spectrogram(np.zeros(0, np.float32)).shape == (0, 92)
    with pytest.raises(ValueError, match="mono"):
        spectrogram(np.zeros((2, 100), np.float32))


def test_sine_lands_in_its_band():
    t = np.arange(SR) / SR
    for f in (110.0, 440.0, 1760.0):
        spec = spectrogram(0.5 * np.sin(2 * np.pi * f * t).astype(np.float32))
        assert spec.min() >= 0  # log(1 + x) of magnitudes
        peak = spec[5:-5].mean(axis=0).argmax()
        assert abs(np.log2(_centres()[peak] / f)) < 1.5 / 16  # within 1.5 bands of 1/16 octave


def test_click_onset_at_its_frame():
    audio = np.zeros(SR * 3, np.float32)
    for sec in (0.5, 1.0, 2.25):
        i = int(sec * SR)
        audio[i:i + 2000] = np.random.default_rng(0).normal(0, 0.3, 2000) * np.hanning(4000)[2000:]
    flux = onset_strength(spectrogram(audio))
    peaks = sorted(np.argsort(flux)[-3:])
    for p, sec in zip(peaks, (0.5, 1.0, 2.25)):
        assert abs(p - sec * DEFAULT.fps) <= 1


def test_load_audio_resamples_and_mixes_down(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    sf.write(tmp_path / "a.wav", stereo, 44100)
    audio = load_audio(tmp_path / "a.wav")
    assert audio.ndim == 1 and abs(len(audio) - SR) <= 1
    peak = spectrogram(audio)[5:-5].mean(0).argmax()
    assert abs(np.log2(_centres()[peak] / 440)) < 1.5 / 16


def test_load_audio_bad_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="bad.wav: not a readable audio file"):
        load_audio(bad)
