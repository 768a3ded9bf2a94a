"""Engraving: MusicXML → page images with the pixel position and score time of every notehead.

Verovio lays the score out and draws SVG pages; resvg turns them into grayscale PNGs at about
100 dpi (A4 ≈ 827 × 1169 px, like MSMD). Notehead centres come from the SVG (glyph position plus the
SMuFL font's glyph box), staff and system boxes from the staff lines, onset times from Verovio's
timemap. Layout varies per piece with a seeded ``LayoutStyle`` (music font, size, spacing, page).
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FONTS = ("Leipzig", "Bravura", "Leland", "Petaluma", "Gootville")
PAGE_SIZES = {"A4": (2100, 2970), "letter": (2159, 2794)}  # Verovio units: 0.1 mm
DPI = 100.0
TEXT_FONT = "DejaVu Serif"  # titles and tempo marks; drawn only where a system font matches

_SVG = "{http://www.w3.org/2000/svg}"
_XLINK = "{http://www.w3.org/1999/xlink}href"


class EngraveError(ValueError):
    """Verovio could not engrave a score."""


@dataclass(frozen=True)
class LayoutStyle:
    font: str = "Leipzig"  # SMuFL music font
    unit: float = 9.0  # half a staff space, 0.1 mm (9 → staff space 1.8 mm ≈ 7 px at 100 dpi)
    spacing_linear: float = 0.25  # Verovio horizontal spacing factors
    spacing_non_linear: float = 0.6
    spacing_staff: int = 12  # minimal space between the two staves, MEI units
    spacing_system: int = 4  # minimal space between systems, MEI units
    page: str = "A4"

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "LayoutStyle":
        """A random but plausible engraving style (seeded per piece)."""
        return cls(
            font=str(rng.choice(FONTS)),
            unit=round(float(rng.uniform(8.0, 10.0)), 2),
            spacing_linear=round(float(rng.uniform(0.2, 0.32)), 3),
            spacing_non_linear=round(float(rng.uniform(0.5, 0.7)), 3),
            spacing_staff=int(rng.integers(8, 16)),
            spacing_system=int(rng.integers(4, 12)),
            page=str(rng.choice(["A4", "A4", "A4", "letter"])),
        )

    def verovio_options(self) -> dict:
        w, h = PAGE_SIZES[self.page]
        return {
            "font": self.font, "unit": self.unit, "spacingLinear": self.spacing_linear,
            "spacingNonLinear": self.spacing_non_linear, "spacingStaff": self.spacing_staff,
            "spacingSystem": self.spacing_system, "pageWidth": w, "pageHeight": h,
            "pageMarginLeft": 100, "pageMarginRight": 100, "pageMarginTop": 80,
            "pageMarginBottom": 80, "footer": "none", "header": "auto", "breaks": "auto",
            "xmlIdSeed": 1, "svgViewBox": True, "scale": 100, "adjustPageHeight": False,
        }

    def page_pixels(self) -> tuple[int, int]:
        w, h = PAGE_SIZES[self.page]
        return round(w / 254.0 * DPI), round(h / 254.0 * DPI)


NOTEHEAD_FIELDS = ("page", "x", "y", "w", "h", "staff", "system", "pitch", "onset", "duration")


@dataclass
class Engraving:
    pages: list[np.ndarray]  # uint8 grayscale pages (0 = black)
    noteheads: dict[str, np.ndarray]  # NOTEHEAD_FIELDS → arrays, sorted by onset then x
    systems: list[dict]  # page, x0, x1, y0 (top line), y1 (bottom line), staff_lines
    notes: np.ndarray  # (n, 3) onset s, duration s, MIDI pitch — for synthesis (ties merged)
    staff_space: float  # px


@lru_cache(maxsize=8)
def glyph_boxes(font: str) -> dict[str, tuple[float, float, float, float]]:
    """SMuFL glyph boxes (x, y, w, h in font units, 1000 per em) from Verovio's font data."""
    import verovio

    path = Path(verovio.toolkit(False).getResourcePath()) / f"{font}.xml"
    boxes = {}
    for g in ET.parse(path).getroot().iter("g"):
        boxes[g.get("c")] = tuple(float(g.get(k, 0)) for k in ("x", "y", "w", "h"))
    return boxes


_TRANSLATE = re.compile(r"translate\(\s*([-\d.]+)[ ,]+([-\d.]+)\s*\)(?:\s*scale\(\s*([-\d.]+))?")
_LINE = re.compile(r"M\s*([-\d.]+)\s+([-\d.]+)\s*L\s*([-\d.]+)\s+([-\d.]+)")


