"""Write src/audiosheet/data/held_out_works.tsv: the work keys of the real-material development
set (its scanned works and its recordings' Mutopia sources), which corpus builds other than
music21 put in their test split so that no model is trained on them (issue 15).

    python benchmarks/real_dev/held_out.py --mutopia /work/data/mutopia
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]


def main(argv=None) -> int:
    import make

    from audiosheet.corpus.mutopia import catalogue_keys, composer_surname, read_header, scan_work_keys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutopia", type=Path, required=True, help="a Mutopia checkout (has ftp/)")
    ap.add_argument("--scans", type=Path, default=make.SCANS)
    ap.add_argument("--out", type=Path, default=REPO / "src/audiosheet/data/held_out_works.tsv")
    a = ap.parse_args(argv)
    rows: dict[str, list[str]] = {}
    for d in sorted(p for p in a.scans.iterdir() if p.is_dir()):
        for k in scan_work_keys(d.name):
            rows.setdefault(k, []).append(f"real-scan work {d.name}")
    for ly, _, what in make.SOURCES:
        folder = a.mutopia / "ftp" / "/".join(ly.split("/")[:3])
        h = read_header([a.mutopia / "ftp" / ly] + sorted(folder.rglob("*.ly")))
        keys = catalogue_keys(composer_surname(ly.split("/")[0]),
                              f"{h.get('opus') or h.get('mutopiaopus') or ''} {h.get('title', '')}")
        if not keys:
            print(f"warning: {ly}: no catalogue number found", file=sys.stderr)
        for k in keys:
            rows.setdefault(k, []).append(f"real_dev recording: {what}")
    with open(a.out, "w") as f:
        f.write("# work key\twhy it is held out of training (written by "
                "benchmarks/real_dev/held_out.py)\n")
        for k in sorted(rows):
            f.write(f"{k}\t{'; '.join(sorted(set(rows[k])))}\n")
    print(f"{a.out}: {len(rows)} work keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
