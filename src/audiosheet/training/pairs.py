"""Aligned (sheet snippet, audio snippet) pairs of a corpus, for training and evaluation.

Score systems are unrolled into one long strip at half resolution after rescaling the page to a
common staff space (``frontend.strip.read_systems``, the same geometry queries get), so a 160 × 200 px window
of the normalised page is an 80 × 100 window of the strip. A pair is the strip window centred on a notehead and
the spectrogram window centred on that notehead's onset in one performance. Everything is read from
memory-mapped arrays written by the corpus builder, so extraction is a pair of slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiosheet.corpus.reader import Corpus
from audiosheet.frontend.windows import pad_window
from audiosheet.geometry import AUDIO_FRAMES, SHEET_H, SHEET_W, STRIP_HEIGHT

# SnippetPairs is a map-style dataset (__len__ + __getitem__), which torch's DataLoader takes as it
# is; not subclassing torch's Dataset keeps torch out of every process that only reads audio or pages.
_DatasetBase = object


@dataclass
class _Piece:
    strip: np.ndarray  # (STRIP_HEIGHT, W) uint8, memory-mapped
    strip_x: np.ndarray  # (N,) notehead column in the strip
    specs: list[np.ndarray]  # per performance (T, 92) float16, memory-mapped
    frames: np.ndarray  # (P, N) onset frame


class SnippetPairs(_DatasetBase):
    """All (notehead, performance) pairs of one split of a corpus.

    ``ds[i]`` → (sheet float32 (1, 80, 100) with ink = 1, audio float32 (1, 92, context)).
    ``ds.batch(indices)`` stacks many pairs for a training step.
    Strips and spectrograms stay memory-mapped (``mmap=True``), so a corpus larger than memory works;
    windows that leave the arrays are padded with paper (sheet) or silence (audio).
    """

    def __init__(self, corpus: str | Path, split: str = "train", context: int = AUDIO_FRAMES,
                 pieces: list[str] | None = None, mmap: bool = True):
        self.corpus = Corpus(corpus)
        self.context = int(context)
        self.pieces: list[_Piece] = []
        self.piece_ids = pieces if pieces is not None else self.corpus.split(split)
        fps = self.corpus.manifest["spectrogram"]["fps"]
        mode = "r" if mmap else None
        index = []
        for k, pid in enumerate(self.piece_ids):
            d = self.corpus.piece_dir(pid)
            with np.load(d / "noteheads.npz") as nh, np.load(d / "performances.npz") as perf:
                strip_x, onsets = nh["strip_x"], perf["onsets"]  # onsets: (P, N) seconds
            strip = np.load(d / "strip.npy", mmap_mode=mode)
            specs = [np.load(d / f"perf_{j}.npy", mmap_mode=mode) for j in range(len(onsets))]
            frames = np.round(onsets * fps).astype(np.int64)
            self.pieces.append(_Piece(strip, strip_x, specs, frames))
            n, p = len(strip_x), len(onsets)
            index.append(np.stack(np.broadcast_arrays(k, np.arange(n)[:, None], np.arange(p)[None, :]),
                                  -1).reshape(-1, 3))
        self.index = np.concatenate(index) if index else np.zeros((0, 3), np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def sheet(self, piece: int, notehead: int, dx: int = 0, dy: int = 0) -> np.ndarray:
        """uint8 (80, 100) strip window centred on a notehead, shifted by (dx, dy) half-res px."""
        p = self.pieces[piece]
        x = int(round(float(p.strip_x[notehead]))) + dx
        y0 = min(max((STRIP_HEIGHT - SHEET_H) // 2 + dy, 0), STRIP_HEIGHT - SHEET_H)
        cols = pad_window(p.strip.T, x - SHEET_W // 2, SHEET_W, 255)  # (100, STRIP_HEIGHT)
        return cols[:, y0:y0 + SHEET_H].T

    def audio(self, piece: int, notehead: int, perf: int, dt: int = 0) -> np.ndarray:
        """float16 (92, context) spectrogram window centred on the notehead's onset, shifted by dt."""
        p = self.pieces[piece]
        f = int(p.frames[perf, notehead]) + dt
        return pad_window(p.specs[perf], f - self.context // 2, self.context, 0).T

    def pair(self, piece: int, notehead: int, perf: int) -> tuple[np.ndarray, np.ndarray]:
        """(sheet float32 (1, 80, 100) with ink = 1, audio float32 (1, 92, context))."""
        sheet = 1.0 - self.sheet(piece, notehead).astype(np.float32) / 255.0
        return sheet[None], self.audio(piece, notehead, perf).astype(np.float32)[None]

    def __getitem__(self, i: int):
        return self.pair(*self.index[i])

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``indices`` stacked: (sheets (B, 1, 80, 100), audios (B, 1, 92, context))."""
        pairs = [self.pair(*self.index[i]) for i in indices]
        return np.stack([s for s, _ in pairs]), np.stack([a for _, a in pairs])

