"""Check a development folder's layout and licences before anyone measures on it.

    python benchmarks/real_dev/check.py /work/data/real_dev

Layout (what ``audiosheet evaluate folder`` reads): ``sheets/`` and ``queries/`` with files,
``labels.tsv`` (``query<TAB>piece``) naming every query once, every piece a sheet's name (file name
without suffix) or ``-`` (open set). Provenance: ``provenance.tsv`` (``file<TAB>source<TAB>licence
<TAB>notes``) has one row per sheet and query file, every licence is one we may use (public
domain, CC0, CC-BY, CC-BY-SA, MIT; a row may name several, e.g. the score's and the samples'), and
no source is one of the reserved evaluation sources (``RESERVED``; DEVELOPERS.md). Prints one line
per problem; exit status 1 if there is any.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

FREE = re.compile(r"public domain|\bcc0\b|creative commons attribution|\bcc[- ]by\b|\bmit\b", re.I)
NOT_FREE = re.compile(r"non-?commercial|\bnc\b|no ?deriv|\bnd\b|all rights reserved|unknown", re.I)
RESERVED = ("synctoolbox", "cyolo_score_following", "vienna4x22", "audio_conditioned_unet",
            "asap-dataset", "ASAS-MIR-Tutorial", "lewton-test-assets", "piano_transcription_inference",
            "schumann_kinderszenen", "craigsapp/joplin", "mozart-piano-sonatas", "chopin-mazurka",
            "chopin-preludes", "beethoven-piano-sonatas", "FMP")


def _rows(path: Path, width: int) -> list[list[str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [(ln.split("\t") + [""] * width)[:width] for ln in lines[1:]]


def check(folder: str | Path) -> list[str]:
    """Problems of a development folder (empty: it is fine)."""
    folder = Path(folder)
    problems = []
    for sub in ("sheets", "queries"):
        if not (folder / sub).is_dir():
            problems.append(f"{folder}: no {sub}/ folder")
    for name in ("labels.tsv", "provenance.tsv"):
        if not (folder / name).is_file():
            problems.append(f"{folder}: no {name}")
    if problems:
        return problems
    files = {f"{sub}/{f.name}" for sub in ("sheets", "queries") for f in (folder / sub).iterdir()
             if f.is_file() and not f.name.startswith(".")}
    sheets = {Path(f).stem for f in files if f.startswith("sheets/")}
    queries = {Path(f).name for f in files if f.startswith("queries/")}
    labels = _rows(folder / "labels.tsv", 2)
    seen = set()
    for q, piece in labels:
        if q in seen:
            problems.append(f"labels.tsv: {q} labelled twice")
        seen.add(q)
        if q not in queries:
            problems.append(f"labels.tsv: {q} is not in queries/")
        if piece != "-" and piece not in sheets:
            problems.append(f"labels.tsv: {q} names piece '{piece}', which is no sheet")
    for q in sorted(queries - seen):
        problems.append(f"queries/{q}: no label in labels.tsv")
    prov = {row[0]: row for row in _rows(folder / "provenance.tsv", 4)}
    for f in sorted(files):
        row = prov.get(f)
        if row is None:
            problems.append(f"{f}: no row in provenance.tsv")
            continue
        _, source, licence, _ = row
        if not FREE.search(licence) or NOT_FREE.search(licence):
            problems.append(f"{f}: licence '{licence}' is not one we may use")
        hit = next((r for r in RESERVED if r.lower() in source.lower()), None)
        if hit:
            problems.append(f"{f}: source '{source}' is reserved for evaluation ({hit})")
    for f in sorted(set(prov) - files):
        problems.append(f"provenance.tsv: {f} is not in the folder")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    problems = check(argv[0])
    for p in problems:
        print(p)
    if not problems:
        print(f"{argv[0]}: layout and licences OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
