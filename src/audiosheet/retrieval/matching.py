"""Matching: pure functions over embedding arrays that turn snippet similarities into piece scores.

Used by ``audiosheet.retrieval.identify``; no file, model or collection here, so each can be tested alone.

* ``subsequence_dtw`` / ``subsequence_dtw_batch`` / ``dtw_segments``: align a whole query sequence
  to a stretch of a reference (an excerpt of a piece), tempo ratio bounded; one recursion compiled
  with Numba (``_dtw_rows``), many problems per call;
* ``densest_run``: where an item's votes are densest;
* ``vote_rates``: votes per √(item snippets), so long items do not win the shortlist by size;
* ``reversed_background``: a per-item null score — the same query, time-reversed, warped against
  the same stretch of the same item. A reversed query keeps every snippet (so its similarity
  level, the item's "hubness" and the number of places a chance alignment can start in a long
  item) but not their order, so only the true piece loses much by the reversal;
* ``confidence``: a logistic function of the calibrated margin, fitted on development queries.
"""
from __future__ import annotations

import sys

import numpy as np

MAX_STEP, MAX_STAY = 4, 3  # dtw: tempo ratio reference/query between 1/(MAX_STAY + 1) and MAX_STEP


def _dtw_rows(cost, lo, hi, flip, max_step, max_stay, total, first, last):  # pragma: no cover
    """The subsequence-DTW recursion (``subsequence_dtw``) of k problems at once:
    problem b aligns the rows of ``cost`` (n, M) — in reverse order where ``flip[b]`` — to its
    columns ``lo[b]`` to ``hi[b]``. Writes each one's mean cost, first and last column (relative
    to ``lo[b]``; inf, 0, width - 1 where no path)."""
    n = cost.shape[0]
    stays = max_stay + 1
    for b in range(len(lo)):
        c0, m = lo[b], hi[b] - lo[b]
        # acc[j, z]: best cost of a path at (row, j) that has stayed on j for the last z rows,
        # start[j, z]: its first column; best[j], origin[j]: the same minimised over z
        acc = np.full((m, stays), np.inf)
        start = np.zeros((m, stays), np.int64)
        best, origin = np.empty(m), np.empty(m, np.int64)
        r = n - 1 if flip[b] else 0
        for j in range(m):
            acc[j, 0] = best[j] = cost[r, c0 + j]
            origin[j] = j
            for z in range(stays):
                start[j, z] = j
        for i in range(1, n):
            r = n - 1 - i if flip[b] else i
            for j in range(m - 1, -1, -1):  # right to left: best[j - s] still holds row i - 1
                c = cost[r, c0 + j]
                came, came_from = np.inf, 0
                for s in range(1, min(max_step, j) + 1):  # advance s columns (smallest s on ties)
                    if best[j - s] < came:
                        came, came_from = best[j - s], origin[j - s]
                for z in range(stays - 1, 0, -1):  # stay on j one row longer
                    acc[j, z] = acc[j, z - 1] + c
                    start[j, z] = start[j, z - 1]
                acc[j, 0], start[j, 0] = came + c, came_from
                zb = 0  # the best stay state (first on ties)
                for z in range(1, stays):
                    if acc[j, z] < acc[j, zb]:
                        zb = z
                best[j], origin[j] = acc[j, zb], start[j, zb]
        jb, tb = m - 1, np.inf
        for j in range(m):
            if best[j] < tb:
                tb, jb = best[j], j
        if tb < np.inf:
            total[b], first[b], last[b] = tb / n, origin[jb], jb
        else:
            total[b], first[b], last[b] = np.inf, 0, m - 1


