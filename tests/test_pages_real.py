"""Pages read as a person reads them (issue 14): PDF pages by the resolution of what is on them
(a scan wrapped at 1 dpi, /Rotate), images of any size (a one-system crop, a 1,600 dpi scan), pages
turned by 90°, 180° and 270°, and the errors that tell the user what to do."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from audiosheet.frontend import images as P
from audiosheet.frontend.images import PageError
from audiosheet.frontend.pages import load_pages
from audiosheet.frontend.staves import analyse_page
from audiosheet.frontend.strip import ingest_sheet
from audiosheet.geometry import STRIP_HEIGHT

SPACE = 8  # px between staff lines of the drawn page
LEFT, RIGHT = 70, 770  # staff lines cover columns [LEFT, RIGHT)
LAYOUT = (2, 2, 1, 2, 2)  # staves per system


def draw_systems(layout=LAYOUT, space=SPACE, size=(827, 1169), left=LEFT, right=RIGHT, top=80,
                 seed=0):
    """A page of music drawn with Pillow as engravers set it: staves of 1-px lines, a brace and a
    system barline at the left of every system, a clef-like blot at the start of every staff,
    noteheads with stems, barlines, a final barline. Returns the page (uint8, paper 255) and the
    true (x0, x1, y0, y1) of every system (continuous coordinates: row r is centred at r + 0.5)."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", size, 255)
    d = ImageDraw.Draw(im)
    y, truth = top, []
    for n in layout:
        tops = [y + i * 10 * space for i in range(n)]  # 6 spaces between the staves
        for t in tops:
            for k in range(5):
                d.line([(left, t + k * space), (right - 1, t + k * space)], fill=0)
            # a clef: a tall blot over the first three spaces, sticking out above and below
            d.ellipse([left + space // 2, t - space, left + 3 * space, t + 5 * space], fill=0)
            d.ellipse([left + space, t + space // 2, left + 2 * space + 2, t + 3 * space], fill=255)
            for x in rng.integers(left + 6 * space, right - 2 * space, 25):
                yy = t + int(rng.integers(-1, 9)) * space // 2
                d.ellipse([x - space // 2 - 1, yy - space // 2, x + space // 2 + 1, yy + space // 2],
                          fill=0)
                d.line([(x + space // 2 + 1, yy - 3 * space), (x + space // 2 + 1, yy)], fill=0)
        bottom = tops[-1] + 4 * space
        for x in (left, (2 * left + right) // 3, (left + 2 * right) // 3, right - 1):
            d.line([(x, tops[0]), (x, bottom)], fill=0)  # barlines through the whole system
        d.rectangle([right - 1 - space // 2, tops[0], right - 1, bottom], fill=0)  # final bar
        if n > 1:  # a brace: "{", its tip half-way down, its arms thickest half-way along
            for yy in range(tops[0], bottom + 1):
                u = abs(2 * (yy - tops[0]) / (bottom - tops[0]) - 1)  # 0 at the tip, 1 at the ends
                xc = left - 0.7 * space - 0.9 * space * (1 - u) ** 3
                half = 0.1 * space + 0.25 * space * np.sin(np.pi * u)
                d.line([(round(xc - half), yy), (round(xc + half), yy)], fill=0)
        truth.append((left, right, tops[0] + 0.5, bottom + 0.5))
        y = bottom + 10 * space
    return np.asarray(im), truth


def iou(a, b):
    w = min(a[1], b[1]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[2], b[2])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)


def boxes(lay, scale=1.0):
    return [(s.x0 * scale, s.x1 * scale, s.y0 * scale, s.y1 * scale) for s in lay.systems]


def ingest_file(tmp_path, arr, name="page.png", **save):
    path = tmp_path / name
    Image.fromarray(arr).save(path, **save)
    return path, ingest_sheet(path)


def assert_systems(lay, truth, layout=LAYOUT, scale=1.0):
    assert [len(s.staves) for s in lay.systems] == list(layout)
    assert all(iou(b, t) > 0.9 for b, t in zip(boxes(lay, scale), truth))


# ----------------------------------------------------------------------------------------------
# PDF pages by the resolution of what is on them


def test_scan_wrapped_at_1_dpi_is_read_at_its_own_pixels(tmp_path):
    """A bilevel scan in a PDF at 1 dpi declares a page of 827 × 1169 inches (used to be rendered
    at 150 dpi from the MediaBox: a MemoryError); it is read as the image it is."""
    page, truth = draw_systems()
    bw = Image.fromarray(page).convert("1")
    pdf = tmp_path / "wrapped.pdf"
    bw.save(pdf, resolution=1.0)
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    assert doc[0].get_size() == pytest.approx((827 * 72, 1169 * 72), rel=1e-3)
    doc.close()
    pages = load_pages(pdf)
    assert len(pages) == 1
    np.testing.assert_array_equal(pages[0], page)  # the scan's own pixels, bit for bit
    png, as_png = ingest_file(tmp_path, page)
    ing = ingest_sheet(pdf)
    assert_systems(ing.layouts[0], truth)
    np.testing.assert_array_equal(ing.strip.image, as_png.strip.image)


def _pdf_with_image(path, arr, dpi, margin_pt, rotate=0):
    """A one-page PDF (pypdfium2) with ``arr`` shown at ``dpi`` inside a margin, so the page is
    more than its image and is rendered, not extracted."""
    import pypdfium2 as pdfium

    h, w = arr.shape
    doc = pdfium.PdfDocument.new()
    iw, ih = w * 72.0 / dpi, h * 72.0 / dpi
    pg = doc.new_page(iw + 2 * margin_pt, ih + 2 * margin_pt)
    img = pdfium.PdfImage.new(doc)
    img.set_bitmap(pdfium.PdfBitmap.from_pil(Image.fromarray(arr).convert("RGB")))
    img.set_matrix(pdfium.PdfMatrix().scale(iw, ih).translate(margin_pt, margin_pt))
    pg.insert_obj(img)
    pg.gen_content()
    if rotate:
        pg.set_rotation(rotate)
    doc.save(str(path))
    doc.close()
    return path


def test_image_inside_a_huge_page_is_rendered_at_the_images_resolution(tmp_path):
    page, truth = draw_systems()
    pdf = _pdf_with_image(tmp_path / "framed.pdf", page, dpi=1.0, margin_pt=72 * 20)  # 20 px
    pages = load_pages(pdf)
    # 1 px per pixel of the image, margin too (pdfium rounds the page size)
    assert abs(pages[0].shape[0] - (1169 + 40)) <= 1 and abs(pages[0].shape[1] - (827 + 40)) <= 1
    ing = ingest_sheet(pdf)
    lay = ing.layouts[0]
    assert [len(s.staves) for s in lay.systems] == list(LAYOUT)
    shifted = [(x0 + 20, x1 + 20, y0 + 20, y1 + 20) for x0, x1, y0, y1 in truth]
    assert all(iou(b, t) > 0.9 for b, t in zip(boxes(lay), shifted))
    assert abs(lay.staff_space / SPACE - 1) < 0.05


def test_pdf_rotate_is_applied(tmp_path):
    """A page scanned sideways and set upright for viewing by /Rotate 90 reads upright, and as the
    same page when its image is not alone on the page (pdfium renders /Rotate)."""
    page, truth = draw_systems()
    sideways = np.ascontiguousarray(np.rot90(page, 1))  # counterclockwise; /Rotate 90 is clockwise
    pdf = tmp_path / "rotate.pdf"
    Image.fromarray(sideways).convert("1").save(pdf, resolution=100.0)
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    doc[0].set_rotation(90)
    doc.save(str(tmp_path / "rotated.pdf"))
    doc.close()
    np.testing.assert_array_equal(load_pages(tmp_path / "rotated.pdf")[0], page)
    ing = ingest_sheet(tmp_path / "rotated.pdf")
    assert ing.layouts[0].turns == 0
    assert_systems(ing.layouts[0], truth)
    framed = _pdf_with_image(tmp_path / "framed.pdf", sideways, dpi=100.0, margin_pt=0.72 * 10,
                             rotate=90)
    lay = ingest_sheet(framed).layouts[0]
    assert abs(lay.width - (827 + 20)) <= 1 and abs(lay.height - (1169 + 20)) <= 1  # pdfium rounds
    assert lay.turns == 0
    assert [len(s.staves) for s in lay.systems] == list(LAYOUT)


# ----------------------------------------------------------------------------------------------
# images of any size


@pytest.mark.parametrize("space, size, left, right, top", [
    (7, (876, 161), 30, 860, 35),  # one grand staff cropped from a 100 dpi page
    (3, (440, 100), 16, 430, 30),  # the smallest: staff space 3 px (read enlarged 2 ×)
])
def test_one_system_crop(tmp_path, space, size, left, right, top):
    page, truth = draw_systems((2,), space, size, left, right, top)
    path, ing = ingest_file(tmp_path, page)
    lay = ing.layouts[0]
    up = 1 if space >= P.LOW_SPACE else 2
    assert (lay.width, lay.height) == (size[0] * up, size[1] * up)
    assert_systems(lay, truth, (2,), scale=1 / up)
    assert abs(lay.staff_space / (space * up) - 1) < 0.05
    assert ing.strip.image.shape[0] == STRIP_HEIGHT and len(ing.snippets) > 20


def test_1600_dpi_scan_is_read_reduced_without_warnings(tmp_path):
    """A bilevel page at 14 × the drawn resolution (189 Mpx, like 1,600 dpi: more than twice
    Pillow's decompression-bomb limit) is read reduced to a staff space in [8, 16) px, quietly."""
    page, truth = draw_systems()
    big = np.repeat(np.repeat(page > 127, 14, axis=0), 14, axis=1)
    path = tmp_path / "huge.tif"
    Image.fromarray(big).save(path, compression="group4")
    del big
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pages = load_pages(path)
        ing = ingest_sheet(path)
    # staff space 112 px: reduced 14 × (to 8 px, where staves are found), which is the drawn page
    np.testing.assert_array_equal(pages[0], page)
    _, drawn = ingest_file(tmp_path, page)
    np.testing.assert_array_equal(ing.strip.image, drawn.strip.image)
    assert_systems(ing.layouts[0], truth)


def test_image_beyond_the_hard_limit_is_refused(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setattr(P, "HARD_PIXELS", 1e6)
    limit = PILImage.MAX_IMAGE_PIXELS
    for w, h in ((1200, 1000), (1500, 2000)):  # over the limit, and over twice it (Pillow refuses)
        path = tmp_path / f"big{w}.png"
        PILImage.new("L", (w, h), 255).save(path)
        with pytest.raises(PageError) as err:
            ingest_sheet(path)
        assert str(err.value) == (f"{path}: image too large ({w * h / 1e6:.0f} Mpx, {w} × {h} px); "
                                  f"the limit is 1 Mpx: scan at 600 dpi or less, or downsample it")
    assert PILImage.MAX_IMAGE_PIXELS == limit  # Pillow's own limit is left as it was


# ----------------------------------------------------------------------------------------------
# orientation


@pytest.mark.parametrize("k", [1, 2, 3])
def test_turned_page_is_read_upright(tmp_path, k):
    page, truth = draw_systems()
    _, upright = ingest_file(tmp_path, page, "upright.png")
    path, ing = ingest_file(tmp_path, np.ascontiguousarray(np.rot90(page, k)), "turned.png")
    assert ing.layouts[0].turns == 4 - k
    assert_systems(ing.layouts[0], truth)
    np.testing.assert_array_equal(ing.strip.image, upright.strip.image)
    np.testing.assert_array_equal(load_pages(path)[0], page)


def test_page_that_cannot_be_placed_says_it_seems_rotated(tmp_path):
    """Bare staves, the same at both ends: upright they are read as they are; turned by 90° it
    cannot be told which way up they go — an error, not a guess."""
    page, truth = draw_systems()
    bare = np.full_like(page, 255)
    for x0, x1, y0, y1 in truth:
        for top in np.arange(y0 - 0.5, y1, 10 * SPACE).astype(int):
            bare[top:top + 4 * SPACE + 1:SPACE, x0:x1] = 0
        bare[int(y0):int(y1) + 1, [x0, x1 - 1]] = 0
    lay = analyse_page(bare)
    assert lay.turns == 0 and [len(s.staves) for s in lay.systems] == list(LAYOUT)
    path = tmp_path / "bare.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(bare))).save(path)
    with pytest.raises(PageError) as err:
        ingest_sheet(path)
    assert str(err.value) == (f"{path}: page appears rotated (staff lines run up and down); turn it "
                              "upright and try again")


def test_exif_orientation_is_honoured(tmp_path):
    page, truth = draw_systems()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned counterclockwise: show it turned 90° clockwise
    path = tmp_path / "exif.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(page, 1))).save(path, exif=exif)
    np.testing.assert_array_equal(load_pages(path)[0], page)
    ing = ingest_sheet(path)
    assert ing.layouts[0].turns == 0
    assert_systems(ing.layouts[0], truth)


def test_two_page_spread_is_read_upright(tmp_path):
    left, truth = draw_systems(seed=1)
    right, _ = draw_systems(seed=2)
    spread = np.concatenate([left, right], axis=1)
    path, ing = ingest_file(tmp_path, spread)
    lay = ing.layouts[0]
    assert lay.turns == 0
    assert len(lay.systems) == len(analyse_page(spread, orient="off").systems) >= len(LAYOUT)
    turned, ing = ingest_file(tmp_path, np.ascontiguousarray(np.rot90(spread, 2)), "turned.png")
    assert ing.layouts[0].turns == 2 and len(ing.layouts[0].systems) == len(lay.systems)


# ----------------------------------------------------------------------------------------------
# errors that say what to do


def broken_lines(drop=0.85, seed=0):
    """The drawn page as a bilevel scan that lost most of its staff lines: 4-px pieces of every
    staff line dropped with probability ``drop``."""
    page, truth = draw_systems()
    lines = np.zeros(page.shape, bool)
    for (x0, x1, y0, y1), n in zip(truth, LAYOUT):
        for i in range(n):
            for k in range(5):
                lines[int(y0) + i * 10 * SPACE + k * SPACE, x0:x1] = True
    rng = np.random.default_rng(seed)
    keep = np.repeat(rng.random((page.shape[0], page.shape[1] // 4 + 1)) >= drop, 4, axis=1)
    out = page.copy()
    out[lines & ~keep[:, :page.shape[1]]] = 255
    return out


def test_broken_staff_lines_of_a_bilevel_scan_are_named(tmp_path):
    path = tmp_path / "bilevel.png"
    Image.fromarray(broken_lines()).convert("1").save(path)
    with pytest.raises(PageError) as err:
        ingest_sheet(path)
    assert str(err.value) == (f"{path}: staff lines too faint or broken (bilevel scan?); scan it in "
                              "grayscale, or at a higher resolution")
    tif = tmp_path / "two.tif"
    a, b = (Image.fromarray(broken_lines(seed=s)).convert("1") for s in (1, 2))
    a.save(tif, save_all=True, append_images=[b], compression="group4")
    with pytest.raises(PageError) as err:
        ingest_sheet(tif)
    assert str(err.value) == (f"{tif}: no staves found on any of its 2 pages; pages 1, 2: staff "
                              "lines too faint or broken (bilevel scan?); scan it in grayscale, "
                              "or at a higher resolution")


def vector_pdf(path, unit=1.0, space_pt=7.0, layout=(2, 2, 2), size=(595, 842)):
    """A one-page vector PDF (pypdfium2's raw PDFium calls): staves of stroked lines, barlines and
    a bracket per system, all ``unit`` × larger (page size too). Returns the true (x0, x1, y0, y1)
    of every system in points from the page's top left."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    doc = pdfium.PdfDocument.new()
    w, h = size[0] * unit, size[1] * unit
    page = doc.new_page(w, h)
    sp = space_pt * unit

    def line(x0, y0, x1, y1, width):
        obj = pdfium_c.FPDFPageObj_CreateNewPath(x0, y0)
        pdfium_c.FPDFPath_LineTo(obj, x1, y1)
        pdfium_c.FPDFPageObj_SetStrokeColor(obj, 0, 0, 0, 255)
        pdfium_c.FPDFPageObj_SetStrokeWidth(obj, ctypes.c_float(width))
        pdfium_c.FPDFPath_SetDrawMode(obj, pdfium_c.FPDF_FILLMODE_NONE, True)
        pdfium_c.FPDFPage_InsertObject(page.raw, obj)

    y, truth = h - 80 * unit, []
    left, right = 60 * unit, w - 40 * unit
    for n in layout:
        tops = [y - i * 10 * sp for i in range(n)]
        for t in tops:
            for k in range(5):
                line(left, t - k * sp, right, t - k * sp, 0.12 * sp)
        bottom = tops[-1] - 4 * sp
        for x in (left, (left + right) / 2, right):
            line(x, tops[0], x, bottom, 0.15 * sp)
        line(left - 8 * unit, tops[0], left - 8 * unit, bottom, 0.6 * sp)  # a bracket
        truth.append((left, right, h - tops[0], h - bottom))
        y = bottom - 8 * sp
    pdfium_c.FPDFPage_GenerateContent(page.raw)
    doc.save(str(path))
    doc.close()
    return truth


@pytest.mark.parametrize("unit", [1.0, 100.0])  # an A4 page, and one with an absurd MediaBox
def test_vector_pdf_page_is_rendered_at_the_models_staff_space(tmp_path, unit):
    pdf = tmp_path / "vector.pdf"
    truth = vector_pdf(pdf, unit)
    ing = ingest_sheet(pdf)
    lay = ing.layouts[0]
    assert abs(lay.staff_space / P.PDF_SPACE - 1) < 0.05
    px = lay.staff_space / (7.0 * unit)  # px per point, as rendered
    assert abs(lay.width - 595 * unit * px) <= 2 and abs(lay.height - 842 * unit * px) <= 2
    assert [len(s.staves) for s in lay.systems] == [2, 2, 2]
    assert all(iou(b, t) > 0.9 for b, t in zip(boxes(lay, 1 / px), truth))
    if unit == 1.0:  # a resolution asked for is kept
        h, w = load_pages(pdf, dpi=150)[0].shape
        assert abs(h - 842 * 150 / 72) <= 1 and abs(w - 595 * 150 / 72) <= 1  # pdfium rounds up


def test_page_cropped_close_is_read_with_an_orientation_warning(tmp_path):
    """No room beside the systems for the upside-down check: read, but never silently."""
    _, normal = ingest_file(tmp_path, draw_systems()[0], "normal.png")
    assert normal.layouts[0].orientation_checked and normal.warnings == []
    page, truth = draw_systems(left=12, right=815)  # staff lines 12 px from the edges
    for k, name in ((0, "close.png"), (2, "close-turned.png")):
        _, ing = ingest_file(tmp_path, np.ascontiguousarray(np.rot90(page, k)), name)
        assert not ing.layouts[0].orientation_checked
        assert ing.warnings == ["page 1: orientation not verified (little margin beside the "
                                "systems, or weak evidence); if the answer looks wrong, make sure "
                                "the page is upright"]
