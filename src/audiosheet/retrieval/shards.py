"""Sharded search indexes: each kind's snippet embeddings in shards of at most ``shard_rows`` rows.

At IMSLP size one FAISS file per kind means every ``add`` rewrites gigabytes. Instead, items are
assigned to shards in the order they are added (an item is never split; a shard is closed when the
next item would take it past ``shard_rows``), and an ``add`` writes only the shard it grows. Files
in the collection's ``faiss/`` folder::

    KIND.sS.gG.faiss        shard S of KIND as written by generation G: the embeddings of its items
                            in item-id order
    KIND.sS.gG.rows.npy     compressed index only: the shard's rows as float16, for re-ranking
    KIND.trained.gG.faiss   compressed index only: the trained, empty IVF-PQ index every shard of
                            KIND starts as (one coarse quantiser and one codebook for all shards,
                            so a new shard needs no training and their similarities compare)

The manifest is the ``shards`` table of ``collection.sqlite`` — (kind, shard, gen, rows, index) —
changed in the same transaction as the items, so a kill at any moment leaves the previous
generation's files and manifest; files no manifest row names are removed by the next write.
``ShardedIndex`` searches the shards of a kind as one index: fan out, merge by similarity; compressed
shards (one quantiser) as one compressed index whose lists are the shards' lists side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SHARD_ROWS = 1_000_000  # rows per shard at most (an add rewrites one shard: ~90 MB compressed)


def shard_file(root: Path, kind: str, shard: int, gen: int, rows: bool = False) -> Path:
    """``faiss/KIND.sS.gG.faiss`` (or its ``.rows.npy``) of a collection folder."""
    return Path(root) / "faiss" / f"{kind}.s{int(shard)}.g{int(gen)}.{'rows.npy' if rows else 'faiss'}"


def trained_file(root: Path, kind: str, gen: int) -> Path:
    """``faiss/KIND.trained.gG.faiss``: the trained empty compressed index of a kind."""
    return Path(root) / "faiss" / f"{kind}.trained.g{int(gen)}.faiss"


def kind_of_index(ix) -> str:
    """"compressed" (IVF), "approx" (HNSW) or "exact" for a FAISS index."""
    import faiss

    from audiosheet.retrieval.ann import is_compressed

    if is_compressed(ix):
        return "compressed"
    return "approx" if isinstance(ix, faiss.IndexHNSWFlat) else "exact"


def new_index(kind: str, d: int, hnsw_m: int = 32, ef_construction: int = 80):
    """An empty exact (``IndexFlatIP``) or approximate (``IndexHNSWFlat``, inner product) index of
    ``d`` dimensions."""
    import faiss

    if kind == "approx":
        ix = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = ef_construction
        return ix
    if kind != "exact":
        raise ValueError(f"no empty {kind!r} index: a compressed one starts from its trained index")
    return faiss.IndexFlatIP(d)


class ShardedIndex:
    """The shards of one kind searched as one index: ``search(q, k)`` asks every shard for its
    ``k`` best, shifts their rows by the shard's first row and keeps the ``k`` most similar —
    (similarities (B, k) float32, rows (B, k) int64), best first, -1 (similarity -inf) where fewer
    than ``k`` rows exist. With exact shards the answer is that of one exact index over all rows
    (up to the order of equal similarities)."""

    def __init__(self, parts: list, firsts: list[int], shards: list[int] | None = None):
        if len(parts) != len(firsts):
            raise ValueError("one first row per shard")
        self.parts, self.firsts = list(parts), [int(f) for f in firsts]
        self.shards = list(range(len(parts))) if shards is None else [int(s) for s in shards]
        self._merged = _merged_lists(self.parts, self.shards)  # compressed shards of one quantiser
        self._base = np.full(max(self.shards) + 1, -1, np.int64) if self.shards else np.zeros(0, np.int64)
        self._base[self.shards] = self.firsts  # shard number → its first row

    @property
    def ntotal(self) -> int:
        return sum(p.ntotal for p in self.parts)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, np.float32)
        if self._merged is not None:
            return self._search_merged(q, int(k))
        sims, rows = [], []
        for part, first in zip(self.parts, self.firsts):
            if part.ntotal == 0:
                continue
            d, i = part.search(q, min(int(k), part.ntotal))
            d = np.where(i >= 0, d, -np.inf).astype(np.float32)
            sims.append(d)
            rows.append(np.where(i >= 0, i + first, -1))
        if not sims:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        sim, row = np.concatenate(sims, axis=1), np.concatenate(rows, axis=1)
        if sim.shape[1] < k:
            pad = k - sim.shape[1]
            sim = np.pad(sim, ((0, 0), (0, pad)), constant_values=-np.inf)
            row = np.pad(row, ((0, 0), (0, pad)), constant_values=-1)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sim, top, 1), np.take_along_axis(row, top, 1)

    def _search_merged(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Compressed shards of one quantiser searched as one compressed index: each inverted
        list is the concatenation of the shards' lists (FAISS ``HStackInvertedLists``), so a query
        scans ``nprobe`` lists once, whatever the number of shards; its best ``rerank`` rows (ids
        ``shard << SHARD_BITS | row``) are re-ranked by exact cosine from their shards' rows files."""
        from audiosheet.retrieval.ann import LOCAL, SHARD_BITS, rerank

        index, _ = self._merged
        _, ids = index.search(q, max(k, self.parts[0].rerank))
        cand = np.where(ids >= 0, self._base[np.where(ids >= 0, ids >> SHARD_BITS, 0)] + (ids & LOCAL), -1)
        starts = np.asarray(self.firsts)

        def read(rows: np.ndarray) -> np.ndarray:  # sorted global rows, each from its shard's file
            out = np.empty((len(rows), q.shape[1]), np.float32)
            part = np.searchsorted(starts, rows, "right") - 1
            for i in np.unique(part):
                at = part == i
                out[at] = self.parts[i].rows[rows[at] - starts[i]]
            return out

        return rerank(q, cand, k, read)


