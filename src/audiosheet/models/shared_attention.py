"""The frame attention of a recording's snippets from one pass over its spectrogram (NumPy only:
the torch ``embed.Embedder`` and the ONNX ``onnx.OnnxEmbedder`` share it).

A snippet model with attention (Balke et al. 2019; ``snippet.FrameAttention``) weights the frames
of each 4.2-s audio snippet by softmax(W · mean of a small CNN's feature map + b) before the audio
pathway. Cut every 0.25 s, a snippet overlaps 16 others, and that CNN is about half the audio
side's work. Here it runs once over the whole spectrogram, and each snippet's weights are read
from the map:

* ``chunks``: the spectrogram, padded with the silence ``frontend.audio.audio_snippets`` puts
  beyond its ends, cut into ``SHARED_CHUNK`` frames seen with ``SHARED_MARGIN`` frames of context
  each side (silence beyond the ends): every pass has one shape (a traced graph, an ONNX session),
  and the map does not depend on the chunk size (the margin exceeds the CNN's receptive field);
* ``attention_map``: per feature column (one per ``stride`` frames), the logits the attention
  gives to that column alone, (context, columns): W · (column's mean over frequency) + b;
* ``snippet_weights``: a snippet's logits are the mean of those columns over its own span — the
  ``context // stride`` columns from its first frame on, with fractional ends — as the 1×1 logits
  convolution and the mean commute; then the softmax.

The weights differ from those of the snippet alone only where the snippet's zero padding is
replaced by the music around it, and by the rounding of its span to columns: on real recordings
the embeddings are within cosine 0.998 of the snippet-by-snippet ones (docs/model.md).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

SHARED_CHUNK = 512  # spectrogram frames of the attention map made per pass (a multiple of the stride)
SHARED_MARGIN = 64  # frames of context each side of a chunk: more than the features' receptive field


def chunk_frames() -> int:
    """Frames of every pass's input: ``SHARED_CHUNK`` + 2 ``SHARED_MARGIN``."""
    return SHARED_CHUNK + 2 * SHARED_MARGIN


def recording_snippets(spec: np.ndarray, context: int, hop: int, snippets: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(snippets, centres) of ``spec`` (T, bins) as ``frontend.audio.audio_snippets(spec, context,
    hop)`` cuts them; ``snippets``: those, already cut by the caller (not cut again). ValueError
    if ``snippets`` has another count than ``hop`` gives."""
    from audiosheet.frontend.audio import audio_snippets

    if snippets is None:
        return audio_snippets(spec, context, hop)
    centres = np.arange(0, len(spec), hop, dtype=np.int64)
    if len(snippets) != len(centres):
        raise ValueError(f"{len(snippets)} snippets given, {len(centres)} cut every {hop} frames of {len(spec)}")
    return np.asarray(snippets, np.float32), centres


def chunks(spec: np.ndarray, context: int) -> Iterator[np.ndarray]:
    """Float32 (1, 1, bins, ``chunk_frames()``) inputs covering ``spec`` (T, bins) after the
    snippets' padding (``context // 2`` silent frames before, the rest after), in order."""
    t, bins = spec.shape
    lo, n = context // 2, -(-(t + context) // SHARED_CHUNK)
    padded = np.zeros((SHARED_MARGIN + n * SHARED_CHUNK + SHARED_MARGIN, bins), np.float32)
    padded[SHARED_MARGIN + lo:SHARED_MARGIN + lo + t] = spec
    for k in range(n):  # a fresh array: the usual strides, also on its two axes of size 1 (a
        # traced torch graph specialises on strides; ``[None, None]`` would give them stride 0)
        x = np.empty((1, 1, bins, chunk_frames()), np.float32)
        x[0, 0] = padded[k * SHARED_CHUNK:k * SHARED_CHUNK + chunk_frames()].T
        yield x


def attention_map(columns_of: Callable[[np.ndarray], np.ndarray], spec: np.ndarray, context: int,
                  stride: int) -> np.ndarray:
    """Float32 (context, W) logits per feature column of the padded spectrogram, column c covering
    its frames ``c * stride`` on. ``columns_of(x)``: one chunk's (context, chunk_frames() // stride)
    column logits (``chunks``' x)."""
    keep = slice(SHARED_MARGIN // stride, (SHARED_MARGIN + SHARED_CHUNK) // stride)
    return np.concatenate([np.asarray(columns_of(x), np.float32)[:, keep] for x in chunks(spec, context)],
                          axis=1)


def snippet_weights(columns: np.ndarray, centres: np.ndarray, context: int, stride: int) -> np.ndarray:
    """Float32 (N, context) frame weights, rows summing to 1, of the snippets centred on
    ``centres`` (N,) frames, from ``attention_map``'s ``columns`` (context, W)."""
    cols = np.asarray(columns, np.float64)
    cum = np.concatenate([np.zeros((len(cols), 1)), np.cumsum(cols, axis=1)], axis=1)

    def area(p: np.ndarray) -> np.ndarray:  # ∫ of the columns from 0 to p (in columns)
        i = np.minimum(np.floor(p).astype(np.int64), cols.shape[1] - 1)
        return cum[:, i] + (p - i) * cols[:, i]

    span = context // stride  # a snippet's own map has this many columns
    first = np.asarray(centres, np.float64) / stride  # its first padded frame is its centre
    logits = ((area(first + span) - area(first)) / span).T  # (N, context)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
