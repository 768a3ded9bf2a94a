"""Identification: which indexed score (or recording) a recording (or score) is, and where.

A query is cut into snippets with the same front ends as indexed files and embedded. Then

* ``vote`` (the reference method, Dorfer et al.): 100 evenly spaced query snippets, 25 nearest
  neighbours each among the other modality's snippets, one vote per neighbour for its item;
  items ranked by votes, the passage is the densest run of votes in the item;
* ``passage``: with a passage model added to the collection, the query is cut into passages
  (a score's systems and system pairs; a recording's stretches of 4.5–25 s at every 0.9 s).
  A recording query: each stretch votes for the scores of its 5 nearest indexed passages; the
  20 scores with most votes per √(their passages) (long scores do not win by size) are ranked by
  their best *system chain* (``system_chain``): the query cut into consecutive stretches matched
  to consecutive systems, each adding its cosine minus 0.70. A score query:
  each system finds its 10 nearest stretches, the 10 recordings with most of those are
  shortlisted and ranked by the mean, over the query's passages, of their best cosine similarity
  among the recording's stretches. The location is that of the best-matching pair;
* ``dtw``: the vote shortlist re-ranked by subsequence dynamic time warping between the query's
  whole embedding sequence and each candidate's, since a query is usually an excerpt of a piece;
  the passage is where the warping path starts and ends. In an item much longer than the query,
  only the stretch around its densest votes is warped (at most 3 × ``MAX_STEP`` × query length).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audiosheet.files import file_kind
from audiosheet.frontend.coords import rotate_points, strip_to_page_x
from audiosheet.geometry import DENSE_AUDIO_HOP
from audiosheet.models.embed_file import embed_file, ingest_file
from audiosheet.retrieval.matching import (
    MAX_STEP,
    calibrated_score,
    confidence,
    densest_run,
    leads,
    reversed_background_many,
    subsequence_dtw,
    subsequence_dtw_path,
    vote_rates,
)
from audiosheet.retrieval.store import CollectionError

if TYPE_CHECKING:  # annotations only: a Collection calls identify, never the other way round
    from audiosheet.retrieval.collection import Collection

METHODS = ("vote", "dtw", "passage")
VOTE_SNIPPETS, VOTE_NEIGHBOURS = 100, 25
SHORTLIST = 20  # candidates re-ranked by dtw (10 before issue 14; chosen on the real development set)
SHORTLISTS = ("votes", "rate")  # dtw shortlist: raw votes (before issue 14) or votes per √(snippets)
RANKINGS = ("cost", "margin")  # dtw ranking: raw mean cosine (before) or margin over the reversed query
SHORTLIST_BY, RANK_BY = "rate", "margin"  # chosen on the development sets (docs/identify.md)
CONFIDENCE = (-3.6, 1.95)  # confidence(): sigmoid(a + b·lead z); fitted on the development sets
# (benchmarks/calibrate.py --fit; see docs/identify.md)
CONFIDENT = 0.5  # a top result below this confidence is reported as "no confident match"
SEGMENT_S = 30.0  # long recording queries are identified in segments of this length (seconds)
SHEET_SECONDS = 0.20  # music seconds per indexed sheet snippet, for a score's *shortest* likely
# length: 10th percentile over 183 generated pieces (recording length / snippets; median 0.35 s,
# 90th percentile 0.58 s), so a recording longer than any indexed piece is rarely left unsegmented


class IdentifyError(ValueError):
    """A query that cannot be answered; one line naming the file and the reason."""


@dataclass
class Match:
    piece: str  # name of the matched item (the file name without suffix unless named)
    score: float  # vote: share of the votes; dtw: mean cosine similarity along the path; passage:
    # mean cosine along the system chain (recording query) or mean best cosine (score query)
    votes: int
    item: int  # item id in the collection
    kind: str  # "sheet" or "audio"
    path: str
    location: dict  # sheet: page/system/x-range/box (+ spans); audio: start_s/end_s
    margin: float | None = None  # dtw: cosine margin over the time-reversed query (matching.py)
    confidence: float | None = None  # dtw: probability that this is the query's piece

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("score", "margin", "confidence"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 4) if np.isfinite(d[k]) else None
        return d


@dataclass
class Identification:
    """What ``identify`` answers. ``confident``: the top result's confidence reaches the
    threshold (dtw only; ``None`` for methods without a calibrated confidence). ``segments``:
    for a long recording query, one entry per segment (time span, confident, results); the
    top-level ``results`` then hold every piece found, ranked by the segments it answers
    confidently, then by its best confidence."""

    query: str
    query_kind: str
    method: str
    results: list[Match]
    query_info: dict = field(default_factory=dict)
    latency_s: float = 0.0
    confident: bool | None = None
    segments: list[dict] = field(default_factory=list)
    # recording query, asked for with ``align=True``: where the query is in its best score at each
    # query snippet (``alignment``): [{"t": s, "page", "system", "x", "y0", "y1", "page_size"}]
    alignment: list[dict] | None = None

    @property
    def best(self) -> Match | None:
        """The top result if it is a confident match (or the method has no confidence)."""
        return self.results[0] if self.results and self.confident is not False else None

    def to_dict(self) -> dict:
        d = {"query": self.query, "query_kind": self.query_kind, "method": self.method,
             "confident": self.confident, "match": self.best.piece if self.best else None,
             "results": [m.to_dict() for m in self.results], "query_info": self.query_info,
             "latency_s": round(self.latency_s, 4)}
        if self.segments:
            d["segments"] = [{**s, "results": [m.to_dict() for m in s["results"]]} for s in self.segments]
        if self.alignment is not None:
            d["alignment"] = self.alignment
        return d


# ----------------------------------------------------------------------------------------------
# locations


def sheet_location(d: dict, j0: int, j1: int) -> dict:
    """Where snippets j0..j1 of a sheet item are: the systems they cross, with the x-range and
    the box on each page (px of the page as read: upright, rescaled by its staff space; its size
    is ``page_size``), from the item's stored strip geometry (``frontend.coords``: no page-reading
    module import, so queries start faster)."""
    boxes, offsets, lefts = d["boxes"], d["offsets"], d["lefts"]
    scales, angles, sizes = d["scales"], d["angles"], d["sizes"]
    c0, c1 = float(d["column"][j0]), float(d["column"][j1])
    if c1 < c0:
        c0, c1 = c1, c0
    s0, s1 = int(d["system"][j0]), int(d["system"][j1])
    spans = []
    for s in range(min(s0, s1), max(s0, s1) + 1):
        lo, hi = max(c0, offsets[s]), min(c1, offsets[s + 1] - 1)
        if s0 != s1:  # a system the passage passes through: all of it that lies in the passage
            lo = offsets[s] if s > s0 else lo
            hi = offsets[s + 1] - 1 if s < s1 else hi
        page = int(boxes[s, 0])
        x0, x1 = strip_to_page_x(np.array([lo, hi], float), offsets[s], lefts[s], scales[page])
        y0, y1 = boxes[s, 3], boxes[s, 4]
        w, h = sizes[page]
        cx, cy = rotate_points(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]),
                               float(angles[page]), (w / 2.0, h / 2.0))
        on_page = np.flatnonzero(boxes[:, 0] == page)
        spans.append({"page": page + 1, "system": int(np.searchsorted(on_page, s)) + 1,
                      "x0": round(float(x0), 1), "x1": round(float(x1), 1),
                      "box": [round(float(cx.min()), 1), round(float(cy.min()), 1),
                              round(float(cx.max()), 1), round(float(cy.max()), 1)],
                      "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in zip(cx, cy)],
                      "page_size": [int(w), int(h)]})
    first = spans[0]
    return {"page": first["page"], "system": first["system"], "x0": first["x0"], "x1": first["x1"],
            "box": first["box"], "spans": spans}


def audio_location(d: dict, j0: int, j1: int) -> dict:
    fps = float(d["fps"])
    t0, t1 = sorted((float(d["frame"][j0]) / fps, float(d["frame"][j1]) / fps))
    return {"start_s": round(t0, 2), "end_s": round(t1, 2)}


# ----------------------------------------------------------------------------------------------
# queries


def query_kind(path: Path) -> str:
    """"sheet" or "audio" by the file's suffix; ``IdentifyError`` for anything else."""
    kind = file_kind(path)
    if kind is None:
        raise IdentifyError(f"{path}: not a sheet-music or audio file (suffix '{path.suffix or '(none)'}')")
    return kind


