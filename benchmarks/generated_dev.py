"""An identification development folder from a generated corpus, in the layout of
``audiosheet evaluate folder`` (sheets/, queries/, labels.tsv), with an open set.

    python benchmarks/generated_dev.py --files EXPORT --corpus CORPUS --out DIR
        [--splits valid,test] [--excerpts 3] [--seconds 30] [--seed 0]

EXPORT is ``audiosheet corpus export CORPUS --split all --out EXPORT``. Sheets: every train-split
score (distractors of all lengths) and every other held-out score (sorted by id: even positions);
queries: ``--excerpts`` seeded excerpts of ``--seconds`` from each held-out piece's recording —
those of the odd positions are not indexed (open set, labelled ``-``). Sheets are symlinks,
excerpts FLAC files. Used to fit the confidence of ``identify`` (benchmarks/calibrate.py), so that
the real-material development set stays for measuring.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", required=True, type=Path)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--splits", default="valid,test")
    ap.add_argument("--excerpts", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import soundfile as sf

    splits = json.loads((a.corpus / "splits.json").read_text())
    held = sorted(p for s in a.splits.split(",") for p in splits.get(s, []))
    held = [p for p in held if (a.files / "sheets" / f"{p}.pdf").exists() and (a.files / "audio" / f"{p}.flac").exists()]
    indexed_held = set(held[0::2])
    (a.out / "sheets").mkdir(parents=True, exist_ok=True)
    (a.out / "queries").mkdir(exist_ok=True)
    sheets = [p for p in splits.get("train", []) if (a.files / "sheets" / f"{p}.pdf").exists()] + sorted(indexed_held)
    for p in sheets:
        link = a.out / "sheets" / f"{p}.pdf"
        if not link.exists():
            os.symlink((a.files / "sheets" / f"{p}.pdf").resolve(), link)
    rng = np.random.default_rng(a.seed)
    lines = ["query\tpiece"]
    for p in held:
        audio, sr = sf.read(a.files / "audio" / f"{p}.flac", dtype="float32")
        dur = len(audio) / sr
        for k in range(a.excerpts):
            t0 = float(rng.uniform(0, max(dur - a.seconds, 0.0)))
            name = f"{p}.{k}.flac"
            sf.write(a.out / "queries" / name, audio[int(t0 * sr):int((t0 + a.seconds) * sr)], sr)
            lines.append(f"{name}\t{p if p in indexed_held else '-'}")
    (a.out / "labels.tsv").write_text("\n".join(lines) + "\n")
    n_open = sum(line.endswith("\t-") for line in lines)
    print(f"{a.out}: {len(sheets)} sheets ({len(indexed_held)} held-out), {len(lines) - 1} queries "
          f"({n_open} open-set)")


if __name__ == "__main__":
    main()
