"""Matching (issue 17 item 5): the pure functions over embedding arrays that identification is
built from — subsequence DTW, densest runs, vote rates, reversed-query backgrounds, leads and
confidence — tested on hand-made arrays, without a collection or a model."""
from __future__ import annotations

import numpy as np
import pytest

from audiosheet.retrieval.matching import (
    calibrated_score,
    confidence,
    dtw_segments,
    densest_run,
    leads,
    reversed_background,
    reversed_background_many,
    subsequence_dtw,
    subsequence_dtw_path,
    subsequence_dtw_batch,
    vote_rates,
)


def _unit(rng, n, d=16):
    """``n`` random unit vectors of ``d`` dimensions."""
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_batched_dtw_equals_one_by_one():
    rng = np.random.default_rng(1)
    costs = 1 - np.stack([_unit(rng, 30) @ _unit(rng, 90).T for _ in range(3)])
    c, j0, j1 = subsequence_dtw_batch(costs)
    for k in range(3):
        assert (c[k], j0[k], j1[k]) == pytest.approx(subsequence_dtw(costs[k]))


def _dtw_with(kernel: str, costs: np.ndarray):
    """subsequence_dtw_batch through one of matching's two implementations of the recursion."""
    from audiosheet.retrieval import matching

    if kernel == "compiled":
        matching.compile_dtw()  # past a fresh process's first (NumPy) call
        assert matching._kernel() is not matching._numpy_rows
        return subsequence_dtw_batch(costs)
    k, n, m = costs.shape
    lo = np.arange(k, dtype=np.int64) * m
    out = np.empty(k), np.empty(k, np.int64), np.empty(k, np.int64)
    matching._numpy_rows(np.ascontiguousarray(costs.transpose(1, 0, 2).reshape(n, k * m)), lo, lo + m,
                         np.zeros(k, bool), 4, 3, *out)
    return out


@pytest.mark.parametrize("n,m,pad", [(30, 90, 0), (40, 60, 25), (12, 5, 0), (9, 2, 0), (1, 7, 0),
                                     (20, 400, 100)])
def test_compiled_dtw_equals_the_numpy_recursion(n, m, pad):
    """The compiled kernel gives exactly the NumPy recursion's costs, first and last columns (the
    vectorised recursion used before it was compiled, still run for a fresh process's first
    call), with ties (quantised costs), unreachable padding columns (inf) and references too short
    for any path; and both agree with the path version (its own NumPy code) on cost and ends."""
    rng = np.random.default_rng(n * 1000 + m)
    costs = np.round(1 - np.stack([_unit(rng, n) @ _unit(rng, m).T for _ in range(5)]), 1)
    if pad:
        costs[:, :, m - pad:] = np.inf
    got, want = _dtw_with("compiled", costs), _dtw_with("numpy", costs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    if not pad:
        for out in (got, want):
            for k in range(len(costs)):
                c, path = subsequence_dtw_path(costs[k])
                assert c == pytest.approx(out[0][k])
                if len(path):
                    assert (path[0], path[-1]) == (out[1][k], out[2][k])
                else:
                    assert not np.isfinite(out[0][k])


def test_reversed_background_separates_true_piece_from_long_impostor():
    rng = np.random.default_rng(0)
    piece = _unit(rng, 200)
    q = piece[50:110] + rng.normal(scale=0.3, size=(60, 16))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    cost, back, j0, j1 = reversed_background(q, piece)
    true_margin = calibrated_score(cost, back)
    assert abs(j0 - 50) <= 2 and abs(j1 - 109) <= 2
    # an impostor 20× longer: more places for a chance alignment, lower raw cost than a short one,
    # but its margin over the reversed query stays near 0
    long = _unit(rng, 4000)
    cost_l, back_l, _, _ = reversed_background(q, long)
    short = _unit(rng, 200)
    cost_s, _, _, _ = reversed_background(q, short)
    assert cost_l < cost_s  # raw costs favour the long item ...
    assert abs(calibrated_score(cost_l, back_l)) < 0.03 < true_margin  # ... margins do not
    assert calibrated_score(float("inf"), float("inf")) == float("-inf")


def test_vote_rates_and_confidence():
    assert vote_rates(np.array([40, 10]), np.array([1600, 100])).tolist() == [1.0, 1.0]
    coef = (-3.0, 2.0)
    assert confidence(4.0, coef) > 0.99 and confidence(0.0, coef) < 0.05
    assert confidence(float("-inf"), coef) == 0.0
    from audiosheet.retrieval.matching import SPREAD_FLOOR

    z = leads(np.array([0.30, 0.10, 0.08, 0.06, 0.04, float("-inf")]))
    spread = max(np.std([0.10, 0.08, 0.06, 0.04]), SPREAD_FLOOR)
    assert z[0] == pytest.approx(0.20 / spread) and z[1] == pytest.approx(-0.20 / spread)
    assert z[5] == float("-inf") and np.all(np.diff(z) <= 0)
    # few candidates: compared with typical impostors (0.10), not with nothing
    assert leads(np.array([0.12]))[0] == pytest.approx((0.12 - 0.10) / SPREAD_FLOOR)
    assert leads(np.array([0.03, 0.0, -0.01]))[0] < 0  # a weak top of a tiny collection


def test_batched_backgrounds_equal_one_by_one_with_short_references():

    rng = np.random.default_rng(2)
    q = _unit(rng, 40)
    refs = [_unit(rng, 300), _unit(rng, 60), _unit(rng, 80)]
    many = reversed_background_many(q, refs)
    for row, ref in zip(many, refs):
        one = reversed_background(q, ref)
        assert row[0] == pytest.approx(one[0]) and row[1] == pytest.approx(one[1])
        assert 0 <= row[2] <= row[3] <= len(ref) - 1
    # an item shorter than the query can be squeezed into (9 × 4 < 40): aligned inside the query
    excerpt = q[20:29]
    row = reversed_background_many(q, [excerpt, _unit(rng, 9)])
    assert calibrated_score(row[0, 0], row[0, 1]) > 0.3 and row[0, 0] < 1e-6
    assert abs(calibrated_score(row[1, 0], row[1, 1])) < 0.15
    assert tuple(row[0, 2:]) == (0, 8)


def test_subsequence_dtw_finds_a_stretched_excerpt():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 16))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    src = np.arange(100, 180)  # the excerpt, played 1.5× slower: 120 query steps over 80 columns
    q = ref[src[np.floor(np.arange(120) / 1.5).astype(int)]] + rng.normal(scale=0.05, size=(120, 16))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    cost, j0, j1 = subsequence_dtw(1 - q @ ref.T)
    assert abs(j0 - 100) <= 1 and abs(j1 - 179) <= 1 and cost < 0.05
    other = rng.normal(size=(300, 16))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    assert subsequence_dtw(1 - q @ other.T)[0] > 0.5  # an unrelated reference costs much more
    assert subsequence_dtw(1 - q @ ref[:25].T)[0] == float("inf")  # too short for slope ≥ 1/4
    # a piece engraved 3× denser than it is played: 120 query steps over 40 columns
    src = np.arange(200, 240)
    q = ref[src[np.floor(np.arange(120) / 3).astype(int)]]
    cost, j0, j1 = subsequence_dtw(1 - q @ ref.T)
    assert abs(j0 - 200) <= 1 and abs(j1 - 239) <= 1 and cost < 0.01


