"""Queries through the collection's ONNX export: same embeddings and answers as torch, no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from audiosheet import Collection  # noqa: E402
from audiosheet.models.onnx import OnnxEmbedder, read_meta  # noqa: E402


@pytest.fixture(scope="module")
def db(files, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("onnx") / "coll"
    rep = Collection(db).add([files / "sheets", files / "audio"], progress=False)
    assert len(rep.added) == 8
    return db


def test_export_matches_torch(db, files):
    c = Collection(db, query_model="onnx")
    meta = read_meta(db / "model")
    assert meta["model_sha256"] == c.settings["model_sha256"]
    q = c.query_embedder
    assert isinstance(q, OnnxEmbedder)
    from audiosheet.frontend.audio import ingest_audio
    from audiosheet.frontend.strip import ingest_sheet

    a = ingest_audio(c.items("audio")[0].path, context=q.config.context, hop=5)
    s = ingest_sheet(c.items("sheet")[0].path, hop=10)
    for fast, ref in ((q.audio(a.snippets), c.embedder.audio(a.snippets)),
                      (q.sheet(s.snippets), c.embedder.sheet(s.snippets))):
        assert fast.shape == ref.shape and fast.dtype == np.float32
        assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
        assert (fast * ref).sum(axis=1).min() > 0.995  # torch embeds with bf16 autocast


def test_onnx_recording_shares_its_attention_as_torch_does(db, tmp_path):
    """``OnnxEmbedder.audio_sequence`` (attention.onnx + audio_net.onnx, float32) against the torch
    ``Embedder.audio_sequence`` (bf16) and against the snippet-by-snippet ONNX graph."""
    from audiosheet.frontend.audio import ingest_audio

    c = Collection(db, query_model="onnx")
    q = c.query_embedder
    meta = read_meta(db / "model")
    assert meta["format"] == "audiosheet-onnx-v2" and meta["shared_attention"]["stride"] == 8
    spec = ingest_audio(c.items("audio")[0].path, context=q.config.context, hop=5).spec
    fast = q.audio_sequence(spec, 5)
    ref = c.embedder.audio_sequence(spec, 5)
    alone = q.audio(ingest_audio(c.items("audio")[0].path, context=q.config.context, hop=5).snippets)
    assert fast.shape == ref.shape == alone.shape and fast.dtype == np.float32
    assert (fast * ref).sum(axis=1).min() > 0.995  # float32 here, bf16 in torch
    assert (fast * alone).sum(axis=1).min() > 0.99
    # a v1 export (no attention graphs) is still read, snippet by snippet, and rewritten as v2
    # by the next index add
    import shutil

    copy = tmp_path / "coll"
    shutil.copytree(db, copy)
    meta["format"], meta["shared_attention"] = "audiosheet-onnx-v1", None
    (copy / "model" / "model.json").write_text(json.dumps(meta))
    (copy / "model" / "attention.onnx").unlink()
    old = OnnxEmbedder(copy / "model")
    assert np.allclose(old.audio_sequence(spec, 5), alone, atol=1e-6)
    c2 = Collection(copy)
    with c2.writing():
        c2._export_query_model()
    assert read_meta(copy / "model")["format"] == "audiosheet-onnx-v2"


def test_identify_through_onnx_without_torch(db, files):
    """A one-shot query process never imports torch, and answers as the torch path does."""
    audio = Collection(db).items("audio")[1]
    code = ("import sys, json; from audiosheet.cli import main; "
            f"rc = main(['identify', '--db', {str(db)!r}, {audio.path!r}, '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    fast = json.loads(out.stdout)
    c = Collection(db)
    c._query_embedder = c.embedder  # the torch path
    ref = c.identify(audio.path).to_dict()
    assert [r["piece"] for r in fast["results"]] == [r["piece"] for r in ref["results"]]
    assert abs(fast["results"][0]["score"] - ref["results"][0]["score"]) < 0.01


def test_stale_export_falls_back_to_torch(db, tmp_path):
    import shutil

    copy = tmp_path / "coll"
    shutil.copytree(db, copy)
    meta = json.loads((copy / "model" / "model.json").read_text())
    meta["model_sha256"] = "0" * 64
    (copy / "model" / "model.json").write_text(json.dumps(meta))
    from audiosheet.models.embed import Embedder

    assert isinstance(Collection(copy, query_model="onnx").query_embedder, Embedder)


def test_auto_uses_torch_once_it_is_imported(db):
    from audiosheet.models.embed import Embedder

    assert isinstance(Collection(db).query_embedder, Embedder)  # pytest has imported torch
    assert Collection(db).query_embedder.batch == 16
    assert isinstance(Collection(db, query_model="torch").query_embedder, Embedder)
    with pytest.raises(Exception, match="query_model must be"):
        Collection(db, query_model="gpu")
