"""Audio rendering: SoundFonts from wheels, held-out test combination, tempo warping."""
from __future__ import annotations

import numpy as np
import pytest

from audiosheet.spectrogram import onset_strength, spectrogram
from audiosheet.synth import (TEST_ONLY, Performance, SynthError, available_soundfonts, combinations,
                              render)


def test_soundfonts_from_wheels_and_held_out_combination():
    sf = available_soundfonts()
    assert {"TimGM6mb", "Merlin"} <= set(sf)
    train, test = combinations(sf)
    assert test == [TEST_ONLY] and TEST_ONLY not in train and len(train) == 7
    with pytest.raises(SynthError):
        available_soundfonts("nope")


def test_warp_is_monotonic_and_follows_tempo():
    p = Performance("TimGM6mb", 0, tempo_ratio=1.1)
    t = np.linspace(0, 60, 200)
    np.testing.assert_allclose(p.warp(t, 60), t / 1.1, atol=1e-6)
    rng = np.random.default_rng(1)
    q = Performance.sample(rng, ("TimGM6mb", 0))
    w = q.warp(t, 60)
    assert np.all(np.diff(w) > 0) and 0.8 * 60 < w[-1] < 1.25 * 60


def test_rendered_onsets_match_warped_times():
    notes = np.array([[i * 0.5, 0.4, 60 + (i * 5) % 24] for i in range(16)])
    p = Performance("Merlin", 0, tempo_ratio=0.9, curve=[(0.05, 4.0, 0.0)], seed=3)
    audio = render(notes, p, available_soundfonts())
    on = p.warp(notes[:, 0], 8.0)
    assert len(audio) / 22050 == pytest.approx(on[-1] + 0.4 / 0.9 + 1.5, abs=0.2)
    flux = onset_strength(spectrogram(audio))
    frames = np.round(on * 20).astype(int)
    at = np.array([flux[max(f - 1, 0):f + 2].max() for f in frames])
    assert np.median(at) > 3 * np.median(flux)


def test_missing_soundfont_is_a_clear_error():
    with pytest.raises(SynthError, match="not available"):
        render(np.array([[0, 1, 60]]), Performance("Nope", 0), available_soundfonts())
