"""The package's import structure in figures (issue 17): modules, import circles (imports inside
functions count, ``if TYPE_CHECKING:`` blocks do not) and the largest modules.

    python benchmarks/layout.py                 # this checkout
    python benchmarks/layout.py --src OTHER/src  # another checkout, e.g. one made with git worktree

tests/test_layout.py asserts the same rules (no circle, no module over 600 lines).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_layout import _circles, _graph, _modules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="folder holding the audiosheet package")
    ap.add_argument("--top", type=int, default=6, help="how many of the largest modules to list")
    a = ap.parse_args()
    pkg = Path(a.src) / "audiosheet"
    modules = _modules(pkg)
    circles = _circles(_graph(pkg))
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in modules.items()), reverse=True)
    out = {"modules": len(modules), "folders": len({p.parent for p in modules.values()}),
           "circles": [[m.removeprefix("audiosheet.") or "audiosheet" for m in c] for c in circles],
           "over_600_lines": sum(k > 600 for k, _ in sizes),
           "largest": {n.removeprefix("audiosheet."): k for k, n in sizes[:a.top]}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
