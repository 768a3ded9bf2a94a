"""The collection index, identification, the Python API and the CLI on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("faiss")

from audiosheet import Collection  # noqa: E402
from audiosheet.cli import main  # noqa: E402
from audiosheet.corpus.reader import Corpus  # noqa: E402
from audiosheet.retrieval.identify import IdentifyError, identify  # noqa: E402
from audiosheet.retrieval.store import CollectionError  # noqa: E402
from tests.test_pages import _empty_pdf, _png, encrypted_pdf  # noqa: E402


@pytest.fixture(scope="session")
def coll_path(files, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("db") / "coll"
    rep = Collection(db).add([files / "sheets", files / "audio"], progress=False)
    assert len(rep.added) == 8 and not rep.failed
    return db


# ----------------------------------------------------------------------------------------------
# matching pieces






# ----------------------------------------------------------------------------------------------
# the collection


def test_collection_items_and_model(coll_path, files, corpus, tmp_path):
    c = Collection(coll_path)
    items = c.items()
    assert sorted(i.kind for i in items) == ["audio"] * 4 + ["sheet"] * 4
    assert {i.name for i in items} == set(Corpus(corpus).piece_ids)
    assert c.model_name == "snippet-bl2-att84" and c.settings["dim"] == 32
    # re-adding the same content (same file, or a copy elsewhere) is a no-op
    copy = tmp_path / "copy.pdf"
    copy.write_bytes((files / "sheets" / f"{items[0].name}.pdf").read_bytes())
    rep = c.add([files / "sheets", copy], progress=False)
    assert not rep.added and len(rep.present) == 5 and len(c) == 8
    assert c.size_on_disk()["faiss"] > 0


def test_collection_refuses_another_model(coll_path, tmp_path):
    from audiosheet.models.checkpoint import save_checkpoint
    from audiosheet.models.config import ModelConfig
    from audiosheet.models.snippet import SnippetModel

    other = save_checkpoint(SnippetModel(ModelConfig()), tmp_path / "other.safetensors")
    with pytest.raises(CollectionError, match="models cannot be mixed"):
        Collection(coll_path, model=str(other))


def test_reembed_copies_a_collection_with_another_model(coll_path, tmp_path, capsys):
    from audiosheet.models.checkpoint import load_config, save_checkpoint
    from audiosheet.models.snippet import SnippetModel
    from audiosheet.retrieval.reembed import reembed

    src = Collection(coll_path)
    before = {i.sha256: src.data(i)["emb"].copy() for i in src.items()}
    # the same model: the same embeddings (sheets bit for bit; audio from the float16 spectrogram)
    same = reembed(coll_path, tmp_path / "same", progress=False)
    assert same["items"] == 8 and not same["failed"]
    c = Collection(tmp_path / "same")
    assert c.settings["front_end"] == src.settings["front_end"]  # the strips are the source's
    assert [(i.name, i.kind, i.sha256, i.n) for i in c.items()] == \
        [(i.name, i.kind, i.sha256, i.n) for i in src.items()]
    for i in c.items():
        e, b = c.data(i)["emb"], before[i.sha256]
        if i.kind == "sheet":
            assert np.abs(e - b).max() <= 2e-3  # float16 storage
        else:  # from the float16 spectrogram: nearly the same direction
            assert (e * b).sum(1).min() > 0.995
    audio = src.items("audio")[0]
    assert c.identify(audio.path, top=1).results[0].piece == src.identify(audio.path, top=1).results[0].piece
    # another model: other embeddings, the same items; the source is unchanged
    other = save_checkpoint(SnippetModel(load_config("bl2_att84")), tmp_path / "other.safetensors")
    assert main(["index", "reembed", "--db", str(coll_path), "--out", str(tmp_path / "other"),
                 "--model", str(other), "--quiet"]) == 0
    assert "8 item(s) re-embedded" in capsys.readouterr().out
    o = Collection(tmp_path / "other")
    assert o.settings["model_sha256"] != src.settings["model_sha256"] and len(o) == 8
    assert not np.allclose(o.data(o.items()[0])["emb"], before[o.items()[0].sha256], atol=1e-2)
    assert all(np.array_equal(Collection(coll_path).data(i)["emb"], before[i.sha256])
               for i in Collection(coll_path).items())
    with pytest.raises(CollectionError, match="already holds 8 items"):
        reembed(coll_path, tmp_path / "same", progress=False)


def test_identify_audio_finds_score_and_passage(coll_path, files):
    c = Collection(coll_path)
    hits = 0
    for item in c.items("audio"):
        res = c.identify(item.path, method="dtw", top=4)
        assert res.query_kind == "audio" and res.method == "dtw"
        assert [m.kind for m in res.results] == ["sheet"] * len(res.results)
        top = res.results[0]
        hits += top.piece == item.name
        loc = top.location
        assert loc["page"] >= 1 and loc["system"] >= 1 and loc["x1"] > loc["x0"]
        assert all(s["box"][2] > s["box"][0] and s["box"][3] > s["box"][1] for s in loc["spans"])
        assert res.results == sorted(res.results, key=lambda m: -m.margin)  # calibrated ranking
        conf = [m.confidence for m in res.results]
        assert conf == sorted(conf, reverse=True) and all(0 <= c <= 1 for c in conf)
        assert res.confident == (conf[0] >= 0.5)
    assert hits >= 3  # the four test pieces are bare scales, two of them alike
    part = c.identify(c.items("audio")[2].path, start=1.0, end=4.5)
    assert {k: part.query_info[k] for k in ("start_s", "end_s", "seconds")} == \
        {"start_s": 1.0, "end_s": 4.5, "seconds": 3.5}
    vote = c.identify(c.items("audio")[0].path, method="vote")
    assert vote.results[0].votes == max(m.votes for m in vote.results)
    assert abs(sum(m.score for m in vote.results) - 1) < 1e-6 or len(vote.results) == 4


def test_identify_page_finds_recording_and_time(coll_path, corpus):
    c = Collection(coll_path)
    hits = 0
    for item in c.items("sheet"):
        res = c.identify(item.path, method="dtw")
        assert [m.kind for m in res.results] == ["audio"] * len(res.results)
        top = res.results[0]
        hits += top.piece == item.name
        assert 0 <= top.location["start_s"] < top.location["end_s"]
    assert hits >= 3


def test_cli_identify_json_and_show(coll_path, tmp_path, capsys):
    audio = Collection(coll_path).items("audio")[1]
    out = tmp_path / "match.png"
    assert main(["identify", "--db", str(coll_path), audio.path, "--json", "--top", "3",
                 "--show", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == audio.path and len(res["results"]) <= 3
    assert {"piece", "score", "location"} <= set(res["results"][0])
    from PIL import Image

    im = Image.open(out)
    assert im.size[0] > 300 and im.size[1] > 300
    px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)  # the highlight is drawn
    assert ((px[:, 0] > 200) & (px[:, 1] > 150) & (px[:, 2] < 150)).mean() > 0.001


def test_index_list_and_remove(files, tmp_path, capsys):
    db = tmp_path / "db"
    assert main(["index", "add", "--db", str(db), str(files / "sheets"), "--quiet"]) == 0
    assert main(["index", "list", "--db", str(db), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(listed["items"]) == 4
    name = listed["items"][0]["name"]
    assert main(["index", "remove", "--db", str(db), name]) == 0
    c = Collection(db)
    assert len(c) == 3 and name not in {i.name for i in c.items()}
    ix, items, owner, _ = c.search_index("sheet")
    assert ix.ntotal == sum(i.n for i in items) == len(owner)
    assert main(["index", "remove", "--db", str(db), "no-such-item"]) == 1
    assert "no item 'no-such-item'" in capsys.readouterr().err


def test_approximate_index_above_threshold(files, tmp_path):
    import faiss

    c = Collection(tmp_path / "db", approx_threshold=10)
    c.add([files / "sheets"], progress=False)
    ix, items, _, _ = c.search_index("sheet")
    assert isinstance(ix, faiss.IndexHNSWFlat) and ix.ntotal == sum(i.n for i in items)
    exact = Collection(tmp_path / "db", index="exact")
    assert isinstance(exact.search_index("sheet")[0], faiss.IndexFlatIP)
    assert main(["index", "add", "--db", str(tmp_path / "db2"), str(files / "sheets"), "--quiet",
                 "--approx-threshold", "10"]) == 0
    assert isinstance(Collection(tmp_path / "db2").search_index("sheet")[0], faiss.IndexHNSWFlat)


# ----------------------------------------------------------------------------------------------
# atomic updates


_KILL = """
import os, sys
from audiosheet.retrieval.collection import Collection
orig = Collection.set_setting
def dying(self, key, value):
    if key == "generation":
        os._exit(9)  # killed inside the transaction, after the new index files were written
    return orig(self, key, value)
