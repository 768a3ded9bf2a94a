"""``audiosheet index ... / identify / demo``: collections and queries (``audiosheet.retrieval``)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _collection(a, create: bool = False):
    from audiosheet.retrieval.collection import Collection

    return Collection(a.db, model=getattr(a, "model", None), index=getattr(a, "index", None),
                      approx_threshold=getattr(a, "approx_threshold", None), create=create)


def _index_add(a) -> int:
    ingest = None
    if a.ray not in (None, "local", "auto") and "://" not in a.ray and Path(a.ray).exists():
        a.paths, a.ray = [a.ray, *a.paths], "local"  # "--ray FILE ...": argparse took a file for ADDRESS
    if a.ray is not None:
        from audiosheet.retrieval.distributed import RayIngest

        ingest = RayIngest(address=None if a.ray == "local" else a.ray, workers=a.workers)
    elif a.workers is not None:
        raise ValueError("--workers is the number of Ray workers: use it with --ray")
    coll = _collection(a, create=True)
    rep = coll.add(a.paths, progress=not a.quiet, ingest=ingest)
    for item in rep.added:
        print(f"added   {item.describe()}")
        for w in item.info.get("warnings", []):
            print(f"        warning: {w}")
    for path, item in rep.present:
        print(f"present {path} (item {item.id}, {item.name})")
    for _, reason in rep.skipped:
        print(f"skipped {reason.removesuffix(', skipped')}", file=sys.stderr)
    for _, reason in rep.failed:
        print(f"FAILED  {reason}", file=sys.stderr)
    print(f"{a.db}: {rep.summary()}; {len(coll)} item(s) in the collection")
    return 1 if rep.failed else 0


def _index_passages(a) -> int:
    from audiosheet.retrieval.collection import DEFAULT_PASSAGE_MODEL, Collection

    coll = Collection(a.db, create=False)
    model = a.model or DEFAULT_PASSAGE_MODEL
    rep = coll.add_passage_model(model, progress=not a.quiet)
    for path, reason in rep["failed"]:
        print(f"FAILED  {reason}", file=sys.stderr)
    if rep["failed"]:
        print(f"{a.db}: passage model {model} not added: {len(rep['failed'])} item(s) failed "
              f"({rep['computed']} computed, kept for a retry)", file=sys.stderr)
        return 1
    print(f"{a.db}: passage model {model}: {rep['computed']} item(s) computed, {rep['kept']} kept")
    return 0


def _index_reembed(a) -> int:
    from audiosheet.retrieval.reembed import reembed

    rep = reembed(a.db, a.out, model=a.model, progress=not a.quiet)
    for _, reason in rep["failed"]:
        print(f"FAILED  {reason}", file=sys.stderr)
    print(f"{a.out}: {rep['items']} item(s) re-embedded from {a.db} in {rep['seconds']:.0f} s"
          + (f"; {len(rep['failed'])} failed" if rep["failed"] else ""))
    return 1 if rep["failed"] else 0


def _index_list(a) -> int:
    from dataclasses import asdict

    coll = _collection(a)
    items = coll.items()
    if a.json:
        print(json.dumps({"model": coll.model_name, "items": [asdict(i) for i in items]}))
        return 0
    print(f"{a.db}: {len(items)} item(s), model {coll.model_name}, "
          f"{sum(coll.size_on_disk().values()) / 1e6:.1f} MB")
    for i in items:
        print(i.describe())
    return 0


def _index_remove(a) -> int:
    coll = _collection(a)
    for key in a.items:
        item = coll.remove(key)
        print(f"removed {item.describe()}")
    return 0


def _identify(a) -> int:
    from audiosheet.retrieval.identify import identify

    coll = _collection(a)
    res = identify(coll, a.query, method=a.method, top=a.top, start=a.start, end=a.end,
                   segment_over=a.segment_over)
    if a.show:
        from audiosheet.show import show_match

        show_match(res, a.show)
    if a.json:
        print(json.dumps(res.to_dict()))
        return 0
    q = res.query_info
    span = f" {q['start_s']:.1f}–{q['end_s']:.1f} s" if "start_s" in q else f" {q.get('pages')} page(s)"
    print(f"{a.query}{span}: {res.method}, {res.latency_s:.2f} s")
    for w in q.get("warnings", []):
        print(f"  warning: {w}")

    def table(results, confident, indent="  "):
        if not results:
            print(f"{indent}no match")
            return
        if confident is False:
            print(f"{indent}no confident match (the piece may not be in the collection); best guesses:")
        for k, m in enumerate(results, 1):
            loc = m.location
            where = (f"page {loc['page']} system {loc['system']} x {loc['x0']:.0f}–{loc['x1']:.0f}"
                     + (f" (+{len(loc['spans']) - 1} more system(s))" if len(loc["spans"]) > 1 else "")
                     if m.kind == "sheet" else f"{loc['start_s']:.1f}–{loc['end_s']:.1f} s")
            conf = (f"  margin {m.margin:+.3f}  confidence {m.confidence:.2f}"
                    if m.confidence is not None and m.margin is not None and math.isfinite(m.margin) else
                    "  (too short for the query)" if m.confidence is not None else "")
            print(f"{indent}{k:>3}. {m.piece:40s} score {m.score:.3f}{conf}  votes {m.votes:>4}  {where}")

    if res.segments:
        print(f"  {len(res.segments)} segments of the recording (score: mean cosine along the "
              f"alignment; ranked by margin over the reversed query):")
        for s in res.segments:
            print(f"  {s['start_s']:8.1f}–{s['end_s']:.1f} s")
            table(s["results"][:min(a.top, 3)], s["confident"], indent="      ")
        print("  pieces found (best segment each):")
    table(res.results, res.confident)
    if res.confident is False and not res.segments and q.get("seconds", 0) > 120:
        print(f"  hint: several pieces in one recording? --segment-over 60 answers per 30-s segment")
    if a.show:
        print(f"picture: {a.show}")
    return 0


def _serve(a) -> int:
    import importlib.util

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if absent(m)]
    if missing:
        print(f"audiosheet: error: audiosheet serve needs the 'serve' extra (missing: {', '.join(missing)}): "
              f"pip install 'audiosheet[serve]'", file=sys.stderr)
        return 1
    from audiosheet.server.app import serve

    serve(a.db, host=a.host, port=a.port, max_upload=int(a.max_upload_mb * 1024 * 1024))
    return 0


def _demo(a) -> int:
    from audiosheet.demo import run

    run(a.out, pieces=a.pieces, queries=a.queries, seconds=a.seconds, model=a.model, seed=a.seed,
        progress=not a.quiet)
    return 0


def add_commands(sub) -> None:
    """Add this module's commands to the top-level subparsers ``sub``."""
    ix = sub.add_parser("index", help="a collection of scores and recordings (FAISS + SQLite)")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    ia = ixs.add_parser("add", help="index files and folders (recursive); re-adding a file is a no-op")
    ia.add_argument("--db", required=True, help="collection folder (created on first add)")
    ia.add_argument("paths", nargs="+", help="PDF / PNG / JPG / TIFF scores, WAV / FLAC / OGG / MP3 "
                    "recordings, or folders of them")
    ia.add_argument("--model", default=None, help="snippet model of a new collection (default: the "
                    "shipped one); an existing collection keeps its own")
    ia.add_argument("--index", choices=["auto", "exact", "approx", "compressed"], default=None,
                    help="FAISS index: exact, approximate (HNSW), compressed (IVF-PQ with exact "
                    "re-ranking, for millions of snippets), or auto by size (default auto: exact, "
                    "HNSW above --approx-threshold, compressed above 1,000,000)")
    ia.add_argument("--approx-threshold", type=int, default=None, metavar="N",
                    help="auto: vectors of one kind above which the index is approximate "
                         "(default 100,000)")
    ia.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="read and embed the files on Ray workers (the 'distributed' extra): alone, "
                    "on a local Ray instance; with ADDRESS (HEAD:6379, auto), on that cluster, whose "
                    "workers must see the files at the same paths; put it before --db, or write --ray=ADDRESS")
    ia.add_argument("--workers", type=int, default=None, metavar="N",
                    help="with --ray: Ray workers of 1 CPU each (default: this machine's CPUs, or the "
                    "cluster's with ADDRESS)")
    ia.add_argument("--quiet", action="store_true")
    ia.set_defaults(func=_index_add)
    ip = ixs.add_parser("passages", help="add a passage model: every item's passage embeddings, "
                        "from the kept front-end data (no file is read again)")
    ip.add_argument("--db", required=True)
    ip.add_argument("--model", default=None, help="passage model (default: the shipped one)")
    ip.add_argument("--quiet", action="store_true")
    ip.set_defaults(func=_index_passages)
    il = ixs.add_parser("list", help="the items of a collection")
    il.add_argument("--db", required=True)
    il.add_argument("--json", action="store_true")
    il.set_defaults(func=_index_list)
    ie = ixs.add_parser("reembed", help="copy a collection into a new one embedded with another "
                        "snippet model, from the kept front-end data (no file is read again)")
    ie.add_argument("--db", required=True, help="the collection to copy (left unchanged)")
    ie.add_argument("--out", required=True, help="the new collection's folder")
    ie.add_argument("--model", default=None, help="snippet model (default: the shipped one)")
    ie.add_argument("--quiet", action="store_true")
    ie.set_defaults(func=_index_reembed)
    ir = ixs.add_parser("remove", help="remove items (by id, name, path or content hash)")
    ir.add_argument("--db", required=True)
    ir.add_argument("items", nargs="+")
    ir.set_defaults(func=_index_remove)

    q = sub.add_parser("identify", help="which indexed score a recording is (or which recording a "
                       "score is), and where")
    q.add_argument("--db", required=True, help="collection folder (audiosheet index add)")
    q.add_argument("query", help="an audio file, or a score page / PDF")
    q.add_argument("--method", choices=["vote", "dtw", "passage"], default="dtw",
                   help="passage: needs a passage model in the collection (index passages)")
    q.add_argument("--top", type=int, default=5)
    q.add_argument("--start", type=float, default=None, help="audio query: excerpt start, s")
    q.add_argument("--end", type=float, default=None, help="audio query: excerpt end, s")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--show", default=None, metavar="OUT.png",
                   help="write the matched page with the passage highlighted")
    q.add_argument("--segment-over", type=float, default=None, metavar="S",
                   help="identify a recording longer than S seconds in 30-s segments (default: "
                        "the longest indexed item's estimated length)")
    q.set_defaults(func=_identify)

    sv = sub.add_parser("serve", help="a web page and a JSON API over a collection (model and index "
                        "loaded once); needs the 'serve' extra")
    sv.add_argument("--db", required=True, help="the collection folder (made with 'audiosheet index add')")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted (413 above)")
    sv.set_defaults(func=_serve)

    d = sub.add_parser("demo", help="index a few held-out scores and identify recordings of them")
    d.add_argument("--out", required=True, help="folder for the pieces, files, collection and picture")
    d.add_argument("--pieces", type=int, default=8)
    d.add_argument("--queries", type=int, default=6)
    d.add_argument("--seconds", type=float, default=20.0, help="length of each audio excerpt")
    d.add_argument("--model", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_demo)