def embed_query(coll: Collection, query: str | Path, start: float | None = None,
                end: float | None = None, long_over: float = float("inf")
                ) -> tuple[str, np.ndarray, dict]:
    """(kind, embedding sequence (n, d), info) of a query file. For a recording, info holds
    ``start_s``, ``end_s``, ``seconds``, ``snippet_s`` (seconds between embeddings) and any
    front-end ``warnings`` (clipping, very low level). A recording longer than ``long_over``
    seconds (to be identified in segments) gets a snippet every ``LONG_QUERY_AUDIO_HOP`` frames instead of
    every ``INDEX_AUDIO_HOP``."""
    path = Path(query)
    kind = query_kind(path)
    fe = embed_file(path, coll.query_embedder_for, kind, coll.front_end_settings,
                    coll.settings["sheet_hop" if kind == "sheet" else "audio_hop"], start, end, long_over)
    ing = fe.ingest
    if kind == "audio":
        info = {"start_s": round(ing.start, 2), "end_s": round(ing.start + ing.seconds, 2),
                "seconds": round(ing.seconds, 2), "snippet_s": fe.snippet_s}
    else:
        info = {"pages": ing.n_pages, "systems": len(ing.strip.boxes)}
    if fe.warnings:
        info["warnings"] = fe.warnings
    return kind, fe.emb, info


