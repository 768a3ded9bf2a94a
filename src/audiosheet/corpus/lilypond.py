"""LilyPond engraving: a .ly score → pages with every notehead's page position, pitch and onset.

The second engraver of the corpus (issue 15), done as MSMD did it (Dorfer et al., TISMIR 2018:
LilyPond's links tie each engraved notehead to its note) but without matching source locations:
``data/capture.ly`` is given to LilyPond with ``-dinclude-settings``. It

* re-makes every score from its music with all repeats unfolded (volta, segno, percent,
  tremolo), so the printed pages and the timeline played from them agree note for note
  (MSMD lost pieces to repeats handled differently on the two sides; here they cannot differ);
* draws an invisible PDF link "ash:ID" over every notehead and "ash:staff-S-K-N" over every staff
  (score S, staff K, N lines), whose rectangles give pixel positions on the rendered pages;
* writes each notehead's score position (whole notes, grace part), written duration, MIDI pitch
  and staff, the ties (LilyPond's own tie resolution), the tempo, dynamics and sustain-pedal
  marks to a text file.

Here the pages are rendered with pdfium at ``DPI`` (~100 dpi like the Verovio corpus), positions
come from the links, times from the capture with the tempo of the score's metronome marks (or of
its MIDI score's, or of its tempo word), velocities from its dynamics and pedal intervals from its
pedal marks. Needs Debian's ``lilypond`` (2.24; ``convert-ly`` updates older sources).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from audiosheet.corpus.engrave import NOTEHEAD_FIELDS, EngraveError, Engraving

DPI = 100.0
CAPTURE = Path(__file__).parents[1] / "data" / "capture.ly"
SCORE_GAP = 2.0  # seconds of silence between two \score blocks of one file
DEFAULT_QPM = 100.0  # quarter notes per minute when a score says nothing about its tempo
PAPERS = {"a4": (595.28, 841.89), "letter": (612.0, 792.0)}  # pt
TEXT_FONTS = ("TeX Gyre Schola", "TeX Gyre Termes", "TeX Gyre Bonum", "DejaVu Serif", "C059")

# tempo words → quarter notes per minute (the middle of the usual metronome ranges); the first
# word found in a tempo mark wins, so "Allegro ma non troppo" is an Allegro
TEMPO_WORDS = {
    "grave": 40, "largo": 50, "larghetto": 63, "lento": 52, "adagio": 66, "adagietto": 72,
    "andante": 84, "andantino": 92, "moderato": 108, "allegretto": 112, "allegro": 132,
    "vivace": 156, "vivo": 156, "presto": 176, "prestissimo": 200, "tempo di menuetto": 120,
    "menuetto": 120, "minuetto": 120, "walzer": 168, "valse": 168, "tempo di valse": 168,
}
# dynamics → MIDI velocity; accents (sf, fz, ...) lift only the notes they stand at
DYNAMICS = {"pppp": 24, "ppp": 32, "pp": 42, "p": 54, "mp": 66, "mf": 78, "f": 92, "ff": 106,
            "fff": 116, "ffff": 124}
ACCENTS = {"sf": 104, "sfz": 108, "fz": 104, "sff": 112, "sffz": 114, "rfz": 100, "rf": 100,
           "sfp": 104, "fp": 92}
HAIRPIN_STEP = 14  # velocity a hairpin moves by when no dynamic mark follows it


class LilyPondError(EngraveError):
    """LilyPond is missing, failed, or made pages without the captured notes."""


@lru_cache(maxsize=1)
def lilypond_version() -> str | None:
    """The installed LilyPond's version ("2.24.1"), or None when there is none."""
    exe = shutil.which("lilypond")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"LilyPond (\d+\.\d+\.\d+)", out)
    return m.group(1) if m else None


def require_lilypond() -> str:
    """The LilyPond version; ``LilyPondError`` (one line, with the install command) without one."""
    v = lilypond_version()
    if v is None or tuple(map(int, v.split("."))) < (2, 24, 0):
        have = f"LilyPond {v} is too old" if v else "LilyPond is not installed"
        raise LilyPondError(f"{have}: building from LilyPond sources needs LilyPond ≥ 2.24 "
                            f"(Debian/Ubuntu: apt-get install lilypond)")
    return v


