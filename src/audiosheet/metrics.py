"""Retrieval metrics: the rank of the true match, recall@k and MRR (mean reciprocal rank), as Dorfer et al. 2018 report them."""
from __future__ import annotations

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
