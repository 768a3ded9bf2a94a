"""Ingestion on Ray workers (the optional extra ``audiosheet[distributed]``): ``Collection.add(paths,
ingest=RayIngest(...))`` and ``audiosheet index add --ray [ADDRESS]``.

Each worker is a Ray actor holding one CPU (``num_cpus=1``, torch on one thread) that loads the
collection's snippet model once and then reads, cuts and embeds files by path (``embed_file`` with
the collection's front end and hops: the same rung as ``Collection.ingest_local``), so the arrays
it returns are the ones one process would make (bit for bit here: tests/test_distributed.py). The
driver keeps at most ``in_flight`` files queued per worker, gives ``Collection.add`` each file's
result strictly in input order as soon as it and those before it are done, and ``add`` commits them
there, in order, atomically, as with local ingestion. Nothing but paths and the model's checkpoint
goes to the workers, so on a cluster of several machines every worker must see the files at the
same path (a shared file system) and have audiosheet installed (README, "Distributed ingestion").

A file's exception in a worker comes back as that file's exception (same class and message, so the
driver reports the same one-line failure); a worker that dies (out of memory, killed, node lost) is
replaced and the files it held are tried once more, then reported as failed with one line.

Ray is imported only here, and only when a ``RayIngest`` is made; without it a ``RayUnavailable``
(RuntimeError, one line) says to install ``audiosheet[distributed]``.
"""
from __future__ import annotations

import contextlib
import heapq
import importlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from audiosheet.files import sha256_file
from audiosheet.retrieval.store import CollectionError

IN_FLIGHT = 2  # files queued per worker: one being embedded, one waiting, so no worker idles
AHEAD = 8  # completed files per worker held for order before more are sent
ATTEMPTS = 2  # tries per file when its worker dies under it (it may have died of another file)
START_TIMEOUT_S = 300.0  # for the workers to be placed and to load the model


class RayUnavailable(RuntimeError):
    """Ray is not installed (or cannot be imported); the message is one line."""


class RayWorkerError(RuntimeError):
    """A file's worker died or was lost while ingesting it, ``ATTEMPTS`` times."""


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"distributed ingestion needs Ray, which is not installed here ({exc}): "
                             f"pip install 'audiosheet[distributed]'") from None
    return ray


