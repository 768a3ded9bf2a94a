"""Per-piece jobs: the skeleton every corpus stage shares (build, restrip, export, pool, variants).

A stage is a function of one job's arguments that returns ``(piece, failure or None, seconds)``
and never raises for a bad piece (only ``KeyboardInterrupt`` goes through): ``run_jobs`` runs it
over many jobs in worker processes, ``alarm`` limits a job's time, ``failure_reason`` turns an
exception into the one-line reason the stage reports, ``write_failures`` writes the stage's
``failures.tsv``. A job draws its randomness from ``piece_rng`` (the build seed and what the job
is), so its result depends neither on the order of the jobs nor on the worker that runs it; a job
writes its files atomically (``audiosheet.files``), so an interrupted stage resumes where it was.
"""
from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from audiosheet.files import write_json, write_text


def stable_hash(*parts) -> int:
    """A 64-bit hash of ``parts`` (as strings) that is the same in every process and run."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def piece_rng(seed: int, *parts) -> np.random.Generator:
    """The random generator of one job: seeded by ``seed`` and what the job is (``parts``: the
    stage, the piece id, ...)."""
    return np.random.default_rng([seed, stable_hash(*parts)])


class JobTimeout(Exception):
    """A job that ran past its time limit (``alarm``)."""


def alarm(seconds: int) -> None:
    """Raise ``JobTimeout`` in this process after ``seconds`` (where the platform has SIGALRM;
    elsewhere jobs run without a limit). ``cancel_alarm`` when the job's limited part is done."""
    def handler(signum, frame):
        raise JobTimeout(f"took longer than {seconds} s")

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, handler)
        signal.alarm(seconds)


def cancel_alarm() -> None:
    """Cancel the ``alarm`` of this process, if any."""
    if hasattr(signal, "SIGALRM"):
        signal.alarm(0)


def failure_reason(exc: BaseException, path: str = "") -> str:
    """One line saying why a job failed: the exception's type and the first line of its message
    (with ``path`` taken out where the message starts with it), at most 300 characters."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path:
        msg = msg.replace(f"{path}: ", "")
    return f"{type(exc).__name__}: {msg}"[:300]


def run_jobs(fn: Callable, jobs: Sequence, workers: int, desc: str, progress: bool) -> Iterator:
    """``fn(job)`` for every job, in ``workers`` processes (in this one with ``workers`` ≤ 1),
    yielded as they finish (in any order), with a progress bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="piece", disable=not progress, file=sys.stderr)
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            yield fn(j)
            bar.update()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(workers, maxtasksperchild=25) as pool:
            for r in pool.imap_unordered(fn, jobs, chunksize=1):
                yield r
                bar.update()
    bar.close()


def write_failures(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A stage's ``failures.tsv``, atomically: a header of ``columns``, then one tab-separated
    line per row (piece first; newlines inside a field become spaces)."""
    lines = ["\t".join(columns)] + ["\t".join(map(str, row)).replace("\n", " ") for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def write_record(path: str | Path, obj) -> None:
    """A corpus JSON file (manifest, splits, piece.json, logs), atomically: indent 1, sorted keys,
    non-ASCII characters as they are, so that identical builds write identical files."""
    write_json(path, obj, indent=1, sort_keys=True, ensure_ascii=False)
