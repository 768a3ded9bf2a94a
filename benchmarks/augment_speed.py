"""Is contrastive pre-training bound by augmentation or by the network?

Prints, for 1 and 2 threads, augmentation throughput (views/s; default probabilities) next to the
forward + backward throughput of the matching encoder pathway of ``bl2_att84`` (channels-last, bf16
autocast, projection head + NT-Xent on two views, as in pre-training):
  * sheet: batch 100 of (1, 80, 100) snippets;
  * audio: batch 100 of 168-frame windows → two 84-frame views (audio_views); network = attention + audio_net.

    python benchmarks/augment_speed.py [--steps 5] [--batch 100]
"""
from __future__ import annotations

import argparse
import time

import torch

from audiosheet.models.checkpoint import load_config
from audiosheet.models.losses import ProjectionHead, nt_xent
from audiosheet.models.snippet import SnippetModel
from audiosheet.training.augment import AudioAugConfig, SheetAugConfig, audio_views, augment_sheet, views


def rate(fn, steps: int, warmup: int, n: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    cfg = load_config("bl2_att84")
    model = SnippetModel(cfg).train().to(memory_format=torch.channels_last)
    head = ProjectionHead(cfg.embed_dim).train()
    b, g = a.batch, torch.Generator().manual_seed(0)
    sheets = (torch.rand(b, 1, *cfg.sheet_shape, generator=g) > 0.85).float()
    long = torch.rand(b, 1, cfg.audio_bins, 2 * cfg.context, generator=g) * 3
    scfg, acfg = SheetAugConfig(), AudioAugConfig()

    def audio_net(x):
        return model.audio_net(model.attention(x))

    def step(net, v1, v2, temperature):
        mf = torch.channels_last
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z1, z2 = net(v1.contiguous(memory_format=mf)), net(v2.contiguous(memory_format=mf))
        loss = nt_xent(head(z1), head(z2), temperature)
        model.zero_grad(set_to_none=True)
        loss.backward()

    sv1, sv2 = views(sheets, augment_sheet, scfg, g)
    av1, av2 = audio_views(long, cfg.context, g, acfg)
    print(f"batch {b}, two views per snippet, rates in views/s (torch {torch.__version__})")
    print(f"{'threads':>7} {'sheet aug':>10} {'sheet net':>10} {'audio aug':>10} {'audio net':>10}")
    for t in (int(s) for s in a.threads.split(",")):
        torch.set_num_threads(t)
        r = [rate(lambda: views(sheets, augment_sheet, scfg, g), a.steps, a.warmup, 2 * b),
             rate(lambda: step(model.sheet_net, sv1, sv2, 0.5), a.steps, a.warmup, 2 * b),
             rate(lambda: audio_views(long, cfg.context, g, acfg), a.steps, a.warmup, 2 * b),
             rate(lambda: step(audio_net, av1, av2, 0.6), a.steps, a.warmup, 2 * b)]
        print(f"{t:>7} " + " ".join(f"{x:>10.0f}" for x in r))


if __name__ == "__main__":
    main()
