"""Training of the snippet model: a thin loop over SnippetPairs and SnippetModel.

Reference recipe (Dorfer et al. 2018): Adam 2e-3 with L2 1e-5, batches of 100 pairs, "epochs" of
10,000 samples, validation MRR after each epoch, early stopping with patience, then refinement at half
the learning rate (up to 5 times) from the best weights. Augmentation: system shift, sheet scale and
onset shift here; several SoundFonts and tempi come from the corpus's performances.

A run folder holds ``config.json`` (model and training settings), ``last.safetensors`` (the latest
weights), ``train_best.safetensors`` (the best weights by validation MRR), ``best.safetensors`` (those
with the CCA statistics fitted on many training pairs: the run's model), ``state.pt`` (optimizer and
schedule, for ``--resume``) and ``log.csv`` (one row per epoch). Every file is replaced atomically.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .model import (ModelConfig, SnippetModel, config_from_dict, load_encoder, ranking_loss,
                    read_checkpoint, save_checkpoint, without_cca, _load_state)
from .snippets import SHEET_H, SHEET_W, STRIP_HEIGHT, SnippetPairs, _window


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


# ---------------------------------------------------------------------------------------------
# Data: augmented batches drawn from a SnippetPairs dataset

SHEET_CROP_W = 120  # wider crop so that scaling down never shows the crop border


class PairSampler:
    """Draws augmented training batches (sheets (B,1,80,100), audios (B,1,92,T)) reproducibly.

    Batch ``k`` depends only on (seed, k), so a resumed run continues the same sequence.
    """

    def __init__(self, data: SnippetPairs, cfg: TrainConfig):
        from .variety import VarietyConfig

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
            crops[b] = _window(p.strip.T, x - SHEET_CROP_W // 2, SHEET_CROP_W, 255).T
            audios[b] = data.audio(piece, note, perf, int(dts[b]))
        if self.variety is not None and self.variety.sheet_on:
            from .variety import sheet_variety

            crops = sheet_variety(crops, self.variety, np.random.default_rng([cfg.seed, step, 3]))
        sheets = 1.0 - torch.from_numpy(crops).float().div_(255.0)
        scale = rng.uniform(*cfg.scale, size=batch)
        shift = rng.uniform(-cfg.system_shift, cfg.system_shift, size=batch)
        sheets, audios = warp_sheets(sheets, scale, shift), torch.from_numpy(audios)[:, None]
        if cfg.augment > 0:
            sheets, audios = self._augment(step, sheets, idx, dts)
        if self.variety is not None and self.variety.audio_on:
            from .variety import audio_variety

            g = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, 4]).integers(2**62)))
            audios = audio_variety(audios, self.variety, g)
        return sheets, audios

    def _augment(self, step: int, sheets: torch.Tensor, idx, dts) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-training augmentations on a supervised batch, with probabilities scaled by
        ``cfg.augment``. Pairs stay aligned: the sheet's x shift is limited to ±3 % of the window
        (the notehead stays centred) and audio is stretched about the onset, read from a window
        wide enough for the fastest stretch."""
        from .augment import AudioAugConfig, SheetAugConfig, augment_audio, augment_sheet

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
            long[b] = _window(data.pieces[piece].specs[perf], f - wide // 2, wide, 0).T
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


# ---------------------------------------------------------------------------------------------
# Embedding many pairs (used by validation, CCA re-estimation and evaluation)

def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def embed_pairs(model: SnippetModel, data: SnippetPairs, indices, batch: int = 500, raw: bool = False,
                bf16: bool = True, channels_last: bool = True, progress: bool = False):
    """Embeddings (sheet (N, d), audio (N, d)) of pairs ``indices`` (un-augmented windows)."""
    from tqdm import tqdm

    was = model.training
    model.eval()
    mf = torch.channels_last if channels_last else torch.contiguous_format
    out_s, out_a = [], []
    for i in tqdm(range(0, len(indices), batch), disable=not progress, desc="embed", unit="batch"):
        s, a = data.batch(indices[i:i + batch])
        s = torch.from_numpy(s).contiguous(memory_format=mf)
        a = torch.from_numpy(a).contiguous(memory_format=mf)
        with _autocast(bf16):
            if raw:
                es, ea = model.raw(s, a)
            else:
                es, ea = model.embed_sheet(s), model.embed_audio(a)
        out_s.append(es.float())
        out_a.append(ea.float())
    model.train(was)
    return torch.cat(out_s), torch.cat(out_a)


# ---------------------------------------------------------------------------------------------
# The training loop

def train_step(model: SnippetModel, opt: torch.optim.Optimizer, sheets: torch.Tensor, audios: torch.Tensor,
               channels_last: bool = True, bf16: bool = True) -> float:
    """One optimisation step on a batch of pairs; returns the loss. The model must already be in
    the matching memory format (``model.to(memory_format=torch.channels_last)``)."""
    mf = torch.channels_last if channels_last else torch.contiguous_format
    sheets, audios = sheets.contiguous(memory_format=mf), audios.contiguous(memory_format=mf)
    with _autocast(bf16):
        es, ea = model(sheets, audios)
    loss = ranking_loss(es, ea, model.config.margin, model.config.symmetric)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # gradients through the CCA's eigen- and singular-value decompositions can blow up on a
    # near-degenerate batch; such a step is skipped rather than allowed to poison the weights
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    if not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        return float("nan")
    opt.step()
    return float(loss.detach())


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _copy(src: Path, dst: Path) -> None:
    import shutil

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


CCA_POWERS = (0.0, 1.0, 2.0, 4.0)  # canonical-correlation weightings tried after training


def fit_cca(src: Path, dst: Path, data: SnippetPairs, val: SnippetPairs, val_idx: np.ndarray,
            train_cfg: TrainConfig, powers=CCA_POWERS, log=print, progress: bool = False) -> dict:
    """Fit the CCA statistics of checkpoint ``src`` on ``train_cfg.cca_pairs`` pairs of ``data`` and
    write the best of {no CCA, CCA with each weighting power} by validation MRR to ``dst``.

    Plain (whitened) CCA gives every canonical dimension the same weight in the cosine similarity,
    also the weakly correlated ones, which can lower retrieval quality after ranking-loss training;
    scaling dimension i by rho_i^p (Gong et al. 2014) keeps the correlated ones in front. ``src``
    may hold a model without a CCA layer (its pathways are used). Returns the validation MRRs."""
    from dataclasses import replace

    from .evaluate import retrieval_metrics

    src, dst = Path(src), Path(dst)
    cfg, state, extra = read_checkpoint(src)
    if not (cfg.cca or extra.get("cca_dropped")) or not train_cfg.cca_pairs:  # a model made without CCA
        _copy(src, dst)
        return {}
    mf = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    m = SnippetModel(replace(cfg, cca=True))
    own = m.state_dict()
    had_cca = any(k.startswith("cca.") for k in state)  # statistics kept during training (cca_train)
    state = {**{k: v for k, v in own.items() if k.startswith("cca.") and v.is_floating_point()}, **state}
    _load_state(m, state, src)
    m = m.to(memory_format=mf).eval()
    idx = np.random.default_rng([train_cfg.seed, 99]).integers(0, len(data), size=train_cfg.cca_pairs)
    ts, ta = embed_pairs(m, data, np.sort(idx), raw=True, bf16=train_cfg.bf16,
                         channels_last=train_cfg.channels_last, progress=progress)
    vs, va = embed_pairs(m, val, val_idx, raw=True, bf16=train_cfg.bf16, channels_last=train_cfg.channels_last)

    def mrr(a, s) -> float:
        r = retrieval_metrics(F.normalize(a, dim=1) @ F.normalize(s, dim=1).T)
        return 0.5 * (r["a2s"]["MRR"] + r["s2a"]["MRR"])

    scores = {"none": mrr(va, vs)}
    if had_cca and cfg.cca_train:
        scores["running"] = mrr(m.cca.project_audio(va), m.cca.project_sheet(vs))
    m.cca.fit(ta, ts)
    for p in powers:
        m.cca.power = float(p)
        scores[f"{p:g}"] = mrr(m.cca.project_audio(va), m.cca.project_sheet(vs))
    best = max(scores, key=scores.get)
    names = {"none": "no CCA", "running": "running statistics"}
    log(f"validation MRR after fitting the CCA on {train_cfg.cca_pairs:,} training pairs: "
        + ", ".join(f"{names.get(k, f'power {k}')} {v:.3f}" for k, v in scores.items())
        + f" -> {names.get(best, f'CCA power {best}')}")
    if best == "running":
        _copy(src, dst)
        return scores
    extra.update(cca_pairs=train_cfg.cca_pairs, val_MRR_by_cca=scores, val_MRR=scores[best])
    if best == "none":
        extra.update(cca_dropped=True)
        save_checkpoint(without_cca(m), dst, extra)
    else:
        m.cca.power = float(best)
        m.config = replace(m.config, cca_power=float(best))
        save_checkpoint(m, dst, extra)
    return scores


class TrainError(ValueError):
    """A training run that cannot start; the message names the path and the reason."""


def train(corpus: str | Path, out: str | Path, model_cfg: ModelConfig | None = None,
          train_cfg: TrainConfig | None = None, init_audio: str | None = None,
          init_sheet: str | None = None, resume: bool = False, max_samples: int | None = None,
          progress: bool = True,
          log=None) -> dict:
    """Train a snippet model (or, with a ``PassageConfig``, a passage model) on ``corpus`` into
    run folder ``out``; returns the final summary.

    ``resume`` continues the run in ``out`` with its saved settings (``max_samples`` may raise its
    budget, also after it has finished by reaching the old one)."""
    from tqdm import tqdm

    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out)
    state_path = out / "state.pt"
    if resume:
        if not (out / "config.json").is_file():
            raise TrainError(f"{out}: nothing to resume (no config.json)")
        saved = json.loads((out / "config.json").read_text())
        model_cfg = config_from_dict(saved["model"])
        train_cfg = TrainConfig.from_dict(saved["train"])
        if max_samples is not None and max_samples != train_cfg.max_samples:
            train_cfg.max_samples = saved["train"]["max_samples"] = int(max_samples)
            _atomic_json(out / "config.json", saved)
        init_audio, init_sheet = saved.get("init_audio"), saved.get("init_sheet")
    else:
        if (out / "state.pt").exists():
            raise TrainError(f"{out}: a run already exists here (use --resume, or another --out)")
        model_cfg = model_cfg or ModelConfig()
        train_cfg = train_cfg or TrainConfig()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    if not 0.0 <= train_cfg.augment <= 10.0:
        raise TrainError(f"--augment {train_cfg.augment}: a factor on the augmentation "
                         "probabilities, 0 (off) to 10")
    if not 0.0 <= train_cfg.variety <= 10.0:
        raise TrainError(f"--variety {train_cfg.variety}: a factor on the real-world variety "
                         "probabilities, 0 (off) to 10")
    try:
        from .variety import VarietyConfig

        VarietyConfig.build(train_cfg.variety, train_cfg.variety_settings)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"--variety-set: {exc}") from None

    make = _passage_task if getattr(model_cfg, "kind", None) == "passage" else _snippet_task
    task = make(corpus, model_cfg, train_cfg, init_audio, init_sheet, log, progress)
    model = task.model
    mf = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=train_cfg.lr,
                           weight_decay=train_cfg.weight_decay)

    st = {"step": 0, "samples": 0, "epoch": 0, "lr": train_cfg.lr, "best_mrr": -1.0, "best_epoch": 0,
          "bad_epochs": 0, "refinements": 0, "wall_s": 0.0, "done": False}
    if resume and state_path.is_file():
        ck = torch.load(state_path, map_location="cpu", weights_only=False)
        _load_state(model, ck["model"], state_path)
        opt.load_state_dict(ck["optimizer"])
        st.update(ck["schedule"])
        if st["done"] and st.get("stopped_by") == "budget" and (
                not train_cfg.max_samples or st["samples"] < train_cfg.max_samples):
            st["done"] = False  # the budget was raised: go on
        log(f"resumed {out} at epoch {st['epoch']}, {st['samples']:,} samples")
    else:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_json(out / "config.json", {"model": model_cfg.to_dict(), "train": asdict(train_cfg),
                                           "corpus": str(Path(corpus).resolve()),
                                           "init_audio": init_audio, "init_sheet": init_sheet})
    for g in opt.param_groups:
        g["lr"] = st["lr"]

    log_path = out / "log.csv"
    columns = ["epoch", "samples", "lr", "loss", "val_loss", "a2s_MRR", "s2a_MRR", "val_MRR",
               "pairs_per_s", "wall_s", "skipped_steps"]
    if not log_path.exists():
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(columns)

    def save_state() -> None:
        tmp = state_path.with_name("state.pt.tmp")
        torch.save({"model": {k: v for k, v in model.state_dict().items() if v.is_floating_point()},
                    "optimizer": opt.state_dict(), "schedule": st}, tmp)
        tmp.replace(state_path)

    meta = lambda: {"samples": st["samples"], "epoch": st["epoch"], "val_MRR": st["best_mrr"]}  # noqa: E731
    steps_per_epoch = math.ceil(train_cfg.epoch_samples / train_cfg.batch)
    while not st["done"]:
        model.train()
        t0 = time.perf_counter()
        losses = []
        bar = tqdm(range(steps_per_epoch), disable=not progress, leave=False,
                   desc=f"epoch {st['epoch'] + 1}", unit="step")
        for _ in bar:
            losses.append(task.step(opt, task.sample(st["step"], train_cfg.batch)))
            st["step"] += 1
            st["samples"] += train_cfg.batch
            bar.set_postfix(loss=f"{np.nanmean(losses[-20:]):.4f}")
        dt = time.perf_counter() - t0
        skipped = int(np.sum(~np.isfinite(losses)))
        losses = [x for x in losses if np.isfinite(x)] or [float("nan")]
        st["epoch"] += 1
        v = task.validate()
        st["wall_s"] += time.perf_counter() - t0
        mrr = 0.5 * (v["a2s"] + v["s2a"])
        improved = mrr > st["best_mrr"]
        if improved:
            st.update(best_mrr=mrr, best_epoch=st["epoch"], bad_epochs=0)
            save_checkpoint(model, out / "train_best.safetensors", meta())
        else:
            st["bad_epochs"] += 1
        row = [st["epoch"], st["samples"], f"{st['lr']:.3g}", f"{np.mean(losses):.5f}", f"{v['loss']:.5f}",
               f"{v['a2s']:.4f}", f"{v['s2a']:.4f}", f"{mrr:.4f}",
               f"{steps_per_epoch * train_cfg.batch / dt:.1f}", f"{st['wall_s']:.0f}", skipped]
        with log_path.open("a", newline="") as f:
            csv.writer(f).writerow(row)
        log(f"epoch {st['epoch']:4d}  samples {st['samples']:>9,}  loss {np.mean(losses):.4f}  "
            f"val MRR a2s {v['a2s']:.3f} s2a {v['s2a']:.3f}{' *' if improved else ''}  "
            f"lr {st['lr']:.2g}  {steps_per_epoch * train_cfg.batch / dt:.0f} pairs/s"
            + (f"  ({skipped} non-finite steps skipped)" if skipped else ""))
        if st["bad_epochs"] >= train_cfg.patience:  # refine from the best weights at half the rate
            if st["refinements"] >= train_cfg.refinements:
                st.update(done=True, stopped_by="early stopping")
            else:
                st["refinements"] += 1
                st["lr"] /= 2
                st["bad_epochs"] = 0
                _, best, _ = read_checkpoint(out / "train_best.safetensors")
                _load_state(model, best, out / "train_best.safetensors")
                for g in opt.param_groups:
                    g["lr"] = st["lr"]
                log(f"no gain for {train_cfg.patience} epochs: refinement {st['refinements']}, lr {st['lr']:.2g}")
        if train_cfg.max_samples and st["samples"] >= train_cfg.max_samples and not st["done"]:
            st.update(done=True, stopped_by="budget")
        save_checkpoint(model, out / "last.safetensors", meta())
        save_state()
        if train_cfg.snapshot_every and st["samples"] % train_cfg.snapshot_every == 0:
            task.finalise(out / "train_best.safetensors", out / f"best@{st['samples']}.safetensors")

    task.finalise(out / "train_best.safetensors", out / "best.safetensors")
    summary = {"run": str(out), "epochs": st["epoch"], "samples": st["samples"],
               "best_epoch": st["best_epoch"], "val_MRR": st["best_mrr"], "wall_s": round(st["wall_s"], 1),
               "refinements": st["refinements"], "stopped_by": st.get("stopped_by")}
    _atomic_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# What the loop trains: a snippet model on snippet pairs, or a passage model on passage pairs