def _plain(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def _pack_exception(exc: BaseException) -> tuple:
    """A file's exception as plain data (front-end errors take several arguments, so they do not
    survive pickling as they are): (tag, module, class name, args, attributes, one-line text)."""
    attrs = {k: v for k, v in vars(exc).items() if _plain(v)}
    args = tuple(a if _plain(a) else str(a) for a in exc.args)
    if isinstance(exc, OSError) and exc.filename is not None and len(args) == 2:  # not in its args
        args += (str(exc.filename),)
    return ("__exception__", type(exc).__module__, type(exc).__qualname__, args, attrs, " ".join(str(exc).split()))


def _unpack_exception(packed: tuple) -> BaseException:
    """The exception ``_pack_exception`` described: of the same class, with the same message, where
    that class can be imported here; a RuntimeError naming the class otherwise."""
    _, module, name, args, attrs, text = packed
    with contextlib.suppress(Exception):  # any failure to rebuild it: say what it was instead
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:  # OSError and most others: made again from their arguments
                exc = cls(*args)
            except Exception:  # noqa: BLE001 - e.g. PageError(path, reason): its fields instead
                exc = None
            if exc is None or " ".join(str(exc).split()) != text:
                exc = cls.__new__(cls)
                exc.args = args
            vars(exc).update(attrs)
            if " ".join(str(exc).split()) == text:
                return exc
    return RuntimeError(f"{name}: {text}")


def _is_packed(value) -> bool:
    return isinstance(value, tuple) and len(value) == 6 and value[0] == "__exception__"


class IngestWorker:
    """What one Ray actor runs: the collection's model, loaded once, and ``ingest(path, kind)`` →
    ``(arrays, info)`` as ``Collection._ingest`` makes them, or the file's exception packed as data.

    ``spec``: the collection's ``model`` (name or checkpoint path), ``model_sha256``,
    ``front_end_settings`` (``geometry.FrontEnd`` dict), ``sheet_hop`` and ``audio_hop``.
    ``checkpoint``: the checkpoint file's bytes, used when ``model`` does not resolve to a file with
    that hash on this worker's machine. ``threads``: torch threads (one per CPU the actor holds).
    ``warm``: the kinds ("sheet", "audio") whose pathway is traced here rather than at the first file.
    Raises CollectionError (one line) if the model's front end is not the collection's.
    """

    def __init__(self, spec: dict, checkpoint: bytes, threads: int = 1, warm: tuple = ("sheet", "audio")):
        import numpy as np
        import torch

        torch.set_num_threads(threads)
        from audiosheet.geometry import FrontEnd, FrontEndMismatch
        from audiosheet.models.checkpoint import front_end_of, load_model, resolve_model
        from audiosheet.models.embed import Embedder

        try:
            ckpt = resolve_model(spec["model"])
            local = sha256_file(ckpt) == spec["model_sha256"]
        except (ValueError, OSError):
            local = False
        if local:
            model = load_model(ckpt)
        else:  # the model is not at that path on this machine: the driver's copy
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = Path(tmp) / "model.safetensors"
                ckpt.write_bytes(checkpoint)
                model = load_model(ckpt)
        self.front_end = FrontEnd.from_dict(spec["front_end_settings"])
        try:
            self.front_end.check(front_end_of(model), f"model {spec['model']}", "the collection")
        except FrontEndMismatch as exc:
            raise CollectionError(str(exc)) from None
        self.embedder = Embedder(model)
        cfg = self.embedder.config  # pathways traced now (2-4 s each), at start-up, not at the first file
        if "sheet" in warm:
            self.embedder.sheet(np.zeros((1, *cfg.sheet_shape), np.float32))
        if "audio" in warm:
            self.embedder.audio(np.zeros((1, cfg.audio_bins, cfg.context), np.float32))
        self.hops = {"sheet": spec["sheet_hop"], "audio": spec["audio_hop"]}
        self.source = "local path" if local else "driver's copy"

    def ready(self) -> str:
        """Where this worker runs and which model file it loaded (for error messages and logs)."""
        return f"{socket.gethostname()} pid {os.getpid()} ({self.source})"

    def ingest(self, path: str, kind: str):
        """``(arrays, info)`` of one file, or its exception as ``_pack_exception`` data."""
        from audiosheet.models.embed_file import embed_file

        try:
            fe = embed_file(path, self.embedder, kind, self.front_end, self.hops[kind])
            return fe.arrays(), fe.info()
        except Exception as exc:  # noqa: BLE001 - the driver reports it as this file's failure
            return _pack_exception(exc)


def _spec(collection) -> tuple[dict, bytes]:
    """What a worker needs to rebuild the collection's embedder and front end, and the checkpoint's
    bytes. Loading ``collection.embedder`` first checks the model here as local ingestion would."""
    from audiosheet.models.checkpoint import resolve_model

    collection.embedder  # noqa: B018 - CollectionError (one line) for a missing or different model
    s = collection.settings
    spec = {"model": s["model"], "model_sha256": s["model_sha256"],
            "front_end_settings": collection.front_end_settings.to_dict(),
            "sheet_hop": s["sheet_hop"], "audio_hop": s["audio_hop"]}
    return spec, resolve_model(s["model"]).read_bytes()


class RayIngest:
    """``Collection.add``'s ``ingest`` on Ray: ``coll.add(paths, ingest=RayIngest(address, workers))``.

    ``address``: None starts a local Ray instance with ``workers`` CPUs (shut down when done);
    anything else is given to ``ray.init(address=...)`` to join a running cluster ("HEAD:6379",
    "auto" for the cluster started on this machine by ``ray start``, "ray://HEAD:10001"). ``workers``:
    actors, one CPU each (default: this machine's CPUs locally, the cluster's CPUs when joining
    one). ``in_flight``: files queued per worker. Files are read by the workers from their paths.

    Called by ``add`` as ``ingest(collection, [(path, kind), ...])``, it yields per file, in order,
    ``(arrays, info)`` or the exception that file raised (``Collection.ingest_local``'s contract).
    Used that way it starts Ray and the workers at the first file and stops them after the last;
    ``start(collection)`` / ``close()`` (or ``with RayIngest(...) as ri: ri.start(coll)``) keep them
    across several ``add`` calls. Raises RayUnavailable when Ray is not installed (on creation),
    RuntimeError (one line) when the workers cannot be placed or cannot load the model (on start),
    CollectionError for a collection whose model is not available here.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, in_flight: int = IN_FLIGHT,
                 start_timeout_s: float = START_TIMEOUT_S):
        self.ray = _ray()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.address, self.workers = address, workers
        self.in_flight, self.start_timeout_s = max(1, int(in_flight)), start_timeout_s
        self._actors: list = []
        self._spec: dict | None = None
        self._init_ray = False
        self.hosts: list[str] = []  # ready() of each worker after start: where it runs

    # -- lifetime -------------------------------------------------------------------------------

    def start(self, collection, kinds=("sheet", "audio")) -> RayIngest:
        """Start (or join) Ray and one worker per CPU asked for, each with ``collection``'s model
        loaded and its pathways for ``kinds`` traced; returns when all are ready. Raises
        RuntimeError (one line) if they are not ready within ``start_timeout_s`` or fail to load
        the model; CollectionError if the collection's model is not available here."""
        ray = self.ray
        spec, checkpoint = _spec(collection)
        if self._actors and spec == self._spec:
            return self
        self._kill_actors()
        if not ray.is_initialized():
            import logging

            opts = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
            if self.address is None:
                # workers at the driver's priority (Ray's default niceness is 15: on a shared
                # machine they would yield to every other process, as one-process ingestion does not)
                ray.init(address="local", num_cpus=self.workers or _cpus(), _system_config={"worker_niceness": 0},
                         **opts)
            else:
                try:
                    ray.init(address=self.address, **opts)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise RuntimeError(f"cannot join the Ray cluster at {self.address}: "
                                       f"{' '.join(str(exc).split())[:200]}") from None
            self._init_ray = True
        n = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._spec, self._checkpoint, self._warm = spec, ray.put(checkpoint), tuple(sorted(kinds))
        self._actors = [self._new_actor() for _ in range(n)]
        try:
            self.hosts = ray.get([a.ready.remote() for a in self._actors], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(f"{n} Ray worker(s) of 1 CPU each not ready after {self.start_timeout_s:.0f} s "
                               f"(the cluster has {cpus:g} CPU(s); ask for fewer with --workers)") from None
        except ray.exceptions.RayError as exc:
            self.close()
            raise RuntimeError(f"the Ray workers could not load the model: {_ray_reason(exc)}") from None
        return self

    def _new_actor(self):
        worker = self.ray.remote(num_cpus=1, max_restarts=0)(IngestWorker)
        return worker.remote(self._spec, self._checkpoint, 1, self._warm)

    def _kill_actors(self) -> None:
        for a in self._actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a)
        self._actors = []

    def close(self) -> None:
        """Stop the workers, and Ray itself if this object started or joined it."""
        self._kill_actors()
        self._spec = None
        if self._init_ray:
            self.ray.shutdown()
            self._init_ray = False

    def __enter__(self) -> RayIngest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ingestion ------------------------------------------------------------------------------

    def __call__(self, collection, todo: list[tuple[Path, str]]) -> Iterator[tuple[dict, dict] | BaseException]:
        owned = not self._actors
        self.start(collection, {kind for _, kind in todo})
        try:
            yield from self._results(todo)
        finally:
            if owned:
                self.close()

    def _results(self, todo: list[tuple[Path, str]]) -> Iterator[tuple[dict, dict] | BaseException]:
        """Each file's result in order: files are sent to the least loaded worker, at most
        ``in_flight`` per worker and ``AHEAD`` per worker beyond the first not yet given back."""
        import numpy as np

        ray = self.ray
        n, workers = len(todo), len(self._actors)
        waiting = list(range(n))  # a heap: files to send, retries among them
        tries = [0] * n
        running: dict = {}  # ObjectRef -> (file index, worker slot, actor handle)
        load = [0] * workers
        done: dict[int, object] = {}
        nxt = 0
        while nxt < n:
            while waiting and waiting[0] - nxt < AHEAD * workers and min(load) < self.in_flight:
                i = heapq.heappop(waiting)
                slot = load.index(min(load))
                actor = self._actors[slot]
                path, kind = todo[i]
                running[actor.ingest.remote(str(path), kind)] = (i, slot, actor)
                load[slot] += 1
                tries[i] += 1
            if nxt in done:
                value = done.pop(nxt)
                nxt += 1
                if isinstance(value, BaseException):
                    yield value
                elif _is_packed(value):
                    yield _unpack_exception(value)
                else:  # copies: the object store's arrays are read-only views
                    arrays, info = value
                    yield {k: np.array(v) for k, v in arrays.items()}, info
                continue
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i, slot, actor = running.pop(ref)
                load[slot] -= 1
                try:
                    done[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # raised outside the file's try (e.g. unpicklable)
                    done[i] = RayWorkerError(_ray_reason(exc))
                except ray.exceptions.RayError as exc:  # the worker died or its node was lost
                    if self._actors[slot] is actor:
                        self._replace(slot)
                    if tries[i] < ATTEMPTS:
                        heapq.heappush(waiting, i)
                    else:
                        done[i] = RayWorkerError(f"the Ray worker ingesting it died {tries[i]} times "
                                                 f"({_ray_reason(exc)})")

    def _replace(self, slot: int) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(self._actors[slot])
        self._actors[slot] = self._new_actor()


def _ray_reason(exc: BaseException) -> str:
    """One short line for a Ray error: out of memory said as such, otherwise its class and the
    first line of its message."""
    text = str(exc)
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower() or "oom" in text.lower().split():
        return "out of memory"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def _cpus() -> int:
    """The CPUs this process may use (its affinity where the system says, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
