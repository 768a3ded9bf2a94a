"""Snippet model: metrics, CCA whitening, loss, checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiosheet.geometry import FrontEnd
from audiosheet.metrics import ranks, retrieval_metrics, summarise
from audiosheet.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_config,
    load_encoder,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from audiosheet.models.config import ModelConfig
from audiosheet.models.losses import ranking_loss
from audiosheet.models.snippet import CCALayer, SnippetModel

SMALL = dict(channels=[8, 8, 16, 16])


def test_ranks_of_hand_made_matrix():
    # rows: audio queries; columns: sheets; the diagonal holds the true partners
    sim = np.array([[0.9, 0.1, 0.2, 0.0],   # partner best: rank 1
                    [0.8, 0.5, 0.6, 0.1],   # two above the partner: rank 3
                    [0.1, 0.2, 0.3, 0.4],   # one above: rank 2
                    [0.9, 0.8, 0.7, 0.1]])  # partner last: rank 4
    assert ranks(sim).tolist() == [1, 3, 2, 4]
    # columns: sheet queries. col 0: 0.9 ties with 0.9 (ties count for the partner): rank 1;
    # col 1: 0.8 above 0.5: rank 2; col 2: 0.6 and 0.7 above 0.3: rank 3; col 3: 0.4 above 0.1: rank 2
    assert ranks(sim.T).tolist() == [1, 2, 3, 2]
    m = retrieval_metrics(sim)
    assert m["pairs"] == 4
    a = m["a2s"]
    assert a["R@1"] == 0.25 and a["R@5"] == 1.0
    assert a["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    assert a["MR"] == 2.5 and a["mean_rank"] == 2.5
    assert m["s2a"]["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_metrics_match_slow_reference():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(60, 60))
    slow = []
    for i in range(60):  # the obvious way: sort the row and find the partner
        order = sorted(range(60), key=lambda j: -sim[i, j])
        slow.append(order.index(i) + 1)
    assert ranks(sim).tolist() == slow
    s = summarise(np.array(slow))
    assert s["R@10"] == pytest.approx(np.mean(np.array(slow) <= 10))
    assert s["MR"] == np.median(slow)


def test_cca_whitens_a_batch():
    torch.manual_seed(0)
    z = torch.randn(400, 8)
    a = z @ torch.randn(8, 8) + 0.3 * torch.randn(400, 8)
    s = z @ torch.randn(8, 8) + 3.0
    cca = CCALayer(8, eps=1e-6).train()
    pa, ps = cca(a, s)
    for p in (pa, ps):
        cov = p.T @ p / (len(p) - 1)
        assert torch.allclose(cov, torch.eye(8), atol=1e-3)
        assert torch.allclose(p.mean(0), torch.zeros(8), atol=1e-4)
    # the cross-covariance is diagonal: canonical correlations, sorted, in [0, 1]
    cross = pa.T @ ps / (len(pa) - 1)
    d = cross.diagonal()
    assert torch.allclose(cross, torch.diag(d), atol=1e-3)
    assert (d[:-1] >= d[1:] - 1e-5).all() and d.max() <= 1 + 1e-4
    # fit() + eval gives the same projection as the batch computation
    cca.fit(a, s)
    cca.eval()
    qa, qs = cca(a, s)
    assert torch.allclose(qa.abs(), pa.abs(), atol=1e-4)
    assert torch.allclose(cca.project_audio(a), qa, atol=1e-5)


def test_cca_power_scales_canonical_dimensions_by_their_correlation():
    torch.manual_seed(0)
    z = torch.randn(2000, 6)
    a = z @ torch.randn(6, 6) + torch.randn(2000, 6) * torch.tensor([0.1, 0.3, 1, 2, 4, 8])
    s = z @ torch.randn(6, 6)
    cca = CCALayer(6, eps=1e-6)
    cca.fit(a, s)
    cca.eval()
    rho = (cca(a, s)[0] * cca(a, s)[1]).sum(0) / (len(a) - 1)  # canonical correlations, descending
    assert (rho[:-1] >= rho[1:]).all() and rho[0] > 0.9 and rho[-1] < 0.5
    cca.power = 2.0
    pa, ps = cca(a, s)
    var = pa.var(0)  # whitened dimension i scaled by rho_i^2: variance rho_i^4
    assert torch.allclose(var, rho ** 4, rtol=1e-3, atol=1e-4)
    assert torch.allclose(pa.T @ ps / (len(a) - 1), torch.diag(rho ** 5), atol=1e-3)


def test_fit_cca_chooses_on_validation(corpus, tmp_path):
    from audiosheet.models.checkpoint import read_checkpoint, save_checkpoint
    from audiosheet.training.cca import fit_cca
    from audiosheet.training.config import TrainConfig
    from audiosheet.training.pairs import SnippetPairs
    from audiosheet.training.samplers import evaluation_pairs

    torch.manual_seed(0)
    src = save_checkpoint(SnippetModel(load_config("bl2")), tmp_path / "m.safetensors", {"samples": 1})
    data, val = SnippetPairs(corpus, "train"), SnippetPairs(corpus, "train")
    scores = fit_cca(src, tmp_path / "out.safetensors", data, val, evaluation_pairs(val, 40), TrainConfig(cca_pairs=200))
    assert set(scores) == {"none", "0", "1", "2", "4"}
    cfg, _, extra = read_checkpoint(tmp_path / "out.safetensors")
    best = max(scores, key=scores.get)
    assert extra["val_MRR"] == scores[best]
    assert cfg.cca == (best != "none") and (best == "none" or cfg.cca_power == float(best))


def test_ranking_loss():
    e = torch.nn.functional.normalize(torch.randn(10, 32), dim=1)
    assert ranking_loss(e, e, margin=0.0) == 0  # identical partners, non-negative margin slack
    far = torch.nn.functional.normalize(torch.randn(10, 32), dim=1)
    assert ranking_loss(e, far) > ranking_loss(e, e)
    assert ranking_loss(e, far, symmetric=True) > 0


@pytest.mark.parametrize("name", ["bl1", "bl2", "bl2_att84", "bl2_att168"])
def test_configs_build_and_embed(name):
    cfg = load_config(name)
    cfg.channels = SMALL["channels"]
    m = SnippetModel(cfg).eval()
    s = torch.rand(3, 1, *cfg.sheet_shape)
    a = torch.rand(3, 1, cfg.audio_bins, cfg.context)
    es, ea = m.embed_sheet(s), m.embed_audio(a)
    assert es.shape == ea.shape == (3, 32)
    assert torch.allclose(es.norm(dim=1), torch.ones(3), atol=1e-5)
    f = m.for_inference()
    assert torch.allclose(f.embed_audio(a), ea, atol=1e-4)
    assert torch.allclose(f.embed_sheet(s), es, atol=1e-4)


def test_unknown_config():
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        load_config("nope")
    with pytest.raises(ValueError, match="unknown model config fields: colour"):
        ModelConfig.from_dict({"colour": 1})


def _trained_like(cfg):
    torch.manual_seed(1)
    m = SnippetModel(cfg).train()
    for _ in range(3):  # move batch-norm and CCA running statistics away from their defaults
        m(torch.rand(20, 1, *cfg.sheet_shape), torch.rand(20, 1, cfg.audio_bins, cfg.context))
    return m.eval()


def test_checkpoint_round_trip(tmp_path):
    cfg = ModelConfig(name="t", **SMALL)
    m = _trained_like(cfg)
    path = save_checkpoint(m, tmp_path / "m.safetensors", {"samples": 123})
    again = load_model(path)
    s, a = torch.rand(4, 1, 80, 100), torch.rand(4, 1, 92, 42)
    assert torch.equal(m.embed_sheet(s), again.embed_sheet(s))
    assert torch.equal(m.embed_audio(a), again.embed_audio(a))
    cfg2, _, extra = read_checkpoint(path)
    assert cfg2 == cfg and extra == {"samples": 123, "front_end": FrontEnd().to_dict()}
    assert not (tmp_path / "m.safetensors.tmp").exists()


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(SnippetModel(ModelConfig(name="t", **SMALL)), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"m\.safetensors: checkpoint config 't' does not match "
                                              r"the requested 'bl2' \(differs in name, channels\)"):
        load_checkpoint(path, load_config("bl2"))
    # an encoder of another shape cannot initialise a pathway
    with pytest.raises(CheckpointError, match=r"m\.safetensors: weights do not match the model config "
                                              r"\(audio_net\.features"):
        load_encoder(SnippetModel(load_config("bl2")), path, "audio")
    # a file whose weights were edited to disagree with its config
    from safetensors.torch import save_file

    _, state, _ = read_checkpoint(path)
    state["sheet_net.dense.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"),
              metadata={"config": json.dumps(ModelConfig(name="t", **SMALL).to_dict())})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: weights do not match .*"
                                              r"sheet_net\.dense\.weight: checkpoint \(3, 3\)"):
        load_model(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no-such-model: not a run folder"):
        load_model("no-such-model")


def test_encoder_initialisation(tmp_path):
    src = _trained_like(ModelConfig(name="t", **SMALL))
    path = save_checkpoint(src, tmp_path / "enc.safetensors")
    dst = SnippetModel(ModelConfig(name="u", **SMALL))
    load_encoder(dst, path, "sheet")
    assert torch.equal(dst.sheet_net.dense.weight, src.sheet_net.dense.weight)
    assert not torch.equal(dst.audio_net.dense.weight, src.audio_net.dense.weight)


@pytest.mark.parametrize("name", ["bl2", "bl2_att84"])
def test_embedder_matches_model(name):
    from audiosheet.models.embed import Embedder

    cfg = load_config(name)
    m = _trained_like(cfg)
    torch.manual_seed(2)
    s = torch.rand(7, 1, 80, 100)
    a = torch.rand(7, 92, cfg.context)  # without the channel axis: accepted too
    emb = Embedder(m, batch=4)
    es, ea = emb.sheet(s), emb.audio(a)
    assert es.shape == ea.shape == (7, 32) and es.dtype == np.float32
    with torch.no_grad():
        ref_s, ref_a = m.embed_sheet(s).numpy(), m.embed_audio(a[:, None]).numpy()
    # bf16 convolutions: the same direction up to a small angle
    assert (np.sum(es * ref_s, 1) > 0.99).all() and (np.sum(ea * ref_a, 1) > 0.99).all()
    with pytest.raises(ValueError, match="snippets of shape"):
        emb.sheet(torch.rand(2, 1, 40, 100))


def test_nt_xent_prefers_matching_views():
    from audiosheet.models.losses import ProjectionHead, nt_xent

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    v1, v2 = x + 0.1 * torch.randn(64, 32, generator=g), x + 0.1 * torch.randn(64, 32, generator=g)
    matched, shuffled = nt_xent(v1, v2), nt_xent(v1, v2[torch.randperm(64, generator=g)])
    assert matched < shuffled - 1.5  # at temperature 0.5 the floor is about log(1 + 126 e^-2) = 2.9
    # reference value by the definition, computed the slow way for one batch
    z = torch.nn.functional.normalize(torch.cat([v1, v2]), dim=1)
    sim = (z @ z.T / 0.5).exp()
    slow = []
    for i in range(128):
        j = (i + 64) % 128
        slow.append(-torch.log(sim[i, j] / (sim[i].sum() - sim[i, i])))
    assert torch.allclose(matched, torch.stack(slow).mean(), atol=1e-5)
    head = ProjectionHead(32, 512, 32)
    out = head(x)
    assert out.shape == (64, 32) and torch.allclose(out.norm(dim=1), torch.ones(64), atol=1e-5)


def test_saved_checkpoint_has_the_usual_file_mode(tmp_path):
    """safetensors writes owner-only files; a saved checkpoint (a shipped model, too) is readable
    by others under the usual umask 022."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = save_checkpoint(SnippetModel(load_config("bl2")), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def _golden_spectrogram() -> np.ndarray:
    from pathlib import Path

    from audiosheet.frontend.audio import ingest_audio

    return ingest_audio(Path(__file__).parent / "data" / "golden" / "clip.flac").spec


