"""The collection a person uses: a ``Store`` (the folder, see ``retrieval.store``) and the model
it was indexed with.

``Collection(path).add(paths)`` reads, cuts and embeds files (``models.embed_file``: the public
rung "file → embeddings" that queries use too) with the front end recorded in the collection
(``geometry.FrontEnd``: the model's, from its checkpoint; today's defaults for a collection made
before it was recorded) and stores them; ``.identify(query)`` ranks the collection's recordings for
a score query and its scores for a recording query (``retrieval.identify``). A model whose front end
differs from the collection's is refused with one line.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from audiosheet.files import expand, file_kind, save_npz, sha256_file
from audiosheet.geometry import FrontEnd, FrontEndMismatch
from audiosheet.models.embed_file import embed_file, ingest_file
from audiosheet.retrieval.store import COMMIT_EVERY_S, CollectionError, Item, Store, failure_reason

DEFAULT_MODEL = "snippet-bl2-att84"
DEFAULT_PASSAGE_MODEL = "passage-gru"
TORCH_FROM = 500  # query snippets above which "auto" embeds with torch even in a fresh process
QUERY_BATCH = 16  # torch batch for queries: a 30-s query (120 snippets) embeds in 0.27 s warm vs
# 0.34 s at the indexing batch of 32 (less padding; benchmarks/oneshot.py)


@dataclass
class AddReport:
    added: list[Item] = field(default_factory=list)
    present: list[tuple[str, Item]] = field(default_factory=list)  # (path, the item it already is)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    # (path, one-line reason) of files found in a folder that are neither sheet music nor audio by
    # their suffix (notes, systems.json, ...): listed, not failures (``files.expand``)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"added {len(self.added)}, already indexed {len(self.present)}, "
                f"failed {len(self.failed)}"
                + (f", skipped {len(self.skipped)} other file(s)" if self.skipped else ""))


def file_failure(path: Path, exc: BaseException) -> str:
    """The one-line reason a file could not be indexed: a front-end error's own line (it names
    the file), anything else (MemoryError, a decoder's crash, a full disk) prefixed by the file."""
    from audiosheet.frontend.audio import AudioError
    from audiosheet.frontend.images import PageError

    return str(exc) if isinstance(exc, (PageError, AudioError)) else f"{path}: {failure_reason(exc)}"


class Collection(Store):
    """A collection of scores and recordings on disk (created on first use).

    ``Collection(path).add(paths)`` indexes files and folders; ``.identify(query)`` ranks the
    collection's recordings for a score query and its scores for an audio query (see
    ``audiosheet.retrieval.identify``). ``model``: the snippet model for a new collection (default the
    shipped one); an existing collection uses the model it was made with and refuses another.
    ``index``: "auto" (exact search up to ``approx_threshold`` vectors of a kind, HNSW above),
    "exact", "approx" or "compressed". ``shard_rows``: rows per search-index shard of a new collection
    (``retrieval.shards``). ``query_model``: how queries are embedded (see ``query_embedder``).
    Raises CollectionError (one line naming the folder) for what cannot be opened as asked.
    """

    def __init__(self, path: str | Path, model: str | None = None, index: str | None = None,
                 approx_threshold: int | None = None, create: bool = True, query_model: str = "auto",
                 shard_rows: int | None = None):
        if query_model not in ("auto", "onnx", "torch"):
            raise CollectionError(f"{path}: query_model must be auto, onnx or torch, not {query_model!r}")
        self.query_model = query_model
        self._embedder = None
        self._query_embedder = None
        self._passage_embedder = None
        super().__init__(path, index, approx_threshold, create,
                         new_settings=lambda: self._model_settings(model or DEFAULT_MODEL), shard_rows=shard_rows)
        if model is not None:
            self._check_model(model)

    def _model_settings(self, model: str) -> dict:
        """The settings a new collection records of its snippet model: name, hash, config and
        front end (``geometry.FrontEnd``, from the checkpoint)."""
        from audiosheet.models.checkpoint import is_passage, read_checkpoint, resolve_model

        try:
            ckpt = resolve_model(model)
            cfg, _, extra = read_checkpoint(ckpt)
        except ValueError as exc:
            raise CollectionError(str(exc)) from None
        if is_passage(cfg):
            raise CollectionError(f"{model}: a passage model; a collection is made with a snippet model "
                                  f"and takes a passage model with 'audiosheet index passages'")
        return {"model": model if not Path(model).exists() else str(ckpt.resolve()),
                "model_sha256": sha256_file(ckpt), "model_config": cfg.to_dict(), "dim": cfg.embed_dim,
                "front_end_settings": extra["front_end"]}

    @property
    def front_end_settings(self) -> FrontEnd:
        """The front end files are read with: the model's, recorded when the collection was made
        (today's defaults for a collection older than that record)."""
        try:
            return FrontEnd.from_dict(self.settings.get("front_end_settings"))
        except FrontEndMismatch as exc:
            raise CollectionError(f"{self.root}: {exc}") from None

    def _recorded_model(self, model: str, missing: Callable[[Exception], str], differs: str) -> Path:
        """The checkpoint of ``model`` if it is the one this collection was indexed with;
        ``CollectionError(missing(exc))`` if it cannot be found, ``CollectionError(differs)`` if
        it is another."""
        from audiosheet.models.checkpoint import resolve_model

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
            from audiosheet.models.checkpoint import front_end_of, load_model
            from audiosheet.models.embed import Embedder

            name = self.settings["model"]
            ckpt = self._recorded_model(
                name, lambda exc: f"{self.root}: its model is not available here ({exc})",
                f"{self.root}: model {name} here differs from the one the collection was indexed "
                f"with; re-index into a new --db, or copy it with 'audiosheet index reembed'")
            model = load_model(ckpt)
            try:
                self.front_end_settings.check(front_end_of(model), f"model {name}", f"collection {self.root}")
            except FrontEndMismatch as exc:
                raise CollectionError(str(exc)) from None
            self._embedder = Embedder(model)
        return self._embedder

    @property
    def query_embedder(self):
        """The model for queries. ``query_model`` "onnx" (and "auto" while torch is not imported
        yet, as in a one-shot ``audiosheet identify``): the collection's ONNX export run by ONNX
        Runtime when it is there and made from this collection's checkpoint — no torch import, a
        fresh process answers ~1 s sooner (``models.onnx``). "torch" (and "auto" when torch is
        already imported at the first query, as in a long-lived process): the torch model
        (``models.embed.Embedder``, batch ``QUERY_BATCH``) — bf16 autocast embeds a 30-s query ~2×
        faster than ONNX Runtime's float32 here, which pays in a warm process."""
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
            from audiosheet.models.embed import Embedder

            self._query_embedder = Embedder(self.embedder.model, batch=QUERY_BATCH)
        if self._query_embedder is None:
            if self._query_export_current():
                from audiosheet.models.onnx import OnnxEmbedder

                try:
                    self._query_embedder = OnnxEmbedder(self.root / "model")
                except (ImportError, OSError):
                    pass
            if self._query_embedder is None:
                self._query_embedder = self.embedder
        return self._query_embedder

    def _query_export_current(self) -> bool:
        """Is there a complete ONNX export in ``model/`` made from this collection's checkpoint?"""
        from audiosheet.models.onnx import read_meta

        meta = read_meta(self.root / "model")
        return meta is not None and meta.get("model_sha256") == self.settings["model_sha256"]

    def _export_query_model(self) -> None:
        """Write the ONNX export of the model for queries if it is missing or stale (inside the
        writer lock; a failed export only costs queries their fast start)."""
        from audiosheet.models.onnx import FORMAT, export, read_meta

        if self._query_export_current() and read_meta(self.root / "model")["format"] == FORMAT:
            return
        try:
            export(self.embedder.model, self.root / "model", self.settings["model_sha256"])
        except Exception as exc:  # noqa: BLE001 - e.g. an exporter missing from this torch build
            print(f"{self.root}: note: no ONNX export for fast queries ({failure_reason(exc)})", file=sys.stderr)

    def _ingest(self, path: Path, kind: str) -> tuple[dict, dict]:
        """(arrays to store, info) of one file (``embed_file`` with the collection's front end
        and hops); PageError / AudioError on bad input."""
        hop = self.settings["sheet_hop" if kind == "sheet" else "audio_hop"]
        fe = embed_file(path, self.embedder, kind, self.front_end_settings, hop)
        return fe.arrays(), fe.info()

    def add(self, paths: Iterable[str | Path], names: dict[str, str] | None = None,
            progress: bool = True, ingest: Callable | None = None) -> AddReport:
        """Index files and folders (recursively). A file whose content is already indexed is left
        alone; a file that cannot be read is reported in ``failed`` and the others are added.
        ``names``: piece name per path (default: the file name without its suffix).

        ``ingest``: how the new files are read and embedded — a callable taking this collection
        and a list of (path, kind) and yielding, for each in that order, ``(arrays, info)`` or the
        exception that file raised (default ``Collection.ingest_local``: one after another in
        this process; ``retrieval.distributed.RayIngest``: on Ray workers). Whatever it yields is
        committed here, in file order, as it arrives."""
        from tqdm import tqdm

        report = AddReport()
        files, report.failed = expand(paths, report.skipped)
        names = {str(Path(k).resolve()): v for k, v in (names or {}).items()}
        with self.writing():
            self._export_query_model()
            known = {i.sha256: i for i in self.items()}
            todo: list[tuple[Path, str, str]] = []  # (file, kind, sha256) of the new files
            first_of: dict[str, Path] = {}  # sha256 → the new file of that content met first
            again: list[tuple[Path, str]] = []  # (file, sha256) of content met earlier in this call
            for f in files:
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
                elif sha in first_of:
                    again.append((f, sha))
                else:
                    first_of[sha] = f
                    todo.append((f, kind, sha))
            pending: list[tuple[Item, dict]] = []
            last_commit = time.time()
            bar = tqdm(total=len(todo), desc="index", unit="file", disable=not progress or len(todo) < 2,
                       file=sys.stderr)
            results = (ingest or Collection.ingest_local)(self, [(f, kind) for f, kind, _ in todo])
            for (f, kind, sha), result in zip(todo, results):
                bar.update()
                try:  # whatever goes wrong with one file is that file's failure
                    if isinstance(result, BaseException):
                        raise result
                    arrays, info = result
                    full = str(f.resolve())
                    item = self.store_item(kind, names.get(full, f.stem), full, sha, arrays, info)
                    if self.settings.get("passage_model"):
                        self._write_passages(sha, kind, arrays)
                except Exception as exc:  # noqa: BLE001 - PageError/AudioError, MemoryError, ...
                    report.failed.append((str(f), file_failure(f, exc)))
                    continue
                pending.append((item, arrays))
                if time.time() - last_commit > COMMIT_EVERY_S:
                    report.added += self.commit(pending)
                    pending, last_commit = [], time.time()
            bar.close()
            if pending:
                report.added += self.commit(pending)
        by_sha = {it.sha256: it for it in report.added}
        for f, sha in again:  # the same content twice in this call: the second is the first's item
            if sha in by_sha:
                report.present.append((str(f), by_sha[sha]))
            else:
                report.failed.append((str(f), f"{f}: the same content as {first_of[sha]}, which failed"))
        return report

    def ingest_local(self, todo: list[tuple[Path, str]]) -> Iterator[tuple[dict, dict] | BaseException]:
        """``add``'s default ``ingest``: each (path, kind) read and embedded in this process, in
        order (``_ingest``); a file's exception is yielded, not raised."""
        for f, kind in todo:
            try:
                yield self._ingest(f, kind)
            except Exception as exc:  # noqa: BLE001 - the caller reports it as this file's failure
                yield exc

    @property
    def passage_embedder(self):
        """The collection's passage model, ready for inference; ``CollectionError`` if it has none."""
        if self._passage_embedder is None:
            from audiosheet.models.passage_embed import PassageEmbedder

            name = self.settings.get("passage_model")
            if not name:
                raise CollectionError(f"{self.root}: no passage model in this collection (add one with "
                                      f"'audiosheet index passages --db {self.root}')")
            from audiosheet.models.checkpoint import resolve_model

            try:
                ckpt = resolve_model(name)
            except ValueError as exc:
                raise CollectionError(f"{self.root}: its passage model is not available here ({exc})") from None
            if sha256_file(ckpt) != self.settings["passage_model_sha256"]:
                raise CollectionError(f"{self.root}: passage model {name} here differs from the one "
                                      f"the collection's passages were made with; add it again")
            self._passage_embedder = PassageEmbedder(ckpt)
        return self._passage_embedder

    def front_end_data(self, item: Item) -> dict:
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
        hop = self.settings["sheet_hop" if item.kind == "sheet" else "audio_hop"]
        ing = ingest_file(path, item.kind, self.front_end_settings, hop)
        if item.kind == "sheet":
            return {"strip": ing.strip.image, "offsets": ing.strip.offsets}
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
        save_npz(folder / f"{sha}.npz", **self._passage_arrays(kind, fe, embedder))

    def add_passage_model(self, model: str, progress: bool = True) -> dict:
        """Compute every item's passage embeddings with passage model ``model`` (from the kept
        front-end data: no file is read again) and make it the collection's passage model; the
        snippet index is untouched. Running it again with the collection's passage model only
        computes what is missing; another passage model's embeddings are replaced once all are
        done (until then the collection keeps its previous one)."""
        from tqdm import tqdm

        from audiosheet.models.checkpoint import resolve_model
        from audiosheet.models.passage_embed import PassageEmbedder

        try:
            ckpt = resolve_model(model)
            pe = PassageEmbedder(ckpt)
        except ValueError as exc:
            raise CollectionError(f"{self.root}: {exc}") from None
        sha = sha256_file(ckpt)
        tag = self._passage_tag(sha)
        report = {"computed": 0, "kept": 0, "failed": []}
        with self.writing():
            folder = self.root / "passages" / tag
            folder.mkdir(parents=True, exist_ok=True)
            items = self.items()
            for it in tqdm(items, desc="passages", unit="item", disable=not progress or len(items) < 2,
                           file=sys.stderr):
                if (folder / f"{it.sha256}.npz").is_file():
                    report["kept"] += 1
                    continue
                try:
                    fe = self.front_end_data(it)
                except (CollectionError, ValueError, OSError) as exc:
                    report["failed"].append((it.path, str(exc).splitlines()[0]))
                    continue
                save_npz(folder / f"{it.sha256}.npz", **self._passage_arrays(it.kind, fe, pe))
                report["computed"] += 1
            if report["failed"]:
                return report  # the collection keeps its previous passage model (if any)
            with self.db:
                self.set_setting("passage_model", model if not Path(model).exists() else str(ckpt.resolve()))
                self.set_setting("passage_model_sha256", sha)
                self.set_setting("passage_model_config", pe.config.to_dict())
            self._passage_embedder = None
            self._passage_index = {}
            self._clean()
        return report

    def identify(self, query, method: str = "dtw", top: int = 5, start: float | None = None,
                 end: float | None = None, **options):
        """Rank the collection's recordings (score query) or scores (audio query); ``options``
        (threshold, segment_over, segment_s, ...) as ``audiosheet.retrieval.identify.identify``."""
        from audiosheet.retrieval.identify import identify

        return identify(self, query, method=method, top=top, start=start, end=end, **options)
