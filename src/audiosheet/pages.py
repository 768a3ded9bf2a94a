"""Pages: sheet music from pixels alone — PDFs and scans → systems → strip → sheet snippets.

Pages are read as a person reads them (``iter_pages``): at the resolution of what is on them (a
scan at its own pixels, whatever size a PDF declares for it, reduced by an integer factor when its
staff space is large or it has too many pixels, enlarged when its staff space is tiny; a vector PDF
page rendered at the model's staff space) and upright (EXIF orientation, PDF /Rotate, and pages
turned by 90°, 180° or 270° found by the direction of their staff lines and the side of their
systems that carries braces and clefs).

No engraving metadata is needed: a page is deskewed, its staff lines and staff space are found by
run-length and projection-profile methods, staves are grouped into systems by the ink that joins
them at their left end (brace, system barline), and the systems are unrolled into one
half-resolution strip with the geometry of the training strips (``snippets``): each page is first
rescaled so that its staff space is ``TARGET_STAFF_SPACE`` px. ``unroll`` takes system boxes from
either source, detected here or stored by the corpus builder, so training and queries can share one
geometry.

Coordinates are continuous pixel coordinates of the page (pixel ``i`` covers ``[i, i + 1)``), as
in the engraver's system boxes. System boxes live in the *deskewed* page: the page rotated by
``-angle`` about its centre, which is the page itself when ``angle`` is 0; ``PageLayout.to_page``
maps such a point back to the scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from scipy import ndimage

from .geometry import rotate_points, strip_to_page_x
from .snippets import SHEET_H, SHEET_W, STRIP_HEIGHT, half_resolution

TARGET_STAFF_SPACE = 7.0  # px between staff lines at full strip resolution (3.5 in the strip)
PDF_DPI = 150.0  # a vector PDF page is first rendered at this resolution to measure its staff space
PDF_SPACE = TARGET_STAFF_SPACE  # px: staff space a vector PDF page is rendered at (the model's)
LOW_SPACE = 5.0  # pages with a smaller staff space are enlarged by an integer factor as they are read
MAX_PIXELS = 48e6  # px: a page is read reduced by an integer factor to at most this many pixels
MEASURE_PIXELS = 4e6  # px: the staff space of a larger page being read is measured on a copy this small
HARD_PIXELS = 600e6  # px: a larger image is refused (a 1,600 dpi A3 page is ~500 Mpx)
MIN_SIDE = 64  # px; smaller images are refused (one staff at staff space 3 is ~20 px tall)
MAX_ANGLE = 5.0  # degrees of skew searched
WORK_SPACE = 8.0  # analysis runs on a copy reduced by an integer factor to about this staff space


class PageError(ValueError):
    """A file that gives no usable page of music; the message is ``"{path}: {reason}"``."""

    def __init__(self, path, reason: str, page: int | None = None):
        self.path, self.reason, self.page = str(path), reason, page
        where = "" if page is None else f"page {page + 1}: "
        super().__init__(f"{path}: {where}{reason}")


class PageRotated(PageError):
    """A page that is not upright: ``turns`` quarter turns counterclockwise (``np.rot90``) would
    make it so, as far as ``analyse_page`` can tell (0 where it cannot tell which way)."""

    def __init__(self, path, reason: str, page: int | None = None, turns: int = 0):
        super().__init__(path, reason, page)
        self.turns = turns


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
    pages = _pdf_pages(path, dpi) if b"%PDF" in head else _image_pages(path)
    for i, page in enumerate(pages):
        if upright:
            try:
                page, lay = _upright(page, i, path)
                _remember(page, i, path, lay)
            except PageError as exc:
                _remember(page, i, path, exc)
        yield page


def load_pages(path: str | Path, dpi: float | None = None, upright: bool = True
               ) -> list[np.ndarray]:
    """All pages of a PDF or image file (see ``iter_pages``)."""
    return list(iter_pages(path, dpi, upright))


def _pdf_pages(path: Path, dpi: float | None) -> Iterator[np.ndarray]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        # PDFium's error code can be left over from an earlier document: look at the file itself
        data = path.read_bytes()
        if b"/Encrypt" in data:
            raise PageError(path, "encrypted PDF (password protected)") from None
        if b"/Count 0" in data and b"/Type/Page>" not in data.replace(b" ", b""):
            raise PageError(path, "PDF has no pages") from None
        raise PageError(path, f"unreadable PDF ({_one_line(exc).rstrip('.')})") from None
    try:
        if len(pdf) == 0:
            raise PageError(path, "PDF has no pages")
        for i in range(len(pdf)):
            try:
                page = pdf[i]
                try:
                    arr = _render_pdf_page(page, dpi)
                finally:
                    page.close()
            except pdfium.PdfiumError as exc:
                raise PageError(path, f"cannot be rendered ({_one_line(exc)})", i) from None
            yield _checked(path, arr, i, len(pdf))
    finally:
        pdf.close()


def _pdf_image_scale(page) -> float | None:
    """Pixels per point of the scanned image that a PDF page is (the largest image object, if it
    covers at least half the page; None for a vector page). Page objects from pypdfium2; a
    page's /Rotate does not change it."""
    import pypdfium2.raw as pdfium_c

    w, h = page.get_size()
    best, scale = 0.0, None
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3):
        try:
            pw, ph = obj.get_px_size()
            m = obj.get_matrix()
        except Exception:  # noqa: BLE001 -- an image pdfium cannot describe is not a scan
            continue
        ew, eh = float(np.hypot(m.a, m.b)), float(np.hypot(m.c, m.d))  # shown size, pt
        if pw <= 0 or ph <= 0 or ew <= 0 or eh <= 0 or ew * eh <= best:
            continue
        best, scale = ew * eh, max(pw / ew, ph / eh)
    return scale if scale is not None and best >= 0.5 * w * h else None


