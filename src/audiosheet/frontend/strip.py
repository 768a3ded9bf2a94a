"""Strips: systems cut from normalised pages and unrolled into one long half-resolution strip (the geometry a model sees), sheet snippets along it and their page locations; ingest_sheet reads a file into all of these."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from audiosheet.frontend.coords import strip_to_page_x
from audiosheet.frontend.images import PageError
from audiosheet.frontend.ink import rotate_page
from audiosheet.frontend.pages import iter_pages, recall_layout, upright_page
from audiosheet.frontend.staves import PageLayout, System
from audiosheet.frontend.windows import half_resolution
from audiosheet.geometry import INDEX_SHEET_HOP, SHEET_H, SHEET_W, STRIP_HEIGHT, TARGET_STAFF_SPACE


@dataclass
class Strip:
    """Systems unrolled into one half-resolution strip (``training.pairs`` geometry) and the way back.

    ``boxes[i]``: (page, x0, x1, y0, y1) of system i in deskewed page px; ``offsets[i]``: its
    first strip column; ``lefts[i]``/``tops[i]``: that column/row in its half-resolution
    normalised page; ``scales[p]``, ``angles[p]``, ``sizes[p]``: per page, its rescaling to the
    target staff space, its skew and its (width, height) as loaded.
    """

    image: np.ndarray  # uint8 (STRIP_HEIGHT, W), paper = 255
    boxes: np.ndarray  # (S, 5) float64
    offsets: np.ndarray  # (S + 1,) int: system i is columns offsets[i]:offsets[i + 1]
    lefts: np.ndarray  # (S,) int
    tops: np.ndarray  # (S,) int
    scales: np.ndarray  # (P,)
    angles: np.ndarray  # (P,)
    sizes: np.ndarray  # (P, 2)

    @property
    def width(self) -> int:
        return self.image.shape[1]

    def system_of(self, column) -> np.ndarray:
        """System index of strip column(s)."""
        return np.clip(np.searchsorted(self.offsets, np.asarray(column, float), "right") - 1,
                       0, len(self.lefts) - 1)

    def locate(self, column):
        """Strip column(s) (continuous) → (page, system, x, y) of the page as loaded; (x, y) is on
        the system's vertical centre line."""
        col = np.asarray(column, float)
        s = self.system_of(col)
        page = self.boxes[s, 0].astype(int)
        x = (col - self.offsets[s] + self.lefts[s]) * 2.0 / self.scales[page]
        y = (self.boxes[s, 3] + self.boxes[s, 4]) / 2.0
        cx, cy = self.sizes[page, 0] / 2.0, self.sizes[page, 1] / 2.0
        t = np.deg2rad(self.angles[page])
        dx, dy = x - cx, y - cy
        return page, s, cx + np.cos(t) * dx - np.sin(t) * dy, cy + np.sin(t) * dx + np.cos(t) * dy

    def to_strip(self, page: int, x, y, system=None, with_row: bool = False):
        """Point(s) of a page as loaded → strip column(s) (and row(s) with ``with_row``). The
        system is the one whose staves are nearest to the point, unless given."""
        cx, cy = self.sizes[page, 0] / 2.0, self.sizes[page, 1] / 2.0
        t = np.deg2rad(-self.angles[page])
        dx, dy = np.asarray(x, float) - cx, np.asarray(y, float) - cy
        xd, yd = cx + np.cos(t) * dx - np.sin(t) * dy, cy + np.sin(t) * dx + np.cos(t) * dy
        if system is None:
            on_page = np.flatnonzero(self.boxes[:, 0] == page)
            if not len(on_page):
                raise ValueError(f"no system on page {page}")
            b = self.boxes[on_page]
            yy = np.atleast_1d(yd)[:, None]
            dist = np.maximum(b[None, :, 3] - yy, 0) + np.maximum(yy - b[None, :, 4], 0)
            system = on_page[np.argmin(dist, axis=1)].reshape(np.shape(yd))
        s = np.asarray(system)
        col = self.offsets[s] + xd * self.scales[page] / 2.0 - self.lefts[s]
        return (col, yd * self.scales[page] / 2.0 - self.tops[s]) if with_row else col


def _box(s) -> tuple[int, float, float, float, float]:
    if isinstance(s, System):
        return s.page, s.x0, s.x1, s.y0, s.y1
    return int(s["page"]), float(s["x0"]), float(s["x1"]), float(s["y0"]), float(s["y1"])


LEVEL_BLOCK = 24  # px of the half-resolution page: cells of the paper-level estimate


