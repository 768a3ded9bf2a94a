"""Compressed approximate search for large collections: IVF-PQ with exact cosine re-ranking.

At IMSLP size (about ten million sheet snippets) neither exact search (100 query snippets cost
~1.2 s per million vectors on one core here) nor HNSW (about three times the size of the vectors
in memory) fits a laptop. A FAISS ``IVF{nlist},PQ16`` index keeps 16 bytes per 32-d embedding
(product quantisation, Jégou et al. 2011, "Product quantization for nearest neighbor search",
IEEE TPAMI 33(1)) in ``nlist`` inverted lists, of which ``nprobe`` are scanned per query; its
``rerank`` best candidates are then scored exactly by cosine against the stored float16
embeddings, kept in one row-ordered file that is memory-mapped, so only the rows a query touches
are read. ``RerankedIndex.search`` answers like a FAISS index: (similarities, rows), best first.

Defaults (``PROBE_SHARE``, ``RERANK``, ``PQ_BYTES``) were chosen on ``benchmarks/scale.py``'s
1,023,058-vector collection (26 real music21 pieces + filler) with 1,000 real audio query snippets,
i.e. tuned on that benchmark (docs/scale.md): with 4,096 lists, nprobe 32 / 64 / 128 gave recall@25
against exact search 0.959 / 0.987 / 0.997 at 0.10 / 0.14 / 0.23 ms per query snippet (rerank 100;
rerank 200 adds nothing). On 803,075 vectors, OPQ in front of PQ16 did not raise recall.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COMPRESSED_THRESHOLD = 1_000_000  # vectors of one kind above which "auto" uses the compressed index
PROBE_SHARE = 64  # 1 / the share of inverted lists scanned per query snippet (nprobe = nlist / 64)
MIN_NPROBE = 16
RERANK = 100  # candidates re-scored exactly per query snippet
PQ_BYTES = 16  # bytes per vector: 16 sub-quantisers of 8 bits
TRAIN_PER_LIST = 39  # training vectors per inverted list (FAISS's k-means wants at least 39)
MAX_TRAIN = 1_000_000  # training vectors at most (a sample of the collection)
ADD_BLOCK = 1 << 18  # vectors added (and copied) at a time: bounded memory
MIN_VECTORS = 10_000  # fewer vectors are searched exactly even where "compressed" is asked for


def n_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest 4 √n, within 64 … 65,536."""
    return int(2 ** np.clip(np.round(np.log2(max(4.0 * np.sqrt(max(n, 1)), 1.0))), 6, 16))


def train(vectors, d: int, n: int, seed: int = 0):
    """A trained, empty ``IVF{nlist},PQ16`` index (inner product) for a collection of ``n``
    vectors (``n_lists``), trained on an evenly spread sample of at most ``MAX_TRAIN`` of them
    (``TRAIN_PER_LIST`` per list). ``vectors``: a callable ``(start, stop) → float rows
    (stop - start, d)`` giving rows in order (e.g. a slice of memory-mapped float16 rows files),
    so a collection larger than memory is read block by block. ``ValueError`` under
    ``MIN_VECTORS`` vectors."""
    import faiss

    if n < MIN_VECTORS:
        raise ValueError(f"a compressed index needs at least {MIN_VECTORS:,} vectors, not {n:,}")
    nlist = n_lists(n)
    while nlist > 64 and n < nlist * TRAIN_PER_LIST:  # too few vectors for the lists: fewer lists
        nlist //= 2
    ix = faiss.index_factory(d, f"IVF{nlist},PQ{PQ_BYTES}", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(ix).do_polysemous_training = False  # only for Hamming-filtered search: not used
    want = min(n, MAX_TRAIN, max(nlist * TRAIN_PER_LIST, 65_536))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, want, replace=False)) if want < n else np.arange(n)
    sample = np.concatenate([vectors(a, min(a + ADD_BLOCK, n))[pick[(pick >= a) & (pick < a + ADD_BLOCK)] - a]
                             for a in range(0, n, ADD_BLOCK)])
    ix.train(np.ascontiguousarray(sample, np.float32))
    return ix


SHARD_BITS = 40  # a compressed shard's row ids: shard << SHARD_BITS | row within the shard
LOCAL = (1 << SHARD_BITS) - 1


