"""A corpus as the files a user would have (sheets as PDF, recordings as FLAC), and the audio of a
stored performance (re-made from its score where the corpus keeps only its spectrogram)."""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np

from audiosheet.corpus.engrave import LayoutStyle, engrave
from audiosheet.corpus.jobs import failure_reason, run_jobs
from audiosheet.corpus.reader import Corpus, CorpusError
from audiosheet.corpus.synth import Performance, available_soundfonts, render, require_corpus_tools
from audiosheet.files import atomic_path
from audiosheet.geometry import SAMPLE_RATE


def write_pdf(path: Path, pages) -> None:
    """Grayscale pages (uint8 arrays) as one PDF at 100 dpi, atomically."""
    from PIL import Image

    images = [Image.fromarray(p) for p in pages]
    with atomic_path(path) as tmp:
        images[0].save(tmp, "PDF", resolution=100.0, save_all=True, append_images=images[1:])


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Audio at the corpus sample rate as 16-bit FLAC, atomically."""
    import soundfile as sf

    with atomic_path(path, ".flac") as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")


def performance_audio(root: str | Path, piece_id: str, perf: int = 0) -> np.ndarray:
    """The audio of a stored performance: its perf_K.flac where the piece has one (--keep-audio,
    the recorded variants of ``variants``), else re-made from the piece's score, layout style and
    performance record (the corpus keeps spectrograms, not audio). Deterministic: its spectrogram
    is the stored one."""
    c = Corpus(root)
    flac = c.piece_dir(piece_id) / f"perf_{perf}.flac"
    if flac.is_file():
        import soundfile as sf

        return sf.read(flac, dtype="float32")[0]
    info = c.info(piece_id)
    p = info["performances"][perf]
    fields = {k: v for k, v in p.items() if k in Performance.__dataclass_fields__}
    sfs = available_soundfonts(c.manifest.get("options", {}).get("soundfonts", "bundled"))
    notes, velocity, pedal = score_notes(c, piece_id)
    return render(notes, Performance(**fields), sfs, velocity=velocity, pedal=pedal)


def score_notes(c: Corpus, piece_id: str):
    """What a piece's performances are rendered from: (notes (n, 3) onset s, duration s, MIDI
    pitch; velocity (n,) or None; pedal (k, 2) s or None). LilyPond pieces keep them in
    notes.npz; Verovio pieces are re-engraved from their MusicXML and layout style."""
    stored = c.piece_dir(piece_id) / "notes.npz"
    if stored.is_file():
        with np.load(stored) as z:
            return z["notes"], z["velocity"], z["pedal"]
    with gzip.open(c.root / "scores" / f"{piece_id}.musicxml.gz", "rt", encoding="utf-8") as f:
        xml = f.read()
    eng = engrave(xml, LayoutStyle(**c.info(piece_id)["style"]))
    if len(eng.noteheads["onset"]) != c.info(piece_id)["n_noteheads"]:
        raise CorpusError(f"{piece_id}: the score engraves to {len(eng.noteheads['onset'])} "
                          f"noteheads, the corpus has {c.info(piece_id)['n_noteheads']}")
    return eng.notes, None, None


def _stage_export(args):
    root, pid, out, perf = args
    t0 = time.time()
    try:
        c = Corpus(root)
        sheet, audio = Path(out) / "sheets" / f"{pid}.pdf", Path(out) / "audio" / f"{pid}.flac"
        if not sheet.exists():
            write_pdf(sheet, [c.page(pid, p) for p in range(len(c.info(pid)["pages"]))])
        if not audio.exists():
            write_flac(audio, performance_audio(root, pid, perf))
        return pid, None, time.time() - t0
    except Exception as exc:
        return pid, ("export", failure_reason(exc, "")), time.time() - t0


def export(root: str | Path, out: str | Path, split: str = "test", perf: int = 0,
           limit: int | None = None, workers: int = 2, progress: bool = True) -> dict:
    """Write a split as files a user would have: ``out/sheets/ID.pdf`` (the engraved pages,
    100 dpi) and ``out/audio/ID.flac`` (performance ``perf``). Resumable (finished files are
    kept). Returns {"pieces": [ids exported], "failed": {id: reason}}. Raises
    ``synth.MissingDependency`` before any work when a recording must be re-made (the piece has
    no perf_K.flac) and the corpus tools are not installed."""
    c = Corpus(root)
    ids = c.split(split)[:limit] if limit else c.split(split)
    out = Path(out)
    if any(not (out / "audio" / f"{pid}.flac").exists()
           and not (c.piece_dir(pid) / f"perf_{perf}.flac").is_file() for pid in ids):
        require_corpus_tools("exporting recordings (re-made from the scores)")
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    done, failed = [], {}
    for pid, fail, _ in run_jobs(_stage_export, [(str(c.root), pid, str(out), perf) for pid in ids],
                                 workers, f"export {split}", progress):
        if fail:
            failed[pid] = fail[1]
        else:
            done.append(pid)
    return {"pieces": sorted(done), "failed": failed}