def _parse_page(svg: str, font: str, page_no: int):
    """Noteheads and staves of one SVG page, in Verovio's inner units (before the page transform)."""
    root = ET.fromstring(svg)
    inner = next(e for e in root.iter(f"{_SVG}svg") if e.get("class") == "definition-scale")
    vb = [float(v) for v in inner.get("viewBox").split()]
    margin = next(e for e in root.iter(f"{_SVG}g") if e.get("class") == "page-margin")
    mx, my = (float(v) for v in _TRANSLATE.search(margin.get("transform")).groups()[:2])
    boxes = glyph_boxes(font)
    heads, systems = [], []

    # system > measure > staff > layer > note: a staff group per measure, numbered in its measure
    def walk(el, system, staff, in_measure):
        cls = el.get("class") or ""
        if cls == "system":
            systems.append({})
            system = len(systems) - 1
        elif cls == "measure" and system is not None:
            in_measure = [0]
        elif cls == "staff" and system is not None:
            if in_measure is None:
                in_measure = [0]
            staff = in_measure[0]
            in_measure[0] += 1
            for p in el.findall(f"{_SVG}path"):
                m = _LINE.match(p.get("d", ""))
                if m and abs(float(m.group(2)) - float(m.group(4))) < 1e-6:
                    systems[system].setdefault(staff, []).append(
                        (float(m.group(1)), float(m.group(3)), float(m.group(2))))
        elif cls == "note" and system is not None:
            head = next((g for g in el.iter(f"{_SVG}g") if g.get("class") == "notehead"), None)
            use = head.find(f"{_SVG}use") if head is not None else None
            if use is not None:
                m = _TRANSLATE.search(use.get("transform", ""))
                code = use.get(_XLINK, "#").lstrip("#").split("-")[0]
                if m and code in boxes:
                    tx, ty, sc = float(m.group(1)), float(m.group(2)), float(m.group(3) or 1)
                    gx, gy, gw, gh = boxes[code]
                    heads.append((el.get("id"), tx + (gx + gw / 2) * sc, ty - (gy + gh / 2) * sc,
                                  gw * sc, gh * sc, system, staff))
            return  # a note's children hold nothing else we need
        for child in el:
            walk(child, system, staff, in_measure)

    walk(inner, None, None, None)
    return vb, (mx, my), heads, systems


_STEP = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ALTER = {"s": 1, "f": -1, "ss": 2, "x": 2, "ff": -2, "n": 0, "xs": 3, "sx": 3, "tf": -3, "ts": 3}


def mei_pitches(mei: str) -> tuple[dict[str, int], set[str]]:
    """Sounding MIDI pitch of every MEI note (written or gestural accidentals, gestural octave),
    and the ids of notes that are not drawn (``visible="false"`` on them or an ancestor)."""
    ns = "{http://www.music-encoding.org/ns/mei}"
    xid = "{http://www.w3.org/XML/1998/namespace}id"
    root = ET.fromstring(mei)
    hidden = {n.get(xid) for el in root.iter() if el.get("visible") == "false"
              for n in el.iter(f"{ns}note")}
    out = {}
    for n in root.iter(f"{ns}note"):
        pname = n.get("pname.ges") or n.get("pname")
        octave = n.get("oct.ges") or n.get("oct")
        if not pname or octave is None:
            continue
        acc = n.get("accid.ges") or n.get("accid")
        if acc is None:
            a = n.find(f"{ns}accid")
            if a is not None:
                acc = a.get("accid.ges") or a.get("accid")
        out[n.get(xid)] = 12 * (int(octave) + 1) + _STEP[pname.lower()] + _ALTER.get(acc or "n", 0)
    return out, hidden


_TITLE = re.compile(r"<title[^>]*>[^<]*</title>")


def rasterize(svg: str, width_px: int) -> np.ndarray:
    """SVG page → uint8 grayscale array (white background)."""
    import resvg_py
    from PIL import Image

    # <title> labels inside <text> make resvg lose the text's position; they are metadata only
    svg = _TITLE.sub("", svg)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=width_px, background="#ffffff",
                                font_family=TEXT_FONT, serif_family=TEXT_FONT)
    return np.asarray(Image.open(io.BytesIO(bytes(png))).convert("L"))


