"""One corpus from several: the music21 and Mutopia corpora (issue 15) trained and checked as one.

``union([A, B], OUT)`` makes a corpus folder whose pieces are links to the pieces of A and B
(nothing is copied), with their splits joined, so that everything that reads a corpus (train,
evaluate, check, stats, show, restrip, variants) reads both sources at once. It refuses corpora
whose front ends differ (sample rate, spectrogram, strip geometry), a piece id found twice, and a
work (work key) that is in the test split of one source and in another split of another source:
splits are by work across sources.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from audiosheet.corpus.jobs import write_record
from audiosheet.corpus.reader import SPLITS, Corpus, CorpusError
from audiosheet.corpus.splits import WORKS_FIELDS
from audiosheet.files import write_text

SHARED = ("sample_rate", "spectrogram", "strip_geometry")


def _work_splits(c: Corpus) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sp in SPLITS:
        for pid in c.splits.get(sp, []):
            for k in c.info(pid).get("work_keys") or []:
                out.setdefault(k, set()).add(sp)
    return out


def union(corpora: list[str | Path], out: str | Path) -> dict:
    """Write corpus ``out`` holding the pieces of ``corpora`` (links). Re-running with the same
    corpora updates it. Returns {"pieces", "splits", "sources"}. Raises ``CorpusError`` for
    unreadable or incompatible corpora, repeated piece ids, or a work in the test split of one
    corpus and in another split of another."""
    if len(corpora) < 2:
        raise CorpusError("a union needs at least two corpora")
    cs = [Corpus(p) for p in corpora]
    first = cs[0].manifest
    for c in cs[1:]:
        if c.front_end != cs[0].front_end:
            raise CorpusError(f"{c.root}: its front end differs from {cs[0].root}'s; corpora of one "
                              f"union must share their front end")
        for k in SHARED:
            if c.manifest.get(k) != first.get(k):
                raise CorpusError(f"{c.root}: its {k} differs from {cs[0].root}'s; corpora of one "
                                  f"union must share their front end")
    owner: dict[str, Path] = {}
    for c in cs:
        for pid in c.piece_ids:
            if pid in owner:
                raise CorpusError(f"piece '{pid}' is in both {owner[pid]} and {c.root}")
            owner[pid] = c.root
    works = [_work_splits(c) for c in cs]
    clashes = []
    for i, wi in enumerate(works):
        for j, wj in enumerate(works):
            if i != j:
                for k, sp in wi.items():
                    if "test" in sp and wj.get(k, set()) - {"test"}:
                        clashes.append(f"work '{k}' is in the test split of {cs[i].root} and in "
                                       f"{'/'.join(sorted(wj[k] - {'test'}))} of {cs[j].root}")
    if clashes:
        raise CorpusError(f"{len(clashes)} work(s) cross splits between sources: {clashes[0]}")
    out = Path(out)
    if (out / "manifest.json").is_file() and "union_of" not in json.loads((out / "manifest.json").read_text()):
        raise CorpusError(f"{out}: a built corpus, not a union; choose another folder")
    for sub in ("pieces", "scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for c in cs:
        for pid in c.piece_ids:
            for sub, name in (("pieces", pid), ("scores", f"{pid}.json"),
                              ("scores", f"{pid}.musicxml.gz")):
                src = (c.root / sub / name).resolve()
                link = out / sub / name
                if src.exists() and not (link.is_symlink() and os.readlink(link) == str(src)):
                    if link.is_symlink() or link.exists():
                        link.unlink()
                    link.symlink_to(src, target_is_directory=src.is_dir())
    splits = {sp: sorted(p for c in cs for p in c.splits.get(sp, [])) for sp in SPLITS}
    write_record(out / "splits.json", splits)
    lines = []
    for c in cs:
        w = c.root / "works.tsv"
        if w.is_file():
            lines += w.read_text(encoding="utf-8").splitlines()[1:]
    if lines:
        write_text(out / "works.tsv", "\n".join(["\t".join(WORKS_FIELDS)] + sorted(lines)) + "\n")
    soundfonts = {}
    for c in cs:
        soundfonts.update(c.manifest.get("soundfonts", {}))
    manifest = {
        **{k: first.get(k) for k in ("format_version", "seed", "spectrogram", "sample_rate",
                                     "strip_geometry", "split_fractions", "test_only_combination")},
        "front_end": cs[0].front_end.to_dict(),
        "union_of": [{"path": str(c.root.resolve()), "source": c.manifest.get("source"),
                      "pieces": len(c.piece_ids), "splits": {k: len(v) for k, v in c.splits.items()}}
                     for c in cs],
        "source": "+".join(str(c.manifest.get("source")) for c in cs),
        "options": {**first.get("options", {}),
                    "soundfonts": "all" if any(c.manifest.get("options", {}).get("soundfonts") == "all"
                                               for c in cs) else "bundled"},
        "soundfonts": soundfonts, "tools": {str(c.root): c.manifest.get("tools") for c in cs},
        "pieces": sum(len(v) for v in splits.values()),
        "splits": {k: len(v) for k, v in splits.items()},
    }
    write_record(out / "manifest.json", manifest)
    return {"pieces": manifest["pieces"], "splits": manifest["splits"],
            "sources": [u["source"] for u in manifest["union_of"]]}
