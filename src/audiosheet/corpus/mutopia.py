"""The Mutopia Project's LilyPond sources as a corpus source (issue 15; MSMD's origin).

A checkout of https://github.com/MutopiaProject/MutopiaProject (``scripts/fetch_mutopia.sh``)
holds one folder per piece, ``ftp/COMPOSER/OPUS/PIECE/``, with its LilyPond file(s) directly in
it or in a ``PIECE-lys/`` subfolder. Here: which of those are keyboard solo music (piano,
harpsichord, clavichord; not duets, organ or voice), which file of a folder is a score (several
movements may share a folder; of an A4/letter pair only the A4 file is kept), what the header
says (composer, title, opus, source, licence) and the work keys that group a piece with its
work across sources (catalogue numbers: Op., BWV, K., D., Hob., WoO, L., S., HWV).
"""
from __future__ import annotations

import re
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

HEADER_FIELDS = ("title", "subtitle", "composer", "opus", "piece", "instrument", "source",
                 "license", "copyright", "mutopiatitle", "mutopiacomposer", "mutopiaopus",
                 "mutopiainstrument", "date", "style", "maintainer")
KEYBOARD = re.compile(r"\b(piano(forte)?|harpsichord|clavichord|fortepiano|keyboard|clavier|"
                      r"cembalo|virginals?|spinet|clavecin)\b", re.I)
# what, besides the keyboard names (alternatives: "Harpsichord, Piano, Clavichord"), makes an
# instrument field not keyboard solo
NOT_SOLO = re.compile(r"\b(duet|duo|trio|quartet|quintet|ensemble|4[ -]?hands?|four[ -]hands?|"
                      r"2 pianos|two pianos|voice|vocal|soprano|alto|tenor|baritone|bass|choir|"
                      r"chorus|satb|organ|orgue|violine?|viola|cello|violoncello|flute|oboe|"
                      r"clarinet|bassoon|horn|trumpet|trombone|guitar|orchestra|strings|recorder|"
                      r"harp|lute|mandolin|continuo|solo and)\b", re.I)
_FIELD = re.compile(r'^\s*(' + "|".join(HEADER_FIELDS) + r')\s*=\s*"((?:[^"\\]|\\.)*)"', re.M)


class MutopiaError(ValueError):
    """Not a Mutopia checkout, or a piece that cannot be read."""


@dataclass
class MutopiaPiece:
    piece_id: str  # "mutopia-COMPOSER-OPUS-PIECE[-FILE]", file-name safe
    folder: str  # ftp/COMPOSER/OPUS/PIECE, relative to the checkout
    main: str  # the score's .ly file, relative to ``folder``
    header: dict = field(default_factory=dict)

    @property
    def composer(self) -> str:
        return self.header.get("composer") or self.header.get("mutopiacomposer") or ""

    @property
    def title(self) -> str:
        t = self.header.get("title") or self.header.get("mutopiatitle") or Path(self.main).stem
        sub = self.header.get("subtitle") or self.header.get("piece") or ""
        return f"{t}: {sub}" if sub and sub.lower() not in t.lower() else t

    @property
    def catalogue(self) -> str:
        return self.header.get("opus") or self.header.get("mutopiaopus") or ""

    @property
    def instrument(self) -> str:
        return self.header.get("mutopiainstrument") or self.header.get("instrument") or ""

    @property
    def surname(self) -> str:
        return composer_surname(self.header.get("mutopiacomposer") or self.folder.split("/")[1])

    def work_keys(self) -> list[str]:
        keys = catalogue_keys(self.surname, f"{self.catalogue} {self.title}")
        return keys or [f"title:{self.surname}:{_norm(self.title)}"]


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def composer_surname(name: str) -> str:
    """'BeethovenLv' → 'beethoven', 'Mendelssohn-BartholdyF' → 'mendelssohn',
    'Beethoven, Ludwig van' / 'ludwig_van' forms → their first word."""
    m = re.match(r"^([A-Z][a-z]+(?:-[A-Z][a-z]+)*?)(?:-?[A-Z][a-z]?[A-Z]*)?$", name)
    base = m.group(1) if m else name
    first = _norm(base.replace("-", " ").replace("_", " ").split(",")[0]).split()
    return first[0] if first else "unknown"