def _pdf_scan(page):
    """The image a PDF page consists of, as a Pillow "L" image turned by the page's /Rotate, if
    the page is one upright image over the whole page and nothing else (a wrapped scan, whatever
    its declared page size); else None. Decoded by pdfium, at its own pixel size (Pillow's
    decompression-bomb check does not apply: the size is checked against HARD_PIXELS)."""
    import pypdfium2.raw as pdfium_c
    from PIL import Image

    objs = list(page.get_objects(max_depth=1))
    if len(objs) != 1 or objs[0].type != pdfium_c.FPDF_PAGEOBJ_IMAGE:
        return None
    obj = objs[0]
    m = obj.get_matrix()
    left, bottom, right, top = page.get_cropbox()
    if abs(m.b) > 1e-6 or abs(m.c) > 1e-6 or m.a <= 0 or m.d <= 0:
        return None
    if (abs(m.e - left) > 1 or abs(m.f - bottom) > 1 or abs(m.e + m.a - right) > 1
            or abs(m.f + m.d - top) > 1):
        return None
    pw, ph = obj.get_px_size()
    if pw * ph > HARD_PIXELS:
        return None  # rendered within MAX_PIXELS instead
    bitmap = obj.get_bitmap(render=False)  # pdfium owns it (closing it explicitly crashes)
    im = _gray(bitmap.to_pil()).copy()  # not a view of pdfium's buffer
    del bitmap
    rot = page.get_rotation() % 360  # clockwise
    if rot:
        im = im.transpose({90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
                           270: Image.Transpose.ROTATE_90}[rot])
    return im


def _render(page, scale: float) -> np.ndarray:
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        arr = np.array(bitmap.to_numpy(), dtype=np.uint8, copy=True)
    finally:
        bitmap.close()
    return arr.reshape(arr.shape[:2])


