"""Passage model: batching with padding gives one-by-one embeddings, initialisation from a
snippet model, tiny training lowers the loss, evaluation through the command line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from audiosheet.cli import main
from audiosheet.model import CheckpointError, ModelConfig, SnippetModel, load_config, load_model, save_checkpoint
from audiosheet.passage_model import PassageConfig, PassageModel, init_from_snippet_model
from audiosheet.passages import PassagePairs, passage_pool
from audiosheet.train import TrainConfig, TrainError, train

TINY = PassageConfig(name="tiny_passage", channels=[4, 8, 8, 8], snippet_dim=8, hidden=16, embed_dim=12)


def test_shipped_config():
    cfg = load_config("passage_gru")
    assert isinstance(cfg, PassageConfig)
    assert (cfg.snippet_dim, cfg.hidden, cfg.embed_dim, cfg.margin) == (32, 128, 64, 0.3)
    assert (cfg.audio_window, cfg.audio_hop, cfg.sheet_window, cfg.sheet_hop, cfg.sheet_height) == (20, 18, 90, 81, 80)


def test_batched_equals_one_by_one():
    torch.manual_seed(0)
    m = PassageModel(TINY).eval()
    rng = np.random.default_rng(0)
    ns, ms = [3, 1, 5, 2], [7, 2, 11, 4]
    sheets = [torch.from_numpy(rng.random((n, 80, 90), np.float32)) for n in ns]
    audios = [torch.from_numpy(rng.random((k, 92, 20), np.float32)) for k in ms]

    def pad(xs, fill):
        out = torch.full((len(xs), max(len(x) for x in xs), *xs[0].shape[1:]), fill)
        for i, x in enumerate(xs):
            out[i, :len(x)] = x
        return out

    with torch.no_grad():
        one = [m(s[None], torch.tensor([len(s)]), a[None], torch.tensor([len(a)])) for s, a in zip(sheets, audios)]
        for fill in (0.0, 7.0):  # what the padding holds must not matter
            s, a = m(pad(sheets, fill), torch.tensor(ns), pad(audios, fill), torch.tensor(ms))
            assert s.shape == (4, 12) and a.shape == (4, 12)
            for i, (s1, a1) in enumerate(one):
                torch.testing.assert_close(s[i], s1[0], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(a[i], a1[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s.norm(dim=1), torch.ones(4))
    # and a different order of the batch gives the same rows
    with torch.no_grad():
        perm = [2, 0, 3, 1]
        s2, _ = m(pad([sheets[i] for i in perm], 0.0), torch.tensor([ns[i] for i in perm]),
                  pad([audios[i] for i in perm], 0.0), torch.tensor([ms[i] for i in perm]))
    torch.testing.assert_close(s2, s[perm], atol=1e-5, rtol=1e-4)


def test_init_from_snippet_model(tmp_path):
    torch.manual_seed(1)
    snip = SnippetModel(ModelConfig(channels=[4, 8, 8, 8], context=42, attention=True))
    path = save_checkpoint(snip, tmp_path / "snip.safetensors")
    m = PassageModel(PassageConfig(channels=[4, 8, 8, 8]))
    taken = init_from_snippet_model(m, path, "audio")
    assert "features.0.0.weight" in taken and not any(k.startswith("dense.") for k in taken)
    torch.testing.assert_close(m.audio_enc.cnn.features[2][0].weight, snip.audio_net.features[2][0].weight)
    torch.testing.assert_close(m.audio_enc.cnn.project[0].weight, snip.audio_net.project[0].weight)
    assert not torch.equal(m.sheet_enc.cnn.features[0][0].weight, snip.sheet_net.features[0][0].weight)
    with pytest.raises(CheckpointError, match="do not match"):
        init_from_snippet_model(PassageModel(PassageConfig(channels=[4, 8, 8, 16])), path, "sheet")


def test_pool_distinct_and_balanced(corpus):
    ds = PassagePairs(corpus, "all")
    idx = passage_pool(ds, 6, seed=0)
    p = ds.passages[idx]
    keys = {(int(r["piece"]), int(r["system"]), int(r["systems"])) for r in p}
    assert len(idx) == len(keys) == 6
    assert list(np.bincount(p["systems"])[1:]) == [5, 1]  # every system once, the one 2-system passage
    np.testing.assert_array_equal(idx, passage_pool(ds, 6, seed=0))
    assert len(passage_pool(ds, 1000)) == len({(int(r["piece"]), int(r["system"]), int(r["systems"]))
                                                for r in ds.passages})


def test_tiny_passage_training(corpus, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    cfg = TrainConfig(batch=4, epoch_samples=40, max_samples=240, val_split="test", val_pairs=8, lr=3e-3,
                      cca_pairs=0)
    summary = train(corpus, out, TINY, cfg, progress=False, log=lambda *_: None)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 6 and summary["samples"] == 240
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.8 * first, (first, last)
    m = load_model(out)
    assert isinstance(m, PassageModel) and m.config == TINY
    js = tmp_path / "p.json"
    assert main(["evaluate", "passages", "--corpus", str(corpus), "--split", "all", "--model", str(out),
                 "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["method"] == "recurrent" and res["pairs"] == 6
    assert set(res["a2s"]) >= {"R@1", "R@5", "R@25", "MRR", "MR"} and set(res["by_length"]) == {"1", "2"}
    with pytest.raises(TrainError, match="--freeze-cnn"):
        train(corpus, tmp_path / "frozen", TINY, TrainConfig(freeze_cnn=True, val_split="test"), progress=False)


def test_averaging_baseline_runs(corpus, tmp_path):
    snip = SnippetModel(ModelConfig(channels=[4, 8, 8, 8], context=42))
    path = save_checkpoint(snip.eval(), tmp_path / "snip.safetensors")
    from audiosheet.evaluate import evaluate_passages

    res = evaluate_passages(corpus, str(path), split="all")
    assert res["method"] == "average" and res["pairs"] == 6 and 0 < res["a2s"]["MRR"] <= 1
