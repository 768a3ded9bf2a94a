"""Passage retrieval tables for docs/passages.md from `audiosheet evaluate passages --json` files.

    python benchmarks/passages_table.py NAME=DIR [NAME=DIR ...]

DIR holds one JSON per test set: clean.json, scanned.json, performed.json, scanned+performed.json
(those missing are left out). Prints, per model, MRR and R@1 in both directions for every test set,
then the clean figures by passage length.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = ("clean", "scanned", "performed", "scanned+performed")


def main(argv: list[str]) -> int:
    runs = [a.partition("=") for a in argv]
    if not runs:
        print(__doc__)
        return 2
    data = {name: {s: json.loads((Path(d) / f"{s}.json").read_text()) for s in SETS
                   if (Path(d) / f"{s}.json").is_file()} for name, _, d in runs}
    sets = [s for s in SETS if any(s in v for v in data.values())]
    print("| model | " + " | ".join(sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for name, res in data.items():
        cells = []
        for s in sets:
            r = res.get(s)
            cells.append("–" if r is None else
                         f"{r['a2s']['MRR']:.3f} / {r['s2a']['MRR']:.3f} ({r['a2s']['R@1']:.2f} / {r['s2a']['R@1']:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| model (clean) | " + " | ".join(f"{n} system(s)" for n in ("1", "2", "3")) + " | R@5 | R@25 | MR |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, res in data.items():
        r = res.get("clean")
        if r is None:
            continue
        by = r["by_length"]
        cells = [f"{by[n]['a2s']['MRR']:.3f} / {by[n]['s2a']['MRR']:.3f}" if n in by else "–" for n in ("1", "2", "3")]
        cells += [f"{r['a2s'][k]:.3f} / {r['s2a'][k]:.3f}" for k in ("R@5", "R@25")]
        cells.append(f"{r['a2s']['MR']:.0f} / {r['s2a']['MR']:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
