"""Variants: degraded copies of a corpus split — our analogues of the papers' RealScores test sets.

For each variant NAME, ``make_variants`` writes ``OUT/NAME``, a complete corpus folder holding only
the split's pieces, in the layout of ``build`` (so ``corpus check``, ``SnippetPairs``, ``evaluate``
and ``corpus export`` work on it unchanged), with one performance per piece:

``scanned``
    every page printed and scanned (``degrade.ScanStyle.sample_print``: skew, a small keystone,
    ink bleed or thinning, uneven light, paper texture and grain, blur, noise, JPEG); notehead
    centres and system boxes moved with the page geometry, the strip re-made from the degraded
    pixels by the query code (``build.write_strip`` → ``strip.corpus_strip``). A piece whose
    systems are no longer found where they were on the clean pages fails, as does one where fewer
    than 97 % of the noteheads keep at least half their clean ink at their moved centres.
``performed``
    a new rendering of the score with the piece's own SoundFont and program (for the test split
    the held-out combination): expressive tempo (a global ratio and a slow curve reaching about
    ±20 %) and dynamics, then a synthetic room (direct sound at t = 0, early reflections, an
    exponentially decaying, frequency-dependent noise tail) and background noise (coloured noise
    and mains hum) at 15–35 dB SNR. The audio is kept (``perf_0.flac``: ``export.performance_audio``
    reads it), its spectrogram and warped onsets are stored as the corpus stores them.
``scanned+performed``
    both: the pages of ``scanned`` and the audio of ``performed``, exactly (everything is seeded
    per (seed, piece, kind)).

Everything else of a piece (its score, noteheads' times and pitches, the other modality) is the
source's, hard-linked where possible. Resumable: finished pieces are skipped, each piece is written
to a temporary folder that is renamed into place when complete; a piece that fails is reported
and the run goes on.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from audiosheet.corpus.acoustics import ROOM, Room, record
from audiosheet.corpus.check import kept_ink, notehead_ink
from audiosheet.corpus.jobs import (
    alarm,
    cancel_alarm,
    failure_reason,
    piece_rng,
    run_jobs,
    write_failures,
    write_record,
)
from audiosheet.corpus.reader import SPLITS, STRIP_SYSTEMS, Corpus, CorpusError
from audiosheet.corpus.synth import Performance
from audiosheet.files import atomic_dir, atomic_path
from audiosheet.geometry import SAMPLE_RATE

VARIANTS = ("scanned", "performed", "scanned+performed")
VERSION = 4  # of the simulation: pieces made by another version (or seed) are made again

PERFORM = {
    "tempo_ratio": (0.85, 1.15),  # global: > 1 faster than written
    "tempo_curve": (0.14, 0.22),  # peak of the slow log-tempo curve (0.18 ≈ ±20 %)
    "tempo_periods": (5.0, 30.0),  # s, of its three sinusoids
    "velocity": (55, 95),  # mean MIDI velocity
    "crescendo": (10.0, 24.0), "crescendo_periods": (15.0, 45.0),  # velocity swing, s
    "phrase": (4.0, 10.0), "phrase_periods": (4.0, 10.0),
    "velocity_jitter": (4.0, 9.0),
}
"""Ranges of ``expressive_performance`` (uniform); those of the room: ``acoustics.ROOM``."""

MIN_KEPT_INK = 0.97  # a scanned piece fails if fewer of its noteheads keep their ink (``check.kept_ink``)


class VariantError(RuntimeError):
    """A piece that cannot be made in a variant (the message says why)."""


# ----------------------------------------------------------------------------------------------
# the performance: expressive rendering (the room and its noise: ``acoustics``)


def expressive_performance(rng: np.random.Generator, combo: tuple[str, int]) -> Performance:
    """A freer performance than ``Performance.sample``: global tempo ratio, a slow log-tempo
    curve of three sinusoids whose amplitudes add up to about log 1.2, crescendi and phrasing."""
    r = PERFORM
    peak = rng.uniform(*r["tempo_curve"])
    weights = rng.dirichlet(np.ones(3))
    curve = [(round(float(peak * w), 4), round(float(rng.uniform(*r["tempo_periods"])), 2),
              round(float(rng.uniform(0, 2 * np.pi)), 4)) for w in weights]
    ratio = round(float(rng.uniform(*r["tempo_ratio"])), 4)
    velocity = int(rng.integers(r["velocity"][0], r["velocity"][1] + 1))
    dyn = [(round(float(rng.uniform(*r[k])), 2), round(float(rng.uniform(*r[f"{k}_periods"])), 2),
            round(float(rng.uniform(0, 2 * np.pi)), 4)) for k in ("crescendo", "phrase")]
    return Performance(soundfont=combo[0], program=int(combo[1]), tempo_ratio=ratio, curve=curve,
                       velocity=velocity, velocity_curve=dyn,
                       velocity_jitter=round(float(rng.uniform(*r["velocity_jitter"])), 2),
                       seed=int(rng.integers(2**31)))


def _tempo_range(perf: Performance, score_end: float) -> list[float]:
    """Lowest and highest tempo of a performance relative to its global ratio."""
    s, t = perf.time_warp(score_end)
    rate = np.diff(s) / np.maximum(np.diff(t), 1e-9) / perf.tempo_ratio
    return [round(float(rate.min()), 3), round(float(rate.max()), 3)]


# ----------------------------------------------------------------------------------------------
# one piece


def _key(seed: int) -> str:
    return f"v{VERSION}-seed{seed}"


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _finished(root: Path, piece_id: str, key: str) -> Path | None:
    d = root / "pieces" / piece_id
    try:
        info = json.loads((d / "piece.json").read_text())
    except (OSError, ValueError):
        return None
    return d if info.get("variant", {}).get("key") == key else None


def _on_ink(page_ink: np.ndarray) -> float:
    return float((page_ink >= 0.3).mean()) if len(page_ink) else 1.0


def strip_on_ink(strip: np.ndarray, noteheads: dict, scales) -> float:
    """Fraction of noteheads whose strip box (the notehead's size at the strip's scale) holds
    ink: at least a fifth of it darker than halfway between the strip's paper and ink."""
    strip = np.asarray(strip)
    paper, ink = float(np.median(strip)), float(np.percentile(strip, 0.5))
    scale = np.asarray(scales, float)[np.asarray(noteheads["page"], int)] / 2.0
    box = notehead_ink(strip, noteheads["strip_x"], noteheads["strip_y"], noteheads["w"] * scale,
                       noteheads["h"] * scale, dark=int((paper + ink) / 2))
    return float((box >= 0.2).mean()) if len(box) else 1.0