@dataclass
class _Task:
    model: torch.nn.Module  # in the training memory format
    sample: object  # (step, batch size) -> batch
    step: object  # (optimizer, batch) -> loss
    validate: object  # () -> {"a2s": MRR, "s2a": MRR, "loss": validation loss}
    finalise: object  # (train_best checkpoint, best checkpoint) -> None


def _snippet_task(corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, init_audio, init_sheet,
                  log, progress) -> _Task:
    from .evaluate import retrieval_metrics

    data = SnippetPairs(corpus, "train", context=model_cfg.context)
    if model_cfg.cca and train_cfg.batch <= model_cfg.embed_dim:
        raise TrainError(f"batch {train_cfg.batch}: the CCA layer needs more pairs per batch than "
                         f"embedding dimensions ({model_cfg.embed_dim})")
    val = SnippetPairs(corpus, train_cfg.val_split, context=model_cfg.context)
    if len(data) == 0 or len(val) == 0:
        raise TrainError(f"{corpus}: the corpus needs pairs in its train and {train_cfg.val_split} splits "
                         f"(train {len(data)}, {train_cfg.val_split} {len(val)})")
    val_idx = evaluation_pairs(val, train_cfg.val_pairs, seed=train_cfg.seed)
    model = SnippetModel(model_cfg)
    if init_audio:
        load_encoder(model, init_audio, "audio")
    if init_sheet:
        load_encoder(model, init_sheet, "sheet")
    mf = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    plain = model_cfg.cca and not model_cfg.cca_train  # CCA fitted after training: rank plain embeddings

    def validate() -> dict:
        es, ea = embed_pairs(model, val, val_idx, raw=plain, bf16=train_cfg.bf16,
                             channels_last=train_cfg.channels_last)
        if plain:
            es, ea = F.normalize(es, dim=1), F.normalize(ea, dim=1)
        m = retrieval_metrics(ea @ es.T)
        vl = float(ranking_loss(es[:train_cfg.batch], ea[:train_cfg.batch], model_cfg.margin))
        return {"a2s": m["a2s"]["MRR"], "s2a": m["s2a"]["MRR"], "loss": vl}

    def step(opt, batch) -> float:
        return train_step(model, opt, *batch, train_cfg.channels_last, train_cfg.bf16)

    def finalise(src: Path, dst: Path) -> None:
        fit_cca(src, dst, data, val, val_idx, train_cfg, log=log, progress=progress)

    return _Task(model, PairSampler(data, train_cfg), step, validate, finalise)


