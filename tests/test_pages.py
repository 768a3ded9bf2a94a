"""Pages from pixels: staves, staff space and systems on drawn and engraved pages, skew, the strip
geometry and its mapping, sheet snippets, file loading and every refused file."""
from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
from PIL import Image

from audiosheet.corpus.degrade import ScanStyle, apply, scan
from audiosheet.corpus.reader import Corpus
from audiosheet.frontend.images import PageError
from audiosheet.frontend.pages import load_pages
from audiosheet.frontend.staves import analyse_page
from audiosheet.frontend.strip import ingest_sheet, normalise_levels, sheet_snippets, unroll
from audiosheet.geometry import SHEET_H, SHEET_W, STRIP_HEIGHT, TARGET_STAFF_SPACE

SPACE = 8  # px between staff lines of the drawn page
LEFT, RIGHT = 60, 770  # staff lines cover columns [LEFT, RIGHT)
LAYOUT = (2, 2, 1, 3, 2)  # staves per system


def draw_page(layout=LAYOUT, seed=0):
    """A page of staves drawn with numpy: 1-px lines, noteheads with stems, barlines through each
    system, a brace left of every system of more than one staff. Returns the page and the true
    (x0, x1, y0, y1) of every system (continuous coordinates: row r is centred at r + 0.5)."""
    rng = np.random.default_rng(seed)
    page = np.full((1169, 827), 255, np.uint8)
    y, truth = 80, []
    for n in layout:
        tops = [y + i * 10 * SPACE for i in range(n)]  # 6 spaces between the staves
        for top in tops:
            page[top:top + 4 * SPACE + 1:SPACE, LEFT:RIGHT] = 0
            for x in rng.integers(LEFT + 50, RIGHT - 10, 30):
                yy = top + int(rng.integers(-2, 11)) * SPACE // 2
                page[yy - 3:yy + 4, x - 4:x + 5] = 0
                page[yy - 3 * SPACE:yy, x + 4] = 0
        bottom = tops[-1] + 4 * SPACE
        for x in (LEFT, 300, 540, RIGHT - 1):  # barlines through the whole system
            page[tops[0]:bottom + 1, x] = 0
        if n > 1:
            page[tops[0]:bottom + 1, LEFT - 12:LEFT - 8] = 0
        truth.append((LEFT, RIGHT, tops[0] + 0.5, bottom + 0.5))
        y = bottom + 10 * SPACE
    return page, truth


def iou(a, b):
    w = min(a[1], b[1]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[2], b[2])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)


def box(s):
    return s.x0, s.x1, s.y0, s.y1


def test_drawn_page_staves_systems_and_staff_space():
    page, truth = draw_page()
    lay = analyse_page(page)
    assert len(lay.staves) == sum(LAYOUT)
    assert [len(s.staves) for s in lay.systems] == list(LAYOUT)
    assert abs(lay.staff_space / SPACE - 1) < 0.05
    assert abs(lay.angle) < 0.05
    for s, t in zip(lay.systems, truth):
        assert abs(s.y0 - t[2]) < 1 and abs(s.y1 - t[3]) < 1
        assert abs(s.x0 - t[0]) <= 2 and abs(s.x1 - t[1]) <= 2
        assert iou(box(s), t) > 0.97


def test_rotated_page_is_deskewed():
    page, truth = draw_page()
    rotated = apply(page, ScanStyle(angle=2.0, paper=255, ink=0, texture=0, blur=0, noise=0,
                                    quality=95), np.random.default_rng(0))
    lay = analyse_page(rotated)
    assert abs(lay.angle - 2.0) < 0.5
    assert [len(s.staves) for s in lay.systems] == list(LAYOUT)
    for s, t in zip(lay.systems, truth):  # deskewed boxes are those of the upright page
        assert iou(box(s), t) > 0.9
    # a point on a staff line maps back onto ink of the rotated page
    st = lay.systems[0].staves[0]
    for x in np.linspace(st.x0 + 20, st.x1 - 20, 9):
        px, py = lay.to_page(x, st.lines[0])
        assert rotated[int(py) - 1:int(py) + 2, int(px)].min() < 128


def test_scanned_page_keeps_its_systems():
    page, truth = draw_page(seed=1)
    lay = analyse_page(scan(page, np.random.default_rng(5)))
    assert [len(s.staves) for s in lay.systems] == list(LAYOUT)
    assert all(iou(box(s), t) > 0.9 for s, t in zip(lay.systems, truth))


