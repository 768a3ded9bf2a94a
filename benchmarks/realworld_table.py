"""The issue-16 experiment table from the JSON files of ``benchmarks/realworld_eval.sh`` runs.

    python benchmarks/realworld_table.py EVAL_DIR [NAME ...]

EVAL_DIR/NAME/ holds snippets-{clean,scanned,performed,scanned+performed}.json (``audiosheet
evaluate snippets --pairs 2000 --json``) and real_dev.json (``audiosheet evaluate folder --json``).
Prints one markdown row per model: snippet MRR a2s / s2a per test set, then the development set's
dtw top-1, top-5, MRR, TPR and open-set FPR. Where a model's folder also holds piece
identification runs (``audiosheet evaluate pieces --method dtw --json``) named
pieces-{m21,mut,sp}-{a2s,s2a}.json (music21 test, Mutopia test, the scanned+performed variant of
the union test), a second table gives their top-1 a2s / s2a.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = ("clean", "scanned", "performed", "scanned+performed")


def row(d: Path) -> str:
    cells = []
    for s in SETS:
        f = d / f"snippets-{s}.json"
        if f.is_file():
            r = json.loads(f.read_text())
            cells.append(f"{r['a2s']['MRR']:.3f} / {r['s2a']['MRR']:.3f}")
        else:
            cells.append("—")
    f = d / "real_dev.json"
    if f.is_file():
        r = json.loads(f.read_text())
        cells.append(f"{r['top1']:.3f} / {r['top5']:.3f} / {r['MRR']:.3f}")
        cells.append(f"{r['tpr']:.3f} / {round(r['open_set_fpr'] * r['open_set_queries'])} of {r['open_set_queries']}")
    else:
        cells += ["—", "—"]
    return f"| {d.name} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    root = Path(argv[0])
    names = argv[1:] or sorted(p.name for p in root.iterdir() if p.is_dir())
    print("| model | clean | scanned | performed | scanned+performed | real_dev top-1 / top-5 / MRR | real_dev TPR / open-set FP |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        print(row(root / n))
    piece_rows = [pieces_row(root / n) for n in names]
    if any(r for r in piece_rows):
        print()
        print("| model | pieces music21 test | pieces Mutopia test | pieces scanned+performed |")
        print("|---|---|---|---|")
        for n, r in zip(names, piece_rows):
            if r:
                print(f"| {n} | " + " | ".join(r) + " |")
    return 0


def pieces_row(d: Path) -> list[str] | None:
    """top-1 a2s / s2a of the piece runs in ``d`` (``—`` where one is missing), or None if none."""
    cells, found = [], False
    for s in ("m21", "mut", "sp"):
        vals = []
        for direction in ("a2s", "s2a"):
            f = d / f"pieces-{s}-{direction}.json"
            if f.is_file():
                found = True
                vals.append(f"{json.loads(f.read_text())['top1']:.3f}")
            else:
                vals.append("—")
        cells.append(" / ".join(vals))
    return cells if found else None


if __name__ == "__main__":
    sys.exit(main())
