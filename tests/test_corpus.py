"""Corpus builder: alignment, determinism, resumption, splits, bad inputs, check/stats/show."""
from __future__ import annotations

import json
import shutil

import numpy as np

from audiosheet import cli
from audiosheet.corpus.build import BuildOptions, build
from audiosheet.corpus.check import check, notehead_ink, onset_flux_ratio
from audiosheet.corpus.reader import Corpus
from audiosheet.corpus.splits import assign_splits
from audiosheet.frontend.spectrogram import onset_strength

GOOD = {"alpha", "beta", "gamma", "delta"}


def test_build_keeps_good_pieces_and_logs_bad_ones(corpus):
    c = Corpus(corpus)
    assert set(c.piece_ids) == GOOD
    rows = [line.split("\t") for line in (corpus / "failures.tsv").read_text().splitlines()[1:]]
    reasons = {r[1].rsplit("/", 1)[-1]: (r[2], r[3]) for r in rows}
    assert set(reasons) == {"corrupt.krn", "broken.musicxml", "empty.mxl", "notes.txt"}
    assert reasons["empty.mxl"] == ("score", "ScoreError: empty file")
    assert reasons["notes.txt"][1] == "ScoreError: unsupported score format '.txt'"
    assert reasons["broken.musicxml"][1].startswith("ScoreError: cannot parse score")
    assert reasons["corrupt.krn"][0] == "score"
    summary = json.loads((corpus / "build_log.json").read_text())
    assert summary["pieces"] == 4 and summary["failed"] == 4


def test_every_notehead_on_ink_and_energy_rises_at_onsets(corpus):
    c = Corpus(corpus)
    fps = c.manifest["spectrogram"]["fps"]
    for pid in c.piece_ids:
        nh, info = c.noteheads(pid), c.info(pid)
        assert len(nh["x"]) == info["n_noteheads"] > 0
        for p in range(len(info["pages"])):
            sel = nh["page"] == p
            ink = notehead_ink(c.page(pid, p), nh["x"][sel], nh["y"][sel], nh["w"][sel], nh["h"][sel])
            assert ink.min() >= 0.3 and np.median(ink) > 0.6, pid
            # the same boxes moved sideways, between the noteheads, hold much less ink
            off = notehead_ink(c.page(pid, p), nh["x"][sel] + 1.5 * nh["w"][sel], nh["y"][sel],
                               nh["w"][sel], nh["h"][sel])
            assert (off < ink - 0.2).mean() > 0.9, pid
        onsets = c.onsets(pid)
        assert onsets.shape == (2, len(nh["x"]))
        for k in range(2):
            spec = c.spectrogram(pid, k)
            assert 0 <= onsets[k].min() and onsets[k].max() < info["performances"][k]["seconds"]
            assert onset_flux_ratio(spec, onsets[k], fps) > 2.0
            # shifted by half a beat the onsets no longer match the energy rises
            assert onset_flux_ratio(spec, onsets[k] + 0.3, fps) < onset_flux_ratio(spec, onsets[k], fps)


def test_pitches_and_onsets_follow_the_score(corpus):
    c = Corpus(corpus)
    nh = c.noteheads("alpha")
    # kern alpha: bass C3 D3 … and treble E4 F4 …, quarter notes at MM 100 (0.6 s)
    first = nh["onset"] == 0
    assert sorted(nh["pitch"][first].tolist()) == [48, 64]
    assert np.allclose(np.unique(nh["onset"])[:3], [0.0, 0.6, 1.2], atol=1e-3)
    assert len(nh["x"]) == 32
    # performances: onsets are the score onsets warped monotonically by the tempo
    on = c.onsets("alpha")
    order = np.argsort(nh["onset"], kind="stable")
    assert np.all(np.diff(on[:, order], axis=1) >= -1e-6)
    ratio = c.info("alpha")["performances"][0]["tempo_ratio"]
    assert 0.9 <= ratio <= 1.1


def test_same_seed_same_corpus(tmp_path, sources, corpus):
    out = tmp_path / "again"
    build(str(sources), out, workers=2, options=BuildOptions(seed=3, soundfonts="bundled"), progress=False)
    a, b = Corpus(corpus), Corpus(out)
    assert (corpus / "manifest.json").read_text() == (out / "manifest.json").read_text()
    assert (corpus / "splits.json").read_text() == (out / "splits.json").read_text()
    for pid in a.piece_ids:
        assert a.info(pid) == b.info(pid)
        for k in a.noteheads(pid):
            np.testing.assert_array_equal(a.noteheads(pid)[k], b.noteheads(pid)[k])
        np.testing.assert_array_equal(a.onsets(pid), b.onsets(pid))
        np.testing.assert_array_equal(a.page(pid, 0), b.page(pid, 0))
        for k in range(2):
            np.testing.assert_array_equal(a.spectrogram(pid, k), b.spectrogram(pid, k))