def _map_systems(systems: list[dict], styles, shapes) -> list[dict]:
    """Engraved system records moved with their pages' print-and-scan geometry, in each degraded
    page's deskewed frame (the frame of ``frontend.staves.System``: rotated back by the page's
    skew)."""
    from audiosheet.frontend.coords import rotate_points

    out = []
    for s in systems:
        p = int(s["page"])
        st, (h, w) = styles[p], shapes[p]

        def move(x, y):
            u, v = st.map_points(x, y, (h, w))
            return rotate_points(u, v, -st.angle, (w / 2.0, h / 2.0))

        xs, ys = move(np.array([s["x0"], s["x1"], s["x1"], s["x0"]]),
                      np.array([s["y0"], s["y0"], s["y1"], s["y1"]]))
        mid = (s["x0"] + s["x1"]) / 2.0
        lines = [[round(float(move(mid, y)[1]), 2) for y in staff] for staff in s.get("staff_lines", [])]
        out.append({"page": p, "x0": round(float(xs.min()), 2), "x1": round(float(xs.max()), 2),
                    "y0": round(float(ys.min()), 2), "y1": round(float(ys.max()), 2),
                    "staff_lines": lines})
    return out


def _make_scan(src: Corpus, pid: str, seed: int, d: Path) -> dict:
    """Write the printed-and-scanned pages, strip and noteheads of a piece into folder ``d``;
    returns its piece.json fields."""
    from PIL import Image

    from audiosheet.corpus.build import write_strip
    from audiosheet.corpus.degrade import ScanStyle, apply
    from audiosheet.frontend.images import PageError

    info = src.info(pid)
    nh = src.noteheads(pid)
    x, y = nh["x"].astype(np.float64), nh["y"].astype(np.float64)
    pages, styles = [], []
    ink, ink0 = np.ones(len(x), np.float32), np.ones(len(x), np.float32)
    for p in range(len(info["pages"])):
        clean = src.page(pid, p)
        rng = piece_rng(seed, "variant-scan", pid, p)
        style = ScanStyle.sample_print(rng)
        page = apply(clean, style, rng)
        sel = nh["page"] == p
        ink0[sel] = notehead_ink(clean, x[sel], y[sel], nh["w"][sel], nh["h"][sel])
        x[sel], y[sel] = style.map_points(x[sel], y[sel], clean.shape)
        ink[sel] = notehead_ink(page, x[sel], y[sel], nh["w"][sel], nh["h"][sel])
        Image.fromarray(page).save(d / f"page_{p + 1}.png", optimize=False, compress_level=6)
        pages.append(page)
        styles.append(style)
    moved = {**nh, "x": x.astype(np.float32), "y": y.astype(np.float32)}
    systems = _map_systems(info["systems"], styles, [pg.shape for pg in pages])
    try:
        strip = write_strip(d, pages, systems, moved, pid)
    except PageError as exc:
        raise VariantError(f"no systems found on the scanned pages ({exc.reason})") from None
    if info.get("strip", {}).get("systems") == "detected" and strip["systems"] != "detected":
        raise VariantError("the systems found on the scanned pages no longer match the engraved "
                           "ones (found on the clean pages)")
    on_ink, kept = _on_ink(ink), kept_ink(ink0, ink)
    if kept < MIN_KEPT_INK:
        raise VariantError(f"only {kept:.1%} of noteheads keep their ink on the scanned pages")
    with np.load(d / "noteheads.npz") as z:
        written = {k: z[k] for k in z.files}
    return {"systems": systems, "strip": strip,
            "scan": {"pages": [{k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in asdict(s).items()} for s in styles],
                     "noteheads_on_ink": round(on_ink, 4), "noteheads_kept_ink": round(kept, 4),
                     "strip_on_ink": round(strip_on_ink(np.load(d / "strip.npy"), written,
                                                        strip["scales"]), 4)}}


