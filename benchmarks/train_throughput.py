"""Training and inference throughput of the snippet model on this machine's CPU.

Measures, in one run and on the same random batches:
  * plain: fp32, NCHW (the naive PyTorch step);
  * project: the step `audiosheet train` uses (channels-last + bf16 autocast);
  * project + loading: the same with batches drawn and augmented from a corpus (``--corpus``),
    without and with the real-world variety (``--variety P``, default 1; issue 16 asks the step
    with it to stay at >= 0.8x the step without);
  * inference: audio and sheet snippets embedded per second (audiosheet.models.embed.Embedder, and the
    eager model for comparison).

    python benchmarks/train_throughput.py --config bl2 [--corpus DIR] [--variety 1] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from audiosheet.models.checkpoint import load_config
from audiosheet.models.snippet import SnippetModel, autocast
from audiosheet.training.config import TrainConfig
from audiosheet.training.samplers import PairSampler
from audiosheet.training.train import train_step


def rate(fn, steps: int, warmup: int, batch: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bl2")
    ap.add_argument("--corpus", default=None, help="corpus folder for the step with real loading")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--variety", type=float, default=1.0, help="variety factor of the second loading run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_config(a.config)
    torch.manual_seed(0)
    h, w = cfg.sheet_shape
    sheets = torch.rand(a.batch, 1, h, w)
    audios = torch.rand(a.batch, 1, cfg.audio_bins, cfg.context)
    res = {"config": cfg.name, "batch": a.batch, "threads": torch.get_num_threads(),
           "torch": torch.__version__}

    def make(channels_last: bool):
        m = SnippetModel(cfg).train()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m, torch.optim.Adam(m.parameters(), lr=2e-3)

    m, opt = make(False)
    res["plain_fp32_nchw_pairs_s"] = rate(lambda: train_step(m, opt, sheets, audios, False, False),
                                          a.steps, a.warmup, a.batch)
    m, opt = make(True)
    res["project_pairs_s"] = rate(lambda: train_step(m, opt, sheets, audios, True, True),
                                  a.steps, a.warmup, a.batch)
    res["speedup"] = res["project_pairs_s"] / res["plain_fp32_nchw_pairs_s"]
    if a.corpus:
        from audiosheet.training.pairs import SnippetPairs

        data = SnippetPairs(a.corpus, "train", context=cfg.context)
        k = iter(range(10**9))
        for tag, tc in (("", TrainConfig()), ("variety_", TrainConfig(variety=a.variety))):
            sampler = PairSampler(data, tc)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                sampler(next(k), a.batch)
            res[f"{tag}loading_pairs_s"] = a.steps * a.batch / (time.perf_counter() - t0)
            res[f"project_with_{tag}loading_pairs_s"] = rate(
                lambda: train_step(m, opt, *sampler(next(k), a.batch), True, True), a.steps, a.warmup, a.batch)
        res["variety_step_ratio"] = res["project_with_variety_loading_pairs_s"] / res["project_with_loading_pairs_s"]

    from audiosheet.models.embed import Embedder

    n = 1000
    s_in = torch.rand(n, 1, h, w)
    a_in = torch.rand(n, 1, cfg.audio_bins, cfg.context)
    m.eval()
    with torch.no_grad(), autocast(True):  # the eager model, for comparison
        res["inference_eager_audio_per_s"] = rate(lambda: m.embed_audio(
            a_in[:100].contiguous(memory_format=torch.channels_last)), 10, 1, 100)
        res["inference_eager_sheet_per_s"] = rate(lambda: m.embed_sheet(
            s_in[:100].contiguous(memory_format=torch.channels_last)), 10, 1, 100)
    emb = Embedder(m)
    res["inference_audio_per_s"] = rate(lambda: emb.audio(a_in), 2, 1, n)
    res["inference_sheet_per_s"] = rate(lambda: emb.sheet(s_in), 2, 1, n)
    if a.json:
        print(json.dumps(res))
    else:
        for k_, v in res.items():
            print(f"{k_:32s} {v:.1f}" if isinstance(v, float) else f"{k_:32s} {v}")


if __name__ == "__main__":
    main()