def item_seconds(items, sizes: np.ndarray) -> np.ndarray:
    """Estimated music length of indexed items, seconds: a recording's own length; a score's
    snippet count × ``SHEET_SECONDS`` (a short estimate: played fast)."""
    return np.array([float(it.info.get("seconds", 0.0)) if it.kind == "audio" else n * SHEET_SECONDS
                     for it, n in zip(items, sizes)], np.float64)


def identify(coll: Collection, query: str | Path, method: str = "dtw", top: int = 5,
             start: float | None = None, end: float | None = None,
             shortlist: int = SHORTLIST, threshold: float = CONFIDENT,
             segment_over: float | None = None, segment_s: float = SEGMENT_S,
             shortlist_by: str = SHORTLIST_BY, rank_by: str = RANK_BY, align: bool = False) -> Identification:
    """Rank the collection's items of the other modality for a query file.

    Audio query → scores, each with the matched passage's page, system and x-range; score query
    (image or PDF) → recordings with the matched time span. ``start``/``end``: an excerpt of an
    audio query, seconds. ``vote`` (the reference) returns up to ``top`` items that got votes.
    ``dtw`` shortlists ``shortlist`` items by votes per √(item snippets) (``shortlist_by``
    "votes": raw votes, as before issue 14), warps the query against each and ranks them by the
    margin over the time-reversed query (``rank_by`` "cost": the raw mean cosine); every result
    gets a ``confidence`` and the answer is ``confident`` when the top one reaches ``threshold``.

    A recording query longer than ``segment_over`` seconds (default: the longest indexed item's
    estimated length, at least ``segment_s``) is identified in consecutive ``segment_s`` segments
    (``Identification.segments``), from one pass of the front end and the model; the top-level
    results then rank every piece found by the number of segments it answers confidently, then
    by its best confidence (``query_info["segments_won"]``).

    ``align``: for a recording query (vote or dtw), also follow it through its best score
    (``Identification.alignment``, from ``alignment_path``; per segment for a long query).

    Raises ``IdentifyError`` (no such file, unknown kind, nothing to match against, bad option),
    ``AudioError``/``PageError`` for an unreadable query.
    """
    if method not in METHODS:
        raise IdentifyError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if shortlist_by not in SHORTLISTS or rank_by not in RANKINGS:
        raise IdentifyError(f"shortlist_by must be one of {SHORTLISTS}, rank_by one of {RANKINGS}")
    t0 = time.perf_counter()
    path = Path(query)
    if not path.exists():
        raise IdentifyError(f"{path}: no such file")
    target = {"audio": "sheet", "sheet": "audio"}[query_kind(path)]
    if method == "passage":
        return identify_passages(coll, path, target, top, start, end, shortlist, t0)
    ix, items, owner, starts = coll.search_index(target)
    if ix.ntotal == 0:
        raise IdentifyError(f"{coll.root}: the collection has no {'scores' if target == 'sheet' else 'recordings'}"
                            f" to match {path.name} against (index add some first)")
    longest = float(item_seconds(items, np.diff(starts)).max())
    over = max(longest, segment_s) if segment_over is None else float(segment_over)
    kind, q, info = embed_query(coll, path, start, end, long_over=over)
    q = np.ascontiguousarray(q, np.float32)
    rank = dict(coll=coll, ix=ix, items=items, owner=owner, starts=starts, target=target,
                method=method, top=top, shortlist=shortlist, threshold=threshold,
                shortlist_by=shortlist_by, rank_by=rank_by)
    segments, spans = [], []  # spans: the query rows (a, b) of each segment
    if kind == "audio" and len(q):
        step = info["snippet_s"]
        if info["seconds"] > over:
            per = max(int(round(segment_s / step)), 1)
            for a in range(0, len(q), per):
                if a and len(q) - a < per // 2:  # a short tail belongs to the previous segment
                    break
                b = len(q) if len(q) - (a + per) < per // 2 else a + per
                res, conf, extra = _rank(q[a:b], **rank)
                segments.append({"start_s": round(info["start_s"] + a * step, 2),
                                 "end_s": round(info["start_s"] + min(b * step, info["seconds"]), 2),
                                 "confident": conf, "match": res[0].piece if res and conf is not False else None,
                                 "results": res})
                spans.append((a, b))
                if b == len(q):
                    break
            info["segments"] = len(segments)
    if segments:  # every piece found, ranked by the segments it answers (confidently), then its best
        def strength(m: Match) -> float:  # vote has no confidence: its vote share
            return m.confidence if m.confidence is not None else m.score

        best: dict[int, Match] = {}
        wins: dict[int, int] = {}
        for s in segments:
            if s["results"] and s["confident"] is not False:
                wins[s["results"][0].item] = wins.get(s["results"][0].item, 0) + 1
            for m in s["results"]:
                if m.item not in best or strength(m) > strength(best[m.item]):
                    best[m.item] = m
        results = sorted(best.values(), key=lambda m: (-wins.get(m.item, 0), -strength(m)))
        results = results[:top]
        confident = any(s["confident"] for s in segments) if method == "dtw" else None
        info["segments_won"] = {m.piece: wins[m.item] for m in results if m.item in wins}
    else:
        results, confident, extra = _rank(q, **rank)
        info.update(extra)
    alignment = None
    if align and kind == "audio" and len(q):
        step, t_start = info["snippet_s"], info["start_s"]
        parts = [(a, b, s["results"][0]) for (a, b), s in zip(spans, segments) if s["results"]] if segments \
            else [(0, len(q), results[0])] if results else []
        alignment = [p for a, b, m in parts
                     for p in alignment_path(q[a:b], coll.data(coll.item(m.item)), t_start + a * step, step)]
    return Identification(str(query), kind, method, results, info, time.perf_counter() - t0,
                          confident, segments, alignment)