INK_BLACK = 32  # an ink level at most this dark is black already (an engraving of hollow heads


def normalise_levels(page: np.ndarray) -> np.ndarray:
    """Grey levels as on an engraved page: paper 255, ink 0 (a flat field).

    The paper level is estimated per LEVEL_BLOCK-px cell (its 90th percentile, the brightest of the
    cell and its neighbours, smoothed and interpolated), so grey paper, uneven light and shading
    are divided out; the ink level (the 5th percentile of the pixels darker than mid-grey: the
    solid ink of clefs, beams and filled heads) is then stretched to 0 where it is lighter than INK_BLACK. A clean page (paper 255, black ink) comes back unchanged, bit for bit; a page with too
    little contrast to tell ink from paper is returned as it is."""
    h, w = page.shape
    b = LEVEL_BLOCK
    if h < 2 * b or w < 2 * b:
        return page
    hb, wb = h // b, w // b
    cells = page[:hb * b, :wb * b].reshape(hb, b, wb, b).transpose(0, 2, 1, 3).reshape(hb, wb, b * b)
    paper = np.percentile(cells, 90, axis=2)
    paper = ndimage.uniform_filter(ndimage.grey_dilation(paper, size=3), size=3, mode="nearest")
    if paper.min() >= 255:  # white paper everywhere: only the ink level can differ
        flat = page.astype(np.float32)
    else:
        field = ndimage.zoom(paper.astype(np.float32), (h / hb, w / wb), order=1, mode="nearest",
                             grid_mode=True)[:h, :w]
        flat = np.minimum(page.astype(np.float32) * (255.0 / np.maximum(field, 1.0)), 255.0)
    dark = flat[flat < 128]
    if dark.size < 50:  # no ink to speak of (a blank band); leave it
        return page
    ink = float(np.percentile(dark, 5))  # clefs, beams, filled heads: solid ink on any page
    if ink > INK_BLACK:
        flat = (flat - ink) * (255.0 / (255.0 - ink))
    return np.clip(flat, 0, 255).round().astype(np.uint8)


def normalise_page(page: np.ndarray, staff_space: float, angle: float = 0.0,
                   target: float = TARGET_STAFF_SPACE) -> tuple[np.ndarray, float]:
    """A page deskewed and rescaled to staff space ``target``, halved, its grey levels flattened
    (``normalise_levels``): (uint8 half-resolution page, scale applied before halving)."""
    scale = target / float(staff_space)
    return normalise_levels(half_resolution(rotate_page(page, angle, scale))), scale


def _cut(halves: list[np.ndarray], scales, boxes, angles, sizes) -> Strip:
    """Cut every system's band out of its normalised half-resolution page ."""
    pieces, offsets, tops, lefts = [], [0], [], []
    for p, x0, x1, y0, y1 in boxes:
        page, s = halves[p], scales[p]
        top = int(round((y0 + y1) * s / 4.0)) - STRIP_HEIGHT // 2
        left, right = int(np.floor(x0 * s / 2.0)), int(np.ceil(x1 * s / 2.0)) + 1
        crop = np.full((STRIP_HEIGHT, right - left), 255, dtype=np.uint8)
        r0, r1 = max(top, 0), min(top + STRIP_HEIGHT, page.shape[0])
        c0, c1 = max(left, 0), min(right, page.shape[1])
        if r1 > r0 and c1 > c0:
            crop[r0 - top:r1 - top, c0 - left:c1 - left] = page[r0:r1, c0:c1]
        pieces.append(crop)
        offsets.append(offsets[-1] + crop.shape[1])
        tops.append(top)
        lefts.append(left)
    image = np.concatenate(pieces, axis=1) if pieces else np.full((STRIP_HEIGHT, 0), 255, np.uint8)
    return Strip(image, np.asarray(boxes, np.float64).reshape(-1, 5), np.asarray(offsets),
                 np.asarray(lefts), np.asarray(tops), np.asarray(scales, np.float64),
                 np.asarray(angles, np.float64), np.asarray(sizes, np.float64).reshape(-1, 2))


