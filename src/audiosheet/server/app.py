"""``audiosheet serve``: a FastAPI application over one collection.

The collection and its model are loaded once (``create_app``), so a query pays only for its own
work (decode, embed, search, DTW); a collection grown by another process's ``index add`` is seen at
the next request (the store re-reads its generation on every search).

API (the OpenAPI description is at ``/openapi.json``; no interactive docs page, which would load
its scripts from a CDN):

* ``POST /api/identify`` — multipart field ``file`` (a recording or a page: any suffix ``index add``
  accepts), optional form fields ``method``, ``top``, ``start``, ``end``. Answers the JSON of
  ``audiosheet identify --json`` plus, for a recording, ``alignment``: where the query is in its best
  score at each query snippet (``retrieval.identify.alignment_path``). 400 with the CLI's one-line
  reason for a file that cannot be read, 413 for an upload over ``max_upload`` bytes.
* ``GET /api/items``, ``GET /api/items/{id}/pages/{n}.png`` (page n, from 1, of an indexed score
  as the page reader reads it: the coordinate system of every location), ``GET /api/health``.
* ``GET /`` — the page (``static/``): drop or record a query, see the ranked list, the page with the
  passage boxed and a marker following the recording as it plays.

Safety: an upload is written to a temporary file of the server's own naming (only its suffix, if
it is one audiosheet reads, comes from the request) and removed whatever happens; page images are
found by item id, never by a path from the request. Queries run one at a time in a worker thread
(the torch model is not shown safe under two threads), so ``/api/health`` answers while one runs.
"""
from __future__ import annotations

import asyncio
import ctypes
import io
import re
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from audiosheet.files import file_kind
from audiosheet.retrieval.collection import Collection
from audiosheet.retrieval.identify import METHODS, identify
from audiosheet.retrieval.store import CollectionError, failure_reason

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD = 50 * 1024 * 1024  # bytes: uploads above this are refused with 413
PAGE_CACHE = 32  # rendered page images kept in memory
CHUNK = 1 << 20


class _Pages:
    """PNG page images of indexed scores, read as the page reader reads them; an LRU cache."""

    def __init__(self, size: int = PAGE_CACHE):
        self.size, self.cache, self.lock = size, OrderedDict(), threading.Lock()

    def png(self, path: str, n: int) -> bytes:
        key = (path, n)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        from PIL import Image

        from audiosheet.frontend.pages import iter_pages

        for k, page in enumerate(iter_pages(path)):
            if k == n - 1:
                buf = io.BytesIO()
                Image.fromarray(page).save(buf, format="PNG", optimize=False, compress_level=3)
                data = buf.getvalue()
                with self.lock:
                    self.cache[key] = data
                    while len(self.cache) > self.size:
                        self.cache.popitem(last=False)
                return data
        raise KeyError(n)