PASSAGE_DEFAULTS = dict(lr=1e-3, batch=32, epoch_samples=2000, patience=10, val_pairs=500, cca_pairs=0)
"""Training settings of a passage model where not given (``audiosheet train --config passage_gru``):
passages cost about 5 snippet pairs each, so epochs and batches are smaller."""


class PassageSampler:
    """Reproducible training batches of passages (sheet windows, lengths, audio windows, lengths);
    the sheet band is shifted vertically by up to ``system_shift`` px (batch ``k`` depends only on
    (seed, k), so a resumed run continues the same sequence). With ``cfg.variety`` > 0 each whole
    passage gets the real-world variety of ``audiosheet.variety`` before it is cut into windows:
    its sheet band a scan, photo or low resolution, its spectrogram the player, room, noise, codec
    and band limits (the timing warp keeps both ends and the centre in place)."""

    def __init__(self, data, cfg: TrainConfig):
        from .variety import VarietyConfig

        self.data, self.cfg = data, cfg
        self.variety = VarietyConfig.build(cfg.variety, cfg.variety_settings) if cfg.variety > 0 else None

    def _vary(self, step: int, bands: list, specs: list) -> tuple[list, list]:
        """Variety on float32 sheet bands (80, W) (ink = 1) and spectrograms (92, T), one at a
        time (their widths differ); seeded by (seed, step)."""
        from .variety import audio_variety, sheet_variety

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
        from .passages import collate, windows

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


