"""Pages: sheet music from pixels alone — PDFs and scans → systems → strip → sheet snippets.

The sheet front end, in the order a page goes through it: ``images`` decodes PDF pages and image
files, ``ink`` measures ink runs and staff-line distances, ``staves`` finds skew, staves and systems
(``analyse_page``), this module reads the pages of a file upright (``iter_pages``), and ``strip``
unrolls the systems into the strip and cuts snippets (``ingest_sheet``).

Pages are read as a person reads them (``iter_pages``): at the resolution of what is on them (a
scan at its own pixels, whatever size a PDF declares for it, reduced by an integer factor when its
staff space is large or it has too many pixels, enlarged when its staff space is tiny; a vector PDF
page rendered at the model's staff space) and upright (EXIF orientation, PDF /Rotate, and pages
turned by 90°, 180° or 270° found by the direction of their staff lines and the side of their
systems that carries braces and clefs).

No engraving metadata is needed: a page is deskewed, its staff lines and staff space are found by
run-length and projection-profile methods, staves are grouped into systems by the ink that joins
them at their left end (brace, system barline), and the systems are unrolled into one
half-resolution strip with the geometry of the training strips: each page is first rescaled so
that its staff space is the model's (``geometry.TARGET_STAFF_SPACE`` px unless its front end says
otherwise). ``unroll`` takes system boxes from
either source, detected here or stored by the corpus builder, so training and queries can share one
geometry.

Coordinates are continuous pixel coordinates of the page (pixel ``i`` covers ``[i, i + 1)``), as
in the engraver's system boxes. System boxes live in the *deskewed* page: the page rotated by
``-angle`` about its centre, which is the page itself when ``angle`` is 0; ``PageLayout.to_page``
maps such a point back to the scan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from audiosheet.frontend.images import PageError, PageRotated, image_pages, pdf_pages
from audiosheet.frontend.staves import PageLayout, analyse_page

# ----------------------------------------------------------------------------------------------
# loading


def iter_pages(path: str | Path, dpi: float | None = None, upright: bool = True
               ) -> Iterator[np.ndarray]:
    """Pages of a PDF or image file (every frame of a multi-page TIFF) one at a time, as uint8
    grayscale arrays with paper = 255 and ink = 0, read as a person reads them:

    - at the resolution of what is on them: an image (or a PDF page that is one scanned image,
      whatever its declared page size) at its own pixel size, reduced by an integer factor where
      its staff space is at least 2 × WORK_SPACE px (to a staff space in [WORK_SPACE, 2 WORK_SPACE):
      the resolution the staves are found at) or it has more than MAX_PIXELS px, enlarged by
      an integer factor where its staff space is under LOW_SPACE px; a vector PDF page rendered
      so that its staff space is PDF_SPACE px (measured on a first rendering at PDF_DPI), or at
      ``dpi`` when given (within MAX_PIXELS);
    - upright (``upright``): the EXIF orientation and a PDF page's /Rotate are applied, and a page
      turned by 90°, 180° or 270° is turned back (``analyse_page`` tells; a page it cannot
      place is yielded as it is, and ``read_systems`` gives the reason it skips it).

    Raises ``PageError`` for a file that cannot be read, including an image of more than
    HARD_PIXELS px ("image too large").
    """
    path = Path(path)
    if not path.is_file():
        raise PageError(path, "no such file" if not path.exists() else "not a file")
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise PageError(path, "empty file")
    pages = pdf_pages(path, dpi) if b"%PDF" in head else image_pages(path)
    for i, page in enumerate(pages):
        if upright:
            try:
                page, lay = upright_page(page, i, path)
                remember_layout(page, i, path, lay)
            except PageError as exc:
                remember_layout(page, i, path, exc)
        yield page


def load_pages(path: str | Path, dpi: float | None = None, upright: bool = True
               ) -> list[np.ndarray]:
    """All pages of a PDF or image file (see ``iter_pages``)."""
    return list(iter_pages(path, dpi, upright))


# ----------------------------------------------------------------------------------------------
# page analysis


#                   (150 real scans as read: at least 22.7 upright, at most 3.0 turned by 90°)


def upright_page(page: np.ndarray, index: int | None = None, path: str | Path = "page"
             ) -> tuple[np.ndarray, PageLayout]:
    """A page turned upright by quarter turns, and its layout (``analyse_page``); ``turns`` of
    the layout says how it was turned. ``PageError`` as ``analyse_page``, and ``PageRotated``
    for a page turned by 90° or 270° that cannot be told from the other."""
    try:
        return page, analyse_page(page, index, path)
    except PageRotated as exc:
        if exc.turns not in (1, 2):  # rotated, but which way is not clear
            raise
        turns = exc.turns
    if turns == 1:  # staff lines up and down: turned by 90° or 270°
        side = np.ascontiguousarray(np.rot90(page, 1))
        try:
            lay = analyse_page(side, index, path, orient="either")
            lay.turns = 1
            return side, lay
        except PageRotated as exc:
            if exc.turns != 2:
                raise
        turns = 3
    turned = np.ascontiguousarray(np.rot90(page, turns))
    lay = analyse_page(turned, index, path, orient="off")
    lay.turns = turns
    return turned, lay


# what iter_pages found while turning its pages upright, for read_systems: id(page) → (weak
# reference to the page, index, path, layout or PageError); a few entries at most
_FOUND: dict[int, tuple] = {}


def remember_layout(page: np.ndarray, index: int, path, found) -> None:
    import weakref

    key = id(page)
    _FOUND[key] = (weakref.ref(page, lambda _, k=key: _FOUND.pop(k, None)), index, str(path), found)
    while len(_FOUND) > 8:
        _FOUND.pop(next(iter(_FOUND)), None)


def recall_layout(page: np.ndarray, index: int, path):
    e = _FOUND.get(id(page))
    if e is None or e[0]() is not page or e[1] != index or e[2] != str(path):
        return None
    _FOUND.pop(id(page), None)
    return e[3]


# ----------------------------------------------------------------------------------------------
# the strip


#                 can estimate up to ~25); lighter ink is stretched to 0


# ----------------------------------------------------------------------------------------------
# snippets


# ----------------------------------------------------------------------------------------------
# one call

