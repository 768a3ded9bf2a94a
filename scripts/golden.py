"""The golden test's data (tests/test_golden.py, issue 17 item 7): a small page and clip, and what
the front end and the shipped models make of them.

    python scripts/golden.py            # measure and show how today's numbers differ from expected.json
    python scripts/golden.py --write    # rewrite tests/data/golden/expected.json from the bundled files
    python scripts/golden.py --inputs   # remake page.png and clip.flac (seeded), then --write

Run ``--write`` only after a deliberate change of the front end or of a shipped model, and say so
in the commit message. ``--inputs`` makes both files from scratch (they are ours to redistribute):

* page.png: a two-system grand staff (11 bars of quarter notes over half notes, C major, no text)
  written here as MusicXML, engraved by Verovio and drawn by resvg on an A4 page at 100 dpi
  (827 x 1170 px), 8-bit gray, zlib level 9.
* clip.flac: the page's first two bars at 120 bpm (4 s), synthesised: each note a sum of slightly
  inharmonic partials with a 4 ms attack, an exponential decay (faster for higher partials) and an
  80 ms release; velocities and phases from a seeded generator; 16-bit mono FLAC at 22,050 Hz.

Another Verovio or resvg version may draw a slightly different page, so the bundled files, not
this script, are the test's input: remake them only to change the input on purpose.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_golden import CLIP, EXPECTED, GOLDEN, PAGE, differences, measure  # noqa: E402

SEED = 17
SAMPLE_RATE = 22050
SECONDS = 4.0
TEMPO = 120  # quarter notes per minute
BARS = 11  # two systems at Verovio's default spacing on A4
TREBLE = ("E4 G4 C5 E5 D5 B4 G4 B4 C5 E5 G5 E5 F5 D5 B4 G4 A4 C5 F5 A5 G5 E5 C5 E5 "
          "F5 D5 B4 D5 C5 G4 E4 C4").split()  # quarter notes
BASS = "C3 G2 E3 G2 F2 A2 D3 F2 C3 E3 G2 B2 A2 C3 F2 C3".split()  # half notes

VEROVIO = {"font": "Leipzig", "unit": 9.0, "spacingLinear": 0.25, "spacingNonLinear": 0.6,
           "pageWidth": 2100, "pageHeight": 2970, "pageMarginLeft": 100, "pageMarginRight": 100,
           "pageMarginTop": 80, "pageMarginBottom": 80, "footer": "none", "header": "none",
           "breaks": "auto", "xmlIdSeed": 1, "svgViewBox": True, "scale": 100,
           "adjustPageHeight": False}
PAGE_WIDTH_PX = 827  # A4 at 100 dpi, as the corpus engraves


def _note(name: str, kind: str, duration: int, voice: int, staff: int) -> str:
    return (f"<note><pitch><step>{name[0]}</step><octave>{name[-1]}</octave></pitch>"
            f"<duration>{duration}</duration><voice>{voice}</voice><type>{kind}</type>"
            f"<staff>{staff}</staff></note>")


def musicxml(bars: int = BARS) -> str:
    """A piano score: treble quarter notes over bass half notes, 4/4, C major."""
    measures = []
    for m in range(bars):
        body = []
        if m == 0:
            body.append("<attributes><divisions>2</divisions><key><fifths>0</fifths></key>"
                        "<time><beats>4</beats><beat-type>4</beat-type></time><staves>2</staves>"
                        "<clef number='1'><sign>G</sign><line>2</line></clef>"
                        "<clef number='2'><sign>F</sign><line>4</line></clef></attributes>"
                        f"<sound tempo='{TEMPO}'/>")
        body += [_note(TREBLE[(4 * m + k) % len(TREBLE)], "quarter", 2, 1, 1) for k in range(4)]
        body.append("<backup><duration>8</duration></backup>")
        body += [_note(BASS[(2 * m + k) % len(BASS)], "half", 4, 2, 2) for k in range(2)]
        if m == bars - 1:
            body.append("<barline location='right'><bar-style>light-heavy</bar-style></barline>")
        measures.append(f"<measure number='{m + 1}'>{''.join(body)}</measure>")
    return ("<?xml version='1.0' encoding='UTF-8'?><score-partwise version='3.1'><part-list>"
            "<score-part id='P1'><part-name>Piano</part-name></score-part></part-list>"
            f"<part id='P1'>{''.join(measures)}</part></score-partwise>")


def make_page(path: Path) -> None:
    import resvg_py
    import verovio
    from PIL import Image

    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit(False)
    tk.setResourcePath(tk.getResourcePath())
    tk.setOptions(VEROVIO)
    if not tk.loadData(musicxml()) or tk.getPageCount() != 1:
        raise SystemExit("Verovio did not engrave the golden score on one page")
    png = resvg_py.svg_to_bytes(svg_string=tk.renderToSVG(1), width=PAGE_WIDTH_PX, background="#ffffff")
    Image.open(io.BytesIO(bytes(png))).convert("L").save(path, optimize=True, compress_level=9)


def _midi(name: str) -> int:
    return 12 * (int(name[-1]) + 1) + {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[name[0]]


def synthesise(seconds: float = SECONDS, sr: int = SAMPLE_RATE, seed: int = SEED) -> np.ndarray:
    """The score's first ``seconds`` as piano-like tones, float64 mono, peak 0.25."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / TEMPO
    notes = [(beat * i, beat, _midi(n)) for i, n in enumerate(TREBLE)]
    notes += [(2 * beat * i, 2 * beat, _midi(n)) for i, n in enumerate(BASS)]
    t = np.arange(int(round(seconds * sr))) / sr
    y = np.zeros_like(t)
    for onset, length, pitch in sorted(notes):
        if onset >= seconds:
            continue
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        velocity = rng.uniform(0.6, 0.9)
        tt = np.clip(t - onset, 0, None)
        env = (t >= onset) * np.exp(-1.5 * tt) * np.clip(tt / 0.004, 0, 1) \
            * np.clip(1 - (tt - length) / 0.08, 0, 1)
        for k in range(1, 11):
            fk = k * f0 * np.sqrt(1 + 4e-4 * k * k)  # a stiff string's stretched partials
            if fk > 0.45 * sr:
                break
            y += env * velocity / k ** 1.3 * np.exp(-0.6 * k * tt) * np.sin(
                2 * np.pi * fk * tt + rng.uniform(0, 2 * np.pi))
    return y / np.abs(y).max() * 0.25


