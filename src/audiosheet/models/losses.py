"""Training losses: the pairwise ranking loss (Dorfer et al. 2018) and NT-Xent with its projection head (SimCLR, Chen et al. 2020), used by contrastive pre-training (Varga et al. 2023)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ranking_loss(sheet: torch.Tensor, audio: torch.Tensor, margin: float = 0.7,
                 symmetric: bool = False) -> torch.Tensor:
    """Pairwise ranking hinge on cosine similarity; every other batch item is a negative.

    Anchors are audio snippets (their sheet partner must beat every other sheet by ``margin``);
    ``symmetric`` adds sheet anchors. Inputs are L2-normalised (B, d) embeddings, pairs row by row.
    """
    sim = audio.float() @ sheet.float().T  # (B, B): audio i vs sheet j
    pos = sim.diagonal()
    off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    loss = F.relu(margin - pos[:, None] + sim)[off].mean()
    if symmetric:
        loss = 0.5 * (loss + F.relu(margin - pos[None, :] + sim)[off].mean())
    return loss


class ProjectionHead(nn.Module):
    """SimCLR projection head for pre-training one encoder (dropped afterwards):
    Linear(d → hidden) + BatchNorm + ReLU + Linear(hidden → out), L2-normalised."""

    def __init__(self, dim: int = 32, hidden: int = 512, out: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x.float()), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR): row i of ``z1`` and of ``z2`` are two views of one snippet; each of the
    2B views must pick its partner among the other 2B − 1 by cosine similarity / temperature."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