def unroll(pages: Sequence[np.ndarray], systems: Sequence, staff_space, angles=None,
           target: float = TARGET_STAFF_SPACE) -> Strip:
    """Unroll systems into one strip with the training geometry at staff space ``target``.

    ``systems``: ``System`` objects or corpus records (dicts with page, x0, x1, y0, y1), in reading
    order; ``staff_space``: px, one number or one per page; ``angles``: skew per page (deskewed-frame
    boxes), default 0. Each system becomes the 2 × STRIP_HEIGHT px band centred on it, from x0 to
    x1, of its page rescaled to ``target`` staff space, at half resolution.
    """
    n = len(pages)
    spaces = np.broadcast_to(np.asarray(staff_space, float), (n,))
    angles = np.zeros(n) if angles is None else np.asarray(angles, float)
    halves, scales = [], []
    for page, sp, a in zip(pages, spaces, angles):
        half, s = normalise_page(page, sp, a, target)
        halves.append(half)
        scales.append(s)
    sizes = [(p.shape[1], p.shape[0]) for p in pages]
    return _cut(halves, scales, [_box(s) for s in systems], angles, sizes)


@dataclass
class SnippetLocations:
    """Where each sheet snippet comes from: its centre strip column, the page and system of that
    column, and the window's x extent on that page, clipped to the system (deskewed page px, which
    are the page's own when it is not skewed; ``Strip.locate`` gives points of the page as
    loaded)."""

    column: np.ndarray  # (N,) int
    page: np.ndarray  # (N,) int
    system: np.ndarray  # (N,) int
    x0: np.ndarray  # (N,) float
    x1: np.ndarray  # (N,) float

    def __len__(self) -> int:
        return len(self.column)


def sheet_snippets(strip: Strip, hop: int = INDEX_SHEET_HOP) -> tuple[np.ndarray, SnippetLocations]:
    """Sliding SHEET_H × SHEET_W windows along a strip every ``hop`` columns, centred vertically
    (as ``SnippetPairs.sheet``): float32 (N, 80, 100) with ink = 1, and their locations."""
    w = strip.width
    half = SHEET_W // 2
    centres = np.arange(half, max(w - half, half) + 1, int(hop))
    y0 = (STRIP_HEIGHT - SHEET_H) // 2
    band = strip.image[y0:y0 + SHEET_H]
    padded = np.full((SHEET_H, w + SHEET_W), 255, np.uint8)
    padded[:, half:half + w] = band
    view = np.lib.stride_tricks.sliding_window_view(padded, SHEET_W, axis=1)  # (80, W + 1, 100)
    windows = np.ascontiguousarray(view[:, centres].transpose(1, 0, 2))  # column c: from c - half
    snippets = 1.0 - windows.astype(np.float32) / 255.0  # as SnippetPairs.pair
    page, system, _, _ = strip.locate(centres)
    lo = np.maximum(centres - half, strip.offsets[system])
    hi = np.minimum(centres + half, strip.offsets[system + 1])
    return snippets, SnippetLocations(centres, page, system, _page_x(strip, lo, system),
                                      _page_x(strip, hi, system))


def _page_x(strip: Strip, column, system) -> np.ndarray:
    """Deskewed page x of strip column(s) in a given system (the page's x when unskewed)."""
    page = strip.boxes[system, 0].astype(int)
    return strip_to_page_x(column, strip.offsets[system], strip.lefts[system], strip.scales[page])


@dataclass
class SheetIngest:
    """A sheet-music file read from pixels: its pages' layouts, strip and snippets."""

    path: str
    n_pages: int
    layouts: list[PageLayout]  # pages with staves, in order
    skipped: list[tuple[int, str]]  # (page index, reason) of pages without staves
    strip: Strip
    snippets: np.ndarray  # float32 (N, 80, 100), ink = 1
    locations: SnippetLocations

    @property
    def systems(self) -> list[System]:
        return [s for lay in self.layouts for s in lay.systems]

    @property
    def warnings(self) -> list[str]:
        """One line per page whose orientation could not be verified (``orientation_checked``)."""
        pages = [lay.page + 1 for lay in self.layouts if not lay.orientation_checked]
        if not pages:
            return []
        which = f"page {pages[0]}" if len(pages) == 1 else f"pages {', '.join(map(str, pages))}"
        return [f"{which}: orientation not verified (little margin beside the systems, or weak "
                f"evidence); if the answer looks wrong, make sure the page is upright"]


