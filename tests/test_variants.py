"""Degraded test variants: scanned pages, performed audio, both — each a valid corpus of its own."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audiosheet import cli
from audiosheet.corpus.acoustics import Room, impulse_response, record
from audiosheet.corpus.check import check, kept_ink, notehead_ink
from audiosheet.corpus.degrade import ScanStyle, apply
from audiosheet.corpus.export import performance_audio
from audiosheet.corpus.reader import Corpus
from audiosheet.corpus.variants import VARIANTS, make_variants
from audiosheet.frontend.spectrogram import spectrogram
from audiosheet.training.pairs import SnippetPairs

SEED = 0


@pytest.fixture(scope="module")
def variants(corpus, tmp_path_factory):
    """The test split (one piece, gamma) of the tiny corpus in all three variants."""
    out = tmp_path_factory.mktemp("variants") / "v"
    summary = make_variants(corpus, out, split="test", seed=SEED, workers=1, progress=False)
    return out, summary


def _files(d: Path) -> dict[str, Path]:
    return {p.relative_to(d).as_posix(): p for p in sorted(d.rglob("*")) if p.is_file()}


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".npz":
        with np.load(a) as x, np.load(b) as y:  # zip members carry their write time
            return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    return a.read_bytes() == b.read_bytes()


def test_variants_are_valid_corpora(corpus, variants):
    out, summary = variants
    test = Corpus(corpus).split("test")
    assert test == ["gamma"]
    for name in VARIANTS:
        s = summary["variants"][name]
        assert s["pieces"] == 1 and s["made_now"] == 1 and not s["failed"], name
        c = Corpus(out / name)
        assert c.splits == {"train": [], "valid": [], "test": test}
        assert c.manifest["variant"]["name"] == name and c.manifest["variant"]["seed"] == SEED
        assert c.manifest["pieces"] == 1 and c.manifest["sample_rate"] == Corpus(corpus).manifest["sample_rate"]
        r = check(out / name, progress=False)
        assert r.ok, (name, r.problems)
        assert r.pieces == 1 and r.performances == 1
        assert len(SnippetPairs(out / name, "test")) == Corpus(corpus).info("gamma")["n_noteheads"]
        d = c.piece_dir("gamma")
        assert c.onsets("gamma").shape[0] == 1 and not (d / "perf_1.npy").exists()
        assert (out / name / "scores" / "gamma.musicxml.gz").is_file()
        assert not list((out / name / "pieces").glob(".*"))  # no temporary folders left
    assert not (out / ".work").exists()


def test_scanned_pages_differ_and_noteheads_stay_on_ink(corpus, variants):
    out, _ = variants
    clean, scanned = Corpus(corpus), Corpus(out / "scanned")
    info = scanned.info("gamma")
    a, b = clean.page("gamma", 0), scanned.page("gamma", 0)
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() > 5
    style = info["scan"]["pages"][0]
    assert style["corners"] and style["angle"] != 0
    nh0, nh = clean.noteheads("gamma"), scanned.noteheads("gamma")
    for k in ("pitch", "onset", "page", "system"):
        np.testing.assert_array_equal(nh0[k], nh[k])
    assert np.abs(nh["x"] - nh0["x"]).max() > 0.5  # moved with the page
    ink = notehead_ink(b, nh["x"], nh["y"], nh["w"], nh["h"])
    assert (ink >= 0.3).mean() >= 0.97
    off = notehead_ink(b, nh["x"] + 1.5 * nh["w"], nh["y"], nh["w"], nh["h"])
    assert (off < ink - 0.2).mean() > 0.8
    # the strip is re-made from the scanned pixels and the noteheads land on its ink
    assert info["strip"]["systems"] == "detected"
    assert info["scan"]["noteheads_on_ink"] >= 0.97 and info["scan"]["strip_on_ink"] >= 0.97
    strip0, strip = np.load(clean.piece_dir("gamma") / "strip.npy"), scanned.root / "pieces/gamma/strip.npy"
    assert not np.array_equal(strip0, np.load(strip))
    offsets = scanned.strip_systems("gamma")  # the re-made strip's own system offsets
    assert offsets is not None and offsets[0] == 0 and offsets[-1] == np.load(strip).shape[1]
    assert len(offsets) == len(info["systems"]) + 1
    # the other modality is the source's performance 0
    np.testing.assert_array_equal(scanned.spectrogram("gamma"), clean.spectrogram("gamma", 0))
    np.testing.assert_array_equal(scanned.onsets("gamma")[0], clean.onsets("gamma")[0])


def test_performed_audio_is_new_and_aligned(corpus, variants):
    out, _ = variants
    clean, perf = Corpus(corpus), Corpus(out / "performed")
    rec = perf.info("gamma")["performances"][0]
    first = clean.info("gamma")["performances"][0]
    assert (rec["soundfont"], rec["program"]) == (first["soundfont"], first["program"])
    assert 15 <= rec["room"]["snr_db"] <= 35 and 0.3 <= rec["room"]["rt60"] <= 1.2
    lo, hi = rec["tempo_range"]  # the tempo curve, relative to the global ratio
    assert 0.75 < lo < hi < 1.3 and hi - lo > 0.03
    spec, spec0 = perf.spectrogram("gamma"), clean.spectrogram("gamma", 0)
    assert spec.shape != spec0.shape or np.abs(spec.astype(np.float32) - spec0).mean() > 0.1
    # pages are the source's
    np.testing.assert_array_equal(perf.page("gamma", 0), clean.page("gamma", 0))
    onsets, score = perf.onsets("gamma")[0], perf.noteheads("gamma")["onset"]
    assert 0 <= onsets.min() and onsets.max() < rec["seconds"]
    order = np.argsort(score, kind="stable")
    steps = np.diff(onsets[order])
    assert np.all(steps >= -1e-6)
    assert np.all(steps[np.diff(score[order]) > 1e-6] > 0)
    assert not np.allclose(onsets, clean.onsets("gamma")[0], atol=0.05)
    # the stored audio is the variant's: export and queries hear what the spectrogram shows
    audio = performance_audio(out / "performed", "gamma")
    assert (out / "performed" / "pieces" / "gamma" / "perf_0.flac").is_file()
    np.testing.assert_array_equal(spectrogram(audio).astype(np.float16), np.asarray(spec))


def test_combined_variant_is_the_intersection(variants):
    out, _ = variants
    both, scanned, performed = (_files(out / n / "pieces" / "gamma") for n in
                                ("scanned+performed", "scanned", "performed"))
    for f in ("page_1.png", "strip.npy", "strip_systems.npy", "noteheads.npz"):
        assert _same(both[f], scanned[f]), f
    for f in ("perf_0.npy", "perf_0.flac", "performances.npz"):
        assert _same(both[f], performed[f]), f
    info = Corpus(out / "scanned+performed").info("gamma")
    assert info["scan"] == Corpus(out / "scanned").info("gamma")["scan"]
    assert info["performances"] == Corpus(out / "performed").info("gamma")["performances"]


def test_same_seed_same_files_and_resume(corpus, variants, tmp_path, capsys):
    out, _ = variants
    again = tmp_path / "again"
    # the combined variant made alone equals the one made beside the others, file for file
    s = make_variants(corpus, again, variants=("scanned+performed",), seed=SEED, workers=1,
                      progress=False)
    assert s["variants"]["scanned+performed"]["made_now"] == 1
    a, b = _files(out / "scanned+performed"), _files(again / "scanned+performed")
    skip = {"variant_log.json"}  # timings
    assert set(a) - skip == set(b) - skip
    for f in set(a) - skip:
        assert _same(a[f], b[f]), f
    # resuming: every piece is finished, nothing is made again
    assert cli.main(["corpus", "variants", str(corpus), "--out", str(out), "--seed", str(SEED),
                     "--workers", "1", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert all(r[n]["already_done"] == 1 and r[n]["made_now"] == 0 and r[n]["failed"] == 0
               for n in VARIANTS)


def test_bad_pieces_fail_with_a_reason_and_the_others_are_written(corpus, tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    shutil.copytree(corpus, src)
    page = src / "pieces" / "alpha" / "page_1.png"
    Image.fromarray(np.full_like(np.asarray(Image.open(page)), 250)).save(page)  # a blank page
    (src / "scores" / "delta.musicxml.gz").unlink()
    out = tmp_path / "v"
    s = make_variants(src, out, variants=("scanned", "performed"), split="all", seed=SEED,
                      workers=1, progress=False)
    sc, pf = s["variants"]["scanned"], s["variants"]["performed"]
    assert set(sc["failed"]) == {"alpha", "delta"} and set(pf["failed"]) == {"delta"}
    assert "no systems found" in sc["failed"]["alpha"] and "delta.musicxml.gz" in pf["failed"]["delta"]
    assert sc["pieces"] == 2 and pf["pieces"] == 3
    assert set(Corpus(out / "scanned").piece_ids) == {"beta", "gamma"}
    assert set(Corpus(out / "performed").piece_ids) == {"alpha", "beta", "gamma"}
    assert Corpus(out / "performed").splits["train"] == ["alpha", "beta"]  # pieces keep their splits
    rows = (out / "scanned" / "failures.tsv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith("alpha\t")
    assert not (out / "scanned" / "pieces" / "alpha").exists()
    assert check(out / "scanned", progress=False).ok


def test_print_scan_geometry_moves_points_with_their_ink():
    h, w = 600, 500
    page = np.full((h, w), 255, np.uint8)
    pts = [(60, 70), (250, 300), (440, 540), (450, 60)]
    for x, y in pts:
        page[y - 2:y + 3, x - 2:x + 3] = 0
    style = ScanStyle(angle=-1.2, corners=(0.012, 0.004, -0.01, 0.001, 0.002, -0.003, 0.0, -0.005),
                      blur=0.0, noise=0.0, texture=0.0, quality=95, paper=255.0, ink=0.0)
    out = apply(page, style, np.random.default_rng(0)).astype(float)
    for x, y in pts:
        ex, ey = style.map_points(x + 0.5, y + 0.5, page.shape)
        yy, xx = np.mgrid[int(ey) - 8:int(ey) + 9, int(ex) - 8:int(ex) + 9]
        dark = np.clip(235 - out[yy, xx], 0, None)
        assert abs((dark * (xx + 0.5)).sum() / dark.sum() - ex) < 0.3
        assert abs((dark * (yy + 0.5)).sum() / dark.sum() - ey) < 0.3
    # without the new fields a style degrades as before (old ScanStyle draws are unchanged)
    assert ScanStyle.sample(np.random.default_rng(1)).corners == ()


def test_room_keeps_onsets_and_decays_as_drawn():
    sr = 22050
    room = Room(rt60=0.8, hf_ratio=0.4, drr_db=3.0, early=[(0.005, 0.5), (0.011, -0.3)], seed=3)
    ir = impulse_response(room, sr)
    assert ir[0] == 1.0 and np.abs(ir[1:]).max() < 1.0
    assert abs(10 * np.log10(1.0 / np.sum(ir[1:] ** 2)) - 3.0) < 0.01
    from scipy import signal

    def rt(x):  # reverberation time from the Schroeder decay between -5 and -25 dB
        tail = x[int(0.05 * sr):]
        edc = 10 * np.log10(np.cumsum(tail[::-1] ** 2)[::-1] / np.sum(tail ** 2))
        return 3 * (np.argmax(edc < -25) - np.argmax(edc < -5)) / sr

    low = signal.sosfiltfilt(signal.butter(4, 200, "lowpass", fs=sr, output="sos"), ir)
    high = signal.sosfiltfilt(signal.butter(4, 5000, "highpass", fs=sr, output="sos"), ir)
    assert 0.65 < rt(low) < 0.95  # RT60 0.8 s
    assert 0.25 < rt(high) < 0.45  # ~0.8 × 0.4 s: the highs die away faster
    # clicks recorded in the room: the loudest sample of each is still where it was played
    dry = np.zeros(3 * sr, np.float32)
    at = [int(0.3 * sr), int(1.4 * sr), int(2.2 * sr)]
    dry[at] = 0.8
    wet = record(dry, Room(rt60=0.5, drr_db=6.0, snr_db=30.0, seed=1), sr)
    assert len(wet) == len(dry)
    for i in at:
        assert np.argmax(np.abs(wet[i - 200:i + 2000])) == 200


def test_kept_ink_is_relative_to_the_clean_page():
    # a hollow head (40 % ink on the clean page) thinned to 25 % is kept, one moved off its ink is not
    clean = np.array([0.9, 0.4, 0.4, 0.9, 0.1])
    assert kept_ink(clean, np.array([0.8, 0.25, 0.3, 0.6, 0.0])) == 1.0  # the un-inked one is ignored
    assert kept_ink(clean, np.array([0.8, 0.1, 0.3, 0.2, 0.0])) == 0.5


def test_check_holds_scanned_noteheads_to_their_clean_ink(variants, tmp_path):
    from PIL import Image

    out, _ = variants
    copy = tmp_path / "scanned"
    shutil.copytree(out / "scanned", copy)
    assert check(copy, progress=False).ok
    page = copy / "pieces" / "gamma" / "page_1.png"
    a = np.asarray(Image.open(page)).copy()
    a[:, : a.shape[1] // 2] = 235  # the left half of the page lost its ink
    Image.fromarray(a).save(page)
    r = check(copy, progress=False)
    assert not r.ok and any("keep their clean ink" in p for p in r.problems)
