"""The unlabelled pool: score pages and recordings for self-supervised pre-training.

Made from music21 material that is in neither the validation nor the test split of an aligned
corpus — the corpus's training pieces and the single-line folk tunes the corpus leaves out — and
rendered with settings the aligned corpus does not use, so pre-training sees variety the fine-tuning
data lacks:

* pages: a wider engraving-style range (staff size, spacing, page size) than ``LayoutStyle.sample``;
* recordings: other SoundFonts (Debian's FluidR3_GM and MuseScore_General where installed, else the
  bundled ones' training combinations), wider tempo (0.75–1.3 ×, curves up to ±15 %) and dynamics.
  The test split's SoundFont combination (``synth.TEST_ONLY``) is never used.

The pool is written as the files a user would have — ``OUT/sheets/ID.pdf`` and ``OUT/audio/ID.flac``
— and ``audiosheet pretrain`` reads it like any other folder. Building is resumable and seeded;
tunes whose work keys are shared with a validation or test piece are left out.
"""
from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audiosheet.corpus.engrave import FONTS, LayoutStyle, engrave
from audiosheet.corpus.export import write_flac, write_pdf
from audiosheet.corpus.jobs import (
    alarm,
    cancel_alarm,
    failure_reason,
    piece_rng,
    run_jobs,
    write_failures,
    write_record,
)
from audiosheet.corpus.reader import Corpus
from audiosheet.corpus.scores import select_sources
from audiosheet.corpus.synth import PIANO_PROGRAMS, TEST_ONLY, Performance, available_soundfonts, combinations, render

POOL_FORMAT = 1


@dataclass
class PoolOptions:
    seed: int = 0
    polyphonic: int | None = None  # how many of the corpus's training pieces (None: all)
    monophonic: int = 300  # how many single-line tunes of music21's folk-song collections
    soundfonts: str = "all"  # "all": Debian's SoundFonts too where installed
    timeout: int = 300  # seconds per piece before it is skipped


def pool_style(rng: np.random.Generator) -> LayoutStyle:
    """An engraving style drawn from wider ranges than the aligned corpus's."""
    return LayoutStyle(
        font=str(rng.choice(FONTS)),
        unit=round(float(rng.uniform(7.0, 11.0)), 2),
        spacing_linear=round(float(rng.uniform(0.15, 0.4)), 3),
        spacing_non_linear=round(float(rng.uniform(0.45, 0.75)), 3),
        spacing_staff=int(rng.integers(6, 20)),
        spacing_system=int(rng.integers(2, 16)),
        page=str(rng.choice(["A4", "letter"])),
    )


def pool_combinations(soundfonts: dict[str, Path]) -> list[tuple[str, int]]:
    """(SoundFont, program) pairs for the pool: the SoundFonts the corpus does not use where
    installed, else the corpus's training combinations; never the test combination."""
    train, _ = combinations({k: v for k, v in soundfonts.items() if k in ("TimGM6mb", "Merlin")})
    other = [(sf, p) for sf in sorted(soundfonts) if sf not in ("TimGM6mb", "Merlin")
             for p in PIANO_PROGRAMS]
    return [c for c in (other or train) if c != TEST_ONLY]


def pool_performance(rng: np.random.Generator, combo: tuple[str, int]) -> Performance:
    """A performance with wider tempo and dynamics than ``Performance.sample``."""
    return Performance(
        soundfont=combo[0], program=int(combo[1]),
        tempo_ratio=round(float(rng.uniform(0.75, 1.3)), 4),
        curve=[(round(float(rng.uniform(0, 0.15)), 4), round(float(rng.uniform(4, 30)), 2),
                round(float(rng.uniform(0, 2 * np.pi)), 4)) for _ in range(2)],
        velocity=int(rng.integers(45, 111)),
        velocity_curve=[(round(float(rng.uniform(0, 25)), 2), round(float(rng.uniform(4, 25)), 2),
                         round(float(rng.uniform(0, 2 * np.pi)), 4))],
        velocity_jitter=round(float(rng.uniform(3, 12)), 2),
        seed=int(rng.integers(2**31)),
    )


