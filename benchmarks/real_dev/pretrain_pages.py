"""The real scans that self-supervised pre-training may use: the works of ``real_scans`` that have
no query in the development set (its *training part*, issue 16 item 3). The works with queries
stay unseen by every model, so the development set still measures pages no model looked at.

    python benchmarks/real_dev/pretrain_pages.py [--labels /work/data/real_dev/labels.tsv]
        prints one scan folder per line (use as: audiosheet pretrain --modality sheet --data $(...))

Without a labels file it reads the query works from ``make.SOURCES`` (the works the maker
renders queries for), so the split does not depend on a built development set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def query_works(labels: Path | None) -> set[str]:
    """Scan folder names that development-set queries point to."""
    if labels is not None:
        rows = [ln.split("\t") for ln in labels.read_text().splitlines()[1:] if ln.strip()]
        return {r[1] for r in rows if len(r) > 1 and r[1] != "-"}
    import make

    return {scan for _, scan, _ in make.SOURCES if scan and scan != "-"}


def main(argv=None) -> int:
    import make

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=Path, default=make.SCANS)
    ap.add_argument("--labels", type=Path, default=None, help="the development set's labels.tsv")
    a = ap.parse_args(argv)
    held = query_works(a.labels)
    folders = sorted(d for d in a.scans.iterdir() if d.is_dir())
    unknown = held - {d.name for d in folders}
    if unknown:
        print(f"error: query works not among the scans: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    for d in folders:
        if d.name not in held:
            print(d)
    print(f"{len(folders) - len(held)} of {len(folders)} scanned works (the {len(held)} with queries "
          f"held out)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
