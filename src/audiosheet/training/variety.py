"""Real-world variety for supervised training (issue 16): what real scans, photos and recordings
do to the input, drawn per pair on the fly in ``audiosheet train --variety P``.

The training corpus holds clean engraved strips and clean SoundFont spectrograms (varied already
at build time in layout, engraver, SoundFont, tempo, dynamics and pedal). This module adds, per
training pair and seeded, what the corpus cannot hold:

* **sheet** (uint8 strip crops (B, 100, 120), paper = 255, the notehead at the centre column):
  ``scan`` — the print-and-scan simulation of ``corpus variants`` (``degrade.apply`` with
  ``ScanStyle.sample_print``: skew, keystone, ink bleed or thinning, paper tone and grain,
  uneven light, blur, noise, JPEG); ``photo`` — a phone photo of a page (the same simulation with
  a stronger keystone, grey paper, light falling off by 15–45 %, more blur and noise, low JPEG
  quality); ``lowres`` — a low-resolution scan (down-sampled by 1.4–2.6 with area averaging,
  then up again). Geometry moves about the crop centre, so the notehead stays where its onset is.
* **audio** (log(1 + magnitude) spectrogram windows (B, 1, 92, T), 20 frames/s, the onset at the
  centre frame): ``timing`` — expressive timing inside the window: a smooth time warp that keeps
  the centre frame and both ends in place (local tempo ±10–35 %); ``dynamics`` — a smooth gain
  curve over time (±2–8 dB); ``pedal`` — sustain-pedal blur, every bin held with an exponential
  decay (time constant 0.4–3 s) and blended in; ``room`` — a room and microphone: per-bin
  exponential reverberation with RT60 falling towards high frequencies, early reflections and
  a microphone's frequency ripple; ``background`` — coloured noise (spectral slope 0 to −1.5,
  slow level changes) at 12–40 dB SNR, with mains hum (50 or 60 Hz and harmonics) in a third of
  the cases; ``codec`` — lossy coding at a low bit rate: cells more than 12–30 dB below their
  frame's peak dropped (spectral holes), magnitudes quantised with 5–25 % relative noise, and a
  low-pass at 3.5–6 kHz in half of the cases; ``band`` — a band-limited device or old recording:
  high-pass at 80–400 Hz, low-pass at 2.5–5.5 kHz, 12–30 dB per octave.

Each transform has its probability (``p_*``) in ``VarietyConfig``; ``TrainConfig.variety``
scales them all (0: off) and ``TrainConfig.variety_settings`` overrides single fields
(``{"p_codec": 0}`` switches codec off). Audio level changes work on expm1(x) (the magnitude)
as in ``augment``. Ranges are ours: chosen to span what ``benchmarks/real_dev`` and the
``scanned``/``performed`` variants contain, not tuned on any test set.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from audiosheet.geometry import FPS
from audiosheet.training.augment import batch_mask, bin_frequencies, normal, on_subset, to_linear, to_log, uniform


@dataclass
class VarietyConfig:
    # sheet
    p_scan: float = 0.35
    p_photo: float = 0.15
    photo_keystone: float = 0.05  # corners move by up to this fraction of the crop
    photo_shading: tuple = (0.15, 0.45)
    photo_paper: tuple = (150.0, 225.0)  # gray levels
    p_lowres: float = 0.25
    lowres_factor: tuple = (1.4, 2.6)
    # audio
    p_timing: float = 0.3
    timing_swing: tuple = (0.10, 0.35)  # largest local tempo deviation
    p_dynamics: float = 0.3
    dynamics_db: tuple = (2.0, 8.0)  # largest deviation of the gain curve
    p_pedal: float = 0.3
    pedal_seconds: tuple = (0.4, 3.0)  # decay time constant of held energy
    pedal_mix: tuple = (0.4, 1.0)
    p_room: float = 0.4
    room_rt60: tuple = (0.3, 2.0)  # seconds at 500 Hz
    room_hf: tuple = (0.3, 0.8)  # RT60 at 5 kHz relative to 500 Hz
    room_wet: tuple = (0.15, 0.9)
    room_ripple_db: tuple = (0.0, 4.0)  # microphone frequency response ripple
    p_background: float = 0.3
    background_snr_db: tuple = (12.0, 40.0)
    background_slope: tuple = (-1.5, 0.0)  # magnitude ∝ f ** (slope / 2)
    hum_fraction: float = 0.33
    p_codec: float = 0.25
    codec_floor_db: tuple = (12.0, 30.0)  # cells this far below their frame's peak are dropped
    codec_noise: tuple = (0.05, 0.25)
    codec_lowpass_hz: tuple = (3500.0, 6000.0)
    p_band: float = 0.2
    band_low_hz: tuple = (80.0, 400.0)
    band_high_hz: tuple = (2500.0, 5500.0)
    band_slope_db: tuple = (12.0, 30.0)  # per octave outside the band

    SHEET = ("scan", "photo", "lowres")
    AUDIO = ("timing", "dynamics", "pedal", "room", "background", "codec", "band")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def build(cls, scale: float, settings: dict | None = None) -> "VarietyConfig":
        """The defaults with every ``p_*`` times ``scale`` (capped at 1), then ``settings``
        (field → value). Raises ValueError naming unknown fields."""
        names = {f.name for f in fields(cls)}
        unknown = set(settings or {}) - names
        if unknown:
            raise ValueError(f"unknown variety settings: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(names))})")
        d = {k: (min(1.0, v * scale) if k.startswith("p_") else v) for k, v in asdict(cls()).items()}
        d.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in (settings or {}).items()})
        return cls(**d)

    @property
    def sheet_on(self) -> bool:
        return any(getattr(self, "p_" + k) > 0 for k in self.SHEET)

    @property
    def audio_on(self) -> bool:
        return any(getattr(self, "p_" + k) > 0 for k in self.AUDIO)


# ---------------------------------------------------------------------------------------------
# sheet: per crop, numpy (the page simulation of ``degrade``), seeded by a numpy Generator

def _recentre(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift ``img`` by (−dx, −dy) px (bilinear, paper outside), undoing a moved centre."""
    from PIL import Image

    if abs(dx) < 0.05 and abs(dy) < 0.05:
        return img
    im = Image.fromarray(img).transform(img.shape[::-1], Image.Transform.AFFINE,
                                        (1, 0, dx, 0, 1, dy), Image.Resampling.BILINEAR, fillcolor=255)
    return np.asarray(im)


