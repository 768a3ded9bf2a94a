"""Passages: (staff systems, performance span) pairs found from passage boundaries alone.

A passage is ``n`` consecutive staff systems k … k+n-1 of a piece (n = 1, 2, 3 by default) paired
with the span of one performance from the first onset of system k to the first onset of system
k+n. A passage that ends with the piece's last system runs to the end of the performance: its last
notes and their release (the renderer's 1.5 s tail), the sound that belongs to no other system.
Sheet side: the systems' columns of the piece's strip, rows 10:90 — the 80-row band that
``SnippetPairs`` cuts (the strip is already at snippet resolution, so nothing is rescaled). Audio
side: spectrogram frames t0:t1, t = round(seconds × fps) (frame i covers time i / fps).

Weak labels only. Where its systems meet in the strip is read from the piece's
``strip_systems.npy``, written with the strip (``corpus.build.write_strip``); for pieces of corpora
built before it those columns are found again from the pages' pixels with the detection that cut
the strip (``staves.analyse_page``; for pieces whose strip fell back to the engraved boxes,
``strip.corpus_strip`` itself). Either way they are checked against the strip's width and system
count. A system's first onset in a performance is the earliest onset of the
noteheads whose ``system`` is that system. Nothing else of a notehead is read: its positions
(x, y, strip_x, strip_y) never are, so a model trained on passages learns without note-level
alignment.

Passages whose boundaries are undefined are skipped and counted in ``PassagePairs.skipped``:
``no_onsets`` where one of its systems or the system after it has no notehead, ``empty_span``
where system starts do not strictly increase inside it (zero-length or reversed spans). A kept
n-system passage is therefore exactly the concatenation of its n single-system passages.

For recurrent models a passage is cut into snippet windows: audio 20 frames every 18 (10 %
overlap), sheet 90 columns every 81, the last window padded with silence / paper so the whole
passage is covered; ``collate`` pads variable numbers of windows into one batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiosheet.files import write_json
from audiosheet.frontend.windows import collate, windows
from audiosheet.geometry import (
    PASSAGE_AUDIO_HOP,
    PASSAGE_AUDIO_WINDOW,
    PASSAGE_SHEET_HOP,
    PASSAGE_SHEET_WINDOW,
    SHEET_H,
    STRIP_HEIGHT,
)

LENGTHS = (1, 2, 3)  # systems per passage
SKIP_REASONS = ("no_onsets", "empty_span")

# one row of PassagePairs.passages: piece index, first system, systems, performance,
# strip columns x0:x1, spectrogram frames t0:t1
PASSAGE = np.dtype([("piece", np.int32), ("system", np.int32), ("systems", np.int32),
                    ("perf", np.int32), ("x0", np.int64), ("x1", np.int64),
                    ("t0", np.int64), ("t1", np.int64)])


def _corpus(corpus):
    from audiosheet.corpus.reader import Corpus

    return corpus if isinstance(corpus, Corpus) else Corpus(corpus)


# ----------------------------------------------------------------------------------------------
# boundaries


def _detected_columns(pages, engraved, scales) -> np.ndarray | None:
    """Strip columns where the systems detected on ``pages`` begin (and the end), as
    ``strip._cut`` crops them; None where detection does not give the engraved system count per
    page or another scale than the stored one."""
    from audiosheet.frontend.images import PageError
    from audiosheet.frontend.staves import analyse_page
    from audiosheet.geometry import TARGET_STAFF_SPACE

    want: dict[int, int] = {}
    for s in engraved:
        want[int(s["page"])] = want.get(int(s["page"]), 0) + 1
    widths = []
    for i, page in enumerate(pages):
        try:
            lay = analyse_page(page, i)
        except PageError:
            return None
        scale = TARGET_STAFF_SPACE / float(lay.staff_space)  # as strip.normalise_page
        if len(lay.systems) != want.get(i, 0) or abs(scale - scales[i]) > 1e-3:
            return None
        widths += [int(np.ceil(s.x1 * scale / 2.0)) + 1 - int(np.floor(s.x0 * scale / 2.0))
                   for s in lay.systems]
    return np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])


def system_columns(corpus, piece: str) -> np.ndarray:
    """(S + 1,) int: system s of a piece is strip columns [c[s], c[s + 1]). Read from the piece's
    stored system offsets (``strip_systems.npy``) where they tile its strip, else found again
    from its pages (``detect_system_columns``)."""
    c = _corpus(corpus)
    stored = c.strip_systems(piece)
    if stored is not None:
        width = np.load(c.piece_dir(piece) / "strip.npy", mmap_mode="r").shape[1]
        if _tiles(stored, width, len(c.info(piece)["systems"])):
            return stored
    # a corpus built before the offsets were stored (or a piece whose offsets do not fit its
    # strip): find the systems again from the pages, as the builder did
    return detect_system_columns(c, piece)


def detect_system_columns(corpus, piece: str) -> np.ndarray:
    """(S + 1,) int: a piece's system columns (as ``system_columns``) found from its pages'
    pixels with the detection that cut its strip; ``CorpusError`` if they do not tile the stored
    strip. For corpora built before system offsets were stored with the strip."""
    from audiosheet.corpus.reader import CorpusError
    from audiosheet.frontend.strip import corpus_strip

    c = _corpus(corpus)
    info = c.info(piece)
    width = np.load(c.piece_dir(piece) / "strip.npy", mmap_mode="r").shape[1]
    engraved = info["systems"]
    pages = [c.page(piece, p) for p in range(len(info["pages"]))]
    cols = None
    if info.get("strip", {}).get("systems") == "detected":
        cols = _detected_columns(pages, engraved, info["strip"]["scales"])
    if cols is None or cols[-1] != width:
        no_noteheads = {k: np.zeros(0) for k in ("page", "system", "x", "y")}
        cols = np.asarray(corpus_strip(pages, engraved, no_noteheads, piece)[0].offsets, np.int64)
    if len(cols) != len(engraved) + 1 or cols[-1] != width:
        raise CorpusError(f"{c.root}: piece '{piece}': {len(cols) - 1} systems found in its pages "
                          f"cover {cols[-1]} strip columns, the strip has {len(engraved)} systems "
                          f"and {width} columns")
    return cols


@dataclass
class Boundaries:
    """Where each system of a piece begins in its strip and in each performance."""

    piece: str
    columns: np.ndarray  # (S + 1,) int: system s is strip columns columns[s]:columns[s + 1]
    onsets: np.ndarray  # (P, S) float: first onset of system s in performance p, s; nan: none
    frames: np.ndarray  # (P,) int: frames of each performance's spectrogram
    fps: float

    @property
    def n_systems(self) -> int:
        return len(self.columns) - 1

    @property
    def starts(self) -> np.ndarray:
        """(P, S + 1) int: frame where system s begins in performance p (-1: no onset); the last
        column is the end of the performance."""
        t = np.clip(np.round(np.nan_to_num(self.onsets) * self.fps), 0, self.frames[:, None])
        t = np.where(np.isnan(self.onsets), -1, t)
        return np.concatenate([t.astype(np.int64), self.frames[:, None].astype(np.int64)], axis=1)


def first_onsets(system: np.ndarray, onsets: np.ndarray, n_systems: int) -> np.ndarray:
    """(P, S): per performance, the earliest onset of each system's noteheads (nan: none).
    ``system``: (N,) notehead system; ``onsets``: (P, N) seconds."""
    system = np.asarray(system, np.int64)
    out = np.full((len(onsets), n_systems), np.inf)
    for p in range(len(onsets)):
        np.minimum.at(out[p], system, np.asarray(onsets[p], np.float64))
    out[np.isinf(out)] = np.nan
    return out


def boundaries(corpus, piece: str, columns: np.ndarray | None = None) -> Boundaries:
    """A piece's system boundaries: strip columns (``system_columns``, unless given) and, per
    performance, each system's first onset. Reads noteheads' ``system`` and the performances'
    onsets, nothing else of the noteheads."""
    from audiosheet.corpus.reader import CorpusError

    c = _corpus(corpus)
    n_systems = len(c.info(piece)["systems"])
    d = c.piece_dir(piece)
    cols = system_columns(c, piece) if columns is None else np.asarray(columns, np.int64)
    with np.load(d / "noteheads.npz") as nh, np.load(d / "performances.npz") as perf:
        system, onsets = nh["system"], perf["onsets"]
    in_range = not len(system) or 0 <= system.min() <= system.max() < n_systems
    if len(cols) != n_systems + 1 or not in_range:
        raise CorpusError(f"{c.root}: piece '{piece}': {len(cols) - 1} system columns, noteheads in "
                          f"systems {system.min(initial=0)}..{system.max(initial=0)}, {n_systems} systems")
    frames = np.array([np.load(d / f"perf_{p}.npy", mmap_mode="r").shape[0]
                       for p in range(len(onsets))], np.int64)
    return Boundaries(piece, cols, first_onsets(system, onsets, len(cols) - 1), frames,
                      float(c.manifest["spectrogram"]["fps"]))


def passages_of(b: Boundaries, lengths=LENGTHS) -> tuple[np.ndarray, dict[str, int]]:
    """Passages of one piece (``PASSAGE`` rows with piece 0) and the skipped ones by reason.
    Order: length, first system, performance."""
    starts = b.starts
    rows, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    for n in lengths:
        for k in range(b.n_systems - n + 1):
            for p in range(len(starts)):
                t = starts[p, k:k + n + 1]
                if (t < 0).any():
                    skipped["no_onsets"] += 1
                elif (np.diff(t) <= 0).any():
                    skipped["empty_span"] += 1
                else:
                    rows.append((0, k, n, p, b.columns[k], b.columns[k + n], t[0], t[-1]))
    return np.array(rows, PASSAGE), skipped


def _tiles(columns, width: int, n_systems: int) -> bool:
    """Whether ``columns`` split a strip of ``width`` into ``n_systems`` non-empty systems."""
    c = np.asarray(columns if columns is not None else [], np.int64)
    return len(c) == n_systems + 1 and c[0] == 0 and c[-1] == width and bool((np.diff(c) > 0).all())


def _load_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text())


def _save_cache(path: Path, cache: dict) -> None:
    write_json(path, cache, indent=None, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# windows


# ----------------------------------------------------------------------------------------------
# the data set


class PassagePairs:
    """All passages of one split of a corpus, in every performance.

    ``passages``: ``PASSAGE`` table (piece index into ``piece_ids``, first system, systems,
    performance, strip columns x0:x1, frames t0:t1); ``sheet(i)`` float32 (80, x1 - x0) with
    ink = 1; ``audio(i)`` float32 (92, t1 - t0); ``ds[i]`` → (sheet windows (n, 80, 90), audio
    windows (m, 92, 20)); ``batch(indices)`` pads them with ``collate``. ``skipped``: passages
    left out, by reason; ``failed``: pieces whose systems could not be found again, with why.
    ``cache``: a JSON file keeping each piece's system columns between runs (needed for corpora
    built before system offsets were stored: finding them analyses every page, about 0.1 s a page).
    """

    def __init__(self, corpus, split: str = "train", lengths=LENGTHS, pieces: list[str] | None = None,
                 mmap: bool = True, cache: str | Path | None = None,
                 audio_window: int = PASSAGE_AUDIO_WINDOW, audio_hop: int = PASSAGE_AUDIO_HOP,
                 sheet_window: int = PASSAGE_SHEET_WINDOW, sheet_hop: int = PASSAGE_SHEET_HOP):
        from audiosheet.corpus.reader import CorpusError

        self.corpus = _corpus(corpus)
        self.lengths = tuple(int(n) for n in lengths)
        self.audio_window, self.audio_hop = int(audio_window), int(audio_hop)
        self.sheet_window, self.sheet_hop = int(sheet_window), int(sheet_hop)
        ids = pieces if pieces is not None else self.corpus.split(split)
        cache_path = Path(cache) if cache is not None else None
        known = _load_cache(cache_path)
        mode = "r" if mmap else None
        self.piece_ids: list[str] = []
        self.strips: list[np.ndarray] = []  # (STRIP_HEIGHT, W) uint8 per piece
        self.specs: list[list[np.ndarray]] = []  # per piece, per performance (T, 92) float16
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.failed: dict[str, str] = {}
        tables, changed = [], False
        for pid in ids:
            d = self.corpus.piece_dir(pid)
            strip = np.load(d / "strip.npy", mmap_mode=mode)
            cols = known.get(pid)
            try:
                if not _tiles(cols, strip.shape[1], len(self.corpus.info(pid)["systems"])):
                    cols = system_columns(self.corpus, pid).tolist()
                    known[pid], changed = cols, True
                b = boundaries(self.corpus, pid, cols)
            except CorpusError as exc:
                self.failed[pid] = str(exc)
                continue
            rows, skipped = passages_of(b, self.lengths)
            for k, v in skipped.items():
                self.skipped[k] += v
            rows["piece"] = len(self.piece_ids)
            tables.append(rows)
            self.piece_ids.append(pid)
            self.strips.append(strip)
            self.specs.append([np.load(d / f"perf_{p}.npy", mmap_mode=mode)
                               for p in range(len(b.frames))])
        if changed and cache_path is not None:
            _save_cache(cache_path, known)
        self.passages = np.concatenate(tables) if tables else np.zeros(0, PASSAGE)

    def __len__(self) -> int:
        return len(self.passages)

    def counts(self) -> dict[int, int]:
        """Passages by number of systems."""
        return {n: int((self.passages["systems"] == n).sum()) for n in self.lengths}

    def sheet(self, i: int, dy: int = 0) -> np.ndarray:
        """float32 (80, x1 - x0): the passage's systems, strip rows 10:90 (as ``SnippetPairs``;
        shifted down by ``dy``, at most 10 rows either way), ink = 1."""
        r = self.passages[i]
        y0 = (STRIP_HEIGHT - SHEET_H) // 2 + int(np.clip(dy, -((STRIP_HEIGHT - SHEET_H) // 2),
                                                           (STRIP_HEIGHT - SHEET_H) // 2))
        band = self.strips[r["piece"]][y0:y0 + SHEET_H, r["x0"]:r["x1"]]
        return 1.0 - band.astype(np.float32) / 255.0

    def audio(self, i: int, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        """float32 (92, t1 - t0): the passage's spectrogram frames; ``shift`` moves its start and
        end by that many frames (kept inside the performance and at least one window long)."""
        r = self.passages[i]
        spec = self.specs[r["piece"]][r["perf"]]
        t0 = int(np.clip(r["t0"] + shift[0], 0, max(len(spec) - self.audio_window, 0)))
        t1 = int(np.clip(r["t1"] + shift[1], min(t0 + self.audio_window, len(spec)), len(spec)))
        return np.asarray(spec[t0:t1], np.float32).T

    def windows_sheet(self, i: int) -> np.ndarray:
        """float32 (n, 80, 90): sheet windows every 81 columns, the last padded with paper (0)."""
        return windows(self.sheet(i), self.sheet_window, self.sheet_hop, 0.0)

    def windows_audio(self, i: int) -> np.ndarray:
        """float32 (n, 92, 20): audio windows every 18 frames, the last padded with silence (0)."""
        return windows(self.audio(i), self.audio_window, self.audio_hop, 0.0)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.windows_sheet(i), self.windows_audio(i)

    def batch(self, indices, torch: bool = False):
        """Passages ``indices`` as (sheets (B, n, 80, 90), sheet lengths (B,), audios (B, m, 92,
        20), audio lengths (B,)), padded with paper / silence."""
        items = [self[int(i)] for i in indices]
        sheets, ns = collate([s for s, _ in items], torch=torch)
        audios, ms = collate([a for _, a in items], torch=torch)
        return sheets, ns, audios, ms


def passage_pool(data: PassagePairs, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices of ``data`` forming a retrieval pool: distinct sheet passages (piece,
    first system, systems), each in one of its performances, spread evenly over the passage
    lengths and then over pieces (seeded); all of them if there are fewer."""
    rng = np.random.default_rng(seed)
    p = data.passages
    if not len(p):
        return np.zeros(0, np.int64)
    keys = np.stack([p["piece"], p["system"], p["systems"]], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    # one performance per sheet passage, drawn at random among those that have it
    choice = np.empty(len(first), np.int64)
    order = rng.permutation(len(p))
    choice[inverse[order]] = order  # the last write per key wins: a random row of that key
    lengths = p["systems"][choice]
    groups = [rng.permutation(np.flatnonzero(lengths == n_)) for n_ in np.unique(lengths)]
    taken, k = [], 0
    while len(taken) < min(n, len(choice)):  # round robin over lengths
        g = groups[k % len(groups)]
        j = k // len(groups)
        if j < len(g):
            taken.append(g[j])
        k += 1
        if k > len(groups) * (len(choice) + 1):
            break
    return np.sort(choice[np.asarray(taken, np.int64)])
