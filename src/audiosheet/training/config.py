"""Training settings (``TrainConfig``: the reference recipe's defaults, ``PASSAGE_DEFAULTS`` for
passage models) and the error of a run that cannot start."""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class TrainConfig:
    lr: float = 2e-3  # Adam learning rate
    weight_decay: float = 1e-5  # L2 penalty
    batch: int = 100  # pairs per step (every other pair is a negative)
    epoch_samples: int = 10_000  # samples per "epoch" (validation after each)
    patience: int = 30  # epochs without validation gain before the learning rate is halved
    refinements: int = 5  # how many times the learning rate is halved before stopping
    max_samples: int = 0  # stop after this many training samples (0: only early stopping ends)
    val_split: str = "valid"  # corpus split used for validation
    val_pairs: int = 1000  # validation pool (pairs sampled evenly over the validation pieces)
    cca_pairs: int = 25_000  # training pairs for the CCA re-estimation after training
    snapshot_every: int = 0  # also keep the best model so far every N samples (``best@N``)
    system_shift: float = 2.5  # vertical shift of the sheet window, ± px of the 80 × 100 input
    scale: tuple = (0.95, 1.05)  # sheet scale range
    onset_shift: int = 1  # ± frames of the audio window centre
    seed: int = 0  # sampling and augmentation seed
    augment: float = 0.0  # fine-tuning augmentation (``augment`` pipelines): every step's
    #   pre-training probability times this (0: off); geometry kept small so pairs stay aligned
    variety: float = 0.0  # real-world variety (``variety.VarietyConfig``: scans, photos, low
    #   resolution; timing, dynamics, pedal, rooms, noise, codecs, band limits): its probabilities
    #   times this (0: off; 1: the defaults)
    variety_settings: dict = field(default_factory=dict)  # single VarietyConfig fields, e.g. {"p_codec": 0}
    boundary_jitter: float = 0.0  # passage models: move each training audio passage's start and end
    #   by up to this fraction of its length (imprecise boundaries; queries cut without them)
    freeze_cnn: bool = False  # passage models: keep the per-snippet CNN's convolutions as
    #   initialised (--init-*) and train its dense layer, the GRU and the output layer (~3x faster)
    threads: int = 0  # torch threads (0: all cores)
    channels_last: bool = True  # channels-last memory format (faster convolutions on CPU)
    bf16: bool = True  # bfloat16 autocast for the convolutions

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "scale" in d:
            d["scale"] = tuple(d["scale"])
        return cls(**d)


class TrainError(ValueError):
    """A training run that cannot start; the message names the path and the reason."""


PASSAGE_DEFAULTS = dict(lr=1e-3, batch=32, epoch_samples=2000, patience=10, val_pairs=500, cca_pairs=0)
"""Training settings of a passage model where not given (``audiosheet train --config passage_gru``):
passages cost about 5 snippet pairs each, so epochs and batches are smaller."""