@dataclass(frozen=True)
class LilyStyle:
    """A seeded engraving style, as far as LilyPond lets a preamble set it: staff size (pt),
    paper, text font and the distance between systems (staff spaces). The score's own
    ``set-global-staff-size`` / paper-size calls are turned off so the style holds."""

    staff_size: float = 20.0
    paper: str = "a4"
    text_font: str = "TeX Gyre Schola"
    system_distance: float = 12.0
    ragged_bottom: bool = False

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "LilyStyle":
        return cls(staff_size=round(float(rng.uniform(18.0, 23.0)), 2),
                   paper=str(rng.choice(["a4", "a4", "a4", "letter"])),
                   text_font=str(rng.choice(TEXT_FONTS)),
                   system_distance=round(float(rng.uniform(9.0, 16.0)), 2),
                   ragged_bottom=bool(rng.random() < 0.3))

    def settings(self) -> str:
        """LilyPond lines that set this style (after the capture)."""
        return "\n".join([
            f'#(set-default-paper-size "{self.paper}")',
            f"#(set-global-staff-size {self.staff_size})",
            "#(define (set-global-staff-size . args) #f)",
            "#(define (set-default-paper-size . args) #f)",
            "#(define (set-paper-size . args) #f)",
            "\\paper {",
            f'  property-defaults.fonts.serif = "{self.text_font}"',
            f"  system-system-spacing.basic-distance = #{self.system_distance}",
            f"  system-system-spacing.minimum-distance = #{self.system_distance * 0.6:.2f}",
            f"  ragged-bottom = ##{'t' if self.ragged_bottom else 'f'}",
            "}",
        ]) + "\n"


# ----------------------------------------------------------------------------------------------
# sources → LilyPond 2.24


_VERSION = re.compile(r'\\version\s+"([\d.]+)"')
_INCLUDE = re.compile(r'\\include\s+"([^"]+)"')


def source_version(text: str) -> str | None:
    m = _VERSION.search(text)
    return m.group(1) if m else None