_ROMAN = r"(?:x{0,3})(?:ix|iv|v?i{0,3})"
CATALOGUES = [  # (pattern on normalised text, key format); the first hit of each pattern counts
    (re.compile(r"\bbwv\s*(?:anh\s*)?(\d+)"), "bwv:{0}"),
    (re.compile(r"\bop(?:us)?\s*(?:posth\s*)?(\d+)"), "cat:{s}:op{0}"),
    (re.compile(r"\bk(?:v)?\s*(\d+)"), "cat:{s}:k{0}"),
    (re.compile(r"\bhob\s*(" + _ROMAN + r")\s*(\d+)"), "cat:{s}:hob{0}:{1}"),
    (re.compile(r"\bwoo\s*(\d+)"), "cat:{s}:woo{0}"),
    (re.compile(r"\bhwv\s*(\d+)"), "cat:{s}:hwv{0}"),
]
PER_COMPOSER = {  # catalogues only one composer uses a bare letter for
    "schubert": (re.compile(r"\bd\s*(\d+)"), "cat:{s}:d{0}"),
    "debussy": (re.compile(r"\bl\s*(\d+)"), "cat:{s}:l{0}"),
    "liszt": (re.compile(r"\bs\s*(\d+)"), "cat:{s}:s{0}"),
    "scarlatti": (re.compile(r"\bk\s*(\d+)"), "cat:{s}:k{0}"),
}


def catalogue_keys(surname: str, text: str) -> list[str]:
    """Work keys from catalogue numbers in ``text`` (opus field, title, or a folder name such as
    'chopin_frederic_etudes_op_25'). Opus numbers key the whole opus (Op. 2 No. 1 and Op. 2
    No. 3 are one group: splits by work never cut an opus). BWV keys are ``bwv:N`` as in the
    music21 source, so the two sources' Bach pieces group together."""
    t = _norm(text)
    keys = []
    for pat, fmt in CATALOGUES + ([PER_COMPOSER[surname]] if surname in PER_COMPOSER else []):
        m = pat.search(t)
        if m and all(m.groups()):
            keys.append(fmt.format(*m.groups(), s=surname))
    return sorted(set(keys))


def read_header(files: list[Path]) -> dict:
    """Header fields of a piece: from its main file first, then from the files it includes."""
    out: dict[str, str] = {}
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for k, v in _FIELD.findall(text):
            v = re.sub(r"\\(.)", r"\1", v).strip()
            if v:
                out.setdefault(k, v)
    return out


# file names of what is not a score of its own: MIDI-only versions, duet parts, tests
NOT_A_SCORE = re.compile(r"(^|[-_])(midi?|test[-_].*|.*four[-_]?hands|.*4[-_]?hands|primo|secondo)$",
                         re.I)


def _mains(folder: Path) -> list[Path]:
    """The score files of a piece folder: .ly files (in it or its -lys subfolder) with a
    \\score, \\book or top-level music that no other file of the folder includes; of an
    A4/letter pair the A4 file."""
    files = sorted(p for p in folder.rglob("*.ly") if p.is_file())
    texts = {p: p.read_text(errors="replace") for p in files}
    included = set()
    for p, t in texts.items():
        for name in re.findall(r'\\include\s+"([^"]+)"', t):
            included.add((p.parent / name).resolve())
            included.add((p.parent / name.lower()).resolve())
    mains = [p for p in files if p.resolve() not in included and not NOT_A_SCORE.search(p.stem)
             and re.search(r"\\(score|book|include)\b|<<|\\new\s", texts[p])]
    stems = {p.stem for p in mains}
    keep = []
    for p in mains:
        low = p.stem.lower()
        if re.search(r"[-_](let|letter)$", low):
            twin = re.sub(r"(let|letter)$", "a4", p.stem, flags=re.I)
            if twin in stems or twin.replace("a4", "A4") in stems:
                continue
        keep.append(p)
    return keep


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")


def list_pieces(root: str | Path) -> tuple[list[MutopiaPiece], list[tuple[str, str]]]:
    """Keyboard solo pieces of a Mutopia checkout (sorted by id), and every folder not taken
    with the reason: [(ftp path, reason)]. Raises ``MutopiaError`` when ``root`` has no ftp/."""
    root = Path(root)
    ftp = root / "ftp"
    if not ftp.is_dir():
        raise MutopiaError(f"{root}: not a Mutopia checkout (no ftp/ folder); fetch one with "
                           f"scripts/fetch_mutopia.sh")
    pieces, skipped = [], []
    for folder in sorted(p for p in ftp.glob("*/*/*") if p.is_dir()):
        rel = folder.relative_to(root).as_posix()
        try:
            mains = _mains(folder)
        except OSError as exc:
            skipped.append((rel, f"unreadable: {exc}"))
            continue
        if not mains:
            skipped.append((rel, "no LilyPond score file"))
            continue
        for main in mains:
            others = sorted(p for p in folder.rglob("*.ly") if p != main)
            others += sorted(folder.rglob("*.ily"))
            header = read_header([main] + others)
            inst = header.get("mutopiainstrument") or header.get("instrument") or ""
            mrel = main.relative_to(folder).as_posix()
            if not KEYBOARD.search(inst):
                skipped.append((f"{rel}/{mrel}", f"not keyboard music (instrument: {inst or 'none'})"))
                continue
            if NOT_SOLO.search(KEYBOARD.sub(" ", inst)):
                skipped.append((f"{rel}/{mrel}", f"not keyboard solo (instrument: {inst})"))
                continue
            pid = "mutopia-" + _safe("-".join(folder.relative_to(ftp).parts))
            if len(mains) > 1:
                pid += "-" + _safe(main.stem)
            pieces.append(MutopiaPiece(pid, rel, mrel, header))
    return sorted(pieces, key=lambda p: p.piece_id), skipped


