"""Validation MRR against training samples for several `audiosheet train` runs, as one PNG.

    python benchmarks/learning_curves.py --out docs/img/learning-curves.png \
        BL1=runs/cmp-bl1 BL2=runs/cmp-bl2 BL2+Att84=runs/ship-att84

Reads each run's ``log.csv`` (mean of the a2s and s2a validation MRR, measured on plain embeddings
before the CCA statistics are fitted) and prints the last row of every run.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for spec in a.runs:
        label, run = spec.split("=", 1)
        rows = list(csv.DictReader((Path(run) / "log.csv").open()))
        if not rows:
            print(f"{label}: {run} has no finished epoch")
            continue
        x = [int(r["samples"]) / 1000 for r in rows]
        ax.plot(x, [float(r["val_MRR"]) for r in rows], label=label, lw=1.5)
        last = rows[-1]
        print(f"{label:12s} epochs {last['epoch']:>4s}  samples {int(last['samples']):>9,}  "
              f"val MRR {float(last['val_MRR']):.3f}  best {max(float(r['val_MRR']) for r in rows):.3f}  "
              f"{float(last['pairs_per_s']):.0f} pairs/s")
    ax.set_xlabel("training samples (thousands)")
    ax.set_ylabel("validation MRR (mean of a2s, s2a; 1,000 pairs)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
