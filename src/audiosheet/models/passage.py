"""Passage model: a whole staff system (or 2–3) and the audio it covers as one embedding each.

Seed 000's recurrent summaries: each modality cuts its passage into short snippet windows (audio
20 frames every 18, sheet 80 × 90 px every 81 columns), a per-snippet CNN (the snippet model's
VGG pathway) maps every window to 32-d, a one-layer GRU reads the sequence, and a linear layer
gives the L2-normalised passage embedding (64-d). Trained with the ranking loss on passage pairs
that need only system boundaries (``audiosheet.training.passages``). Plain ``nn.Module``s; every
hyperparameter lives in ``PassageConfig`` and is saved with the weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from audiosheet.geometry import AUDIO_BINS, PASSAGE_AUDIO_WINDOW, PASSAGE_SHEET_WINDOW, SHEET_H, FrontEnd
from audiosheet.models.config import DictConfig, ModelConfig
from audiosheet.models.snippet import Pathway, autocast

FORMAT = "audiosheet-passage-v1"


@dataclass
class PassageConfig(DictConfig):
    name: str = "passage_gru"  # short name of the variant
    kind: str = "passage"  # config family (snippet configs have none)
    channels: list = field(default_factory=lambda: [24, 48, 96, 96])  # per-snippet CNN block widths
    snippet_dim: int = 32  # per-snippet embedding size (the GRU's input)
    hidden: int = 128  # GRU hidden size
    embed_dim: int = 64  # passage embedding size
    audio_bins: int = AUDIO_BINS  # spectrogram bins
    audio_window: int = PASSAGE_AUDIO_WINDOW  # frames per audio snippet window
    audio_hop: int = 18  # frames between audio windows (10 % overlap)
    sheet_height: int = SHEET_H  # px of the strip band the sheet windows read
    sheet_window: int = PASSAGE_SHEET_WINDOW  # strip columns per sheet window
    sheet_hop: int = 81  # strip columns between sheet windows (10 % overlap)
    margin: float = 0.3  # ranking-loss margin
    symmetric: bool = True  # ranking loss in both directions
    lengths: list = field(default_factory=lambda: [1, 2, 3])  # systems per training passage
    what = "passage config"  # (class attribute, for error messages)

    def snippet_config(self) -> ModelConfig:
        """The per-snippet CNN's settings, in the snippet model's terms."""
        return ModelConfig(name=f"{self.name}-snippet", head="dense", context=self.audio_window,
                           channels=list(self.channels), embed_dim=self.snippet_dim, cca=False,
                           sheet_shape=[self.sheet_height, self.sheet_window],
                           audio_bins=self.audio_bins)


class PassageEncoder(nn.Module):
    """One modality: windows (B, N, H, W) with lengths (B,) → L2-normalised (B, embed_dim).

    Only real windows go through the CNN (padding never does), the GRU reads each sequence packed
    to its own length, so a passage's embedding does not depend on what it is batched with."""

    def __init__(self, window: tuple[int, int], cfg: PassageConfig):
        super().__init__()
        self.cnn = Pathway(window, cfg.snippet_config())
        self.gru = nn.GRU(cfg.snippet_dim, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.embed_dim)
        self.bf16 = False  # bfloat16 autocast for the CNN (set by training and inference)

    def snippets(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, H, W) windows → (n, snippet_dim) float32."""
        x = windows[:, None].contiguous(memory_format=torch.channels_last)
        with autocast(self.bf16):
            return self.cnn(x).float()

    def summarise(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N, snippet_dim) snippet embeddings, padded, with lengths (B,) → (B, embed_dim)."""
        packed = pack_padded_sequence(seq.float(), lengths.cpu().long().clamp_min(1), batch_first=True,
                                      enforce_sorted=False)
        _, h = self.gru(packed)
        return F.normalize(self.out(h[-1]), dim=1)

    def forward(self, windows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, n = windows.shape[:2]
        lengths = torch.as_tensor(lengths).long()
        mask = torch.arange(n)[None, :] < lengths[:, None]
        e = self.snippets(windows[mask])
        seq = e.new_zeros(b, n, e.shape[1])
        seq[mask] = e
        return self.summarise(seq, lengths)


class PassageModel(nn.Module):
    """Sheet and audio passages → L2-normalised embeddings in one space."""

    format = FORMAT

    def __init__(self, cfg: PassageConfig):
        super().__init__()
        self.config = cfg
        self.front_end = FrontEnd()  # replaced by the checkpoint's record or the training corpus's
        self.sheet_enc = PassageEncoder((cfg.sheet_height, cfg.sheet_window), cfg)
        self.audio_enc = PassageEncoder((cfg.audio_bins, cfg.audio_window), cfg)

    def set_bf16(self, on: bool) -> "PassageModel":
        self.sheet_enc.bf16 = self.audio_enc.bf16 = bool(on)
        return self

    def forward(self, sheets, sheet_lengths, audios, audio_lengths):
        """(sheet windows (B, N, 80, 90), lengths, audio windows (B, M, 92, 20), lengths) →
        (sheet embeddings, audio embeddings), each (B, embed_dim)."""
        return self.sheet_enc(sheets, sheet_lengths), self.audio_enc(audios, audio_lengths)

    def embed_sheet(self, windows, lengths) -> torch.Tensor:
        return self.sheet_enc(windows, lengths)

    def embed_audio(self, windows, lengths) -> torch.Tensor:
        return self.audio_enc(windows, lengths)

