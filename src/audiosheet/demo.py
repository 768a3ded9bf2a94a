"""The demo: a small collection of held-out scores, identified from recordings.

``audiosheet demo --out DIR`` engraves a few pieces the shipped model never saw in training (the
held-out pieces listed on its card) and renders recordings of them with the test-only SoundFont
and a varying tempo; writes the scores as PDF files and the recordings as FLAC; indexes the PDFs
from their pixels; identifies excerpts of the recordings; prints a table and draws the best match
of the first query on its page.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def held_out_pieces(model: str, max_pages: int = 3) -> list[str]:
    """music21 pieces of the model's corpus test split (in neither its training nor its validation
    data) with at most ``max_pages`` pages: the demo engraves them from music21's corpus."""
    from audiosheet.corpus.splits import reference_test
    from audiosheet.models.checkpoint import shipped_models

    card = next((c for c in shipped_models() if c["name"] == model), None)
    if card is None:
        raise ValueError(f"{model}: not a shipped model")
    held = card.get("corpus", {}).get("held_out_pieces")
    if not held:
        raise ValueError(f"{model}: its card lists no held-out pieces")
    music21 = reference_test()
    return sorted(p for p, n in held.items() if n <= max_pages and p in music21)


def run(out: str | Path, pieces: int = 8, queries: int = 6, seconds: float = 20.0,
        model: str | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo into folder ``out``; returns its summary (pieces, queries, top1,
    median_latency_s, picture, seconds) and writes ``out/demo.json``.

    Raises ``synth.MissingDependency`` (one line: what to install) before any work when the
    corpus tools are not installed, and ``RuntimeError`` when no piece could be built, exported
    or indexed (naming the failures file or the first reason) — never an empty table.
    """
    from audiosheet.corpus.synth import require_corpus_tools

    require_corpus_tools("the demo (it engraves and records a few scores)")
    from audiosheet.corpus.build import BuildOptions, build
    from audiosheet.corpus.export import export
    from audiosheet.corpus.reader import Corpus
    from audiosheet.retrieval.collection import DEFAULT_MODEL, Collection
    from audiosheet.show import show_match

    model = model or DEFAULT_MODEL
    out = Path(out)
    t0 = time.time()
    chosen = held_out_pieces(model)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(chosen, size=min(pieces, len(chosen)), replace=False).tolist())
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"[1/4] engraving and recording {len(chosen)} held-out pieces: {', '.join(chosen)}")
    build("music21", out / "corpus", workers=2, options=BuildOptions(seed=seed), progress=progress,
          pieces=chosen)
    c = Corpus(out / "corpus")
    if not c.piece_ids:
        raise RuntimeError(f"demo: none of the {len(chosen)} pieces could be built; reasons in "
                           f"{out / 'corpus' / 'failures.tsv'}")
    say("[2/4] writing them as files (PDF scores, FLAC recordings)")
    ex = export(out / "corpus", out / "files", split="all", progress=progress)
    if not ex["pieces"]:
        pid, reason = next(iter(ex["failed"].items()), ("-", "no piece in the corpus"))
        raise RuntimeError(f"demo: no piece could be exported ({pid}: {reason})")
    say("[3/4] indexing the PDFs from their pixels")
    coll = Collection(out / "collection", model=model)
    rep = coll.add([out / "files" / "sheets"], progress=progress)
    for _, reason in rep.failed:
        say(f"  failed: {reason}")
    if not rep.added and not rep.present:
        raise RuntimeError(f"demo: no score could be indexed ({rep.failed[0][1] if rep.failed else 'none given'})")
    say(f"[4/4] identifying {seconds:g}-s excerpts of the recordings")
    rows = []
    for k, pid in enumerate(ex["pieces"][:queries]):
        audio = out / "files" / "audio" / f"{pid}.flac"
        dur = float(c.info(pid)["performances"][0]["seconds"])
        start = float(rng.uniform(0, max(dur - seconds, 0)))
        res = coll.identify(audio, method="dtw", top=3, start=start, end=start + seconds)
        if k == 0:
            show_match(res, out / "match.png")
        top = res.results[0] if res.results else None
        rows.append({"query": f"{audio.name} {start:.0f}–{start + seconds:.0f} s", "true": pid,
                     "top3": [m.piece for m in res.results], "score": top.score if top else 0.0,
                     "confidence": (top.confidence or 0.0) if top else 0.0,
                     "where": (f"p{top.location['page']} s{top.location['system']}" if top else "-"),
                     "correct": bool(top and top.piece == pid), "latency_s": res.latency_s})
    w = max((len(r["query"]) for r in rows), default=len("query"))
    print(f"\n{'query':{w}s}  {'true piece':22s}  {'top-3':70s}  score  conf.  page/system")
    for r in rows:
        mark = "✓" if r["correct"] else "✗"
        print(f"{r['query']:{w}s}  {r['true']:22s}  {mark} {', '.join(r['top3']):68s}  "
              f"{r['score']:.3f}  {r['confidence']:.2f}  {r['where']}")
    summary = {"pieces": len(ex["pieces"]), "queries": len(rows),
               "top1": float(np.mean([r["correct"] for r in rows])) if rows else 0.0,
               "median_latency_s": float(np.median([r["latency_s"] for r in rows])) if rows else 0.0,
               "picture": str(out / "match.png"), "seconds": round(time.time() - t0, 1)}
    print(f"\ntop-1 {summary['top1']:.2f} over {len(rows)} queries; median query "
          f"{summary['median_latency_s']:.2f} s; highlighted page: {summary['picture']}")
    (out / "demo.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")
    return summary