def alignment_path(q: np.ndarray, d: dict, t0: float, step: float) -> list[dict]:
    """Where each snippet of a recording query is in a score: subsequence DTW of the query
    embeddings ``q`` (n, d) through the score item's stored embeddings and locations ``d``
    (``Store.data``), its path mapped to the page (``snippet_points``). Query snippet i is at
    ``t0 + i · step`` seconds. Returns one point per query snippet: {"t", "page", "system", "x"
    (page px of the page as read), "y0", "y1" (the system's extent), "page_size"}; [] when the
    score is too short for any path."""
    _, path = subsequence_dtw_path(1.0 - q @ d["emb"].T)
    return [{"t": round(t0 + i * step, 3), **p} for i, p in enumerate(snippet_points(d, path))]


def snippet_points(d: dict, js: np.ndarray) -> list[dict]:
    """``sheet_location(d, j, j)``'s first span, for many snippets ``js`` at once, as
    {"page", "system", "x", "y0", "y1", "page_size"}: the same numbers (``frontend.coords`` on
    arrays), without a call per snippet."""
    js = np.asarray(js, np.int64)
    if not len(js):
        return []
    boxes, offsets, lefts = d["boxes"], d["offsets"], d["lefts"]
    s, c = d["system"][js].astype(np.int64), d["column"][js].astype(float)
    page = boxes[s, 0].astype(np.int64)
    lo, hi = np.maximum(c, offsets[s]), np.minimum(c, offsets[s + 1] - 1)
    x0 = strip_to_page_x(lo, offsets[s], lefts[s], d["scales"][page])
    x1 = strip_to_page_x(hi, offsets[s], lefts[s], d["scales"][page])
    w, h = d["sizes"][page, 0], d["sizes"][page, 1]
    ys = [rotate_points(x, y, d["angles"][page].astype(float), (w / 2.0, h / 2.0))[1]  # the four corners
          for x, y in ((x0, boxes[s, 3]), (x1, boxes[s, 3]), (x1, boxes[s, 4]), (x0, boxes[s, 4]))]
    y0, y1 = np.minimum.reduce(ys), np.maximum.reduce(ys)
    pages = boxes[:, 0]
    rank = np.array([int(np.sum(pages[:k] == pages[k])) for k in range(len(boxes))])  # system on its page
    return [{"page": int(pg) + 1, "system": int(rank[k]) + 1, "x": round(float(a), 1), "y0": round(float(b), 1),
             "y1": round(float(e), 1), "page_size": [int(ww), int(hh)]}
            for pg, k, a, b, e, ww, hh in zip(page, s, x0, y0, y1, w, h)]


