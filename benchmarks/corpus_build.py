"""Corpus build benchmark: pieces/s and peak memory (all build processes together).

    python benchmarks/corpus_build.py [--limit N] [--workers 2] [--out DIR] [--keep]

Runs `audiosheet corpus build` in a subprocess and samples the resident memory of its whole process
tree every 0.5 s. Without --limit it builds the full music21 corpus (the figure in docs/corpus.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="corpus folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary corpus")
    a = ap.parse_args()
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="audiosheet-bench-")) / "corpus"
    cmd = [sys.executable, "-m", "audiosheet.cli", "corpus", "build", "--source", "music21",
           "--out", str(out), "--workers", str(a.workers), "--seed", str(a.seed), "--quiet"]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.5)
    wall = time.time() - t0
    summary = json.loads(proc.stdout.read())
    stats = json.loads(subprocess.run([sys.executable, "-m", "audiosheet.cli", "corpus", "stats",
                                       str(out), "--json"], capture_output=True, text=True).stdout)
    built = summary["pieces"] - summary["already_done"]
    print(f"corpus:        {out}")
    print(f"workers:       {a.workers}")
    print(f"sources:       {summary['sources']}  pieces: {summary['pieces']}  failed: {summary['failed']}")
    print(f"failures:      {summary['failures_by_reason']}")
    print(f"splits:        {stats['splits']}")
    print(f"pages:         {stats['pages']}  pairs: {stats['pairs']}  audio hours: {stats['audio_hours']}")
    print(f"wall time:     {wall:.1f} s  (stage 1 scores {summary['seconds']['scores']} s, "
          f"stage 2 render {summary['seconds']['render']} s)")
    print(f"pieces/s:      {built / wall:.3f}")
    print(f"peak memory:   {peak / 2**30:.2f} GiB (all build processes)")
    if not a.out and not a.keep:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