def _stage_pool(args):
    piece_id, kind, source, out, opts, soundfonts, combos, held_out = args
    t0 = time.time()
    out = Path(out)
    sheet, audio = out / "sheets" / f"{piece_id}.pdf", out / "audio" / f"{piece_id}.flac"
    if sheet.exists() and audio.exists():
        return piece_id, None, 0.0
    try:
        alarm(opts.timeout)
        if kind == "corpus":
            with gzip.open(source, "rt", encoding="utf-8") as f:
                xml = f.read()
        else:
            from audiosheet.corpus.scores import to_piano

            ps = to_piano(source)
            shared = sorted(set(ps.work_keys) & held_out)
            if shared:
                cancel_alarm()
                return piece_id, ("held-out", f"shares work {shared[0]} with a valid/test piece"), 0.0
            xml = ps.musicxml
        rng = piece_rng(opts.seed, "pool", piece_id)
        eng = engrave(xml, pool_style(rng))
        perf = pool_performance(rng, combos[int(rng.integers(len(combos)))])
        wave = render(eng.notes, perf, soundfonts)
        cancel_alarm()
        write_pdf(sheet, eng.pages)
        write_flac(audio, wave)
        return piece_id, None, time.time() - t0
    except BaseException as exc:  # one bad score never stops the pool
        cancel_alarm()
        if isinstance(exc, KeyboardInterrupt):
            raise
        return piece_id, ("pool", failure_reason(exc, str(source))), time.time() - t0


def _held_out_keys(c: Corpus) -> set[str]:
    keys = set()
    for split in ("valid", "test"):
        for pid in c.split(split):
            p = c.root / "scores" / f"{pid}.json"
            if p.exists():
                keys.update(json.loads(p.read_text()).get("work_keys") or [])
    return keys


def build_pool(corpus: str | Path, out: str | Path, options: PoolOptions | None = None,
               workers: int = 2, progress: bool = True) -> dict:
    """Build (or resume) the unlabelled pool of ``corpus`` (an aligned corpus whose valid/test
    pieces are kept out) into ``out``. Returns a summary (pieces written, failed, seconds)."""
    from audiosheet.corpus.synth import require_corpus_tools

    require_corpus_tools("building a pool")
    opts = options or PoolOptions()
    c = Corpus(corpus)
    out = Path(out)
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    soundfonts = available_soundfonts(opts.soundfonts)
    combos = pool_combinations(soundfonts)
    train = c.split("train")
    if opts.polyphonic is not None:
        train = [train[i] for i in np.unique(np.linspace(0, len(train) - 1, opts.polyphonic)
                                             .round().astype(int))] if opts.polyphonic else []
    held_out, dropped = _held_out_keys(c), []
    jobs = [(pid, "corpus", str(c.root / "scores" / f"{pid}.musicxml.gz"), str(out), opts,
             soundfonts, combos, held_out) for pid in train]
    if opts.monophonic:
        from audiosheet.corpus.scores import list_sources

        tunes = [s for s in list_sources("music21", monophonic=True) if s.monophonic_pool]
        jobs += [(f"mono-{s.piece_id}", "score", s, str(out), opts, soundfonts, combos, held_out)
                 for s in select_sources(tunes, opts.monophonic)]
    failed, written = {}, 0
    for pid, fail, dt in run_jobs(_stage_pool, jobs, workers, "pool", progress):
        if fail and fail[0] == "held-out":
            dropped.append(pid)
        elif fail:
            failed[pid] = fail[1]
        elif dt:
            written += 1
    write_failures(out / "failures.tsv", ("piece", "reason"), ([pid, failed[pid]] for pid in sorted(failed)))
    sheets = sorted(p.stem for p in (out / "sheets").glob("*.pdf"))
    summary = {
        "format": POOL_FORMAT, "corpus": str(c.root), "options": asdict(opts),
        "soundfonts": sorted(soundfonts), "combinations": [list(x) for x in combos],
        "pieces": len(sheets), "from_corpus_train": sum(not s.startswith("mono-") for s in sheets),
        "monophonic": sum(s.startswith("mono-") for s in sheets), "written_now": written,
        "failed": len(failed), "dropped_held_out_work": len(dropped),
        "seconds": round(time.time() - t0, 1), "workers": workers,
    }
    write_record(out / "pool.json", summary)
    return {**summary, "failures": failed}
