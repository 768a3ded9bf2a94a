"""Staff analysis of one page: skew, staff lines, staves and systems (PageLayout), and which way up the page is."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from audiosheet.frontend.coords import rotate_points
from audiosheet.frontend.images import WORK_SPACE, PageError, PageRotated
from audiosheet.frontend.ink import darkness, paper_and_ink, rotate_page, vertical_runs

MAX_ANGLE = 5.0  # degrees of skew searched


@dataclass
class Staff:
    """Five staff lines: their heights at the staff's horizontal centre (deskewed page px, top to
    bottom) and their extent. On a warped scan the lines may still slope (``slope``: fall per px
    to the right) or bend; ``y0``/``y1`` are the top line's highest and the bottom line's lowest
    point."""

    lines: tuple[float, float, float, float, float]
    x0: float
    x1: float
    slope: float = 0.0
    y0: float | None = None
    y1: float | None = None

    def __post_init__(self):
        if self.y0 is None:
            self.y0 = self.lines[0]
        if self.y1 is None:
            self.y1 = self.lines[-1]

    @property
    def space(self) -> float:
        return (self.lines[-1] - self.lines[0]) / 4.0


@dataclass
class System:
    """Staves played together (a piano grand staff is two). y0: top line of the first staff,
    y1: bottom line of the last; x0, x1: extent of the staff lines. Deskewed page px."""

    page: int
    x0: float
    x1: float
    y0: float
    y1: float
    staves: list[Staff] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The corpus's system record (``piece.json``)."""
        return {"page": self.page, "x0": self.x0, "x1": self.x1, "y0": self.y0, "y1": self.y1,
                "staff_lines": [list(s.lines) for s in self.staves]}


@dataclass
class PageLayout:
    """What ``analyse_page`` finds on one page."""

    page: int  # index of the page in its file
    width: int  # px of the page as loaded
    height: int
    angle: float  # skew, degrees: staff lines fall by tan(angle) px per px to the right
    staff_space: float  # px between neighbouring staff lines (centre to centre)
    line_thickness: float  # px
    staves: list[Staff]
    systems: list[System]
    turns: int = 0  # quarter turns (np.rot90, counterclockwise) that made the page upright
    # False: the upside-down check had no system with room beside it (a page cropped close to
    # its staves) or only weak evidence (below SURE_WAY; upright real scans measure ≥ 1.33), so
    # the page was taken as upright unverified (``SheetIngest.warnings`` says so)
    orientation_checked: bool = True

    @property
    def centre(self) -> tuple[float, float]:
        return self.width / 2.0, self.height / 2.0

    def to_page(self, x, y):
        """Deskewed page point(s) → point(s) of the page as loaded."""
        return rotate_points(x, y, self.angle, self.centre)

    def from_page(self, x, y):
        """Point(s) of the page as loaded → deskewed page point(s)."""
        return rotate_points(x, y, -self.angle, self.centre)


def _estimate_angle(dark: np.ndarray, max_angle: float = MAX_ANGLE) -> float:
    """Skew in degrees maximising the energy of the sheared horizontal projection profile."""
    ys, xs = np.nonzero(dark > 0.15)
    step = len(ys) // 150_000 + 1
    ys, xs = ys[::step], xs[::step]
    if len(ys) < 100:
        return 0.0
    wts = dark[ys, xs]
    xs = xs.astype(np.float32) - dark.shape[1] / 2.0
    ys = ys.astype(np.float32)
    margin = int(np.ceil(dark.shape[1] * np.tan(np.deg2rad(max_angle + 1)))) + 2
    n = dark.shape[0] + 2 * margin

    def energy(angles):
        out = []
        for a in angles:
            rows = (ys - xs * np.float32(np.tan(np.deg2rad(a))) + margin).astype(np.int64)
            h = np.bincount(rows, wts, minlength=n)
            out.append(np.dot(h, h))
        return np.asarray(out)

    coarse = np.arange(-max_angle, max_angle + 1e-9, 0.25)
    best = coarse[np.argmax(energy(coarse))]
    fine = best + np.arange(-0.25, 0.25 + 1e-9, 0.025)
    e = energy(fine)
    i = int(np.argmax(e))
    if 0 < i < len(e) - 1:  # parabolic peak
        den = e[i - 1] - 2 * e[i] + e[i + 1]
        off = 0.5 * (e[i - 1] - e[i + 1]) / den if den < 0 else 0.0
        return float(fine[i] + off * 0.025)
    return float(fine[i])


