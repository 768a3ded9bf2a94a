"""Identification as real collections need it: calibrated confidence, the open set, long
recordings in segments, and batches that survive any one file's failure."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from audiosheet import Collection  # noqa: E402
from audiosheet.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def three(files, tmp_path_factory) -> Path:
    """A collection of three of the four test scores (delta left out: the open set)."""
    db = tmp_path_factory.mktemp("open") / "coll"
    sheets = sorted((files / "sheets").glob("*.pdf"))
    rep = Collection(db).add([p for p in sheets if p.stem != "delta"], progress=False)
    assert len(rep.added) == 3 and not rep.failed
    return db


def test_open_set_query_is_not_a_confident_match(three, files, capsys):
    c = Collection(three)
    res = c.identify(files / "audio" / "delta.flac")
    assert res.results and res.confident is False and res.best is None
    assert res.to_dict()["match"] is None and res.to_dict()["confident"] is False
    assert main(["identify", "--db", str(three), str(files / "audio" / "delta.flac")]) == 0
    assert "no confident match" in capsys.readouterr().out
    known = c.identify(files / "audio" / "gamma.flac")
    assert known.confident is True and known.best.piece == "gamma"


def test_long_recording_is_identified_in_segments(three, files, tmp_path, capsys):
    import soundfile as sf

    parts, spans, t = [], [], 0.0
    for name in ("gamma", "alpha", "gamma"):
        a, sr = sf.read(files / "audio" / f"{name}.flac", dtype="float32")
        a = a[: int(10 * sr)]
        parts.append(a)
        spans.append((name, t, t + len(a) / sr))
        t += len(a) / sr
    long = tmp_path / "concert.flac"
    sf.write(long, np.concatenate(parts), sr)
    c = Collection(three)
    res = c.identify(long, segment_over=20, segment_s=10)
    assert len(res.segments) == 3
    assert [s["start_s"] for s in res.segments] == pytest.approx([0, 10, 20], abs=0.3)
    assert [s["results"][0].piece for s in res.segments] == ["gamma", "alpha", "gamma"]
    assert [m.piece for m in res.results[:2]] == ["gamma", "alpha"]  # by segments answered
    assert res.query_info["segments_won"]["gamma"] == 2  # confident segments only
    assert res.query_info["segments_won"].get("alpha", 0) <= 1
    whole = c.identify(long, segment_over=1000)  # below the threshold: one answer, no segments
    assert not whole.segments
    assert main(["identify", "--db", str(three), str(long), "--json", "--segment-over", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_info"]["segments"] == len(out["segments"]) >= 1
    assert all({"start_s", "end_s", "confident", "results"} <= set(s) for s in out["segments"])


def test_memory_error_in_one_file_is_that_files_failure(files, tmp_path, monkeypatch):
    db = tmp_path / "coll"
    real = Collection._ingest

    def flaky(self, path, kind):
        if path.stem == "beta":
            raise MemoryError()
        return real(self, path, kind)

    monkeypatch.setattr(Collection, "_ingest", flaky)
    rep = Collection(db).add([files / "sheets"], progress=False)
    assert [Path(p).stem for p, _ in rep.failed] == ["beta"]
    assert "out of memory" in rep.failed[0][1] and rep.failed[0][1].startswith(str(files / "sheets" / "beta.pdf"))
    assert len(rep.added) == 3
    c = Collection(db)
    ix, items, owner, starts = c.search_index("sheet")
    assert ix.ntotal == starts[-1] == sum(i.n for i in c.items()) and len(items) == 3
    assert not list((db / "items").glob(".*"))  # nothing half-written left behind
    monkeypatch.setattr(Collection, "_ingest", real)
    rep = Collection(db).add([files / "sheets"], progress=False)  # the retry adds it
    assert [i.name for i in rep.added] == ["beta"] and len(rep.present) == 3




def test_evaluate_folder(files, tmp_path, capsys):
    import shutil

    dev = tmp_path / "dev"
    for sub in ("sheets", "queries"):
        (dev / sub).mkdir(parents=True)
    for name in ("alpha", "gamma", "beta"):
        shutil.copy(files / "sheets" / f"{name}.pdf", dev / "sheets")
    # beta and gamma: their recordings find their scores by a clear margin (alpha's own recording
    # is a coin flip between alpha and beta: margins 0.043 and 0.042, whichever wins by 0.001)
    for name in ("beta", "gamma", "delta"):
        shutil.copy(files / "audio" / f"{name}.flac", dev / "queries")
    shutil.copy(files / "audio" / "alpha.flac", dev / "queries" / "stray.flac")  # not labelled
    (dev / "labels.tsv").write_text("query\tpiece\nbeta.flac\tbeta\ngamma.flac\tgamma\n"
                                    "delta.flac\t-\n")
    out = tmp_path / "res.json"
    assert main(["evaluate", "folder", str(dev), "--json", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert (res["queries"], res["open_set_queries"], res["pieces"]) == (2, 1, 2)
    assert res["top1"] == 1.0 and res["MRR"] == 1.0 and res["shortlist_recall"] == 1.0
    assert res["open_set_fpr"] == 0.0 and res["unlabelled"] == ["stray.flac"]
    assert [r["query"] for r in res["per_query"]] == ["beta.flac", "gamma.flac", "delta.flac"]
    assert "unlabelled stray.flac" in capsys.readouterr().err
    # another model: its collection is copied from the first one (same front end), not re-read
    from audiosheet import Collection
    from audiosheet.evaluate import evaluate_folder
    from audiosheet.models.checkpoint import load_model, save_checkpoint

    other = save_checkpoint(load_model("snippet-bl2-att84"), tmp_path / "other.safetensors",
                            {"note": "the shipped weights under another file"})
    first = next(dev.glob(".collection-*"))
    import audiosheet.frontend.strip as strip_mod

    def no_reading(*a, **k):
        raise AssertionError("a page was read again")

    orig, strip_mod.ingest_sheet = strip_mod.ingest_sheet, no_reading
    try:
        again = evaluate_folder(dev, model=str(other))
    finally:
        strip_mod.ingest_sheet = orig
    colls = sorted(dev.glob(".collection-*"))
    assert len(colls) == 2 and again["top1"] == res["top1"] and again["queries"] == 2
    fe = {Collection(c, create=False).settings["front_end"] for c in colls}
    assert fe == {Collection(first, create=False).settings["front_end"]}
    (dev / "labels.tsv").write_text("beta.flac\tbetta\n")  # a typo: a failure, with a suggestion
    assert main(["evaluate", "folder", str(dev), "--quiet"]) == 1
    assert "did you mean 'beta'?" in capsys.readouterr().err
    (dev / "labels.tsv").write_text("beta.flac beta\n")
    assert main(["evaluate", "folder", str(dev), "--quiet"]) == 1
    assert "labels.tsv:1: expected 'query<TAB>piece'" in capsys.readouterr().err


def test_a_page_finds_a_short_clip_of_its_recording(files, tmp_path):
    import soundfile as sf

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("alpha", "beta", "gamma"):
        a, sr = sf.read(files / "audio" / f"{name}.flac", dtype="float32")
        sf.write(clips / f"{name}.flac", a[int(2 * sr):int(5 * sr)], sr)  # 3 s of a 10-s piece
    c = Collection(tmp_path / "coll")
    assert len(c.add([clips], progress=False).added) == 3
    res = c.identify(files / "sheets" / "alpha.pdf")  # 12 query snippets cannot fit 3 s: swapped
    assert res.results[0].piece == "alpha" and res.confident
    assert all(np.isfinite(m.margin) for m in res.results)  # no clip is "too short" any more


def test_index_add_prints_front_end_warnings(files, tmp_path, capsys):
    import soundfile as sf

    a, sr = sf.read(files / "audio" / "alpha.flac", dtype="float32")
    sf.write(tmp_path / "loud.wav", np.clip(a / np.abs(a).max() * 8, -1, 1), sr)
    assert main(["index", "add", "--db", str(tmp_path / "coll"), str(tmp_path / "loud.wav"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "warning: clipped:" in out and "% of the samples are at full scale" in out
    assert Collection(tmp_path / "coll").items()[0].info["warnings"][0].startswith("clipped:")