def _rank(q: np.ndarray, coll, ix, items, owner, starts, target: str, method: str, top: int,
          shortlist: int, threshold: float, shortlist_by: str, rank_by: str
          ) -> tuple[list[Match], bool | None, dict]:
    """(results, confident, extra info) of one query embedding sequence ``q`` (n, d)."""
    pick = np.unique(np.linspace(0, len(q) - 1, min(VOTE_SNIPPETS, len(q))).round().astype(int))
    k = min(VOTE_NEIGHBOURS, ix.ntotal)
    _, rows = ix.search(q[pick], k)
    rows = rows[rows >= 0]
    votes = np.bincount(owner[rows], minlength=len(items))
    locate = sheet_location if target == "sheet" else audio_location
    results = []
    if method == "vote":  # the reference method, unchanged
        order = [int(i) for i in np.argsort(-votes, kind="stable") if votes[i] > 0]
        for i in order[:top]:
            d = coll.data(items[i])
            local = rows[owner[rows] == i] - starts[i]
            j0, j1 = densest_run(local, max(len(q), 1))
            results.append(Match(items[i].name, float(votes[i] / max(len(rows), 1)), int(votes[i]),
                                 items[i].id, target, items[i].path, locate(d, j0, j1)))
        return results, None, {}
    by = votes.astype(np.float64) if shortlist_by == "votes" else vote_rates(votes, np.diff(starts))
    order = [int(i) for i in np.argsort(-by, kind="stable") if votes[i] > 0][:shortlist]
    scored, windows = [], []
    span = MAX_STEP * len(q)  # the most item snippets a path through the query can cover
    for i in order:
        d = coll.data(items[i])
        lo, hi = 0, len(d["emb"])
        if hi > 3 * span:  # a long item: only around where its votes are densest
            a, b = densest_run(rows[owner[rows] == i] - starts[i], span)
            lo, hi = max(a - span, 0), min(b + span + 1, hi)
        windows.append((i, lo, d["emb"][lo:hi], d))
    aligned = reversed_background_many(q, [w[2] for w in windows])  # one batched DTW for all
    for (i, lo, _, d), (cost, back, j0, j1) in zip(windows, aligned):
        margin = calibrated_score(cost, back)
        key = margin if rank_by == "margin" else (1.0 - cost if np.isfinite(cost) else float("-inf"))
        scored.append((key, margin, cost, i, int(j0) + lo, int(j1) + lo, d))
    scored.sort(key=lambda x: -x[0])
    by_margin = np.argsort([-x[1] for x in scored], kind="stable")  # the ranking itself, by margin
    z = np.empty(len(scored))
    z[by_margin] = leads(np.array([scored[k][1] for k in by_margin]))  # each candidate's own lead
    for r, (key, margin, cost, i, j0, j1, d) in enumerate(scored[:top]):
        conf = confidence(z[r], CONFIDENCE)
        results.append(Match(items[i].name, float(1.0 - cost) if np.isfinite(cost) else 0.0,
                             int(votes[i]), items[i].id, target, items[i].path, locate(d, j0, j1),
                             margin=float(margin), confidence=conf))
    confident = bool(results and results[0].confidence >= threshold)
    return results, confident, {"shortlist": [items[i].name for i in order]}


