"""The compressed index for large collections (issue 19 item 1): IVF-PQ with exact re-ranking
finds the exact top-k on an easy set, is chosen by size or by request, survives appends and
removals, and identification through it gives the same answers as exact search."""
from __future__ import annotations

import numpy as np
import pytest

from audiosheet.retrieval.ann import MIN_VECTORS, RerankedIndex, build, is_compressed, n_lists
from audiosheet.retrieval.collection import Collection


def _unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng, n, d=32, centres=200, spread=0.15):
    c = _unit(rng, centres, d)
    x = c[rng.integers(centres, size=n)] + spread * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_list_counts_grow_with_the_collection():
    assert n_lists(10_000) == 512 and n_lists(1_000_000) == 4096 and n_lists(10_000_000) == 16384
    assert n_lists(10**12) == 65536


def test_reranked_search_returns_the_exact_top_k_on_an_easy_set():
    rng = np.random.default_rng(0)
    x = _clustered(rng, 15_000)
    ix = RerankedIndex(build(lambda a, b: x[a:b], 32, len(x)), x.astype(np.float16))
    assert is_compressed(ix.index) and ix.ntotal == len(x)
    q = x[rng.choice(len(x), 200, replace=False)] + 0.01 * rng.normal(size=(200, 32)).astype(np.float32)
    sim, rows = ix.search(q, 25)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :25]
    recall = np.mean([len(set(a) & set(b)) / 25 for a, b in zip(rows, exact)])
    assert recall >= 0.95
    assert np.all(rows[:, 0] == exact[:, 0])  # the nearest one always
    assert np.all(np.diff(sim, axis=1) <= 1e-6)  # best first
    stored = x[rows[:, 0]].astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(sim[:, 0], np.einsum("bd,bd->b", stored, q), atol=1e-5)  # exact cosine
    with pytest.raises(ValueError, match="at least"):
        build(lambda a, b: x[a:b], 32, MIN_VECTORS - 1)


def test_a_compressed_collection_identifies_as_an_exact_one(files, tmp_path, filler):
    from audiosheet.retrieval.identify import identify

    sheets = sorted((files / "sheets").glob("*.pdf"))
    exact = Collection(tmp_path / "exact", index="exact")
    exact.add(sheets, progress=False)
    filler(exact, 10, 1000, seed=1)
    comp = Collection(tmp_path / "comp", index="compressed")
    comp.add(sheets, progress=False)  # under MIN_VECTORS: searched exactly
    assert not isinstance(comp.search_index("sheet")[0], RerankedIndex)
    filler(comp, 10, 1000, seed=1)  # now built compressed, with its rows file
    ix, items, _, starts = comp.search_index("sheet")
    assert isinstance(ix, RerankedIndex) and ix.ntotal == starts[-1] == sum(i.n for i in comp.items("sheet"))
    gen = comp.settings["generation"]
    assert sorted(p.name for p in (comp.root / "faiss").iterdir()) == [  # one shard and its quantiser
        f"sheet.s0.g{gen}.faiss", f"sheet.s0.g{gen}.rows.npy", f"sheet.trained.g{gen}.faiss"]
    filler(comp, 1, 500, seed=2)  # appended to the compressed index: the rows file grows with it
    ix, _, _, starts = comp.search_index("sheet")
    assert isinstance(ix, RerankedIndex) and ix.ntotal == starts[-1] == len(ix.rows)
    filler(exact, 1, 500, seed=2)
    for s in sheets:
        q = files / "audio" / f"{s.stem}.flac"
        a, b = identify(exact, q, end=10), identify(comp, q, end=10)
        assert a.results[0].piece == b.results[0].piece == s.stem  # (lower ranks: noise among filler)
    comp.remove(sheets[0].stem)  # a removal rebuilds the compressed index and its rows
    ix, _, _, starts = Collection(tmp_path / "comp").search_index("sheet")
    assert isinstance(ix, RerankedIndex) and ix.ntotal == starts[-1] == len(ix.rows)
