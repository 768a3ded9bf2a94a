"""Training batches, drawn reproducibly: augmented snippet pairs (``PairSampler``, ``warp_sheets``),
passages (``PassageSampler``), and an even spread of pairs over pieces for validation and
evaluation (``evaluation_pairs``). Batch ``k`` depends only on (seed, k), so a resumed run
continues the same sequence."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from audiosheet.frontend.windows import pad_window
from audiosheet.geometry import SHEET_CROP_W, SHEET_H, SHEET_W, STRIP_HEIGHT
from audiosheet.training.config import TrainConfig
from audiosheet.training.pairs import SnippetPairs


class PairSampler:
    """Draws augmented training batches (sheets (B,1,80,100), audios (B,1,92,T)) reproducibly.

    Batch ``k`` depends only on (seed, k), so a resumed run continues the same sequence.
    """

    def __init__(self, data: SnippetPairs, cfg: TrainConfig):
        from audiosheet.training.variety import VarietyConfig

        self.data, self.cfg = data, cfg
        self.variety = VarietyConfig.build(cfg.variety, cfg.variety_settings) if cfg.variety > 0 else None

    def indices(self, step: int, batch: int) -> np.ndarray:
        rng = np.random.default_rng([self.cfg.seed, step])
        return rng.integers(0, len(self.data), size=batch)

    def __call__(self, step: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, data = self.cfg, self.data
        rng = np.random.default_rng([self.cfg.seed, step, 1])
        idx = self.indices(step, batch)
        crops = np.empty((batch, STRIP_HEIGHT, SHEET_CROP_W), np.uint8)
        audios = np.empty((batch, data.pieces[0].specs[0].shape[1], data.context), np.float32)
        dts = rng.integers(-cfg.onset_shift, cfg.onset_shift + 1, size=batch)
        for b, (piece, note, perf) in enumerate(data.index[idx]):
            p = data.pieces[piece]
            x = int(round(float(p.strip_x[note])))
            crops[b] = pad_window(p.strip.T, x - SHEET_CROP_W // 2, SHEET_CROP_W, 255).T
            audios[b] = data.audio(piece, note, perf, int(dts[b]))
        if self.variety is not None and self.variety.sheet_on:
            from audiosheet.training.variety import sheet_variety

            crops = sheet_variety(crops, self.variety, np.random.default_rng([cfg.seed, step, 3]))
        sheets = 1.0 - torch.from_numpy(crops).float().div_(255.0)
        scale = rng.uniform(*cfg.scale, size=batch)
        shift = rng.uniform(-cfg.system_shift, cfg.system_shift, size=batch)
        sheets, audios = warp_sheets(sheets, scale, shift), torch.from_numpy(audios)[:, None]
        if cfg.augment > 0:
            sheets, audios = self._augment(step, sheets, idx, dts)
        if self.variety is not None and self.variety.audio_on:
            from audiosheet.training.variety import audio_variety

            g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 4]).integers(2**62)))
            audios = audio_variety(audios, self.variety, g)
        return sheets, audios

    def _augment(self, step: int, sheets: torch.Tensor, idx, dts) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-training augmentations on a supervised batch, with probabilities scaled by
        ``cfg.augment``. Pairs stay aligned: the sheet's x shift is limited to ±3 % of the window
        (the notehead stays centred) and audio is stretched about the onset, read from a window
        wide enough for the fastest stretch."""
        from audiosheet.training.augment import AudioAugConfig, SheetAugConfig, augment_audio, augment_sheet

        cfg, data = self.cfg, self.data
        g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 2]).integers(2**62)))
        scfg = SheetAugConfig(shift_x=0.03, shift_y=0.05)
        acfg = AudioAugConfig(stretch=(0.75, 1.33))
        scfg, acfg = (type(c).from_dict({**c.to_dict(), **{
            k: min(1.0, v * cfg.augment) for k, v in c.to_dict().items() if k.startswith("p_")}})
            for c in (scfg, acfg))
        wide = int(np.ceil(data.context * acfg.stretch[1])) + 2
        long = np.empty((len(idx), data.pieces[0].specs[0].shape[1], wide), np.float32)
        for b, (piece, note, perf) in enumerate(data.index[idx]):
            f = int(data.pieces[piece].frames[perf, note]) + int(dts[b])
            long[b] = pad_window(data.pieces[piece].specs[perf], f - wide // 2, wide, 0).T
        # the plain window [f - context//2, + context) has its centre here in the wide window
        centre = torch.full((len(idx),), wide // 2 - data.context // 2 + data.context / 2.0)
        audios = augment_audio(torch.from_numpy(long)[:, None], acfg, g, data.context, centre)
        return augment_sheet(sheets, scfg, g), audios


def warp_sheets(crops: torch.Tensor, scale, shift) -> torch.Tensor:
    """Centre (80 × 100) windows of (B, 100, 120) ink crops, scaled by ``scale`` and shifted
    vertically by ``shift`` px, in one batched ``grid_sample``. scale 1, shift 0 is the plain window."""
    b, h, w = crops.shape
    scale = torch.as_tensor(np.asarray(scale, np.float32))
    shift = torch.as_tensor(np.asarray(shift, np.float32))
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = (SHEET_W / w) / scale
    theta[:, 1, 1] = (SHEET_H / h) / scale
    theta[:, 1, 2] = 2.0 * shift / h
    grid = F.affine_grid(theta, (b, 1, SHEET_H, SHEET_W), align_corners=False)
    return F.grid_sample(crops[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def evaluation_pairs(data: SnippetPairs, n: int, seed: int = 0) -> np.ndarray:
    """``n`` pair indices into ``data.index`` spread evenly over its pieces (seeded, no repeats)."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(data.index[:, 0], minlength=len(data.pieces))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = len(data.pieces)
    per = np.full(k, n // k) + (np.arange(k) < n % k)[rng.permutation(k)]
    chosen, spare = [], []
    for piece in range(k):  # pieces with fewer pairs than their share give the rest to the others
        take = min(per[piece], counts[piece])
        order = starts[piece] + rng.permutation(counts[piece])
        chosen.append(order[:take])
        spare.append(order[take:])
    chosen = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    short = n - len(chosen)
    if short > 0:
        spare = np.concatenate(spare)
        chosen = np.concatenate([chosen, rng.choice(spare, size=min(short, len(spare)), replace=False)])
    return np.sort(chosen)


class PassageSampler:
    """Reproducible training batches of passages (sheet windows, lengths, audio windows, lengths);
    the sheet band is shifted vertically by up to ``system_shift`` px (batch ``k`` depends only on
    (seed, k), so a resumed run continues the same sequence). With ``cfg.variety`` > 0 each whole
    passage gets the real-world variety of ``audiosheet.training.variety`` before it is cut into windows:
    its sheet band a scan, photo or low resolution, its spectrogram the player, room, noise, codec
    and band limits (the timing warp keeps both ends and the centre in place)."""

    def __init__(self, data, cfg: TrainConfig):
        from audiosheet.training.variety import VarietyConfig

        self.data, self.cfg = data, cfg
        self.variety = VarietyConfig.build(cfg.variety, cfg.variety_settings) if cfg.variety > 0 else None

    def _vary(self, step: int, bands: list, specs: list) -> tuple[list, list]:
        """Variety on float32 sheet bands (80, W) (ink = 1) and spectrograms (92, T), one at a
        time (their widths differ); seeded by (seed, step)."""
        from audiosheet.training.variety import audio_variety, sheet_variety

        v, cfg = self.variety, self.cfg
        if v.sheet_on:
            rng = np.random.default_rng([cfg.seed, step, 3])
            bands = [1.0 - sheet_variety(np.round((1.0 - b) * 255.0).astype(np.uint8)[None], v, rng)[0]
                     .astype(np.float32) / 255.0 for b in bands]
        if v.audio_on:
            g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 4]).integers(2**62)))
            specs = [audio_variety(torch.from_numpy(np.ascontiguousarray(a))[None, None], v, g)[0, 0].numpy()
                     for a in specs]
        return bands, specs

    def __call__(self, step: int, batch: int):
        from audiosheet.frontend.windows import collate, windows

        d, cfg = self.data, self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        idx = rng.integers(0, len(d), size=batch)
        dys = rng.integers(-int(cfg.system_shift), int(cfg.system_shift) + 1, size=batch)
        bands = [d.sheet(int(i), int(dy)) for i, dy in zip(idx, dys)]
        span = (d.passages["t1"][idx] - d.passages["t0"][idx]).astype(np.float64)
        moves = np.round(rng.uniform(-1, 1, size=(batch, 2)) * cfg.boundary_jitter * span[:, None]).astype(int)
        specs = [d.audio(int(i), (int(m0), int(m1))) for i, (m0, m1) in zip(idx, moves)]
        if self.variety is not None:
            bands, specs = self._vary(step, bands, specs)
        sheets = [windows(b, d.sheet_window, d.sheet_hop, 0.0) for b in bands]
        audios = [windows(a, d.audio_window, d.audio_hop, 0.0) for a in specs]
        s, ns = collate(sheets, torch=True)
        a, ms = collate(audios, torch=True)
        return s, ns, a, ms
