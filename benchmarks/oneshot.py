"""Speed of one-shot use: ``audiosheet identify`` as a fresh process, and warm queries.

    python benchmarks/oneshot.py --db COLLECTION --queries FILE [FILE ...] [--seconds 30]
        [--runs 10] [--scans ../shared/data/real_scans] [--scan-pages 40] [--json OUT]

Fresh: wall time of ``audiosheet identify --db DB QUERY --end SECONDS --json`` run as a new
process (interpreter start, imports, model and index load, the query), median and p90 over
--runs runs cycling through the queries. Warm: the same queries in one process after one
warm-up query (``Collection(..., query_model="torch")``: a long-lived process embeds with torch,
bf16), median and p90. Also printed: the collection's pages, items and vectors.
--scans: also page ingestion of 600-dpi bilevel scans (pages of ≥ 30 Mpx, seeded sample of
--scan-pages): ``frontend.strip.ingest_sheet`` per page file (decode, upright, analysis, strip, snippets;
the embedding, ~0.3 s per page, is the model's and not counted), pages per wall second.
Figures only (issue 14 targets: fresh ≤ 1.0 s, warm ≤ 0.3 s median on a 300-page collection;
≥ 3 pages/s ingestion of 600-dpi bilevel scans).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", nargs="+", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", default=None)
    ap.add_argument("--scans", type=Path, default=None)
    ap.add_argument("--scan-pages", type=int, default=40)
    a = ap.parse_args()
    from audiosheet import Collection

    exe = Path(sys.executable).with_name("audiosheet")
    fresh = []
    for k in range(a.runs):
        q = a.queries[k % len(a.queries)]
        t = time.perf_counter()
        out = subprocess.run([str(exe), "identify", "--db", a.db, q, "--end", str(a.seconds), "--json"],
                             capture_output=True, text=True)
        fresh.append(time.perf_counter() - t)
        if out.returncode:
            sys.exit(f"identify failed: {out.stderr.strip()}")
    coll = Collection(a.db, create=False, query_model="torch")  # a warm process: torch, bf16
    items = coll.items("sheet")
    pages = sum(int(i.info.get("pages", 0)) for i in items)
    t = time.perf_counter()
    coll.identify(a.queries[0], end=a.seconds)
    first = time.perf_counter() - t
    warm = []
    for k in range(a.runs):
        t = time.perf_counter()
        coll.identify(a.queries[k % len(a.queries)], end=a.seconds)
        warm.append(time.perf_counter() - t)
    onnx = True  # the fresh processes (audiosheet identify) never import torch: checked in tests
    res = {"pages": pages, "sheet_items": len(items), "vectors": sum(i.n for i in items),
           "query_seconds": a.seconds, "onnx": onnx,
           "fresh_median_s": statistics.median(fresh), "fresh_p90_s": sorted(fresh)[int(0.9 * (len(fresh) - 1))],
           "warm_first_s": first, "warm_median_s": statistics.median(warm),
           "warm_p90_s": sorted(warm)[int(0.9 * (len(warm) - 1))]}
    print(f"{a.db}: {pages} pages, {len(items)} scores, {res['vectors']} vectors")
    print(f"fresh process: median {res['fresh_median_s']:.2f} s, p90 {res['fresh_p90_s']:.2f} s ({a.runs} runs)")
    print(f"warm:          median {res['warm_median_s']:.3f} s, p90 {res['warm_p90_s']:.3f} s "
          f"(first query in the process {first:.2f} s)")
    if a.scans:
        res.update(scan_ingestion(a.scans, a.scan_pages))
        print(f"page ingestion, 600-dpi bilevel scans: {res['scan_pages_per_s']:.2f} pages/s "
              f"({res['scan_pages']} pages of {res['scan_mpx']:.0f} Mpx median)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")


def scan_ingestion(root: Path, n: int, seed: int = 0) -> dict:
    import numpy as np
    from PIL import Image

    from audiosheet.frontend.strip import ingest_sheet

    Image.MAX_IMAGE_PIXELS = None
    big = []
    for f in sorted(root.glob("*/page_*.tif")):
        with Image.open(f) as im:
            if im.mode == "1" and im.size[0] * im.size[1] >= 30e6:
                big.append((f, im.size[0] * im.size[1] / 1e6))
    pick = [big[i] for i in np.random.default_rng(seed).permutation(len(big))[:n]]
    t = time.perf_counter()
    for f, _ in pick:
        ingest_sheet(f)
    wall = time.perf_counter() - t
    return {"scan_pages": len(pick), "scan_mpx": float(np.median([m for _, m in pick])),
            "scan_pages_per_s": len(pick) / wall}


if __name__ == "__main__":
    main()
