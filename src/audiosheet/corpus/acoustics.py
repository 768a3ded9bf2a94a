"""Room acoustics of a recording: a synthetic room (direct sound, early reflections, a decaying,
frequency-dependent diffuse tail) and background noise (coloured noise and mains hum), for the
recorded variants of a corpus (``variants``: ``performed``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from audiosheet.geometry import SAMPLE_RATE

ROOM = {
    "rt60": (0.3, 1.2),  # s, reverberation time of the low frequencies
    "hf_ratio": (0.3, 0.7),  # RT60 at 8 kHz over RT60 at 125 Hz
    "drr_db": (0.0, 12.0),  # direct-to-reverberant energy ratio
    "early": (3, 8),  # early reflections
    "mixing_s": (0.012, 0.035),  # start of the diffuse tail
    "snr_db": (15.0, 35.0),  # music over background noise
    "noise_slope": (0.8, 1.6),  # noise power ∝ f^-slope (1: pink, 2: brown)
    "hum_db": (-25.0, -8.0),  # mains hum (50 or 60 Hz and harmonics) over the noise
    "gain_db": (-6.0, 0.0),  # recording level
}
"""Ranges of ``Room.sample`` (uniform)."""


@dataclass
class Room:
    """Where and how a performance was recorded (one draw of ``ROOM``)."""

    rt60: float = 0.6
    hf_ratio: float = 0.5
    drr_db: float = 6.0
    early: list = field(default_factory=list)  # [(delay s, gain)]
    mixing_s: float = 0.02
    snr_db: float = 25.0
    noise_slope: float = 1.0
    hum_hz: float = 50.0
    hum_db: float = -15.0
    gain_db: float = 0.0
    seed: int = 0  # of the noise in the tail and the background

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Room":
        r = ROOM

        def u(name, nd=3):
            return round(float(rng.uniform(*r[name])), nd)

        mixing = u("mixing_s", 4)
        n = int(rng.integers(r["early"][0], r["early"][1] + 1))
        delays = np.sort(rng.uniform(0.002, mixing, n))
        gains = rng.choice([-1.0, 1.0], n) * rng.uniform(0.25, 0.7, n) * (0.004 / (0.004 + delays)) ** 0.5
        return cls(rt60=u("rt60"), hf_ratio=u("hf_ratio"), drr_db=u("drr_db", 2),
                   early=[(round(float(d), 5), round(float(g), 4)) for d, g in zip(delays, gains)],
                   mixing_s=mixing, snr_db=u("snr_db", 2), noise_slope=u("noise_slope"),
                   hum_hz=float(rng.choice([50.0, 60.0])), hum_db=u("hum_db", 2),
                   gain_db=u("gain_db", 2), seed=int(rng.integers(2**31)))

    def to_dict(self) -> dict:
        return asdict(self)


BANDS = (250.0, 1000.0, 4000.0)  # Hz: edges of the tail's decay bands


def impulse_response(room: Room, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A measured-looking room impulse response: 1 at t = 0 (the direct sound, so onsets stay
    where they are), early reflections, then exponentially decaying noise from the mixing time
    on, decaying faster the higher the frequency band; the reverberant part is scaled to the
    direct-to-reverberant ratio. float64, 1.5 × RT60 long."""
    from scipy import signal

    rng = np.random.default_rng([room.seed, 1])
    n = int(1.5 * room.rt60 * sr)
    t = np.arange(n) / sr
    early = np.zeros(n)
    for d, g in room.early:
        early[min(int(round(d * sr)), n - 1)] += g
    noise = rng.normal(0.0, 1.0, n)
    edges = (0.0, *BANDS, sr / 2)
    tail = np.zeros(n)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo == 0:
            band = signal.sosfilt(signal.butter(4, hi, "lowpass", fs=sr, output="sos"), noise)
        elif hi >= sr / 2:
            band = signal.sosfilt(signal.butter(4, lo, "highpass", fs=sr, output="sos"), noise)
        else:
            band = signal.sosfilt(signal.butter(4, (lo, hi), "bandpass", fs=sr, output="sos"), noise)
        centre = np.sqrt(max(lo, 62.5) * min(hi, 16000.0))
        where = np.clip(np.log2(centre / 125.0) / np.log2(8000.0 / 125.0), 0.0, 1.0)
        tail += band * np.exp(-6.908 * t / (room.rt60 * room.hf_ratio ** where))
    m = int(room.mixing_s * sr)
    fade = np.clip((np.arange(n) - m) / (0.005 * sr), 0.0, 1.0)  # the tail builds up over 5 ms
    tail *= 0.5 - 0.5 * np.cos(np.pi * fade)
    rev = early + tail / max(np.sqrt(np.sum(tail ** 2)), 1e-12) * 0.7  # tail ≫ early in energy
    rev *= np.sqrt(10 ** (-room.drr_db / 10) / max(np.sum(rev ** 2), 1e-12))
    rev[0] = 1.0
    return rev


def background_noise(n: int, room: Room, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS background: noise with power ∝ f^-slope plus mains hum (and three harmonics)."""
    from scipy import fft

    rng = np.random.default_rng([room.seed, 2])
    m = fft.next_fast_len(n, real=True)  # shaped at a length the FFT is fast for, then cut
    spec = fft.rfft(rng.normal(0.0, 1.0, m))
    f = fft.rfftfreq(m, 1.0 / sr)
    spec *= np.maximum(f, 20.0) ** (-room.noise_slope / 2)
    spec[f < 20.0] *= (f[f < 20.0] / 20.0) ** 2  # no rumble below 20 Hz
    noise = fft.irfft(spec, m)[:n]
    noise /= max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)
    t = np.arange(n) / sr
    hum = sum(k ** -1.5 * np.sin(2 * np.pi * k * room.hum_hz * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, 5))
    hum /= max(float(np.sqrt(np.mean(hum ** 2))), 1e-12)
    out = noise + 10 ** (room.hum_db / 20) * hum
    return out / max(float(np.sqrt(np.mean(out ** 2))), 1e-12)


def record(audio: np.ndarray, room: Room, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``audio`` played in ``room`` and recorded with its background noise at ``room.snr_db``;
    the same length (the direct sound is not delayed), float32, peak below 0.99."""
    from scipy.signal import fftconvolve

    dry = np.asarray(audio, dtype=np.float64)
    wet = fftconvolve(dry, impulse_response(room, sr))[:len(dry)]
    rms = float(np.sqrt(np.mean(wet ** 2)))
    out = wet + background_noise(len(wet), room, sr) * rms * 10 ** (-room.snr_db / 20)
    out *= 10 ** (room.gain_db / 20)
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)