def engrave(musicxml: str, style: LayoutStyle = LayoutStyle()) -> Engraving:
    """Lay out and draw a MusicXML score; return pages, notehead table, systems and notes."""
    import verovio

    verovio.enableLog(verovio.LOG_OFF)  # its warnings about the input would flood the build log
    tk = verovio.toolkit(False)
    tk.setResourcePath(tk.getResourcePath())
    tk.setOptions(style.verovio_options())
    if not tk.loadData(musicxml):
        raise EngraveError(f"Verovio could not load the score: {tk.getLog().strip()[:200]}")
    n_pages = tk.getPageCount()
    if n_pages < 1:
        raise EngraveError("Verovio produced no page")

    # timing: every sounding note id → (onset s, duration s, MIDI pitch); tie chains merged
    timemap = tk.renderToTimemap({"includeMeasures": False, "includeRests": False})
    on, off = {}, {}
    for ev in timemap:
        for i in ev.get("on", []):
            on.setdefault(i, ev["tstamp"])
        for i in ev.get("off", []):
            off[i] = ev["tstamp"]
    mei = tk.getMEI()
    pitches, hidden = mei_pitches(mei)
    tie_next = dict(re.findall(r'<tie [^>]*?startid="#([^"]+)"[^>]*?endid="#([^"]+)"', mei))
    continuation = set(tie_next.values())
    timing = {}
    for i, t in on.items():
        if i in continuation or i not in pitches:
            continue
        end, j, seen = off.get(i, t), i, {i}
        while j in tie_next and tie_next[j] in on and tie_next[j] not in seen:
            j = tie_next[j]
            seen.add(j)
            end = off.get(j, end)
        timing[i] = (t / 1000.0, max(end - t, 1) / 1000.0, pitches[i])
    if not timing:
        raise EngraveError("the score has no sounding notes")

    width_px, _ = style.page_pixels()
    pages, rows, systems = [], [], []
    staff_space = None
    for p in range(1, n_pages + 1):
        svg = tk.renderToSVG(p)
        vb, (mx, my), heads, page_systems = _parse_page(svg, style.font, p)
        img = rasterize(svg, width_px)
        k = img.shape[1] / vb[2]  # px per inner unit
        sys_offset = len(systems)
        for by_staff in page_systems:
            # each staff: its five line heights (the same in every measure) and its x extent
            staves = []
            for _, lines in sorted(by_staff.items()):
                heights = sorted({round(y, 1) for _, _, y in lines})
                if len(heights) >= 5:
                    staves.append((lines, heights[:5]))
            if not staves:
                systems.append(None)
                continue
            ys = [[(y + my) * k for y in heights] for _, heights in staves]
            staves = [lines for lines, _ in staves]
            if staff_space is None:
                staff_space = float(np.mean(np.diff(ys[0])))
            systems.append({
                "page": p - 1,
                "x0": (min(min(a, b) for s in staves for a, b, _ in s) + mx) * k,
                "x1": (max(max(a, b) for s in staves for a, b, _ in s) + mx) * k,
                "y0": ys[0][0], "y1": ys[-1][-1], "staff_lines": ys,
            })
        for nid, x, y, w, h, system, staff in heads:
            if nid not in timing or nid in hidden or systems[sys_offset + system] is None:
                continue
            onset, dur, pitch = timing[nid]
            rows.append((p - 1, (x + mx) * k, (y + my) * k, w * k, h * k, staff,
                         sys_offset + system, pitch, onset, dur))
        pages.append(img)
    if not rows:
        raise EngraveError("no notehead could be located on the pages")
    # renumber systems without staves away
    keep = [i for i, s in enumerate(systems) if s is not None]
    remap = {old: new for new, old in enumerate(keep)}
    systems = [systems[i] for i in keep]
    arr = np.array(rows, dtype=np.float64)
    arr[:, 6] = [remap[int(s)] for s in arr[:, 6]]
    order = np.lexsort((arr[:, 1], arr[:, 6], arr[:, 8]))  # by onset, then system, then x
    arr = arr[order]
    dtypes = {"page": np.int16, "staff": np.int8, "system": np.int16, "pitch": np.int8}
    noteheads = {f: arr[:, i].astype(dtypes.get(f, np.float32)) for i, f in enumerate(NOTEHEAD_FIELDS)}
    notes = np.array(sorted(timing.values()), dtype=np.float64)
    return Engraving(pages=pages, noteheads=noteheads, systems=systems, notes=notes,
                     staff_space=staff_space or 7.0)