def prepare_sources(folder: Path, main: Path, timeout: float = 120) -> list[str]:
    """Bring every .ly/.ily under ``folder`` (a private copy) to the installed LilyPond's syntax
    with ``convert-ly`` (an included file without ``\\version`` is taken to be of the main file's
    version) and add copies of included files asked for under another letter case (made on
    case-insensitive file systems). Returns convert-ly's complaints, one line each."""
    mv = source_version(main.read_text(errors="replace"))
    notes = []
    files = sorted(set(folder.rglob("*.ly")) | set(folder.rglob("*.ily")))
    have = tuple(int(x) for x in (lilypond_version() or "2.24.0").split("."))
    for f in files:
        text = f.read_text(errors="replace")
        v = source_version(text) or mv
        if v and tuple(int(x) for x in v.split(".")[:2]) >= (2, 24):
            # a later 2.24.x than ours: the same syntax, but LilyPond refuses "program too old"
            if source_version(text) and tuple(int(x) for x in v.split(".")) > have and \
                    tuple(int(x) for x in v.split(".")[:2]) == have[:2]:
                f.write_text(_VERSION.sub(f'\\version "{".".join(map(str, have))}"', text, count=1))
            continue
        cmd = ["convert-ly", "-e", "-l", "ERROR"] + ([] if source_version(text) or not mv
                                                      else ["-f", mv])
        r = subprocess.run(cmd + [str(f)], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            notes.append(f"convert-ly {f.name}: {' '.join(r.stderr.split())[:160]}")
    fix_include_case(folder)
    return notes


def fix_include_case(folder: Path) -> None:
    """Some Mutopia pieces \\include a file under another letter case than its name (made on
    case-insensitive file systems): add a copy under the name asked for, in ``folder`` (a
    private copy of the piece)."""
    for f in sorted(set(folder.rglob("*.ly")) | set(folder.rglob("*.ily"))):
        for name in _INCLUDE.findall(f.read_text(errors="replace")):
            want = f.parent / name
            if want.exists() or not want.parent.is_dir():
                continue
            match = [g for g in want.parent.iterdir() if g.name.lower() == want.name.lower()]
            if match:
                shutil.copy(match[0], want)


def compile_score(main: Path, out_dir: Path, style: LilyStyle, timeout: float = 600) -> dict:
    """Run LilyPond on ``main`` (prepared sources) with the capture and ``style``; outputs go to
    ``out_dir`` (score[-SUFFIX].pdf, score[-N].midi, capture.tsv, lilypond.log). Returns their
    paths. Raises ``LilyPondError`` naming the reason when no PDF or no capture comes out."""
    require_lilypond()
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = out_dir / "settings.ly"
    settings.write_text(f'\\include "{CAPTURE}"\n' + style.settings())
    capture = out_dir / "capture.tsv"
    env = {**os.environ, "AUDIOSHEET_CAPTURE": str(capture)}
    cmd = ["lilypond", "-dno-point-and-click", f"-dinclude-settings={settings}", "-l", "ERROR",
           "-o", str(out_dir / "score"), main.name]
    try:
        r = subprocess.run(cmd, cwd=main.parent, capture_output=True, text=True, env=env,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LilyPondError(f"took longer than {timeout:.0f} s") from None
    log = (r.stdout or "") + (r.stderr or "")
    (out_dir / "lilypond.log").write_text(log)
    if r.returncode:
        raise LilyPondError(failure_reason(log, r.returncode, main.parent))
    # score.pdf, or score-SUFFIX.pdf for books with their own output suffix, in their order
    pdfs = sorted(out_dir.glob("score*.pdf"), key=lambda p: (p.name != "score.pdf", p.stat().st_mtime))
    if not pdfs:
        raise LilyPondError("no pages (LilyPond made no PDF: a MIDI-only file?)")
    if not capture.is_file() or capture.stat().st_size == 0:
        raise LilyPondError("capture wrote nothing (LilyPond engraved no score)")
    midis = sorted(out_dir.glob("score*.mid*"), key=lambda p: (len(p.name), p.name))
    return {"pdfs": pdfs, "capture": capture, "midis": midis, "log": log}


_ERROR = re.compile(r"^(?P<where>[^\s:]+:\d+:\d+): (?:fatal )?error: (?P<what>.*)$", re.M)


def failure_reason(log: str, returncode: int, base: Path) -> str:
    """One line on why LilyPond failed: a category first ("syntax error", "Scheme error",
    "crashed (signal N)", "error"), then the first error's file:line:col (relative to the
    piece) and message."""
    if returncode < 0:
        return f"crashed (signal {-returncode})"
    m = _ERROR.search(log)
    if not m:
        tail = " ".join(log.split())[-160:]
        return f"error (exit {returncode}{': ' + tail if tail else ''})"
    where = m.group("where")
    for root in (str(base) + "/", str(base.parent) + "/"):
        where = where.replace(root, "")
    what = m.group("what").strip()
    cat = ("syntax error" if what.startswith("syntax error") else
           "Scheme error" if "Guile signaled" in what else "error")
    if cat == "Scheme error":  # the Scheme message follows on the next lines
        rest = log[m.end():].strip().splitlines()
        detail = next((ln.strip() for ln in rest if ln.strip().startswith(("In procedure", "Unbound",
                                                                          "Wrong type"))), "")
        what = detail or what
    return f"{cat} ({where}: {what})"[:300]


# ----------------------------------------------------------------------------------------------
# reading what LilyPond made


def read_capture(path: Path) -> list[dict]:
    """capture.tsv → one record per score: notes (id → staff, moment, grace, dur, pitch), ties,
    tempo (moment, wholes per minute), tempo texts, dynamics, hairpins, pedal, end moment."""
    scores: dict[int, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        f = line.split("\t")
        if len(f) < 2:
            continue
        s = scores.setdefault(int(f[0]), {"notes": {}, "ties": [], "tempo": [], "tempotext": [],
                                          "dynamic": [], "hairpin": [], "sustain": [], "end": 0.0})
        kind = f[1]
        if kind == "note":
            s["notes"][f[2]] = (int(f[3]), float(f[4]), float(f[5]), float(f[6]), int(f[7]))
        elif kind == "tie":
            s["ties"].append((f[2], f[3]))
        elif kind == "tempo":
            s["tempo"].append((float(f[2]) + float(f[3]), float(f[4])))
        elif kind == "tempotext":
            s["tempotext"].append((float(f[2]), f[4], f[5]))
        elif kind == "dynamic":
            s["dynamic"].append((float(f[2]), f[4].strip().lower()))
        elif kind in ("cresc", "decresc"):
            s["hairpin"].append((float(f[2]), kind, int(float(f[4]))))
        elif kind == "sustain":
            s["sustain"].append((float(f[2]), int(float(f[4]))))
        elif kind == "end":
            s["end"] = float(f[2])
    return [scores[k] for k in sorted(scores)]


def midi_tempo_maps(midis: list[Path]) -> list[list[tuple[float, float]]]:
    """Each MIDI file's tempo changes as (whole notes, wholes per minute)."""
    import mido

    out = []
    for m in midis:
        try:
            f = mido.MidiFile(str(m))
        except Exception:
            continue
        changes = {}
        for track in f.tracks:
            t = 0
            for msg in track:
                t += msg.time
                if msg.type == "set_tempo":
                    changes[t / (4.0 * f.ticks_per_beat)] = 60e6 / msg.tempo / 4.0
        if changes:
            out.append(sorted(changes.items()))
    return out


def _tempo_word(texts) -> float | None:
    for _, text, count in texts:
        if count:
            continue
        low = text.lower()
        hits = [(low.find(w), -len(w), q) for w, q in TEMPO_WORDS.items() if w in low]
        if hits:
            return float(min(hits)[2])
    return None


class TempoMap:
    """Score position (whole notes) → seconds, for piecewise-constant tempo (wholes per minute)."""

    def __init__(self, changes: list[tuple[float, float]]):
        ch = sorted((max(w, 0.0), t) for w, t in changes if t > 0) or [(0.0, DEFAULT_QPM / 4)]
        if ch[0][0] > 0:
            ch.insert(0, (0.0, ch[0][1]))
        self.w = np.array([c[0] for c in ch])
        self.rate = np.array([c[1] for c in ch])  # wholes per minute
        sec = np.diff(self.w) * 60.0 / self.rate[:-1]
        self.t = np.concatenate([[0.0], np.cumsum(sec)])

    def seconds(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        i = np.clip(np.searchsorted(self.w, w, side="right") - 1, 0, len(self.w) - 1)
        return self.t[i] + (w - self.w[i]) * 60.0 / self.rate[i]

    def seconds_per_whole(self, w) -> np.ndarray:
        i = np.clip(np.searchsorted(self.w, np.asarray(w), side="right") - 1, 0, len(self.w) - 1)
        return 60.0 / self.rate[i]


def score_tempo(score: dict, midi_map: list | None) -> tuple[TempoMap, str]:
    """The tempo of one score and where it came from: its metronome marks, else its MIDI
    score's (the \\midi block's \\tempo), else its first tempo word, else DEFAULT_QPM."""
    if any(count for _, _, count in score["tempotext"]) and score["tempo"]:
        return TempoMap(score["tempo"]), "metronome marks"
    if midi_map:
        return TempoMap(midi_map), "MIDI score"
    q = _tempo_word(score["tempotext"])
    if q:
        return TempoMap([(0.0, q / 4.0)]), "tempo word"
    return TempoMap([(0.0, DEFAULT_QPM / 4.0)]), "default"


def velocities(score: dict, starts: np.ndarray) -> np.ndarray:
    """MIDI velocity of notes starting at score positions ``starts`` (whole notes) from the
    dynamics (piecewise constant), hairpins (linear ramps to the next mark or by HAIRPIN_STEP)
    and accents (sf, fz, ...: only the notes at that position)."""
    marks = sorted((w, DYNAMICS[t]) for w, t in score["dynamic"] if t in DYNAMICS)
    accents = {round(w, 6): ACCENTS[t] for w, t in score["dynamic"] if t in ACCENTS}
    level_w = np.array([0.0] + [w for w, _ in marks])
    level_v = np.array([DYNAMICS["mf"]] + [v for _, v in marks], dtype=np.float64)

    def level(w):
        return level_v[np.clip(np.searchsorted(level_w, w, side="right") - 1, 0, len(level_w) - 1)]

    vel = level(starts).astype(np.float64)
    # hairpins: a start (-1) until the next stop (1) or start
    hp = sorted(score["hairpin"])
    for i, (w0, kind, d) in enumerate(hp):
        if d != -1:
            continue
        w1 = next((w for w, _, dd in hp[i + 1:] if w > w0), None)
        if w1 is None:
            continue
        v0 = float(level(w0))
        nxt = [v for w, v in marks if w1 - 1e-6 <= w <= w1 + 0.25]
        v1 = nxt[0] if nxt else v0 + (HAIRPIN_STEP if kind == "cresc" else -HAIRPIN_STEP)
        sel = (starts >= w0) & (starts < w1)
        vel[sel] = v0 + (v1 - v0) * (starts[sel] - w0) / max(w1 - w0, 1e-6)
    for w, v in accents.items():
        vel[np.abs(starts - w) < 1e-6] = v
    return np.clip(np.round(vel), 1, 127)


def pedal_intervals(score: dict) -> list[tuple[float, float]]:
    """Sustain pedal down intervals (whole notes) from \\sustainOn (-1) / \\sustainOff (1)
    marks of all staves; a pedal left down is lifted at the score's end."""
    out, down = [], None
    for w, d in sorted(score["sustain"], key=lambda e: (e[0], -e[1])):  # an off before an on
        if d == -1 and down is None:
            down = w
        elif d == 1 and down is not None:
            if w > down:
                out.append((down, w))
            down = None
    if down is not None and score["end"] > down:
        out.append((down, score["end"]))
    return out


def read_pdf(pdf: Path, dpi: float = DPI):
    """Pages (uint8 grayscale at ``dpi``) and the capture's links on them:
    heads {id: (page, x0, y0, x1, y1) px}, staves [(page, score, staff, lines, x0, y0, x1, y1)]."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as c

    doc = pdfium.PdfDocument(str(pdf))
    scale = dpi / 72.0
    pages, heads, staves = [], {}, []
    try:
        for k in range(len(doc)):
            page = doc[k]
            _, height = page.get_size()
            bitmap = page.render(scale=scale, grayscale=True)
            arr = np.array(bitmap.to_numpy(), dtype=np.uint8, copy=True)
            bitmap.close()
            pages.append(arr.reshape(arr.shape[:2]))
            for i in range(c.FPDFPage_GetAnnotCount(page)):
                annot = c.FPDFPage_GetAnnot(page, i)
                try:
                    link = c.FPDFAnnot_GetLink(annot)
                    action = c.FPDFLink_GetAction(link) if link else None
                    if not action:
                        continue
                    n = c.FPDFAction_GetURIPath(doc, action, None, 0)
                    buf = ctypes.create_string_buffer(n)
                    c.FPDFAction_GetURIPath(doc, action, buf, n)
                    uri = buf.value.decode("ascii", "replace")
                    if not uri.startswith("ash:"):
                        continue
                    r = c.FS_RECTF()
                    c.FPDFAnnot_GetRect(annot, r)
                    box = (r.left * scale, (height - r.top) * scale, r.right * scale,
                           (height - r.bottom) * scale)
                    if uri.startswith("ash:staff-"):
                        s, st, lines = (int(v) for v in uri[len("ash:staff-"):].split("-"))
                        staves.append((k, s, st, lines, *box))
                    else:
                        heads.setdefault(uri[4:], (k, *box))
                finally:
                    c.FPDFPage_CloseAnnot(annot)
            page.close()
    finally:
        doc.close()
    return pages, heads, staves


def _refine(page: np.ndarray, ys: list[float], x0: float, x1: float) -> list[float]:
    """Each staff line's row: the darkest within 2 px of where the link box puts it (the box
    holds the lines' thickness, so its spacing is a little off), to a tenth of a pixel."""
    a, b = int(max(x0, 0)), int(min(x1, page.shape[1]))
    out = []
    for y in ys:
        r0, r1 = int(max(np.floor(y) - 2, 0)), int(min(np.floor(y) + 3, page.shape[0]))
        if b - a < 8 or r1 - r0 < 3:
            out.append(y)
            continue
        dark = 255.0 - page[r0:r1, a:b].mean(axis=1)
        w = np.clip(dark - dark.min(), 0, None) ** 2
        out.append(float(r0 + (w * np.arange(r1 - r0)).sum() / w.sum()) if w.sum() > 0 else y)
    return out


def _systems(staves, pages=None) -> tuple[list[dict], list[tuple]]:
    """Staves (page, score, staff, lines, box) → systems in reading order, and for each system
    its staves [(score, staff, y0, y1)]. A new system starts where, going down a page, the staff
    number does not grow or the score changes. With ``pages``, line rows are refined on the
    pixels (``_refine``)."""
    systems, members = [], []
    for page in sorted({s[0] for s in staves}):
        cur = None
        for _, score, staff, lines, x0, y0, x1, y1 in sorted((s for s in staves if s[0] == page),
                                                             key=lambda s: s[5]):
            if cur is None or score != cur["score"] or staff <= cur["last"]:
                cur = {"score": score, "last": -1, "staves": []}
                members.append(cur)
            cur["last"] = staff
            n = max(lines, 1)
            space = (y1 - y0) / (n - 1 + 0.1) if n > 1 else 0.0
            top = y0 + 0.05 * space
            ys = [top + i * space for i in range(n)]
            if pages is not None:
                ys = _refine(pages[page], ys, x0, x1)
            cur["staves"].append((score, staff, x0, x1, ys))
            cur["page"] = page
    out = []
    for m in members:
        st = m["staves"]
        out.append({"page": m["page"], "x0": min(s[2] for s in st), "x1": max(s[3] for s in st),
                    "y0": st[0][4][0], "y1": st[-1][4][-1], "staff_lines": [s[4] for s in st]})
    return out, [[(s[0], s[1], s[4][0], s[4][-1]) for s in m["staves"]] for m in members]


@dataclass
class LilyEngraving(Engraving):
    """An ``Engraving`` with what the performance needs from the score: per-note ``velocity``
    (n,) from the dynamics, ``pedal`` (k, 2) sustain-down intervals in score seconds, and a
    record of how the timing was found (``timing``: per score, the tempo source)."""

    velocity: np.ndarray | None = None
    pedal: np.ndarray | None = None
    timing: list | None = None


def engrave_ly(main: Path, work: Path, style: LilyStyle = LilyStyle(), timeout: float = 600,
               dpi: float = DPI) -> LilyEngraving:
    """Engrave the prepared LilyPond score ``main`` (sources already in a private copy, see
    ``prepare_sources``) into ``work``; return pages, notehead table (``NOTEHEAD_FIELDS``; tie
    continuations left out as the Verovio engraving does), systems, notes (onset s, duration s,
    MIDI pitch; ties merged), staff space (px), velocities, pedal. Raises ``LilyPondError``."""
    out = compile_score(main, work, style, timeout)
    scores = read_capture(out["capture"])
    if not any(s["notes"] for s in scores):
        raise LilyPondError("no notes engraved")
    pages, boxes, staves = [], {}, []
    for pdf in out["pdfs"]:
        p, b, st = read_pdf(pdf, dpi)
        off = len(pages)
        pages += p
        for k, v in b.items():
            boxes.setdefault(k, (v[0] + off, *v[1:]))
        staves += [(s0 + off, *rest) for s0, *rest in st]
    systems, members = _systems(staves, pages)
    if not systems:
        raise LilyPondError("no staff found on the pages")
    maps = midi_tempo_maps(out["midis"])
    rows, notes, vel, pedal, timing = [], [], [], [], []
    offset = 0.0
    for si, score in enumerate(scores):
        if not score["notes"]:
            continue
        midi = maps[si] if len(maps) == len(scores) else (maps[0] if maps else None)
        tempo, source = score_tempo(score, midi)
        ids = list(score["notes"])
        arr = np.array([score["notes"][i] for i in ids], dtype=np.float64)
        staff, main_w, grace, dur_w, pitch = arr.T
        start_w = main_w + grace
        onset = tempo.seconds(main_w) + grace * tempo.seconds_per_whole(main_w)
        end = np.where(grace < 0, onset + np.minimum(dur_w, -grace) * tempo.seconds_per_whole(main_w),
                       tempo.seconds(main_w + dur_w))
        # ties: a continuation's sound belongs to the note its tie chain starts at
        index = {i: k for k, i in enumerate(ids)}
        root = list(range(len(ids)))
        for a, b in sorted(score["ties"], key=lambda t: start_w[index.get(t[1], 0)]):
            if a in index and b in index and pitch[index[a]] == pitch[index[b]]:
                root[index[b]] = root[index[a]]
        for k in range(len(ids)):
            r = k
            while root[r] != r:
                r = root[r]
            root[k] = r
        cont = np.array([root[k] != k for k in range(len(ids))])
        for k in np.flatnonzero(cont):
            end[root[k]] = max(end[root[k]], end[k])
        v = velocities(score, start_w)
        score_end = max(float(tempo.seconds(score["end"])), float(end.max()))
        timing.append({"score": si + 1, "tempo": source, "seconds": round(score_end, 2),
                       "qpm": round(float(tempo.rate[0]) * 4, 1)})
        for k in np.flatnonzero(~cont):
            notes.append((offset + onset[k], max(end[k] - onset[k], 0.02), pitch[k]))
            vel.append(v[k])
        for a, b in pedal_intervals(score):
            pedal.append((offset + float(tempo.seconds(a)), offset + float(tempo.seconds(b))))
        # noteheads: position from their link, system/staff from the staff they sit on
        for k, nid in enumerate(ids):
            if cont[k] or nid not in boxes:
                continue
            page, x0, y0, x1, y1 = boxes[nid]
            x, y = (x0 + x1) / 2, (y0 + y1) / 2
            best = None
            for sy, (sys_, mem) in enumerate(zip(systems, members)):
                if sys_["page"] != page:
                    continue
                for pos, (sc, st, t, b) in enumerate(mem):
                    if sc != si + 1 or st != int(staff[k]):
                        continue
                    gap = max(t - y, y - b, 0.0)
                    if best is None or gap < best[0]:
                        best = (gap, sy, pos)
            if best is None:
                continue
            rows.append((page, x, y, x1 - x0, y1 - y0, best[2], best[1], pitch[k], offset + onset[k],
                         max(end[k] - onset[k], 0.02)))
        offset += score_end + SCORE_GAP
    if not rows:
        raise LilyPondError("no notehead could be located on the pages")
    arr = np.array(rows, dtype=np.float64)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 6], arr[:, 8]))]
    dtypes = {"page": np.int16, "staff": np.int8, "system": np.int16, "pitch": np.int8}
    noteheads = {f: arr[:, i].astype(dtypes.get(f, np.float32)) for i, f in enumerate(NOTEHEAD_FIELDS)}
    order = np.lexsort((np.array([n[2] for n in notes]), np.array([n[0] for n in notes])))
    notes_arr = np.array(notes, dtype=np.float64)[order]
    space = float(np.median([np.mean(np.diff(s["staff_lines"][0])) for s in systems
                             if len(s["staff_lines"][0]) > 1] or [7.0]))
    return LilyEngraving(pages=pages, noteheads=noteheads, systems=systems, notes=notes_arr,
                         staff_space=space, velocity=np.asarray(vel, dtype=np.float64)[order],
                         pedal=np.array(sorted(pedal), dtype=np.float64).reshape(-1, 2),
                         timing=timing)


def style_dict(style: LilyStyle) -> dict:
    return {"engraver": "lilypond", **asdict(style)}
