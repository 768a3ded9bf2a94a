"""Robustness table: models × test variants {clean, scanned, performed, scanned+performed}.

    python benchmarks/robustness.py --corpus CORPUS --variants VARIANTS --json OUT.json \
        none=runs/ft-none audio=runs/ft-audio sheet=runs/ft-sheet both=runs/ft-both

VARIANTS is the folder written by `audiosheet corpus variants CORPUS --out VARIANTS` (one corpus per
variant); "clean" is CORPUS itself. For each model and variant: snippet retrieval MRR on a 2,000-pair
test pool, both directions (`evaluate_snippets`), and piece identification top-1 with 30-s audio
excerpts against the indexed scores, dtw (`evaluate_pieces`, a2s). Results are written to the JSON
after every cell (merged with what is there, so runs for different models can share the file) and
cells already there are skipped, so an interrupted run resumes. The performed
variants reuse the score collections of the variant with the same pages (run clean and scanned first).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from audiosheet.evaluate import evaluate_pieces, evaluate_snippets
from audiosheet.models.checkpoint import resolve_model

VARIANTS = ("clean", "scanned", "performed", "scanned+performed")


def _shared_work(corpus: str, v: str, variants: str, split: str) -> Path | None:
    """Work folder for a ``performed`` variant: its own recordings, but the sheets and score
    collections of the variant with the same pages (clean or scanned) linked in, so the scores are
    indexed once per model and page variant (a2s indexes only scores)."""
    if "performed" not in v:
        return None
    base_v = "clean" if v == "performed" else "scanned"
    base = (Path(corpus) if base_v == "clean" else Path(variants) / base_v) / "eval" / split
    work = Path(variants) / v / "eval" / split
    work.mkdir(parents=True, exist_ok=True)
    for item in [base / "sheets", *sorted(base.glob("collection-*"))]:
        link = work / item.name
        if item.exists() and not link.exists():
            link.symlink_to(item.resolve(), target_is_directory=True)
    return work


def _model(path: str) -> str:
    p = Path(path)
    return str(p / "best.safetensors") if p.is_dir() else path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--variants", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--query-seconds", type=float, default=30.0)
    ap.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    ap.add_argument("--no-pieces", action="store_true", help="snippet MRR only")
    ap.add_argument("--json", required=True)
    ap.add_argument("models", nargs="+", help="LABEL=MODEL (run folder, checkpoint or shipped name)")
    a = ap.parse_args()
    out = Path(a.json)
    res = json.loads(out.read_text()) if out.exists() else {}
    for spec in a.models:
        label, model = spec.split("=", 1)
        model = _model(model)
        resolve_model(model)  # fail early on a bad path
        for v in a.only.split(","):
            corpus = a.corpus if v == "clean" else str(Path(a.variants) / v)
            key = f"{label}/{v}"
            cell = res.get(key, {})
            t0 = time.time()
            if "snippets" not in cell:
                r = evaluate_snippets(corpus, model, split=a.split, pairs=a.pairs, seed=0)
                cell["snippets"] = {d: r[d] for d in ("a2s", "s2a")}
            if "pieces" not in cell and not a.no_pieces:
                work = _shared_work(a.corpus, v, a.variants, a.split)
                r = evaluate_pieces(corpus, a.split, "a2s", "dtw", a.query_seconds, model=model, work=work)
                cell["pieces"] = {k: r[k] for k in ("top1", "top5", "MRR", "queries", "latency_s")}
            cell["model"] = model
            res = json.loads(out.read_text()) if out.exists() else {}  # another run may have
            res[key] = {**res.get(key, {}), **cell}  # written other cells meanwhile
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=1) + "\n")
            tmp.replace(out)
            s = cell["snippets"]
            top1 = f"{cell['pieces']['top1']:.3f}" if "pieces" in cell else "—"
            print(f"{label:>10} {v:>18}  MRR a2s {s['a2s']['MRR']:.3f} s2a {s['s2a']['MRR']:.3f}  "
                  f"piece top-1 {top1}  ({time.time() - t0:.0f} s)", flush=True)
    labels = list(dict.fromkeys(k.split("/")[0] for k in res))
    print("\n| pre-training | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for lab in labels:
        cells = []
        for v in VARIANTS:
            c = res.get(f"{lab}/{v}")
            if not c:
                cells.append("—")
                continue
            s = c["snippets"]
            t = f" / {c['pieces']['top1']:.3f}" if "pieces" in c else ""
            cells.append(f"{s['a2s']['MRR']:.3f} / {s['s2a']['MRR']:.3f}{t}")
        print(f"| {lab} | " + " | ".join(cells) + " |")
    print("\ncells: snippet MRR a2s / s2a (2,000-pair pool) / piece top-1 (30-s audio excerpts, dtw)")


if __name__ == "__main__":
    main()
