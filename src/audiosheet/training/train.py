"""Training of the snippet model (and of passage models): a thin loop over the batches of
``samplers`` and a model, in a run folder (``run``); the CCA is fitted after training (``cca``).

Reference recipe (Dorfer et al. 2018): Adam 2e-3 with L2 1e-5, batches of 100 pairs, "epochs" of
10,000 samples, validation MRR after each epoch, early stopping with patience, then refinement at half
the learning rate (up to 5 times) from the best weights. Augmentation: system shift, sheet scale and
onset shift here; several SoundFonts and tempi come from the corpus's performances.

A run folder holds ``config.json`` (model and training settings), ``last.safetensors`` (the latest
weights), ``train_best.safetensors`` (the best weights by validation MRR), ``best.safetensors`` (those
with the CCA statistics fitted on many training pairs: the run's model), ``state.pt`` (optimizer and
schedule, for ``--resume``), ``log.csv`` (one row per epoch) and ``summary.json``. Every file but
the log is replaced atomically.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audiosheet.corpus.reader import Corpus
from audiosheet.files import copy_file
from audiosheet.models.checkpoint import (
    config_from_dict,
    is_passage,
    load_encoder,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from audiosheet.models.config import ModelConfig
from audiosheet.models.losses import ranking_loss
from audiosheet.models.snippet import SnippetModel, autocast
from audiosheet.training.cca import embed_pairs, fit_cca
from audiosheet.training.config import TrainConfig, TrainError
from audiosheet.training.pairs import SnippetPairs
from audiosheet.training.run import RunFolder
from audiosheet.training.samplers import PairSampler, PassageSampler, evaluation_pairs


def train_step(model: SnippetModel, opt: torch.optim.Optimizer, sheets: torch.Tensor, audios: torch.Tensor,
               channels_last: bool = True, bf16: bool = True) -> float:
    """One optimisation step on a batch of pairs; returns the loss. The model must already be in
    the matching memory format (``model.to(memory_format=torch.channels_last)``)."""
    mf = torch.channels_last if channels_last else torch.contiguous_format
    sheets, audios = sheets.contiguous(memory_format=mf), audios.contiguous(memory_format=mf)
    with autocast(bf16):
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
    run = RunFolder(out, TrainError)
    if resume:
        saved = run.saved_config()
        model_cfg = config_from_dict(saved["model"])
        train_cfg = TrainConfig.from_dict(saved["train"])
        if max_samples is not None and max_samples != train_cfg.max_samples:
            train_cfg.max_samples = saved["train"]["max_samples"] = int(max_samples)
            run.write_config(saved)
        init_audio, init_sheet = saved.get("init_audio"), saved.get("init_sheet")
    else:
        run.check_new()
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
        from audiosheet.training.variety import VarietyConfig

        VarietyConfig.build(train_cfg.variety, train_cfg.variety_settings)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"--variety-set: {exc}") from None

    make = _passage_task if is_passage(model_cfg) else _snippet_task
    task = make(corpus, model_cfg, train_cfg, init_audio, init_sheet, log, progress)
    model = task.model
    mf = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=train_cfg.lr,
                           weight_decay=train_cfg.weight_decay)

    st = {"step": 0, "samples": 0, "epoch": 0, "lr": train_cfg.lr, "best_mrr": -1.0, "best_epoch": 0,
          "bad_epochs": 0, "refinements": 0, "wall_s": 0.0, "done": False}
    if resume and run.load_state(model, opt, st):
        if st["done"] and st.get("stopped_by") == "budget" and (
                not train_cfg.max_samples or st["samples"] < train_cfg.max_samples):
            st["done"] = False  # the budget was raised: go on
        log(f"resumed {out} at epoch {st['epoch']}, {st['samples']:,} samples")
    else:
        run.write_config({"model": model_cfg.to_dict(), "train": asdict(train_cfg),
                          "corpus": str(Path(corpus).resolve()),
                          "init_audio": init_audio, "init_sheet": init_sheet})
    for g in opt.param_groups:
        g["lr"] = st["lr"]

    run.start_log(["epoch", "samples", "lr", "loss", "val_loss", "a2s_MRR", "s2a_MRR", "val_MRR",
                   "pairs_per_s", "wall_s", "skipped_steps"])
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
        run.log_row(row)
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
                load_state(model, best, out / "train_best.safetensors")
                for g in opt.param_groups:
                    g["lr"] = st["lr"]
                log(f"no gain for {train_cfg.patience} epochs: refinement {st['refinements']}, lr {st['lr']:.2g}")
        if train_cfg.max_samples and st["samples"] >= train_cfg.max_samples and not st["done"]:
            st.update(done=True, stopped_by="budget")
        save_checkpoint(model, out / "last.safetensors", meta())
        run.save_state(model, opt, st)
        if train_cfg.snapshot_every and st["samples"] % train_cfg.snapshot_every == 0:
            task.finalise(out / "train_best.safetensors", out / f"best@{st['samples']}.safetensors")

    task.finalise(out / "train_best.safetensors", out / "best.safetensors")
    summary = {"run": str(out), "epochs": st["epoch"], "samples": st["samples"],
               "best_epoch": st["best_epoch"], "val_MRR": st["best_mrr"], "wall_s": round(st["wall_s"], 1),
               "refinements": st["refinements"], "stopped_by": st.get("stopped_by")}
    run.write_summary(summary)
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
    from audiosheet.metrics import retrieval_metrics

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
    model.front_end = data.corpus.front_end  # saved with every checkpoint; encoders must share it
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
    from audiosheet.metrics import retrieval_metrics
    from audiosheet.models.checkpoint import init_from_snippet_model
    from audiosheet.models.passage import PassageModel
    from audiosheet.training.passages import PassagePairs, passage_pool

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
    model.front_end = Corpus(corpus).front_end  # saved with every checkpoint
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

    return _Task(model, PassageSampler(data, train_cfg), step, validate, copy_file)
