"""Matching: pure functions over embedding arrays that turn snippet similarities into piece scores.

Used by ``audiosheet.retrieval.identify``; no file, model or collection here, so each can be tested alone.

* ``subsequence_dtw`` / ``subsequence_dtw_batch``: align a whole query sequence to a stretch of a
  reference (an excerpt of a piece), tempo ratio bounded;
* ``densest_run``: where an item's votes are densest;
* ``vote_rates``: votes per √(item snippets), so long items do not win the shortlist by size;
* ``reversed_background``: a per-item null score — the same query, time-reversed, warped against
  the same stretch of the same item. A reversed query keeps every snippet (so its similarity
  level, the item's "hubness" and the number of places a chance alignment can start in a long
  item) but not their order, so only the true piece loses much by the reversal;
* ``confidence``: a logistic function of the calibrated margin, fitted on development queries.
"""
from __future__ import annotations

import numpy as np

MAX_STEP, MAX_STAY = 4, 3  # dtw: tempo ratio reference/query between 1/(MAX_STAY + 1) and MAX_STEP


def subsequence_dtw_batch(cost: np.ndarray, max_step: int = MAX_STEP, max_stay: int = MAX_STAY
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``subsequence_dtw`` of k cost matrices of one shape at once: ``cost`` (k, n, m) →
    (mean cost per query row (k,), first column (k,), last column (k,)); inf where no path."""
    cost = np.asarray(cost, np.float64)
    k, n, m = cost.shape
    cols = np.arange(m)
    # acc[:, z]: best cost of a path at (i, j) that has stayed on j for the last z rows; start: its
    # first column
    acc = np.full((k, max_stay + 1, m), np.inf)
    acc[:, 0] = cost[:, 0]
    start = np.broadcast_to(cols, (k, max_stay + 1, m)).copy()
    kk = np.arange(k)[:, None]
    for i in range(1, n):
        z = np.argmin(acc, axis=1)  # (k, m)
        prev, ps = acc[kk, z, cols], start[kk, z, cols]
        best, bs = np.full((k, m), np.inf), np.zeros((k, m), np.int64)
        for s in range(1, min(max_step, m - 1) + 1):
            better = prev[:, :-s] < best[:, s:]
            best[:, s:] = np.where(better, prev[:, :-s], best[:, s:])
            bs[:, s:] = np.where(better, ps[:, :-s], bs[:, s:])
        acc[:, 1:] = acc[:, :-1] + cost[:, i, None]
        start[:, 1:] = start[:, :-1]
        acc[:, 0], start[:, 0] = best + cost[:, i], bs
    z = np.argmin(acc, axis=1)
    end = acc[kk, z, cols]  # (k, m)
    j1 = np.argmin(end, axis=1)
    total = end[np.arange(k), j1]
    j0 = start[np.arange(k), z[np.arange(k), j1], j1]
    ok = np.isfinite(total)
    return (np.where(ok, total / n, np.inf), np.where(ok, j0, 0).astype(np.int64),
            np.where(ok, j1, m - 1).astype(np.int64))


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
    """``reversed_background`` of one query against several references, batched (references of
    similar length together, padded with unreachable columns): float (k, 4) rows of (cost,
    reversed cost, first column, last column). A reference too short to hold the query at the
    slowest tempo ratio (an indexed excerpt) is aligned inside the query instead — the reference
    reversed for the background — and matched whole (first 0, last its end)."""
    out = np.zeros((len(refs), 4))
    order = sorted(range(len(refs)), key=lambda k: len(refs[k]))
    short = [k for k in order if len(refs[k]) * (max_stay + 1) < len(q)]
    for k in short:  # the item is shorter than the query can be squeezed into: align it inside
        r = refs[k]   # the query instead (an excerpt indexed: a crop of one system, a short clip)
        sim = r @ q.T
        c, _, _ = subsequence_dtw_batch(1.0 - np.stack([sim, sim[::-1]]), max_step, max_stay)
        out[k] = (c[0], c[1], 0, len(r) - 1)
    order = [k for k in order if k not in short]
    while order:  # batches of references within 1.5× of each other's length: little padding
        group = [k for k in order if len(refs[k]) <= 1.5 * max(len(refs[order[0]]), 1)]
        order = order[len(group):]
        n, m = len(q), max(len(refs[k]) for k in group)
        cost = np.full((2 * len(group), n, m), np.inf)
        for g, k in enumerate(group):
            sim = q @ refs[k].T
            cost[2 * g, :, :len(refs[k])] = 1.0 - sim
            cost[2 * g + 1, :, :len(refs[k])] = 1.0 - sim[::-1]
        c, j0, j1 = subsequence_dtw_batch(cost, max_step, max_stay)
        last = np.array([len(refs[k]) - 1 for k in group])
        out[group] = np.column_stack([c[0::2], c[1::2], np.minimum(j0[0::2], last),
                                      np.minimum(j1[0::2], last)])
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


__all__ = ["MAX_STEP", "MAX_STAY", "subsequence_dtw", "subsequence_dtw_batch", "densest_run",
           "vote_rates", "reversed_background", "reversed_background_many", "calibrated_score", "leads",
           "confidence"]
