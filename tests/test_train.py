"""Training loop: a tiny run on the tiny corpus lowers the loss, resumes, and evaluates."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from audiosheet.cli import main
from audiosheet.models.checkpoint import load_model
from audiosheet.models.config import ModelConfig
from audiosheet.training.config import TrainConfig, TrainError
from audiosheet.training.pairs import SnippetPairs
from audiosheet.training.samplers import PairSampler, evaluation_pairs, warp_sheets
from audiosheet.training.train import train

TINY = TrainConfig(batch=40, epoch_samples=200, val_split="test", val_pairs=64, cca_pairs=200,
                   max_samples=1400, patience=100, lr=1e-3, snapshot_every=600)
TINY_MODEL = ModelConfig(name="tiny", channels=[8, 8, 16, 16], embed_dim=8)


def test_warp_identity_is_the_plain_window(corpus):
    data = SnippetPairs(corpus, "train")
    sampler = PairSampler(data, TrainConfig(system_shift=0.0, scale=(1.0, 1.0), onset_shift=0))
    sheets, audios = sampler(0, 8)
    idx = sampler.indices(0, 8)
    plain_s, plain_a = data.batch(idx)
    assert sheets.shape == (8, 1, 80, 100) and audios.shape == (8, 1, 92, 42)
    assert np.allclose(sheets.numpy(), plain_s, atol=1e-5)
    assert np.array_equal(audios.numpy(), plain_a)
    # augmentation changes the window but keeps ink on the page
    aug, _ = PairSampler(data, TrainConfig(system_shift=2.5, scale=(0.9, 0.9)))(0, 8)
    assert not np.allclose(aug.numpy(), plain_s) and 0 <= aug.min() and aug.max() <= 1
    # same (seed, step): same batch
    again, _ = sampler(0, 8)
    assert torch.equal(again, sheets)


def test_fine_tuning_augmentation_keeps_pairs_aligned(corpus):
    data = SnippetPairs(corpus, "train")
    plain = TrainConfig(system_shift=0.0, scale=(1.0, 1.0), onset_shift=0)
    p_s, p_a = PairSampler(data, plain)(0, 16)
    # vanishing probabilities: the wide audio window is cut back to exactly the plain one
    z_s, z_a = PairSampler(data, TrainConfig(**{**plain.__dict__, "augment": 1e-9}))(0, 16)
    assert torch.equal(z_s, p_s) and torch.equal(z_a, p_a)
    aug = TrainConfig(**{**plain.__dict__, "augment": 1.0})
    a_s, a_a = PairSampler(data, aug)(0, 16)
    assert a_s.shape == p_s.shape and a_a.shape == p_a.shape and a_a.dtype == torch.float32
    assert 0 <= a_s.min() and a_s.max() <= 1
    changed = lambda x, y: (x - y).abs().flatten(1).amax(1).gt(1e-3).float().mean()  # noqa: E731
    assert changed(a_s, p_s) > 0.5 and changed(a_a, p_a) > 0.5
    again = PairSampler(data, aug)(0, 16)
    assert torch.equal(again[0], a_s) and torch.equal(again[1], a_a)  # seeded by (seed, step)


def test_warp_scale_shrinks_content():
    crop = torch.zeros(1, 100, 120)
    crop[0, 40:60, 50:70] = 1.0  # a 20 × 20 block at the centre
    big = warp_sheets(crop, [1.0], [0.0])
    small = warp_sheets(crop, [0.5], [0.0])
    assert big.sum() == pytest.approx(400, rel=0.02)
    assert small.sum() == pytest.approx(100, rel=0.05)


def test_evaluation_pairs_even_and_seeded(corpus):
    data = SnippetPairs(corpus, "train")
    idx = evaluation_pairs(data, 30, seed=4)
    assert len(idx) == len(set(idx.tolist())) == 30
    per_piece = np.bincount(data.index[idx, 0], minlength=len(data.pieces))
    assert per_piece.max() - per_piece.min() <= 1
    assert np.array_equal(idx, evaluation_pairs(data, 30, seed=4))
    assert not np.array_equal(idx, evaluation_pairs(data, 30, seed=5))


def test_tiny_training_lowers_loss_and_resumes(corpus, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    summary = train(corpus, out, TINY_MODEL, TINY, progress=False, log=lambda *_: None)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 7 and summary["samples"] == 1400
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.8 * first, (first, last)
    for f in ("best.safetensors", "train_best.safetensors", "last.safetensors", "state.pt", "config.json", "summary.json",
              "best@600.safetensors", "best@1200.safetensors"):
        assert (out / f).is_file()
    with pytest.raises(TrainError, match="a run already exists here"):
        train(corpus, out, TINY_MODEL, TINY, progress=False, log=lambda *_: None)
    # resume a finished run with a larger budget: it goes on where it stopped
    assert summary["stopped_by"] == "budget"
    s2 = train(corpus, out, resume=True, max_samples=1800, progress=False, log=lambda *_: None)
    assert s2["samples"] == 1800 and len(list(csv.DictReader((out / "log.csv").open()))) == 9
    # the run folder is a MODEL for evaluation, through the command line too
    js = tmp_path / "m.json"
    assert main(["evaluate", "snippets", "--corpus", str(corpus), "--split", "test", "--model", str(out),
                 "--pairs", "50", "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["pairs"] == 50 and set(res["a2s"]) >= {"R@1", "R@5", "R@10", "R@25", "MRR", "MR"}
    rnd = sum(1 / r for r in range(1, 51)) / 50  # MRR of a random ranking of 50
    assert res["a2s"]["MRR"] > rnd and res["s2a"]["MRR"] > rnd
    cfg = load_model(out).config  # the fitted CCA is kept only where it helps on validation
    assert cfg.name == "tiny" and cfg.channels == TINY_MODEL.channels


def test_train_errors(corpus, tmp_path, capsys):
    with pytest.raises(TrainError, match="batch 8: the CCA layer needs more pairs per batch"):
        train(corpus, tmp_path / "small", TINY_MODEL, TrainConfig(batch=8, val_split="test"))
    with pytest.raises(TrainError, match="--augment -1"):
        train(corpus, tmp_path / "neg", TINY_MODEL, TrainConfig(augment=-1.0, val_split="test"))
    with pytest.raises(TrainError, match="nothing to resume"):
        train(corpus, tmp_path / "none", resume=True)
    assert main(["train", "--corpus", str(corpus), "--config", "bl2", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 1  # the tiny corpus has no valid split
    assert "needs pairs in its train and valid splits" in capsys.readouterr().err