def _line_mask(dark: np.ndarray, d: float) -> np.ndarray:
    """Pixels that look like part of a staff line: dark on average over two staff spaces along the
    row, and darker than the rows half a space above and below (where staff spaces are white)."""
    length = int(2 * d) | 1
    hmean = ndimage.uniform_filter1d(dark, length, axis=1, mode="constant")
    r = max(1, int(round(d / 2)))
    around = np.zeros_like(hmean)
    around[r:] = hmean[:-r]
    np.maximum(around[:-r], hmean[r:], out=around[:-r])
    return hmean - around > 0.08


def _segments(mask: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1-D mask, merging runs separated by at most ``gap``."""
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    merged = []
    for a, b in zip(idx[0::2], idx[1::2]):
        if merged and a - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], int(b))
        else:
            merged.append((int(a), int(b)))
    return merged


def _slice_peaks(lines: np.ndarray, d: float, edges: np.ndarray) -> list[tuple[int, float, float]]:
    """(slice, top line row, score) of every five-line comb peak in vertical slices of a line
    mask; the row is refined to the centroid of the five lines' profiles."""
    h = lines.shape[0]
    prof = np.add.reduceat(lines, edges[:-1], axis=1, dtype=np.int32).astype(np.float32)  # (h, S)
    wide = ndimage.maximum_filter1d(prof, 3, axis=0)
    offs = np.round(np.arange(5) * d).astype(int)
    between = np.round((np.arange(4) + 0.5) * d).astype(int)
    last = h - offs[-1]
    if last <= 0:
        return []
    comb = np.min(np.stack([wide[o:o + last] for o in offs]), axis=0)
    gaps = np.max(np.stack([prof[o:o + last] for o in between]), axis=0)
    score = np.where(gaps < 0.5 * comb, comb, 0.0)  # white between the lines
    r = max(1, int(d / 3))
    peaks = []
    for s in range(len(edges) - 1):
        sc = score[:, s]
        floor = 0.15 * (edges[s + 1] - edges[s])
        taken = np.zeros(last, bool)
        for y in np.argsort(-sc):
            if sc[y] < floor:
                break
            if taken[y]:
                continue
            taken[max(0, y - int(4.5 * d)): y + int(4.5 * d) + 1] = True  # staves never overlap
            tops = []
            for o, k in zip(offs, np.arange(5) * d):
                lo, hi = max(y + o - r, 0), min(y + o + r + 1, h)
                q = prof[lo:hi, s]
                tops.append(lo + float(np.dot(np.arange(hi - lo), q) / q.sum()) - k)
            peaks.append((s, float(np.mean(tops)), float(sc[y])))
    return peaks


def _chains(peaks: list[tuple[int, float, float]], d: float) -> list[list[tuple[int, float, float]]]:
    """Link slice peaks left to right into staves (a slice may be missed in between)."""
    chains: list[list[tuple[int, float, float]]] = []
    for s, y, sc in sorted(peaks):
        best = None
        for c in chains:
            ls, ly, _ = c[-1]
            if s - 2 <= ls < s and abs(ly - y) <= max(2.0, 0.5 * d):
                if best is None or abs(ly - y) < abs(best[-1][1] - y):
                    best = c
        if best is None:
            chains.append([(s, y, sc)])
        else:
            best.append((s, y, sc))
    return chains


def _along(dark: np.ndarray, rows, path: np.ndarray, a: int, b: int) -> np.ndarray:
    """Darkness along a path: out[i, j] = dark at row rows[i] + path[x], x = a + j."""
    x = np.arange(a, b)
    r = np.asarray(rows)[:, None] + path[a:b][None, :]
    return dark[np.clip(r, 0, dark.shape[0] - 1), x[None, :]]


@dataclass
class _Found:
    """A staff on the analysis image: the top line's height along x (continuous), its extent."""

    heights: np.ndarray  # five line heights at x = ``at``
    at: float
    top: np.ndarray  # (w,) height of the top line at every column
    x0: int
    x1: int
    support: float  # comb score summed over the slices that found it
    on: int = 0  # columns × lines that look like staff line

    def height(self, line: int, x: float) -> float:
        return float(self.heights[line] + np.interp(x, np.arange(len(self.top)), self.top)
                     - np.interp(self.at, np.arange(len(self.top)), self.top))


def _find_staves(dark: np.ndarray, d: float, stats: dict | None = None) -> list[_Found]:
    """Staves of a deskewed darkness image with line distance ``d``.

    Five-line combs are found in narrow vertical slices and linked across them; each staff is then
    followed along the path through its slices, so staves that are not quite level or straight
    (a warped scan) are measured along their lines."""
    h, w = dark.shape
    lines = _line_mask(dark, d)
    edges = np.linspace(0, w, max(1, int(round(w / (12 * d)))) + 1).astype(int)
    half = max(1, int(round(d / 2)))
    r = max(1, int(d / 3))
    cols = np.arange(w)
    staves = []
    chains = _chains(_slice_peaks(lines, d, edges), d)
    if stats is not None:  # five-line combs that run across a third of the page at least
        stats["combs"] = sum(len(c) >= max(3, 0.3 * (len(edges) - 1)) for c in chains)
    for chain in chains:
        xs = np.array([(edges[s] + edges[s + 1]) / 2.0 for s, _, _ in chain])
        ys = np.array([y + 0.5 for _, y, _ in chain])
        support = sum(sc for _, _, sc in chain)
        # the top line's path: through the slice peaks, straight on beyond the end ones
        if len(xs) > 1:
            top = np.interp(cols, xs, ys)
            lo, hi = np.polyfit(xs[:2], ys[:2], 1), np.polyfit(xs[-2:], ys[-2:], 1)
            top[cols < xs[0]] = np.polyval(lo, cols[cols < xs[0]])
            top[cols > xs[-1]] = np.polyval(hi, cols[cols > xs[-1]])
            top = np.clip(top, ys.min() - d, ys.max() + d)
        else:
            top = np.full(w, ys[0])
        a, b = int(edges[chain[0][0]]), int(edges[chain[-1][0] + 1])
        xc = (a + b) // 2
        y_c = float(top[xc])
        path = np.round(top - y_c).astype(int)  # row offset of every column from the centre's
        # ledger lines can pass for staff lines in a slice: shift the comb by up to two lines if
        # that makes its weakest line clearly longer (staff lines run the whole staff, ledger
        # lines do not)
        rows = np.arange(int(y_c - 2.5 * d) - half, int(y_c + 6.5 * d) + half + 2)
        band = _along(dark, rows, path, a, b)
        contrast = np.percentile(band[half:-half] - np.maximum(band[:-2 * half], band[2 * half:]),
                                 75, axis=1)

        def strength(y):
            i = int(y) - rows[0] - half
            return contrast[max(i - 1, 0):max(i + 2, 1)].max()

        shifts = {k: min(strength(y_c + (i + k) * d) for i in range(5)) for k in (0, -2, -1, 1, 2)}
        k = max(shifts, key=shifts.get)
        if shifts[k] > 1.25 * shifts[0] + 0.02:
            y_c += k * d
        # line heights: centroid of the darkness profile within a third of a space of each line
        heights = []
        for o in np.arange(5) * d:
            y0 = int(y_c + o)
            q = _along(dark, np.arange(y0 - r, y0 + r + 1), path, a, b).sum(axis=1)
            q = q - q.min()
            heights.append(y0 - r + 0.5 + float(np.dot(np.arange(len(q)), q) / q.sum()) if q.sum() > 0
                           else y0 + 0.5)
        # staff lines are evenly spaced: fit them so
        space, first = np.polyfit(np.arange(5), heights, 1)
        fitted = first + space * np.arange(5)
        if np.abs(heights - fitted).max() > 0.2 * d or not 0.85 * d < space < 1.15 * d:
            continue
        heights = fitted
        # extent: columns where at least 3 lines are darker than half a space above and below them
        # (so not a brace or clef); each line's gaps up to 5 spaces bridged (clefs, accidentals)
        rows = np.floor(heights).astype(int)
        line = np.max([_along(dark, rows + o, path, 0, w) for o in (-1, 0, 1)], axis=0)
        beside = np.maximum(_along(dark, rows - half, path, 0, w),
                            _along(dark, rows + half, path, 0, w))
        bands = ndimage.uniform_filter1d(line - beside, 3, axis=1)
        level = np.median(bands[:, a:b], axis=1, keepdims=True)
        on = bands >= 0.5 * np.maximum(level, 0.05)
        seen = ndimage.binary_opening(on, np.ones((1, max(2, int(d / 2))), bool))  # not noise specks
        on = ndimage.binary_closing(seen, np.ones((1, int(5 * d)), bool))
        count = on.sum(axis=0)
        segs = []
        for s0, s1 in _segments(count >= 3, d):  # where 3 lines show; between, 2 may do (beams)
            if segs and np.mean(count[segs[-1][1]:s0] >= 2) >= 0.8:
                segs[-1] = (segs[-1][0], s1)
            else:
                segs.append((s0, s1))
        inside = [s for s in segs if s[1] > a and s[0] < b]
        if not inside:
            continue
        # the ends: where 3 lines show in the same columns (bridging reached into the brace)
        three = ndimage.binary_opening(seen.sum(axis=0) >= 3, np.ones(max(2, int(d / 2)), bool))
        core = np.flatnonzero(three[inside[0][0]:inside[-1][1]])
        if not len(core):
            continue
        x0, x1 = inside[0][0] + int(core[0]), inside[0][0] + int(core[-1]) + 1
        if x1 - x0 < 10 * d or (seen[:, x0:x1].sum(axis=0) >= 3).mean() < 0.3:
            continue  # too short, or lines too broken to be staff lines (text, ledger lines)
        staves.append(_Found(heights, float(xc), top, x0, x1, support, int(seen[:, x0:x1].sum())))
    # chains that overlap: the same staff in two pieces (merged) or a weaker, shifted comb (dropped)
    kept: list[_Found] = []
    for st in sorted(staves, key=lambda s: -s.support):
        same = [k for k in kept if abs(k.height(0, k.at) - st.height(0, k.at)) < 4.5 * d]
        if not same:
            kept.append(st)
        elif abs(same[0].height(0, same[0].at) - st.height(0, same[0].at)) < 0.5 * d:
            k = same[0]
            k.x0, k.x1 = min(k.x0, st.x0), max(k.x1, st.x1)
            k.support, k.on = k.support + st.support, k.on + st.on
    # stacks of ledger lines: closer than three spaces to a staff that runs longer, or on the
    # grid of a staff's lines continued and much shorter than it
    kept.sort(key=lambda s: s.height(0, s.at))
    fake = set()
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            up, lo = kept[i], kept[j]
            if min(up.x1, lo.x1) <= max(up.x0, lo.x0):
                continue
            x = (max(up.x0, lo.x0) + min(up.x1, lo.x1)) / 2
            gap = lo.height(0, x) - up.height(4, x)
            if gap > 6 * d:
                break
            steps = (lo.height(0, x) - up.height(0, x)) / d
            short, long_ = sorted((up, lo), key=lambda s: s.x1 - s.x0)
            if gap < 3 * d:
                fake.add(i if up.on < lo.on else j)
            elif (abs(steps - round(steps)) < 0.15
                  and short.x1 - short.x0 < 0.5 * (long_.x1 - long_.x0)):
                fake.add(i if short is up else j)
    return [s for i, s in enumerate(kept) if i not in fake]


def _slope(f: _Found) -> float:
    """The mean slope of a staff's top line over its extent."""
    return float((f.top[f.x1 - 1] - f.top[f.x0]) / max(f.x1 - 1 - f.x0, 1))


def _joined(dark: np.ndarray, upper: _Found, lower: _Found, d: float, noise: float = 0.0) -> bool:
    """Do two staves share ink near their left ends (brace, bracket, system barline)? ``noise``:
    of the paper, in darkness units; ink must stand well above it."""
    x = min(upper.x0, lower.x0)  # one staff's start may be lost under ornaments: the earlier
    top = int(upper.height(4, x))
    bottom = int(lower.height(0, x)) + 1
    if bottom - top < 2:
        return True
    left = max(x - int(round(4 * d)), 0)
    right = min(x + int(round(1.0 * d)) + 1, dark.shape[1])
    crop = ndimage.uniform_filter1d(dark[top:bottom, left:right], 3, axis=0)
    # a system barline: one column (give or take one) dark from one staff to the other, but for
    # a break or two (worn type, a noisy scan)
    if ((ndimage.maximum_filter1d(crop, 3, axis=1) > max(0.12, 3 * noise)).mean(axis=0) >= 0.8).any():
        return True
    # a brace or bracket: one connected shape from one staff to the other, breaks up to a space
    ink = ndimage.binary_dilation(crop > max(0.15, 3 * noise),
                                  np.ones((max(3, int(d / 2)) | 1, 1), bool))
    labels, n = ndimage.label(ink, structure=np.ones((3, 3), bool))
    if n == 0:
        return False
    return bool(np.intersect1d(labels[0][labels[0] > 0], labels[-1][labels[-1] > 0]).size)


def analyse_page(page: np.ndarray, index: int | None = None, path: str | Path = "page",
                 orient: str = "check") -> PageLayout:
    """Deskew a page and find its staff space, staves and systems.

    ``orient``: "check" — a page that shows staff lines running up and down (turned by 90° or
    270°) or that reads upside down (braces, brackets, system barlines at the right of its systems)
    raises ``PageRotated``; "either" — the page is known to be turned by a multiple of 90°
    (``upright_page`` turned a sideways page): ``PageRotated`` unless it is clearly upright, with
    ``turns`` 2 if it is clearly upside down and 0 if that cannot be told; "off" — no check.

    Raises ``PageError`` for a blank page or one without staves (naming ``path`` and, if given,
    the page ``index``).
    """
    h, w = page.shape
    paper, ink = paper_and_ink(page)
    if paper - ink < 40:
        raise PageError(path, "blank page", index)
    # line distance from vertical runs in a few hundred 4-column bands at full resolution
    at = np.linspace(w * 0.1, w * 0.9 - 4, min(300, w // 4)).astype(int)
    bands = page[:, at[:, None] + np.arange(4)].mean(axis=2, dtype=np.float32)
    d_full, t_full, steps = vertical_runs(bands < paper - 0.12 * (paper - ink), with_count=True)
    # blurred dark lines close to each other (a staff space of 6 px printed and scanned) merge at
    # that low threshold and whole staves read as one run: where a higher one finds far more
    # steps at one distance, the staff lines are those
    d_hi, t_hi, steps_hi = vertical_runs(bands < paper - 0.4 * (paper - ink), with_count=True)
    if steps_hi > 2 * steps:
        d_full, t_full, steps = d_hi, t_hi, steps_hi
    if orient == "check" and _sideways(page, paper, ink, steps / max(len(at), 1)):
        raise PageRotated(path, "page appears rotated (staff lines run up and down); turn it "
                                "upright and try again", index, turns=1)
    if d_full < 3:
        raise PageError(path, "no staves found (not sheet music?)", index)
    k = max(1, int(d_full // WORK_SPACE))
    d = d_full / k
    skewed, noise = darkness(page, paper, ink, k)
    if noise > 0.2:  # a printed page is mostly even paper; this is a photo or noise
        raise PageError(path, "no staves found (not sheet music?)", index)
    angle = _estimate_angle(skewed)
    for attempt in range(2):
        dark = skewed
        if abs(np.deg2rad(angle)) * dark.shape[1] > 0.5:  # more than half a pixel of drift
            dark = rotate_page((dark * 255).astype(np.uint8), angle, fill=0).astype(np.float32) / 255
        stats: dict = {}
        found = _find_staves(dark, d, stats)
        # staves still sloping all alike: the profile was led astray (beams, faint lines); redo
        slopes = [_slope(f) for f in found if f.x1 - f.x0 > 30 * d]
        residual = float(np.rad2deg(np.arctan(np.median(slopes)))) if slopes else 0.0
        if abs(residual) < 0.1 or attempt:
            break
        angle += residual
    if not found:
        if stats.get("combs"):  # staff lines are there, but too faint or broken to follow
            raise PageError(path, BROKEN_BILEVEL if _bilevel(page) else BROKEN, index)
        raise PageError(path, "no staves found (not sheet music?)", index)
    staves = []
    for f in found:
        mid = (f.x0 + f.x1) / 2
        along = f.top[f.x0:f.x1] - f.top[int(mid)]
        staves.append(Staff(tuple(f.height(i, mid) * k for i in range(5)), float(f.x0 * k),
                            float(f.x1 * k), _slope(f), (f.height(0, mid) + along.min()) * k,
                            (f.height(4, mid) + along.max()) * k))
    # systems: consecutive staves joined by ink at their left ends
    groups = [[0]]
    for i in range(1, len(found)):
        if _joined(dark, found[i - 1], found[i], d, noise):
            groups[-1].append(i)
        else:
            groups.append([i])
    if orient != "off":
        hand, measured = _handedness(dark, found, groups, d)
        if orient == "check" and hand < -UPSIDE_DOWN:
            raise PageRotated(path, "page appears rotated (upside down); turn it upright and try "
                                    "again", index, turns=2)
        if orient == "check" and hand < -DOUBT:
            raise PageRotated(path, "page appears rotated (upside down?); turn it upright and try "
                                    "again", index, turns=0)
        if orient == "either" and hand < SURE_WAY:
            raise PageRotated(path, "page appears rotated (staff lines run up and down); turn it "
                                    "upright and try again", index,
                              turns=2 if hand < -SURE_WAY else 0)
    page_no = index or 0
    systems = [System(page_no, min(s.x0 for s in ss), max(s.x1 for s in ss), ss[0].y0, ss[-1].y1, ss)
               for ss in ([staves[i] for i in g] for g in groups)]
    space = float(np.median([s.space for s in staves]))
    return PageLayout(page_no, w, h, angle, space, t_full, staves, systems,
                      orientation_checked=orient == "off" or (measured > 0 and hand >= SURE_WAY))


# Thresholds measured on real scans (../shared/data/real_scans; 171 pages: 150 drawn across the
# works, 21 of an edition cropped close to its staves): handedness was 0 on 24 pages (no system with
# room beside it: they are read as they are) and otherwise at least 1.33 upright and at most -1.01
# upside down; staff-line steps across rows / down columns were at most 0.07 upright and at least
# 3.3 turned by 90° (150 pages). benchmarks/page_ingestion.py --rotations counts the outcomes.
BROKEN_BILEVEL = ("staff lines too faint or broken (bilevel scan?); scan it in grayscale, or at "
                  "a higher resolution")


BROKEN = "staff lines too faint or broken; scan it with more contrast, or at a higher resolution"


UPSIDE_DOWN = 1.0  # handedness below minus this: the page is upside down


DOUBT = 0.3  # handedness between minus UPSIDE_DOWN and minus this: perhaps upside down (an error)


SURE_WAY = 1.0  # a page turned by 90°: handedness beyond ± this says which way


SIDEWAYS = 2.0  # staff-line steps across rows over those down columns: lines run up and down


def _bilevel(page: np.ndarray) -> bool:
    """Is the page black and white only (a bilevel scan, perhaps reduced by up to 4 × 4 blocks
    as it was read, which leaves at most 17 grey levels)?"""
    return len(np.unique(page[::7, ::7])) <= 17


def _sideways(page: np.ndarray, paper: float, ink: float, col_steps: float) -> bool:
    """Do the page's staff lines run up and down? Staff-line steps (``vertical_runs``) per band
    across a few hundred 4-row bands against those per 4-column band (``col_steps``)."""
    h, w = page.shape
    at = np.linspace(h * 0.1, h * 0.9 - 4, min(300, h // 4)).astype(int)
    bands = page[at[:, None] + np.arange(4), :].mean(axis=1, dtype=np.float32).T
    _, _, steps = vertical_runs(bands < paper - 0.12 * (paper - ink), with_count=True)
    row_steps = steps / max(len(at), 1)
    return row_steps >= 2 and row_steps > SIDEWAYS * col_steps


def _handedness(dark: np.ndarray, found: list, groups: list[list[int]], d: float) -> tuple[float, int]:
    """(evidence, systems measured): evidence that a page is upright rather than upside down (> 0
    upright, < 0 upside down, 0 when it cannot be told; no system measured: no evidence at all): music is written left to right, so a brace, a bracket or a system
    barline stands left of every system and little ink beyond its right end. Per system with room
    on both sides (3 staff spaces to the page's edges: a page cropped close to its staves may
    show the scanner's dark border, or the ends of staff lines, there), the mean darkness from
    2.5 to 0.3 staff spaces left of its staff lines minus the same right of them, times 10,
    summed over the systems (the more systems, the surer).

    The darkness of the clef and key signature against the end of the staff was tried too and
    dropped: on real scans with dense chords at the ends of systems it turned upright pages."""
    h, w = dark.shape
    total, measured = 0.0, 0
    for g in groups:
        sts = [found[i] for i in g]
        x0, x1 = min(s.x0 for s in sts), max(s.x1 for s in sts)
        if x1 - x0 < 20 * d or x0 - 3 * d < 0 or x1 + 3 * d > w:
            continue
        top, bottom = sts[0].height(0, (x0 + x1) / 2), sts[-1].height(4, (x0 + x1) / 2)
        r0, r1 = int(max(top - 0.5 * d, 0)), int(min(bottom + 0.5 * d, h))
        if r1 <= r0:
            continue
        # past the barlines at either end (a system barline, a final or repeat bar: dark over
        # the whole system, where a brace's curve is not)
        t, b = int(max(top, 0)), int(min(bottom + 1, h))
        x0 = _past_bars(dark, t, b, int(x0) - 1, -1, d) + 1
        x1 = _past_bars(dark, t, b, int(x1), 1, d)
        if x0 - 2.5 * d < 0 or x1 + 2.5 * d > w:
            continue
        left = dark[r0:r1, int(x0 - 2.5 * d):int(x0 - 0.3 * d)]
        right = dark[r0:r1, int(x1 + 0.3 * d):int(x1 + 2.5 * d)]
        total += float(left.mean()) - float(right.mean())
        measured += 1
    return 10 * total, measured


def _past_bars(dark: np.ndarray, top: int, bottom: int, start: int, step: int, d: float) -> int:
    """The first column beyond the last barline within 2 staff spaces of ``start`` going ``step``
    (a column dark over 85 % of rows top..bottom), or ``start`` if there is none."""
    cols = start + step * np.arange(int(2 * d))
    cols = cols[(cols >= 0) & (cols < dark.shape[1])]
    if not len(cols) or bottom <= top:
        return start
    bar = (dark[top:bottom, cols] > 0.5).mean(axis=0) >= 0.85
    return int(cols[np.flatnonzero(bar)[-1]] + step) if bar.any() else start