def read_systems(pages: Iterable[np.ndarray], path: str | Path = "page",
                 staff_space: float = TARGET_STAFF_SPACE) -> tuple[list[PageLayout], list[tuple[int, str]], Strip]:
    """Analyse pages and unroll every system found into one strip — the geometry shared by
    queries (``ingest_sheet``) and the corpus's training strips (``corpus_strip``).

    A page turned by quarter turns is turned upright first (``PageLayout.turns``; the layout,
    the strip's ``sizes`` and all page coordinates are those of the upright page); pages that
    come from ``iter_pages`` are not analysed twice.

    ``staff_space``: px between staff lines of the normalised pages the strip is cut from (the
    model's front end, ``geometry.FrontEnd.staff_space``).

    Returns (layouts of the pages with staves, (page, reason) of pages skipped, strip);
    ``PageError`` if no page has staves.
    """
    layouts, skipped, halves, scales, angles, sizes = [], [], [], [], [], []
    for i, page in enumerate(pages):
        try:
            lay = recall_layout(page, i, path)  # iter_pages has looked at it already
            if isinstance(lay, PageError):
                raise lay
            if lay is None:
                page, lay = upright_page(page, i, path)
        except PageError as exc:
            sizes.append((page.shape[1], page.shape[0]))
            skipped.append((i, exc.reason))
            halves.append(None)
            scales.append(1.0)
            angles.append(0.0)
            continue
        sizes.append((page.shape[1], page.shape[0]))
        layouts.append(lay)
        half, s = normalise_page(page, lay.staff_space, lay.angle, staff_space)
        halves.append(half)
        scales.append(s)
        angles.append(lay.angle)
    n = len(sizes)
    if not layouts:
        if n == 1:
            raise PageError(path, skipped[0][1])
        hints: dict[str, list[str]] = {}  # reasons the user can act on, with their pages
        for p, reason in skipped:
            if reason != "blank page" and not reason.startswith("no staves found"):
                hints.setdefault(reason, []).append(str(p + 1))
        raise PageError(path, (f"no staves found on any of its {n} pages" + "".join(
            f"; page{'s' * (len(v) > 1)} {', '.join(v)}: {r}" for r, v in hints.items()))
                        if n else "no pages")
    boxes = [_box(s) for lay in layouts for s in lay.systems]
    return layouts, skipped, _cut(halves, scales, boxes, angles, sizes)


def corpus_strip(pages: Sequence[np.ndarray], engraved: Sequence[dict], noteheads: dict,
                 path: str | Path = "page") -> tuple[Strip, np.ndarray, np.ndarray, bool]:
    """The training strip of an engraved piece, made from its pixels exactly as a query is.

    Systems are found by ``analyse_page`` (not taken from the engraver); each notehead is mapped
    into the strip through the detected system that matches its engraved one (same reading
    order, which holds whenever every page has as many detected systems as engraved ones).
    Where detection disagrees with the engraver on some page, the engraver's boxes are unrolled
    instead, still at the detected staff space and skew, so the scale is the same.
    Returns (strip, strip_x, strip_y, detected: whether the detected systems were used).
    """
    layouts, skipped, strip = read_systems(pages, path)
    per_page = {lay.page: len(lay.systems) for lay in layouts}
    want: dict[int, int] = {}
    for s in engraved:
        want[int(s["page"])] = want.get(int(s["page"]), 0) + 1
    detected = not skipped and per_page == want
    if not detected:
        space = {lay.page: lay.staff_space for lay in layouts}
        fallback = float(np.median(list(space.values())))
        spaces = [space.get(i, fallback) for i in range(len(pages))]
        angles = [next((lay.angle for lay in layouts if lay.page == i), 0.0)
                  for i in range(len(pages))]
        strip = unroll(pages, engraved, spaces, angles)
    system = np.asarray(noteheads["system"], int)
    cols, rows = np.empty(len(system)), np.empty(len(system))
    for p in np.unique(np.asarray(noteheads["page"], int)):
        sel = np.asarray(noteheads["page"]) == p
        cols[sel], rows[sel] = strip.to_strip(int(p), noteheads["x"][sel], noteheads["y"][sel],
                                              system[sel], with_row=True)
    return strip, cols.astype(np.float32), rows.astype(np.float32), detected


def ingest_sheet(path: str | Path, hop: int = INDEX_SHEET_HOP, dpi: float | None = None,
                 staff_space: float = TARGET_STAFF_SPACE) -> SheetIngest:
    """Read a PDF or scan (``iter_pages``: by the resolution of what is on its pages, upright;
    ``dpi`` forces a PDF rendering resolution), find its systems, unroll them and cut sheet
    snippets.

    ``staff_space``: the model's (``read_systems``). Pages without staves (title pages, blank
    pages) are skipped and listed in ``skipped``; ``PageError`` if no page has any. Page numbers
    everywhere are those of the file (from 0).
    """
    layouts, skipped, strip = read_systems(iter_pages(path, dpi), path, staff_space)
    snippets, locations = sheet_snippets(strip, hop)
    return SheetIngest(str(path), len(strip.sizes), layouts, skipped, strip, snippets, locations)
