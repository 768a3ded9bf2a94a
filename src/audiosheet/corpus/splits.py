"""Splits by work, and the works table: which pieces train, validate and test.

A split is decided per work (pieces sharing a work key are one group), by a seeded hash, except for
works whose split is fixed elsewhere: the reference test split of music21, works held out of
training, a work another source has already placed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from audiosheet.corpus.jobs import stable_hash
from audiosheet.corpus.reader import SPLIT_FRACTIONS, SPLITS
from audiosheet.files import write_text


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
        u = (stable_hash(seed, "split", label[root]) % 10**9) / 10**9
        out[SPLITS[int(np.searchsorted(cuts, u, side="right"))]].append(pid)
    return out


def composer_key(piece_id: str, composer: str) -> str:
    """A short composer key for statistics: the music21 collection (the piece id's prefix) or
    the composer's surname."""
    from audiosheet.corpus.mutopia import composer_surname

    if "-" in piece_id and not piece_id.startswith("mutopia-"):
        return piece_id.split("-")[0].lower()
    return composer_surname(composer) if composer else "unknown"


WORKS_FIELDS = ("piece", "split", "origin", "composer", "title", "catalogue", "work_keys", "source")


def write_works(out: Path, metas: dict[str, dict], splits: dict[str, list[str]]) -> None:
    """``works.tsv``: one line per piece — split, origin, composer, title, catalogue number (as
    the source gives them), work keys — to check the overlap between sources and with any test
    set (``corpus union`` refuses a work in the test split of one source and another split of
    another)."""
    split_of = {p: sp for sp, ids in splits.items() for p in ids}
    lines = ["\t".join(WORKS_FIELDS) + "\n"]
    for pid in sorted(metas):
        m = metas[pid]
        row = [pid, split_of.get(pid, ""), m.get("origin") or "", m.get("composer") or "",
               m.get("title") or "", m.get("catalogue") or "", " ".join(m.get("work_keys") or []),
               m.get("source") or ""]
        lines.append("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in row) + "\n")
    write_text(out / "works.tsv", "".join(lines))


def split_constraints(source: str, hold_out: str | Path | None = None) -> dict[str, str]:
    """Work key → split decided before hashing, for sources other than music21 (whose splits are
    the reference): the works held out of training (``mutopia.held_out_keys``: the real-material
    development set) go to test; a BWV number the music21 corpus holds goes where music21 put it
    (test when the shipped model's card lists it among its held-out pieces, else train)."""
    from audiosheet.corpus.mutopia import held_out_keys

    if source == "music21":
        return {}  # see reference_test
    fixed = {k: "test" for k in held_out_keys(hold_out)}
    try:
        from audiosheet.corpus.scores import music21_corpus_dir

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
    path = Path(__file__).parents[1] / "data" / "reference_test_music21.txt"
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
