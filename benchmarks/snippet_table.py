"""Snippet-retrieval comparison table (markdown) for several models on one corpus split.

    python benchmarks/snippet_table.py --corpus CORPUS \
        BL1=runs/cmp-bl1 BL2=runs/cmp-bl2 "BL2+Att84=runs/ship-att84/best@100000.safetensors"

Each MODEL is evaluated with `audiosheet.evaluate.evaluate_snippets` on 2,000- and 10,000-pair pools
(seeded), both directions; the JSON of every row is written next to the table with --json.
"""
from __future__ import annotations

import argparse
import json

from audiosheet.evaluate import evaluate_snippets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--pools", default="2000,10000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write all results to this JSON file")
    ap.add_argument("models", nargs="+", help="LABEL=MODEL (run folder, checkpoint or shipped name)")
    a = ap.parse_args()
    rows, results = [], {}
    for spec in a.models:
        label, model = spec.split("=", 1)
        for pool in map(int, a.pools.split(",")):
            r = evaluate_snippets(a.corpus, model, split=a.split, pairs=pool, seed=a.seed)
            results[f"{label}/{pool}"] = r
            for d in ("a2s", "s2a"):
                m = r[d]
                rows.append(f"| {label} | {pool:,} | {d.upper()} | {m['R@1']:.3f} | {m['R@5']:.3f} | "
                            f"{m['R@10']:.3f} | {m['R@25']:.3f} | {m['MRR']:.3f} | {m['MR']:.0f} |")
            print(rows[-2], rows[-1], sep="\n", flush=True)
    print("\n| model | pool | direction | R@1 | R@5 | R@10 | R@25 | MRR | MR |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
