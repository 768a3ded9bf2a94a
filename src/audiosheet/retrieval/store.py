"""The collection: sheet music and recordings indexed by their snippet embeddings, on disk.

Layout of a collection folder::

    collection.sqlite          settings (model, index kind, generation), one row per item (with
                               its shard) and the shard manifest — the source of truth; every
                               change is one SQLite transaction
    items/SHA256.npz           per item: its snippet embeddings (float16) and where each snippet
                               comes from (page, system, x-range; or time)
    faiss/KIND.sS.gG.faiss     search index of shard S of the sheet (or audio) embeddings, rows in
                               item-id order (``retrieval.shards``: shards, their rows files and
                               the compressed kind's trained quantiser); derived data, rebuilt
                               from items/ whenever it is missing
    passages/TAG/SHA256.npz    per item, once a passage model is added (``add_passage_model``):
                               passage embeddings (sheet: systems and system pairs; audio:
                               stretches) and where each passage is; TAG names the passage model.
                               Computed from the front-end data kept in items/ (the strip, the
                               spectrogram), so adding a passage model reads no file again

An ``add`` first writes the new items' embedding files, then the next generation's files of the
shards it grows (no other), and only then commits the items, the shard manifest and the new
generation number in one transaction; files the manifest no longer names are deleted after the
commit. A crash or kill at any point leaves the last committed
generation complete and usable; leftovers of the interrupted step are removed by the next write.
One writer at a time (a lock file); readers never need the lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from audiosheet.files import KINDS, atomic_path, save_npz
from audiosheet.geometry import INDEX_AUDIO_HOP, INDEX_SHEET_HOP
from audiosheet.retrieval.ann import (
    ADD_BLOCK,
    COMPRESSED_THRESHOLD,
    MIN_VECTORS,
    RerankedIndex,
    fill,
    is_compressed,
    stacked,
    train,
    write_rows,
)
from audiosheet.retrieval.shards import SHARD_ROWS, ShardedIndex, new_index, shard_file, trained_file

# vectors of one kind above which "auto" uses an approximate (HNSW) index: exact search of 100
# query snippets costs ~0.12 s per 100k vectors on one core here, HNSW ~10 ms at 600k
APPROX_THRESHOLD = 100_000
HNSW_M, HNSW_EF_SEARCH = 32, 96
RETRAIN_GROWTH = 4  # a compressed kind is trained again (every shard rebuilt) once it holds this
# many times the vectors its quantiser was trained for (its lists were sized for that many)
COMMIT_EVERY_S = 60.0  # a long `add` commits at least this often, so a kill loses little work

SHARDS_TABLE = """create table if not exists shards (kind text not null, shard integer not null,
    gen integer not null, rows integer not null, index_kind text not null, primary key (kind, shard))"""
FRONT_END = ("strip", "spec")  # kept in an item's file for models added later, not loaded by data()
INDEX_MODES = ("auto", "exact", "approx", "compressed")  # compressed: IVF-PQ + exact re-ranking (ann.py)


class CollectionError(ValueError):
    """A collection that cannot be opened or changed as asked; one line naming the folder."""


@dataclass
class Item:
    """One indexed file."""

    id: int
    kind: str  # "sheet" or "audio"
    name: str  # the piece it is of: the file name without suffix unless given
    path: str  # as added (absolute)
    sha256: str
    added: str  # ISO time
    n: int  # snippets indexed
    info: dict = field(default_factory=dict)  # pages, systems, seconds, skipped pages...
    shard: int = 0  # the search-index shard its snippets are in (``retrieval.shards``)

    def describe(self) -> str:
        i = self.info
        what = (f"{i.get('pages', '?')} page(s), {i.get('systems', '?')} systems" if self.kind == "sheet"
                else f"{i.get('seconds', 0):.1f} s")
        return f"{self.id:>5}  {self.kind:<5}  {self.name}  ({what}, {self.n} snippets)  {self.path}"


def front_end_version() -> str:
    """A fingerprint of the code that turns files into strips and spectrograms (every module of
    ``audiosheet.frontend``): a collection records the one it was indexed with, so stored
    front-end data is reused (``reembed``) only where the same code would make it again."""
    h = hashlib.sha256()
    for path in sorted((Path(__file__).parents[1] / "frontend").glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def now() -> str:
    """The local time as ISO 8601 to the second, as items record when they were added."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def failure_reason(exc: BaseException) -> str:
    """One line for an unexpected exception while ingesting a file."""
    if isinstance(exc, MemoryError):
        return "out of memory while reading it (file too large for this machine?)"
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, (OSError, ValueError)) \
        else text or type(exc).__name__