def test_other_seed_other_performances(tmp_path, sources, corpus):
    out = tmp_path / "seed4"
    build(str(sources), out, workers=1, options=BuildOptions(seed=4, soundfonts="bundled"), progress=False)
    a, b = Corpus(corpus), Corpus(out)
    assert a.info("alpha")["performances"] != b.info("alpha")["performances"]


def test_resume_skips_finished_pieces_and_redoes_half_written_ones(tmp_path, corpus):
    out = tmp_path / "copy"
    shutil.copytree(corpus, out)
    shutil.rmtree(out / "pieces" / "beta")  # as if killed before beta was finished
    (out / "pieces" / ".gamma.tmp").mkdir()  # a half-written folder of a killed worker
    src = Corpus(out).manifest["source"]
    summary = build(src, out, workers=1, options=BuildOptions(seed=3, soundfonts="bundled"), progress=False)
    assert summary["already_done"] == 3 and summary["rendered_now"] == 1
    assert set(Corpus(out).piece_ids) == GOOD
    np.testing.assert_array_equal(Corpus(out).onsets("beta"), Corpus(corpus).onsets("beta"))


def test_splits_group_works_and_are_disjoint():
    metas = {f"p{i}": {"work_keys": [f"piece:p{i}"]} for i in range(400)}
    metas["m1"] = {"work_keys": ["folder:op1", "title:x"]}
    metas["m2"] = {"work_keys": ["folder:op1"]}
    metas["m3"] = {"work_keys": ["melody:1,2,3", "title:x"]}  # linked to m1 through title:x
    s = assign_splits(metas, seed=0)
    where = {p: k for k, ids in s.items() for p in ids}
    assert len(where) == len(metas) and sum(map(len, s.values())) == len(metas)
    assert where["m1"] == where["m2"] == where["m3"]
    assert 0.7 < len(s["train"]) / len(metas) < 0.9 and len(s["test"]) > 30
    assert assign_splits(metas, seed=0) == s
    assert assign_splits(metas, seed=1) != s


def test_check_passes_and_catches_misalignment(tmp_path, corpus, capsys):
    assert cli.main(["corpus", "check", str(corpus), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    nh_path = bad / "pieces" / "alpha" / "noteheads.npz"
    nh = dict(np.load(nh_path))
    nh["y"] = nh["y"] + 9.0  # a notehead table off by more than a staff space
    np.savez(nh_path, **nh)
    perf_path = bad / "pieces" / "beta" / "performances.npz"
    np.savez(perf_path, onsets=np.load(perf_path)["onsets"] + 0.27)  # onsets late by ~5 frames
    r = check(bad, progress=False)
    assert not r.ok
    assert any(p.startswith("alpha: only") and "ink" in p for p in r.problems)
    assert any(p.startswith("beta: perf") and "energy rises" in p for p in r.problems)
    assert cli.main(["corpus", "check", str(bad), "--quiet"]) == 1


def test_check_catches_overlapping_splits(tmp_path, corpus):
    bad = tmp_path / "overlap"
    shutil.copytree(corpus, bad)
    splits = json.loads((bad / "splits.json").read_text())
    some = next(iter(splits["train"] or splits["test"]))
    other = "test" if some in splits["train"] else "train"
    splits[other].append(some)
    (bad / "splits.json").write_text(json.dumps(splits))
    assert any("in splits" in p for p in check(bad, progress=False).problems)


def test_stats_json(corpus, capsys):
    assert cli.main(["corpus", "stats", str(corpus), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["pieces"] == 4
    assert sum(s["splits"].values()) == 4 and set(s["splits"]) == {"train", "valid", "test"}
    assert s["pairs"] == 2 * s["noteheads"] == 2 * (32 * 3 + 32)
    assert s["pages"] >= 4 and s["audio_seconds"] > 4 * 2 * 8


def test_show_writes_picture(tmp_path, corpus):
    from PIL import Image

    out = tmp_path / "show.png"
    assert cli.main(["corpus", "show", str(corpus), "alpha", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.width >= 800 and img.height > 1000
    assert cli.main(["corpus", "show", str(corpus), "nope", "--out", str(out)]) == 1


def test_not_a_corpus(tmp_path, capsys):
    assert cli.main(["corpus", "stats", str(tmp_path)]) == 1
    assert "not a corpus" in capsys.readouterr().err


def test_test_split_uses_held_out_combination(corpus):
    c = Corpus(corpus)
    held = tuple(c.manifest["test_only_combination"])
    for pid in c.piece_ids:
        combos = {(p["soundfont"], p["program"]) for p in c.info(pid)["performances"]}
        if c.info(pid)["split"] == "test":
            assert combos == {held}
        else:
            assert held not in combos


def test_onset_strength_is_flux():
    spec = np.zeros((5, 3), np.float32)
    spec[2] = 1.0
    np.testing.assert_allclose(onset_strength(spec), [0, 0, 3, 0, 0])
