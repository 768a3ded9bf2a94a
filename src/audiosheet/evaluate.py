"""Evaluation: cross-modal snippet retrieval (audio → sheet and sheet → audio).

Protocol of Dorfer et al. 2018: N test pairs sampled evenly over the test pieces; every audio snippet
ranks all N sheet snippets by cosine similarity (a2s) and every sheet snippet all N audio snippets
(s2a). Reported: recall at 1, 5, 10 and 25, mean reciprocal rank, median and mean rank.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from audiosheet.metrics import ranks, retrieval_metrics, summarise


def evaluate_snippets(corpus: str | Path, model, split: str = "test", pairs: int = 2000, seed: int = 0,
                      progress: bool = False) -> dict:
    """Snippet retrieval metrics of ``model`` (a SnippetModel or a MODEL name) on a corpus split."""
    from tqdm import tqdm

    from audiosheet.models.checkpoint import is_passage, load_model
    from audiosheet.models.embed import Embedder
    from audiosheet.training.pairs import SnippetPairs
    from audiosheet.training.samplers import evaluation_pairs

    if not isinstance(model, torch.nn.Module):
        model = load_model(model)
    if is_passage(model):
        raise ValueError(f"{model.config.name}: a passage model; evaluate it with 'evaluate passages'")
    data = SnippetPairs(corpus, split, context=model.config.context)
    if len(data) < 2:
        raise ValueError(f"{corpus}: split '{split}' has fewer than 2 pairs")
    idx = evaluation_pairs(data, pairs, seed=seed)
    t0 = time.perf_counter()
    emb = Embedder(model)
    es, ea = [], []
    for i in tqdm(range(0, len(idx), 1000), disable=not progress, desc="embed", unit="k pairs"):
        s, a = data.batch(idx[i:i + 1000])
        es.append(emb.sheet(s))
        ea.append(emb.audio(a))
    es, ea = torch.from_numpy(np.concatenate(es)), torch.from_numpy(np.concatenate(ea))
    out = retrieval_metrics(ea @ es.T)
    out.update(split=split, pieces=len(data.pieces), seed=seed, model=model.config.name,
               embed_s=round(time.perf_counter() - t0, 2))
    return out


def evaluate_pieces(corpus: str | Path, split: str = "test", direction: str = "a2s",
                    method: str = "dtw", query_seconds: float = 30.0, model: str | None = None,
                    work: str | Path | None = None, limit: int | None = None, seed: int = 0,
                    passage_model: str | None = None, progress: bool = False) -> dict:
    """Piece identification on a corpus split, through files only.

    The split is exported as a user would have it (``corpus.export``: PDF scores, FLAC
    recordings of the held-out test performance); the scores (a2s) or recordings (s2a) are
    indexed into a collection from their pixels or audio alone; each piece is then queried once:
    a2s with a ``query_seconds`` excerpt of its recording (seeded start), s2a with one page of its
    score (seeded). Reports top-1, top-5, MRR, and the median latency of one query (decode or
    read, front end, embedding, search, vote/dtw). A piece that ``dtw`` does not rank (outside its
    vote shortlist) counts as not found (reciprocal rank 0).
    """
    from tqdm import tqdm

    from audiosheet.corpus.export import export
    from audiosheet.corpus.reader import Corpus
    from audiosheet.files import sha256_file
    from audiosheet.models.checkpoint import resolve_model
    from audiosheet.retrieval.collection import DEFAULT_MODEL, Collection
    from audiosheet.retrieval.identify import identify

    if direction not in ("a2s", "s2a"):
        raise ValueError(f"direction must be a2s or s2a, not {direction!r}")
    c = Corpus(corpus)
    model = model or DEFAULT_MODEL
    work = Path(work) if work else c.root / "eval" / split
    ex = export(c.root, work, split=split, limit=limit, progress=progress)
    ids = ex["pieces"]
    if not ids:
        raise ValueError(f"{corpus}: split '{split}' has no pieces to evaluate")
    tag = sha256_file(resolve_model(model))[:10]
    coll = Collection(work / f"collection-{tag}", model=model)
    kind = "sheets" if direction == "a2s" else "audio"
    suffix = ".pdf" if direction == "a2s" else ".flac"
    have = {i.name for i in coll.items("sheet" if direction == "a2s" else "audio")}
    todo = [work / kind / f"{pid}{suffix}" for pid in ids if pid not in have]
    unindexed = []  # files the collection refuses (e.g. a degraded page without detectable staves)
    if todo:
        rep = coll.add(todo, progress=progress)
        unindexed = [{"file": str(f), "error": str(e)} for f, e in rep.failed]
        for u in unindexed:
            print(f"warning: not indexed, its piece counts as not found: {u['error']}", file=sys.stderr)
    if method == "passage":  # the collection's passage model, added (or switched) first
        from audiosheet.retrieval.collection import DEFAULT_PASSAGE_MODEL

        pm = passage_model or DEFAULT_PASSAGE_MODEL
        if coll.settings.get("passage_model_sha256") != sha256_file(resolve_model(pm)):
            rep = coll.add_passage_model(pm, progress=progress)
            if rep["failed"]:
                raise ValueError(f"{corpus}: passage model {pm}: {rep['failed'][0][1]}")
    rng = np.random.default_rng(seed)
    ranks_, lat, per = [], [], []
    for pid in tqdm(ids, desc=f"{direction} {method}", unit="query", disable=not progress):
        if direction == "a2s":
            info = c.info(pid)["performances"][0]
            dur = float(info["seconds"])
            t0 = float(rng.uniform(0, max(dur - query_seconds, 0.0)))
            query, kw = work / "audio" / f"{pid}.flac", {"start": t0, "end": t0 + query_seconds}
            what = f"{t0:.1f}-{t0 + query_seconds:.1f} s"
        else:
            n = len(c.info(pid)["pages"])
            page = int(rng.integers(n))
            query, kw = c.piece_dir(pid) / f"page_{page + 1}.png", {}
            what = f"page {page + 1}"
        try:
            res = identify(coll, query, method=method, top=10**6, **kw)
        except Exception as exc:  # an unreadable query is a miss, reported, and the run goes on
            ranks_.append(np.inf)
            per.append({"piece": pid, "query": what, "rank": None, "top": [], "error": f"{type(exc).__name__}: {exc}"})
            print(f"warning: query {query} failed, counted as not found: {exc}", file=sys.stderr)
            continue
        lat.append(res.latency_s)
        names = [m.piece for m in res.results]
        ranks_.append(names.index(pid) + 1 if pid in names else np.inf)
        per.append({"piece": pid, "query": what, "rank": ranks_[-1] if np.isfinite(ranks_[-1]) else None,
                    "top": names[:3], "latency_s": round(res.latency_s, 3)})
    r = np.asarray(ranks_, float)
    lat = lat or [float("nan")]
    return {"top1": float(np.mean(r <= 1)), "top5": float(np.mean(r <= 5)),
            "MRR": float(np.mean(1.0 / r)), "queries": len(r), "pieces": len(ids),
            "latency_s": float(np.median(lat)), "latency_p90_s": float(np.percentile(lat, 90)),
            "direction": direction, "method": method,
            **({"passage_model": coll.passage_model_name} if method == "passage" else {}),
            "query": f"{query_seconds:g} s excerpt" if direction == "a2s" else "one page",
            "split": split, "model": coll.model_name, "collection_items": len(coll),
            "unindexed": unindexed, "failed_queries": sum(1 for q in per if "error" in q),
            "per_query": per}


def evaluate_passages(corpus: str | Path, model, split: str = "test", pairs: int = 2000, seed: int = 0,
                      sheet_hop: int = 20, audio_hop: int = 10, progress: bool = False) -> dict:
    """Passage retrieval (a system, or 2–3 consecutive ones, and the audio it covers) on a split.

    The pool: ``pairs`` distinct sheet passages spread over the passage lengths (``passages.
    passage_pool``), each with one of its performances. ``model``: a passage model (recurrent
    summary of the passage), or a snippet model — the averaging baseline: its embeddings of
    snippet windows tiling the passage (sheet every ``sheet_hop`` columns, audio every
    ``audio_hop`` frames, the last window padded with paper / silence) averaged and normalised.
    Reports the snippet metrics for both directions, and the same by passage length."""
    from audiosheet.models.checkpoint import is_passage, load_model
    from audiosheet.training.passages import PassagePairs, passage_pool

    if not isinstance(model, torch.nn.Module):
        name = str(model)
        model = load_model(model)
    else:
        name = model.config.name
    passage = is_passage(model)
    cfg = model.config
    kw = dict(audio_window=cfg.audio_window, audio_hop=cfg.audio_hop, sheet_window=cfg.sheet_window,
              sheet_hop=cfg.sheet_hop) if passage else {}
    data = PassagePairs(corpus, split, cache=Path(corpus) / "passage_columns.json", **kw)
    if len(data) < 2:
        raise ValueError(f"{corpus}: split '{split}' has fewer than 2 passages")
    idx = passage_pool(data, pairs, seed=seed)
    t0 = time.perf_counter()
    if passage:
        from audiosheet.training.train import embed_passages

        es, ea = embed_passages(model, data, idx, progress=progress)
    else:
        es, ea = average_snippets(model, data, idx, sheet_hop, audio_hop, progress)
    out = retrieval_metrics(ea @ es.T)
    r_a2s, r_s2a = ranks(ea @ es.T), ranks((ea @ es.T).T)
    n_sys = data.passages["systems"][idx]
    out["by_length"] = {str(n): {"a2s": summarise(r_a2s[n_sys == n]), "s2a": summarise(r_s2a[n_sys == n]),
                                 "pairs": int((n_sys == n).sum())} for n in np.unique(n_sys)}
    out.update(split=split, pieces=len(np.unique(data.passages["piece"][idx])), seed=seed, model=name,
               method="recurrent" if passage else "average", failed_pieces=len(data.failed),
               embed_s=round(time.perf_counter() - t0, 2))
    return out


def average_snippets(model, data, indices, sheet_hop: int = 20, audio_hop: int = 10,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaging baseline: per passage, the mean of a snippet model's embeddings of the snippet
    windows that tile it, L2-normalised → (sheet (N, d), audio (N, d))."""
    import torch.nn.functional as F
    from tqdm import tqdm

    from audiosheet.frontend.windows import windows
    from audiosheet.models.embed import Embedder

    emb = Embedder(model)
    h, w = model.config.sheet_shape
    es, ea = [], []
    for i in tqdm(indices, disable=not progress, desc="embed", unit="passage"):
        s = windows(data.sheet(int(i)), w, sheet_hop, 0.0)
        a = windows(data.audio(int(i)), model.config.context, audio_hop, 0.0)
        es.append(emb.sheet(s).mean(0))
        ea.append(emb.audio(a).mean(0))
    return (F.normalize(torch.from_numpy(np.stack(es)), dim=1),
            F.normalize(torch.from_numpy(np.stack(ea)), dim=1))