def _numpy_rows(cost, lo, hi, flip, max_step, max_stay, total, first, last) -> None:
    """``_dtw_rows`` vectorised with NumPy over problems of similar width (padded with unreachable
    columns): the same recursion and ties, so the same results, without Numba's start-up."""
    order = sorted(range(len(lo)), key=lambda b: hi[b] - lo[b])
    while order:  # batches of problems within 1.5x of each other's width: little padding
        group = [b for b in order if hi[b] - lo[b] <= 1.5 * (hi[order[0]] - lo[order[0]])]
        order = order[len(group):]
        k, n, m = len(group), cost.shape[0], max(hi[b] - lo[b] for b in group)
        c = np.full((k, n, m), np.inf)
        for g, b in enumerate(group):
            c[g, :, :hi[b] - lo[b]] = cost[::-1, lo[b]:hi[b]] if flip[b] else cost[:, lo[b]:hi[b]]
        cols, kk = np.arange(m), np.arange(k)[:, None]
        acc = np.full((k, max_stay + 1, m), np.inf)  # acc[:, z, j], start[:, z, j] as in _dtw_rows
        acc[:, 0] = c[:, 0]
        start = np.broadcast_to(cols, (k, max_stay + 1, m)).copy()
        for i in range(1, n):
            z = np.argmin(acc, axis=1)
            prev, ps = acc[kk, z, cols], start[kk, z, cols]
            best, bs = np.full((k, m), np.inf), np.zeros((k, m), np.int64)
            for s in range(1, min(max_step, m - 1) + 1):
                better = prev[:, :-s] < best[:, s:]
                best[:, s:] = np.where(better, prev[:, :-s], best[:, s:])
                bs[:, s:] = np.where(better, ps[:, :-s], bs[:, s:])
            acc[:, 1:] = acc[:, :-1] + c[:, i, None]
            start[:, 1:] = start[:, :-1]
            acc[:, 0], start[:, 0] = best + c[:, i], bs
        z = np.argmin(acc, axis=1)
        end = acc[kk, z, cols]
        j1 = np.argmin(end, axis=1)
        tot = end[np.arange(k), j1]
        j0 = start[np.arange(k), z[np.arange(k), j1], j1]
        for g, b in enumerate(group):
            ok = np.isfinite(tot[g])
            total[b], first[b] = (tot[g] / n, j0[g]) if ok else (np.inf, 0)
            last[b] = j1[g] if ok else hi[b] - lo[b] - 1


_KERNEL = None
_CALLS = 0


def _kernel():
    """The DTW recursion to run: ``_dtw_rows`` compiled by Numba (serial: in parallel, Numba's
    OpenMP threads and torch's spun against each other and a query's embedding slowed by 20 %
    while the DTW gained nothing; cached on disk after the first compile) — except for a fresh
    process's first DTW, which runs ``_numpy_rows``: importing Numba and loading the compiled code
    costs ~0.6 s, more than it saves once (a one-shot ``audiosheet identify``); every later call, as
    in a server or an evaluation, is compiled. ``_numpy_rows`` also where Numba is missing."""
    global _KERNEL, _CALLS
    _CALLS += 1
    if _KERNEL is None:
        if _CALLS == 1 and "numba" not in sys.modules:
            return _numpy_rows
        try:
            import numba
        except ImportError:
            _KERNEL = _numpy_rows
        else:
            _KERNEL = numba.njit(cache=True, nogil=True)(_dtw_rows)
    return _KERNEL


def compile_dtw() -> None:
    """Load the compiled DTW now, for a long-lived process (the server at start-up), so that no
    query pays Numba's start-up (``_kernel``)."""
    global _CALLS
    _CALLS = max(_CALLS, 1)
    _kernel()


