"""Real-world variety for training (audiosheet.training.variety): every transform keeps shapes and
alignment, is seeded and changes its input; PairSampler applies it per (seed, step)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audiosheet.training.config import TrainConfig, TrainError
from audiosheet.training.pairs import SnippetPairs
from audiosheet.training.samplers import PairSampler
from audiosheet.training.train import train
from audiosheet.training.variety import VarietyConfig, audio_variety, sheet_variety

ONLY = lambda key: VarietyConfig.build(0.0, {f"p_{key}": 1.0})  # noqa: E731


def _crop() -> np.ndarray:
    """A strip crop (100 × 120, paper 255): five staff lines and a filled notehead at the centre."""
    img = np.full((100, 120), 255, np.uint8)
    for y in range(34, 67, 8):
        img[y, :] = 30
    yy, xx = np.mgrid[0:100, 0:120]
    img[((xx - 60) / 5.0) ** 2 + ((yy - 50) / 3.5) ** 2 <= 1] = 20
    return img


def _head_centre(img: np.ndarray) -> tuple[float, float]:
    """Ink centroid of the notehead: dark pixels near the centre column, staff-line rows removed
    by taking only columns where the ink is taller than a line."""
    ink = (255.0 - img.astype(float)) / 255.0
    win = ink[35:66, 45:76]
    cols = (win > 0.45).sum(0) >= 4  # a staff line is 1–3 px tall; the head 7
    w = win * cols[None]
    yy, xx = np.mgrid[35:66, 45:76]
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


@pytest.mark.parametrize("key", VarietyConfig.SHEET)
def test_sheet_transform_keeps_the_notehead_is_seeded_and_changes_the_crop(key):
    crops = np.stack([_crop()] * 6)
    cfg = ONLY(key)
    out = sheet_variety(crops, cfg, np.random.default_rng(1))
    assert out.shape == crops.shape and out.dtype == np.uint8
    assert np.array_equal(out, sheet_variety(crops, cfg, np.random.default_rng(1)))
    assert not np.array_equal(out, sheet_variety(crops, cfg, np.random.default_rng(2)))
    for o in out:
        assert np.abs(o.astype(int) - crops[0]).mean() > 1.0  # changed
        x, y = _head_centre(o)
        assert abs(x - 60) <= 2.5 and abs(y - 50) <= 2.5, (key, x, y)  # the notehead stays put


def test_sheet_variety_off_is_identity():
    crops = np.stack([_crop()] * 3)
    assert np.array_equal(sheet_variety(crops, VarietyConfig.build(0.0), np.random.default_rng(0)), crops)


def _spectrogram(b: int = 8, frames: int = 42) -> torch.Tensor:
    """log(1 + magnitude) windows (b, 1, 92, frames): a quiet chord before the centre frame and a
    loud chord starting at it (the onset of the pair)."""
    x = torch.zeros(b, 1, 92, frames)
    c = frames // 2
    bins = torch.tensor([8, 24, 40, 56, 72, 84])  # a chord and its partials, 60 Hz to 5 kHz
    x[:, 0, bins - 4, 4:c] = 0.3 * torch.linspace(1.0, 0.4, c - 4)
    x[:, 0, bins, c:] = 2.0 * torch.linspace(1.0, 0.5, frames - c)
    return x


def _onset(x: torch.Tensor) -> torch.Tensor:
    """Frame of the largest spectral flux (positive magnitude change summed over bins), per window."""
    m = torch.expm1(x[:, 0])
    flux = (m[..., 1:] - m[..., :-1]).clamp_min(0).sum(1)
    return flux.argmax(1) + 1


@pytest.mark.parametrize("key", VarietyConfig.AUDIO)
def test_audio_transform_keeps_the_onset_is_seeded_and_changes_the_window(key):
    x = _spectrogram()
    cfg = ONLY(key)
    y = audio_variety(x, cfg, torch.Generator().manual_seed(3))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all() and (y >= 0).all()
    assert torch.equal(y, audio_variety(x, cfg, torch.Generator().manual_seed(3)))
    assert not torch.equal(y, audio_variety(x, cfg, torch.Generator().manual_seed(4)))
    assert ((y - x).abs().flatten(1).amax(1) > 1e-3).all()  # every window changed
    assert (_onset(y) - x.shape[-1] // 2).abs().max() <= 1, (key, _onset(y))


def test_timing_keeps_the_centre_frame_and_the_ends():
    x = torch.rand(4, 1, 92, 42)
    y = audio_variety(x, ONLY("timing"), torch.Generator().manual_seed(0))
    for t in (0, 21, 41):
        assert torch.allclose(y[..., t], x[..., t], atol=1e-5)


def test_variety_config_scales_and_overrides():
    half = VarietyConfig.build(0.5, {"p_codec": 0.0, "room_rt60": [0.5, 1.0]})
    assert half.p_scan == pytest.approx(VarietyConfig().p_scan / 2) and half.p_codec == 0.0
    assert half.room_rt60 == (0.5, 1.0)
    assert VarietyConfig.build(10.0).p_room == 1.0  # capped
    assert not VarietyConfig.build(0.0).sheet_on and not VarietyConfig.build(0.0).audio_on
    with pytest.raises(ValueError, match="unknown variety settings: p_nope"):
        VarietyConfig.build(1.0, {"p_nope": 1})


def test_pair_sampler_applies_variety_per_step(corpus):
    data = SnippetPairs(corpus, "train")
    plain = TrainConfig(system_shift=0.0, scale=(1.0, 1.0), onset_shift=0)
    p_s, p_a = PairSampler(data, plain)(0, 16)
    var = TrainConfig(**{**plain.__dict__, "variety": 2.0})
    v_s, v_a = PairSampler(data, var)(0, 16)
    assert v_s.shape == p_s.shape and v_a.shape == p_a.shape and 0 <= v_s.min() and v_s.max() <= 1
    changed = lambda x, y: (x - y).abs().flatten(1).amax(1).gt(1e-3).float().mean()  # noqa: E731
    assert changed(v_s, p_s) > 0.4 and changed(v_a, p_a) > 0.6
    again = PairSampler(data, var)(0, 16)
    assert torch.equal(again[0], v_s) and torch.equal(again[1], v_a)  # seeded by (seed, step)
    other = PairSampler(data, var)(1, 16)
    assert not torch.equal(other[1], v_a)
    # a switched-off transform leaves the audio alone
    sheet_only = TrainConfig(**{**var.__dict__, "variety_settings": {f"p_{k}": 0.0 for k in VarietyConfig.AUDIO}})
    s_s, s_a = PairSampler(data, sheet_only)(0, 16)
    assert torch.equal(s_a, p_a) and torch.equal(s_s, v_s)


def test_variety_errors(corpus, tmp_path):
    with pytest.raises(TrainError, match="--variety -1"):
        train(corpus, tmp_path / "neg", None, TrainConfig(variety=-1.0, val_split="test"))
    with pytest.raises(TrainError, match="unknown variety settings: p_loud"):
        train(corpus, tmp_path / "bad", None, TrainConfig(variety=1.0, variety_settings={"p_loud": 1},
                                                          val_split="test"))
