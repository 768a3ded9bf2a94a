"""Measurements on page pixels shared by page decoding and staff analysis: ink runs, staff-line distance, paper and ink levels, rotation."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _band_runs(bands: np.ndarray) -> tuple[float, float, float]:
    """(line distance, line thickness, strength) of the vertical runs of a stack of gray columns
    (h, n): ``vertical_runs`` of their ink, and the staff-line steps found per column."""
    sample = bands[::3]
    paper, ink = float(np.median(sample)), float(np.percentile(sample, 0.1))
    if paper - ink < 40:
        return 0.0, 0.0, 0.0
    mask = bands < paper - 0.12 * (paper - ink)
    d, t, count = vertical_runs(mask, with_count=True)
    return d, t, count / max(bands.shape[1], 1)


def _page_bands(page: np.ndarray, width: int = 4, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Mean gray of up to ``n`` bands ``width`` px wide across the middle 80 % of a page: columns
    (h, n) and rows (w, n)."""
    h, w = page.shape
    at = np.linspace(w * 0.1, w * 0.9 - width, max(min(n, w // width), 1)).astype(int)
    cols = page[:, at[:, None] + np.arange(width)].mean(axis=2, dtype=np.float32)
    at = np.linspace(h * 0.1, h * 0.9 - width, max(min(n, h // width), 1)).astype(int)
    rows = page[at[:, None] + np.arange(width), :].mean(axis=1, dtype=np.float32).T
    return cols, rows


def line_distance(page) -> float:
    """Staff space of a page (px; 0 if it shows no staff lines), whichever way its lines run: a
    numpy array, or a Pillow "L" image (its 4-column and 4-row bands are taken by Pillow,
    without an array of the whole page)."""
    def middle(bands):  # up to 300 of them, across the middle 80 %
        n = bands.shape[1]
        return bands[:, np.linspace(0.1 * n, 0.9 * n - 1, min(300, n)).astype(int)]

    if isinstance(page, np.ndarray):
        if min(page.shape) < 8:
            return 0.0
        cols, rows = _page_bands(page)
    else:
        if min(page.size) < 8:
            return 0.0
        cols = middle(np.asarray(page.reduce((4, 1)), np.float32))  # means of 4 columns
        rows = None
    dc, _, sc = _band_runs(cols)
    if sc >= SURE_STEPS:  # plenty of staff lines across: they run left to right
        return dc
    if rows is None:
        rows = middle(np.asarray(page.reduce((1, 4)), np.float32).T)  # means of 4 rows
    dr, _, sr = _band_runs(rows)
    return dr if sr > sc else dc


def rotate_page(page: np.ndarray, angle: float, scale: float = 1.0, fill: int = 255) -> np.ndarray:
    """Resample a page so that deskewed-page point p lands at ``p * scale``: rotate by ``-angle``
    about the page centre, then scale. Output size = page size × scale."""
    from PIL import Image

    h, w = page.shape
    im = Image.fromarray(page)
    if scale != 1.0:
        ow, oh = max(int(w * scale), 1), max(int(h * scale), 1)
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        # the box keeps the scale exact: output pixel edges are input edges × scale
        im = im.resize((ow, oh), resample, box=(0, 0, ow / scale, oh / scale))
    if abs(angle) > 1e-3:
        cx, cy = w * scale / 2.0, h * scale / 2.0
        t = np.deg2rad(angle)
        c, s = np.cos(t), np.sin(t)
        # output (deskewed) point q → input point c + R(angle) (q - c); Pillow works in
        # continuous pixel coordinates, the same convention as ours
        data = (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)
        im = im.transform(im.size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR,
                          fillcolor=fill)
    return np.asarray(im)


def _runs_1d(mask: np.ndarray):
    """Black runs along axis 1 of a 2-D bool array: (row, start, stop) arrays."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rs, starts = np.nonzero(d == 1)
    _, stops = np.nonzero(d == -1)  # row-major order: stops pair with starts
    return rs, starts, stops


def vertical_runs(ink: np.ndarray, with_count: bool = False):
    """(line distance, line thickness) from the vertical runs of an ink mask's columns: the most
    common distance from one black run's start to the next one's (a staff line and the space below
    it) and the most common black run. Classic OMR estimate; staff lines dominate both.
    ``with_count``: also the number of steps at that distance (± 1 px)."""
    rows, starts, stops = _runs_1d(ink.T)
    black = stops - starts
    same = rows[1:] == rows[:-1]
    step = (starts[1:] - starts[:-1])[same]
    step = step[black[:-1][same] < 0.5 * step]  # a thin run followed by more white
    if len(step) < 20:
        return (0.0, 0.0, 0) if with_count else (0.0, 0.0)
    hist = np.bincount(step.clip(0, 1000))
    hist[:3] = 0
    mode = int(np.argmax(hist))
    lo, hi = max(mode - 1, 0), min(mode + 2, len(hist))
    d = float(np.dot(np.arange(lo, hi), hist[lo:hi]) / max(hist[lo:hi].sum(), 1))
    thick = np.bincount(black.clip(0, mode))
    thick[0] = 0
    if with_count:
        return d, float(np.argmax(thick)), int(hist[lo:hi].sum())
    return d, float(np.argmax(thick))


def paper_and_ink(page: np.ndarray) -> tuple[float, float]:
    """(paper, ink) gray levels of a page: its median and its darkest thousandth."""
    sample = page[::2, ::2]
    return float(np.median(sample)), float(np.percentile(sample, 0.1))


def darkness(page: np.ndarray, paper: float, ink: float, k: int) -> tuple[np.ndarray, float]:
    """float32 ink amount (0 paper … 1 ink) of the page reduced by k × k block means, measured
    against the local paper level (uneven lighting, paper texture), and the noise of the paper
    in the same unit (robust standard deviation)."""
    from PIL import Image

    if k > 1:  # Pillow's block means (rounded to a grey level: 10 × faster than numpy's)
        h, w = page.shape[0] // k * k, page.shape[1] // k * k
        g = np.asarray(Image.fromarray(np.ascontiguousarray(page[:h, :w])).reduce(k), np.float32)
    else:
        g = page.astype(np.float32)
    # local paper level: the 80th percentile of 24 × 24 blocks, smoothed and spread back
    b = 24
    gh, gw = g.shape[0] // b, g.shape[1] // b
    if gh >= 3 and gw >= 3:
        blocks = g[:gh * b, :gw * b].reshape(gh, b, gw, b).transpose(0, 2, 1, 3).reshape(gh, gw, -1)
        bg = ndimage.median_filter(np.percentile(blocks, 80, axis=2).astype(np.float32), 3)
        bg = np.maximum(bg, ink + 0.5 * (paper - ink))  # a block of solid ink is not paper
        if k > 1:  # Pillow's bilinear resize of a float image: the same, 4 × faster
            bg = np.asarray(Image.fromarray(bg.astype(np.float32)).resize(
                (g.shape[1], g.shape[0]), Image.Resampling.BILINEAR))
        else:
            bg = ndimage.zoom(bg, (g.shape[0] / gh, g.shape[1] / gw), order=1, mode="nearest",
                              grid_mode=True)[:g.shape[0], :g.shape[1]]
    else:
        bg = np.float32(paper)
    rel = (bg - g) / np.maximum(bg - ink, 1.0)
    sample = rel[::3, ::3]
    noise = float(1.4826 * np.median(np.abs(sample - np.median(sample))))
    return np.clip(rel, 0.0, 1.0).astype(np.float32), noise


SURE_STEPS = 8.0  # staff-line steps per 4-column band that leave no doubt the lines run across