def test_grey_levels_are_flattened_and_clean_pages_kept():
    page, _ = draw_page(seed=2)
    np.testing.assert_array_equal(normalise_levels(page), page)  # engraved: bit for bit
    # grey paper lit unevenly (15 % darker to one side), grey ink
    shade = np.linspace(1.0, 0.85, page.shape[1])[None, :]
    grey = (45 + (225 * shade - 45) * (page / 255.0)).round().astype(np.uint8)
    flat = normalise_levels(grey).astype(float)
    paper, ink = flat[page == 255], flat[page == 0]
    assert grey[page == 255].mean() < 215 and paper.mean() > 250 and paper.std() < 4
    assert abs(flat[page == 255][:1000].mean() - flat[:, -40:][page[:, -40:] == 255].mean()) < 4
    assert ink.mean() < 12
    blank = np.full((300, 400), 230, np.uint8)  # no ink: left alone
    np.testing.assert_array_equal(normalise_levels(blank), blank)


def test_engraved_pages_match_the_engravers_systems(corpus):
    c = Corpus(corpus)
    n = 0
    for pid in c.piece_ids:
        info = c.info(pid)
        for p in range(len(info["pages"])):
            lay = analyse_page(c.page(pid, p))
            truth = [(s["x0"], s["x1"], s["y0"], s["y1"]) for s in info["systems"] if s["page"] == p]
            assert len(lay.systems) == len(truth), pid
            assert all(iou(box(s), t) >= 0.9 for s, t in zip(lay.systems, truth)), pid
            assert abs(lay.staff_space / info["staff_space_px"] - 1) < 0.05
            n += len(truth)
    assert n >= 4


def test_training_strip_is_the_query_strip(corpus, tmp_path):
    """The corpus strip is made from pixels exactly as a query's: ingesting the piece's pages as
    files gives the same strip, and every notehead maps onto ink in it."""
    c = Corpus(corpus)
    for pid in c.piece_ids[:3]:
        info, nh = c.info(pid), c.noteheads(pid)
        assert info["strip"]["geometry"] == "pixels-v1"
        paths = [c.piece_dir(pid) / f"page_{p + 1}.png" for p in range(len(info["pages"]))]
        strips = [ingest_sheet(p).strip.image for p in paths]
        stored = np.load(c.piece_dir(pid) / "strip.npy")
        np.testing.assert_array_equal(np.concatenate(strips, axis=1), stored)
        col, row = np.round(nh["strip_x"]).astype(int), np.round(nh["strip_y"]).astype(int)
        assert (stored[row, col] < 128).mean() > 0.95
        assert abs(float(np.mean(info["strip"]["scales"])) - TARGET_STAFF_SPACE
                   / info["staff_space_px"]) < 0.05


def test_strip_has_target_staff_space_and_maps_both_ways(tmp_path):
    page, _ = draw_page()
    rotated = apply(page, ScanStyle(angle=-1.5, paper=255, ink=0, texture=0, blur=0, noise=0,
                                    quality=95), np.random.default_rng(0))
    path = tmp_path / "page.png"
    Image.fromarray(rotated).save(path)
    ing = ingest_sheet(path, hop=10)
    strip = ing.strip
    assert strip.image.shape[0] == STRIP_HEIGHT
    # the five lines of the single-staff system sit 3.5 px apart, centred in the strip
    k, mid = 2, STRIP_HEIGHT // 2
    band = strip.image[mid - 12:mid + 12, strip.offsets[k] + 60:strip.offsets[k + 1] - 60]
    col = band.astype(float).mean(axis=1)
    dark = np.flatnonzero(col < col.max() - 0.5 * (col.max() - col.min()))
    runs = np.split(dark, np.flatnonzero(np.diff(dark) > 1) + 1)
    centres = [mid - 12 + r.mean() for r in runs]
    assert len(centres) == 5 and abs(np.mean(centres) - mid) <= 1.5
    assert abs(np.mean(np.diff(centres)) - TARGET_STAFF_SPACE / 2) < 0.3
    # page point → strip column → page point, on every system
    lay = ing.layouts[0]
    for i, s in enumerate(lay.systems):
        xs = np.linspace(s.x0 + 5, s.x1 - 5, 7)
        px, py = lay.to_page(xs, np.full(7, (s.y0 + s.y1) / 2))
        cols = strip.to_strip(0, px, py)
        page_no, system, bx, by = strip.locate(cols)
        assert (system == i).all() and (page_no == 0).all()
        np.testing.assert_allclose(bx, px, atol=1e-6)
        np.testing.assert_allclose(by, py, atol=1e-6)