def dtw_segments(cost: np.ndarray, lo, hi, flip=None, max_step: int = MAX_STEP,
                 max_stay: int = MAX_STAY) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``subsequence_dtw`` of the rows of ``cost`` (n, M) against k column ranges at once:
    problem b takes columns ``lo[b]`` to ``hi[b]`` (exclusive), with the rows in reverse order
    where ``flip[b]``. Returns (mean cost per row (k,), first column (k,), last column (k,)),
    columns relative to ``lo[b]``; inf, 0, width - 1 where no path. Compiled with Numba (``_kernel``);
    a large set of problems is split between two threads (``_halves``: the compiled kernel does not
    hold the GIL; Numba's own parallel loops fought torch's OpenMP threads, see ``_kernel``)."""
    cost = np.ascontiguousarray(cost, np.float64)
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    flip = np.zeros(len(lo), np.bool_) if flip is None else np.asarray(flip, np.bool_)
    if len(lo) and ((lo < 0) | (hi <= lo) | (hi > cost.shape[1])).any():
        raise ValueError(f"column ranges must lie inside 0..{cost.shape[1]} and not be empty")
    total, first, last = np.empty(len(lo)), np.empty(len(lo), np.int64), np.empty(len(lo), np.int64)
    if len(cost) == 0:
        total[:], first[:], last[:] = np.inf, 0, hi - lo - 1
    elif len(lo):
        kernel = _kernel()
        halves = _halves(hi - lo, len(cost)) if kernel is not _numpy_rows else None
        if halves is None:
            kernel(cost, lo, hi, flip, int(max_step), int(max_stay), total, first, last)
        else:  # the compiled kernel releases the GIL: half the problems on a second thread
            outs = [(np.empty(len(h)), np.empty(len(h), np.int64), np.empty(len(h), np.int64)) for h in halves]
            job = _pool().submit(kernel, cost, lo[halves[1]], hi[halves[1]], flip[halves[1]],
                                 int(max_step), int(max_stay), *outs[1])
            kernel(cost, lo[halves[0]], hi[halves[0]], flip[halves[0]], int(max_step), int(max_stay), *outs[0])
            job.result()
            for h, (t, f, la) in zip(halves, outs):
                total[h], first[h], last[h] = t, f, la
    return total, first, last


PARALLEL_CELLS = 100_000  # DTW cells from which the problems are shared by two threads
_POOL = None


def _pool():
    """One worker thread for ``dtw_segments``'s second half (made on first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(1, thread_name_prefix="audiosheet-dtw")
    return _POOL


def _halves(widths: np.ndarray, rows: int) -> list[np.ndarray] | None:
    """Two sets of problem indices of about equal work (rows × width cells), or None where the
    work is too small for a second thread to pay (under ``PARALLEL_CELLS``), a single problem, or
    a single core."""
    import os

    if len(widths) < 2 or rows * int(widths.sum()) < PARALLEL_CELLS or (os.cpu_count() or 1) < 2:
        return None
    order = np.argsort(-widths, kind="stable")  # largest first, each to the lighter side
    side, load = np.zeros(len(widths), np.int64), [0, 0]
    for b in order:
        k = int(load[1] < load[0])
        side[b] = k
        load[k] += int(widths[b])
    return [np.flatnonzero(side == 0), np.flatnonzero(side == 1)]


