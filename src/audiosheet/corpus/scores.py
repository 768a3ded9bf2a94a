"""Score sources: find scores, load any supported format, lay them out as a piano grand staff.

First stage of the corpus data flow (scores → pages + audio → snippets). A score is read with
music21 (MusicXML/mxl, MEI, Humdrum kern, ABC), reduced to two staves (upper voices treble, lower
voices bass) so pages look like the piano scores users have, and written back as MusicXML for
engraving. Each piece also gets *work keys*: strings that identify the work it belongs to, so that
movements and re-harmonisations of one work never end up in two splits.
"""
from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCORE_EXTENSIONS = {".mxl": 0, ".musicxml": 1, ".xml": 2, ".mei": 3, ".krn": 4, ".abc": 5}
"""Supported score files, in order of preference when one piece exists in several formats."""

# music21 corpus collections of single-line tunes: the separate, flagged monophonic pool
MONOPHONIC_COLLECTIONS = {"essenFolksong", "ryansMammoth", "oneills1850", "airdsAirs",
                          "nottingham-dataset", "miscFolk"}
# not pieces: analyses, demos and exercises
SKIP_COLLECTIONS = {"demos", "theoryExercises", "leadSheet", "choraleAnalyses", "_metadataCache",
                    "__pycache__"}


class ScoreError(ValueError):
    """A score that cannot be used; the message names the file and the reason."""


@dataclass
class ScoreSource:
    """One score file to turn into a corpus piece."""

    piece_id: str  # unique, filesystem-safe name of the piece
    path: str  # absolute path of the score file
    origin: str  # "music21" or the user folder
    group_hint: str  # folder-derived work key ("" if the folder says nothing)
    monophonic_pool: bool = False


@dataclass
class PianoScore:
    """A score reduced to a piano grand staff, ready to engrave."""

    musicxml: str
    title: str
    composer: str
    n_source_parts: int
    monophonic: bool
    duration_quarters: float
    work_keys: list[str] = field(default_factory=list)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")


def music21_corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def list_sources(source: str, monophonic: bool = False) -> list[ScoreSource]:
    """All score files of ``source`` ("music21" or a folder), one per piece, sorted by piece id.

    A piece stored in several formats (e.g. movement1.krn and movement1.mxl) is listed once, in the
    preferred format. Monophonic collections of the music21 corpus are included only if asked.
    """
    if source == "music21":
        root, origin = music21_corpus_dir(), "music21"
    else:
        root, origin = Path(source).expanduser().resolve(), str(Path(source).expanduser().resolve())
        if not root.is_dir():
            raise ScoreError(f"{source}: not a folder (give a folder of scores or 'music21')")
    best: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        ext = path.suffix.lower()
        if ext not in SCORE_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(root)
        parts = rel.parts
        if any(p in SKIP_COLLECTIONS or p.startswith(".") for p in parts):
            continue
        mono = origin == "music21" and parts[0] in MONOPHONIC_COLLECTIONS
        if mono and not monophonic:
            continue
        key = str(rel.with_suffix(""))
        if key not in best or SCORE_EXTENSIONS[ext] < SCORE_EXTENSIONS[best[key].suffix.lower()]:
            best[key] = path
    out = []
    for key, path in sorted(best.items()):
        rel = path.relative_to(root)
        folder = "/".join(rel.parts[:-1])
        out.append(ScoreSource(
            piece_id=_safe(key.replace("/", "-")),
            path=str(path),
            origin=origin,
            # in the music21 corpus a sub-folder of a composer is one work (opus18no1/movement2)
            group_hint=folder if (origin != "music21" or len(rel.parts) > 2) else "",
            monophonic_pool=origin == "music21" and rel.parts[0] in MONOPHONIC_COLLECTIONS,
        ))
    return out


def unsupported_files(folder: str | Path) -> list[Path]:
    """Files of a user folder that are not scores audiosheet can read (reported, not built)."""
    root = Path(folder).expanduser().resolve()
    return [p for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix.lower() not in SCORE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)]


def select_sources(sources: list[ScoreSource], limit: int | None) -> list[ScoreSource]:
    """``limit`` sources spread evenly over the sorted list (so a small build mixes collections)."""
    if not limit or limit >= len(sources):
        return sources
    idx = np.unique(np.linspace(0, len(sources) - 1, limit).round().astype(int))
    return [sources[i] for i in idx]