Collection.set_setting = dying
Collection(sys.argv[1]).add(sys.argv[2:], progress=False)
"""


def test_killed_add_leaves_the_previous_index_usable(files, tmp_path):
    db = tmp_path / "db"
    sheets = sorted((files / "sheets").glob("*.pdf"))
    Collection(db).add(sheets[:2], progress=False)
    before = Collection(db)
    gen = before.settings["generation"]
    r = subprocess.run([sys.executable, "-c", _KILL, str(db), *map(str, sheets[2:])],
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 9
    after = Collection(db)
    assert [i.name for i in after.items()] == [i.name for i in before.items()]
    assert after.settings["generation"] == gen
    audio = sorted((files / "audio").glob("*.flac"))
    after.add(audio[:1], progress=False)
    assert after.identify(audio[0], method="vote").results  # fully usable
    # leftovers of the killed add are gone, and adding the files again works
    assert len(list((db / "items").glob("*.npz"))) == 3
    assert len(Collection(db).add(sheets, progress=False).added) == 2


def test_missing_faiss_file_is_rebuilt(files, tmp_path):
    db = tmp_path / "db"
    c = Collection(db)
    c.add([files / "audio"], progress=False)
    for f in (db / "faiss").iterdir():
        f.unlink()
    ix, items, _, _ = Collection(db).search_index("audio")
    assert ix.ntotal == sum(i.n for i in items) > 0


# ----------------------------------------------------------------------------------------------
# bad input


def test_query_against_empty_collection(files, tmp_path, capsys):
    db = tmp_path / "db"
    Collection(db).add([files / "audio"], progress=False)  # recordings only: nothing for audio
    audio = next((files / "audio").glob("*.flac"))
    assert main(["identify", "--db", str(db), str(audio)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no scores" in err and "Traceback" not in err
    with pytest.raises(IdentifyError):
        identify(Collection(db), audio)
    assert main(["identify", "--db", str(tmp_path / "nothing"), str(audio)]) == 1
    assert "no collection here" in capsys.readouterr().err


def _wav(path, audio, sr=22050):
    import soundfile as sf

    sf.write(path, audio, sr)
    return path


BAD = {  # file name → (how to make it, words of the one-line reason)
    "corrupt.flac": (lambda p: p.write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(range(256)) * 4),
                     "corrupt"),
    "notaudio.wav": (lambda p: p.write_text("RIFF? no, just text\n"), "not a readable audio file"),
    "silent.wav": (lambda p: _wav(p, np.zeros(22050 * 3, np.float32)), "silent"),
    "blank.png": (lambda p: p.write_bytes(_png(np.full((1100, 800), 250, np.uint8))), "blank page"),
    "photo.png": (lambda p: p.write_bytes(_png((np.random.default_rng(0).random((600, 800)) * 255)
                                               .astype(np.uint8))), "no staves found"),
    "tiny.png": (lambda p: p.write_bytes(_png(np.zeros((40, 60), np.uint8))), "image too small"),
    "locked.pdf": (lambda p: encrypted_pdf(p), "encrypted PDF"),
    "empty.pdf": (lambda p: _empty_pdf(p), "PDF has no pages"),
}


@pytest.fixture()
def bad_files(tmp_path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    for name, (make, _) in BAD.items():
        make(d / name)
    return d


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_query_is_one_line_error(coll_path, bad_files, name, capsys):
    path = bad_files / name
    assert main(["identify", "--db", str(coll_path), str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and BAD[name][1] in err, err
    assert "Traceback" not in err


def test_batch_add_keeps_good_files_and_reports_bad(files, bad_files, tmp_path, capsys):
    good = sorted((files / "sheets").glob("*.pdf"))[:2] + sorted((files / "audio").glob("*.flac"))[:1]
    for g in good:
        (bad_files / g.name).write_bytes(g.read_bytes())
    db = tmp_path / "db"
    assert main(["index", "add", "--db", str(db), str(bad_files), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "added 3, already indexed 0, failed 8" in out
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 8 and all(BAD[Path(ln.split(": ")[0][8:]).name][1] in ln for ln in failed)
    assert "Traceback" not in err
    assert len(Collection(db)) == 3


def test_missing_path_in_batch(files, tmp_path, capsys):
    db = tmp_path / "db"
    assert main(["index", "add", "--db", str(db), str(tmp_path / "nope.pdf"),
                 str(next((files / "sheets").glob("*.pdf"))), "--quiet"]) == 1
    assert "nope.pdf: no such file or folder" in capsys.readouterr().err
    assert len(Collection(db)) == 1


def test_demo_end_to_end(tmp_path):
    """`audiosheet demo` on two held-out pieces: files, collection, table, picture."""
    from audiosheet.demo import run

    s = run(tmp_path / "demo", pieces=2, queries=2, seconds=10.0, progress=False)
    assert s["pieces"] == 2 and s["queries"] == 2 and Path(s["picture"]).is_file()
    assert len(list((tmp_path / "demo" / "files" / "sheets").glob("*.pdf"))) == 2
    rows = json.loads((tmp_path / "demo" / "demo.json").read_text())["rows"]
    assert all(r["true"] in r["query"] and len(r["top3"]) == 2 for r in rows)


def test_evaluate_pieces_counts_an_unreadable_score_as_a_miss_and_goes_on(corpus, tmp_path):
    """A score the page reader refuses (here a blank page) is reported and its piece counts as not
    found; the other pieces are still evaluated."""
    from PIL import Image

    from audiosheet.corpus.export import export
    from audiosheet.evaluate import evaluate_pieces

    work = tmp_path / "work"
    ids = export(corpus, work, split="all", workers=1, progress=False)["pieces"]
    blank = work / "sheets" / f"{ids[0]}.pdf"
    Image.new("L", (850, 1100), 255).save(blank)  # exported files are kept by a later export
    r = evaluate_pieces(corpus, split="all", direction="a2s", method="dtw", query_seconds=10.0, work=work)
    assert [u["file"] for u in r["unindexed"]] == [str(blank)]
    assert r["queries"] == len(ids) and r["collection_items"] == len(ids) - 1
    first = next(q for q in r["per_query"] if q["piece"] == ids[0])
    assert first["rank"] is None
    assert r["top1"] <= (len(ids) - 1) / len(ids)
