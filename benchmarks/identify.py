"""Identification at collection scale: page ingestion speed, audio-query latency, index size.

    python benchmarks/identify.py --files EXPORT --db DIR [--pieces 1000]
        [--queries 30] [--query-seconds 30] [--threads 2] [--real N] [--seed 0] [--embed-batch B]
        [--json OUT]

1. Ingestion: the PDFs of FILES/sheets (the first --real; default all) are indexed into a new
   collection at --db with the shipped model: pages per wall second of ``Collection.add``, split
   into page reading + analysis (``frontend.strip.ingest_sheet``), embedding and the rest (hash, save,
   FAISS). Model load + trace are not counted. An existing --db is reused (no ingestion figures).
2. Scale: synthetic sheet items are added until --db holds --pieces pieces. Each copies a random
   real item's snippet count, pages and locations; its embeddings are random stretches of real
   items, each turned by its own random rotation near the identity, plus noise, re-normalised.
   Printed check: median cosine of a snippet to the nearest snippet of another piece (real among
   real only, real among all, filler among all) and how often a real snippet's nearest other
   piece is a filler (equal to the filler share of vectors if filler were indistinguishable).
   Filler is written through ``Store.store_item`` and ``Store.commit``, in the real on-disk format.
3. Latency: --queries excerpts of --query-seconds (seeded random start) of FILES/audio/PIECE.flac
   of real pieces, identified with vote and dtw in one process after one warm-up query (model
   load, trace, index load: "startup"): median, p90, top-1 among all pieces; on the exact index
   and on an HNSW copy (DB-approx); medians of decode+spectrogram, embedding and search; search
   alone (100 query snippets x 25 neighbours, as ``identify`` does).
4. Size on disk: total, per page, per piece; vectors per page.

--threads sets torch and FAISS threads; --embed-batch the Embedder's batch (traced once, padded).

Figures only, never asserted (issue targets: median latency <= 1 s on 2 cores, >= 2 pages/s).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audiosheet.frontend import strip  # noqa: E402
from audiosheet.geometry import INDEX_AUDIO_HOP  # noqa: E402
from audiosheet.retrieval.collection import Collection  # noqa: E402
from audiosheet.retrieval.identify import VOTE_NEIGHBOURS, VOTE_SNIPPETS  # noqa: E402

# filler: rotation strength, noise, stretch lengths (snippets). With the 207 test pieces padded
# to 1,000, ROT 0.4 raises real snippets' nearest-other-piece cosine from 0.88 to 0.91 (the trend
# over 25-207 real pieces points to ~0.895 for 1,000 real ones); lower ROT: filler nearer its sources.
ROT, NOISE, SEGMENT = 0.4, 0.1, (30, 150)


def build(db: Path, sheets: list[Path], batch: int) -> dict:
    """Index ``sheets`` into a new collection; wall time of ``add`` and of its parts."""
    coll = Collection(db, index="exact")
    t = time.perf_counter()
    emb = coll.embedder
    emb.batch = batch or emb.batch
    emb.sheet(np.zeros((1, 80, 100), np.float32))  # model load + trace: startup, not ingestion
    spent = {"startup": time.perf_counter() - t, "analysis": 0.0, "embedding": 0.0}

    def timed(part, fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            spent[part] += time.perf_counter() - t0
            return out
        return wrapper

    ingest, strip.ingest_sheet = strip.ingest_sheet, timed("analysis", strip.ingest_sheet)
    emb.sheet = timed("embedding", emb.sheet)
    try:
        t = time.perf_counter()
        report = coll.add(sheets)
        wall = time.perf_counter() - t
    finally:
        strip.ingest_sheet = ingest
        del emb.sheet
        coll.close()
    pages_added = sum(i.info["pages"] for i in report.added)
    n = max(pages_added, 1)
    return {"files": len(sheets), "added": len(report.added), "failed": report.failed, "pages": pages_added,
            "wall_s": wall, "pages_per_s": n / wall, "startup_s": spent["startup"],
            "analysis_s_per_page": spent["analysis"] / n, "embedding_s_per_page": spent["embedding"] / n,
            "rest_s_per_page": (wall - spent["analysis"] - spent["embedding"]) / n}


def filler_embeddings(rng, embs: list, n: int, rot: float = ROT, noise: float = NOISE) -> np.ndarray:
    """n unit vectors: random stretches of ``embs``, each rotated by (I - A)^-1 (I + A) with its
    own random skew-symmetric A (a rotation near the identity), plus noise."""
    parts, d = [], embs[0].shape[1]
    while n > 0:
        src = embs[rng.integers(len(embs))]
        m = min(n, int(rng.integers(*SEGMENT)), len(src))
        a = int(rng.integers(0, len(src) - m + 1))
        g = rng.normal(size=(d, d)) * rot / np.sqrt(d)
        skew = (g - g.T) / 2
        turn = np.linalg.solve(np.eye(d) - skew, np.eye(d) + skew)
        parts.append(src[a:a + m] @ turn + rng.normal(size=(m, d)) * noise / np.sqrt(d))
        n -= m
    e = np.concatenate(parts)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def add_filler(coll: Collection, pieces: int, rng) -> int:
    """Synthetic sheet items until the collection has ``pieces`` items; how many were added."""
    items = coll.items("sheet")
    real = [i for i in items if not i.info.get("synthetic")]
    want, start = pieces - len(items), len(items)
    if want <= 0:
        return 0
    embs = [coll.embeddings(i) for i in real]
    pending = []
    with coll.writing():
        for k in range(want):
            tpl = real[rng.integers(len(real))]
            e = filler_embeddings(rng, embs, tpl.n).astype(np.float16)
            arrays = {**coll.data(tpl), "emb": e}  # the template's locations, so they still work
            name = f"filler-{start + k:05d}"
            sha = hashlib.sha256(name.encode() + e.tobytes()).hexdigest()
            info = {"pages": tpl.info["pages"], "systems": tpl.info["systems"], "synthetic": True,
                    "template": tpl.name}
            path = str(coll.root / "filler" / f"{name}.pdf")
            pending.append((coll.store_item("sheet", name, path, sha, arrays, info), arrays))
        coll.commit(pending)
    return want


def realism(coll: Collection, rng, n: int = 1000, k: int = 100) -> dict:
    """See the module docstring, 2."""
    import faiss

    ix, items, owner, _ = coll.search_index("sheet")
    fake = np.array([bool(i.info.get("synthetic")) for i in items])
    real_rows = np.flatnonzero(~fake[owner])
    only = faiss.IndexFlatIP(ix.d)
    only.add(np.stack([ix.reconstruct(int(r)) for r in real_rows]))
    out = {"filler_vector_share": float(fake[owner].mean())}
    for label, index, rows, own in (("real_among_real", only, np.arange(only.ntotal), owner[real_rows]),
                                    ("real", ix, real_rows, owner),
                                    ("filler", ix, np.flatnonzero(fake[owner]), owner)):
        if len(rows):
            rows = rng.choice(rows, min(n, len(rows)), replace=False)
            sim, nn = index.search(np.stack([index.reconstruct(int(r)) for r in rows]), k)
            other = own[nn] != own[rows][:, None]
            hit = other.any(axis=1)
            j = other.argmax(axis=1)[hit]
            out[f"{label}_nn_other_sim"] = float(np.median(sim[hit, j]))
            out[f"{label}_nn_other_is_filler"] = float(fake[own[nn[hit, j]]].mean())
    return out


def latency(coll: Collection, queries: list) -> dict:
    """Per method: median and p90 seconds of ``identify``, share of queries with top-1 right."""
    out = {}
    for m in ("vote", "dtw"):
        lat, top1 = [], []
        for path, piece, start, end in queries:
            t = time.perf_counter()
            res = coll.identify(path, method=m, top=5, start=start, end=end)
            lat.append(time.perf_counter() - t)
            top1.append(bool(res.results) and res.results[0].piece == piece)
        out[m] = {"median": float(np.median(lat)), "p90": float(np.percentile(lat, 90)),
                  "top1": float(np.mean(top1)), "latencies": lat}
    return out


def breakdown(coll: Collection, queries: list) -> tuple[dict, list]:
    """Median seconds of decode+spectrogram, embedding, search; the query vectors searched."""
    from audiosheet.frontend.audio import ingest_audio

    emb, (ix, *_) = coll.embedder, coll.search_index("sheet")
    times, picked = [], []
    for path, _, start, end in queries:
        t = [time.perf_counter()]
        ing = ingest_audio(path, context=emb.config.context, hop=INDEX_AUDIO_HOP, start=start, end=end)
        t.append(time.perf_counter())
        q = emb.audio(ing.snippets)
        t.append(time.perf_counter())
        pick = np.linspace(0, len(q) - 1, min(VOTE_SNIPPETS, len(q))).round().astype(int)
        q = np.ascontiguousarray(q[np.unique(pick)])  # as identify does
        ix.search(q, VOTE_NEIGHBOURS)
        t.append(time.perf_counter())
        times.append(np.diff(t))
        picked.append(q)
    return dict(zip(("decode_spectrogram", "embed", "search"), np.median(times, axis=0).tolist())), picked


def search_only(coll: Collection, picked: list, repeat: int = 3) -> float:
    ix, *_ = coll.search_index("sheet")
    times = []
    for q in picked * repeat:
        t = time.perf_counter()
        ix.search(q, VOTE_NEIGHBOURS)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def approx_copy(db: Path) -> tuple[Collection, float]:
    """A copy of ``db`` (files hard-linked, the database copied) reopened with an HNSW index."""
    copy = db.with_name(db.name + "-approx")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(db, copy, copy_function=os.link,
                    ignore=shutil.ignore_patterns("collection.sqlite", ".lock"))
    shutil.copy2(db / "collection.sqlite", copy / "collection.sqlite")
    t = time.perf_counter()
    coll = Collection(copy, index="approx")  # rebuilds the FAISS files
    return coll, time.perf_counter() - t


def size(coll: Collection, items: list) -> dict:
    s = coll.size_on_disk()
    total, n = sum(s.values()), sum(i.info["pages"] for i in items)
    return {**s, "total": total, "per_page": total / n, "per_piece": total / len(items),
            "faiss_per_page": s["faiss"] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=Path, required=True,
                    help="FILES/sheets/*.pdf, FILES/audio/*.flac")
    ap.add_argument("--db", type=Path, required=True, help="collection folder (built if missing)")
    ap.add_argument("--real", type=int, default=0, help="index only the first N PDFs (default: all)")
    ap.add_argument("--pieces", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--query-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    ap.add_argument("--embed-batch", type=int, default=0, help="Embedder batch size (default: its own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    import faiss
    import soundfile as sf
    import torch

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    f = {"args": {k: str(v) for k, v in vars(a).items()}}
    if not (a.db / "collection.sqlite").exists():
        sheets = sorted((a.files / "sheets").glob("*.pdf"))[:a.real or None]
        f["ingestion"] = build(a.db, sheets, a.embed_batch)
    with Collection(a.db, index="exact") as coll:
        f["filler_added"] = add_filler(coll, a.pieces, rng)
        f["realism"] = realism(coll, rng)
        items = coll.items("sheet")
        f["size"] = size(coll, items)
    real = [i.name for i in items if not i.info.get("synthetic")]
    n_pages, n_vec = sum(i.info["pages"] for i in items), sum(i.n for i in items)
    f["collection"] = {"pieces": len(items), "real": len(real), "pages": n_pages, "vectors": n_vec,
                       "vectors_per_page": n_vec / n_pages}
    audio = [(a.files / "audio" / f"{name}.flac", name) for name in real]
    audio = [x for x in audio if x[0].exists()]
    queries = []
    for j in rng.choice(len(audio), a.queries, replace=a.queries > len(audio)):
        path, piece = audio[j]
        start = float(rng.uniform(0, max(sf.info(str(path)).duration - a.query_seconds, 0)))
        queries.append((str(path), piece, start, start + a.query_seconds))

    approx, build_s = approx_copy(a.db)
    coll = Collection(a.db, index="exact")
    t = time.perf_counter()
    coll.embedder.batch = a.embed_batch or coll.embedder.batch  # before its first use (trace)
    coll.identify(queries[0][0], start=queries[0][2], end=queries[0][3])
    f["startup_s"], f["embed_batch"] = time.perf_counter() - t, coll.embedder.batch
    f["exact"] = latency(coll, queries)
    f["breakdown"], picked = breakdown(coll, queries)
    f["exact"]["search_only_s"] = search_only(coll, picked)
    approx._embedder = coll.embedder  # the same model, loaded once
    approx.search_index("sheet")  # index load: startup
    f["approx"] = {**latency(approx, queries), "search_only_s": search_only(approx, picked),
                   "build_s": build_s, "size": size(approx, items)}
    coll.close()
    approx.close()
    report(f, a)
    if a.json:
        a.json.write_text(json.dumps(f, indent=1))


def report(f: dict, a) -> None:
    c, r, nan = f["collection"], f["realism"], float("nan")
    print(f"collection  {c['pieces']} pieces ({c['real']} real), {c['pages']} pages, "
          f"{c['vectors']} vectors ({c['vectors_per_page']:.0f}/page); {a.threads} threads, "
          f"embedding batch {f['embed_batch']}")
    if "ingestion" in f:
        g = f["ingestion"]
        print(f"ingestion   {g['pages']} pages in {g['wall_s']:.1f} s = {g['pages_per_s']:.2f} pages/s "
              f"(target >= 2); s/page: analysis {g['analysis_s_per_page']:.3f}, embedding "
              f"{g['embedding_s_per_page']:.3f}, rest {g['rest_s_per_page']:.3f}; failed "
              f"{len(g['failed'])}; model startup {g['startup_s']:.1f} s")
    print(f"filler      nearest snippet of another piece, median cosine: real among real "
          f"{r.get('real_among_real_nn_other_sim', nan):.3f}, real among all "
          f"{r.get('real_nn_other_sim', nan):.3f}, filler among all {r.get('filler_nn_other_sim', nan):.3f};"
          f" it is filler for {r.get('real_nn_other_is_filler', 0):.0%} of real snippets "
          f"({r['filler_vector_share']:.0%} of vectors)")
    print(f"startup     model load + trace + index load + first query {f['startup_s']:.2f} s")
    print(f"latency     {a.queries} queries of {a.query_seconds:g} s (target: median <= 1 s)\n"
          f"  index   method  median    p90   top-1")
    for ix in ("exact", "approx"):
        for m in ("vote", "dtw"):
            x = f[ix][m]
            print(f"  {ix:<7} {m:<6} {x['median']:6.3f} {x['p90']:6.3f}  {x['top1']:6.1%}")
    b = f["breakdown"]
    print(f"  medians (exact): decode+spectrogram {b['decode_spectrogram']:.3f} s, "
          f"embed {b['embed']:.3f} s, search {b['search']:.3f} s")
    print(f"search      100 x 25-NN: exact {f['exact']['search_only_s'] * 1e3:.1f} ms, "
          f"HNSW {f['approx']['search_only_s'] * 1e3:.1f} ms (HNSW build {f['approx']['build_s']:.1f} s)")
    for name, s in (("exact", f["size"]), ("HNSW", f["approx"]["size"])):
        print(f"size {name:<6} {s['total'] / 1e6:.1f} MB = {s['per_page'] / 1e3:.1f} kB/page, "
              f"{s['per_piece'] / 1e3:.1f} kB/piece (FAISS {s['faiss_per_page'] / 1e3:.1f} kB/page; "
              f"items {s['items'] / 1e6:.1f} MB, SQLite {s['sqlite'] / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