def _make_performance(src: Corpus, pid: str, seed: int, d: Path) -> dict:
    """Write a new expressive, recorded performance of a piece into folder ``d`` (perf_0.flac,
    perf_0.npy, performances.npz); returns its piece.json fields."""
    import soundfile as sf

    from audiosheet.corpus.export import score_notes
    from audiosheet.corpus.synth import available_soundfonts, render
    from audiosheet.frontend.spectrogram import spectrogram

    info = src.info(pid)
    try:
        notes, velocity, pedal = score_notes(src, pid)
    except CorpusError as exc:
        raise VariantError(str(exc).split(": ", 1)[-1]) from None
    nh = src.noteheads(pid)
    soundfonts = available_soundfonts(src.manifest.get("options", {}).get("soundfonts", "bundled"))
    first = info["performances"][0]
    rng = piece_rng(seed, "variant-perform", pid)
    perf = expressive_performance(rng, (first["soundfont"], int(first["program"])))
    room = Room.sample(rng)
    audio = record(render(notes, perf, soundfonts, velocity=velocity, pedal=pedal), room)
    with atomic_path(d / "perf_0.flac", ".flac") as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
    audio, _ = sf.read(d / "perf_0.flac", dtype="float32")  # what export and queries will hear
    spec = spectrogram(audio)
    np.save(d / "perf_0.npy", spec.astype(np.float16))
    score_end = float((notes[:, 0] + notes[:, 1]).max())
    onsets = perf.warp(nh["onset"].astype(np.float64), score_end)
    np.savez(d / "performances.npz", onsets=onsets[None].astype(np.float32))
    rec = {**perf.to_dict(), "seconds": round(len(audio) / SAMPLE_RATE, 3), "frames": int(len(spec)),
           "tempo_range": _tempo_range(perf, score_end), "room": room.to_dict()}
    return {"performances": [rec]}


def _clean_performance(src: Corpus, pid: str, d: Path) -> dict:
    """The source's performance 0 only (its spectrogram and audio linked, its onsets cut)."""
    sd = src.piece_dir(pid)
    for name in ("perf_0.npy", "perf_0.flac"):
        if (sd / name).exists():
            _link(sd / name, d / name)
    np.savez(d / "performances.npz", onsets=src.onsets(pid)[:1])
    return {"performances": src.info(pid)["performances"][:1]}


