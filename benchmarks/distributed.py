"""Ingestion throughput on Ray workers against one process (issue 19, item 3).

    python benchmarks/distributed.py PATH... [--workers 2] [--limit N] [--work DIR] [--json OUT]

PATH: files or folders of score pages / PDFs / recordings (folders are searched recursively; other
files, such as the ``*.json`` beside real scans, are left out). The same files are indexed into two
fresh collections with the shipped model:

* ``single``: ``Collection.add`` as today (one process, torch on its default threads);
* ``ray``: ``Collection.add(..., ingest=RayIngest(workers=W))`` on a local Ray instance.

Each collection is first given the two golden test files (tests/data/golden, one page and one
clip) with local ingestion, untimed, so that its driver has loaded the model, written the ONNX
export and traced both pathways: the timed ``add`` is steady-state ingestion and committing in
both. Ray's start-up (``ray.init``, the workers placed, their model loaded and pathways traced) is
timed on its own (``ray_start_s``) and reported both left out (``ray_files_per_s``) and included
(``ray_files_per_s_with_start``). The two collections must then hold the same items with the same
stored embeddings (``identical``). Prints one line per run and the ratios; ``--json`` writes them,
with the 1-minute load average before and after each run: figures from a machine that other work
was loading (a load well above 1 before a run) are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from audiosheet.files import expand, file_kind  # noqa: E402
from audiosheet.retrieval.collection import Collection  # noqa: E402

GOLDEN = [ROOT / "tests" / "data" / "golden" / "page.png", ROOT / "tests" / "data" / "golden" / "clip.flac"]


def files_of(paths: list[str], limit: int | None) -> list[Path]:
    """The sheet and audio files under ``paths``, in ``expand``'s order, at most ``limit``."""
    found, failed = expand(paths, [])
    if failed:
        sys.exit(f"benchmarks/distributed.py: {failed[0][1]}")
    files = [f for f in found if file_kind(f) is not None]
    return files[:limit] if limit else files


def warm(db: Path) -> Collection:
    coll = Collection(db)
    rep = coll.add(GOLDEN, progress=False)
    assert not rep.failed, rep.failed
    return coll


def run_single(db: Path, files: list[Path]) -> dict:
    import torch

    coll = warm(db)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    rep = coll.add(files, progress=False)
    s = time.perf_counter() - t0
    return {"seconds": round(s, 2), "files_per_s": round(len(files) / s, 3), "added": len(rep.added),
            "failed": len(rep.failed), "torch_threads": torch.get_num_threads(),
            "load_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def run_ray(db: Path, files: list[Path], workers: int) -> dict:
    from audiosheet.retrieval.distributed import RayIngest

    coll = warm(db)
    kinds = {file_kind(f) for f in files}
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with RayIngest(workers=workers) as ri:
        ri.start(coll, kinds)
        t1 = time.perf_counter()
        rep = coll.add(files, progress=False, ingest=ri)
        t2 = time.perf_counter()
    start, s = t1 - t0, t2 - t1
    return {"workers": workers, "ray_start_s": round(start, 2), "seconds": round(s, 2),
            "files_per_s": round(len(files) / s, 3), "files_per_s_with_start": round(len(files) / (s + start), 3),
            "added": len(rep.added), "failed": len(rep.failed),
            "load_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def same(a: Path, b: Path) -> bool:
    """The same items (name, kind, content hash) with the same stored arrays in both collections."""
    ca, cb = Collection(a, create=False), Collection(b, create=False)
    ia = sorted(ca.items(), key=lambda i: i.sha256)
    ib = sorted(cb.items(), key=lambda i: i.sha256)
    if [(i.name, i.kind, i.sha256, i.info) for i in ia] != [(i.name, i.kind, i.sha256, i.info) for i in ib]:
        return False
    for x, y in zip(ia, ib):
        with np.load(ca.root / "items" / f"{x.sha256}.npz") as za, np.load(cb.root / "items" / f"{y.sha256}.npz") as zb:
            if sorted(za.files) != sorted(zb.files) or any(not np.array_equal(za[k], zb[k]) for k in za.files):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="at most this many files")
    ap.add_argument("--work", default=None, help="folder for the two collections (default: a temporary one)")
    ap.add_argument("--json", default=None, metavar="OUT")
    a = ap.parse_args()
    files = files_of(a.paths, a.limit)
    kinds = {k: sum(file_kind(f) == k for f in files) for k in ("sheet", "audio")}
    print(f"{len(files)} files ({kinds['sheet']} sheet, {kinds['audio']} audio), {os.cpu_count()} CPUs", flush=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    for sub in ("single", "ray"):
        shutil.rmtree(work / sub, ignore_errors=True)
    single = run_single(work / "single", files)
    print(f"single process: {single['seconds']:.1f} s, {single['files_per_s']:.3f} files/s "
          f"(torch threads {single['torch_threads']})", flush=True)
    ray = run_ray(work / "ray", files, a.workers)
    print(f"ray, {a.workers} workers: start-up {ray['ray_start_s']:.1f} s, then {ray['seconds']:.1f} s, "
          f"{ray['files_per_s']:.3f} files/s ({ray['files_per_s_with_start']:.3f} with start-up)", flush=True)
    out = {"files": len(files), "sheet_files": kinds["sheet"], "audio_files": kinds["audio"], "cpus": os.cpu_count(),
           "single": single, "ray": ray,
           "ratio": round(ray["files_per_s"] / single["files_per_s"], 3),
           "ratio_with_start": round(ray["files_per_s_with_start"] / single["files_per_s"], 3),
           "identical": same(work / "single", work / "ray"), "paths": a.paths}
    print(f"ratio {out['ratio']:.2f}x ({out['ratio_with_start']:.2f}x with Ray's start-up); "
          f"same items and embeddings: {out['identical']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