def _render_pdf_page(page, dpi: float | None) -> np.ndarray:
    """A PDF page rendered by the resolution of what is on it (see ``iter_pages``)."""
    from PIL import Image

    w, h = page.get_size()  # pt, /Rotate applied
    budget = float(np.sqrt(MAX_PIXELS / max(w * h, 1e-9)))  # largest scale within MAX_PIXELS
    if dpi is not None:
        return _render(page, min(dpi / 72.0, budget))
    scan = _pdf_scan(page)
    if scan is not None:  # one image and nothing else: the image itself, sized as any image
        return _sized(scan)
    native = _pdf_image_scale(page)
    if native is not None:  # a scan: its own pixels, then sized as any image
        return _sized(Image.fromarray(_render(page, min(native, budget))))
    first = min(PDF_DPI / 72.0, budget)
    arr = _render(page, first)
    d = _line_distance(arr)
    if d <= 0:
        return arr
    return _render(page, min(first * PDF_SPACE / d, budget))


def _pillow_limit(limit: float | None = -1):
    """Pillow's decompression-bomb check lifted to HARD_PIXELS (or ``limit``; None: no check)
    while a file is opened or decoded (we size pages ourselves; larger images are refused by us
    with a clear message)."""
    import contextlib
    import warnings

    from PIL import Image

    @contextlib.contextmanager
    def lifted():
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = int(HARD_PIXELS) if limit == -1 else limit
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old

    return lifted()


def _too_large(path, w: int, h: int, index: int | None = None) -> PageError:
    return PageError(path, f"image too large ({w * h / 1e6:.0f} Mpx, {w} × {h} px); the limit is "
                           f"{HARD_PIXELS / 1e6:.0f} Mpx: scan at 600 dpi or less, or downsample it",
                     index)


