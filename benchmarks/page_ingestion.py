"""Page ingestion from pixels: detected systems against known system boxes, and speed.

    python benchmarks/page_ingestion.py --corpus corpus/ [--limit 30] [--degrade]
    python benchmarks/page_ingestion.py --real ../shared/data/real_scans [--pages 50]
    python benchmarks/page_ingestion.py --real ../shared/data/real_scans --ingest [--pages 120]
    python benchmarks/page_ingestion.py --real ../shared/data/real_scans --rotations [--pages 60]

Corpus pages are compared with the engraver's boxes (x0, x1: staff-line extent; y0, y1: top line
of the first staff, bottom line of the last); ``--degrade`` first passes every page through
``degrade.scan``. Real scans are compared with their hand-made ``systems.json`` boxes, which are
looser (margins included), so their IoU says less; the match rate (one detected system per box)
is printed too. Speed: analysis + strip + snippets of one page, page loading excluded, in CPU
time of one core (run with OMP_NUM_THREADS=1).

``--ingest`` times the whole of ``ingest_sheet`` on each real-scan file instead (decode + analysis +
strip + snippets, before any model: what ``index add`` spends per page before embedding), split
into reading the page (``iter_pages``) and the rest, and scores the systems it finds.
``--rotations`` turns every sampled page by 90°, 180° and 270° and counts how often the page is
turned back upright (``PageLayout.turns``), refused with "page appears rotated", refused for
another reason, read the wrong way round with the "orientation not checked" warning, or read
the wrong way round without a word (the failure that must not happen).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audiosheet.frontend.images import PageError
from audiosheet.frontend.pages import load_pages
from audiosheet.frontend.staves import analyse_page
from audiosheet.frontend.strip import sheet_snippets, unroll  # noqa: E402


def iou(a, b) -> float:
    """IoU of two (x0, x1, y0, y1) boxes."""
    w = min(a[1], b[1]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[2], b[2])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)


def ingest_one(page: np.ndarray):
    """Analysis, strip and snippets of one page; (layout or error, CPU seconds of this process,
    which runs on one core: the machine may be busy, so wall time would say less)."""
    t0 = time.process_time()
    try:
        lay = analyse_page(page)
    except PageError as exc:
        return exc, time.process_time() - t0
    strip = unroll([page], lay.systems, lay.staff_space, [lay.angle])
    sheet_snippets(strip, hop=10)
    return lay, time.process_time() - t0


def _contains(t, f) -> bool:
    return t[0] <= (f[0] + f[1]) / 2 <= t[1] and t[2] <= (f[2] + f[3]) / 2 <= t[3]


def score_page(truth: list[tuple], lay) -> dict:
    """Best IoU of every true box; whether exactly one detected system has its centre in it;
    detections that are extra (centre in no box, or a second one in a box)."""
    found = [] if isinstance(lay, Exception) else [(s.x0, s.x1, s.y0, s.y1) for s in lay.systems]
    best = [max((iou(t, f) for f in found), default=0.0) for t in truth]
    counts = [sum(_contains(t, f) for f in found) for t in truth]
    extra = sum(max(c - 1, 0) for c in counts) + sum(not any(_contains(t, f) for t in truth) for f in found)
    pairs = []  # (share of the detected box inside the true box, height ratio, width ratio)
    for t, c in zip(truth, counts):
        if c == 1:
            f = next(f for f in found if _contains(t, f))
            w = max(min(t[1], f[1]) - max(t[0], f[0]), 0)
            h = max(min(t[3], f[3]) - max(t[2], f[2]), 0)
            pairs.append((w * h / ((f[1] - f[0]) * (f[3] - f[2])), (t[3] - t[2]) / (f[3] - f[2]),
                          (t[1] - t[0]) / (f[1] - f[0])))
    return {"ious": best, "extra": extra, "one": sum(c == 1 for c in counts), "found": len(found),
            "pairs": pairs}


def summary(name: str, rows: list[dict], seconds: list[float], extra: dict | None = None) -> dict:
    ious = np.asarray([v for r in rows for v in r["ious"]])
    out = {
        "set": name, "pages": len(rows), "systems": int(len(ious)),
        "detected": int(sum(r["found"] for r in rows)),
        "iou>=0.9": round(float(np.mean(ious >= 0.9)), 4) if len(ious) else None,
        "mean_iou": round(float(ious.mean()), 4) if len(ious) else None,
        "one_detection_per_box": round(sum(r["one"] for r in rows) / max(len(ious), 1), 4),
        "extra_detections": int(sum(r["extra"] for r in rows)),
        "failed_pages": int(sum(r.get("error") is not None for r in rows)),
        "pages_per_s": round(len(seconds) / max(sum(seconds), 1e-9), 2),
        "s_per_page_max": round(max(seconds), 3) if seconds else None,
    }
    out.update(extra or {})
    return out


def run_corpus(root: Path, limit: int | None, degrade: bool, seed: int, scale: float = 1.0) -> dict:
    from audiosheet.corpus.degrade import degrade as degrade_page
    from audiosheet.corpus.reader import Corpus

    c = Corpus(root)
    pieces = c.piece_ids[:limit] if limit else c.piece_ids
    rng = np.random.default_rng(seed)
    rows, seconds, space_err, angle_err = [], [], [], []
    for pid in pieces:
        info = c.info(pid)
        for p in range(len(info["pages"])):
            page = c.page(pid, p)
            if scale != 1:  # e.g. 2: the 100 dpi page as a 200 dpi one
                h, w = page.shape
                page = np.asarray(Image.fromarray(page).resize((round(w * scale), round(h * scale)),
                                                               Image.Resampling.BICUBIC))
            if degrade:
                page, style = degrade_page(page, rng)
            truth = [(s["x0"] * scale, s["x1"] * scale, s["y0"] * scale, s["y1"] * scale)
                     for s in info["systems"] if s["page"] == p]
            lay, dt = ingest_one(page)
            seconds.append(dt)
            r = score_page(truth, lay)
            r["error"] = str(lay) if isinstance(lay, Exception) else None
            rows.append(r)
            if r["error"] is None:
                space_err.append(lay.staff_space / (info["staff_space_px"] * scale) - 1)
                if degrade:
                    angle_err.append(lay.angle - style.angle)
                    if abs(angle_err[-1]) > 0.25:
                        print(f"  {pid} page {p}: skew {style.angle:.2f}°, found {lay.angle:.2f}°",
                              file=sys.stderr)
            bad = [round(v, 3) for v in r["ious"] if v < 0.9]
            if bad or r["extra"] or r["error"]:
                print(f"  {pid} page {p}: IoU<0.9 {bad}, extra {r['extra']}, {r['error'] or ''}",
                      file=sys.stderr)
    extra = {"staff_space_rel_err_median": round(float(np.median(np.abs(space_err))), 4),
             "staff_space_rel_err_max": round(float(np.max(np.abs(space_err))), 4)}
    if angle_err:
        extra["angle_err_deg_median"] = round(float(np.median(np.abs(angle_err))), 3)
        extra["angle_err_deg_max"] = round(float(np.max(np.abs(angle_err))), 3)
    name = f"corpus{' degraded' if degrade else ''}{f' ×{scale:g}' if scale != 1 else ''}"
    return summary(name, rows, seconds, extra)


def real_pages(root: Path, n: int, seed: int):
    """About n (work, page index, file, boxes) with one page drawn per work, then more."""
    rng = np.random.default_rng(seed)
    picks = []
    works = sorted(d for d in root.iterdir() if (d / "systems.json").is_file())
    for rnd in range(10):
        for d in rng.permutation(works):
            meta = json.loads((d / "systems.json").read_text())
            by_page = {}
            for s in meta["staves"]:
                by_page.setdefault(s["page"], []).append(s)
            pages = sorted(p for p in by_page if list(d.glob(f"page_{p}.*")))
            if rnd < len(pages):
                p = int(rng.permutation(pages)[rnd])
                picks.append((d.name, p, next(d.glob(f"page_{p}.*")), by_page[p]))
            if len(picks) >= n:
                return picks
    return picks


def run_real(root: Path, n: int, seed: int, y_by: str) -> dict:
    rows, seconds, load_s = [], [], []
    for work, p, f, boxes in real_pages(root, n, seed):
        t0 = time.perf_counter()
        page = load_pages(f, upright=False)[0]
        load_s.append(time.perf_counter() - t0)
        h, w = page.shape
        yk = w if y_by == "width" else h
        truth = [(b["start"][0] * w, b["end"][0] * w, b["start"][1] * yk, b["end"][1] * yk) for b in boxes]
        lay, dt = ingest_one(page)
        seconds.append(dt)
        r = score_page(truth, lay)
        r["error"] = str(lay) if isinstance(lay, Exception) else None
        rows.append(r)
        print(f"  {work} page {p} ({w}×{h}): boxes {len(truth)}, found {r['found']}, one-per-box "
              f"{r['one']}, IoU {[round(v, 2) for v in r['ious']]} {r['error'] or ''}", file=sys.stderr)
    pairs = np.asarray([p for r in rows for p in r["pairs"]]).reshape(-1, 3)
    return summary(f"real scans (y as a fraction of page {y_by})", rows, seconds, {
        "load_s_per_page": round(float(np.mean(load_s)), 3),
        "detected_inside_box>=0.95": round(float(np.mean(pairs[:, 0] >= 0.95)), 4),
        "box/detected_height_median": round(float(np.median(pairs[:, 1])), 3),
        "box/detected_width_median": round(float(np.median(pairs[:, 2])), 3)})


def _truth(boxes, w, h, y_by):
    yk = w if y_by == "width" else h
    return [(b["start"][0] * w, b["end"][0] * w, b["start"][1] * yk, b["end"][1] * yk) for b in boxes]


def run_real_ingest(root: Path, n: int, seed: int, y_by: str, save: Path | None = None,
                    embed: str | None = None) -> dict:
    """The whole ingestion of each sampled file: CPU seconds of reading and of the rest; with
    ``embed`` (a MODEL name) also the CPU seconds of embedding its sheet snippets, apart."""
    from audiosheet.frontend.pages import iter_pages
    from audiosheet.frontend.strip import ingest_sheet

    embedder = None
    if embed:
        from audiosheet.models.embed import Embedder

        embedder = Embedder(embed)
        embedder.sheet(np.zeros((32, 80, 100), np.float32))  # trace once, outside the timing
    embed_s, n_snippets = [], []
    from PIL import Image

    rows, seconds, load_s, per_page, big = [], [], [], [], []
    for work, p, f, boxes in real_pages(root, n, seed):
        with Image.open(f) if f.suffix != ".pdf" else open(f, "rb") as im:
            mpx = im.size[0] * im.size[1] / 1e6 if f.suffix != ".pdf" else 0.0
        t0 = time.process_time()
        for _ in iter_pages(f):
            pass
        load_s.append(time.process_time() - t0)
        t0 = time.process_time()
        try:
            ing = ingest_sheet(f)
            lay = ing.layouts[0]
        except PageError as exc:
            lay = exc
        seconds.append(time.process_time() - t0)
        if mpx >= 30:  # 600 dpi
            big.append(seconds[-1])
        if embedder is not None and not isinstance(lay, Exception):
            t0 = time.process_time()
            embedder.sheet(ing.snippets)
            embed_s.append(time.process_time() - t0)
            n_snippets.append(len(ing.snippets))
        w, h = (lay.width, lay.height) if not isinstance(lay, Exception) else (1, 1)
        r = score_page(_truth(boxes, w, h, y_by), lay)
        r["error"] = str(lay) if isinstance(lay, Exception) else None
        rows.append(r)
        per_page.append({"work": work, "page": p, "found": r["found"], "boxes": len(boxes),
                         "ious": [round(v, 3) for v in r["ious"]], "error": r["error"],
                         "s": round(seconds[-1], 3), "mpx": round(mpx, 1)})
        print(f"  {work} page {p} ({w}×{h}): boxes {len(boxes)}, found {r['found']}, one-per-box "
              f"{r['one']}, IoU {[round(v, 2) for v in r['ious']]}, {seconds[-1]:.2f} s "
              f"{r['error'] or ''}", file=sys.stderr)
    if save:
        save.write_text(json.dumps(per_page, indent=0))
    out = summary(f"real scans, whole ingest_sheet (y as a fraction of page {y_by})", rows, seconds, {
        "count_matches": round(float(np.mean([r["found"] == len(r["ious"]) for r in rows])), 4),
        "read_s_per_page": round(float(np.mean(load_s)), 3),
        "pages_600dpi": len(big), "ingest_pages_per_s_600dpi": round(len(big) / max(sum(big), 1e-9), 2)})
    out["ingest_pages_per_s"] = out.pop("pages_per_s")
    if embed_s:
        out["embed_model"] = embed
        out["embed_s_per_page"] = round(float(np.mean(embed_s)), 3)
        out["snippets_per_page"] = round(float(np.mean(n_snippets)), 1)
    return out


def run_rotations(root: Path, n: int, seed: int) -> dict:
    """Every sampled page turned by 90°, 180°, 270° (np.rot90, counterclockwise) and read again."""
    from audiosheet.frontend.strip import read_systems

    counts = {k: {"upright": 0, "says_rotated": 0, "other_error": 0, "wrong_with_warning": 0,
                  "silently_wrong": 0} for k in (1, 2, 3)}
    upright_warned = 0
    upright_ok, upright_n = 0, 0
    for work, p, f, boxes in real_pages(root, n, seed):
        page = load_pages(f, upright=False)[0]  # as scanned: the turns are ours to count
        for k in (0, 1, 2, 3):
            try:
                lay = read_systems([np.ascontiguousarray(np.rot90(page, k))], f)[0][0]
                got = "upright" if getattr(lay, "turns", 0) == (4 - k) % 4 else \
                    "silently_wrong" if getattr(lay, "orientation_checked", True) else "wrong_with_warning"
                if k == 0 and not getattr(lay, "orientation_checked", True):
                    upright_warned += 1
            except PageError as exc:
                got = "says_rotated" if "rotated" in exc.reason else "other_error"
                if k == 0:
                    print(f"  {work} page {p} upright: {exc.reason}", file=sys.stderr)
            if k == 0:
                upright_n += 1
                upright_ok += got == "upright"
                continue
            counts[k][got] += 1
            if got != "upright":
                print(f"  {work} page {p} turned {90 * k}°: {got}", file=sys.stderr)
    out = {"set": "real scans turned", "pages": upright_n, "upright_read_upright": upright_ok,
           "upright_with_orientation_warning": upright_warned}
    for k, c in counts.items():
        out[f"{90 * k}°"] = c
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--limit", type=int, help="pieces of the corpus")
    ap.add_argument("--degrade", action="store_true", help="pass corpus pages through degrade.scan")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="resample corpus pages first (2: 100 dpi pages as 200 dpi ones)")
    ap.add_argument("--real", type=Path, help="folder of real scans (../shared/data/real_scans)")
    ap.add_argument("--pages", type=int, default=50, help="real-scan pages to sample")
    ap.add_argument("--y-by", choices=["width", "height"], default="width",
                    help="what the y fractions of systems.json are relative to")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ingest", action="store_true",
                    help="real scans: time the whole ingest_sheet (reading included)")
    ap.add_argument("--rotations", action="store_true",
                    help="real scans: turn pages by 90/180/270° and count how they are read")
    ap.add_argument("--save", type=Path, help="--ingest: write per-page results (JSON) here")
    ap.add_argument("--embed", metavar="MODEL",
                    help="--ingest: also time embedding the sheet snippets with this model")
    args = ap.parse_args(argv)
    if not args.corpus and not args.real:
        ap.error("give --corpus and/or --real")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.corpus:
        print(json.dumps(run_corpus(args.corpus, args.limit, args.degrade, args.seed, args.scale)))
    if args.real and args.ingest:
        print(json.dumps(run_real_ingest(args.real, args.pages, args.seed, args.y_by, args.save,
                                                    args.embed)))
    elif args.real and args.rotations:
        print(json.dumps(run_rotations(args.real, args.pages, args.seed)))
    elif args.real:
        print(json.dumps(run_real(args.real, args.pages, args.seed, args.y_by)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
