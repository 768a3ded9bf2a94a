"""Passage embeddings at inference time: a score's systems and a recording's stretches.

Sheet: every system, and every two consecutive systems, of a strip (``frontend.strip.Strip``) is
a passage, cut into windows as in training. Audio: a recording has no system boundaries, so the
per-snippet CNN runs once over a grid of windows (20 frames every 18) and the GRU summarises
runs of ``AUDIO_LENGTHS`` consecutive windows starting at every grid position — stretches of
4.5 to 25 s, the range a system or two lasts (test split: median 8.5 s for one system, 17 s
for two).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audiosheet.frontend.windows import collate, windows
from audiosheet.geometry import SHEET_H, STRIP_HEIGHT

SHEET_LENGTHS = (1, 2)  # systems per indexed sheet passage
AUDIO_LENGTHS = (5, 7, 10, 14, 20, 28)  # windows per audio passage


class PassageEmbedder:
    """``PassageEmbedder(model).sheet(strip, offsets)`` / ``.audio(spec)`` → embeddings and where
    each passage is. ``model``: a passage model or a MODEL name of one."""

    def __init__(self, model, batch: int = 64, bf16: bool = True):
        from audiosheet.models.checkpoint import is_passage, load_model

        if not isinstance(model, nn.Module):
            model = load_model(model)
        if not is_passage(model):
            raise ValueError(f"{model.config.name}: not a passage model (train one with "
                             "'audiosheet train --config passage_gru')")
        self.model = model.eval().set_bf16(bf16).requires_grad_(False)
        self.config = model.config
        self.batch = int(batch)

    @property
    def dim(self) -> int:
        return self.config.embed_dim

    @torch.no_grad()
    def _encode(self, enc, items: list[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(items), self.batch):
            x, n = collate(items[i:i + self.batch], torch=True)
            out.append(enc(x, n).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def sheet(self, strip: np.ndarray, offsets, lengths=SHEET_LENGTHS):
        """Passages of ``lengths`` consecutive systems of a strip (uint8 (100, W), paper 255;
        system s is columns offsets[s]:offsets[s + 1]) → (embeddings (n, d), first system (n,),
        systems (n,))."""
        c = self.config
        offsets = np.asarray(offsets, np.int64)
        y0 = (STRIP_HEIGHT - SHEET_H) // 2
        band = 1.0 - np.asarray(strip[y0:y0 + c.sheet_height], np.float32) / 255.0
        items, first, count = [], [], []
        for n in lengths:
            for s in range(len(offsets) - n):
                items.append(windows(band[:, offsets[s]:offsets[s + n]], c.sheet_window, c.sheet_hop, 0.0))
                first.append(s)
                count.append(n)
        return (self._encode(self.model.sheet_enc, items), np.asarray(first, np.int32),
                np.asarray(count, np.int32))

    @torch.no_grad()
    def audio(self, spec: np.ndarray, lengths=AUDIO_LENGTHS, step: int = 1):
        """Stretches of a spectrogram (T, 92): runs of each of ``lengths`` grid windows starting
        every ``step`` windows (a recording shorter than the shortest run is one passage) →
        (embeddings (n, d), first frame (n,), end frame (n,))."""
        c = self.config
        spec = np.asarray(spec, np.float32)
        grid = windows(spec.T, c.audio_window, c.audio_hop, 0.0)  # (G, 92, 20)
        enc = self.model.audio_enc
        e = torch.cat([enc.snippets(torch.from_numpy(grid[i:i + 256]))
                       for i in range(0, len(grid), 256)])  # (G, 32): each window once
        g = len(grid)
        runs = sorted({min(int(n), g) for n in lengths})
        starts = [(s, n) for n in runs for s in range(0, g - n + 1, step)]
        out = []
        for i in range(0, len(starts), 512):
            chunk = starts[i:i + 512]
            n_max = max(n for _, n in chunk)
            seq = e.new_zeros(len(chunk), n_max, e.shape[1])
            for b, (s, n) in enumerate(chunk):
                seq[b, :n] = e[s:s + n]
            out.append(enc.summarise(seq, torch.tensor([n for _, n in chunk])).numpy())
        first = np.array([s * c.audio_hop for s, _ in starts], np.int64)
        end = np.minimum(np.array([(s + n - 1) * c.audio_hop + c.audio_window for s, n in starts]), len(spec))
        emb = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        return emb, first, end.astype(np.int64)
