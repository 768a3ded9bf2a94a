"""Self-supervised contrastive pre-training (SimCLR) of one snippet encoder on unlabelled files.

Any folders of recordings or score pages are read with the query front ends (``audio.load_audio``,
``audio.normalise_level`` and the training spectrogram; ``strip.read_systems``: staff detection,
deskew, unrolled strip), so no alignment is needed. Each step draws a batch of snippets (audio:
windows of ``window`` × context frames; sheet: strip windows with ink), makes two augmented views
of each (``augment``), passes both through the encoder of the model config and a projection head,
and minimises NT-Xent (reference: temperature 0.5 sheet / 0.6 audio, head 512, batch 128 audio /
256 sheet, Adam 1e-3 audio / 5e-4 sheet — seeds 001/002, ``shared/REFERENCE.md``).

A run folder holds ``config.json``, ``cache/`` (the ingested files: one ``.npy`` per file, so a
resumed run does not read them again), ``last.safetensors`` (a full snippet-model checkpoint whose
pre-trained pathway is what ``audiosheet train --init-audio/--init-sheet`` loads), ``state.pt``
(encoder, head, optimizer, step, for ``--resume``), ``log.csv`` and ``summary.json``. Batch ``k``
depends only on (seed, k), so a resumed run continues the same sequence. Validation: NT-Xent and
view-matching accuracy (is a view's nearest neighbour its partner?) on fixed batches drawn from
held-out files (every 20th file).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from audiosheet.files import AUDIO_SUFFIXES, SHEET_SUFFIXES, expand, file_kind, save_npy
from audiosheet.frontend.windows import pad_window
from audiosheet.geometry import PRETRAIN_AUDIO_HOP, PRETRAIN_SHEET_HOP, SHEET_CROP_W, SHEET_H, SHEET_W, STRIP_HEIGHT
from audiosheet.models.checkpoint import load_config, save_checkpoint
from audiosheet.models.config import ModelConfig
from audiosheet.models.losses import ProjectionHead, nt_xent
from audiosheet.models.snippet import SnippetModel, autocast
from audiosheet.training.augment import AudioAugConfig, SheetAugConfig, audio_views, augment_sheet
from audiosheet.training.run import RunFolder

REFERENCE = {  # modality → (batch, learning rate, temperature)
    "audio": (128, 1e-3, 0.6),
    "sheet": (256, 5e-4, 0.5),
}
VAL_EVERY = 20  # every 20th file (by name) is held out for validation


class PretrainError(ValueError):
    """A pre-training run that cannot start; the message names the path and the reason."""


@dataclass
class PretrainConfig:
    modality: str = "audio"  # "audio" or "sheet": the encoder to pre-train
    model: str = "bl2_att84"  # model config (name or JSON) whose encoder is pre-trained
    batch: int = 0  # snippets per step (two views each); 0: reference (128 audio, 256 sheet)
    lr: float = 0.0  # Adam learning rate; 0: reference (1e-3 audio, 5e-4 sheet)
    temperature: float = 0.0  # NT-Xent temperature; 0: reference (0.6 audio, 0.5 sheet)
    head_hidden: int = 512  # projection head hidden width
    head_out: int = 32  # projection head output
    max_steps: int = 1000  # stop after this many steps
    max_minutes: float = 0.0  # also stop after this much training time (0: no limit)
    checkpoint_every: int = 25  # steps between checkpoints (and validations)
    val_batches: int = 2  # fixed validation batches
    window: float = 2.0  # audio: long window, in contexts, from which the two views are cut
    min_ink: float = 0.03  # sheet: minimum mean ink of a snippet window
    seed: int = 0
    threads: int = 0  # torch threads (0: all cores)
    channels_last: bool = True
    bf16: bool = True
    augment: dict = field(default_factory=dict)  # overrides of SheetAugConfig / AudioAugConfig
    init: str = ""  # start the encoder from this checkpoint's pathway (a trained model: continued,
    #   domain-adaptive pre-training on new material) instead of from random weights

    def resolved(self) -> "PretrainConfig":
        if self.modality not in REFERENCE:
            raise PretrainError(f"modality must be 'audio' or 'sheet', not {self.modality!r}")
        b, lr, t = REFERENCE[self.modality]
        return PretrainConfig(**{**asdict(self), "batch": self.batch or b, "lr": self.lr or lr,
                                 "temperature": self.temperature or t})

    def aug(self):
        cls = AudioAugConfig if self.modality == "audio" else SheetAugConfig
        names = {f.name for f in fields(cls)}
        unknown = set(self.augment) - names
        if unknown:
            raise PretrainError(f"unknown {self.modality} augmentation settings: {', '.join(sorted(unknown))}")
        return cls.from_dict({**cls().to_dict(), **self.augment})

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise PretrainError(f"unknown pre-training config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Unlabelled data: files → cached arrays → candidate snippet positions

def list_files(paths, modality: str) -> list[Path]:
    """Files of ``modality`` ("sheet" or "audio", by ``files.file_kind``: the suffixes ``index add``
    accepts) under ``paths`` (files or folders, recursive, hidden ones passed over), sorted; a
    missing path, or a file named on its own of another kind, is a PretrainError."""
    files, bad = expand(paths)
    if bad:
        raise PretrainError(bad[0][1])
    named = {Path(p) for p in paths if Path(p).is_file()}
    for f in named:
        if file_kind(f) != modality:
            suffixes = SHEET_SUFFIXES if modality == "sheet" else AUDIO_SUFFIXES
            raise PretrainError(f"{f}: not a {modality} file ({', '.join(sorted(suffixes))})")
    return sorted({f for f in files if file_kind(f) == modality})


def _cache_name(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}\x1f{st.st_size}\x1f{st.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()[:20] + ".npy"


def _ingest(args) -> tuple[str, str | None, float]:
    """Read one file into the cache: sheet → uint8 strip (100, W); audio → float16 (T, 92)."""
    path, dest, modality = args
    t0 = time.time()
    dest = Path(dest)
    if dest.exists():
        return path, None, 0.0
    try:
        if modality == "audio":
            from audiosheet.frontend.audio import load_audio, normalise_level
            from audiosheet.frontend.spectrogram import spectrogram

            # at the level queries and indexed recordings are read at (audio.TARGET_DBFS)
            arr = spectrogram(normalise_level(load_audio(path))[0]).astype(np.float16)
        else:
            from audiosheet.frontend.pages import iter_pages
            from audiosheet.frontend.strip import read_systems

            arr = read_systems(iter_pages(path), path)[2].image
        save_npy(dest, arr)
        return path, None, time.time() - t0
    except Exception as exc:  # one bad file never stops the run
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return path, msg if msg.startswith(str(path)) else f"{path}: {msg}", time.time() - t0


class Unlabelled:
    """Unlabelled snippets of one modality from files, drawn reproducibly in batches."""

    def __init__(self, files: list[Path], modality: str, cache: Path, context: int, window: float = 2.0,
                 min_ink: float = 0.03, workers: int = 2, progress: bool = True, log=print):
        from audiosheet.corpus.jobs import run_jobs

        self.modality, self.context = modality, context
        self.length = int(round(window * context)) if modality == "audio" else SHEET_CROP_W
        cache.mkdir(parents=True, exist_ok=True)
        jobs = [(str(f), str(cache / _cache_name(f)), modality) for f in files]
        self.failed: dict[str, str] = {}
        for path, fail, _ in run_jobs(_ingest, jobs, workers, f"read {modality}", progress):
            if fail:
                self.failed[path] = fail
                log(f"skipped: {fail}")
        self.files, self.arrays, starts = [], [], []
        for path, dest, _ in jobs:
            if path in self.failed:
                continue
            a = np.load(dest, mmap_mode="r")
            pos = self._positions(np.asarray(a), min_ink)
            if len(pos):
                self.files.append(path)
                self.arrays.append(a)
                starts.append(pos)
        self.index = np.concatenate([np.stack([np.full(len(p), i), p], 1) for i, p in enumerate(starts)]) \
            if starts else np.zeros((0, 2), int)

    def _positions(self, a: np.ndarray, min_ink: float) -> np.ndarray:
        """Candidate positions: audio window starts that are mostly not silent; sheet centre columns
        whose snippet window has some ink."""
        if self.modality == "audio":
            n = len(a) - self.length
            if n < 0:
                return np.zeros(0, int)
            energy = a.astype(np.float32).sum(1)
            active = energy > 0.05 * max(float(np.percentile(energy, 95)), 1e-6)
            c = np.concatenate([[0], np.cumsum(active)])
            s = np.arange(0, n + 1, PRETRAIN_AUDIO_HOP)
            return s[(c[s + self.length] - c[s]) >= 0.5 * self.length]
        ink = (255.0 - a[(STRIP_HEIGHT - SHEET_H) // 2:(STRIP_HEIGHT + SHEET_H) // 2].astype(np.float32)) / 255.0
        col = np.concatenate([[0.0], np.cumsum(ink.mean(0))])
        w = a.shape[1]
        centres = np.arange(0, w, PRETRAIN_SHEET_HOP)
        lo, hi = np.clip(centres - SHEET_W // 2, 0, w), np.clip(centres + SHEET_W // 2, 0, w)
        return centres[(col[hi] - col[lo]) / SHEET_W >= min_ink]

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        """``n`` snippets: audio (n, 1, 92, length) float32; sheet (n, 1, 80, 100) float32, ink = 1."""
        rows = self.index[rng.integers(0, len(self.index), size=n)]
        if self.modality == "audio":
            out = np.stack([np.asarray(self.arrays[f][s:s + self.length], np.float32).T for f, s in rows])
            return torch.from_numpy(out)[:, None]
        crops = np.stack([pad_window(np.asarray(self.arrays[f]).T, c - SHEET_CROP_W // 2, SHEET_CROP_W, 255).T
                          for f, c in rows])
        x0, y0 = (SHEET_CROP_W - SHEET_W) // 2, (STRIP_HEIGHT - SHEET_H) // 2
        win = crops[:, y0:y0 + SHEET_H, x0:x0 + SHEET_W]
        return (1.0 - torch.from_numpy(np.ascontiguousarray(win)).float() / 255.0)[:, None]


# ---------------------------------------------------------------------------------------------
# The loop

def _views(data: Unlabelled, cfg: PretrainConfig, aug, step: int, val: bool = False):
    rng = np.random.default_rng([cfg.seed, int(val), step])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    x = data.batch(rng, cfg.batch)
    if cfg.modality == "audio":
        return audio_views(x, data.context, g, aug)
    return augment_sheet(x, aug, g), augment_sheet(x, aug, g)


class Encoder(torch.nn.Module):
    """One pathway of a snippet model (audio: attention + audio CNN; sheet: sheet CNN)."""

    def __init__(self, model: SnippetModel, modality: str):
        super().__init__()
        self.model, self.modality = model, modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model._audio_raw(x) if self.modality == "audio" else self.model.sheet_net(x)

    def params(self):
        if self.modality == "sheet":
            return list(self.model.sheet_net.parameters())
        return list(self.model.audio_net.parameters()) + \
            (list(self.model.attention.parameters()) if self.model.attention is not None else [])


def pretrain(data_paths, out: str | Path, cfg: PretrainConfig | None = None, resume: bool = False,
             max_steps: int | None = None, workers: int = 2, progress: bool = True, log=None) -> dict:
    """Pre-train one encoder on unlabelled files under ``data_paths`` into run folder ``out``."""
    from tqdm import tqdm

    log = log or (lambda msg: print(msg, flush=True))
    out = Path(out)
    run = RunFolder(out, PretrainError)
    if resume:
        saved = run.saved_config()
        cfg = PretrainConfig.from_dict(saved["pretrain"])
        data_paths = saved["data"]
        if max_steps is not None and max_steps != cfg.max_steps:
            cfg.max_steps = saved["pretrain"]["max_steps"] = int(max_steps)
            run.write_config(saved)
    else:
        run.check_new()
        cfg = (cfg or PretrainConfig()).resolved()
        if max_steps is not None:
            cfg.max_steps = int(max_steps)
    aug = cfg.aug()
    model_cfg: ModelConfig = load_config(cfg.model)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    files = list_files(data_paths, cfg.modality)
    if not files:
        raise PretrainError(f"{', '.join(map(str, data_paths))}: no {cfg.modality} files found")
    held = [f for i, f in enumerate(files) if len(files) >= 2 and i % VAL_EVERY == VAL_EVERY // 2]
    train_files = [f for f in files if f not in set(held)]
    if not resume:
        run.write_config({"pretrain": asdict(cfg), "model": model_cfg.to_dict(), "augment": aug.to_dict(),
                          "data": [str(Path(p).resolve()) for p in data_paths]})
    kw = dict(context=model_cfg.context, window=cfg.window, min_ink=cfg.min_ink, workers=workers,
              progress=progress, log=log)
    data = Unlabelled(train_files, cfg.modality, out / "cache", **kw)
    val = Unlabelled(held, cfg.modality, out / "cache", **kw) if held else data
    if len(data) == 0:
        raise PretrainError(f"{', '.join(map(str, data_paths))}: no usable {cfg.modality} snippets "
                            f"in {len(files)} files ({len(data.failed)} unreadable)")
    log(f"{cfg.modality}: {len(data.files)} files ({len(data):,} snippet positions) for training, "
        f"{len(val.files) if val is not data else 0} held out, {len(data.failed) + len(val.failed if val is not data else {})} unreadable")

    model = SnippetModel(model_cfg)
    if cfg.init and not resume:
        from audiosheet.models.checkpoint import load_encoder, resolve_model

        try:
            load_encoder(model, resolve_model(cfg.init), cfg.modality)
        except (ValueError, OSError) as exc:
            raise PretrainError(f"--init {cfg.init}: {exc}") from None
        log(f"{cfg.modality} encoder initialised from {cfg.init}")
    enc = Encoder(model, cfg.modality)
    head = ProjectionHead(model_cfg.embed_dim, cfg.head_hidden, cfg.head_out)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=mf)
    params = enc.params() + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    st = {"step": 0, "wall_s": 0.0, "done": False, "best_val": float("inf")}
    if resume and run.load_state(model, opt, st, head=head):
        if st["done"] and st["step"] < cfg.max_steps:
            st["done"] = False
        log(f"resumed {out} at step {st['step']}")
    run.start_log(["step", "views", "loss", "val_loss", "val_acc", "views_per_s", "wall_s"])

    def step_loss(v1, v2):
        v1, v2 = v1.contiguous(memory_format=mf), v2.contiguous(memory_format=mf)
        with autocast(cfg.bf16):
            e = enc(torch.cat([v1, v2]))
        z = head(e.float())
        return nt_xent(z[:len(v1)], z[len(v1):], cfg.temperature), z

    @torch.no_grad()
    def validate() -> tuple[float, float]:
        model.eval(), head.eval()
        losses, accs = [], []
        for k in range(cfg.val_batches):
            v1, v2 = _views(val, cfg, aug, k, val=True)
            loss, z = step_loss(v1, v2)
            n = len(v1)
            sim = z @ z.T
            sim.fill_diagonal_(-2.0)
            partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
            accs.append(float((sim.argmax(1) == partner).float().mean()))
            losses.append(float(loss))
        model.train(), head.train()
        return float(np.mean(losses)), float(np.mean(accs))

    def save() -> None:
        meta = {"pretrain": {"modality": cfg.modality, "steps": st["step"],
                             "views_seen": 2 * st["step"] * cfg.batch, "val_loss": st.get("val_loss"),
                             "val_acc": st.get("val_acc"), "files": len(data.files),
                             "data": [str(p) for p in data_paths]}}
        save_checkpoint(model, out / "last.safetensors", meta)
        run.save_state(model, opt, st, head=head)

    if not st["step"]:
        st["val_loss"], st["val_acc"] = validate()
        log(f"step 0  val NT-Xent {st['val_loss']:.3f}  view accuracy {st['val_acc']:.3f}")
        run.log_row([0, 0, "", f"{st['val_loss']:.4f}", f"{st['val_acc']:.4f}", "", 0])
    model.train(), head.train()
    bar = tqdm(total=cfg.max_steps, initial=st["step"], disable=not progress, desc=f"pretrain {cfg.modality}",
               unit="step")
    losses, t_mark, steps_mark = [], time.perf_counter(), st["step"]
    while not st["done"] and st["step"] < cfg.max_steps:
        v1, v2 = _views(data, cfg, aug, st["step"])
        loss, _ = step_loss(v1, v2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        st["step"] += 1
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        now = time.perf_counter()
        out_of_time = cfg.max_minutes and st["wall_s"] + (now - t_mark) >= 60 * cfg.max_minutes
        if st["step"] % cfg.checkpoint_every == 0 or st["step"] >= cfg.max_steps or out_of_time:
            dt = now - t_mark
            st["wall_s"] += dt
            st["val_loss"], st["val_acc"] = validate()
            rate = 2 * cfg.batch * (st["step"] - steps_mark) / max(dt, 1e-9)
            run.log_row([st["step"], 2 * st["step"] * cfg.batch, f"{np.mean(losses):.4f}",
                         f"{st['val_loss']:.4f}", f"{st['val_acc']:.4f}", f"{rate:.1f}", f"{st['wall_s']:.0f}"])
            log(f"step {st['step']:5d}  loss {np.mean(losses):.3f}  val NT-Xent {st['val_loss']:.3f}  "
                f"view accuracy {st['val_acc']:.3f}  {rate:.0f} views/s")
            if st["step"] >= cfg.max_steps or out_of_time:
                st["done"] = True
                st["stopped_by"] = "steps" if st["step"] >= cfg.max_steps else "time"
            save()
            losses, t_mark, steps_mark = [], time.perf_counter(), st["step"]
    bar.close()
    summary = {"run": str(out), "modality": cfg.modality, "steps": st["step"],
               "views_seen": 2 * st["step"] * cfg.batch, "val_loss": st.get("val_loss"),
               "val_acc": st.get("val_acc"), "wall_s": round(st["wall_s"], 1),
               "files": len(data.files), "held_out_files": len(val.files) if val is not data else 0,
               "unreadable": sorted(set(data.failed) | set(val.failed)),
               "checkpoint": str(out / "last.safetensors")}
    run.write_summary(summary)
    return summary
