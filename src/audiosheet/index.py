"""The collection: sheet music and recordings indexed by their snippet embeddings, on disk.

Layout of a collection folder::

    collection.sqlite          settings (model, index kind, generation) and one row per item —
                               the source of truth; every change is one SQLite transaction
    items/SHA256.npz           per item: its snippet embeddings (float16) and where each snippet
                               comes from (page, system, x-range; or time)
    faiss/KIND.GEN.faiss       search index of all sheet (or audio) embeddings, rows in item-id
                               order; derived data, rebuilt from items/ whenever it is missing
    passages/TAG/SHA256.npz    per item, once a passage model is added (``add_passage_model``):
                               passage embeddings (sheet: systems and system pairs; audio:
                               stretches) and where each passage is; TAG names the passage model.
                               Computed from the front-end data kept in items/ (the strip, the
                               spectrogram), so adding a passage model reads no file again

An ``add`` first writes the new items' embedding files, then the next generation's FAISS files,
and only then commits the items and the new generation number in one transaction; old
generations are deleted after the commit. A crash or kill at any point leaves the last committed
generation complete and usable; leftovers of the interrupted step are removed by the next write.
One writer at a time (a lock file); readers never need the lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

SHEET_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
# recordings: what libsndfile reads, and what FFmpeg (PyAV) commonly decodes, including the sound
# of video files (audiosheet.audio); .ts is left out (TypeScript sources far outnumber MPEG-TS)
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".spx", ".mp3", ".mp2",
                  ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64", ".rf64", ".caf",
                  ".m4a", ".m4b", ".aac", ".wma", ".ac3", ".eac3", ".dts", ".ape", ".wv", ".tta",
                  ".mpc", ".amr", ".mka", ".weba",
                  ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg",
                  ".3gp"}
DEFAULT_MODEL = "snippet-bl2-att84"
DEFAULT_PASSAGE_MODEL = "passage-gru"
SHEET_HOP = 10  # strip columns between indexed sheet snippets (20 px of the normalised page)
AUDIO_HOP = 5  # spectrogram frames between indexed audio snippets (0.25 s)
# vectors of one kind above which "auto" uses an approximate (HNSW) index: exact search of 100
# query snippets costs ~0.12 s per 100k vectors on one core here, HNSW ~10 ms at 600k
APPROX_THRESHOLD = 100_000
HNSW_M, HNSW_EF_SEARCH = 32, 96
TORCH_FROM = 500  # query snippets above which "auto" embeds with torch even in a fresh process
QUERY_BATCH = 16  # torch batch for queries: a 30-s query (120 snippets) embeds in 0.27 s warm vs
# 0.34 s at the indexing batch of 32 (less padding; benchmarks/oneshot.py)
COMMIT_EVERY_S = 60.0  # a long `add` commits at least this often, so a kill loses little work

KINDS = ("sheet", "audio")
FRONT_END = ("strip", "spec")  # kept in an item's file for models added later, not loaded by data()
INDEX_MODES = ("auto", "exact", "approx")


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

    def describe(self) -> str:
        i = self.info
        what = (f"{i.get('pages', '?')} page(s), {i.get('systems', '?')} systems" if self.kind == "sheet"
                else f"{i.get('seconds', 0):.1f} s")
        return f"{self.id:>5}  {self.kind:<5}  {self.name}  ({what}, {self.n} snippets)  {self.path}"


@dataclass
class AddReport:
    added: list[Item] = field(default_factory=list)
    present: list[tuple[str, Item]] = field(default_factory=list)  # (path, the item it already is)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    # (path, one-line reason) of files found in a folder that are neither sheet music nor audio by
    # their suffix (notes, systems.json, ...): listed, not failures (``expand``)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"added {len(self.added)}, already indexed {len(self.present)}, "
                f"failed {len(self.failed)}"
                + (f", skipped {len(self.skipped)} other file(s)" if self.skipped else ""))


def file_kind(path: Path) -> str | None:
    s = path.suffix.lower()
    return "sheet" if s in SHEET_SUFFIXES else "audio" if s in AUDIO_SUFFIXES else None


def expand(paths: Iterable[str | Path], skipped: list | None = None
           ) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to add from files and folders (recursive, sorted), and (path, reason) for arguments
    that are neither an existing file nor a folder.

    In a folder, files whose suffix is neither sheet music (``SHEET_SUFFIXES``) nor audio
    (``AUDIO_SUFFIXES``) are not added and not failures: each is appended to ``skipped`` as
    (path, "{path}: not sheet music or audio (suffix '.txt'), skipped"), for the caller to list
    (``AddReport.skipped``). Hidden files and folders (name starting with '.') are passed over
    without a word. A file named on its own is always returned (an unknown suffix then fails).
    """
    files, bad = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if file_kind(f):
                    files.append(f)
                elif skipped is not None:
                    skipped.append((str(f), f"{f}: not sheet music or audio "
                                            f"(suffix '{f.suffix or '(none)'}'), skipped"))
        elif p.is_file():
            files.append(p)
        else:
            bad.append((str(p), f"{p}: no such file or folder"))
    return files, bad


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def front_end_version() -> str:
    """A fingerprint of the code that turns files into strips and spectrograms (``pages``,
    ``audio``, ``spectrogram``): a collection records the one it was indexed with, so stored
    front-end data is reused (``reembed``) only where the same code would make it again."""
    h = hashlib.sha256()
    for name in ("pages.py", "audio.py", "spectrogram.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:12]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _reason(exc: BaseException) -> str:
    """One line for an unexpected exception while ingesting a file."""
    if isinstance(exc, MemoryError):
        return "out of memory while reading it (file too large for this machine?)"
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, (OSError, ValueError)) \
        else text or type(exc).__name__


