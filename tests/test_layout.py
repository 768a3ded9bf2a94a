"""The package layout (issue 17): subpackages by stage, no import circle between modules (imports
inside functions count; ``if TYPE_CHECKING:`` blocks, which never run, do not), no module over 600
lines, the corpus builder without torch, and one home for the front-end numbers."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "audiosheet"
MAX_LINES = 600
STAGES = ("frontend", "corpus", "models", "retrieval", "training")


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules ``name`` imports anywhere in its code (TYPE_CHECKING blocks excepted)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([mod] if mod else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph(pkg: Path = PKG) -> dict[str, set[str]]:
    modules = _modules(pkg)
    return {n: _imports(n, p, modules) for n, p in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert _circles(_graph()) == []


def test_no_module_over_600_lines():
    big = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in big.items() if k > MAX_LINES} == {}


def test_subpackages_by_stage():
    for stage in STAGES:
        assert (PKG / stage / "__init__.py").is_file(), stage
    flat = sorted(p.stem for p in PKG.glob("*.py"))
    assert len(flat) <= 12, f"the top level should hold only the thin top and shared homes: {flat}"


def test_corpus_building_imports_no_torch():
    for p in (PKG / "corpus").glob("*.py"):
        assert not re.search(r"^\s*(import torch|from torch)", p.read_text(), re.M), p.name


def test_query_modules_import_no_training_or_corpus_module():
    """Statically: nothing the query path imports, however deep, is a training or corpus module
    (tests/test_install.py checks the same at run time)."""
    graph = _graph()
    seen, todo = set(), ["audiosheet.retrieval.collection", "audiosheet.retrieval.identify"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert not [m for m in seen if m.startswith(("audiosheet.training", "audiosheet.corpus"))]


def test_front_end_numbers_have_one_home():
    """Every front-end number is named in geometry.py only: no other module assigns these names."""
    names = re.compile(r"^(SAMPLE_RATE|FPS|SPEC_BINS|AUDIO_BINS|AUDIO_FRAMES|STRIP_HEIGHT|SHEET_H|SHEET_W|"
                       r"TARGET_STAFF_SPACE|SHEET_CROP_W|\w*_HOP)\b\s*[:=,]", re.M)
    for name, p in _modules().items():
        if name != "audiosheet.geometry":
            assert not names.findall(p.read_text()), f"{p.name} names a front-end number"


@pytest.mark.parametrize("suffix", [".pdf", ".png", ".tif", ".flac", ".mp3", ".m4a"])
def test_file_kinds_have_one_home(suffix):
    from audiosheet.files import AUDIO_SUFFIXES, SHEET_SUFFIXES, file_kind

    assert file_kind(f"x{suffix}") == ("sheet" if suffix in SHEET_SUFFIXES else "audio")
    assert suffix in SHEET_SUFFIXES | AUDIO_SUFFIXES
    for name, p in _modules().items():
        if name != "audiosheet.files":
            assert not re.search(r"^\w*(SUFFIXES|EXTENSIONS)\s*=\s*\{[^}]*\.pdf", p.read_text(), re.M), p.name