def _page_like(crop: np.ndarray, style, rng: np.random.Generator) -> np.ndarray:
    """``degrade.apply`` on a crop, moved back so that the crop centre stays where it was."""
    from audiosheet.corpus.degrade import apply

    h, w = crop.shape
    out = apply(crop, style, rng)
    cx, cy = style.map_points(w / 2.0, h / 2.0, crop.shape)
    return _recentre(out, float(cx) - w / 2.0, float(cy) - h / 2.0)


def photo_style(rng: np.random.Generator, cfg: VarietyConfig):
    """A ``degrade.ScanStyle`` for a phone photo of a page (ranges in ``VarietyConfig``)."""
    from audiosheet.corpus.degrade import ScanStyle

    return ScanStyle.sample_print(rng, keystone=cfg.photo_keystone, shading=cfg.photo_shading,
                                  paper=cfg.photo_paper, ink=(20.0, 80.0), blur=(0.5, 1.1),
                                  noise=(4.0, 12.0), quality=(25, 60), max_angle=3.0,
                                  texture=(0.02, 0.08))


def lowres(crop: np.ndarray, factor: float) -> np.ndarray:
    """A crop as a scan at 1/``factor`` of the resolution would show it: area-averaged down, then
    bilinear up to the same size."""
    from PIL import Image

    h, w = crop.shape
    small = Image.fromarray(crop).resize((max(int(round(w / factor)), 8), max(int(round(h / factor)), 8)),
                                         Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def sheet_variety(crops: np.ndarray, cfg: VarietyConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply the sheet transforms to uint8 crops (B, H, W), paper = 255; returns a new array.

    Per crop: a photo (``p_photo``) or else a print-and-scan (``p_scan``), then a low resolution
    (``p_lowres``). Every random number comes from ``rng`` (same draws, same output)."""
    from audiosheet.corpus.degrade import ScanStyle

    out = crops.copy()
    b = len(crops)
    photo = rng.random(b) < cfg.p_photo
    scan = ~photo & (rng.random(b) < cfg.p_scan)
    low = rng.random(b) < cfg.p_lowres
    factors = rng.uniform(*cfg.lowres_factor, size=b)
    for i in range(b):
        if photo[i]:
            out[i] = _page_like(out[i], photo_style(rng, cfg), rng)
        elif scan[i]:
            out[i] = _page_like(out[i], ScanStyle.sample_print(rng), rng)
        if low[i]:
            out[i] = lowres(out[i], float(factors[i]))
    return out


# ---------------------------------------------------------------------------------------------
# audio: batched torch on (B, 1, F, T) log(1 + magnitude), seeded by a torch Generator

def _smooth_curve(g, n: int, knots: int, length: int, device) -> torch.Tensor:
    """(n, length) smooth random curves in [−1, 1] (``knots`` random values, linearly interpolated)."""
    v = uniform(g, (n, 1, knots), -1.0, 1.0, device)
    return F.interpolate(v, size=length, mode="linear", align_corners=True)[:, 0]


def _timing(x, g, cfg: VarietyConfig):
    """Expressive timing: output frame t reads source frame t + d(t), d a smooth displacement that
    is 0 at the centre and at both ends (so nothing outside the window is needed and the onset
    stays put); its slope, the local tempo deviation, is at most ``timing_swing``."""
    n, T, dev = len(x), x.shape[-1], x.device
    c, end = float(T // 2), float(T - 1)  # the onset's frame (the window is cut at f − T // 2)
    t = torch.arange(T, device=dev, dtype=torch.float32)
    swing = uniform(g, (n, 1), *cfg.timing_swing, dev)
    # two independent half-sine bumps (before and after the centre), random signs and sizes
    amp = uniform(g, (n, 2), -1.0, 1.0, dev)
    left = torch.sin(math.pi * (t / c).clamp(0, 1))  # 0 at 0 and at c
    right = torch.sin(math.pi * ((t - c) / (end - c)).clamp(0, 1))  # 0 at c and at T − 1
    d = (amp[:, :1] * left * c * (t < c) + amp[:, 1:] * right * (end - c) * (t >= c)) * swing / math.pi
    pos = (t + d).clamp(0, end)
    i0 = pos.floor().long().clamp(max=T - 2)
    frac = (pos - i0).to(x.dtype)[:, None, None, :]
    idx = i0[:, None, None, :].expand(*x.shape)
    return torch.gather(x, 3, idx) * (1 - frac) + torch.gather(x, 3, idx + 1) * frac


def _dynamics(x, g, cfg: VarietyConfig):
    """A smooth gain curve over time (a phrase's crescendo and diminuendo), ±``dynamics_db``."""
    n, T = len(x), x.shape[-1]
    db = _smooth_curve(g, n, 4, T, x.device) * uniform(g, (n, 1), *cfg.dynamics_db, x.device)
    return to_log(to_linear(x) * 10 ** (db[:, None, None, :] / 20), x)


def _pedal(x, g, cfg: VarietyConfig):
    """Sustain pedal: each bin's magnitude held with an exponential decay, y[t] = max(m[t],
    a · y[t−1]), a = exp(−1 / (τ · fps)); blended in by ``pedal_mix``."""
    m = to_linear(x)
    n = len(x)
    a = torch.exp(-1.0 / (uniform(g, n, *cfg.pedal_seconds, x.device) * FPS))[:, None, None]
    mix = uniform(g, (n, 1, 1, 1), *cfg.pedal_mix, x.device)
    y = torch.empty_like(m)
    y[..., 0] = m[..., 0]
    for t in range(1, m.shape[-1]):
        y[..., t] = torch.maximum(m[..., t], a * y[..., t - 1])
    return to_log(m + mix * (y - m), x)


def _room(x, g, cfg: VarietyConfig):
    """A room and a microphone: per-bin exponential reverberation (RT60 at 500 Hz drawn, falling
    log-linearly to ``room_hf`` of it at 5 kHz), early reflections (a lift of the direct frame
    and the next), and a smooth ripple of the microphone's response over log frequency."""
    n, (fb, T), dev = len(x), x.shape[-2:], x.device
    f = bin_frequencies().to(dev)
    rt = uniform(g, (n, 1), *cfg.room_rt60, dev)
    hf = uniform(g, (n, 1), *cfg.room_hf, dev)
    slope = torch.log(hf) / math.log(10.0)  # per decade above 500 Hz
    rt_f = rt * torch.exp(slope * torch.log10(f / 500.0).clamp(-1, 1)[None])  # (n, F)
    a = 10.0 ** (-3.0 / (rt_f * FPS))
    wet = uniform(g, (n, 1, 1), *cfg.room_wet, dev)
    k = int(min(T, 2.5 * FPS))
    lag = torch.arange(k, device=dev, dtype=torch.float32)
    kern = wet * a[:, :, None] ** lag  # (n, F, k)
    early = uniform(g, (n, 1), 0.0, 0.5, dev)
    kern[:, :, 0] = 1.0 + early
    kern[:, :, 1] = kern[:, :, 1] + early / 2
    ripple = _smooth_curve(g, n, 8, fb, dev) * uniform(g, (n, 1), *cfg.room_ripple_db, dev)
    m = to_linear(x)[:, 0]  # (n, F, T)
    y = F.conv1d(F.pad(m.reshape(1, n * fb, T), (k - 1, 0)), kern.flip(2).reshape(n * fb, 1, k),
                 groups=n * fb).reshape(n, fb, T)
    y = y / (1.0 + early[:, :, None]) * 10 ** (ripple[:, :, None] / 20)
    return to_log(y[:, None], x)


def _background(x, g, cfg: VarietyConfig):
    """Coloured noise (magnitude ∝ f^(slope/2), slowly changing level) at a random SNR against
    the window's mean power; mains hum at 50 or 60 Hz and its harmonics in ``hum_fraction``."""
    m = to_linear(x)
    n, (fb, T), dev = len(x), x.shape[-2:], x.device
    f = bin_frequencies().to(dev)
    slope = uniform(g, (n, 1), *cfg.background_slope, dev)
    shape = (f[None] / 500.0) ** (slope / 2)  # (n, F)
    shape = shape / shape.pow(2).mean(1, keepdim=True).sqrt()
    level = 10 ** (_smooth_curve(g, n, 3, T, dev) * 0.15)  # ±3 dB over the window
    noise = torch.hypot(normal(g, m.shape, dev), normal(g, m.shape, dev)) / math.sqrt(2)
    noise = noise * shape[:, None, :, None] * level[:, None, None, :]
    hum_on = batch_mask(g, n, cfg.hum_fraction, dev)
    base = torch.where(batch_mask(g, n, 0.5, dev), 50.0, 60.0)
    harmonics = base[:, None] * torch.arange(1, 7, device=dev)[None]  # (n, 6)
    near = (torch.log2(f[None, None] / harmonics[:, :, None]).abs() < 1 / 32).float().amax(1)
    noise = noise + (hum_on[:, None].float() * near * 3.0)[:, None, :, None]
    snr = uniform(g, (n, 1, 1, 1), *cfg.background_snr_db, dev)
    p_sig = m.pow(2).mean(dim=(1, 2, 3), keepdim=True)
    p_noise = noise.pow(2).mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return to_log(m + noise * torch.sqrt(p_sig * 10 ** (-snr / 10) / p_noise), x)


def _codec(x, g, cfg: VarietyConfig):
    """A lossy codec at a low bit rate: cells more than ``codec_floor_db`` below their frame's
    peak dropped (the bits went to louder ones), the rest quantised (relative noise), and in half
    of the cases a low-pass."""
    m = to_linear(x)
    n, dev = len(x), x.device
    floor = 10 ** (-uniform(g, (n, 1, 1, 1), *cfg.codec_floor_db, dev) / 20)
    peak = m.amax(dim=2, keepdim=True)
    m = m * (m >= floor * peak)
    rel = uniform(g, (n, 1, 1, 1), *cfg.codec_noise, dev)
    m = (m * (1 + rel * normal(g, m.shape, dev))).clamp_min(0)
    f = bin_frequencies().to(dev)
    cut = uniform(g, (n, 1), *cfg.codec_lowpass_hz, dev)
    lp = torch.where(batch_mask(g, n, 0.5, dev)[:, None], (f[None] <= cut).float(), torch.ones(n, len(f), device=dev))
    return to_log(m * lp[:, None, :, None], x)


def _band(x, g, cfg: VarietyConfig):
    """A band-limited device: gains falling by ``band_slope_db`` per octave below the high-pass
    and above the low-pass corner."""
    n, dev = len(x), x.device
    f = bin_frequencies().to(dev)[None]
    lo = uniform(g, (n, 1), *cfg.band_low_hz, dev)
    hi = uniform(g, (n, 1), *cfg.band_high_hz, dev)
    s = uniform(g, (n, 1), *cfg.band_slope_db, dev)
    db = -s * (torch.log2(lo / f).clamp_min(0) + torch.log2(f / hi).clamp_min(0))
    return to_log(to_linear(x) * 10 ** (db[:, None, :, None] / 20), x)


AUDIO_STEPS = (("timing", _timing), ("dynamics", _dynamics), ("pedal", _pedal), ("room", _room),
               ("background", _background), ("codec", _codec), ("band", _band))
"""In the order sound takes: the player, the room and microphone, the noise around it, the
encoder, the playback device."""


def audio_variety(x: torch.Tensor, cfg: VarietyConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply the audio transforms to spectrogram windows (B, 1, F, T) (onset at the centre
    frame) → same shape and dtype; each per sample with its probability."""
    b, dev = len(x), x.device
    for key, fn in AUDIO_STEPS:
        x = on_subset(x, batch_mask(generator, b, getattr(cfg, "p_" + key), dev),
                       lambda xs: fn(xs, generator, cfg))
    return x

