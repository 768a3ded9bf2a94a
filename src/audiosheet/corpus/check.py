"""Checks of a built corpus — noteheads on ink, energy rising at the onsets, consistent arrays,
splits disjoint by piece and by work — the same checks applied to each piece as it is built
(``check_on_ink``, ``onset_flux_ratio``), and a corpus's summary statistics."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiosheet.corpus.jobs import failure_reason
from audiosheet.corpus.reader import SPLITS, Corpus, CorpusError
from audiosheet.corpus.splits import composer_key
from audiosheet.frontend.spectrogram import onset_strength
from audiosheet.geometry import SPEC_BINS

MIN_INK = 0.3  # a notehead whose box is at least this dark lies on ink
MIN_ON_INK = 0.99  # fraction of noteheads on ink a piece needs
MIN_FLUX_RATIO = 1.5  # spectral flux at onsets over elsewhere a performance needs


class CheckFailed(CorpusError):
    """A rendered piece that would fail ``check``: it is skipped with this reason."""


def check_on_ink(eng) -> None:
    """Raise ``CheckFailed`` when fewer than MIN_ON_INK of the noteheads lie on ink (a notehead
    the engraver placed where nothing is drawn: hidden or cue notes, staves left out)."""
    nh = eng.noteheads
    ink = np.empty(len(nh["x"]), dtype=np.float32)
    for p in range(len(eng.pages)):
        sel = nh["page"] == p
        if sel.any():
            ink[sel] = notehead_ink(eng.pages[p], nh["x"][sel], nh["y"][sel], nh["w"][sel], nh["h"][sel])
    frac = float((ink >= MIN_INK).mean()) if len(ink) else 0.0
    if frac < MIN_ON_INK:
        raise CheckFailed(f"noteheads off ink (only {frac:.1%} of {len(ink)} on ink)")


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


def check(root: str | Path, min_ink: float = MIN_INK, min_on_ink: float = MIN_ON_INK,
          min_flux_ratio: float = MIN_FLUX_RATIO, progress: bool = True) -> CheckResult:
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
            res.problems.append(f"{pid}: unreadable ({failure_reason(exc, '')})")
    return res


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
