"""The front end travels with the weights (issue 17 item 4), model kinds come from one registry,
and one rung "file → embeddings" serves both ``index add`` and queries (item 5)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audiosheet.frontend.spectrogram import DEFAULT as SPEC
from audiosheet.frontend.spectrogram import SpectrogramConfig, n_bins
from audiosheet.geometry import AUDIO_BINS, SPEC_BINS, TARGET_STAFF_SPACE, FrontEnd, FrontEndMismatch
from audiosheet.models.checkpoint import (
    CheckpointError,
    config_from_dict,
    front_end_of,
    is_passage,
    kind_of,
    load_encoder,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from audiosheet.models.config import ModelConfig
from audiosheet.models.embed_file import embed_file, ingest_file
from audiosheet.models.passage import PassageConfig, PassageModel
from audiosheet.models.snippet import SnippetModel
from audiosheet.retrieval.collection import Collection
from audiosheet.retrieval.identify import embed_query
from audiosheet.retrieval.store import CollectionError

SMALL = dict(channels=[4, 4, 4, 4], embed_dim=8, cca=False)


def _write_raw_checkpoint(model, path: Path, meta: dict) -> Path:
    """A checkpoint as an older version wrote it: only the metadata given."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()},
              str(path), metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    return path


def test_front_end_numbers_agree_with_the_code_that_makes_them():
    assert n_bins(SPEC) == SPEC_BINS == AUDIO_BINS
    assert SpectrogramConfig(**FrontEnd().spectrogram_settings()) == SPEC
    assert FrontEnd().staff_space == TARGET_STAFF_SPACE


def test_front_end_record_round_trip_and_errors():
    assert FrontEnd.from_dict(None) == FrontEnd.from_dict({}) == FrontEnd()
    fe = FrontEnd(staff_space=8.0, fps=25.0)
    assert FrontEnd.from_dict(fe.to_dict()) == fe
    assert FrontEnd.from_dict({"staff_space": 8.0}) == FrontEnd(staff_space=8.0)  # older, partial records
    with pytest.raises(FrontEndMismatch, match="unknown"):
        FrontEnd.from_dict({"staff_space": 7.0, "colour": "blue"})
    with pytest.raises(FrontEndMismatch) as e:
        FrontEnd().check(fe, "model x", "collection y")
    msg = str(e.value)
    assert "\n" not in msg and "model x" in msg and "collection y" in msg and "staff_space 8.0 vs 7.0" in msg
    FrontEnd().check(FrontEnd(), "a", "b")  # equal: nothing raised


def test_checkpoints_record_the_front_end_and_older_ones_load_with_todays(tmp_path):
    m = SnippetModel(ModelConfig(name="t", **SMALL))
    assert front_end_of(m) == FrontEnd()
    m.front_end = FrontEnd(staff_space=8.0)
    path = save_checkpoint(m, tmp_path / "m.safetensors")
    assert read_checkpoint(path)[2]["front_end"] == FrontEnd(staff_space=8.0).to_dict()
    assert load_model(path).front_end == FrontEnd(staff_space=8.0)
    old = _write_raw_checkpoint(m, tmp_path / "old.safetensors", {"config": m.config.to_dict()})
    assert read_checkpoint(old)[2]["front_end"] == FrontEnd().to_dict()
    assert load_model(old).front_end == FrontEnd()
    newer = _write_raw_checkpoint(m, tmp_path / "newer.safetensors",
                                  {"config": m.config.to_dict(), "front_end": {"hop_mm": 3}})
    with pytest.raises(CheckpointError, match="newer.safetensors: front-end settings"):
        read_checkpoint(newer)


def test_an_encoder_of_another_front_end_is_refused(tmp_path):
    m = SnippetModel(ModelConfig(name="t", **SMALL))
    m.front_end = FrontEnd(fps=25.0)
    path = save_checkpoint(m, tmp_path / "fps25.safetensors")
    with pytest.raises(CheckpointError, match="fps 25.0 vs 20.0"):
        load_encoder(SnippetModel(ModelConfig(name="t", **SMALL)), path, "audio")


def test_model_kinds_come_from_one_registry(tmp_path):
    snip, pas = SnippetModel(ModelConfig(name="t", **SMALL)), PassageModel(PassageConfig())
    assert kind_of(snip).name == "snippet" and kind_of(pas).name == "passage"
    assert is_passage(pas.config) and not is_passage(snip)
    assert isinstance(config_from_dict(PassageConfig().to_dict()), PassageConfig)
    assert isinstance(config_from_dict(snip.config.to_dict()), ModelConfig)
    with pytest.raises(ValueError, match="unknown model kind 'tree'"):
        config_from_dict({"kind": "tree"})
    path = save_checkpoint(pas, tmp_path / "p.safetensors")
    assert isinstance(load_model(path), PassageModel)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == kind_of(pas).format


def test_ingestion_reads_the_staff_space_from_the_front_end(files):
    pdf = sorted((files / "sheets").glob("*.pdf"))[0]
    base = ingest_file(pdf)
    larger = ingest_file(pdf, front_end=FrontEnd(staff_space=TARGET_STAFF_SPACE * 1.25))
    ratio = larger.strip.image.shape[1] / base.strip.image.shape[1]
    assert 1.15 < ratio < 1.35
    with pytest.raises(FrontEndMismatch, match="strip_height 120"):
        ingest_file(pdf, front_end=FrontEnd(strip_height=120))


def test_collections_record_the_front_end_and_refuse_another(files, tmp_path):
    pdf = sorted((files / "sheets").glob("*.pdf"))[0]
    coll = Collection(tmp_path / "db")
    assert coll.settings["front_end_settings"] == FrontEnd().to_dict()
    assert coll.front_end_settings == FrontEnd()
    coll.add([pdf], progress=False)
    with coll.writing(), coll.db:  # as if it had been indexed with another staff space
        coll.set_setting("front_end_settings", FrontEnd(staff_space=8.0).to_dict())
    again = Collection(tmp_path / "db")
    with pytest.raises(CollectionError) as e:
        again.embedder
    assert "other front-end settings" in str(e.value) and "\n" not in str(e.value)
    with again.writing(), again.db:  # a collection made before the record: today's defaults
        again.set_setting("front_end_settings", None)
    assert Collection(tmp_path / "db").front_end_settings == FrontEnd()


def test_index_add_and_queries_use_the_one_rung(files, tmp_path):
    pdf = sorted((files / "sheets").glob("*.pdf"))[0]
    clip = files / "audio" / f"{pdf.stem}.flac"
    coll = Collection(tmp_path / "db", query_model="torch")
    coll.add([pdf, clip], progress=False)
    for item in coll.items():
        path = Path(item.path)
        fe = embed_file(path, coll.embedder, front_end=coll.front_end_settings,
                        hop=coll.settings["sheet_hop" if item.kind == "sheet" else "audio_hop"])
        stored = coll.data(item)["emb"]
        np.testing.assert_allclose(stored, fe.emb, atol=2e-3)  # stored as float16
        kind, q, _ = embed_query(coll, path)
        assert kind == item.kind
        np.testing.assert_allclose(q, fe.emb, atol=2e-2)  # the query batch may differ (bf16)
    with pytest.raises(ValueError, match="not a sheet-music or audio file"):
        ingest_file(tmp_path / "notes.txt")
