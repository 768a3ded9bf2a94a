"""Sharded collections (issue 19 item 2): an add writes only the shard it grows, a removal only
the removed item's shard, search over shards answers as one index, and a kill at any moment of an
add leaves the previous state usable."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from audiosheet.retrieval.collection import Collection
from audiosheet.retrieval.shards import ShardedIndex


@pytest.fixture(scope="module")
def source(files, tmp_path_factory):
    """An exact one-shard collection of the test corpus's scores and recordings (ingested once;
    the sharded collections below take its stored items, no model run)."""
    c = Collection(tmp_path_factory.mktemp("src") / "db", index="exact")
    c.add([files / "sheets", files / "audio"], progress=False)
    return c


def _copy(src: Collection, dst: Collection, items=None) -> None:
    """Commit ``src``'s items (all, or those given, in that order) to ``dst``, one commit each."""
    for it in src.items() if items is None else items:
        with np.load(src.root / "items" / f"{it.sha256}.npz") as z:
            arrays = {k: z[k] for k in z.files}
        with dst.writing():
            dst.commit([(dst.store_item(it.kind, it.name, it.path, it.sha256, arrays, it.info), arrays)])


def _faiss_files(db) -> dict[str, int]:
    """file name → inode of a collection's index files."""
    return {f.name: f.stat().st_ino for f in (db / "faiss").iterdir()}


def _answers(coll: Collection, q: np.ndarray, k: int = 25) -> list[list[tuple[str, int, float]]]:
    """Per query row, its k neighbours as (item name, row within the item, similarity)."""
    ix, items, owner, starts = coll.search_index("sheet")
    sim, rows = ix.search(q, k)
    return [[(items[owner[r]].name, int(r - starts[owner[r]]), round(float(s), 5)) for s, r in zip(ss, rr)]
            for ss, rr in zip(sim, rows)]


def test_each_add_writes_only_the_shard_it_grows(source, tmp_path):
    sheets = source.items("sheet")
    db = tmp_path / "db"
    c = Collection(db, index="exact", shard_rows=1)  # every item opens a shard of its own
    _copy(source, c, sheets[:3])
    assert sorted(c.shards("sheet")) == [0, 1, 2] and [it.shard for it in c.items("sheet")] == [0, 1, 2]
    before = _faiss_files(db)
    _copy(source, c, sheets[3:])
    after = _faiss_files(db)
    new = sorted(set(after) - set(before))
    gen = c.settings["generation"]
    assert new == [f"sheet.s3.g{gen}.faiss"]  # one new shard file; the others are the same files
    assert all(after[f] == before[f] for f in before)
    ix, items, owner, starts = c.search_index("sheet")
    assert isinstance(ix, ShardedIndex) and ix.ntotal == starts[-1] == sum(it.n for it in items)

    # a shard holds several items up to shard_rows; an item that would pass it opens the next
    sizes = [it.n for it in source.items("sheet")]
    c2 = Collection(tmp_path / "db2", index="exact", shard_rows=sizes[0] + sizes[1])
    _copy(source, c2, sheets)
    assert [it.shard for it in c2.items("sheet")][:2] == [0, 0] and c2.items("sheet")[2].shard == 1


def test_search_over_shards_answers_as_one_index(source, tmp_path):
    sheets = source.items("sheet")
    sharded = Collection(tmp_path / "db", index="exact", shard_rows=1)
    _copy(source, sharded, sheets)
    one = Collection(tmp_path / "one", index="exact")
    _copy(source, one, sheets)
    assert not isinstance(one.search_index("sheet")[0], ShardedIndex)
    rng = np.random.default_rng(0)
    q = np.concatenate([source.data(it)["emb"][::7] for it in source.items("audio")])
    q += 0.05 * rng.normal(size=q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    a, b = _answers(sharded, q), _answers(one, q)
    assert [[s for *_, s in r] for r in a] == [[s for *_, s in r] for r in b]  # the same similarities
    assert np.mean([x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb)]) > 0.98  # ties may swap
    for it in source.items("audio"):
        x, y = sharded.identify(it.path, end=15), one.identify(it.path, end=15)
        assert [m.piece for m in x.results] == [m.piece for m in y.results]
        assert [m.score for m in x.results] == pytest.approx([m.score for m in y.results], abs=1e-6)
    # k beyond the rows there are: -1 rows, -inf similarities, as FAISS
    sim, rows = sharded.search_index("sheet")[0].search(q[:2], 10_000)
    assert (rows[:, -1] == -1).all() and np.isneginf(sim[:, -1]).all()


def test_removal_rewrites_only_its_shard(source, tmp_path):
    sheets = source.items("sheet")
    db = tmp_path / "db"
    c = Collection(db, index="exact", shard_rows=1)
    _copy(source, c)
    before = _faiss_files(db)
    c.remove(sheets[1].sha256)
    after = _faiss_files(db)
    assert sorted(c.shards("sheet")) == [0, 2, 3]  # the emptied shard is gone from the manifest
    assert set(after) == set(before) - {f for f in before if f.startswith("sheet.s1.")}
    assert all(after[f] == before[f] for f in after)
    ix, items, _, starts = Collection(db).search_index("sheet")
    assert ix.ntotal == starts[-1] and sheets[1].sha256 not in {it.sha256 for it in items}
    _copy(source, c, [sheets[1]])  # added again: to the last shard's successor
    assert c.find(sheets[1].sha256).shard == 4