def make_clip(path: Path) -> None:
    import soundfile as sf

    sf.write(str(path), synthesise(), SAMPLE_RATE, subtype="PCM_16", format="FLAC",
             compression_level=1.0)


def write(numbers: dict) -> None:
    numbers = {"about": "tests/test_golden.py's expected values, made by scripts/golden.py --write",
               **numbers}
    EXPECTED.write_text(json.dumps(numbers, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="rewrite expected.json from the bundled files")
    g.add_argument("--inputs", action="store_true", help="remake page.png and clip.flac, then --write")
    args = ap.parse_args(argv)
    if args.inputs:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        make_page(PAGE)
        make_clip(CLIP)
        for p in (PAGE, CLIP):
            print(f"{p.relative_to(ROOT)}: {p.stat().st_size:,} bytes")
    numbers = measure()
    lines = None
    if EXPECTED.is_file():
        expected = json.loads(EXPECTED.read_text())
        expected.pop("about", None)
        lines = differences(expected, numbers)
        print("\n".join(lines) if lines else "today's numbers match expected.json")
    if args.write or args.inputs:
        write(numbers)
        print(f"wrote {EXPECTED.relative_to(ROOT)}" + (" (the differences above: name them in the commit "
                                                       "message)" if lines else ""))
        return 0
    if lines is None:
        print(json.dumps(numbers, indent=1))
        print(f"no {EXPECTED.relative_to(ROOT)} yet: run with --write")
        return 1
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
