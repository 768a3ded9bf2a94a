"""The development-set scripts (benchmarks/real_dev): layout and licence check, the pre-training
split of the real scans."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "real_dev"


def _load(name: str):
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"real_dev_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "dev"
    for sub, names in (("sheets", ["a.pdf", "b.tif"]), ("queries", ["q1.flac", "q2.mp3"])):
        (d / sub).mkdir(parents=True)
        for n in names:
            (d / sub / n).write_bytes(b"x")
    (d / "labels.tsv").write_text("query\tpiece\nq1.flac\ta\nq2.mp3\t-\n")
    (d / "provenance.tsv").write_text(
        "file\tsource\tlicence\tnotes\n"
        "sheets/a.pdf\tIMSLP scan\tPublic domain (IMSLP)\t\n"
        "sheets/b.tif\tIMSLP scan\tPublic domain\t\n"
        "queries/q1.flac\tMutopia\tscore: Creative Commons Attribution-ShareAlike 4.0; samples: CC-BY 3.0\t\n"
        "queries/q2.mp3\tMutopia\tscore: Public Domain\t\n")
    return d


def test_check_passes_a_good_folder_and_names_each_problem(tmp_path):
    check = _load("check").check
    d = _folder(tmp_path)
    assert check(d) == []
    (d / "queries" / "q3.wav").write_bytes(b"x")  # unlabelled, no provenance
    lab = (d / "labels.tsv").read_text().replace("q2.mp3\t-", "q2.mp3\tc")  # names no sheet
    (d / "labels.tsv").write_text(lab)
    prov = (d / "provenance.tsv").read_text().replace(
        "queries/q2.mp3\tMutopia\tscore: Public Domain", "queries/q2.mp3\tsomewhere\tCC BY-NC 4.0")
    prov = prov.replace("sheets/b.tif\tIMSLP scan", "sheets/b.tif\tgithub.com/CPJKU/vienna4x22")
    (d / "provenance.tsv").write_text(prov)
    problems = check(d)
    assert any("q3.wav: no label" in p for p in problems)
    assert any("q3.wav: no row in provenance" in p for p in problems)
    assert any("names piece 'c', which is no sheet" in p for p in problems)
    assert any("q2.mp3: licence 'CC BY-NC 4.0' is not one we may use" in p for p in problems)
    assert any("b.tif: source" in p and "reserved" in p for p in problems)
    assert _load("check").main([str(tmp_path / "nothing")]) == 1


def test_built_development_set_passes_the_check():
    d = Path("/work/data/real_dev")
    if not (d / "labels.tsv").is_file():
        pytest.skip("no development set built here (benchmarks/real_dev/README.md)")
    assert _load("check").check(d) == []


def test_pretraining_pages_leave_out_every_work_with_queries(tmp_path, capsys):
    pp = _load("pretrain_pages")
    scans = tmp_path / "scans"
    for n in ("w1", "w2", "w3"):
        (scans / n).mkdir(parents=True)
    labels = tmp_path / "labels.tsv"
    labels.write_text("query\tpiece\nq1\tw2\nq2\t-\n")
    assert pp.main(["--scans", str(scans), "--labels", str(labels)]) == 0
    assert capsys.readouterr().out.split() == [str(scans / "w1"), str(scans / "w3")]
    labels.write_text("query\tpiece\nq1\tw9\n")
    assert pp.main(["--scans", str(scans), "--labels", str(labels)]) == 1
    assert {s for _, s, _ in _load("make").SOURCES if s and s != "-"} == pp.query_works(None)