_KILL = """
import os, sys
import numpy as np
from audiosheet.retrieval.collection import Collection
import audiosheet.retrieval.store as store
where = sys.argv[3]
if where == "shard":  # killed after the first grown shard's file is written
    orig = store.Store._write_shard
    def dying(self, *a, **k):
        orig(self, *a, **k)
        os._exit(9)
    store.Store._write_shard = dying
else:  # killed inside the transaction, after every new file was written
    orig = store.Store.set_setting
    def dying(self, key, value):
        if key == "generation":
            os._exit(9)
        return orig(self, key, value)
    store.Store.set_setting = dying
src, dst = Collection(sys.argv[1]), Collection(sys.argv[2])
with dst.writing():
    pending = []
    for it in src.items():
        if any(it.sha256 == x.sha256 for x in dst.items()):
            continue
        with np.load(src.root / "items" / f"{it.sha256}.npz") as z:
            arrays = {k: z[k] for k in z.files}
        pending.append((dst.store_item(it.kind, it.name, it.path, it.sha256, arrays, it.info), arrays))
    dst.commit(pending)
"""


@pytest.mark.parametrize("where", ["shard", "commit"])
def test_killed_add_leaves_the_previous_shards_usable(source, tmp_path, where):
    sheets = source.items("sheet")
    db = tmp_path / "db"
    c = Collection(db, index="exact", shard_rows=1)
    _copy(source, c, sheets[:2])
    names, gen, files_before = [it.name for it in c.items()], c.settings["generation"], _faiss_files(db)
    r = subprocess.run([sys.executable, "-c", _KILL, str(source.root), str(db), where],
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 9
    after = Collection(db)
    assert [it.name for it in after.items()] == names and after.settings["generation"] == gen
    ix, items, _, starts = after.search_index("sheet")
    assert ix.ntotal == starts[-1] == sum(it.n for it in items) > 0
    audio = source.items("audio")[0]
    assert after.identify(audio.path, method="vote").results  # fully usable
    _copy(source, after, [sheets[2]])  # the next write removes the leftovers
    left = set(_faiss_files(db)) - set(files_before)
    assert left == {f"sheet.s2.g{after.settings['generation']}.faiss"}


def test_a_collection_from_before_shards_is_read_and_migrated(source, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(source.root, db)
    con = sqlite3.connect(db / "collection.sqlite")  # as it was: no shard column, no manifest
    with con:
        con.execute("drop table shards")
        con.execute("alter table items drop column shard")
    con.close()
    for f in (db / "faiss").iterdir():  # an old KIND.GEN.faiss name
        f.rename(f.with_name(f"{f.name.split('.')[0]}.{source.settings['generation']}.faiss"))
    c = Collection(db)
    ix, items, _, starts = c.search_index("sheet")
    assert ix.ntotal == starts[-1] == sum(it.n for it in items) and len(items) == 4
    _copy(source, c, [])  # no-op
    c.remove(items[0].sha256)  # the first write leaves only the files its manifest names
    assert all(".s" in f.name for f in (db / "faiss").iterdir())


def test_compressed_shards_share_one_quantiser(source, tmp_path, filler):
    """A compressed kind in several shards: one trained index for all, each add fills only its
    shard from it (no training), and identification answers as the exact one-shard collection."""
    from audiosheet.retrieval.ann import RerankedIndex

    db = tmp_path / "db"
    c = Collection(db, index="compressed", shard_rows=4000)
    _copy(source, c, source.items("sheet"))
    filler(c, 12, 1000, seed=1)  # 12k filler rows: compressed, in 4 shards
    one = Collection(tmp_path / "one", index="exact")
    _copy(source, one, source.items("sheet"))
    filler(one, 12, 1000, seed=1)
    ix, items, _, starts = c.search_index("sheet")
    assert isinstance(ix, ShardedIndex) and all(isinstance(p, RerankedIndex) for p in ix.parts)
    assert ix._merged is not None  # searched as one compressed index of all rows, one quantiser
    import faiss

    from audiosheet.retrieval.ann import fill

    rows = np.concatenate([np.asarray(p.rows) for p in ix.parts])
    trained = next(f for f in (db / "faiss").iterdir() if ".trained." in f.name)
    whole = RerankedIndex(fill(faiss.read_index(str(trained)), lambda a, b: rows[a:b], len(rows)), rows)
    rng = np.random.default_rng(3)
    q = rows[rng.choice(len(rows), 50)].astype(np.float32) + 0.02 * rng.normal(size=(50, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    (a_sim, a_rows), (b_sim, b_rows) = ix.search(q, 25), whole.search(q, 25)
    np.testing.assert_array_equal(a_rows, b_rows)
    np.testing.assert_allclose(a_sim, b_sim, atol=1e-6)
    assert ix.ntotal == starts[-1] == sum(it.n for it in items) and len(c.shards("sheet")) >= 3
    trained = [f.name for f in (db / "faiss").iterdir() if ".trained." in f.name]
    assert len(trained) == 1
    before = _faiss_files(db)
    filler(c, 1, 500, seed=2)  # appended to the open shard with the same quantiser
    filler(one, 1, 500, seed=2)
    after = _faiss_files(db)
    assert [f for f in after if ".trained." in f] == trained
    assert len(set(after) - set(before)) == 2  # the open shard's index and rows files
    for it in source.items("audio"):
        a, b = c.identify(it.path, end=10), one.identify(it.path, end=10)
        assert a.results[0].piece == b.results[0].piece == it.name
