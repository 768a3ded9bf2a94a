"""Collections at IMSLP scale (issue 19): build a collection of N sheet snippets, then measure the
search index the size chooses against exact search.

    python benchmarks/scale.py --files EXPORT --db DIR --vectors N [--index auto|exact|approx|compressed]
        [--queries 1000] [--pieces 1000] [--json OUT]

EXPORT is a corpus export (``audiosheet corpus export CORPUS --split test --out EXPORT``). Its PDFs
are indexed for real with the shipped model; then filler items (``benchmarks/identify.py``: random
stretches of the real embeddings, each turned by its own small rotation, plus noise, written in the
real on-disk format) are added until the collection holds N sheet snippets, in one commit, whose
index build is timed (``build_s``). Then, in a fresh process (``--measure``):

* ``ms_per_snippet``: search of real audio query snippets (the first 30 s of every recording of
  EXPORT, embedded by the model) in batches of 100, 25 neighbours, through the loaded index;
* ``recall_at_25``: overlap of those 25 with the exact 25 (brute force over the stored float16
  embeddings, block by block: ``exact_ms_per_snippet``);
* ``rss_gb``: resident memory of that process after loading the collection and searching;
* ``add_one_page_s``: ``Collection.add`` of one new one-page score into the collection (it stays);

and ``top1_exact`` / ``top1_approx``: piece identification (dtw, 30-s excerpts, 4 per real piece) in a
second collection of --pieces pieces (the same real items plus filler), searched exactly and through
the compressed index. Figures only, never asserted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from identify import add_filler  # noqa: E402  (benchmarks/identify.py: the filler items)

from audiosheet.retrieval.collection import Collection  # noqa: E402


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def grow(db: Path, files: Path, vectors: int, index: str, seed: int) -> dict:
    """Index EXPORT's PDFs into ``db`` and add filler up to ``vectors`` sheet snippets (one commit)."""
    rng = np.random.default_rng(seed)
    coll = Collection(db, index=index)
    if not coll.items("sheet"):
        coll.add([files / "sheets"], progress=True)
    items = coll.items("sheet")
    have, mean = sum(i.n for i in items), float(np.mean([i.n for i in items]))
    want = int(np.ceil(max(vectors - have, 0) / mean))
    t = time.perf_counter()
    added = add_filler(coll, len(items) + want, rng) if want else 0
    build = time.perf_counter() - t
    n = sum(i.n for i in Collection(db).items("sheet"))
    return {"filler_items": added, "vectors": n, "grow_s": round(build, 1)}


def exact_top(rows: np.ndarray, q: np.ndarray, k: int, block: int = 1 << 17) -> np.ndarray:
    """Brute-force top-k rows (cosine) of ``q`` over float16 ``rows``, block by block."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for a in range(0, len(rows), block):
        s = q @ np.asarray(rows[a:a + block], np.float32).T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + a], 1)
        o = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, o, 1), np.take_along_axis(cand_i, o, 1)
    return best_i


def measure(db: Path, files: Path, n_queries: int) -> dict:
    from audiosheet.models.embed_file import embed_file

    coll = Collection(db, create=False, query_model="torch")
    t = time.perf_counter()
    ix, items, owner, starts = coll.search_index("sheet")
    load_s = time.perf_counter() - t
    audio = sorted((files / "audio").glob("*.flac"))
    q = np.concatenate([embed_file(p, coll.embedder, end=30.0).emb for p in audio])
    q = np.ascontiguousarray(q[np.linspace(0, len(q) - 1, min(n_queries, len(q))).astype(int)], np.float32)
    ix.search(q[:100], 25)  # warm
    t = time.perf_counter()
    got = np.concatenate([ix.search(q[a:a + 100], 25)[1] for a in range(0, len(q), 100)])
    ms = (time.perf_counter() - t) / len(q) * 1000
    rss = rss_gb()
    rows = getattr(ix, "rows", None)
    if rows is None:
        rows = np.concatenate([coll.embeddings(i) for i in items]).astype(np.float16)
    t = time.perf_counter()
    exact = exact_top(rows, q, 25)
    exact_ms = (time.perf_counter() - t) / len(q) * 1000
    recall = float(np.mean([len(set(a) & set(b)) / 25 for a, b in zip(got, exact)]))
    kind = type(ix).__name__
    return {"index": {"RerankedIndex": "compressed (IVF-PQ + re-ranking)", "IndexHNSWFlat": "approx (HNSW)",
                      "IndexFlatIP": "exact"}.get(kind, kind),
            "recall_at_25": round(recall, 4), "ms_per_snippet": round(ms, 3),
            "exact_ms_per_snippet": round(exact_ms, 3), "rss_gb": round(rss, 3), "load_s": round(load_s, 2),
            "query_snippets": len(q)}


def add_one_page(db: Path, files: Path, tmp: Path) -> float:
    """Seconds to add one new one-page score to ``db``. It stays in the collection: removing it would
    rebuild the whole compressed index (a removal rebuilds, until sharded collections)."""
    from PIL import Image

    from audiosheet.frontend.pages import load_pages

    page = load_pages(sorted((files / "sheets").glob("*.pdf"))[0])[0].copy()
    page[0, :8] = np.frombuffer(time.time_ns().to_bytes(8, "little"), np.uint8)  # new content, new hash
    path = tmp / "one-page.png"
    Image.fromarray(page).save(path)
    coll = Collection(db)
    t = time.perf_counter()
    rep = coll.add([path], progress=False)
    dt = time.perf_counter() - t
    if len(rep.added) != 1:
        raise SystemExit(f"{path}: not added ({rep.failed or rep.present})")
    return dt


def top1(db: Path, files: Path, seed: int, per_piece: int = 4) -> float:
    import soundfile as sf

    from audiosheet.retrieval.identify import identify

    rng = np.random.default_rng(seed)
    coll = Collection(db, query_model="torch")
    right = n = 0
    for src in sorted((files / "audio").glob("*.flac")):
        info = sf.info(str(src))
        for k in range(per_piece):
            start = float(rng.uniform(0, max(info.duration - 30, 0)))
            right += identify(coll, src, start=start, end=start + 30).results[0].piece == src.stem
            n += 1
    return right / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=Path, required=True)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--vectors", type=int, required=True)
    ap.add_argument("--index", default="auto", choices=["auto", "exact", "approx", "compressed"])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--pieces", type=int, default=1000, help="collection size of the top-1 check (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.db, a.files, a.queries)))
        return
    out = {"requested_vectors": a.vectors}
    out.update(grow(a.db, a.files, a.vectors, a.index, a.seed))
    out["build_s"] = out.pop("grow_s")
    r = subprocess.run([sys.executable, __file__, "--measure", "--files", str(a.files), "--db", str(a.db),
                        "--vectors", str(a.vectors), "--queries", str(a.queries)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    out["add_one_page_s"] = round(add_one_page(a.db, a.files, a.db.parent), 2)
    if a.pieces:
        small = a.db.parent / f"{a.db.name}-top1"
        shutil.rmtree(small, ignore_errors=True)
        coll = Collection(small, index="exact")
        coll.add([a.files / "sheets"], progress=False)
        add_filler(coll, a.pieces, np.random.default_rng(a.seed))
        out["top1_pieces"] = len(coll.items("sheet"))
        out["top1_exact"] = round(top1(small, a.files, a.seed), 4)
        Collection(small, index="compressed")  # the same items, every index rebuilt compressed
        out["top1_approx"] = round(top1(small, a.files, a.seed), 4)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
