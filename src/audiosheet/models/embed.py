"""Embeddings at inference time: many snippets in, L2-normalised 32-d vectors out, fast on a CPU.

The model is prepared once: batch norms folded into the convolutions, channels-last weights, bf16
autocast, and each pathway traced and frozen with oneDNN graph fusion (convolution + ELU fused),
which on a 2-core laptop CPU embeds about 1.5× more snippets per second than the eager model.
Batches are padded to one fixed size so the traced graphs are never re-specialised.

A recording's overlapping snippets (``audio_sequence``) share the attention's convolutions: the
attention's feature maps are computed once over the whole spectrogram and each snippet's frame
weights are read from them (``shared_attention_weights``, ``models.shared_attention``), so only the
audio pathway runs per snippet: half the work for a query cut every 0.25 s, embeddings within
cosine 0.99+ of the snippet-by-snippet ones (tests/test_model.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiosheet.models.checkpoint import load_model
from audiosheet.models.shared_attention import attention_map, chunk_frames, recording_snippets, snippet_weights
from audiosheet.models.snippet import FrameAttention, SnippetModel, autocast


class AttentionColumns(nn.Module):
    """The attention's feature map of a spectrogram stretch, averaged over frequency: (1, 1, bins,
    frames) → (1, C, frames // stride), float32 (``shared_attention_weights`` takes the logits
    from it in float32, outside bf16 autocast)."""

    def __init__(self, attention: FrameAttention):
        super().__init__()
        self.features = attention.features

    def forward(self, x):
        return self.features(x).float().mean(dim=2)


def shared_attention_weights(attention: FrameAttention, spec: np.ndarray, centres: np.ndarray,
                             context: int, bf16: bool = True, features=None) -> torch.Tensor:
    """Frame weights (N, context), rows summing to 1, of the snippets of ``spec`` (T, bins)
    centred on ``centres`` (N,) frames (as ``frontend.audio.audio_snippets`` cuts them), from one
    pass of the attention's convolutions over the whole spectrogram (``models.shared_attention``:
    how, and how close to each snippet's own weights). ``features``: an ``AttentionColumns`` of
    ``attention`` (a traced one of shape (1, 1, bins, ``chunk_frames()``)); ``bf16``: its
    convolutions under bfloat16 autocast, as ``Embedder`` runs them."""
    features = AttentionColumns(attention) if features is None else features
    stride = 2 ** len(attention.features)  # one max-pool per block
    w = attention.logits.weight[:, :, 0, 0].float()
    b = attention.logits.bias.float()[:, None]

    def columns_of(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast(bf16):
            m = features(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))[0]
        with torch.no_grad():
            return (w @ m.float() + b).numpy()

    columns = attention_map(columns_of, spec, context, stride)
    return torch.from_numpy(snippet_weights(columns, centres, context, stride))


class _AudioRaw(nn.Module):
    def __init__(self, model: SnippetModel):
        super().__init__()
        self.attention, self.audio_net = model.attention, model.audio_net

    def forward(self, x):
        if self.attention is not None:
            x = self.attention(x)
        return self.audio_net(x)


class Embedder:
    """``Embedder(model).audio(specs)`` / ``.sheet(images)`` → float32 (N, d) numpy arrays.

    ``model``: a SnippetModel or a MODEL name (run folder, checkpoint file, shipped model).
    Audio snippets: (N, 92, T) or (N, 1, 92, T) log spectrogram windows; sheet snippets:
    (N, 80, 100) or (N, 1, 80, 100) with ink = 1, paper = 0.
    """

    def __init__(self, model, batch: int = 32, jit: bool = True, bf16: bool = True):
        if not isinstance(model, nn.Module):
            model = load_model(model)
        self.model = model.for_inference().requires_grad_(False)
        self.config = model.config
        self.batch, self.bf16 = int(batch), bf16
        self._cca = None
        if self.model.cca is not None:  # the projections, computed once (eigh + svd per call otherwise)
            c = self.model.cca
            with torch.no_grad():
                pa, ps = c.projections(c.mean_a, c.mean_s, c.cov_aa, c.cov_ss, c.cov_as)
            self._cca = (c.mean_a.clone(), pa, c.mean_s.clone(), ps)
        self.jit = jit
        self._nets = {"audio": _AudioRaw(self.model), "sheet": self.model.sheet_net,
                      "audio_net": self.model.audio_net}
        if self.model.attention is not None:  # chunks of the shared attention map, one at a time
            self._nets["attention_features"] = AttentionColumns(self.model.attention)
        self._traced: dict[str, nn.Module] = {}

    def _net(self, kind: str, shape: tuple) -> nn.Module:
        """A pathway, traced on first use (so a one-sided job pays for one trace only)."""
        if kind not in self._traced:
            net = self._nets[kind]
            batch = 1 if kind == "attention_features" else self.batch
            self._traced[kind] = self._trace(net, (1, *shape), batch) if self.jit else net
        return self._traced[kind]

    def _trace(self, net: nn.Module, shape: tuple, batch: int) -> nn.Module:
        x = torch.zeros(batch, *shape).contiguous(memory_format=torch.channels_last)
        try:
            torch.jit.enable_onednn_fusion(True)
            with warnings.catch_warnings(), torch.no_grad(), autocast(self.bf16):
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(net.eval(), x, check_trace=False))
                for _ in range(2):  # the profiling executor optimises on the second call
                    traced(x)
            return traced
        except Exception:  # pragma: no cover - tracing support varies across torch builds
            return net

    def _run(self, net, x, shape: tuple, weights: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if x.dim() == len(shape) + 1:
            x = x[:, None]
        if tuple(x.shape[1:]) != (1, *shape):
            raise ValueError(f"snippets of shape {tuple(x.shape[1:])}, expected {(1, *shape)}")
        out = []
        with torch.no_grad(), autocast(self.bf16):
            for i in range(0, len(x), self.batch):
                chunk = x[i:i + self.batch]
                if weights is not None:  # attention weights, (N, frames): frames × T·weight
                    w = weights[i:i + self.batch]
                    chunk = chunk * (w * w.shape[1]).to(chunk.dtype)[:, None, None, :]
                n = len(chunk)
                if n < self.batch:  # pad: the traced graph has one fixed batch size
                    chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))])
                out.append(net(chunk.contiguous(memory_format=torch.channels_last))[:n].float())
        return torch.cat(out) if out else torch.zeros(0, self.config.embed_dim)

    def audio(self, specs) -> np.ndarray:
        shape = (self.config.audio_bins, self.config.context)
        a = self._run(self._net("audio", shape), specs, shape)
        if self._cca is not None:
            a = (a - self._cca[0]) @ self._cca[1]
        return F.normalize(a, dim=1).numpy()

    def audio_sequence(self, spec: np.ndarray, hop: int, snippets: np.ndarray | None = None) -> np.ndarray:
        """Embeddings (N, d) of a whole recording's snippets, centred on frames 0, hop, 2 hop, … < T
        of ``spec`` (T, bins) as ``frontend.audio.audio_snippets(spec, context, hop)`` cuts them
        (``snippets``: those, if the caller has cut them already), the attention computed once for
        all of them (``shared_attention_weights``). Equal to ``audio`` of those snippets for a model
        without attention; within cosine 0.99+ with it."""
        spec = np.asarray(spec, np.float32)
        snippets, centres = recording_snippets(spec, self.config.context, hop, snippets)
        if self.model.attention is None or not len(snippets):
            return self.audio(snippets)
        shape = (self.config.audio_bins, self.config.context)
        if spec.shape[1] != shape[0]:
            raise ValueError(f"spectrogram of {spec.shape[1]} bins, expected {shape[0]}")
        features = self._net("attention_features", (shape[0], chunk_frames()))
        weights = shared_attention_weights(self.model.attention, spec, centres, self.config.context,
                                           self.bf16, features)
        a = self._run(self._net("audio_net", shape), snippets, shape, weights)
        if self._cca is not None:
            a = (a - self._cca[0]) @ self._cca[1]
        return F.normalize(a, dim=1).numpy()

    def sheet(self, images) -> np.ndarray:
        shape = tuple(self.config.sheet_shape)
        s = self._run(self._net("sheet", shape), images, shape)
        if self._cca is not None:
            s = (s - self._cca[2]) @ self._cca[3]
        return F.normalize(s, dim=1).numpy()
