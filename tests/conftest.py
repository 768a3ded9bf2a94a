"""Shared fixtures: a folder of tiny scores (and bad files) and a corpus built from it in seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

# (name, bass line, treble line) in Humdrum kern, one quarter note per token
_PIECES = {
    "alpha": ("C D E F G A B c", "e f g a b cc dd ee"),
    "beta": ("G, A, B, C D E F G", "g a b cc dd ee ff gg"),
    "gamma": ("F E D C B, A, G, F,", "a g f e d c B A"),
}


def kern(bass: str, treble: str, repeat: int = 2) -> str:
    """A two-part kern score: bass and treble lines of quarter notes, 4/4, ``repeat`` times."""
    b, t = bass.split() * repeat, treble.split() * repeat
    lines = ["!!!COM: Test", "**kern\t**kern", "*clefF4\t*clefG2", "*M4/4\t*M4/4", "*MM100\t*MM100"]
    for i, (x, y) in enumerate(zip(b, t)):
        if i % 4 == 0:
            lines.append(f"={i // 4 + 1}\t={i // 4 + 1}")
        lines.append(f"4{x}\t4{y}")
    lines += ["==\t==", "*-\t*-"]
    return "\n".join(lines) + "\n"


def four_part_musicxml(path: Path) -> Path:
    """A four-part chorale-like MusicXML score: a C-major scale in octaves 5, 4, 3 and 2."""
    import music21 as m21

    s = m21.stream.Score()
    for octave in (5, 4, 3, 2):
        p = m21.stream.Part()
        for step in "CDEFGABC":
            p.append(m21.note.Note(f"{step}{octave}", quarterLength=1))
        s.insert(0, p)
    s.write("musicxml", fp=str(path))
    return path


def write_sources(folder: Path, bad: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (b, t) in _PIECES.items():
        (folder / f"{name}.krn").write_text(kern(b, t))
    four_part_musicxml(folder / "delta.musicxml")  # a MusicXML piece too
    if bad:
        (folder / "corrupt.krn").write_text("**kern\n4C\n*-\n\x00\x01 this is not humdrum {{{\n" * 2)
        (folder / "broken.musicxml").write_text("<score-partwise><part id='P1'><measure>")
        (folder / "empty.mxl").write_bytes(b"")
        (folder / "notes.txt").write_text("not a score")
    return folder


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    return write_sources(tmp_path_factory.mktemp("sources") / "scores")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, sources) -> Path:
    from audiosheet.corpus.build import BuildOptions, build

    out = tmp_path_factory.mktemp("corpus") / "c"
    # the bundled SoundFonts only, as the shipped models' corpora were made: the tests do not
    # depend on which Debian SoundFonts this machine has (--soundfonts all, the default)
    build(str(sources), out, workers=1, options=BuildOptions(seed=3, soundfonts="bundled"),
          progress=False)
    return out


@pytest.fixture(scope="session")
def files(corpus, tmp_path_factory) -> Path:
    """The test corpus as a user's files: sheets/ID.pdf and audio/ID.flac."""
    from audiosheet.corpus.export import export

    out = tmp_path_factory.mktemp("files")
    r = export(corpus, out, split="all", workers=1, progress=False)
    assert not r["failed"] and len(r["pieces"]) == 4
    return out


def filler_items(coll, n_items: int, per_item: int, seed: int) -> None:
    """Commit ``n_items`` synthetic sheet items of ``per_item`` snippets to ``coll``: clustered
    random unit embeddings (200 centres, spread 0.15) with its first sheet item's locations."""
    import hashlib

    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, 32)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    d = coll.data(coll.items("sheet")[0])
    with coll.writing():
        pending = []
        for k in range(n_items):
            e = centres[rng.integers(200, size=per_item)] + 0.15 * rng.normal(size=(per_item, 32)).astype(np.float32)
            e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float16)
            arrays = {**d, "emb": e, **{key: np.resize(d[key], per_item)
                                        for key in ("column", "page", "system", "x0", "x1")}}
            sha = hashlib.sha256(f"{seed}-{k}".encode() + e.tobytes()).hexdigest()
            item = coll.store_item("sheet", f"filler-{seed}-{k}", f"/filler/{k}.pdf", sha, arrays, {"pages": 1})
            pending.append((item, arrays))
        coll.commit(pending)


@pytest.fixture
def filler():
    """``filler_items``: synthetic sheet items for collections of many vectors."""
    return filler_items
