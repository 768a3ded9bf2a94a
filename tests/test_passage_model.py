"""Passage model: batching with padding gives one-by-one embeddings, initialisation from a
snippet model, tiny training lowers the loss, evaluation through the command line."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from audiosheet.cli import main
from audiosheet.models.checkpoint import (
    CheckpointError,
    init_from_snippet_model,
    load_config,
    load_model,
    save_checkpoint,
)
from audiosheet.models.config import ModelConfig
from audiosheet.models.passage import PassageConfig, PassageModel
from audiosheet.models.snippet import SnippetModel
from audiosheet.training.config import TrainConfig, TrainError
from audiosheet.training.passages import PassagePairs, passage_pool
from audiosheet.training.train import train

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


# ----------------------------------------------------------------------------------------------
# inference and the collection


def test_embedder_matches_the_model():
    from audiosheet.frontend.windows import windows
    from audiosheet.models.passage_embed import PassageEmbedder

    torch.manual_seed(2)
    m = PassageModel(TINY).eval()
    pe = PassageEmbedder(m, bf16=False)
    rng = np.random.default_rng(1)
    spec = rng.random((200, 92), np.float32)
    emb, t0, t1 = pe.audio(spec, lengths=(5, 30))
    grid = 1 + -(-(200 - 20) // 18)  # windows covering 200 frames
    assert len(emb) == (grid - 5 + 1) + 1 and t0[0] == 0 and t1[0] == 4 * 18 + 20 and t1.max() <= 200
    with torch.no_grad():
        w = torch.from_numpy(windows(spec[t0[3]:t1[3]].T, 20, 18, 0.0))[None]
        ref = m.audio_enc(w, torch.tensor([w.shape[1]]))
    np.testing.assert_allclose(emb[3], ref[0].numpy(), atol=1e-5)
    strip = (rng.random((100, 700)) * 255).astype(np.uint8)
    offsets = [0, 200, 450, 700]
    e, first, n = pe.sheet(strip, offsets)
    assert list(zip(first, n)) == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]
    band = 1.0 - strip[10:90, 200:700].astype(np.float32) / 255.0
    with torch.no_grad():
        w = torch.from_numpy(windows(band, 90, 81, 0.0))[None]
        ref = m.sheet_enc(w, torch.tensor([w.shape[1]]))
    np.testing.assert_allclose(e[4], ref[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="not a passage model"):
        PassageEmbedder(SnippetModel(ModelConfig(channels=[4, 8, 8, 8])))


def test_collection_takes_a_passage_model_without_reading_files(files, corpus, tmp_path, capsys):
    import shutil

    from audiosheet.retrieval.collection import Collection
    from audiosheet.retrieval.identify import IdentifyError, identify
    from audiosheet.retrieval.store import CollectionError

    mine = tmp_path / "files"
    shutil.copytree(files, mine)
    db = tmp_path / "coll"
    coll = Collection(db)
    assert not coll.add([mine / "sheets", mine / "audio" / "alpha.flac"], progress=False).failed
    with pytest.raises(IdentifyError, match="no passage model in this collection"):
        identify(coll, mine / "audio" / "alpha.flac", method="passage")
    torch.manual_seed(3)
    path = save_checkpoint(PassageModel(TINY).eval(), tmp_path / "passage.safetensors")
    kept = mine / "audio" / "alpha.flac"
    shutil.move(kept, tmp_path / "away.flac")
    shutil.rmtree(mine / "sheets")  # the indexed files are gone: only the kept front-end data is left
    assert main(["index", "passages", "--db", str(db), "--model", str(path), "--quiet"]) == 0
    assert "5 item(s) computed" in capsys.readouterr().out
    coll = Collection(db)
    assert coll.passage_model_name == str(path.resolve())
    tag = coll.settings["passage_model_sha256"][:12]
    assert len(list((db / "passages" / tag).iterdir())) == 5
    # a file added now gets its passages at once; identification works through the passages
    shutil.move(tmp_path / "away.flac", kept)
    assert not coll.add([mine / "audio"], progress=False).failed
    assert len(list((db / "passages" / tag).iterdir())) == 8
    res = identify(coll, mine / "audio" / "alpha.flac", method="passage", top=3)
    assert res.method == "passage" and res.query_info["passages"] > 0
    assert 1 <= len(res.results) <= 3 and all(m.kind == "sheet" and m.location["spans"] for m in res.results)
    assert all(-1.0 <= m.score <= 1.0 for m in res.results)
    # a score page finds recordings, with the time of the best-matching stretch
    from audiosheet.corpus.reader import Corpus

    c = Corpus(corpus)
    res = identify(coll, c.piece_dir(c.piece_ids[0]) / "page_1.png", method="passage", top=2)
    assert res.query_kind == "sheet" and all(m.kind == "audio" and m.location["end_s"] > m.location["start_s"]
                                             for m in res.results)
    coll.remove(str(kept))
    assert len(list((db / "passages" / tag).iterdir())) == 7 and len(coll) == 7
    with pytest.raises(CollectionError, match="not a passage model"):
        coll.add_passage_model("snippet-bl2-att84", progress=False)



def test_boundary_jitter_moves_audio_only_inside_the_performance(corpus, tmp_path):
    from audiosheet.training.samplers import PassageSampler

    ds = PassagePairs(corpus, "all")
    i = 0
    r = ds.passages[i]
    n = len(ds.specs[r["piece"]][r["perf"]])
    assert ds.audio(i, (0, 0)).shape[1] == r["t1"] - r["t0"]
    assert ds.audio(i, (-10**6, 10**6)).shape[1] == n  # clipped to the whole performance
    assert ds.audio(i, (10**6, -10**6)).shape[1] == min(20, n)  # never shorter than one window
    np.testing.assert_array_equal(ds.audio(i, (5, 0)), ds.audio(i)[:, 5:])
    plain = PassageSampler(ds, TrainConfig(batch=6))(0, 6)
    moved = PassageSampler(ds, TrainConfig(batch=6, boundary_jitter=0.3))(0, 6)
    torch.testing.assert_close(plain[0], moved[0])  # the sheet side is untouched
    assert not torch.equal(plain[3], moved[3]) or not torch.equal(plain[2], moved[2])
    with pytest.raises(TrainError, match="--boundary-jitter 0.6"):
        train(corpus, tmp_path / "j", TINY, TrainConfig(boundary_jitter=0.6, val_split="test"), progress=False)


def test_system_chain_follows_consecutive_systems():
    from audiosheet.retrieval.identify import system_chain

    rng = np.random.default_rng(0)
    stretches = [(g, n) for n in (4, 5, 6) for g in range(0, 16 - n + 1)]
    first = np.array([g for g, _ in stretches])
    length = np.array([n for _, n in stretches])
    sim = rng.uniform(-0.2, 0.5, size=(len(stretches), 8))
    # the query plays systems 3, 4, 5 in windows 0-5, 5-10, 10-16
    for (g, n), s in (((0, 5), 3), ((5, 5), 4), ((10, 6), 5)):
        sim[stretches.index((g, n)), s] = 0.95
    sim[stretches.index((5, 5)), 6] = 0.99  # a better single match that breaks the order
    value, mean, s0, s1 = system_chain(sim, first, length, 16, tau=0.7, slack=2)
    assert (s0, s1) == (3, 5) and mean == pytest.approx(0.95) and value == pytest.approx(3 * 0.25)
    # nothing above tau: the best chain has a negative value; stretches that cannot reach the
    # query's end make no chain at all
    assert system_chain(sim * 0.1, first, length, 16, tau=0.7, slack=2)[0] < 0
    short = length == 4
    assert system_chain(sim[short], first[short], length[short], 30, tau=0.7, slack=2)[0] == float("-inf")


def test_passage_sampler_variety_keeps_lengths_and_is_seeded(corpus):
    """Variety on whole passages: same window counts (the passage stays aligned), the same
    batch for the same step, a changed input, and each modality switchable on its own."""
    from audiosheet.training.samplers import PassageSampler
    from audiosheet.training.variety import VarietyConfig

    ds = PassagePairs(corpus, "all")
    plain = PassageSampler(ds, TrainConfig(batch=6))(3, 6)
    cfg = TrainConfig(batch=6, variety=3.0)
    varied = PassageSampler(ds, cfg)(3, 6)
    for k in (1, 3):  # window counts per passage unchanged
        assert torch.equal(plain[k], varied[k])
    for k in (0, 2):
        assert plain[k].shape == varied[k].shape and not torch.equal(plain[k], varied[k])
        assert torch.isfinite(varied[k]).all()
    again = PassageSampler(ds, cfg)(3, 6)
    assert all(torch.equal(a, b) for a, b in zip(varied, again))
    audio_only = TrainConfig(batch=6, variety=3.0, variety_settings={f"p_{k}": 0.0 for k in VarietyConfig.SHEET})
    a = PassageSampler(ds, audio_only)(3, 6)
    assert torch.equal(a[0], plain[0]) and not torch.equal(a[2], plain[2])
