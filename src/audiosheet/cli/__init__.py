"""Command line: a thin layer over the Python API (heavy imports happen inside the commands)."""
from __future__ import annotations

import argparse
import sys

from audiosheet.cli import collection, corpus, training


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiosheet", description="Link music recordings with sheet music.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")
    corpus.add_commands(sub)
    training.add_commands(sub)
    collection.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from audiosheet import __version__

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