PASSAGE_NEIGHBOURS = 10  # score query: neighbours per query system for the shortlist
PASSAGE_VOTES = 5  # recording query: neighbours (votes) per query stretch
PASSAGE_SHORTLIST = 20  # recording query: scores whose system chains are compared
CHAIN_TAU = 0.70  # a stretch counts for a chain only above this cosine: the 99th percentile of
# non-matching system-passage pairs on the validation split (matching pairs: median 0.886)
CHAIN_SLACK = 6  # grid windows (5.4 s) a chain may leave unmatched at either end of the query
QUERY_LENGTHS = tuple(range(4, 29))  # recording query: stretch lengths (windows) for the chains


def system_chain(sim: np.ndarray, first: np.ndarray, length: np.ndarray, n_grid: int,
                 tau: float = CHAIN_TAU, slack: int = CHAIN_SLACK) -> tuple[float, float, int, int]:
    """Best segmentation of a recording query into consecutive stretches matched to consecutive
    systems of one score.

    ``sim`` (n stretches, S systems): cosine of query stretch b — grid windows ``first[b]`` to
    ``first[b] + length[b]`` — with system s. A chain is a run of stretches, each starting where
    the previous ends, matched to systems s, s + 1, …; it starts within ``slack`` windows of the
    query's start and ends within ``slack`` of its end (the excerpt cuts systems there). Each
    stretch adds (cosine − ``tau``). Returns (chain value, mean cosine along it, first system, last
    system); value −inf if no chain exists."""
    n, S = sim.shape
    best = np.full((n_grid + 1, S), -np.inf)
    total = np.zeros((n_grid + 1, S))
    count = np.zeros((n_grid + 1, S), np.int64)
    origin = np.zeros((n_grid + 1, S), np.int64)
    for b in np.argsort(first + length, kind="stable"):  # by where the stretch ends
        g, end = int(first[b]), int(first[b] + length[b])
        gain = sim[b] - tau
        fresh = gain if g <= slack else np.full(S, -np.inf)
        prev = np.full(S, -np.inf)
        prev[1:] = best[g, :-1] + gain[1:]
        take_prev = prev > fresh
        cand = np.where(take_prev, prev, fresh)
        better = cand > best[end]
        if not better.any():
            continue
        shifted = lambda a, new: np.where(take_prev, np.concatenate([[0], a[g, :-1]]), new)  # noqa: E731
        best[end] = np.where(better, cand, best[end])
        total[end] = np.where(better, shifted(total, 0) + sim[b], total[end])
        count[end] = np.where(better, shifted(count, 0) + 1, count[end])
        origin[end] = np.where(better, shifted(origin, np.arange(S)), origin[end])
    tail = best[max(n_grid - slack, 0):]
    if not np.isfinite(tail).any():
        return float("-inf"), 0.0, 0, 0
    e, s_last = np.unravel_index(int(np.argmax(tail)), tail.shape)
    e += max(n_grid - slack, 0)
    return (float(best[e, s_last]), float(total[e, s_last] / count[e, s_last]), int(origin[e, s_last]),
            int(s_last))