def checkout_commit(root: str | Path) -> str | None:
    """The git commit of a Mutopia checkout, or None."""
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None


# ----------------------------------------------------------------------------------------------
# works held out of training


def held_out_keys(path: str | Path | None = None) -> dict[str, str]:
    """Work keys that must never be trained on → why (``data/held_out_works.tsv``: the works of
    the real-material development set, its scanned sheets and its recordings' sources)."""
    p = Path(path) if path else Path(__file__).parents[1] / "data" / "held_out_works.tsv"
    out = {}
    for line in p.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, why = line.partition("\t")
            out[key.strip()] = why.strip()
    return out


def scan_work_keys(name: str) -> list[str]:
    """Work keys of a scanned work's folder name ('chopin_frederic_etudes_op_25')."""
    surname = composer_surname(name.split("_")[0].capitalize())
    return catalogue_keys(surname, name.replace("_", " "))


# ----------------------------------------------------------------------------------------------
# engraving a piece


def engrave_piece(root: str | Path, folder: str, main: str, rng, timeout: float = 600):
    """Engrave one Mutopia piece in a private copy of its folder (sources brought to LilyPond
    2.24 by ``convert-ly``) with a seeded ``LilyStyle``. Returns (LilyEngraving, style record).
    Raises ``lilypond.LilyPondError`` with the reason."""
    import shutil
    import tempfile

    from audiosheet.corpus.lilypond import LilyStyle, engrave_ly, lilypond_version, prepare_sources, style_dict

    style = LilyStyle.sample(rng)
    with tempfile.TemporaryDirectory(prefix="audiosheet-ly-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(Path(root) / folder, src, symlinks=False)
        main_path = src / main
        prepare_sources(src, main_path)
        eng = engrave_ly(main_path, Path(tmp) / "out", style, timeout=timeout)
    return eng, {**style_dict(style), "lilypond": lilypond_version()}


def chord_sequence(notes) -> list[tuple[int, ...]]:
    """A score's music as its sequence of chords: the sorted MIDI pitches sounding together at each
    onset (``notes`` (n, 3): onset s, duration s, MIDI pitch)."""
    import numpy as np

    notes = np.asarray(notes, float)
    if len(notes) == 0:
        return []
    notes = notes[np.lexsort((notes[:, 2], notes[:, 0]))]
    new = np.r_[True, np.diff(notes[:, 0]) > 1e-6]
    groups = np.split(notes[:, 2].astype(int), np.flatnonzero(new)[1:])
    return [tuple(sorted(set(g.tolist()))) for g in groups]


def overlapping(pieces: dict[str, tuple[str, object]], k: int = 8,
                contained: float = 0.9) -> dict[str, str]:
    """Pieces to leave out because another piece of the same folder has their music, with the
    reason. ``pieces``: piece id → (folder, notes (n, 3)).

    Some Mutopia folders hold a file of the whole work beside one file per movement (Bach's
    partitas BWV 825–830), or the same music twice (a file with and without a title page;
    Mozart K. 401 "two hands"). Kept both, a recording of a movement has two right scores and
    identification tests mark one of them wrong. Piece B lies in piece A when at least
    ``contained`` of B's chord k-grams (``chord_sequence``) occur in A. A piece holding another,
    more than 10 % longer one is a compilation and is left out (its movements stay); of two
    holding each other, the later id is left out."""
    by_folder: dict[str, list[str]] = {}
    for pid, (folder, _) in pieces.items():
        by_folder.setdefault(folder, []).append(pid)
    drop: dict[str, str] = {}
    for folder, ids in by_folder.items():
        if len(ids) < 2:
            continue
        grams = {}
        for pid in ids:
            seq = chord_sequence(pieces[pid][1])
            grams[pid] = {tuple(seq[i:i + k]) for i in range(len(seq) - k + 1)}
        def holds(a: str, b: str) -> bool:
            return bool(grams[b]) and len(grams[a] & grams[b]) >= contained * len(grams[b])

        for a in sorted(ids):  # compilations first, so a duplicate's twin is never one of them
            b = next((b for b in sorted(ids) if b != a and holds(a, b)
                      and len(grams[a]) > 1.1 * len(grams[b])), None)
            if b:
                drop[a] = f"holds the music of {b}, which is kept (a whole work beside its movements)"
        for a in sorted(ids):
            b = next((b for b in sorted(ids) if b < a and b not in drop and a not in drop
                      and holds(a, b) and holds(b, a)), None)
            if b:
                drop[a] = f"the same music as {b}, which is kept"
    return drop
