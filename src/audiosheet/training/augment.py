"""Augmentations for SimCLR-style contrastive pre-training of the two snippet encoders.

Batched in torch and seeded: every random number comes from the ``torch.Generator`` passed in (no
global RNG), so a pipeline is reproducible from its seed. Every transform is applied per sample with
its own probability: a Bernoulli mask picks the samples and the transform runs once, batched, on that
subset (unchosen samples are left bit-identical).

Probabilities and ranges follow Carvalho & Widmer 2023 (seeds 001/002, ``shared/REFERENCE.md``);
values the reference does not give are marked "(ours)".

* Sheet snippets, float32 (B, 1, 80, 100), ink = 1, paper = 0: x/y shift, scale, rotation and small
  and large elastic deformation in one ``grid_sample``; Gaussian blur; Perlin-like noise; Gaussian
  noise; clamped to [0, 1].
* Audio snippets, float32 (B, 1, 92, T) of log(1 + filterbank magnitude), 20 frames/s: time stretch
  (combined with the crop from a longer window), reverb, parametric EQ, gain, noise at a random SNR,
  time and frequency masking; polarity inversion is a no-op on a magnitude spectrogram.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from audiosheet.geometry import FPS


class _Config:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})

    def with_probabilities(self, p: float):
        """A copy with every ``p_*`` probability set to ``p`` (0: identity pipeline)."""
        return type(self)(**{**asdict(self), **{f.name: p for f in fields(self) if f.name.startswith("p_")}})


@dataclass
class SheetAugConfig(_Config):
    p_shift_x: float = 0.65
    shift_x: float = 0.2  # max |shift|, fraction of the width
    p_shift_y: float = 0.65
    shift_y: float = 0.1  # max |shift|, fraction of the height (ours: the reference gives no amount)
    p_scale: float = 0.45
    scale: tuple = (0.9, 1.1)
    p_rotate: float = 0.35
    rotate: float = 4.0  # max |angle|, degrees
    p_noise: float = 0.25
    noise_std: tuple = (0.02, 0.1)  # (ours)
    p_blur: float = 0.25
    blur_kernel: tuple = (3, 11)  # odd kernel sizes in this range
    blur_sigma: tuple = (0.4, 1.0)
    p_perlin: float = 0.2
    perlin_amp: tuple = (0.1, 0.3)  # (ours) amplitude (std) of the smooth noise field
    perlin_cells: tuple = (4, 5)  # (ours) lattice of the coarsest octave (rows, cols); 2nd octave 2×
    p_elastic_small: float = 0.2
    elastic_small: tuple = (10, 12, 0.7)  # (ours) lattice rows, cols, displacement std in px
    p_elastic_large: float = 0.2
    elastic_large: tuple = (3, 4, 3.0)  # (ours)


@dataclass
class AudioAugConfig(_Config):
    overlap: float = 0.7  # two views overlap by at least this fraction of the context (audio_views)
    p_stretch: float = 0.4
    stretch: tuple = (0.5, 1.8)  # source frames per output frame (> 1: faster)
    p_time_mask: float = 0.5
    time_mask: float = 0.2  # max fraction of the frames
    p_freq_mask: float = 0.35
    freq_mask: float = 0.2  # max fraction of the bins
    mask_value: float = 0.0  # log(1 + 0): silence, the floor of the spectrogram
    p_polarity: float = 0.5  # no-op here, see _polarity
    p_gain: float = 0.5
    gain_db: tuple = (-12.0, 12.0)  # (ours) amplitude gain
    p_noise: float = 0.4
    snr_db: tuple = (5.0, 40.0)  # (ours)
    p_eq: float = 0.3
    eq_bands: int = 7
    eq_gain_db: tuple = (-12.0, 12.0)  # (ours) per peaking band
    eq_q: tuple = (0.5, 2.0)  # (ours)
    p_reverb: float = 0.3  # (ours) reverb is not in the reference list
    reverb_rt60: tuple = (0.2, 1.5)  # (ours) seconds for a 60 dB decay
    reverb_wet: tuple = (0.2, 0.8)  # (ours) tail level relative to the dry signal
    reverb_frames: int = 40  # length of the tail kernel (2 s at 20 frames/s)


# ---------------------------------------------------------------------------------------------
# random helpers: everything is drawn on the generator's device, then moved to the data's device

# helpers shared with the real-world variety (``training.variety``): seeded draws on the generator's
# device, moved to the batch's; batched application to a random subset; magnitude ↔ log spectrogram


def uniform(g: torch.Generator, shape, lo: float, hi: float, device) -> torch.Tensor:
    return (torch.rand(shape, generator=g, device=g.device) * (hi - lo) + lo).to(device)


def normal(g: torch.Generator, shape, device) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device).to(device)


def batch_mask(g: torch.Generator, n: int, p: float, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device).to(device) < p


def on_subset(x: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` with ``fn`` applied (batched) to the samples where ``mask`` is true."""
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    x = x.clone()
    x[idx] = fn(x[idx])
    return x