def identify_passages(coll: Collection, path: Path, target: str, top: int, start, end,
                      shortlist: int, t0: float) -> Identification:
    """The ``passage`` method (see the module docstring)."""
    try:
        pe = coll.passage_embedder
        ix, items, owner, starts = coll.passage_search_index(target)
    except CollectionError as exc:
        raise IdentifyError(str(exc)) from None
    if ix.ntotal == 0:
        raise IdentifyError(f"{coll.root}: the collection has no {'scores' if target == 'sheet' else 'recordings'}"
                            f" to match {path.name} against (index add some first)")
    if target == "sheet":
        from audiosheet.models.passage_embed import AUDIO_LENGTHS

        ing = ingest_file(path, "audio", coll.front_end_settings, DENSE_AUDIO_HOP, start=start, end=end)
        q, q0, q1 = pe.audio(ing.spec, lengths=QUERY_LENGTHS)
        hop = pe.config.audio_hop
        g0, glen = q0 // hop, (q1 - q0 - pe.config.audio_window) // hop + 1
        n_grid = int((g0 + glen).max()) if len(q) else 0
        info = {"start_s": round(ing.start, 2), "end_s": round(ing.start + ing.seconds, 2),
                "seconds": round(ing.seconds, 2), "passages": len(q)}
        voters = np.isin(glen, AUDIO_LENGTHS) | (glen == glen.max())  # the lengths the index holds
    else:
        strip = ingest_file(path, "sheet", coll.front_end_settings).strip
        q, _, _ = pe.sheet(strip.image, strip.offsets)
        info = {"pages": len(strip.sizes), "systems": len(strip.boxes), "passages": len(q)}
        voters = np.ones(len(q), bool)
    q = np.ascontiguousarray(q, np.float32)
    k = PASSAGE_VOTES if target == "sheet" else PASSAGE_NEIGHBOURS
    _, rows = ix.search(q[voters], min(k, ix.ntotal))
    rows = rows[rows >= 0]
    votes = np.bincount(owner[rows], minlength=len(items))
    scored = []
    if target == "sheet":  # shortlist by votes per √(item passages), rank by the best system chain
        rate = votes / np.sqrt(np.maximum(np.diff(starts), 1))
        order = [int(i) for i in np.argsort(-rate, kind="stable") if votes[i] > 0][:PASSAGE_SHORTLIST]
        for i in order:
            d = coll.passage_data(items[i])
            one = np.flatnonzero(d["systems"] == 1)
            value, mean, s0, s1 = system_chain(q @ d["emb"][one].T, g0, glen, n_grid)
            if not np.isfinite(value):  # no chain: the best single system, ranked after every chain
                j = int(np.argmax((q @ d["emb"][one].T).max(axis=0)))
                value, mean, s0, s1 = -1e6 + rate[i], float((q @ d["emb"][one[j]]).max()), j, j
            scored.append((value, mean, i, int(d["system"][one[s0]]), int(d["system"][one[s1]]), d))
        scored.sort(key=lambda x: -x[0])
    else:  # a score query: each of its systems finds its best stretch of the recording
        order = [int(i) for i in np.argsort(-votes, kind="stable") if votes[i] > 0][:shortlist]
        for i in order:
            d = coll.passage_data(items[i])
            sim = q @ d["emb"].T  # (query passages, item passages)
            j = int(np.unravel_index(int(np.argmax(sim)), sim.shape)[1])
            scored.append((float(sim.max(axis=1).mean()), 0.0, i, j, j, d))
        scored.sort(key=lambda x: -x[0])
    results = []
    for value, mean, i, a, b, d in scored[:top]:
        if target == "sheet":
            sd = coll.data(items[i])
            js = np.flatnonzero((sd["system"] >= a) & (sd["system"] <= b))
            loc = sheet_location(sd, int(js[0]), int(js[-1])) if len(js) else {}
            score = mean
        else:
            fps = float(d["fps"])
            loc = {"start_s": round(float(d["start"][a]) / fps, 2), "end_s": round(float(d["end"][a]) / fps, 2)}
            score = value
        results.append(Match(items[i].name, float(score), int(votes[i]), items[i].id, target, items[i].path, loc))
    return Identification(str(path), "audio" if target == "sheet" else "sheet", "passage", results, info,
                          time.perf_counter() - t0)


__all__ = ["Identification", "IdentifyError", "Match", "identify", "subsequence_dtw", "densest_run",
           "CollectionError"]
