"""Array windows shared by the front end and training: the half-resolution strip and padded slices."""

from __future__ import annotations

import math

import numpy as np


def half_resolution(page: np.ndarray) -> np.ndarray:
    """Downscale a grayscale page by 2 (mean of 2 × 2 blocks), uint8 (H // 2, W // 2)."""
    h, w = page.shape[0] // 2 * 2, page.shape[1] // 2 * 2
    p = page[:h, :w].astype(np.uint16)
    return ((p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2] + 2) // 4).astype(np.uint8)


def pad_window(a: np.ndarray, start: int, length: int, fill) -> np.ndarray:
    """``a[start:start + length]`` along axis 0, padded with ``fill`` where it leaves ``a``."""
    if 0 <= start and start + length <= len(a):
        return a[start:start + length]
    out = np.full((length,) + a.shape[1:], fill, dtype=a.dtype)
    lo, hi = max(start, 0), min(start + length, len(a))
    if hi > lo:
        out[lo - start:hi - start] = a[lo:hi]
    return out


def windows(a: np.ndarray, size: int, hop: int, fill) -> np.ndarray:
    """Windows of ``size`` every ``hop`` along the last axis of ``a`` → (n, ..., size), n the
    fewest that cover ``a`` (at least 1); the last is padded with ``fill``."""
    length = a.shape[-1]
    n = 1 + max(0, math.ceil((length - size) / hop))
    padded = np.full(a.shape[:-1] + ((n - 1) * hop + size,), fill, dtype=a.dtype)
    padded[..., :length] = a
    view = np.lib.stride_tricks.sliding_window_view(padded, size, axis=-1)[..., ::hop, :]
    return np.array(np.moveaxis(view, -2, 0), order="C")  # a writable copy


def collate(items, fill=0.0, torch: bool = False):
    """Stack arrays of shape (n_i, ...) into (padded (B, max n_i, ...) filled with ``fill``,
    lengths (B,) int64); torch tensors with ``torch=True``."""
    items = [np.asarray(x) for x in items]
    lengths = np.array([len(x) for x in items], np.int64)
    shape = items[0].shape[1:] if items else ()
    out = np.full((len(items), int(lengths.max(initial=0))) + shape, fill,
                  dtype=np.result_type(*items) if items else np.float32)
    for b, x in enumerate(items):
        out[b, :len(x)] = x
    if torch:
        import torch as _torch

        return _torch.from_numpy(out), _torch.from_numpy(lengths)
    return out, lengths