def _smooth_field(g, n: int, channels: int, cells: tuple, size: tuple, device) -> torch.Tensor:
    """Smooth random field (n, channels, *size), unit-ish std: Gaussian noise on a coarse lattice,
    upsampled bicubically (the cheap equivalent of smoothing full-resolution noise)."""
    coarse = normal(g, (n, channels, int(cells[0]), int(cells[1])), device)
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)


# ---------------------------------------------------------------------------------------------
# sheet

def _blur(x: torch.Tensor, g, cfg: SheetAugConfig) -> torch.Tensor:
    """Separable Gaussian blur, per-sample kernel size and sigma (zero = paper padding)."""
    n, dev = len(x), x.device
    kmax = int(cfg.blur_kernel[1]) // 2
    k = torch.randint(int(cfg.blur_kernel[0]) // 2, kmax + 1, (n,), generator=g, device=g.device).to(dev)
    sigma = uniform(g, n, *cfg.blur_sigma, dev)
    taps = torch.arange(-kmax, kmax + 1, device=dev, dtype=x.dtype)
    w = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2) * (taps.abs() <= k[:, None])
    w = w / w.sum(1, keepdim=True)
    y = x.transpose(0, 1)  # (1, n, H, W): one group per sample
    y = F.conv2d(y, w[:, None, None, :], padding=(0, kmax), groups=n)
    y = F.conv2d(y, w[:, None, :, None], padding=(kmax, 0), groups=n)
    return y.transpose(0, 1)


def _perlin(x: torch.Tensor, g, cfg: SheetAugConfig) -> torch.Tensor:
    """Perlin-like noise: two octaves of smooth low-frequency noise (uneven paper / toner)."""
    n, (h, w) = len(x), x.shape[-2:]
    c = cfg.perlin_cells
    field = _smooth_field(g, n, 1, c, (h, w), x.device) + \
        0.5 * _smooth_field(g, n, 1, (2 * c[0], 2 * c[1]), (h, w), x.device)
    return x + uniform(g, (n, 1, 1, 1), *cfg.perlin_amp, x.device) * field / 1.118  # std(1 + .5²)^.5


def _noise(x: torch.Tensor, g, cfg: SheetAugConfig) -> torch.Tensor:
    return x + uniform(g, (len(x), 1, 1, 1), *cfg.noise_std, x.device) * normal(g, x.shape, x.device)


