"""Training-pair extraction speed on one core (memory-mapped and in-memory corpora).

    python benchmarks/snippet_extraction.py [--corpus DIR] [--split train] [--context 42]

Without --corpus a small corpus is built first (music21, 30 pieces). Reports pairs/s of
`SnippetPairs.batch` with batches of 100 random pairs and of one-by-one `ds[i]`.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from audiosheet.corpus.build import build  # noqa: E402
from audiosheet.training.pairs import SnippetPairs  # noqa: E402


def rate(fn, n_pairs: int, min_time: float = 2.0) -> float:
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        done += n_pairs
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--split", default="train")
    ap.add_argument("--context", type=int, default=42)
    a = ap.parse_args()
    corpus = a.corpus
    if corpus is None:
        corpus = Path(tempfile.mkdtemp(prefix="audiosheet-snip-")) / "corpus"
        build("music21", corpus, limit=30, workers=2, progress=False)
    rng = np.random.default_rng(0)
    # memory-mapped twice: the first pass may read from disk, the second from the page cache
    for name, mmap in (("memory-mapped, pass 1", True), ("memory-mapped, pass 2", True),
                       ("in memory", False)):
        t = time.perf_counter()
        ds = SnippetPairs(corpus, a.split, context=a.context, mmap=mmap)
        load = time.perf_counter() - t
        single = lambda: [ds[i] for i in rng.integers(0, len(ds), 100)]  # noqa: E731
        batch = lambda: ds.batch(rng.integers(0, len(ds), 100))  # noqa: E731
        print(f"{name:22s}: {len(ds)} pairs ({len(ds.pieces)} pieces, opened in {load:.1f} s); "
              f"ds[i]: {rate(single, 100):,.0f} pairs/s; batch(100): {rate(batch, 100):,.0f} pairs/s "
              f"(target >= 2,000 pairs/s)")


if __name__ == "__main__":
    main()