def _clean_pages(src: Corpus, pid: str, d: Path) -> dict:
    sd = src.piece_dir(pid)
    for f in sorted(sd.glob("page_*.png")) + [sd / "strip.npy", sd / "noteheads.npz"]:
        _link(f, d / f.name)
    if (sd / STRIP_SYSTEMS).is_file():  # not in corpora built before system offsets were stored
        _link(sd / STRIP_SYSTEMS, d / STRIP_SYSTEMS)
    return {}


SCAN_FILES = ("page_*.png", "strip.npy", STRIP_SYSTEMS, "noteheads.npz")
PERF_FILES = ("perf_0.npy", "perf_0.flac", "performances.npz")


def _reuse(done: Path, d: Path, patterns, keys, info: dict) -> dict:
    """Link a finished variant piece's files of one kind into ``d``; its piece.json fields."""
    for pat in patterns:
        for f in sorted(done.glob(pat)):
            _link(f, d / f.name)
    return {k: info[k] for k in keys if k in info}


def _stage_variants(args):
    """Make one piece in the variants ``names`` (those not finished); returns (piece, {name:
    failure reason or None}, seconds)."""
    src_root, out, pid, names, seed, timeout = args
    t0 = time.time()
    out = Path(out)
    work = out / ".work" / pid
    result = {}
    try:
        alarm(timeout)
        src = Corpus(src_root)
        info = src.info(pid)
        key = _key(seed)
        lily = (src.piece_dir(pid) / "notes.npz").is_file()  # LilyPond pieces keep their notes
        scores = [src.root / "scores" / f"{pid}{ext}"
                  for ext in ((".json",) if lily else (".musicxml.gz", ".json"))]
        for f in scores:
            if not f.is_file():
                raise VariantError(f"the corpus has no {f.name}")
        if work.exists():
            shutil.rmtree(work)
        parts = {}
        for kind, needed, files, keys in (
                ("scan", [n for n in names if "scanned" in n], SCAN_FILES, ("systems", "strip", "scan")),
                ("perf", [n for n in names if "performed" in n], PERF_FILES, ("performances",))):
            if not needed:
                continue
            d = work / kind
            d.mkdir(parents=True)
            # a variant finished earlier that has this part already (resuming)
            word = "scanned" if kind == "scan" else "performed"
            donor = next((p for n in VARIANTS if word in n and n not in names
                          for p in [_finished(out / n, pid, key)] if p), None)
            try:
                if donor is not None:
                    parts[kind] = (d, _reuse(donor, d, files, keys,
                                             json.loads((donor / "piece.json").read_text())))
                elif kind == "scan":
                    parts[kind] = (d, _make_scan(src, pid, seed, d))
                else:
                    parts[kind] = (d, _make_performance(src, pid, seed, d))
            except Exception as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                reason = failure_reason(exc, "")
                for n in needed:
                    result[n] = ("scan" if kind == "scan" else "perform", reason)
        todo = [n for n in names if n not in result]
        if any("scanned" not in n for n in todo):
            d = work / "clean-pages"
            d.mkdir(parents=True)
            parts["clean-pages"] = (d, _clean_pages(src, pid, d))
        if any("performed" not in n for n in todo):
            d = work / "clean-perf"
            d.mkdir(parents=True)
            parts["clean-perf"] = (d, _clean_performance(src, pid, d))
        for n in todo:
            use = [parts["scan" if "scanned" in n else "clean-pages"],
                   parts["perf" if "performed" in n else "clean-perf"]]
            with atomic_dir(out / n / "pieces" / pid) as tmp:
                rec = dict(info)
                for d, fields in use:
                    for f in sorted(d.iterdir()):
                        _link(f, tmp / f.name)
                    rec.update(fields)
                rec["variant"] = {"name": n, "key": key, "seed": seed, "source": str(src.root)}
                write_record(tmp / "piece.json", rec)
                for f in scores:
                    if not (out / n / "scores" / f.name).exists():
                        _link(f, out / n / "scores" / f.name)
            result[n] = None
        cancel_alarm()
    except BaseException as exc:
        cancel_alarm()
        if isinstance(exc, KeyboardInterrupt):
            raise
        for n in names:  # those already renamed into place stay made
            result.setdefault(n, ("variant", failure_reason(exc, "")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return pid, result, time.time() - t0


# ----------------------------------------------------------------------------------------------
# a whole split


def parameters(name: str) -> dict:
    """The ranges a variant draws from (recorded in its manifest)."""
    from audiosheet.corpus.degrade import PRINT_SCAN

    out = {}
    if "scanned" in name:
        out["scan"] = {k: list(v) if isinstance(v, tuple) else v for k, v in PRINT_SCAN.items()}
        out["scan"]["min_on_ink"] = MIN_KEPT_INK
    if "performed" in name:
        out["performance"] = {k: list(v) for k, v in PERFORM.items()}
        out["room"] = {k: list(v) for k, v in ROOM.items()}
    return out


def make_variants(corpus: str | Path, out: str | Path, variants=VARIANTS, split: str = "test",
                  seed: int = 0, workers: int = 2, limit: int | None = None,
                  progress: bool = True, timeout: int = 600) -> dict:
    """Write the degraded variants of a corpus split into ``out/NAME`` (see the module doc).

    ``split``: a split name or "all" (pieces keep their own splits); ``limit``: only the first N
    pieces of the split. Resumable. Returns a summary: per variant the pieces it holds, those made
    now, those already done and {piece: reason} of those that failed; the seconds taken.
    """
    t0 = time.time()
    src = Corpus(corpus)
    names = list(dict.fromkeys(variants))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise CorpusError(f"unknown variant(s) {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(VARIANTS)}")
    if any("performed" in n for n in names):
        from audiosheet.corpus.synth import require_corpus_tools

        require_corpus_tools("recorded variants")
    ids = src.split(split)
    chosen = ids[:limit] if limit else ids
    out = Path(out)
    if out.resolve() == src.root.resolve() or src.root.resolve() in out.resolve().parents:
        raise CorpusError(f"{out}: variants must be written outside the source corpus")
    key = _key(seed)
    for n in names:
        (out / n / "pieces").mkdir(parents=True, exist_ok=True)
        (out / n / "scores").mkdir(parents=True, exist_ok=True)
    todo, done = {}, {n: 0 for n in names}
    for pid in chosen:
        for n in names:
            if _finished(out / n, pid, key):
                done[n] += 1
            else:
                todo.setdefault(pid, []).append(n)
    failed: dict[str, dict[str, str]] = {n: {} for n in names}
    made = {n: 0 for n in names}
    jobs = [(str(src.root), str(out), pid, todo[pid], seed, timeout) for pid in chosen if pid in todo]
    for pid, res, _ in run_jobs(_stage_variants, jobs, workers, "variants", progress):
        for n, fail in res.items():
            if fail:
                failed[n][pid] = f"{fail[0]}: {fail[1]}"
                if progress:
                    print(f"{pid}: {n}: {fail[0]}: {fail[1]}", file=sys.stderr)
            else:
                made[n] += 1
    shutil.rmtree(out / ".work", ignore_errors=True)
    summary = {"source": str(src.root), "split": split, "seed": seed, "variants": {}}
    split_of = {pid: sp for sp, ps in src.splits.items() for pid in ps}
    for n in names:
        root = out / n
        have = [pid for pid in ids if _finished(root, pid, key)]
        splits = {sp: [] for sp in (*SPLITS, *src.splits)}
        for pid in have:
            splits[split_of[pid] if split == "all" else split].append(pid)
        write_record(root / "splits.json", splits)
        write_failures(root / "failures.tsv", ("piece", "source", "stage", "reason"),
                       ([pid, str(src.root / "pieces" / pid), *failed[n][pid].split(": ", 1)]
                        for pid in sorted(failed[n])))
        manifest = dict(src.manifest)
        manifest.update({"pieces": len(have), "splits": {k: len(v) for k, v in splits.items()},
                         "failures": len(failed[n])})
        manifest["variant"] = {"name": n, "seed": seed, "version": VERSION, "source": str(src.root),
                               "source_split": split, "performances_per_piece": 1,
                               "parameters": parameters(n)}
        write_record(root / "manifest.json", manifest)
        summary["variants"][n] = {"pieces": len(have), "made_now": made[n], "already_done": done[n],
                                  "failed": failed[n]}
    summary["seconds"] = round(time.time() - t0, 1)
    summary["workers"] = workers
    for n in names:
        write_record(out / n / "variant_log.json", {**summary, "variants": {n: summary["variants"][n]}})
    return summary
