"""Self-supervised pre-training: a tiny run lowers NT-Xent, resumes exactly, feeds fine-tuning; the
unlabelled pool keeps validation and test pieces out."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from audiosheet.cli import main
from audiosheet.models.checkpoint import load_encoder, read_checkpoint
from audiosheet.models.config import ModelConfig
from audiosheet.models.snippet import SnippetModel
from audiosheet.training.pretrain import PretrainConfig, PretrainError, Unlabelled, list_files, pretrain

TINY_ATT = ModelConfig(name="tiny-att", channels=[8, 8, 16, 16], embed_dim=8, context=42, attention=True,
                       cca=False)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "tiny.json"
    p.write_text(json.dumps(TINY_ATT.to_dict()))
    return str(p)


def _log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("modality", ["audio", "sheet"])
def test_tiny_pretraining_lowers_the_loss(files, tiny_config, tmp_path, modality):
    cfg = PretrainConfig(modality=modality, model=tiny_config, batch=24, lr=3e-3, checkpoint_every=15,
                         val_batches=2, threads=1, max_steps=45)
    s = pretrain([files / ("audio" if modality == "audio" else "sheets")], tmp_path / "run", cfg,
                 workers=1, progress=False, log=lambda m: None)
    rows = _log(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [0, 15, 30, 45]
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert last < first - 0.2, (first, last)
    # view accuracy over 48 validation views moves by 1/48 per view: the loss is the steady signal,
    # the accuracy must rise above where it started at some checkpoint (on one CPU the sheet run
    # went 0.19 → 0.20 → 0.23 → 0.17 while its loss fell 3.85 → 2.73)
    assert max(float(r["val_acc"]) for r in rows[1:]) > float(rows[0]["val_acc"])
    assert s["steps"] == 45 and s["views_seen"] == 2 * 45 * 24 and s["files"] == 4
    # the checkpoint is a snippet model whose pre-trained pathway fine-tuning can load
    _, state, meta = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["pretrain"]["modality"] == modality and meta["pretrain"]["steps"] == 45
    model = SnippetModel(TINY_ATT)
    load_encoder(model, tmp_path / "run" / "last.safetensors", modality)
    key = "audio_net.blocks.0.0.weight" if modality == "audio" else "sheet_net.blocks.0.0.weight"
    key = key if key in state else next(k for k in state if k.startswith(key.split(".")[0]))
    assert torch.equal(model.state_dict()[key], state[key])


def test_resume_continues_the_same_run(files, tiny_config, tmp_path):
    cfg = PretrainConfig(modality="sheet", model=tiny_config, batch=16, checkpoint_every=4, threads=1,
                         max_steps=8)
    quiet = dict(workers=1, progress=False, log=lambda m: None)
    pretrain([files / "sheets"], tmp_path / "straight", cfg, **quiet)
    cfg.max_steps = 4
    pretrain([files / "sheets"], tmp_path / "split", cfg, **quiet)
    with pytest.raises(PretrainError, match="already exists"):
        pretrain([files / "sheets"], tmp_path / "split", cfg, **quiet)
    s = pretrain(None, tmp_path / "split", resume=True, max_steps=8, **quiet)
    assert s["steps"] == 8
    _, a, _ = read_checkpoint(tmp_path / "straight" / "last.safetensors")
    _, b, _ = read_checkpoint(tmp_path / "split" / "last.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a if k.startswith("sheet_net"))
    assert [r["step"] for r in _log(tmp_path / "split")] == ["0", "4", "8"]


def test_unlabelled_positions_skip_silence_and_blank_paper(tmp_path):
    import soundfile as sf

    sr = 22050
    t = np.arange(sr * 12) / sr
    wave = np.where(t < 6, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    sf.write(tmp_path / "half_silent.wav", wave, sr)
    data = Unlabelled(list_files([tmp_path], "audio"), "audio", tmp_path / "cache", context=42,
                      progress=False, log=lambda m: None)
    starts = data.index[:, 1]
    assert len(starts) and starts.max() + data.length <= 12 * 20 and starts.min() >= 0
    # every window is at least half sound (the first 6 s)
    assert (starts <= 6 * 20 - data.length // 2 + 2).all()
    x = data.batch(np.random.default_rng(0), 5)
    assert x.shape == (5, 1, 92, 84) and x.dtype == torch.float32


def test_bad_files_are_reported_and_skipped(files, tiny_config, tmp_path):
    (tmp_path / "data").mkdir()
    for p in (files / "audio").glob("*.flac"):
        (tmp_path / "data" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "data" / "broken.flac").write_bytes(b"fLaC\x00garbage" * 10)
    (tmp_path / "data" / "notes.txt").write_text("not audio")  # other kinds are ignored
    logged = []
    cfg = PretrainConfig(modality="audio", model=tiny_config, batch=8, max_steps=2, checkpoint_every=2,
                         threads=1)
    s = pretrain([tmp_path / "data"], tmp_path / "run", cfg, workers=1, progress=False, log=logged.append)
    assert s["files"] == 4 and len(s["unreadable"]) == 1 and s["unreadable"][0].endswith("broken.flac")
    assert any("broken.flac" in m and m.startswith("skipped:") for m in logged)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "--modality", "audio", "--data", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    assert main(["pretrain", "--modality", "sheet", "--data", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "r"), "--quiet"]) == 1
    assert "no sheet files found" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(tmp_path / "r2"), "--resume", "--quiet"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_pool_keeps_valid_and_test_out(corpus, tmp_path):
    from audiosheet.corpus.pool import PoolOptions, build_pool, pool_combinations
    from audiosheet.corpus.reader import Corpus
    from audiosheet.corpus.synth import TEST_ONLY, available_soundfonts

    r = build_pool(corpus, tmp_path / "pool", PoolOptions(monophonic=0, seed=1), workers=1, progress=False)
    c = Corpus(corpus)
    train = set(c.split("train"))
    sheets = {p.stem for p in (tmp_path / "pool" / "sheets").glob("*.pdf")}
    audio = {p.stem for p in (tmp_path / "pool" / "audio").glob("*.flac")}
    assert sheets == audio == train and r["failed"] == 0
    assert not sheets & (set(c.split("valid")) | set(c.split("test")))
    combos = pool_combinations(available_soundfonts("all"))
    assert combos and TEST_ONLY not in combos
    # resumable: a second run writes nothing
    again = build_pool(corpus, tmp_path / "pool", PoolOptions(monophonic=0, seed=1), workers=1, progress=False)
    assert again["written_now"] == 0 and again["pieces"] == len(train)


def test_pretraining_can_start_from_a_trained_encoder(files, tiny_config, tmp_path):
    from audiosheet.models.checkpoint import save_checkpoint

    start = SnippetModel(TINY_ATT)
    ckpt = save_checkpoint(start, tmp_path / "start.safetensors")
    cfg = PretrainConfig(modality="sheet", model=tiny_config, batch=16, checkpoint_every=1, threads=1,
                         max_steps=1, lr=1e-12, init=str(ckpt))  # one vanishing step: still the start
    pretrain([files / "sheets"], tmp_path / "run", cfg, workers=1, progress=False, log=lambda m: None)
    _, state, _ = read_checkpoint(tmp_path / "run" / "last.safetensors")
    ref = start.state_dict()
    keys = [k for k in state if k.startswith("sheet_net") and state[k].is_floating_point()]
    assert keys and all(torch.allclose(state[k], ref[k], atol=1e-6) for k in keys if "running" not in k)
    with pytest.raises(PretrainError, match="--init"):
        pretrain([files / "sheets"], tmp_path / "bad", PretrainConfig(
            modality="sheet", model=tiny_config, max_steps=1, init=str(tmp_path / "none.safetensors")),
            workers=1, progress=False, log=lambda m: None)
