"""Model configurations: dataclasses with a JSON round trip; the shipped ones by name (configs/)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from audiosheet.geometry import AUDIO_BINS, AUDIO_FRAMES, SHEET_H, SHEET_W


class DictConfig:
    """JSON round trip of a config dataclass; unknown fields are an error."""

    what = "model config"

    @classmethod
    def from_dict(cls, d: dict):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.what} fields: {', '.join(sorted(unknown))}")
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelConfig(DictConfig):
    name: str = "bl2"  # short name of the variant
    head: str = "dense"  # "gap": global average pooling (BL1); "dense": flatten + linear (BL2)
    context: int = AUDIO_FRAMES  # audio snippet length in frames (42, 84 or 168)
    attention: bool = False  # soft attention over the audio frames
    channels: list = field(default_factory=lambda: [24, 48, 96, 96])  # VGG block widths
    embed_dim: int = 32  # embedding size
    cca: bool = True  # CCA layer before the L2 normalisation
    cca_train: bool = False  # True: the batch's CCA projection is part of the training forward pass
    # (reference design); False: training ranks the plain embeddings and the CCA statistics are
    # fitted after training (kept only if they help on validation) — learns several times faster here
    cca_eps: float = 1e-3  # CCA covariance regularisation
    cca_momentum: float = 0.05  # running-statistics momentum during training
    cca_power: float = 0.0  # canonical dimensions scaled by (canonical correlation)^p: 0 = plain
    # whitened CCA (reference); p > 0 lowers the weight of weakly correlated dimensions in the cosine
    # similarity (chosen on validation when the statistics are fitted after training)
    sheet_shape: list = field(default_factory=lambda: [SHEET_H, SHEET_W])  # sheet snippet (H, W)
    audio_bins: int = AUDIO_BINS  # spectrogram bins
    margin: float = 0.7  # ranking-loss margin
    symmetric: bool = False  # ranking loss in both directions


CONFIG_NAMES = ("bl1", "bl2", "bl2_att84", "bl2_att168", "bl2_cca_in_training", "passage_gru")