def test_densest_run():
    assert densest_run(np.array([3, 50, 51, 52, 60, 200]), 15) == (50, 60)


def test_dtw_path_agrees_with_the_cost_and_respects_the_steps():
    rng = np.random.default_rng(3)
    for n, m in ((12, 60), (30, 45), (5, 5), (20, 200)):
        cost = rng.random((n, m))
        c, j0, j1 = subsequence_dtw(cost)
        cp, path = subsequence_dtw_path(cost)
        assert cp == pytest.approx(c)
        assert (path[0], path[-1]) == (j0, j1)
        assert cost[np.arange(n), path].mean() == pytest.approx(c)
        steps = np.diff(path)
        assert steps.min() >= 0 and steps.max() <= 4
        stays = max((len(r) for r in "".join("s" if d == 0 else "|" for d in steps).split("|")), default=0)
        assert stays <= 3
    # a stretched excerpt: the path follows the stretch
    ref = _unit(rng, 80)
    q = ref[20:50:2]
    _, path = subsequence_dtw_path(1 - q @ ref.T)
    np.testing.assert_array_equal(path, np.arange(20, 50, 2))
    assert subsequence_dtw_path(rng.random((30, 5)))[0] == float("inf")


def test_flipped_and_uneven_segments_agree_between_kernels():
    """dtw_segments with reversed rows and segments of different widths: NumPy and compiled
    kernels give the same answers."""
    from audiosheet.retrieval import matching

    rng = np.random.default_rng(5)
    q, refs = _unit(rng, 25), [_unit(rng, w) for w in (30, 45, 120, 7)]
    cost = 1.0 - q @ np.concatenate(refs).T
    widths = np.array([len(r) for r in refs])
    lo = np.repeat(np.concatenate([[0], np.cumsum(widths)[:-1]]), 2)
    hi, flip = lo + np.repeat(widths, 2), np.tile([False, True], len(refs))
    a = np.empty(8), np.empty(8, np.int64), np.empty(8, np.int64)
    matching._numpy_rows(cost, lo, hi, flip, 4, 3, *a)
    matching.compile_dtw()
    b = dtw_segments(cost, lo, hi, flip)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_dtw_shared_by_two_threads_equals_one(monkeypatch):
    """Problems split between two threads (``_halves``) give what one thread gives."""
    from audiosheet.retrieval import matching

    rng = np.random.default_rng(6)
    q, refs = _unit(rng, 40), [_unit(rng, w) for w in (300, 45, 120, 7, 200, 66)]
    cost = 1.0 - q @ np.concatenate(refs).T
    widths = np.array([len(r) for r in refs])
    lo = np.repeat(np.concatenate([[0], np.cumsum(widths)[:-1]]), 2)
    hi, flip = lo + np.repeat(widths, 2), np.tile([False, True], len(refs))
    matching.compile_dtw()
    monkeypatch.setattr(matching, "PARALLEL_CELLS", 10**12)
    one = dtw_segments(cost, lo, hi, flip)
    monkeypatch.setattr(matching, "PARALLEL_CELLS", 0)
    halves = matching._halves(hi - lo, len(q))
    assert sorted(np.concatenate(halves)) == list(range(len(lo)))
    loads = [int((hi - lo)[h].sum()) for h in halves]
    assert abs(loads[0] - loads[1]) <= (hi - lo).max()  # balanced to within one problem
    two = dtw_segments(cost, lo, hi, flip)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)
    assert matching._halves(np.array([50]), 40) is None  # one problem: one thread