@torch.no_grad()
def embed_passages(model, data, indices, batch: int = 16, bf16: bool = True, progress: bool = False):
    """Passage embeddings (sheet (N, d), audio (N, d)) of ``data`` rows ``indices``."""
    from tqdm import tqdm

    was = model.training
    model.eval().set_bf16(bf16)
    out_s, out_a = [], []
    for i in tqdm(range(0, len(indices), batch), disable=not progress, desc="embed", unit="batch"):
        s, ns, a, ms = data.batch(indices[i:i + batch], torch=True)
        es, ea = model(s, ns, a, ms)
        out_s.append(es.float())
        out_a.append(ea.float())
    model.train(was)
    d = model.config.embed_dim
    return (torch.cat(out_s) if out_s else torch.zeros(0, d)), (torch.cat(out_a) if out_a else torch.zeros(0, d))


def _passage_task(corpus, model_cfg, train_cfg: TrainConfig, init_audio, init_sheet, log,
                  progress) -> _Task:
    from .evaluate import retrieval_metrics
    from .passage_model import PassageModel, init_from_snippet_model
    from .passages import PassagePairs, passage_pool

    cache = Path(corpus) / "passage_columns.json"
    kw = dict(lengths=model_cfg.lengths, cache=cache, audio_window=model_cfg.audio_window,
              audio_hop=model_cfg.audio_hop, sheet_window=model_cfg.sheet_window,
              sheet_hop=model_cfg.sheet_hop)
    data = PassagePairs(corpus, "train", **kw)
    val = PassagePairs(corpus, train_cfg.val_split, **kw)
    if len(data) == 0 or len(val) < 2:
        raise TrainError(f"{corpus}: the corpus needs passages in its train and {train_cfg.val_split} "
                         f"splits (train {len(data)}, {train_cfg.val_split} {len(val)})")
    if not 0.0 <= train_cfg.boundary_jitter < 0.5:
        raise TrainError(f"--boundary-jitter {train_cfg.boundary_jitter}: a fraction of the passage "
                         "length, 0 to below 0.5")
    if train_cfg.batch < 2:
        raise TrainError(f"batch {train_cfg.batch}: the ranking loss needs at least 2 passages per batch")
    val_idx = passage_pool(val, train_cfg.val_pairs, seed=train_cfg.seed)
    model = PassageModel(model_cfg)
    for path, modality in ((init_audio, "audio"), (init_sheet, "sheet")):
        if path:
            taken = init_from_snippet_model(model, path, modality)
            log(f"{modality} CNN initialised from {path} ({len(taken)} tensors)")
    model.set_bf16(train_cfg.bf16)
    frozen = [mod for enc in (model.audio_enc, model.sheet_enc) for mod in (enc.cnn.features, enc.cnn.project)]
    if train_cfg.freeze_cnn:
        if not (init_audio and init_sheet):
            raise TrainError("--freeze-cnn keeps the per-snippet CNNs as initialised: give --init-audio "
                             "and --init-sheet")
        for mod in frozen:
            mod.requires_grad_(False)

    def step(opt, batch) -> float:
        model.train()
        if train_cfg.freeze_cnn:
            for mod in frozen:
                mod.eval()  # batch-norm statistics stay those of the initialisation
        es, ea = model(*batch)
        loss = ranking_loss(es, ea, model_cfg.margin, model_cfg.symmetric)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            return float("nan")
        opt.step()
        return float(loss.detach())

    def validate() -> dict:
        es, ea = embed_passages(model, val, val_idx, bf16=train_cfg.bf16)
        m = retrieval_metrics(ea @ es.T)
        vl = float(ranking_loss(es[:train_cfg.batch], ea[:train_cfg.batch], model_cfg.margin,
                                model_cfg.symmetric))
        return {"a2s": m["a2s"]["MRR"], "s2a": m["s2a"]["MRR"], "loss": vl}

    return _Task(model, PassageSampler(data, train_cfg), step, validate, lambda src, dst: _copy(src, dst))