def augment_sheet(x: torch.Tensor, cfg: SheetAugConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment sheet snippets (B, 1, H, W), ink = 1 / paper = 0 → same shape and dtype, in [0, 1]."""
    g, (b, _, h, w), dev = generator, x.shape, x.device
    m = {k: batch_mask(g, b, getattr(cfg, "p_" + k), dev)
         for k in ("shift_x", "shift_y", "scale", "rotate", "elastic_small", "elastic_large")}
    # geometry: one affine grid (+ elastic displacement) and one grid_sample on the chosen samples
    tx = uniform(g, b, -cfg.shift_x, cfg.shift_x, dev) * m["shift_x"] * w  # px
    ty = uniform(g, b, -cfg.shift_y, cfg.shift_y, dev) * m["shift_y"] * h
    s = torch.where(m["scale"], uniform(g, b, *cfg.scale, dev), torch.ones(b, device=dev))
    a = uniform(g, b, -cfg.rotate, cfg.rotate, dev) * m["rotate"] * (math.pi / 180)
    geo = torch.stack(list(m.values())).any(0)

    def warp(xs: torch.Tensor) -> torch.Tensor:
        i = geo.nonzero().squeeze(1)
        n, cos, sin = len(i), torch.cos(a[i]) / s[i], torch.sin(a[i]) / s[i]
        # output → input coordinates in pixels: p_in = R(a) p_out / s − t; normalised by (w/2, h/2)
        theta = torch.stack([torch.stack([cos, -sin * h / w, -2 * tx[i] / w], 1),
                             torch.stack([sin * w / h, cos, -2 * ty[i] / h], 1)], 1)
        grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
        for key, (rows, cols, std) in (("elastic_small", cfg.elastic_small),
                                       ("elastic_large", cfg.elastic_large)):
            d = _smooth_field(g, n, 2, (rows, cols), (h, w), dev) * std * m[key][i, None, None, None]
            grid = grid + d.permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h], device=dev)
        return F.grid_sample(xs, grid.to(xs.dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    x = on_subset(x, geo, warp)
    for key, fn in (("blur", _blur), ("perlin", _perlin), ("noise", _noise)):
        x = on_subset(x, batch_mask(g, b, getattr(cfg, "p_" + key), dev), lambda xs: fn(xs, g, cfg))
    return x.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# audio: transforms on log(1 + magnitude) spectrograms; level changes work on expm1(x)

@lru_cache(maxsize=1)
def bin_frequencies() -> torch.Tensor:
    """Centre frequency (Hz) of each of the 92 filterbank bins (weighted mean of its FFT bins)."""
    import numpy as np

    from audiosheet.frontend.spectrogram import DEFAULT, filterbank
    fb = filterbank(DEFAULT)
    f = np.fft.fftfreq(DEFAULT.frame_size, 1.0 / DEFAULT.sample_rate)[: fb.shape[0]]
    return torch.from_numpy((f @ fb) / fb.sum(0)).float()


def to_linear(x: torch.Tensor) -> torch.Tensor:
    """Magnitudes from a log(1 + x) spectrogram (the inverse of ``frontend.spectrogram``'s log)."""
    return torch.expm1(x.float()).clamp_min(0.0)


def to_log(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """log(1 + m) in the dtype of ``like``."""
    return torch.log1p(m).to(like.dtype)


def _crop_stretch(x: torch.Tensor, context: int, centre: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Windows of ``context`` frames centred on ``centre`` (B,) frames of ``x`` (B, C, F, L), reading
    ``rate`` (B,) source frames per output frame, linear interpolation; silence outside ``x``."""
    b, L = len(x), x.shape[-1]
    pos = centre[:, None] + rate[:, None] * (torch.arange(context, device=x.device) + 0.5 - context / 2) - 0.5
    i0 = pos.floor()
    frac = (pos - i0).to(x.dtype)[:, None, None, :]
    i0 = i0.long()

    def tap(i: torch.Tensor) -> torch.Tensor:
        v = torch.gather(x, 3, i.clamp(0, L - 1)[:, None, None, :].expand(*x.shape[:3], context))
        return v * ((i >= 0) & (i < L))[:, None, None, :]

    return tap(i0) * (1 - frac) + tap(i0 + 1) * frac


def _reverb(x, g, cfg: AudioAugConfig):
    """Exponentially decaying tail along time, per bin, in the linear domain; causal, so energy is
    only moved later: y[t] = x[t] + wet · Σ_{k≥1} a^k x[t − k], a = 10^(−3 / (RT60 · fps))."""
    n, k = len(x), int(cfg.reverb_frames)
    a = 10.0 ** (-3.0 / (uniform(g, n, *cfg.reverb_rt60, x.device) * FPS))
    wet = uniform(g, n, *cfg.reverb_wet, x.device)
    lag = torch.arange(k, device=x.device, dtype=torch.float32)
    kern = wet[:, None] * a[:, None] ** lag
    kern[:, 0] = 1.0
    m = to_linear(x)  # (n, 1, F, T) → (F, n, T), one conv group per sample
    y = F.conv1d(F.pad(m[:, 0].transpose(0, 1), (k - 1, 0)), kern.flip(1)[:, None, :], groups=n)
    return to_log(y.transpose(0, 1)[:, None], x)


def _eq(x, g, cfg: AudioAugConfig):
    """Parametric EQ: sum of ``eq_bands`` peaking bells (log-uniform centre over the bins' range,
    random gain in dB and Q) → one smooth gain curve over the bins, applied to the magnitude."""
    n, nb = len(x), cfg.eq_bands
    f = bin_frequencies().to(x.device)
    lo, hi = math.log(float(f[0])), math.log(float(f[-1]))
    fc = torch.exp(uniform(g, (n, nb, 1), lo, hi, x.device))
    gain = uniform(g, (n, nb, 1), *cfg.eq_gain_db, x.device)
    q = uniform(g, (n, nb, 1), *cfg.eq_q, x.device)
    curve_db = (gain / (1 + (q * (f / fc - fc / f)) ** 2)).sum(1)  # (n, F), peaking-filter shape
    return to_log(to_linear(x) * 10 ** (curve_db[:, None, :, None] / 20), x)


def _gain(x, g, cfg: AudioAugConfig):
    """x' = log(1 + g · (exp(x) − 1)), g an amplitude factor."""
    gain = 10 ** (uniform(g, (len(x), 1, 1, 1), *cfg.gain_db, x.device) / 20)
    return to_log(to_linear(x) * gain, x)


def _add_noise(x, g, cfg: AudioAugConfig):
    """White-noise magnitudes (Rayleigh, as |STFT| of Gaussian noise) added in the linear domain,
    scaled to a random SNR against the snippet's mean power."""
    m = to_linear(x)
    snr = uniform(g, (len(x), 1, 1, 1), *cfg.snr_db, x.device)
    p_sig = m.pow(2).mean(dim=(1, 2, 3), keepdim=True)
    noise = torch.hypot(normal(g, m.shape, x.device), normal(g, m.shape, x.device)) / math.sqrt(2)
    return to_log(m + noise * torch.sqrt(p_sig * 10 ** (-snr / 10)), x)


def _band_mask(x, g, frac: float, value: float, dim: int):
    """One random band of up to ``frac`` of axis ``dim`` (2: bins, 3: frames) set to ``value``."""
    n, size = len(x), x.shape[dim]
    width = (uniform(g, n, 0, 1, x.device) * frac * size).long() + 1
    start = (uniform(g, n, 0, 1, x.device) * (size - width + 1)).long()
    i = torch.arange(size, device=x.device)
    band = (i >= start[:, None]) & (i < (start + width)[:, None])  # (n, size)
    band = band[:, None, :, None] if dim == 2 else band[:, None, None, :]
    return x.masked_fill(band, value)


def _polarity(x, g, cfg):
    # Polarity inversion multiplies the waveform by −1; the STFT magnitude |−X| = |X| is unchanged,
    # so on a (log-)magnitude spectrogram it is exactly the identity. Kept (with its probability, and
    # its mask drawn) so the pipeline mirrors the reference's list of transforms.
    return x


def augment_audio(x: torch.Tensor, cfg: AudioAugConfig, generator: torch.Generator,
                  context: int | None = None, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Augment log-spectrogram windows (B, 1, F, L) → (B, 1, F, context), same dtype.

    The output window of ``context`` frames (default L) is cut around ``centre`` (B,) frames
    (default L / 2) with time stretch applied in the same interpolation, so a longer ``x`` gives the
    stretch real audio to read from. A source span that fits in ``x`` is moved inside it; one longer
    than ``x`` is centred and reads silence (0) beyond the ends.
    """
    g, b, L, dev = generator, len(x), x.shape[-1], x.device
    context = L if context is None else int(context)
    centre = torch.full((b,), L / 2, device=dev) if centre is None else centre.to(dev).float()
    rate = torch.where(batch_mask(g, b, cfg.p_stretch, dev), uniform(g, b, *cfg.stretch, dev),
                       torch.ones(b, device=dev))
    half = rate * context / 2  # half the source span: kept inside x where it fits, else centred
    centre = torch.where(half <= L / 2, torch.minimum(centre, L - half).maximum(half),
                         torch.full_like(centre, L / 2))
    if context != L or (rate != 1).any() or (centre != L / 2).any():
        x = _crop_stretch(x, context, centre, rate)
    steps = (("reverb", _reverb), ("eq", _eq), ("gain", _gain), ("noise", _add_noise),
             ("polarity", _polarity),
             ("time_mask", lambda xs, g, c: _band_mask(xs, g, c.time_mask, c.mask_value, 3)),
             ("freq_mask", lambda xs, g, c: _band_mask(xs, g, c.freq_mask, c.mask_value, 2)))
    for key, fn in steps:
        x = on_subset(x, batch_mask(g, b, getattr(cfg, "p_" + key), dev), lambda xs: fn(xs, g, cfg))
    return x


def audio_views(long: torch.Tensor, context: int, generator: torch.Generator,
                cfg: AudioAugConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented, time-shifted views of ``context`` frames from each longer window
    (B, 1, F, L). The views' centres differ by up to (1 − overlap) · context frames (so they overlap
    by at least ``cfg.overlap``; a stretched view may be moved to stay inside the window) around a
    common centre placed at random where both views fit."""
    cfg = cfg or AudioAugConfig()
    g, b, L, dev = generator, len(long), long.shape[-1], long.device
    d = uniform(g, b, -1, 1, dev) * (1 - cfg.overlap) * context
    room = ((L - context - d.abs()) / 2).clamp_min(0)
    c = L / 2 + uniform(g, b, -1, 1, dev) * room
    return (augment_audio(long, cfg, g, context, c - d / 2),
            augment_audio(long, cfg, g, context, c + d / 2))


def views(x: torch.Tensor, augment: Callable, cfg, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the same batch: ``augment(x, cfg, generator)`` twice."""
    return augment(x, cfg, generator), augment(x, cfg, generator)