def _reason(exc: BaseException, tmp: Path, name: str) -> str:
    """The one-line reason of an error, naming the upload by its name instead of the temp file."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(str(tmp), name).replace(tmp.name, name) if tmp.name else text


def release_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).
    Requests that arrive together hold their uploads and answers at once; the allocator keeps the
    high-water mark they leave, scattered with live blocks, and the process grew ~10 % over 200
    queries after a burst of 20 (``benchmarks/serve.py``). Run on the query thread when a burst
    has been answered (a trim takes milliseconds to tens of them on a fragmented heap: not after
    every query)."""
    global _TRIM
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def limit_blas_threads() -> None:
    """NumPy's BLAS on one thread in this process (threadpoolctl). A query's BLAS calls are small
    (the spectrogram's filter bank, similarities of a query with its shortlist), but OpenBLAS's
    threads spin for a while after each one, and the torch model that embeds the query right
    after the spectrogram then shares the two cores with them: embedding a 30-s query took
    ~0.2 s instead of ~0.12 s in a server-like loop (``benchmarks/serve.py``)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def warm_up(embedder) -> None:
    """Run ``embedder``'s graphs once on silence and a blank snippet, so that the first query
    does not pay for tracing them (about 1.4 s on the 2-core machine: the first upload of the
    demo was answered in 1.5 s, the next ones in 0.14 s)."""
    cfg = embedder.config
    silence = np.zeros((4 * cfg.context, cfg.audio_bins), np.float32)
    if hasattr(embedder, "audio_sequence"):
        embedder.audio_sequence(silence, 5)
    embedder.sheet(np.zeros((1, *cfg.sheet_shape), np.float32))


def create_app(db: str | Path, max_upload: int = MAX_UPLOAD, query_model: str = "torch",
               warm: bool = True) -> FastAPI:
    """The application serving collection ``db`` (must exist; CollectionError otherwise).

    ``max_upload``: bytes an upload may have (413 above). ``query_model``: how queries are
    embedded (``Collection``; "torch" is the fastest in a warm process). ``warm``: load the
    model, trace its graphs (``warm_up``) and load the compiled DTW now (the first query then
    pays no load time).
    """
    coll = Collection(db, create=False, query_model=query_model)
    limit_blas_threads()
    if warm:
        from audiosheet.retrieval.matching import compile_dtw

        warm_up(coll.query_embedder_for(0))
        compile_dtw()
    app = FastAPI(title="audiosheet", summary="Which score is this recording, and where on the page?",
                  docs_url=None, redoc_url=None)
    # one query at a time, always on the same thread: the model and the FAISS indexes are shared,
    # and one thread keeps one malloc arena (queries spread over a thread pool's threads grew the
    # process by 70 % over 200 queries, each thread holding on to its own freed memory)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiosheet-query")
    pages = _Pages()
    load = {"waiting": 0, "peak": 0}  # queries in the worker's hands; most at once since a trim
    app.state.collection, app.state.max_upload = coll, int(max_upload)

    @app.middleware("http")
    async def refuse_large_uploads(request: Request, call_next):
        size = request.headers.get("content-length")
        if request.url.path == "/api/identify" and size and size.isdigit() and int(size) > max_upload + 64 * 1024:
            return JSONResponse({"detail": f"upload too large: {int(size):,} bytes (limit {max_upload:,})"},
                                status_code=413)
        return await call_next(request)

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "items": len(coll), "model": coll.model_name,
                "generation": coll.settings.get("generation")}

    @app.get("/api/items")
    def items() -> list[dict]:
        return [{"id": i.id, "kind": i.kind, "name": i.name, "snippets": i.n,
                 **{k: i.info[k] for k in ("pages", "systems", "seconds") if k in i.info}}
                for i in coll.items()]

    @app.get("/api/items/{item_id}/pages/{n}.png", responses={200: {"content": {"image/png": {}}}})
    def page(item_id: int, n: int) -> Response:
        try:
            item = coll.item(item_id)
        except CollectionError:
            item = None
        if item is None or item.kind != "sheet":
            raise HTTPException(404, f"no score with id {item_id}")
        if not 1 <= n <= int(item.info.get("pages", 0)):
            raise HTTPException(404, f"{item.name} has no page {n} (pages 1–{item.info.get('pages', 0)})")
        try:
            data = pages.png(item.path, n)
        except (OSError, ValueError, KeyError) as exc:
            raise HTTPException(404, f"{item.name}: page {n} cannot be read ({_reason(exc, Path(), item.name)})")
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/identify")
    async def identify_upload(file: UploadFile = File(...), method: str = Form("dtw"), top: int = Form(5),
                              start: float | None = Form(None), end: float | None = Form(None)) -> dict:
        name = Path(file.filename or "upload").name[:200]
        suffix = Path(name).suffix.lower()
        if not re.fullmatch(r"\.[a-z0-9]{1,6}", suffix or "") or file_kind("query" + suffix) is None:
            raise HTTPException(400, f"{name}: not a sheet-music or audio file (suffix '{suffix or '(none)'}')")
        if method not in METHODS:
            raise HTTPException(400, f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if not 1 <= top <= 100:
            raise HTTPException(400, f"top must be 1–100, not {top}")
        with tempfile.TemporaryDirectory(prefix="audiosheet-upload-") as d:
            tmp = Path(d) / f"query{suffix}"
            size = 0
            with open(tmp, "wb") as out:
                while chunk := await file.read(CHUNK):
                    size += len(chunk)
                    if size > max_upload:
                        raise HTTPException(413, f"{name}: upload too large (limit {max_upload:,} bytes)")
                    out.write(chunk)
            if size == 0:
                raise HTTPException(400, f"{name}: empty file")

            def run():
                return identify(coll, tmp, method=method, top=top, start=start, end=end, align=True)

            try:
                load["waiting"] += 1
                load["peak"] = max(load["peak"], load["waiting"])
                try:
                    res = await asyncio.get_running_loop().run_in_executor(worker, run)
                finally:
                    load["waiting"] -= 1
                    if load["waiting"] == 0 and load["peak"] > 1:  # the end of a burst
                        load["peak"] = 0
                        worker.submit(release_memory)
            except MemoryError:
                raise HTTPException(400, f"{name}: out of memory while reading it")
            except (ValueError, OSError, RuntimeError) as exc:  # our errors: one line naming the file
                raise HTTPException(400, _reason(exc, tmp, name))
            except Exception as exc:  # a decoder's crash on a damaged file is still that file's failure
                raise HTTPException(400, f"{name}: {failure_reason(exc)}")
        out = res.to_dict()
        out["query"] = name
        return out

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.router.on_shutdown.append(lambda: worker.shutdown(wait=False))
    return app


def serve(db: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload: int = MAX_UPLOAD) -> None:
    """Run the application with uvicorn until interrupted (``audiosheet serve``)."""
    import uvicorn

    app = create_app(db, max_upload=max_upload)
    print(f"audiosheet: serving {db} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
