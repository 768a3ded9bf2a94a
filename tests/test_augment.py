"""Augmentations for contrastive pre-training: shapes, seeding, and what each transform does."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from audiosheet.training.augment import AudioAugConfig, SheetAugConfig, audio_views, augment_audio, augment_sheet, views


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def only(cfg, key: str, **kw):
    """``cfg`` with only transform ``key`` switched on (probability 1)."""
    return replace(cfg.with_probabilities(0.0), **{"p_" + key: 1.0}, **kw)


@pytest.fixture
def sheets() -> torch.Tensor:
    x = torch.zeros(6, 1, 80, 100)
    x[:, :, 20:60:8, 5:95] = 1.0  # staff lines
    x[:, :, 30:40, 40:48] = 1.0  # a notehead
    return x


@pytest.fixture
def audio() -> torch.Tensor:  # long windows, strictly positive (so masked bands are recognisable)
    return torch.rand(6, 1, 92, 168, generator=gen(1)) * 3 + 0.1


SHEET_KEYS = [f.name[2:] for f in fields(SheetAugConfig) if f.name.startswith("p_")]
AUDIO_KEYS = [f.name[2:] for f in fields(AudioAugConfig) if f.name.startswith("p_") and f.name != "p_polarity"]


# --- common properties ------------------------------------------------------------------------

def test_sheet_shape_dtype_range_and_seeding(sheets):
    cfg = SheetAugConfig().with_probabilities(1.0)
    a = augment_sheet(sheets, cfg, gen(0))
    assert a.shape == sheets.shape and a.dtype == sheets.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment_sheet(sheets, cfg, gen(0)))
    assert not torch.equal(a, augment_sheet(sheets, cfg, gen(1)))
    v1, v2 = views(sheets, augment_sheet, SheetAugConfig(), gen(0))
    assert not torch.equal(v1, v2)


def test_audio_shape_dtype_and_seeding(audio):
    cfg = AudioAugConfig().with_probabilities(1.0)
    v1, v2 = audio_views(audio, 84, gen(0), cfg)
    assert v1.shape == v2.shape == (6, 1, 92, 84) and v1.dtype == audio.dtype
    assert not torch.equal(v1, v2)
    w1, w2 = audio_views(audio, 84, gen(0), cfg)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert not torch.equal(v1, audio_views(audio, 84, gen(1), cfg)[0])
    x = audio[..., :84]
    assert augment_audio(x, cfg, gen(0)).shape == x.shape
    assert not torch.equal(*views(x, augment_audio, cfg, gen(3)))


def test_no_global_rng(sheets, audio):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    augment_sheet(sheets, SheetAugConfig().with_probabilities(1.0), gen(0))
    audio_views(audio, 84, gen(0), AudioAugConfig().with_probabilities(1.0))
    assert torch.equal(torch.rand(3), expected)


def test_probability_zero_is_identity(sheets, audio):
    assert torch.equal(augment_sheet(sheets, SheetAugConfig().with_probabilities(0.0), gen(0)), sheets)
    x = audio[..., :84]
    assert torch.equal(augment_audio(x, AudioAugConfig().with_probabilities(0.0), gen(0)), x)


def test_probabilities_are_per_sample(sheets):
    cfg = replace(SheetAugConfig().with_probabilities(0.0), p_noise=0.5)
    y = augment_sheet(sheets.repeat(10, 1, 1, 1), cfg, gen(0))
    changed = (y != sheets.repeat(10, 1, 1, 1)).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 50


@pytest.mark.parametrize("key", SHEET_KEYS)
def test_each_sheet_transform_changes_input(sheets, key):
    y = augment_sheet(sheets, only(SheetAugConfig(), key), gen(0))
    assert (y - sheets).abs().mean() > 1e-4
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("key", AUDIO_KEYS)
def test_each_audio_transform_changes_input(audio, key):
    x = audio[..., :84]
    y = augment_audio(x, only(AudioAugConfig(), key), gen(0))
    assert y.shape == x.shape and (y - x).abs().mean() > 1e-4


def test_polarity_is_identity_on_magnitudes(audio):
    x = audio[..., :84]
    assert torch.equal(augment_audio(x, only(AudioAugConfig(), "polarity"), gen(0)), x)


# --- what individual audio transforms do ---------------------------------------------------------

def test_stretch_one_is_identity_and_crop_is_the_centre(audio):
    cfg = only(AudioAugConfig(), "stretch", stretch=(1.0, 1.0))
    x = audio[..., :84]
    assert torch.allclose(augment_audio(x, cfg, gen(0)), x, atol=1e-6)
    assert torch.allclose(augment_audio(audio, cfg, gen(0), context=84), audio[..., 42:126], atol=1e-6)


def test_stretch_reads_rate_frames_per_frame():
    ramp = torch.arange(168.0).expand(2, 1, 92, 168).contiguous()
    y = augment_audio(ramp, only(AudioAugConfig(), "stretch", stretch=(1.5, 1.5)), gen(0), context=84)
    assert torch.allclose(y.diff(dim=-1), torch.full_like(y[..., 1:], 1.5), atol=1e-4)
    assert torch.allclose(y[..., 41:43].mean(-1), torch.full((2, 1, 92), 83.5), atol=1e-4)  # centred


def test_stretched_views_stay_inside_the_long_window(audio):
    v1, v2 = audio_views(audio, 84, gen(0), only(AudioAugConfig(), "stretch", stretch=(1.8, 1.8)))
    assert (v1 > 0).all() and (v2 > 0).all()  # 1.8 × 84 = 151 source frames fit in 168: no silence


def test_views_overlap():
    ramp = torch.arange(168.0).expand(50, 1, 92, 168).contiguous()
    v1, v2 = audio_views(ramp, 84, gen(0), AudioAugConfig().with_probabilities(0.0))
    shift = (v2 - v1)[:, 0, 0, 0]
    assert shift.abs().max() <= 0.3 * 84 + 1e-4 and shift.abs().max() > 5


def test_freq_mask_sets_whole_bands(audio):
    x = audio[..., :84]
    cfg = only(AudioAugConfig(), "freq_mask")
    y = augment_audio(x, cfg, gen(0))
    masked = y == cfg.mask_value  # input is > 0 everywhere, so only the mask makes 0
    rows = masked.all(-1)  # (B, 1, F): whole bin rows
    assert torch.equal(masked.any(-1), rows) and rows.sum(-1).min() >= 1
    assert rows.sum(-1).max() <= int(0.2 * 92) + 1
    assert torch.equal(y[~masked], x[~masked])


def test_time_mask_sets_whole_frames(audio):
    x = audio[..., :84]
    y = augment_audio(x, only(AudioAugConfig(), "time_mask"), gen(0))
    masked = y == 0
    assert torch.equal(masked.any(-2), masked.all(-2)) and masked.all(-2).sum(-1).min() >= 1


def test_gain_above_one_raises_energy(audio):
    x = audio[..., :84]
    y = augment_audio(x, only(AudioAugConfig(), "gain", gain_db=(6.0, 6.0)), gen(0))
    ratio = torch.expm1(y).sum((1, 2, 3)) / torch.expm1(x).sum((1, 2, 3))
    assert torch.allclose(ratio, torch.full_like(ratio, 10 ** (6 / 20)), rtol=1e-3)


def test_eq_is_one_gain_per_bin(audio):
    x = audio[..., :84]
    y = augment_audio(x, only(AudioAugConfig(), "eq"), gen(0))
    ratio = torch.expm1(y) / torch.expm1(x)  # (B, 1, F, T): constant along time
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), rtol=1e-3)
    assert (ratio.amax(-1) / ratio.amin(-1)).max() < 1.01 and ratio.std() > 0.05


def test_noise_snr():
    x = torch.log1p(torch.ones(4, 1, 92, 84))  # unit magnitudes
    y = augment_audio(x, only(AudioAugConfig(), "noise", snr_db=(20.0, 20.0)), gen(0))
    noise_power = (torch.expm1(y) - 1).pow(2).mean()
    assert 0.005 < float(noise_power) < 0.02


def test_reverb_moves_energy_only_later(audio):
    x = audio[..., :84].clone()
    x[..., :30] = 0.0
    y = augment_audio(x, only(AudioAugConfig(), "reverb"), gen(0))
    assert torch.equal(y[..., :30], x[..., :30])  # still silent before the first sound
    assert (y[..., 30:] >= x[..., 30:] - 1e-6).all() and (y > x + 1e-3).any()


# --- sheet geometry ---------------------------------------------------------------------------------

def test_neutral_geometry_is_identity(sheets):
    cfg = replace(SheetAugConfig().with_probabilities(0.0), p_rotate=1.0, rotate=0.0,
                  p_scale=1.0, scale=(1.0, 1.0))
    assert torch.allclose(augment_sheet(sheets, cfg, gen(0)), sheets, atol=1e-5)


def test_shift_moves_ink_horizontally_within_range():
    x = torch.zeros(20, 1, 80, 100)
    x[..., 50] = 1.0  # one vertical line
    y = augment_sheet(x, only(SheetAugConfig(), "shift_x"), gen(0))
    col = (y[:, 0].sum(1) * torch.arange(100.0)).sum(1) / y[:, 0].sum((1, 2))  # ink centre column
    assert (col - 50).abs().max() <= 20 + 1e-3 and (col - 50).abs().max() > 5
    rows = y[:, 0].sum(2)  # every row holds the same (moved) line
    assert torch.allclose(rows, rows[:, :1].expand_as(rows), atol=1e-5)