def fill(index, vectors, n: int, shard: int = 0):
    """Add rows 0 … ``n`` of ``vectors`` (as ``train``'s) to ``index`` block by block, after the
    rows it has, with ids ``shard << SHARD_BITS | row`` (shard 0: the rows themselves), so the
    lists of several shards can be searched as one (``shards.ShardedIndex``); returns it."""
    for a in range(0, n, ADD_BLOCK):
        block = np.ascontiguousarray(vectors(a, min(a + ADD_BLOCK, n)), np.float32)
        ids = (np.int64(shard) << SHARD_BITS) + np.arange(index.ntotal, index.ntotal + len(block), dtype=np.int64)
        index.add_with_ids(block, ids)
    return index


def build(vectors, d: int, n: int, seed: int = 0):
    """A trained, filled ``IVF,PQ`` index of ``n`` vectors: ``fill(train(...))``."""
    return fill(train(vectors, d, n, seed), vectors, n)


def stacked(parts: list[np.ndarray]):
    """``vectors(start, stop)`` over several row arrays (e.g. the memory-mapped rows files of a
    kind's shards) read as one, in order."""
    firsts = np.cumsum([0] + [len(p) for p in parts])

    def vectors(a: int, b: int) -> np.ndarray:
        i = int(np.searchsorted(firsts, a, "right")) - 1
        out = []
        while a < b:
            take = min(b, int(firsts[i + 1])) - a
            out.append(np.asarray(parts[i][a - firsts[i]:a - firsts[i] + take], np.float32))
            a += take
            i += 1
        return np.concatenate(out) if out else np.zeros((0, parts[0].shape[1] if parts else 0), np.float32)
    return vectors


def is_compressed(index) -> bool:
    """True for an IVF index of any kind (what ``build`` makes)."""
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def write_rows(path: Path, blocks, n: int, d: int) -> None:
    """Write the row-ordered float16 embeddings (n, d) to ``path`` (.npy) atomically, from an
    iterable of float arrays in row order, without holding them all in memory."""
    from audiosheet.files import atomic_path

    with atomic_path(path, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, d))
        at = 0
        for b in blocks:
            out[at:at + len(b)] = b
            at += len(b)
        if at != n:
            raise ValueError(f"{path}: {at} rows written, {n} expected")
        out.flush()
        del out


class RerankedIndex:
    """An IVF-PQ index and the exact embeddings it re-ranks with; searched like a FAISS index.

    ``rows``: float16 (N, d), usually memory-mapped. ``search(q, k)`` → (cosine (B, k) float32,
    rows (B, k) int64), best first; -1 (similarity -inf) where fewer than k were found."""

    def __init__(self, index, rows: np.ndarray, nprobe: int | None = None, rerank: int = RERANK):
        import faiss

        if index.ntotal != len(rows):
            raise ValueError(f"index has {index.ntotal} rows, the stored embeddings {len(rows)}")
        self.index, self.rows, self.rerank = index, rows, int(rerank)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(nprobe or max(MIN_NPROBE, ivf.nlist // PROBE_SHARE))

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def candidates(self, q: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best rows per query by the compressed codes: (approximate similarities
        (B, n), rows (B, n), -1 where fewer)."""
        sim, ids = self.index.search(np.ascontiguousarray(q, np.float32), int(n))
        return sim, np.where(ids >= 0, ids & LOCAL, -1)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, np.float32)
        _, cand = self.candidates(q, max(int(k), self.rerank))
        return rerank(q, cand, k, lambda rows: self.rows[rows])


def rerank(q: np.ndarray, cand: np.ndarray, k: int, read) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of the candidate rows ``cand`` (B, n) (-1: none) most similar to each query by
    exact cosine: (similarities (B, k) float32, rows (B, k)), best first. ``read(sorted rows)`` →
    their float rows (d columns), read in file order."""
    safe = np.where(cand >= 0, cand, 0)
    order = np.argsort(safe, axis=None, kind="stable")  # read the mapped rows in file order
    flat = np.empty((safe.size, q.shape[1]), np.float32)
    flat[order] = read(safe.ravel()[order])
    sim = np.einsum("bkd,bd->bk", flat.reshape(*safe.shape, -1), q)
    sim[cand < 0] = -np.inf
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, top, 1), np.take_along_axis(cand, top, 1)
