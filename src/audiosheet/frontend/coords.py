"""Page geometry shared by page reading (``staves``, ``strip``) and query answers (``identify``).

Numpy only, so an audio query can place its answer on a page without importing the page-reading
modules (and scipy with them).
"""
from __future__ import annotations

import numpy as np


def rotate_points(x, y, angle: float, centre):
    """Point(s) (x, y), px, turned by ``angle`` degrees about ``centre`` (x, y): the deskew of
    ``staves`` and its inverse (``-angle``). Returns (x, y) arrays."""
    t = np.deg2rad(angle)
    c, s = np.cos(t), np.sin(t)
    dx, dy = np.asarray(x, float) - centre[0], np.asarray(y, float) - centre[1]
    return centre[0] + c * dx - s * dy, centre[1] + s * dx + c * dy


def strip_to_page_x(column, offset: float, left: float, scale: float) -> np.ndarray:
    """Deskewed page x (px of the page as read) of strip column(s) of one system: the strip is
    the half-resolution unrolling of the page rescaled by ``scale``; the system starts at strip
    column ``offset`` and at column ``left`` of its (rescaled, half-resolution) page."""
    return (np.asarray(column, float) - offset + left) * 2.0 / scale