def test_audio_sequence_is_close_to_snippet_by_snippet():
    """A recording's snippets with their attention read from one pass over the spectrogram embed
    (almost) as each snippet alone: on a real clip, the same direction up to a small angle."""
    from audiosheet.frontend.audio import audio_snippets
    from audiosheet.models.embed import Embedder

    emb = Embedder(load_model("snippet-bl2-att84"), batch=8)
    spec = _golden_spectrogram()
    snippets, _ = audio_snippets(spec, emb.config.context, 5)
    alone, seq = emb.audio(snippets), emb.audio_sequence(spec, 5)
    assert seq.shape == alone.shape == (len(snippets), 32) and seq.dtype == np.float32
    cos = np.sum(alone * seq, 1)
    assert cos.min() > 0.99 and cos.mean() > 0.998, (cos.min(), cos.mean())
    assert np.allclose(np.linalg.norm(seq, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="92"):
        emb.audio_sequence(spec[:, :80], 5)
    assert np.array_equal(emb.audio_sequence(spec, 5, snippets), seq)  # snippets already cut: reused
    with pytest.raises(ValueError, match="snippets given"):
        emb.audio_sequence(spec, 5, snippets[:-1])
    # the traced graphs answer their first call as every later one (inputs with the strides they
    # were traced with: a stride-0 axis of size 1 sent the first call down another graph)
    fresh = Embedder(load_model("snippet-bl2-att84"), batch=8)
    assert np.array_equal(fresh.audio_sequence(spec, 5), fresh.audio_sequence(spec, 5))
    assert np.array_equal(fresh.audio_sequence(spec, 5), seq)


def test_shared_attention_weights_in_chunks_equal_one_pass(monkeypatch):
    import audiosheet.models.embed as E
    import audiosheet.models.shared_attention as S

    m = _trained_like(load_config("bl2_att84")).for_inference()
    spec = np.random.default_rng(3).random((700, 92)).astype(np.float32)
    centres = np.arange(0, 700, 5)
    one = E.shared_attention_weights(m.attention, spec, centres, 84, bf16=False)
    monkeypatch.setattr(S, "SHARED_CHUNK", 64)  # 13 chunks with their margins instead of 2
    chunked = E.shared_attention_weights(m.attention, spec, centres, 84, bf16=False)
    assert one.shape == (len(centres), 84)
    assert torch.allclose(one.sum(1), torch.ones(len(centres)), atol=1e-5)
    assert torch.allclose(one, chunked, atol=1e-6)
    # on a real clip, each snippet's weights as its own attention gives them (the shipped model)
    from audiosheet.frontend.audio import audio_snippets

    m = load_model("snippet-bl2-att84").for_inference()
    spec = _golden_spectrogram()
    snippets, centres = audio_snippets(spec, 84, 5)
    shared = E.shared_attention_weights(m.attention, spec, centres, 84, bf16=False)
    with torch.no_grad():
        alone = m.attention.weights(torch.from_numpy(snippets)[:, None])
    l1 = (shared - alone).abs().sum(1)
    assert l1.max() < 0.1 and l1.mean() < 0.03, (l1.max(), l1.mean())


def test_audio_sequence_without_attention_is_audio():
    from audiosheet.frontend.audio import audio_snippets
    from audiosheet.models.embed import Embedder

    emb = Embedder(_trained_like(load_config("bl2")), batch=4)
    spec = np.random.default_rng(4).random((90, 92)).astype(np.float32)
    snippets, _ = audio_snippets(spec, emb.config.context, 5)
    assert np.array_equal(emb.audio_sequence(spec, 5), emb.audio(snippets))