def test_sheet_snippets_are_strip_windows(tmp_path):
    page, _ = draw_page()
    lay = analyse_page(page)
    strip = unroll([page], lay.systems, lay.staff_space)
    snippets, loc = sheet_snippets(strip, hop=25)
    w = strip.width
    assert snippets.shape == (len(range(SHEET_W // 2, w - SHEET_W // 2 + 1, 25)), SHEET_H, SHEET_W)
    assert snippets.dtype == np.float32 and 0 <= snippets.min() and snippets.max() <= 1
    y0 = (STRIP_HEIGHT - SHEET_H) // 2
    for i in (0, len(loc) // 2, len(loc) - 1):
        c = loc.column[i]
        expect = 1 - strip.image[y0:y0 + SHEET_H, c - SHEET_W // 2:c + SHEET_W // 2] / 255.0
        np.testing.assert_allclose(snippets[i], expect, atol=1e-6)
    assert (loc.page == 0).all() and (np.diff(loc.system) >= 0).all()
    assert set(loc.system) == set(range(len(lay.systems)))
    x0s = np.array([lay.systems[s].x0 for s in loc.system])
    x1s = np.array([lay.systems[s].x1 for s in loc.system])
    assert (loc.x0 < loc.x1).all() and (loc.x0 >= x0s - 3).all() and (loc.x1 <= x1s + 3).all()


def test_pdf_and_multipage_tiff_skip_pages_without_staves(tmp_path):
    page, truth = draw_page()
    blank = np.full_like(page, 255)
    title = blank.copy()
    title[100:160, 200:620] = 0  # a big block of "title" ink, no staves
    pdf = tmp_path / "score.pdf"
    Image.fromarray(page).save(pdf, save_all=True, append_images=[Image.fromarray(blank)], resolution=100)
    pages = load_pages(pdf)
    # a page that is one scanned image is read at the image's own pixel size (issue 14)
    assert len(pages) == 2 and pages[0].shape == page.shape and pages[0].dtype == np.uint8
    ing = ingest_sheet(pdf)
    assert ing.n_pages == 2 and ing.skipped == [(1, "blank page")]
    assert [len(s.staves) for s in ing.systems] == list(LAYOUT)
    assert abs(ing.layouts[0].staff_space / SPACE - 1) < 0.05
    tif = tmp_path / "score.tif"
    Image.fromarray(title).save(tif, save_all=True, append_images=[Image.fromarray(page)])
    ing = ingest_sheet(tif, hop=50)
    assert ing.n_pages == 2 and [p for p, _ in ing.skipped] == [0] and ing.layouts[0].page == 1
    assert (ing.locations.page == 1).all() and len(ing.snippets) == len(ing.locations) > 10


def encrypted_pdf(path):
    """A one-page PDF under the standard security handler (RC4, 40 bit) with user password."""
    pad = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")

    def rc4(key, data):
        s, j = list(range(256)), 0
        for i in range(256):
            j = (j + s[i] + key[i % len(key)]) % 256
            s[i], s[j] = s[j], s[i]
        out, i, j = bytearray(), 0, 0
        for c in data:
            i = (i + 1) % 256
            j = (j + s[i]) % 256
            s[i], s[j] = s[j], s[i]
            out.append(c ^ s[(s[i] + s[j]) % 256])
        return bytes(out)

    user, owner, perms, fid = b"secret", b"owner", -44, b"0123456789abcdef"
    o = rc4(hashlib.md5((owner + pad)[:32]).digest()[:5], (user + pad)[:32])
    u = rc4(hashlib.md5((user + pad)[:32] + o + struct.pack("<i", perms) + fid).digest()[:5], pad)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 300] >>",
            b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (o.hex().encode(), u.hex().encode(), perms)]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1, fid.hex().encode(), fid.hex().encode(), xref)
    path.write_bytes(bytes(out))
    return path


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _empty_pdf(path):
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    pdf.save(str(path))
    pdf.close()
    return path


@pytest.mark.parametrize("name, make, reason", [
    ("missing.png", None, "no such file"),
    ("corrupt.png", lambda p: p.write_bytes(_png(draw_page()[0])[:3000]), "corrupt image"),
    ("notes.png", lambda p: p.write_text("these are not notes\n"), "not an image or PDF"),
    ("locked.pdf", encrypted_pdf, "encrypted PDF"),
    ("empty.pdf", _empty_pdf, "PDF has no pages"),
    ("broken.pdf", lambda p: p.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type"), "unreadable PDF"),
    ("tiny.png", lambda p: p.write_bytes(_png(np.zeros((40, 60), np.uint8))), "image too small"),
    ("blank.png", lambda p: p.write_bytes(_png(np.full((1100, 800), 250, np.uint8))), "blank page"),
    ("photo.png", lambda p: p.write_bytes(_png(
        (np.random.default_rng(0).random((600, 800)) * 255).astype(np.uint8))), "no staves found"),
])
def test_refused_files_name_the_file(tmp_path, name, make, reason):
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(PageError) as err:
        ingest_sheet(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and reason in msg
    assert isinstance(err.value, ValueError)


def test_no_page_with_staves_is_an_error(tmp_path):
    blank = Image.fromarray(np.full((1100, 800), 255, np.uint8))
    tif = tmp_path / "blank.tif"
    blank.save(tif, save_all=True, append_images=[blank])
    with pytest.raises(PageError, match="no staves found on any of its 2 pages"):
        ingest_sheet(tif)
