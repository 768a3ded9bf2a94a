"""Query-time embeddings without PyTorch: the snippet model's two pathways as ONNX graphs.

Importing torch costs about a second, more than a whole warm query, so a one-shot
``audiosheet identify`` would spend most of its time loading it. A collection therefore keeps an
ONNX export of its model (``COLLECTION/model/{audio,sheet}.onnx`` + ``model.json``, written by
``export`` when files are added, with torch already loaded) and queries run it with ONNX Runtime
(import ~0.1 s). A recording's snippets share their attention as in ``Embedder.audio_sequence``
(``attention.onnx`` + ``audio_net.onnx``, format v2; a v1 export is still read and embeds snippet
by snippet, and the next ``index add`` writes v2). The graphs hold everything after the front
end: attention (audio), the convolutional pathway, the CCA projection if the model has one,
and the L2 normalisation, in float32. They match the torch model in float32 to ~1e-5; indexed embeddings are made by torch with
bf16 autocast (``embed.Embedder``), whose rounding is far larger (cosine > 0.995 between the two,
checked in tests/test_onnx.py, with the same answers).

``onnxruntime`` missing, the export missing or made from another checkpoint: the collection falls
back to the torch ``Embedder`` (same results, slower start).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiosheet.files import atomic_path, write_json
from audiosheet.models.shared_attention import attention_map, chunk_frames, recording_snippets, snippet_weights

FORMAT = "audiosheet-onnx-v2"  # v2: + the shared attention's graphs (attention.onnx, audio_net.onnx)
READABLE = ("audiosheet-onnx-v1", FORMAT)  # a v1 export is still read (snippet by snippet)
OPSET = 17


@dataclass(frozen=True)
class OnnxConfig:
    """The shapes a query front end needs from the model (as ``ModelConfig``'s fields)."""

    context: int  # audio snippet frames
    audio_bins: int  # spectrogram bins
    sheet_shape: tuple  # (rows, columns) px of a sheet snippet
    embed_dim: int


def export(model, folder: str | Path, model_sha256: str) -> Path:
    """Write ``folder/audio.onnx``, ``sheet.onnx`` and ``model.json`` for a ``SnippetModel`` — and
    for a model with attention ``attention.onnx`` (one ``shared_attention.chunks`` input → the
    logits per feature column, (1, context, columns)) and ``audio_net.onnx`` (attention-weighted
    snippets → embeddings) for ``OnnxEmbedder.audio_sequence``. Each file is replaced atomically
    and ``model.json`` last. Returns ``folder``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from audiosheet.models.embed import Embedder

    emb = Embedder(model, jit=False, bf16=False)
    cca = emb._cca
    cfg = emb.config

    class Pathway(nn.Module):
        def __init__(self, net, mean=None, proj=None):
            super().__init__()
            self.net = net
            self.cca = mean is not None
            if self.cca:
                self.register_buffer("mean", mean.clone())
                self.register_buffer("proj", proj.clone())

        def forward(self, x):
            y = self.net(x)
            if self.cca:
                y = (y - self.mean) @ self.proj
            return F.normalize(y, dim=1)

    class Columns(nn.Module):  # one chunk → the attention's logits per feature column (float32)
        def __init__(self, attention):
            super().__init__()
            self.features, self.logits = attention.features, attention.logits

        def forward(self, x):
            return self.logits(self.features(x).mean(dim=2, keepdim=True))[:, :, 0, :]

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    audio_shape = (1, cfg.audio_bins, cfg.context)
    nets = {"audio": (emb._nets["audio"], audio_shape), "sheet": (emb._nets["sheet"], (1, *cfg.sheet_shape))}
    shared = None
    if emb.model.attention is not None:  # Embedder.audio_sequence's two parts
        shared = {"stride": 2 ** len(emb.model.attention.features), "frames": chunk_frames()}
        nets["audio_net"] = (emb._nets["audio_net"], audio_shape)
    for kind, (module, shape) in nets.items():
        args = (cca[0], cca[1]) if kind != "sheet" and cca else (cca[2], cca[3]) if cca else ()
        _export_graph(Pathway(module, *args).eval(), torch.zeros(2, *shape), folder / f"{kind}.onnx",
                      "embedding", {"x": {0: "n"}, "embedding": {0: "n"}})
    if shared:
        _export_graph(Columns(emb.model.attention).eval(), torch.zeros(1, 1, cfg.audio_bins, shared["frames"]),
                      folder / "attention.onnx", "columns", None)
    meta = {"format": FORMAT, "model_sha256": model_sha256, "context": cfg.context,
            "audio_bins": cfg.audio_bins, "sheet_shape": list(cfg.sheet_shape),
            "embed_dim": cfg.embed_dim, "shared_attention": shared}
    write_json(folder / "model.json", meta)
    return folder


def _export_graph(net, example, path: Path, output: str, dynamic: dict | None) -> None:
    import warnings

    import torch

    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(tmp), input_names=["x"], output_names=[output],
                          opset_version=OPSET, dynamo=False, dynamic_axes=dynamic)


def read_meta(folder: str | Path) -> dict | None:
    """The export's ``model.json``, or None if there is no complete export in ``folder``."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        return None
    graphs = ("audio", "sheet") + (("attention", "audio_net") if meta.get("shared_attention") else ())
    if meta.get("format") not in READABLE or not all((folder / f"{k}.onnx").is_file() for k in graphs):
        return None
    return meta


class OnnxEmbedder:
    """``OnnxEmbedder(folder).audio(specs)`` / ``.sheet(images)`` → float32 (N, d), L2-normalised,
    as ``embed.Embedder`` (same input shapes: audio (N, bins, frames), sheet (N, rows, cols), ink 1).
    Sessions are created on first use of each pathway. ``ImportError`` without onnxruntime."""

    def __init__(self, folder: str | Path, threads: int | None = None, batch: int = 256):
        import onnxruntime  # noqa: F401  (fail early: the caller falls back to torch)

        self.folder = Path(folder)
        meta = read_meta(self.folder)
        if meta is None:
            raise FileNotFoundError(f"{self.folder}: no complete ONNX export here")
        self.meta = meta
        self.config = OnnxConfig(meta["context"], meta["audio_bins"], tuple(meta["sheet_shape"]),
                                 meta["embed_dim"])
        self.threads, self.batch = threads, int(batch)
        self._sessions: dict = {}

    def _session(self, kind: str):
        if kind not in self._sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads or min(os.cpu_count() or 1, 4)
            opts.log_severity_level = 3
            self._sessions[kind] = ort.InferenceSession(str(self.folder / f"{kind}.onnx"), opts,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[kind]

    def _run(self, kind: str, x, shape: tuple) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim == len(shape) + 1:
            x = x[:, None]
        if tuple(x.shape[1:]) != (1, *shape):
            raise ValueError(f"snippets of shape {tuple(x.shape[1:])}, expected {(1, *shape)}")
        if not len(x):
            return np.zeros((0, self.config.embed_dim), np.float32)
        s = self._session(kind)
        out = [s.run(None, {"x": np.ascontiguousarray(x[i:i + self.batch])})[0]
               for i in range(0, len(x), self.batch)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def audio(self, specs) -> np.ndarray:
        return self._run("audio", specs, (self.config.audio_bins, self.config.context))

    def audio_sequence(self, spec: np.ndarray, hop: int, snippets: np.ndarray | None = None) -> np.ndarray:
        """``embed.Embedder.audio_sequence``: a whole recording's snippets (centred on frames 0,
        hop, … of ``spec`` (T, bins); ``snippets``: those, if already cut), the attention computed
        once for all of them (``models.shared_attention``) where the export has its graphs;
        snippet by snippet otherwise (a v1 export, a model without attention)."""
        spec = np.asarray(spec, np.float32)
        cfg = self.config
        snippets, centres = recording_snippets(spec, cfg.context, hop, snippets)
        shared = self.meta.get("shared_attention")
        if not shared or shared["frames"] != chunk_frames() or not len(snippets):
            return self.audio(snippets)
        if spec.shape[1] != cfg.audio_bins:
            raise ValueError(f"spectrogram of {spec.shape[1]} bins, expected {cfg.audio_bins}")
        session = self._session("attention")
        columns = attention_map(lambda x: session.run(None, {"x": x})[0][0], spec, cfg.context, shared["stride"])
        w = snippet_weights(columns, centres, cfg.context, shared["stride"])
        return self._run("audio_net", snippets * (w * cfg.context)[:, None, :], (cfg.audio_bins, cfg.context))

    def sheet(self, images) -> np.ndarray:
        return self._run("sheet", images, tuple(self.config.sheet_shape))