def read_labels(folder: Path) -> list[tuple[str, str]]:
    """(query file name, piece name or "-") from FOLDER/labels.tsv: two tab-separated columns,
    an optional header line ``query<TAB>piece``; ``#`` starts a comment. ``ValueError`` (one line)
    for a missing file or a malformed line."""
    path = Path(folder) / "labels.tsv"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (a labels.tsv with 'query<TAB>piece' lines is needed)")
    out = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) < 2 or not cols[0] or not cols[1]:
            raise ValueError(f"{path}:{no}: expected 'query<TAB>piece', got {line[:60]!r}")
        if no == 1 and cols[:2] == ["query", "piece"]:
            continue
        out.append((cols[0], cols[1]))
    if not out:
        raise ValueError(f"{path}: no labelled queries")
    return out


def evaluate_folder(folder: str | Path, method: str = "dtw", db: str | Path | None = None,
                    model: str | None = None, top: int = 10, query_seconds: float | None = None,
                    progress: bool = False, **options) -> dict:
    """Piece identification on a folder of real files, as a user has them.

    Layout: ``FOLDER/sheets/`` (scores: PDFs or images, one file per item; a piece's name is its
    file name without suffix), optionally ``FOLDER/recordings/`` (recordings to index, for score
    queries), ``FOLDER/queries/`` (recordings or score pages) and ``FOLDER/labels.tsv`` (query file
    name → piece name; ``-`` for a query whose piece is not indexed: the open set).
    The sheets (and recordings) are indexed into ``db`` (default ``FOLDER/.collection-TAG``,
    reused on later runs; copied with ``reembed.reembed`` from another model's ``.collection-*``
    there when one was made by today's front end) and every query is identified with ``method``
    (``options`` go to ``identify``). Reports, over queries whose piece is indexed: top-1, top-5, MRR (a piece not
    ranked counts 0), shortlist recall (the piece among the items dtw re-ranked; vote: among the
    results), TPR (top-1 right and confident); over open-set queries: FPR (a confident match);
    the median latency of one query (front end, model, search, ranking); and per query its
    answer. Files that cannot be indexed or queried are listed in ``failed`` and skipped.
    """
    from tqdm import tqdm

    from audiosheet.files import sha256_file
    from audiosheet.models.checkpoint import resolve_model
    from audiosheet.retrieval.collection import DEFAULT_MODEL, Collection
    from audiosheet.retrieval.identify import identify

    folder = Path(folder)
    if not (folder / "sheets").is_dir() or not (folder / "queries").is_dir():
        raise ValueError(f"{folder}: expected sheets/, queries/ and labels.tsv in it")
    labels = read_labels(folder)
    labelled = {q for q, _ in labels}
    unlabelled = sorted(f.name for f in (folder / "queries").iterdir()
                        if f.is_file() and not f.name.startswith(".") and f.name not in labelled)
    model = model or DEFAULT_MODEL
    db = Path(db) if db else folder / f".collection-{sha256_file(resolve_model(model))[:10]}"
    if not (db / "collection.sqlite").exists():  # another model's collection of the folder, made
        from audiosheet.retrieval.store import front_end_version  # by today's front end: copy it

        others = [c for c in (Collection(d, create=False) for d in folder.glob(".collection-*")
                              if (d / "collection.sqlite").is_file())
                  if c.settings.get("front_end") == front_end_version()]
        if others:
            from audiosheet.retrieval.reembed import reembed

            reembed(max(others, key=len).root, db, model=model, progress=progress)
    coll = Collection(db, model=model)
    rep = coll.add([p for p in (folder / "sheets", folder / "recordings") if p.is_dir()], progress=progress)
    failed = list(rep.failed)
    indexed = {i.name for i in coll.items()}
    rows, lat = [], []
    for name, piece in tqdm(labels, desc=f"queries ({method})", unit="query", disable=not progress):
        qpath = folder / "queries" / name
        try:
            res = identify(coll, qpath, method=method, top=max(top, 30),  # all margins, for calibration
                           end=query_seconds if query_seconds else None, **options)
        except (ValueError, OSError) as exc:
            failed.append((str(qpath), str(exc)))
            continue
        lat.append(res.latency_s)
        names = [m.piece for m in res.results][:top]
        known = piece != "-"
        if known and piece not in indexed:
            import difflib

            near = difflib.get_close_matches(piece, sorted(indexed), n=1)
            failed.append((str(qpath), f"{qpath}: label '{piece}' names no indexed item"
                                       + (f" (did you mean '{near[0]}'?)" if near else "")))
            continue
        rank = names.index(piece) + 1 if known and piece in names else None
        answers = [m.to_dict() for m in res.results]  # rounded; non-finite margins as None
        shortlist = res.query_info.get("shortlist", names)
        rows.append({"query": name, "piece": piece, "rank": rank,
                     "in_shortlist": bool(known and piece in shortlist),
                     "confident": res.confident, "match": res.best.piece if res.best else None,
                     "top": [{k: m[k] for k in ("piece", "score", "margin", "confidence")}
                             for m in answers[:5]],
                     "margins": [m["margin"] for m in answers],
                     "warnings": res.query_info.get("warnings", []),
                     "latency_s": round(res.latency_s, 3)})
    pos = [r for r in rows if r["piece"] != "-"]
    neg = [r for r in rows if r["piece"] == "-"]
    rr = np.array([1.0 / r["rank"] if r["rank"] else 0.0 for r in pos])
    ok = lambda r: r["confident"] is not False and bool(r["top"])  # noqa: E731 (no confidence: always)
    return {"folder": str(folder), "method": method, "model": coll.model_name, "options": options,
            "queries": len(pos), "open_set_queries": len(neg),
            "pieces": len({r["piece"] for r in pos}), "collection_items": len(coll),
            "top1": float(np.mean(rr == 1.0)) if len(pos) else 0.0,
            "top5": float(np.mean(rr >= 0.2)) if len(pos) else 0.0,
            "MRR": float(rr.mean()) if len(pos) else 0.0,
            "shortlist_recall": float(np.mean([r["in_shortlist"] for r in pos])) if pos else 0.0,
            "tpr": float(np.mean([r["rank"] == 1 and ok(r) for r in pos])) if pos else 0.0,
            "open_set_fpr": float(np.mean([ok(r) for r in neg])) if neg else 0.0,
            "latency_s": float(np.median(lat)) if lat else 0.0,
            "failed": failed, "unlabelled": unlabelled, "per_query": rows}