def subsequence_dtw_batch(cost: np.ndarray, max_step: int = MAX_STEP, max_stay: int = MAX_STAY
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``subsequence_dtw`` of k cost matrices of one shape at once: ``cost`` (k, n, m) →
    (mean cost per query row (k,), first column (k,), last column (k,)); inf where no path."""
    cost = np.asarray(cost, np.float64)
    k, n, m = cost.shape
    if m == 0:
        return np.full(k, np.inf), np.zeros(k, np.int64), np.zeros(k, np.int64)
    side = cost.transpose(1, 0, 2).reshape(n, k * m)  # the k matrices side by side
    lo = np.arange(k, dtype=np.int64) * m
    return dtw_segments(side, lo, lo + m, None, max_step, max_stay)


def subsequence_dtw(cost: np.ndarray, max_step: int = MAX_STEP, max_stay: int = MAX_STAY
                    ) -> tuple[float, int, int]:
    """Best alignment of all query rows to a stretch of reference columns.

    ``cost`` (n, m): query snippet i against reference snippet j. The path visits one reference
    column per query row, advancing 0 to ``max_step`` columns from row to row but staying on a
    column at most ``max_stay`` rows in a row, so the reference/query tempo ratio stays within
    1/(max_stay + 1) … ``max_step``; it may start and end anywhere in the reference. Every query
    row adds its cost once, so costs of different references compare. Returns (mean cost per
    query row, first column, last column); cost inf if the reference is too short for any path.
    (Subsequence DTW: Müller, *Fundamentals of Music Processing*, 2015, §7.2.)
    """
    c, j0, j1 = subsequence_dtw_batch(np.asarray(cost)[None], max_step, max_stay)
    return float(c[0]), int(j0[0]), int(j1[0])


def subsequence_dtw_path(cost: np.ndarray, max_step: int = MAX_STEP, max_stay: int = MAX_STAY
                         ) -> tuple[float, np.ndarray]:
    """``subsequence_dtw`` with its path: (mean cost per query row, reference column of every
    query row, int64 (n,)); the same steps, so the same cost, first and last column. An empty
    path (and cost inf) if the reference is too short for any path."""
    cost = np.asarray(cost, np.float64)
    n, m = cost.shape
    # acc[i, z, j]: best cost of a path at (i, j) that has stayed on j for the last z rows;
    # back[i, z, j]: the column of row i - 1 on that path (its stay count follows from it)
    acc = np.full((n, max_stay + 1, m), np.inf)
    back = np.zeros((n, max_stay + 1, m), np.int64)
    acc[0, 0] = cost[0]
    for i in range(1, n):
        prev = acc[i - 1].min(axis=0)
        best, arg = np.full(m, np.inf), np.zeros(m, np.int64)
        for s in range(1, min(max_step, m - 1) + 1):
            better = prev[:-s] < best[s:]
            best[s:] = np.where(better, prev[:-s], best[s:])
            arg[s:] = np.where(better, np.arange(m - s), arg[s:])
        acc[i, 0], back[i, 0] = best + cost[i], arg
        acc[i, 1:] = acc[i - 1, :-1] + cost[i]
        back[i, 1:] = np.arange(m)
    end = acc[-1].min(axis=0)
    j = int(np.argmin(end))
    if not np.isfinite(end[j]):
        return float("inf"), np.zeros(0, np.int64)
    path = np.empty(n, np.int64)
    z = int(np.argmin(acc[-1, :, j]))
    for i in range(n - 1, -1, -1):
        path[i] = j
        if i:
            j_prev = int(back[i, z, j])
            z = z - 1 if j_prev == j else int(np.argmin(acc[i - 1, :, j_prev]))
            j = j_prev
    return float(end[path[-1]] / n), path


def densest_run(hits: np.ndarray, width: int) -> tuple[int, int]:
    """(first, last) of the ``width``-long stretch of positions holding most of ``hits``."""
    h = np.sort(np.asarray(hits))
    if not len(h):
        return 0, 0
    counts = np.searchsorted(h, h + width, "left") - np.arange(len(h))
    i = int(np.argmax(counts))
    return int(h[i]), int(h[i + counts[i] - 1])


def vote_rates(votes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Votes per √(item snippets): (items,) float. Raw votes grow with an item's length (a
    48-page volume offers 16× the neighbours of a 3-page piece); dividing by the square root
    keeps a long true piece ahead of short impostors while stopping volumes from winning by
    size alone (the same normalisation as the passage method's shortlist)."""
    return np.asarray(votes, np.float64) / np.sqrt(np.maximum(np.asarray(sizes, np.float64), 1.0))


def reversed_background(q: np.ndarray, ref: np.ndarray, max_step: int = MAX_STEP,
                        max_stay: int = MAX_STAY) -> tuple[float, float, int, int]:
    """(cost of the query, cost of the time-reversed query, first, last column of the query's
    path) of one query (n, d) against one reference stretch (m, d), both L2-normalised rows;
    costs are 1 − cosine averaged along the best subsequence-DTW path."""
    sim = q @ ref.T
    cost = 1.0 - np.stack([sim, sim[::-1]])
    c, j0, j1 = subsequence_dtw_batch(cost, max_step, max_stay)
    return float(c[0]), float(c[1]), int(j0[0]), int(j1[0])


def reversed_background_many(q: np.ndarray, refs: list[np.ndarray], max_step: int = MAX_STEP,
                             max_stay: int = MAX_STAY) -> np.ndarray:
    """``reversed_background`` of one query against several references at once (one matrix
    product against all of them, one compiled DTW pass): float (k, 4) rows of (cost, reversed
    cost, first column, last column). A reference too short to hold the query at the slowest
    tempo ratio (an indexed excerpt) is aligned inside the query instead — the reference reversed
    for the background — and matched whole (first 0, last its end)."""
    out = np.zeros((len(refs), 4))
    short = [k for k in range(len(refs)) if len(refs[k]) * (max_stay + 1) < len(q)]
    for k in short:  # the item is shorter than the query can be squeezed into: align it inside
        r = refs[k]   # the query instead (an excerpt indexed: a crop of one system, a short clip)
        c, _, _ = dtw_segments(1.0 - r @ q.T, [0, 0], [len(q)] * 2, [False, True], max_step, max_stay)
        out[k] = (c[0], c[1], 0, len(r) - 1)
    rest = [k for k in range(len(refs)) if k not in short and len(refs[k])]
    for k in range(len(refs)):
        if not len(refs[k]):
            out[k] = (np.inf, np.inf, 0, 0)
    if rest:
        widths = np.array([len(refs[k]) for k in rest], np.int64)
        lo = np.concatenate([[0], np.cumsum(widths)[:-1]])
        cost = 1.0 - q @ np.concatenate([refs[k] for k in rest]).T  # (n, all columns)
        c, j0, j1 = dtw_segments(cost, np.repeat(lo, 2), np.repeat(lo + widths, 2),
                                 np.tile([False, True], len(rest)), max_step, max_stay)
        out[rest] = np.column_stack([c[0::2], c[1::2], j0[0::2], j1[0::2]])
    return out


def calibrated_score(cost: float, background: float) -> float:
    """The margin by which a query's alignment beats its own time-reversed alignment against the
    same item (cosine units; ≈ 0 for an unrelated item whatever its length, large for the true
    piece). −inf where the item is too short for the query."""
    if not np.isfinite(cost):
        return float("-inf")
    if not np.isfinite(background):
        return float(1.0 - cost)
    return float(background - cost)


SPREAD_FLOOR = 0.015  # cosine: least spread assumed for the impostors' margins (few candidates)
IMPOSTOR_MARGIN = 0.10  # cosine: an impostor's typical margin, standing in for missing candidates
# (development sets: impostors' margins median ≈ 0.08 on real scans, ≈ 0.15 on engraved pages)


def leads(margins: np.ndarray, min_candidates: int = 5) -> np.ndarray:
    """How far each candidate stands out from the others, in units of the others' spread, for the
    candidates of one query sorted by margin (descending): the top candidate's
    z = (its margin − the best other margin) / std(other margins), every other candidate's
    z = (its margin − the top margin) / the same std (≤ 0). With fewer than ``min_candidates``
    candidates, typical impostors (``IMPOSTOR_MARGIN``) stand in for the missing ones, so a small
    collection cannot make a weak top candidate look confident; the spread is at least
    ``SPREAD_FLOOR``; -inf margins (items too short for the query) give -inf. (Score
    normalisation against the query's own impostors, as Z-norm / T-norm in speaker verification:
    Auckenthaler et al., Digital Signal Processing 10, 2000.)"""
    m = np.asarray(margins, np.float64)
    z = np.full(len(m), -np.inf)
    if not len(m) or not np.isfinite(m[0]):
        return z
    others = m[1:][np.isfinite(m[1:])]
    pad = np.full(max(min_candidates - 1 - len(others), 0), IMPOSTOR_MARGIN)
    others = np.concatenate([others, pad])
    spread = max(float(others.std()), SPREAD_FLOOR)
    z[0] = (m[0] - others.max()) / spread
    finite = np.isfinite(m)
    finite[0] = False
    best = max(m[0], IMPOSTOR_MARGIN) if len(pad) else m[0]  # keeps every other z below the top's
    z[finite] = (m[finite] - best) / spread
    return z


def confidence(z: float, coef: tuple[float, float]) -> float:
    """Probability that a candidate is the query's piece, ``sigmoid(a + b·z)`` of its lead ``z``
    (``leads``), with ``coef`` = (a, b) fitted by logistic regression on development queries
    (``identify.CONFIDENCE``; benchmarks/calibrate.py). 0 for z = -inf."""
    if not np.isfinite(z):
        return 0.0
    a, b = coef
    return float(1.0 / (1.0 + np.exp(-(a + b * z))))


__all__ = ["MAX_STEP", "MAX_STAY", "subsequence_dtw", "subsequence_dtw_batch", "dtw_segments", "compile_dtw", "densest_run",
           "vote_rates", "reversed_background", "reversed_background_many", "calibrated_score", "leads",
           "confidence"]
