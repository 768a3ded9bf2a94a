"""Decoding page images: PDF pages (pypdfium2) and image files (Pillow, every frame of a TIFF) into uint8 grayscale arrays at a resolution where the staff space can be measured, with clear one-line errors (PageError) for what cannot be read."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from audiosheet.frontend.ink import line_distance
from audiosheet.geometry import TARGET_STAFF_SPACE

PDF_DPI = 150.0  # a vector PDF page is first rendered at this resolution to measure its staff space


PDF_SPACE = TARGET_STAFF_SPACE  # px: staff space a vector PDF page is rendered at (the model's)


LOW_SPACE = 5.0  # pages with a smaller staff space are enlarged by an integer factor as they are read


MAX_PIXELS = 48e6  # px: a page is read reduced by an integer factor to at most this many pixels


MEASURE_PIXELS = 4e6  # px: the staff space of a larger page being read is measured on a copy this small


HARD_PIXELS = 600e6  # px: a larger image is refused (a 1,600 dpi A3 page is ~500 Mpx)


MIN_SIDE = 64  # px; smaller images are refused (one staff at staff space 3 is ~20 px tall)


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


def pdf_pages(path: Path, dpi: float | None) -> Iterator[np.ndarray]:
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
    d = line_distance(arr)
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


def image_pages(path: Path) -> Iterator[np.ndarray]:
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
    d = line_distance(view) * m
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
