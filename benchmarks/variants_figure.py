"""One piece of the test split in the clean corpus and its degraded variants, as one PNG: the top of
a page (clean, scanned) with the noteheads' stored centres marked, and the first seconds of the
spectrogram (clean, performed) with the stored onsets of the notes marked — the check that the
variants' annotations still sit on the music.

    python benchmarks/variants_figure.py --corpus CORPUS --variants VARIANTS --piece ID \
        --out docs/img/variants-ID.png
"""
from __future__ import annotations

import argparse

import numpy as np

from audiosheet.corpus.reader import Corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--variants", required=True, help="folder written by `audiosheet corpus variants`")
    ap.add_argument("--piece", required=True)
    ap.add_argument("--page", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean, scanned, performed = (Corpus(a.corpus), Corpus(f"{a.variants}/scanned"),
                                 Corpus(f"{a.variants}/performed"))
    p = a.page - 1
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), dpi=110,
                             gridspec_kw={"height_ratios": [1.5, 1]})
    for ax, c, title in ((axes[0, 0], clean, "clean page"), (axes[0, 1], scanned, "scanned")):
        page, nh = c.page(a.piece, p), c.noteheads(a.piece)
        h = int(page.shape[0] * 0.4)
        ax.imshow(page[:h], cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
        sel = (nh["page"] == p) & (nh["y"] < h)
        ax.scatter(nh["x"][sel], nh["y"][sel], s=6, c="red", marker="o", linewidths=0)
        extra = ""
        if "scan" in c.info(a.piece):
            s = c.info(a.piece)["scan"]
            extra = (f" (skew {s['pages'][p]['angle']:+.2f}°, noteheads on ink "
                     f"{s['noteheads_on_ink']:.1%})")
        ax.set_title(title + extra, fontsize=9)
        ax.axis("off")
    for ax, c, title in ((axes[1, 0], clean, "clean performance"), (axes[1, 1], performed, "performed")):
        spec = np.asarray(c.spectrogram(a.piece, 0), np.float32)
        fps = c.manifest.get("fps", 20)
        n = int(a.seconds * fps)
        ax.imshow(spec[:n].T, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, min(n, len(spec)) / fps, 0, spec.shape[1]))
        on = c.onsets(a.piece)[0]
        on = on[on < a.seconds]
        ax.vlines(on, spec.shape[1] * 0.93, spec.shape[1], color="cyan", lw=0.6)
        rec = c.info(a.piece)["performances"][0]
        extra = ""
        if "room" in rec:
            lo, hi = rec["tempo_range"]
            extra = (f" (tempo ×{rec['tempo_ratio']:.2f}, curve {lo:.2f}–{hi:.2f}, RT60 "
                     f"{rec['room']['rt60']:.2f} s, SNR {rec['room']['snr_db']:.0f} dB)")
        ax.set_title(title + extra, fontsize=9)
        ax.set_xlabel("seconds")
        ax.set_yticks([])
    fig.suptitle(f"{a.piece}: stored noteheads (red) and onsets (cyan) on the degraded variants",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out)
    from PIL import Image  # a 128-colour palette: a third of the size, looks the same

    Image.open(a.out).convert("RGB").quantize(128).save(a.out, optimize=True)
    print(a.out)


if __name__ == "__main__":
    main()
