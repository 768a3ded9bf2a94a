"""Embedding many snippet pairs (validation, CCA re-estimation, evaluation) and fitting a trained
snippet model's CCA statistics on many training pairs after training (``fit_cca``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audiosheet.files import copy_file
from audiosheet.models.checkpoint import load_state, read_checkpoint, save_checkpoint
from audiosheet.models.snippet import SnippetModel, autocast, without_cca
from audiosheet.training.config import TrainConfig
from audiosheet.training.pairs import SnippetPairs


@torch.no_grad()
def embed_pairs(model: SnippetModel, data: SnippetPairs, indices, batch: int = 500, raw: bool = False,
                bf16: bool = True, channels_last: bool = True, progress: bool = False):
    """Embeddings (sheet (N, d), audio (N, d)) of pairs ``indices`` (un-augmented windows)."""
    from tqdm import tqdm

    was = model.training
    model.eval()
    mf = torch.channels_last if channels_last else torch.contiguous_format
    out_s, out_a = [], []
    for i in tqdm(range(0, len(indices), batch), disable=not progress, desc="embed", unit="batch"):
        s, a = data.batch(indices[i:i + batch])
        s = torch.from_numpy(s).contiguous(memory_format=mf)
        a = torch.from_numpy(a).contiguous(memory_format=mf)
        with autocast(bf16):
            if raw:
                es, ea = model.raw(s, a)
            else:
                es, ea = model.embed_sheet(s), model.embed_audio(a)
        out_s.append(es.float())
        out_a.append(ea.float())
    model.train(was)
    return torch.cat(out_s), torch.cat(out_a)


CCA_POWERS = (0.0, 1.0, 2.0, 4.0)  # canonical-correlation weightings tried after training


def fit_cca(src: Path, dst: Path, data: SnippetPairs, val: SnippetPairs, val_idx: np.ndarray,
            train_cfg: TrainConfig, powers=CCA_POWERS, log=print, progress: bool = False) -> dict:
    """Fit the CCA statistics of checkpoint ``src`` on ``train_cfg.cca_pairs`` pairs of ``data`` and
    write the best of {no CCA, CCA with each weighting power} by validation MRR to ``dst``.

    Plain (whitened) CCA gives every canonical dimension the same weight in the cosine similarity,
    also the weakly correlated ones, which can lower retrieval quality after ranking-loss training;
    scaling dimension i by rho_i^p (Gong et al. 2014) keeps the correlated ones in front. ``src``
    may hold a model without a CCA layer (its pathways are used). Returns the validation MRRs."""
    from dataclasses import replace

    from audiosheet.metrics import retrieval_metrics

    src, dst = Path(src), Path(dst)
    cfg, state, extra = read_checkpoint(src)
    if not (cfg.cca or extra.get("cca_dropped")) or not train_cfg.cca_pairs:  # a model made without CCA
        copy_file(src, dst)
        return {}
    mf = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    m = SnippetModel(replace(cfg, cca=True))
    own = m.state_dict()
    had_cca = any(k.startswith("cca.") for k in state)  # statistics kept during training (cca_train)
    state = {**{k: v for k, v in own.items() if k.startswith("cca.") and v.is_floating_point()}, **state}
    load_state(m, state, src)
    m = m.to(memory_format=mf).eval()
    idx = np.random.default_rng([train_cfg.seed, 99]).integers(0, len(data), size=train_cfg.cca_pairs)
    ts, ta = embed_pairs(m, data, np.sort(idx), raw=True, bf16=train_cfg.bf16,
                         channels_last=train_cfg.channels_last, progress=progress)
    vs, va = embed_pairs(m, val, val_idx, raw=True, bf16=train_cfg.bf16, channels_last=train_cfg.channels_last)

    def mrr(a, s) -> float:
        r = retrieval_metrics(F.normalize(a, dim=1) @ F.normalize(s, dim=1).T)
        return 0.5 * (r["a2s"]["MRR"] + r["s2a"]["MRR"])

    scores = {"none": mrr(va, vs)}
    if had_cca and cfg.cca_train:
        scores["running"] = mrr(m.cca.project_audio(va), m.cca.project_sheet(vs))
    m.cca.fit(ta, ts)
    for p in powers:
        m.cca.power = float(p)
        scores[f"{p:g}"] = mrr(m.cca.project_audio(va), m.cca.project_sheet(vs))
    best = max(scores, key=scores.get)
    names = {"none": "no CCA", "running": "running statistics"}
    log(f"validation MRR after fitting the CCA on {train_cfg.cca_pairs:,} training pairs: "
        + ", ".join(f"{names.get(k, f'power {k}')} {v:.3f}" for k, v in scores.items())
        + f" -> {names.get(best, f'CCA power {best}')}")
    if best == "running":
        copy_file(src, dst)
        return scores
    extra.update(cca_pairs=train_cfg.cca_pairs, val_MRR_by_cca=scores, val_MRR=scores[best])
    if best == "none":
        extra.update(cca_dropped=True)
        save_checkpoint(without_cca(m), dst, extra)
    else:
        m.cca.power = float(best)
        m.config = replace(m.config, cca_power=float(best))
        save_checkpoint(m, dst, extra)
    return scores