def load_score(path: str | Path):
    """Parse a score file with music21; one clear ``ScoreError`` for every way it can fail."""
    import music21

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SCORE_EXTENSIONS:
        raise ScoreError(f"{path}: unsupported score format '{ext or '(none)'}' "
                         f"(supported: {', '.join(sorted(SCORE_EXTENSIONS))})")
    if not path.is_file():
        raise ScoreError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ScoreError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = music21.converter.parse(str(path), forceSource=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ScoreError(f"{path}: cannot parse score ({msg})") from None
    if isinstance(s, music21.stream.Opus):
        scores = list(s.scores)
        if not scores:
            raise ScoreError(f"{path}: the file holds no score")
        s = scores[0]
    if not isinstance(s, music21.stream.Score):
        wrapped = music21.stream.Score()
        wrapped.insert(0, s)
        s = wrapped
    if not s.recurse().notes.first():
        raise ScoreError(f"{path}: the score has no notes")
    return s


def _mean_pitch(part) -> float:
    ps = [p.midi for n in part.recurse().notes for p in n.pitches]
    return float(np.mean(ps)) if ps else 60.0


def _staff_from_parts(parts, treble: bool, tempo: bool = True):
    """One piano staff from some parts: up to two parts become voices, more are chordified.

    ``tempo``: keep the metronome marks (on one staff only, so they are not printed twice).
    """
    from music21 import clef, stream

    staff = stream.PartStaff()
    if len(parts) <= 2:
        measures = [list(p.getElementsByClass("Measure")) for p in parts]
        for i in range(min(len(m) for m in measures)):
            m0 = measures[0][i]
            m = stream.Measure(number=m0.number)
            kinds = ["TimeSignature", "KeySignature"] + (["MetronomeMark"] if tempo else [])
            for el in m0.getElementsByClass(kinds):
                m.insert(el.offset, copy.deepcopy(el))
            for vi, ml in enumerate(measures):
                v = stream.Voice(id=str(vi + 1))
                for el in ml[i].flatten().notesAndRests:
                    v.insert(el.offset, copy.deepcopy(el))
                m.insert(0, v)
            staff.append(m)
    else:
        chords = stream.Score(parts).chordify()
        for m in chords.getElementsByClass("Measure"):
            if not tempo:
                for el in list(m.getElementsByClass("MetronomeMark")):
                    m.remove(el)
            staff.append(m)
    measures = list(staff.getElementsByClass("Measure"))
    if not measures:
        raise ScoreError("no measures")
    first = measures[0]
    for c in list(first.getElementsByClass("Clef")):
        first.remove(c)
    first.insert(0, clef.TrebleClef() if treble else clef.BassClef())
    for n in staff.recurse().notes:  # a piano score: no lyrics
        n.lyrics = []
    return staff


def _work_keys(src: ScoreSource, s) -> list[str]:
    md = s.metadata
    composer = _safe((md.composer if md and md.composer else "").lower())[:40]
    keys = []
    if src.group_hint:
        keys.append(f"folder:{src.group_hint}")
    parent = getattr(md, "parentTitle", None) if md else None
    if parent:
        keys.append(f"work:{composer}:{_norm(parent)}")
    stem = Path(src.path).stem
    bwv = re.match(r"bwv(\d+)", stem)
    if bwv and src.origin == "music21":
        keys.append(f"bwv:{bwv.group(1)}")  # movements of one cantata
        title = _chorale_title(stem)
        if title:
            keys.append(f"chorale:{_norm(title)}")
        sig = _melody_signature(s)
        if sig:
            keys.append(f"melody:{sig}")  # the same chorale tune harmonised again
    elif md and md.title and not parent and not src.group_hint:
        keys.append(f"title:{composer}:{_norm(md.title)}")
    if not keys:
        keys.append(f"piece:{src.piece_id}")
    return keys


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


_CHORALES: dict | None = None


def _chorale_title(stem: str) -> str | None:
    global _CHORALES
    if _CHORALES is None:
        try:
            from music21.corpus.chorales import ChoraleList

            _CHORALES = {str(k): v["title"] for k, v in ChoraleList().byBWV.items()}
        except Exception:
            _CHORALES = {}
    m = re.match(r"bwv([\d.]+)", stem)
    return _CHORALES.get(m.group(1).rstrip(".")) if m else None


def _melody_signature(s, n: int = 10) -> str | None:
    """Interval sequence of the top part's first ``n`` pitch changes (transposition-invariant)."""
    if not s.parts:
        return None
    top = max(s.parts, key=_mean_pitch)
    ps = [n_.pitches[-1].midi for n_ in top.recurse().notes]
    ps = [p for i, p in enumerate(ps) if i == 0 or p != ps[i - 1]]
    if len(ps) < n + 1:
        return None
    return ",".join(str(b - a) for a, b in zip(ps[:n], ps[1:n + 1]))


def to_piano(src: ScoreSource) -> PianoScore:
    """Load ``src`` and lay it out as a piano grand staff (or one staff for a monophonic tune)."""
    from music21 import layout, metadata, stream
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    s = load_score(src.path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = s.toSoundingPitch()
            for inst in list(s.recurse().getElementsByClass("Instrument")):
                inst.activeSite.remove(inst)  # a piano score: the source instruments go
            parts = [p for p in s.parts if p.recurse().notes.first() is not None]
            if not parts:
                raise ScoreError("no part has notes")
            keys = _work_keys(src, s)
            parts.sort(key=_mean_pitch, reverse=True)
            out = stream.Score()
            if len(parts) == 1:
                out.insert(0, _staff_from_parts(parts, treble=_mean_pitch(parts[0]) >= 57))
            else:
                k = (len(parts) + 1) // 2
                upper, lower = parts[:k], parts[k:]
                out.insert(0, _staff_from_parts(upper, treble=True))
                # lower voices in the bass clef unless they sit high (above E4 on average)
                out.insert(0, _staff_from_parts(lower, treble=np.mean([_mean_pitch(p) for p in lower]) >= 64,
                                                tempo=False))
                out.insert(0, layout.StaffGroup(list(out.parts), symbol="brace"))
            md = s.metadata
            title = (md.title or md.movementName or "") if md else ""
            stem = Path(src.path).stem
            if title.lower().endswith(tuple(SCORE_EXTENSIONS)) or not title:
                title = stem
            chorale = _chorale_title(stem) if stem.startswith("bwv") else None
            if chorale:
                title = f"{chorale} (BWV {stem[3:]})"
            parent = getattr(md, "parentTitle", None) if md else None
            if parent and parent not in title:
                title = f"{parent}: {title}"
            composer = (md.composer or "") if md else ""
            out.metadata = metadata.Metadata(title=title, composer=composer)
            xml = GeneralObjectExporter(out).parse().decode("utf-8")
    except ScoreError as exc:
        raise ScoreError(f"{src.path}: {exc}") from None
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ScoreError(f"{src.path}: cannot lay out as piano score ({msg})") from None
    return PianoScore(musicxml=xml, title=title, composer=composer, n_source_parts=len(parts),
                      monophonic=len(parts) == 1, duration_quarters=float(s.highestTime),
                      work_keys=keys)