def _merged_lists(parts: list, shards: list[int]):
    """(one IVF-PQ index whose lists are the shards' lists side by side, the objects it points
    into) when ``parts`` are compressed shards (``RerankedIndex``) of one quantiser, each holding
    the ids ``fill`` gives its shard; else None (searched shard by shard)."""
    import faiss

    from audiosheet.retrieval.ann import SHARD_BITS, RerankedIndex

    if len(parts) < 2 or not all(isinstance(p, RerankedIndex) for p in parts):
        return None
    ivfs = [faiss.extract_index_ivf(p.index) for p in parts]
    first = faiss.vector_to_array(faiss.downcast_index(ivfs[0].quantizer).codes)
    for ivf, shard in zip(ivfs, shards):
        if ivf.nlist != ivfs[0].nlist or not np.array_equal(
                faiss.vector_to_array(faiss.downcast_index(ivf.quantizer).codes), first):
            return None
        listed = next((j for j in range(ivf.nlist) if ivf.invlists.list_size(j)), None)
        if listed is not None and int(faiss.rev_swig_ptr(ivf.invlists.get_ids(listed), 1)[0]) >> SHARD_BITS != shard:
            return None  # made before shard ids
    lists = faiss.InvertedListsPtrVector()
    for ivf in ivfs:
        lists.push_back(ivf.invlists)
    stacked = faiss.HStackInvertedLists(lists.size(), lists.data())
    index = faiss.clone_index(parts[0].index)
    merged = faiss.extract_index_ivf(index)
    merged.replace_invlists(stacked, False)
    merged.ntotal = index.ntotal = sum(p.ntotal for p in parts)
    merged.nprobe = ivfs[0].nprobe
    return index, (stacked, lists, parts)


__all__ = ["SHARD_ROWS", "ShardedIndex", "kind_of_index", "new_index", "shard_file", "trained_file"]