class ItemData(Mapping):
    """The arrays of one item's file (every stored array but the front-end inputs), read on
    first access and kept: the embeddings ``emb`` (as float32) alone, the locations together (a
    query's shortlist needs the embeddings of 20 items, the locations of a few). ``CollectionError`` if the file is gone or
    unreadable."""

    def __init__(self, path: Path):
        self.path = path
        self._read: dict[str, np.ndarray] = {}
        with self._open() as z:
            self._names = tuple(k for k in z.files if k not in FRONT_END)

    def _open(self):
        try:
            return np.load(self.path)
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{self.path}: cannot read the item's arrays ({exc})") from None

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._read:
            if key not in self._names:
                raise KeyError(key)
            with self._open() as z:  # the embeddings alone, or every location array at once
                for k in ("emb",) if key == "emb" else (k for k in self._names if k != "emb"):
                    self._read[k] = z[k].astype(np.float32) if k == "emb" else z[k]
        return self._read[key]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Store:
    """A collection folder's storage (see the module docstring): settings, items, their stored
    arrays, the FAISS indexes and the writer lock. It embeds nothing and loads no model:
    ``audiosheet.retrieval.collection.Collection`` adds the model side on top.

    ``Store(path, index, approx_threshold, create, new_settings)`` opens the folder; a folder with no
    collection is made complete or not at all (``create``; ``new_settings()`` gives the settings of
    the model side, e.g. the model and its front end). ``index``/``approx_threshold`` change the
    search index kind of an existing collection (every index is rebuilt).
    """

    def __init__(self, path: str | Path, index: str | None = None, approx_threshold: int | None = None,
                 create: bool = True, new_settings: Callable[[], dict] | None = None,
                 shard_rows: int | None = None):
        self.root = Path(path)
        self._faiss: dict[str, object] = {}
        self._cache: dict[int, dict] = {}
        self._passage_index: dict = {}
        db = self.root / "collection.sqlite"
        if not db.is_file():
            if not create:
                raise CollectionError(f"{self.root}: no collection here (create one with "
                                      f"'audiosheet index add --db {self.root} FILES')")
            if self.root.exists() and not self.root.is_dir():
                raise CollectionError(f"{self.root}: exists and is not a folder")
            index = index or "auto"
            self._check_index_mode(index)
            self._create({"format": 1, **(new_settings() if new_settings else {}), "index": index,
                          "approx_threshold": int(APPROX_THRESHOLD if approx_threshold is None else approx_threshold),
                          "generation": 0, "sheet_hop": INDEX_SHEET_HOP, "audio_hop": INDEX_AUDIO_HOP,
                          "shard_rows": int(shard_rows or SHARD_ROWS),
                          "front_end": front_end_version(), "created": now()})
            index = approx_threshold = None
        # one connection shared by the threads of a server (``audiosheet serve``): SQLite's
        # serialized mode (sqlite3.threadsafety 3) makes that safe; writes still take ``writing()``
        self.db = sqlite3.connect(db, timeout=60, check_same_thread=sqlite3.threadsafety < 3)
        self.db.row_factory = sqlite3.Row
        if "shard" not in {r["name"] for r in self.db.execute("pragma table_info(items)")}:
            with self.db:  # a collection from before shards: every item in shard 0, index files rebuilt
                self.db.execute("alter table items add column shard integer not null default 0")
                self.db.execute(SHARDS_TABLE)
        self.settings = {r["key"]: json.loads(r["value"]) for r in self.db.execute("select * from settings")}
        changes = {}
        if index is not None and index != self.settings["index"]:
            changes["index"] = index
        if approx_threshold is not None and approx_threshold != self.settings["approx_threshold"]:
            changes["approx_threshold"] = int(approx_threshold)
        if changes:
            self._check_index_mode(changes.get("index", "auto"))
            with self.writing():
                with self.db:
                    for k, v in changes.items():
                        self.set_setting(k, v)
                self._rebuild_all()

    def _create(self, settings: dict) -> None:
        """Write a new collection's database with ``settings``: complete, or not at all."""
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        (self.root / "faiss").mkdir(exist_ok=True)
        with atomic_path(self.root / "collection.sqlite") as tmp:
            db = sqlite3.connect(tmp)
            with db:
                db.execute("create table settings (key text primary key, value text not null)")
                db.execute("""create table items (id integer primary key autoincrement, kind text not null,
                              name text not null, path text not null, sha256 text not null unique,
                              added text not null, n integer not null, info text not null,
                              shard integer not null default 0)""")
                db.execute(SHARDS_TABLE)
                db.executemany("insert into settings values (?, ?)",
                               [(k, json.dumps(v)) for k, v in settings.items()])
            db.close()

    def store_item(self, kind: str, name: str, path: str, sha256: str, arrays: dict, info: dict,
                   added: str | None = None) -> Item:
        """Write one item's arrays (``emb`` (N, d) and its locations; front-end data) to
        ``items/SHA256.npz`` atomically and return the Item to ``commit`` (id 0 until then).
        Call inside ``writing()``."""
        save_npz(self.root / "items" / f"{sha256}.npz", **arrays)
        return Item(0, kind, name, path, sha256, added or now(), len(arrays["emb"]), info)

    def _check_index_mode(self, index: str) -> None:
        if index not in INDEX_MODES:
            raise CollectionError(f"{self.root}: index must be {', '.join(INDEX_MODES)}, not {index!r}")

    def set_setting(self, key: str, value) -> None:
        self.db.execute("insert or replace into settings values (?, ?)", (key, json.dumps(value)))
        self.settings[key] = value

    @contextlib.contextmanager
    def writing(self):
        """The writer lock, and removal of leftovers of interrupted writes."""
        import fcntl

        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise CollectionError(f"{self.root}: another process is changing this collection") from None
            self._reload_settings()
            self._clean()
            yield

    def _reload_settings(self) -> None:
        self.settings = {r["key"]: json.loads(r["value"]) for r in self.db.execute("select * from settings")}

    def _clean(self) -> None:
        keep = {r["sha256"] for r in self.db.execute("select sha256 from items")}
        for f in (self.root / "items").iterdir():
            if f.name.startswith(".") or f.stem not in keep:
                f.unlink(missing_ok=True)
        named = {trained_file(self.root, k, g).name for k, (g, _) in self.settings.get("trained", {}).items()}
        for r in self.db.execute("select * from shards"):  # the files the manifest names stay
            named |= {shard_file(self.root, r["kind"], r["shard"], r["gen"], rows=rows).name for rows in (False, True)}
        for f in (self.root / "faiss").iterdir():
            if f.name not in named:
                f.unlink(missing_ok=True)
        tag = self._passage_tag()
        for d in (self.root / "passages").iterdir() if (self.root / "passages").is_dir() else ():
            if d.name != tag:  # another (older, or an interrupted new) passage model's files
                import shutil

                shutil.rmtree(d, ignore_errors=True)
                continue
            for f in d.iterdir():
                if f.name.startswith(".") or f.stem not in keep:
                    f.unlink(missing_ok=True)

    def items(self, kind: str | None = None) -> list[Item]:
        """The items (of one kind), in id order."""
        q = "select * from items" + (" where kind = ?" if kind else "") + " order by id"
        return [self._item(r) for r in self.db.execute(q, (kind,) if kind else ())]

    @staticmethod
    def _item(r) -> Item:
        return Item(r["id"], r["kind"], r["name"], r["path"], r["sha256"], r["added"], r["n"],
                    json.loads(r["info"]), r["shard"])

    def item(self, item_id: int) -> Item:
        """One item by its id; CollectionError if there is none."""
        r = self.db.execute("select * from items where id = ?", (int(item_id),)).fetchone()
        if r is None:
            raise CollectionError(f"{self.root}: no item with id {item_id}")
        return self._item(r)

    def __len__(self) -> int:
        return self.db.execute("select count(*) from items").fetchone()[0]

    def find(self, key: str | int) -> Item:
        """An item by id, name, path or content hash (prefix ≥ 8)."""
        items = self.items()
        key = str(key)
        for test in (lambda i: str(i.id) == key, lambda i: i.path == str(Path(key).resolve()) if
                     Path(key).exists() else False, lambda i: i.name == key,
                     lambda i: len(key) >= 8 and i.sha256.startswith(key)):
            hits = [i for i in items if test(i)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise CollectionError(f"{self.root}: '{key}' names {len(hits)} items (ids "
                                      f"{', '.join(str(i.id) for i in hits)}); give an id")
        raise CollectionError(f"{self.root}: no item '{key}'")

    def data(self, item: Item) -> ItemData:
        """An item's stored arrays (embeddings ``emb`` float32 (n, d), and locations) as an
        ``ItemData``, read from its file on first use; the 64 last used are kept."""
        data = self._cache.pop(item.id, None)  # and put back last: least recently used go first
        if data is None:
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            data = ItemData(self.root / "items" / f"{item.sha256}.npz")
        self._cache[item.id] = data
        return data

    def commit(self, pending: list[tuple[Item, dict]]) -> list[Item]:
        """Make ``pending`` items part of the collection: each goes to its kind's open shard (a
        new one when it would pass ``shard_rows``); the grown shards' next-generation files are
        written, then one transaction (items, shard manifest, generation), then the files no
        longer named go. Other shards are not touched."""
        gen = self.settings["generation"] + 1
        with self.db:  # ids are assigned inside the transaction that also moves the generation
            grown: dict[str, dict[int, list[np.ndarray]]] = {k: {} for k in KINDS}
            open_shard = {k: self._last_shard(k) for k in KINDS}  # kind → [shard, rows in it]
            for item, arrays in pending:
                last = open_shard[item.kind]
                if last[1] and last[1] + item.n > self.shard_rows:  # an item is never split
                    last[:] = [last[0] + 1, 0]
                last[1] += item.n
                item.shard = last[0]
                cur = self.db.execute("insert into items (kind, name, path, sha256, added, n, info, shard) "
                                      "values (?, ?, ?, ?, ?, ?, ?, ?)",
                                      (item.kind, item.name, item.path, item.sha256, item.added, item.n,
                                       json.dumps(item.info), item.shard))
                item.id = cur.lastrowid
                grown[item.kind].setdefault(item.shard, []).append(arrays["emb"])
            for kind in KINDS:
                self._update_shards(kind, gen, grown[kind])
            self.set_setting("generation", gen)
        self._clean()
        return [it for it, _ in pending]

    def _last_shard(self, kind: str) -> list[int]:
        """[the kind's last shard, its rows]: where its next item goes unless that item would take
        it past ``shard_rows`` (then to the next shard)."""
        r = self.db.execute("select shard, sum(n) from items where kind = ? group by shard "
                            "order by shard desc limit 1", (kind,)).fetchone()
        return [0, 0] if r is None else [int(r[0]), int(r[1] or 0)]

    @property
    def shard_rows(self) -> int:
        return int(self.settings.get("shard_rows", SHARD_ROWS))

    def remove(self, key: str | int) -> Item:
        """Remove one item (by id, name, path or hash) from the collection: its shard is written
        anew, the others stay."""
        with self.writing():
            item = self.find(key)
            gen = self.settings["generation"] + 1
            with self.db:
                self.db.execute("delete from items where id = ?", (item.id,))
                self._update_shards(item.kind, gen, {}, rebuild={item.shard})
                self.set_setting("generation", gen)
            self._cache.pop(item.id, None)
            self._clean()
        return item

    def _passage_tag(self, sha: str | None = None) -> str | None:
        sha = sha or self.settings.get("passage_model_sha256")
        return sha[:12] if sha else None

    @property
    def passage_model_name(self) -> str | None:
        return self.settings.get("passage_model")

    def passage_data(self, item: Item) -> dict:
        """An item's passage embeddings (float32) and where each passage is."""
        tag = self._passage_tag()
        if tag is None:
            raise CollectionError(f"{self.root}: no passage model in this collection")
        with np.load(self.root / "passages" / tag / f"{item.sha256}.npz") as z:
            d = {k: z[k] for k in z.files}
        d["emb"] = d["emb"].astype(np.float32)
        return d

    def passage_search_index(self, kind: str):
        """(FAISS index of all ``kind`` passage embeddings, items, item index of every row, first
        row of each item); built in memory from passages/ and cached per generation."""
        import faiss

        self._reload_settings()
        key = (self.settings["generation"], self._passage_tag())
        cache = self._passage_index
        if kind not in cache or cache[kind][0] != key:
            items = self.items(kind)
            embs = [self.passage_data(it)["emb"] for it in items]
            ix = faiss.IndexFlatIP(self.settings["passage_model_config"]["embed_dim"])
            for e in embs:
                ix.add(np.ascontiguousarray(e, np.float32))
            n = [len(e) for e in embs]
            cache[kind] = (key, ix, items, np.repeat(np.arange(len(items)), n), np.cumsum([0] + n))
        return cache[kind][1:]

    def _index_kind(self, n: int) -> str:
        """The index for ``n`` vectors of a kind: the mode asked for, or by size in "auto": exact
        up to ``approx_threshold``, HNSW up to ``ann.COMPRESSED_THRESHOLD``, compressed above."""
        mode = self.settings["index"]
        if mode == "compressed":
            return "compressed" if n >= MIN_VECTORS else "exact"
        if mode != "auto":
            return mode
        return ("compressed" if n > COMPRESSED_THRESHOLD else "approx") if n > self.settings["approx_threshold"] \
            else "exact"

    def shards(self, kind: str) -> dict[int, dict]:
        """The manifest of a kind's shards: {shard: {"gen", "rows", "index"}}."""
        return {r["shard"]: {"gen": r["gen"], "rows": r["rows"], "index": r["index_kind"]}
                for r in self.db.execute("select * from shards where kind = ? order by shard", (kind,))}

    def _by_shard(self, kind: str) -> dict[int, list[Item]]:
        out: dict[int, list[Item]] = {}
        for it in self.items(kind):
            out.setdefault(it.shard, []).append(it)
        return dict(sorted(out.items()))

    def _update_shards(self, kind: str, gen: int, grown: dict[int, list[np.ndarray]],
                       rebuild: set[int] | None = None, everything: bool = False) -> None:
        """Write generation ``gen``'s files of the shards of ``kind`` that change — ``grown``
        (shard → embeddings appended), ``rebuild`` (shards written from their items), shards
        without a manifest entry — and record them in the manifest. Every shard is rebuilt when
        the kind of index changes, when ``everything``, or when a compressed kind is (re)trained
        (first time, or grown ``RETRAIN_GROWTH``-fold). Runs inside the DB transaction, so
        ``items`` already shows the new state."""
        by_shard, have = self._by_shard(kind), self.shards(kind)
        total = sum(i.n for its in by_shard.values() for i in its)
        want = self._index_kind(total)
        trained = self.settings.get("trained", {}).get(kind)  # [gen, vectors trained for]
        retrain = want == "compressed" and (everything or trained is None or total > RETRAIN_GROWTH * trained[1]
                                            or not trained_file(self.root, kind, trained[0]).exists())
        everything = everything or retrain or any(h["index"] != want for h in have.values())
        todo = set(by_shard) if everything else ({*grown, *(rebuild or ())} | (set(by_shard) - set(have)))
        if retrain:  # the shards' rows files first (each item file read once), the quantiser from them
            for s in by_shard:
                write_rows(shard_file(self.root, kind, s, gen, rows=True), (self.embeddings(it) for it in by_shard[s]),
                           sum(i.n for i in by_shard[s]), self.settings["dim"])
            maps = [np.load(shard_file(self.root, kind, s, gen, rows=True), mmap_mode="r") for s in by_shard]
            import faiss

            with atomic_path(trained_file(self.root, kind, gen)) as tmp:
                faiss.write_index(train(stacked(maps), self.settings["dim"], total), str(tmp))
            del maps
            self.set_setting("trained", {**self.settings.get("trained", {}), kind: [gen, total]})
        for s in sorted(todo):
            if s in by_shard:
                self._write_shard(kind, s, gen, by_shard[s], want, None if everything or s in (rebuild or ())
                                  else grown.get(s), have.get(s))
        for s in set(have) - set(by_shard):  # emptied by a removal
            self.db.execute("delete from shards where kind = ? and shard = ?", (kind, s))
        if want != "compressed" and "trained" in self.settings and kind in self.settings["trained"]:
            self.set_setting("trained", {k: v for k, v in self.settings["trained"].items() if k != kind})
        self._faiss.pop(kind, None)

    def _write_shard(self, kind: str, shard: int, gen: int, items: list[Item], want: str,
                     append: list[np.ndarray] | None, old: dict | None) -> None:
        """Write ``faiss/KIND.sSHARD.gGEN.faiss`` (via a temporary file) — the shard's current
        index plus ``append``ed rows, else built from its item files — and, compressed, its
        float16 rows file; record it in the manifest."""
        import faiss

        n, d = sum(i.n for i in items), self.settings["dim"]
        ix = None
        if append is not None and old is not None and old["index"] == want:
            try:
                ix = faiss.read_index(str(shard_file(self.root, kind, shard, old["gen"])))
            except (RuntimeError, OSError):
                ix = None
            if want == "compressed" and not shard_file(self.root, kind, shard, old["gen"], rows=True).exists():
                ix = None
        rows_path = shard_file(self.root, kind, shard, gen, rows=True)
        if want == "compressed":
            if ix is None:  # from the shard's rows (written before training, or now) and the trained index
                if not rows_path.exists():
                    write_rows(rows_path, (self.embeddings(it) for it in items), n, d)
                rows = np.load(rows_path, mmap_mode="r")
                ix = fill(faiss.read_index(str(trained_file(self.root, kind, self.settings["trained"][kind][0]))),
                          lambda a, b: rows[a:b], n, shard)
                del rows
            else:
                for e in append:
                    fill(ix, lambda a, b, e=e: e[a:b], len(e), shard)
                old_rows = np.load(shard_file(self.root, kind, shard, old["gen"], rows=True), mmap_mode="r")
                write_rows(rows_path, [*(old_rows[a:a + ADD_BLOCK] for a in range(0, len(old_rows), ADD_BLOCK)),
                                       *append], n, d)
        elif ix is None:
            ix = new_index(want, d, HNSW_M)
            for it in items:
                ix.add(self.embeddings(it))
        else:
            for e in append:
                ix.add(np.ascontiguousarray(e, np.float32))
        if ix.ntotal != n:
            raise CollectionError(f"{self.root}: {kind} shard {shard} has {ix.ntotal} rows, its items {n}")
        with atomic_path(shard_file(self.root, kind, shard, gen)) as tmp:
            faiss.write_index(ix, str(tmp))
        self.db.execute("insert or replace into shards (kind, shard, gen, rows, index_kind) values (?, ?, ?, ?, ?)",
                        (kind, shard, gen, n, want))

    def embeddings(self, item: Item) -> np.ndarray:
        with np.load(self.root / "items" / f"{item.sha256}.npz") as z:
            return np.ascontiguousarray(z["emb"], np.float32)

    def _rebuild_all(self) -> None:
        gen = self.settings["generation"] + 1
        with self.db:
            for kind in KINDS:
                self._update_shards(kind, gen, {}, everything=True)
            self.set_setting("generation", gen)
        self._clean()

    def search_index(self, kind: str):
        """(search index, items in row order, item index of every row, first row of each item)
        of the ``kind`` embeddings: one shard's FAISS index, or a ``ShardedIndex`` over several;
        rows in shard order, then item-id order. A missing or damaged shard file is derived
        data: rebuilt on disk (in memory while another process writes; CollectionError then for a
        compressed one)."""
        import faiss

        self._reload_settings()
        gen = self.settings["generation"]
        cached = self._faiss.get(kind)
        if cached is None or cached[0] != gen:
            by_shard, have = self._by_shard(kind), self.shards(kind)
            parts, firsts, items = [], [], []
            for s, its in by_shard.items():
                firsts.append(sum(i.n for i in items))
                items += its
                try:
                    if s not in have:
                        raise OSError("not in the manifest")
                    ix = faiss.read_index(str(shard_file(self.root, kind, s, have[s]["gen"])))
                    if is_compressed(ix):
                        ix = RerankedIndex(ix, np.load(shard_file(self.root, kind, s, have[s]["gen"], rows=True),
                                                       mmap_mode="r"))
                    if ix.ntotal != sum(i.n for i in its):
                        raise ValueError("rows and items disagree")
                except (RuntimeError, OSError, ValueError):  # missing or damaged: derived data, so rebuild it
                    want = self._index_kind(sum(i.n for i in self.items(kind)))
                    try:  # on disk, for the next process too (a collection from before shards: once)
                        with self.writing():
                            g = self.settings["generation"] + 1
                            with self.db:
                                self._update_shards(kind, g, {}, rebuild={s})
                                self.set_setting("generation", g)
                            self._clean()
                        return self.search_index(kind)
                    except CollectionError:  # another process is writing: in memory, for now
                        if want == "compressed":
                            raise
                    ix = new_index(want, self.settings["dim"], HNSW_M)
                    for it in its:
                        ix.add(self.embeddings(it))
                if isinstance(ix, faiss.IndexHNSWFlat):
                    ix.hnsw.efSearch = HNSW_EF_SEARCH
                parts.append(ix)
            ix = (parts[0] if len(parts) == 1 else ShardedIndex(parts, firsts, list(by_shard)) if parts
                  else new_index("exact", self.settings["dim"]))
            starts = np.cumsum([0] + [i.n for i in items])
            owner = np.repeat(np.arange(len(items)), [i.n for i in items])
            cached = (gen, ix, items, owner, starts)
            self._faiss[kind] = cached
        return cached[1:]

    def size_on_disk(self) -> dict:
        """Bytes of the collection's files by part."""
        def du(p: Path) -> int:
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else \
                (p.stat().st_size if p.exists() else 0)
        return {"sqlite": du(self.root / "collection.sqlite"), "items": du(self.root / "items"),
                "faiss": du(self.root / "faiss")}

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