def _atomic_save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Collection:
    """A collection of scores and recordings on disk (created on first use).

    ``Collection(path).add(paths)`` indexes files and folders; ``.identify(query)`` ranks the
    collection's recordings for a score query and its scores for an audio query (see
    ``audiosheet.identify``). ``model``: the snippet model for a new collection (default the
    shipped one); an existing collection uses the model it was made with and refuses another.
    ``index``: "auto" (exact search up to ``approx_threshold`` vectors of a kind, HNSW above),
    "exact" or "approx". ``query_model``: how queries are embedded (see ``query_embedder``).
    """

    def __init__(self, path: str | Path, model: str | None = None, index: str | None = None,
                 approx_threshold: int | None = None, create: bool = True, query_model: str = "auto"):
        if query_model not in ("auto", "onnx", "torch"):
            raise CollectionError(f"{path}: query_model must be auto, onnx or torch, not {query_model!r}")
        self.query_model = query_model
        self.root = Path(path)
        self._embedder = None
        self._query_embedder = None
        self._faiss: dict[str, object] = {}
        self._cache: dict[int, dict] = {}
        self._passage_embedder = None
        self._passage_index: dict = {}
        db = self.root / "collection.sqlite"
        if not db.is_file():
            if not create:
                raise CollectionError(f"{self.root}: no collection here (create one with "
                                      f"'audiosheet index add --db {self.root} FILES')")
            if self.root.exists() and not self.root.is_dir():
                raise CollectionError(f"{self.root}: exists and is not a folder")
            self._create(model or DEFAULT_MODEL, index or "auto",
                         APPROX_THRESHOLD if approx_threshold is None else approx_threshold)
        self.db = sqlite3.connect(db, timeout=60)
        self.db.row_factory = sqlite3.Row
        self.settings = {r["key"]: json.loads(r["value"]) for r in self.db.execute("select * from settings")}
        if model is not None:
            self._check_model(model)
        changes = {}
        if index is not None and index != self.settings["index"]:
            changes["index"] = index
        if approx_threshold is not None and approx_threshold != self.settings["approx_threshold"]:
            changes["approx_threshold"] = int(approx_threshold)
        if changes:
            self._check_index_mode(changes.get("index", "auto"))
            with self._writing():
                with self.db:
                    for k, v in changes.items():
                        self._set(k, v)
                self._rebuild_all()

    # ------------------------------------------------------------------ setup

    def _create(self, model: str, index: str, threshold: int) -> None:
        from .model import read_checkpoint, resolve_model

        self._check_index_mode(index)
        try:
            ckpt = resolve_model(model)
        except ValueError as exc:
            raise CollectionError(str(exc)) from None
        cfg, _, _ = read_checkpoint(ckpt)
        if getattr(cfg, "kind", None) == "passage":
            raise CollectionError(f"{model}: a passage model; a collection is made with a snippet model "
                                  f"and takes a passage model with 'audiosheet index passages'")
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        (self.root / "faiss").mkdir(exist_ok=True)
        tmp = self.root / ".collection.sqlite.tmp"
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        with db:
            db.execute("create table settings (key text primary key, value text not null)")
            db.execute("""create table items (id integer primary key autoincrement, kind text not null,
                          name text not null, path text not null, sha256 text not null unique,
                          added text not null, n integer not null, info text not null)""")
            settings = {"format": 1, "model": model if not Path(model).exists() else str(ckpt.resolve()),
                        "model_sha256": sha256_file(ckpt), "model_config": cfg.to_dict(),
                        "dim": cfg.embed_dim, "index": index, "approx_threshold": int(threshold),
                        "generation": 0, "sheet_hop": SHEET_HOP, "audio_hop": AUDIO_HOP,
                        "front_end": front_end_version(), "created": _now()}
            db.executemany("insert into settings values (?, ?)",
                           [(k, json.dumps(v)) for k, v in settings.items()])
        db.close()
        os.replace(tmp, self.root / "collection.sqlite")  # the collection exists only when complete

    def _check_index_mode(self, index: str) -> None:
        if index not in INDEX_MODES:
            raise CollectionError(f"{self.root}: index must be {', '.join(INDEX_MODES)}, not {index!r}")

    def _set(self, key: str, value) -> None:
        self.db.execute("insert or replace into settings values (?, ?)", (key, json.dumps(value)))
        self.settings[key] = value

    def _recorded_model(self, model: str, missing: Callable[[Exception], str], differs: str) -> Path:
        """The checkpoint of ``model`` if it is the one this collection was indexed with;
        ``CollectionError(missing(exc))`` if it cannot be found, ``CollectionError(differs)`` if
        it is another."""
        from .model import resolve_model

        try:
            ckpt = resolve_model(model)
        except ValueError as exc:
            raise CollectionError(missing(exc)) from None
        if sha256_file(ckpt) != self.settings["model_sha256"]:
            raise CollectionError(differs)
        return ckpt

    def _check_model(self, model: str) -> None:
        self._recorded_model(model, str, f"{self.root}: indexed with model {self.settings['model']}, "
                             f"not {model}; models cannot be mixed (use another --db)")

    @property
    def model_name(self) -> str:
        return self.settings["model"]

    @property
    def embedder(self):
        """The collection's model, ready for inference (loaded on first use)."""
        if self._embedder is None:
            from .embed import Embedder
            from .model import load_model

            name = self.settings["model"]
            ckpt = self._recorded_model(
                name, lambda exc: f"{self.root}: its model is not available here ({exc})",
                f"{self.root}: model {name} here differs from the one the collection was indexed "
                f"with; re-index into a new --db, or copy it with 'audiosheet index reembed'")
            self._embedder = Embedder(load_model(ckpt))
        return self._embedder

    @property
    def query_embedder(self):
        """The model for queries. ``query_model`` "onnx" (and "auto" while torch is not imported
        yet, as in a one-shot ``audiosheet identify``): the collection's ONNX export run by ONNX
        Runtime when it is there and made from this collection's checkpoint — no torch import, a
        fresh process answers ~1 s sooner (``onnx_embed``). "torch" (and "auto" when torch is
        already imported at the first query, as in a long-lived process): the torch model
        (``embed.Embedder``, batch ``QUERY_BATCH``) — bf16 autocast embeds a 30-s query ~2× faster
        than ONNX Runtime's float32 here, which pays in a warm process."""
        return self.query_embedder_for(0)

    def query_embedder_for(self, snippets: int):
        """``query_embedder`` for a query of ``snippets`` snippets: "auto" also takes torch for a
        long query (over ``TORCH_FROM`` snippets, ~2 minutes of audio), where its faster
        embedding outweighs the ~1 s of importing it."""
        if self._query_embedder is not None and not (
                snippets > TORCH_FROM and self.query_model == "auto"
                and type(self._query_embedder).__name__ == "OnnxEmbedder"):
            return self._query_embedder
        self._query_embedder = None
        if self.query_model == "torch" or (self.query_model == "auto" and (
                "torch" in sys.modules or snippets > TORCH_FROM)):
            from .embed import Embedder

            self._query_embedder = Embedder(self.embedder.model, batch=QUERY_BATCH)
        if self._query_embedder is None:
            if self._query_export_current():
                from .onnx_embed import OnnxEmbedder

                try:
                    self._query_embedder = OnnxEmbedder(self.root / "model")
                except (ImportError, OSError):
                    pass
            if self._query_embedder is None:
                self._query_embedder = self.embedder
        return self._query_embedder

    def _query_export_current(self) -> bool:
        """Is there a complete ONNX export in ``model/`` made from this collection's checkpoint?"""
        from .onnx_embed import read_meta

        meta = read_meta(self.root / "model")
        return meta is not None and meta.get("model_sha256") == self.settings["model_sha256"]

    def _export_query_model(self) -> None:
        """Write the ONNX export of the model for queries if it is missing or stale (inside the
        writer lock; a failed export only costs queries their fast start)."""
        from .onnx_embed import export

        if self._query_export_current():
            return
        try:
            export(self.embedder.model, self.root / "model", self.settings["model_sha256"])
        except Exception as exc:  # noqa: BLE001 - e.g. an exporter missing from this torch build
            print(f"{self.root}: note: no ONNX export for fast queries ({_reason(exc)})", file=sys.stderr)

    @contextlib.contextmanager
    def _writing(self):
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
        gen = self.settings["generation"]
        for f in (self.root / "faiss").iterdir():
            if not f.name.endswith(f".{gen}.faiss"):
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

    # ------------------------------------------------------------------ items

    def items(self, kind: str | None = None) -> list[Item]:
        q = "select * from items" + (" where kind = ?" if kind else "") + " order by id"
        return [Item(r["id"], r["kind"], r["name"], r["path"], r["sha256"], r["added"], r["n"],
                     json.loads(r["info"])) for r in self.db.execute(q, (kind,) if kind else ())]

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

    def data(self, item: Item) -> dict:
        """An item's stored arrays (embeddings float32 and locations), cached."""
        if item.id not in self._cache:
            with np.load(self.root / "items" / f"{item.sha256}.npz") as z:
                d = {k: z[k] for k in z.files if k not in FRONT_END}
            d["emb"] = d["emb"].astype(np.float32)
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[item.id] = d
        return self._cache[item.id]

    # ------------------------------------------------------------------ add / remove

    def _ingest(self, path: Path, kind: str) -> tuple[dict, dict, int]:
        """(arrays to store, info, snippets) of one file; PageError / AudioError on bad input."""
        emb = self.embedder
        if kind == "sheet":
            from .pages import ingest_sheet

            ing = ingest_sheet(path, hop=self.settings["sheet_hop"])
            e = emb.sheet(ing.snippets)
            st, loc = ing.strip, ing.locations
            arrays = dict(emb=e.astype(np.float16), column=loc.column, page=loc.page,
                          system=loc.system, x0=loc.x0.astype(np.float32), x1=loc.x1.astype(np.float32),
                          boxes=st.boxes, offsets=st.offsets, lefts=st.lefts, tops=st.tops,
                          scales=st.scales, angles=st.angles, sizes=st.sizes, strip=st.image)
            info = {"pages": ing.n_pages, "systems": len(st.boxes), "skipped_pages": ing.skipped,
                    "staff_space": [round(lay.staff_space, 2) for lay in ing.layouts]}
            if ing.warnings:
                info["warnings"] = list(ing.warnings)
            return arrays, info, len(e)
        from .audio import ingest_audio

        ing = ingest_audio(path, context=emb.config.context, hop=self.settings["audio_hop"])
        e = emb.audio(ing.snippets)
        info = {"seconds": round(ing.seconds, 3), "sample_rate": ing.sample_rate,
                "channels": ing.channels, **{k: v for k, v in ing.info.items()
                                             if k in ("level_dbfs", "gain_db", "decoder")}}
        if ing.warnings:
            info["warnings"] = list(ing.warnings)
        return (dict(emb=e.astype(np.float16), frame=ing.centres, fps=np.float32(ing.fps),
                     spec=ing.spec.astype(np.float16)), info, len(e))

    def add(self, paths: Iterable[str | Path], names: dict[str, str] | None = None,
            progress: bool = True) -> AddReport:
        """Index files and folders (recursively). A file whose content is already indexed is left
        alone; a file that cannot be read is reported in ``failed`` and the others are added.
        ``names``: piece name per path (default: the file name without its suffix)."""
        from tqdm import tqdm

        from .audio import AudioError
        from .pages import PageError

        report = AddReport()
        files, report.failed = expand(paths, report.skipped)
        names = {str(Path(k).resolve()): v for k, v in (names or {}).items()}
        with self._writing():
            self._export_query_model()
            known = {i.sha256: i for i in self.items()}
            pending: list[tuple[Item, dict]] = []
            last_commit = time.time()
            bar = tqdm(files, desc="index", unit="file", disable=not progress or len(files) < 2,
                       file=sys.stderr)
            for f in bar:
                kind = file_kind(f)
                if kind is None:
                    report.failed.append((str(f), f"{f}: not a sheet-music or audio file "
                                                  f"(suffix '{f.suffix or '(none)'}')"))
                    continue
                try:
                    sha = sha256_file(f)
                except OSError as exc:
                    report.failed.append((str(f), f"{f}: cannot read ({exc.strerror or exc})"))
                    continue
                if sha in known:
                    report.present.append((str(f), known[sha]))
                    continue
                try:  # whatever goes wrong with one file is that file's failure
                    arrays, info, n = self._ingest(f, kind)
                    _atomic_save_npz(self.root / "items" / f"{sha}.npz", **arrays)
                    if self.settings.get("passage_model"):
                        self._write_passages(sha, kind, arrays)
                except (PageError, AudioError) as exc:
                    report.failed.append((str(f), str(exc)))
                    continue
                except Exception as exc:  # MemoryError, a decoder's crash, a full disk, ...
                    report.failed.append((str(f), f"{f}: {_reason(exc)}"))
                    continue
                full = str(f.resolve())
                item = Item(0, kind, names.get(full, f.stem), full, sha, _now(), n, info)
                known[sha] = item
                pending.append((item, arrays))
                if time.time() - last_commit > COMMIT_EVERY_S:
                    report.added += self._commit(pending)
                    pending, last_commit = [], time.time()
            if pending:
                report.added += self._commit(pending)
        return report

    def _commit(self, pending: list[tuple[Item, dict]]) -> list[Item]:
        """Make ``pending`` items part of the collection: next-generation FAISS files, then one
        transaction (items + generation), then the old generation's files go."""
        gen = self.settings["generation"] + 1
        with self.db:  # ids are assigned inside the transaction that also moves the generation
            for item, _ in pending:
                cur = self.db.execute("insert into items (kind, name, path, sha256, added, n, info) "
                                      "values (?, ?, ?, ?, ?, ?, ?)",
                                      (item.kind, item.name, item.path, item.sha256, item.added, item.n,
                                       json.dumps(item.info)))
                item.id = cur.lastrowid
            for kind in KINDS:
                new = [a["emb"] for it, a in pending if it.kind == kind]
                self._next_index(kind, gen, append=new)
            self._set("generation", gen)
        self._clean()
        return [it for it, _ in pending]

    def remove(self, key: str | int) -> Item:
        """Remove one item (by id, name, path or hash) from the collection."""
        with self._writing():
            item = self.find(key)
            gen = self.settings["generation"] + 1
            with self.db:
                self.db.execute("delete from items where id = ?", (item.id,))
                for kind in KINDS:
                    self._next_index(kind, gen, rebuild=kind == item.kind)
                self._set("generation", gen)
            self._cache.pop(item.id, None)
            self._clean()
        return item

    # ------------------------------------------------------------------ passages

    def _passage_tag(self, sha: str | None = None) -> str | None:
        sha = sha or self.settings.get("passage_model_sha256")
        return sha[:12] if sha else None

    @property
    def passage_model_name(self) -> str | None:
        return self.settings.get("passage_model")

    @property
    def passage_embedder(self):
        """The collection's passage model, ready for inference; ``CollectionError`` if it has none."""
        if self._passage_embedder is None:
            from .passage_embed import PassageEmbedder

            name = self.settings.get("passage_model")
            if not name:
                raise CollectionError(f"{self.root}: no passage model in this collection (add one with "
                                      f"'audiosheet index passages --db {self.root}')")
            from .model import resolve_model

            try:
                ckpt = resolve_model(name)
            except ValueError as exc:
                raise CollectionError(f"{self.root}: its passage model is not available here ({exc})") from None
            if sha256_file(ckpt) != self.settings["passage_model_sha256"]:
                raise CollectionError(f"{self.root}: passage model {name} here differs from the one "
                                      f"the collection's passages were made with; add it again")
            self._passage_embedder = PassageEmbedder(ckpt)
        return self._passage_embedder

    def front_end(self, item: Item) -> dict:
        """What the front end made of an item: sheet ``strip`` (uint8 (100, W)) and ``offsets``;
        audio ``spec`` (float32 (T, 92)) and ``fps``. Collections made before these were kept
        read the file again (it must still be there, unchanged)."""
        with np.load(self.root / "items" / f"{item.sha256}.npz") as z:
            if "strip" in z.files:
                return {"strip": z["strip"], "offsets": z["offsets"]}
            if "spec" in z.files:
                return {"spec": z["spec"].astype(np.float32), "fps": float(z["fps"])}
        path = Path(item.path)
        if not path.is_file() or sha256_file(path) != item.sha256:
            raise CollectionError(f"{path}: indexed before front-end data was kept, and the file is "
                                  "gone or changed; remove the item and add the file again")
        if item.kind == "sheet":
            from .pages import ingest_sheet

            st = ingest_sheet(path, hop=self.settings["sheet_hop"]).strip
            return {"strip": st.image, "offsets": st.offsets}
        from .audio import ingest_audio

        ing = ingest_audio(path, hop=self.settings["audio_hop"])
        return {"spec": ing.spec, "fps": float(ing.fps)}

    def _passage_arrays(self, kind: str, fe: dict, embedder=None) -> dict:
        pe = embedder or self.passage_embedder
        if kind == "sheet":
            e, first, n = pe.sheet(fe["strip"], fe["offsets"])
            return dict(emb=e.astype(np.float16), system=first, systems=n)
        e, t0, t1 = pe.audio(fe["spec"])
        return dict(emb=e.astype(np.float16), start=t0, end=t1, fps=np.float32(fe["fps"]))

    def _write_passages(self, sha: str, kind: str, arrays: dict, embedder=None, tag: str | None = None) -> None:
        fe = ({"strip": arrays["strip"], "offsets": arrays["offsets"]} if kind == "sheet" else
              {"spec": arrays["spec"].astype(np.float32), "fps": float(arrays["fps"])})
        folder = self.root / "passages" / (tag or self._passage_tag())
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_save_npz(folder / f"{sha}.npz", **self._passage_arrays(kind, fe, embedder))

    def add_passage_model(self, model: str, progress: bool = True) -> dict:
        """Compute every item's passage embeddings with passage model ``model`` (from the kept
        front-end data: no file is read again) and make it the collection's passage model; the
        snippet index is untouched. Running it again with the collection's passage model only
        computes what is missing; another passage model's embeddings are replaced once all are
        done (until then the collection keeps its previous one)."""
        from tqdm import tqdm

        from .model import resolve_model
        from .passage_embed import PassageEmbedder

        try:
            ckpt = resolve_model(model)
            pe = PassageEmbedder(ckpt)
        except ValueError as exc:
            raise CollectionError(f"{self.root}: {exc}") from None
        sha = sha256_file(ckpt)
        tag = self._passage_tag(sha)
        report = {"computed": 0, "kept": 0, "failed": []}
        with self._writing():
            folder = self.root / "passages" / tag
            folder.mkdir(parents=True, exist_ok=True)
            items = self.items()
            for it in tqdm(items, desc="passages", unit="item", disable=not progress or len(items) < 2,
                           file=sys.stderr):
                if (folder / f"{it.sha256}.npz").is_file():
                    report["kept"] += 1
                    continue
                try:
                    fe = self.front_end(it)
                except (CollectionError, ValueError, OSError) as exc:
                    report["failed"].append((it.path, str(exc).splitlines()[0]))
                    continue
                _atomic_save_npz(folder / f"{it.sha256}.npz", **self._passage_arrays(it.kind, fe, pe))
                report["computed"] += 1
            if report["failed"]:
                return report  # the collection keeps its previous passage model (if any)
            with self.db:
                self._set("passage_model", model if not Path(model).exists() else str(ckpt.resolve()))
                self._set("passage_model_sha256", sha)
                self._set("passage_model_config", pe.config.to_dict())
            self._passage_embedder = None
            self._passage_index = {}
            self._clean()
        return report

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

    # ------------------------------------------------------------------ FAISS

    def _index_kind(self, n: int) -> str:
        mode = self.settings["index"]
        return "approx" if mode == "approx" or (mode == "auto" and n > self.settings["approx_threshold"]) \
            else "exact"

    def _new_index(self, kind_of_index: str):
        import faiss

        d = self.settings["dim"]
        if kind_of_index == "approx":
            ix = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            ix.hnsw.efConstruction = 80
            return ix
        return faiss.IndexFlatIP(d)

    def _next_index(self, kind: str, gen: int, append: list[np.ndarray] = (),
                    rebuild: bool = False) -> None:
        """Generation ``gen``'s FAISS file of ``kind``: the current one hard-linked when nothing
        of that kind changes, else written by ``_write_index``."""
        old = self.root / "faiss" / f"{kind}.{self.settings['generation']}.faiss"
        if rebuild or append or not old.exists():
            self._write_index(kind, gen, append=list(append), rebuild=rebuild)
        else:
            os.link(old, self.root / "faiss" / f"{kind}.{gen}.faiss")

    def _write_index(self, kind: str, gen: int, append: list[np.ndarray] | None = None,
                     rebuild: bool = False) -> None:
        """Write ``faiss/KIND.GEN.faiss`` (via a temporary file): the current generation's index
        plus ``append``ed rows, or rebuilt from the item files (``rebuild``, or when the kind of
        index changes, or when the current file is missing). Runs inside the DB transaction, so
        ``items`` already shows the new state."""
        import faiss

        items = self.items(kind)
        total = sum(i.n for i in items)
        want = self._index_kind(total)
        old = self.root / "faiss" / f"{kind}.{self.settings['generation']}.faiss"
        ix = None
        if not rebuild and append is not None and old.exists():
            ix = faiss.read_index(str(old))
            if (want == "approx") != isinstance(ix, faiss.IndexHNSWFlat):
                ix = None
        if ix is None:
            ix = self._new_index(want)
            for it in items:
                ix.add(self._embeddings(it))
        else:
            for e in append:
                ix.add(np.ascontiguousarray(e, np.float32))
        if ix.ntotal != total:
            raise CollectionError(f"{self.root}: {kind} index has {ix.ntotal} rows, items {total}")
        path = self.root / "faiss" / f"{kind}.{gen}.faiss"
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(ix, str(tmp))
        os.replace(tmp, path)
        self._faiss.pop(kind, None)

    def _embeddings(self, item: Item) -> np.ndarray:
        with np.load(self.root / "items" / f"{item.sha256}.npz") as z:
            return np.ascontiguousarray(z["emb"], np.float32)

    def _rebuild_all(self) -> None:
        gen = self.settings["generation"] + 1
        with self.db:
            for kind in KINDS:
                self._write_index(kind, gen, rebuild=True)
            self._set("generation", gen)
        self._clean()

    def search_index(self, kind: str):
        """(FAISS index, items in row order, item index of every row, first row of each item)
        of the ``kind`` embeddings."""
        import faiss

        self._reload_settings()
        gen = self.settings["generation"]
        cached = self._faiss.get(kind)
        if cached is None or cached[0] != gen:
            items = self.items(kind)
            path = self.root / "faiss" / f"{kind}.{gen}.faiss"
            try:
                ix = faiss.read_index(str(path))
            except RuntimeError:  # missing or damaged: derived data, so rebuild it in memory
                ix = self._new_index(self._index_kind(sum(i.n for i in items)))
                for it in items:
                    ix.add(self._embeddings(it))
            if isinstance(ix, faiss.IndexHNSWFlat):
                ix.hnsw.efSearch = HNSW_EF_SEARCH
            starts = np.cumsum([0] + [i.n for i in items])
            if ix.ntotal != starts[-1]:
                raise CollectionError(f"{self.root}: {kind} index and items disagree "
                                      f"({ix.ntotal} vs {starts[-1]} rows)")
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

    # ------------------------------------------------------------------ queries

    def identify(self, query, method: str = "dtw", top: int = 5, start: float | None = None,
                 end: float | None = None, **options):
        """Rank the collection's recordings (score query) or scores (audio query); ``options``
        (threshold, segment_over, segment_s, ...) as ``audiosheet.identify.identify``."""
        from .identify import identify

        return identify(self, query, method=method, top=top, start=start, end=end, **options)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

