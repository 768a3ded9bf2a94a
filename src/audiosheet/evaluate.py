"""Evaluation: cross-modal snippet retrieval (audio → sheet and sheet → audio).

Protocol of Dorfer et al. 2018: N test pairs sampled evenly over the test pieces; every audio snippet
ranks all N sheet snippets by cosine similarity (a2s) and every sheet snippet all N audio snippets
(s2a). Reported: recall at 1, 5, 10 and 25, mean reciprocal rank, median and mean rank.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

RECALL_AT = (1, 5, 10, 25)


def ranks(sim: torch.Tensor | np.ndarray) -> np.ndarray:
    """1-based rank of each row's diagonal entry among that row (ties count in its favour)."""
    sim = torch.as_tensor(sim, dtype=torch.float32)
    pos = sim.diagonal()[:, None]
    return (sim > pos).sum(dim=1).numpy() + 1


def summarise(r: np.ndarray) -> dict:
    """Recall@k, MRR, median rank (MR) and mean rank of an array of 1-based ranks."""
    r = np.asarray(r, dtype=np.float64)
    out = {f"R@{k}": float(np.mean(r <= k)) for k in RECALL_AT}
    out.update(MRR=float(np.mean(1.0 / r)), MR=float(np.median(r)), mean_rank=float(np.mean(r)))
    return out


def retrieval_metrics(sim: torch.Tensor | np.ndarray) -> dict:
    """Both directions from an (N, N) similarity matrix, rows = audio queries, columns = sheets."""
    sim = torch.as_tensor(sim, dtype=torch.float32)
    return {"a2s": summarise(ranks(sim)), "s2a": summarise(ranks(sim.T)), "pairs": int(sim.shape[0])}


def evaluate_snippets(corpus: str | Path, model, split: str = "test", pairs: int = 2000, seed: int = 0,
                      progress: bool = False) -> dict:
    """Snippet retrieval metrics of ``model`` (a SnippetModel or a MODEL name) on a corpus split."""
    from tqdm import tqdm

    from .embed import Embedder
    from .model import load_model
    from .snippets import SnippetPairs
    from .train import evaluation_pairs

    if not isinstance(model, torch.nn.Module):
        model = load_model(model)
    data = SnippetPairs(corpus, split, context=model.config.context)
    if len(data) < 2:
        raise ValueError(f"{corpus}: split '{split}' has fewer than 2 pairs")
    idx = evaluation_pairs(data, pairs, seed=seed)
    t0 = time.perf_counter()
    emb = Embedder(model)
    es, ea = [], []
    for i in tqdm(range(0, len(idx), 1000), disable=not progress, desc="embed", unit="k pairs"):
        s, a = data.batch(idx[i:i + 1000])
        es.append(emb.sheet(s))
        ea.append(emb.audio(a))
    es, ea = torch.from_numpy(np.concatenate(es)), torch.from_numpy(np.concatenate(ea))
    out = retrieval_metrics(ea @ es.T)
    out.update(split=split, pieces=len(data.pieces), seed=seed, model=model.config.name,
               embed_s=round(time.perf_counter() - t0, 2))
    return out