def _image_pages(path: Path) -> Iterator[np.ndarray]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _pillow_limit():
            im = Image.open(path)
    except UnidentifiedImageError:
        raise PageError(path, "not an image or PDF") from None
    except Image.DecompressionBombError:
        try:  # its size only (the header): Pillow refused to open it at all
            with _pillow_limit(None), Image.open(path) as big:
                w, h = big.size
        except Exception:  # noqa: BLE001 -- then no size in the message
            w = h = 0
        raise (_too_large(path, w, h) if w else PageError(path, "image too large")) from None
    except (OSError, ValueError) as exc:
        raise PageError(path, f"unreadable image ({_one_line(exc)})") from None
    with im:
        n = getattr(im, "n_frames", 1)
        for i in range(n):
            try:
                with _pillow_limit():
                    im.seek(i)
                    if im.size[0] * im.size[1] > HARD_PIXELS:
                        raise _too_large(path, *im.size, i if n > 1 else None)
                    frame = im
                    if i == 0 and im.getexif().get(0x0112, 1) != 1:
                        frame = ImageOps.exif_transpose(im)
                    elif im.format == "JPEG" and im.size[0] * im.size[1] > MAX_PIXELS:
                        f = np.sqrt(im.size[0] * im.size[1] / MAX_PIXELS)
                        im.draft("L", (int(im.size[0] / f), int(im.size[1] / f)))
                    page = _sized(_gray(frame))
            except PageError:
                raise
            except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
                raise PageError(path, f"corrupt image ({_one_line(exc)})") from None
            yield _checked(path, page, i, n)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _gray(im):
    """Any Pillow mode → a Pillow "L" image, transparent areas as paper."""
    from PIL import Image

    if im.mode == "L":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = np.percentile(a, [0.1, 99.9])
        return Image.fromarray(np.clip((a - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert("L")


def _band_runs(bands: np.ndarray) -> tuple[float, float, float]:
    """(line distance, line thickness, strength) of the vertical runs of a stack of gray columns
    (h, n): ``_vertical_runs`` of their ink, and the staff-line steps found per column."""
    sample = bands[::3]
    paper, ink = float(np.median(sample)), float(np.percentile(sample, 0.1))
    if paper - ink < 40:
        return 0.0, 0.0, 0.0
    mask = bands < paper - 0.12 * (paper - ink)
    d, t, count = _vertical_runs(mask, with_count=True)
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


def _line_distance(page) -> float:
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


def _sized(im) -> np.ndarray:
    """A Pillow "L" page at the resolution of what is on it (see ``iter_pages``), as an array.

    The staff space is measured as ``analyse_page`` measures it (vertical runs in 4-column bands)
    on the page itself, or on a copy reduced by an integer factor ``m`` to at most MEASURE_PIXELS
    when it is larger than MAX_PIXELS (good to about ``m`` px, all that choosing the factor
    needs). A page whose staff space is at least 2 × WORK_SPACE is then reduced by the factor
    ``analyse_page`` would reduce it by (so its staves are found at the same resolution as
    before pages were reduced as they were read)."""
    from PIL import Image

    w, h = im.size
    m = max(1, int(np.ceil(np.sqrt(w * h / MEASURE_PIXELS) - 1e-9))) if w * h > MAX_PIXELS else 1
    view = im.reduce(m) if m > 1 else im
    d = _line_distance(view) * m
    f = max(1, int(d // WORK_SPACE)) if d >= 2 * WORK_SPACE else 1
    f = max(f, int(np.ceil(np.sqrt(w * h / MAX_PIXELS) - 1e-9)))
    if f > 1:
        im = view if f == m else im.reduce(f)
    elif 0 < d < LOW_SPACE:
        up = int(np.ceil(LOW_SPACE / d))
        if w * h * up * up <= MAX_PIXELS:
            im = im.resize((w * up, h * up), Image.Resampling.NEAREST)  # lines stay lines
    return np.asarray(im)


def _checked(path, page: np.ndarray, index: int, n: int) -> np.ndarray:
    if min(page.shape) < MIN_SIDE:
        raise PageError(path, f"image too small ({page.shape[1]} × {page.shape[0]} px, need at "
                              f"least {MIN_SIDE} on each side)", index if n > 1 else None)
    if np.median(page[::4, ::4]) < 100:  # white ink on black
        page = 255 - page
    return page


# ----------------------------------------------------------------------------------------------
# page analysis


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


def _vertical_runs(ink: np.ndarray, with_count: bool = False):
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


def _levels(page: np.ndarray) -> tuple[float, float]:
    """(paper, ink) gray levels of a page: its median and its darkest thousandth."""
    sample = page[::2, ::2]
    return float(np.median(sample)), float(np.percentile(sample, 0.1))


def _darkness(page: np.ndarray, paper: float, ink: float, k: int) -> tuple[np.ndarray, float]:
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
    (``_upright`` turned a sideways page): ``PageRotated`` unless it is clearly upright, with
    ``turns`` 2 if it is clearly upside down and 0 if that cannot be told; "off" — no check.

    Raises ``PageError`` for a blank page or one without staves (naming ``path`` and, if given,
    the page ``index``).
    """
    h, w = page.shape
    paper, ink = _levels(page)
    if paper - ink < 40:
        raise PageError(path, "blank page", index)
    # line distance from vertical runs in a few hundred 4-column bands at full resolution
    at = np.linspace(w * 0.1, w * 0.9 - 4, min(300, w // 4)).astype(int)
    bands = page[:, at[:, None] + np.arange(4)].mean(axis=2, dtype=np.float32)
    d_full, t_full, steps = _vertical_runs(bands < paper - 0.12 * (paper - ink), with_count=True)
    # blurred dark lines close to each other (a staff space of 6 px printed and scanned) merge at
    # that low threshold and whole staves read as one run: where a higher one finds far more
    # steps at one distance, the staff lines are those
    d_hi, t_hi, steps_hi = _vertical_runs(bands < paper - 0.4 * (paper - ink), with_count=True)
    if steps_hi > 2 * steps:
        d_full, t_full, steps = d_hi, t_hi, steps_hi
    if orient == "check" and _sideways(page, paper, ink, steps / max(len(at), 1)):
        raise PageRotated(path, "page appears rotated (staff lines run up and down); turn it "
                                "upright and try again", index, turns=1)
    if d_full < 3:
        raise PageError(path, "no staves found (not sheet music?)", index)
    k = max(1, int(d_full // WORK_SPACE))
    d = d_full / k
    skewed, noise = _darkness(page, paper, ink, k)
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
SURE_STEPS = 8.0  # staff-line steps per 4-column band that leave no doubt the lines run across
#                   (150 real scans as read: at least 22.7 upright, at most 3.0 turned by 90°)


def _bilevel(page: np.ndarray) -> bool:
    """Is the page black and white only (a bilevel scan, perhaps reduced by up to 4 × 4 blocks
    as it was read, which leaves at most 17 grey levels)?"""
    return len(np.unique(page[::7, ::7])) <= 17


def _sideways(page: np.ndarray, paper: float, ink: float, col_steps: float) -> bool:
    """Do the page's staff lines run up and down? Staff-line steps (``_vertical_runs``) per band
    across a few hundred 4-row bands against those per 4-column band (``col_steps``)."""
    h, w = page.shape
    at = np.linspace(h * 0.1, h * 0.9 - 4, min(300, h // 4)).astype(int)
    bands = page[at[:, None] + np.arange(4), :].mean(axis=1, dtype=np.float32).T
    _, _, steps = _vertical_runs(bands < paper - 0.12 * (paper - ink), with_count=True)
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


def _upright(page: np.ndarray, index: int | None = None, path: str | Path = "page"
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


def _remember(page: np.ndarray, index: int, path, found) -> None:
    import weakref

    key = id(page)
    _FOUND[key] = (weakref.ref(page, lambda _, k=key: _FOUND.pop(k, None)), index, str(path), found)
    while len(_FOUND) > 8:
        _FOUND.pop(next(iter(_FOUND)), None)


def _recall(page: np.ndarray, index: int, path):
    e = _FOUND.get(id(page))
    if e is None or e[0]() is not page or e[1] != index or e[2] != str(path):
        return None
    _FOUND.pop(id(page), None)
    return e[3]


# ----------------------------------------------------------------------------------------------
# the strip


@dataclass
class Strip:
    """Systems unrolled into one half-resolution strip (``snippets`` geometry) and the way back.

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
#                 can estimate up to ~25); lighter ink is stretched to 0


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


# ----------------------------------------------------------------------------------------------
# snippets


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


def sheet_snippets(strip: Strip, hop: int = 10) -> tuple[np.ndarray, SnippetLocations]:
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


# ----------------------------------------------------------------------------------------------
# one call


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


def read_systems(pages: Iterable[np.ndarray], path: str | Path = "page"
                 ) -> tuple[list[PageLayout], list[tuple[int, str]], Strip]:
    """Analyse pages and unroll every system found into one strip — the geometry shared by
    queries (``ingest_sheet``) and the corpus's training strips (``corpus_strip``).

    A page turned by quarter turns is turned upright first (``PageLayout.turns``; the layout,
    the strip's ``sizes`` and all page coordinates are those of the upright page); pages that
    come from ``iter_pages`` are not analysed twice.

    Returns (layouts of the pages with staves, (page, reason) of pages skipped, strip);
    ``PageError`` if no page has staves.
    """
    layouts, skipped, halves, scales, angles, sizes = [], [], [], [], [], []
    for i, page in enumerate(pages):
        try:
            lay = _recall(page, i, path)  # iter_pages has looked at it already
            if isinstance(lay, PageError):
                raise lay
            if lay is None:
                page, lay = _upright(page, i, path)
        except PageError as exc:
            sizes.append((page.shape[1], page.shape[0]))
            skipped.append((i, exc.reason))
            halves.append(None)
            scales.append(1.0)
            angles.append(0.0)
            continue
        sizes.append((page.shape[1], page.shape[0]))
        layouts.append(lay)
        half, s = normalise_page(page, lay.staff_space, lay.angle)
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


def ingest_sheet(path: str | Path, hop: int = 10, dpi: float | None = None) -> SheetIngest:
    """Read a PDF or scan (``iter_pages``: by the resolution of what is on its pages, upright;
    ``dpi`` forces a PDF rendering resolution), find its systems, unroll them and cut sheet
    snippets.

    Pages without staves (title pages, blank pages) are skipped and listed in ``skipped``;
    ``PageError`` if no page has any. Page numbers everywhere are those of the file (from 0).
    """
    layouts, skipped, strip = read_systems(iter_pages(path, dpi), path)
    snippets, locations = sheet_snippets(strip, hop)
    return SheetIngest(str(path), len(strip.sizes), layouts, skipped, strip, snippets, locations)
