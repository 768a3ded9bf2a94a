"""Passage pairs from system boundaries: spans, extents, concatenation, windows, batching, and
that noteheads' positions are never read."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from audiosheet.corpus.build import BuildOptions, build, restrip
from audiosheet.corpus.reader import Corpus
from audiosheet.frontend.windows import collate, windows
from audiosheet.training.passages import PassagePairs, boundaries, detect_system_columns, system_columns

from .conftest import kern


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """One piece of 12 bars: four systems on one page, two performances."""
    src = tmp_path_factory.mktemp("long_sources")
    (src / "long.krn").write_text(kern("C D E F G A B c", "e f g a b cc dd ee", repeat=6))
    out = tmp_path_factory.mktemp("long_corpus") / "c"
    build(str(src), out, workers=1, options=BuildOptions(seed=1), progress=False)
    assert len(Corpus(out).info("long")["systems"]) == 4
    return out


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def _rewrite(path, **arrays):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d.update(arrays)
    np.savez(path, **d)


def _singles(ds) -> dict:
    """(piece, system, perf) → row of the single-system passages."""
    return {(int(r["piece"]), int(r["system"]), int(r["perf"])): r
            for r in ds.passages[ds.passages["systems"] == 1]}


def test_counts_on_the_tiny_corpus(corpus):
    c = Corpus(corpus)
    ds = PassagePairs(corpus, "all")
    expected = {n: sum(len(c.info(p)["performances"]) * max(len(c.info(p)["systems"]) - n + 1, 0)
                       for p in c.piece_ids) for n in (1, 2, 3)}
    assert ds.counts() == expected == {1: 10, 2: 2, 3: 0}
    assert ds.skipped == {"no_onsets": 0, "empty_span": 0} and ds.failed == {}
    assert len(PassagePairs(corpus, "train", lengths=(1,))) == 6


def test_columns_tile_the_strip_and_hold_their_noteheads(corpus, long_corpus):
    for root in (corpus, long_corpus):
        c = Corpus(root)
        for pid in c.piece_ids:
            cols = system_columns(c, pid)
            width = np.load(c.piece_dir(pid) / "strip.npy").shape[1]
            assert cols[0] == 0 and cols[-1] == width and (np.diff(cols) > 0).all()
            assert len(cols) == len(c.info(pid)["systems"]) + 1
            nh = c.noteheads(pid)  # the test may look where noteheads are; the data set may not
            assert (cols[nh["system"]] <= nh["strip_x"]).all()
            assert (nh["strip_x"] < cols[nh["system"] + 1]).all()



def test_built_corpus_stores_system_offsets(corpus, long_corpus):
    """A fresh corpus keeps each strip's system offsets (strip_systems.npy); passages read them,
    and they are the columns found again from the pages for corpora built before."""
    for root in (corpus, long_corpus):
        c = Corpus(root)
        for pid in c.piece_ids:
            stored = np.load(c.piece_dir(pid) / "strip_systems.npy")
            assert stored.dtype == np.int64 and len(stored) == len(c.info(pid)["systems"]) + 1
            np.testing.assert_array_equal(c.strip_systems(pid), stored)
            np.testing.assert_array_equal(system_columns(c, pid), stored)
            np.testing.assert_array_equal(detect_system_columns(c, pid), stored)


def test_corpus_without_stored_offsets_finds_them_again(long_corpus, tmp_path):
    root = _copy(long_corpus, tmp_path)
    (root / "pieces" / "long" / "strip_systems.npy").unlink()
    assert Corpus(root).strip_systems("long") is None
    np.testing.assert_array_equal(system_columns(root, "long"), system_columns(long_corpus, "long"))
    a, b = PassagePairs(long_corpus, "all"), PassagePairs(root, "all")
    np.testing.assert_array_equal(a.passages, b.passages)
    r = restrip(root, workers=1, progress=False)  # gives the piece its offsets, the same strip
    assert r["restripped"] == 1 and not r["failed"]
    for name in ("strip_systems.npy", "strip.npy"):
        np.testing.assert_array_equal(np.load(root / "pieces" / "long" / name),
                                      np.load(long_corpus / "pieces" / "long" / name))
    assert restrip(root, workers=1, progress=False)["restripped"] == 0


def test_spans_inside_performances_and_adjacent(long_corpus):
    c = Corpus(long_corpus)
    ds = PassagePairs(long_corpus, "all")
    assert ds.counts() == {1: 8, 2: 6, 3: 4} and sum(ds.skipped.values()) == 0
    info, nh, onsets = c.info("long"), c.noteheads("long"), c.onsets("long")
    frames = [p["frames"] for p in info["performances"]]
    width = np.load(c.piece_dir("long") / "strip.npy").shape[1]
    for r in ds.passages:
        assert 0 <= r["t0"] < r["t1"] <= frames[r["perf"]]
        assert 0 <= r["x0"] < r["x1"] <= width
    one = _singles(ds)
    for p in range(2):
        first = [onsets[p, nh["system"] == s].min() for s in range(4)]
        assert [int(one[0, s, p]["t0"]) for s in range(4)] == [round(t * 20) for t in first]
        assert one[0, 3, p]["t1"] == frames[p]  # the last system runs to the end
        assert one[0, 0, p]["x0"] == 0 and one[0, 3, p]["x1"] == width
        for s in range(3):
            assert one[0, s, p]["t1"] == one[0, s + 1, p]["t0"]
            assert one[0, s, p]["x1"] == one[0, s + 1, p]["x0"]
    b = boundaries(long_corpus, "long")
    np.testing.assert_array_equal(b.columns, system_columns(long_corpus, "long"))
    np.testing.assert_array_equal(b.starts[:, -1], frames)


def test_longer_passages_are_concatenations(long_corpus):
    c = Corpus(long_corpus)
    ds = PassagePairs(long_corpus, "all")
    one = _singles(ds)
    strip = np.load(c.piece_dir("long") / "strip.npy")
    for i, r in enumerate(ds.passages):
        k, n, p = int(r["system"]), int(r["systems"]), int(r["perf"])
        parts = [one[0, s, p] for s in range(k, k + n)]
        assert (r["x0"], r["x1"], r["t0"], r["t1"]) == \
            (parts[0]["x0"], parts[-1]["x1"], parts[0]["t0"], parts[-1]["t1"])
        j = [int(np.flatnonzero(ds.passages == q)[0]) for q in parts]
        np.testing.assert_array_equal(ds.sheet(i), np.concatenate([ds.sheet(q) for q in j], 1))
        np.testing.assert_array_equal(ds.audio(i), np.concatenate([ds.audio(q) for q in j], 1))
        # what the arrays hold: strip rows 10:90 with ink = 1, spectrogram frames
        np.testing.assert_array_equal(ds.sheet(i), 1 - strip[10:90, r["x0"]:r["x1"]] / np.float32(255))
        spec = c.spectrogram("long", p)[r["t0"]:r["t1"]].T.astype(np.float32)
        np.testing.assert_array_equal(ds.audio(i), spec)
        assert ds.sheet(i).dtype == ds.audio(i).dtype == np.float32


def test_windows_cover_with_hop():
    a = np.arange(2 * 25).reshape(2, 25)
    w = windows(a, 10, 9, -1)
    assert w.shape == (3, 2, 10)
    np.testing.assert_array_equal(w[1], a[:, 9:19])
    np.testing.assert_array_equal(w[2, :, :7], a[:, 18:25])
    assert (w[2, :, 7:] == -1).all()
    assert windows(a, 25, 9, 0).shape == (1, 2, 25) and windows(a[:, :3], 10, 9, 0).shape == (1, 2, 10)
    assert windows(a, 16, 9, 0).shape == (2, 2, 16)  # 9 + 16 = 25: exactly covered


def test_passage_windows(long_corpus):
    ds = PassagePairs(long_corpus, "all")
    for i in range(len(ds)):
        sheet, audio = ds.sheet(i), ds.audio(i)
        for full, win, size, hop in ((sheet, ds.windows_sheet(i), 90, 81),
                                     (audio, ds.windows_audio(i), 20, 18)):
            n, length = len(win), full.shape[1]
            assert win.shape == (n,) + full.shape[:1] + (size,) and win.dtype == np.float32
            assert (n - 1) * hop + size >= length > (n - 2) * hop + size  # fewest that cover
            for j in range(n):
                part = full[:, j * hop:j * hop + size]
                np.testing.assert_array_equal(win[j, :, :part.shape[1]], part)
                assert (win[j, :, part.shape[1]:] == 0).all()  # paper / silence
        s, a = ds[i]
        assert s.shape[1:] == (80, 90) and a.shape[1:] == (92, 20)


def test_collate_round_trip(long_corpus):
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(n, 3, 4)).astype(np.float32) for n in (2, 5, 1)]
    padded, lengths = collate(items, fill=-7.0)
    assert padded.shape == (3, 5, 3, 4) and lengths.tolist() == [2, 5, 1]
    for x, p, n in zip(items, padded, lengths):
        np.testing.assert_array_equal(p[:n], x)
        assert (p[n:] == -7.0).all()
    ds = PassagePairs(long_corpus, "all")
    idx = [0, 17, 9]
    sheets, ns, audios, ms = ds.batch(idx)
    for b, i in enumerate(idx):
        s, a = ds[i]
        np.testing.assert_array_equal(sheets[b, :ns[b]], s)
        np.testing.assert_array_equal(audios[b, :ms[b]], a)
    assert ns.max() == sheets.shape[1] and ms.max() == audios.shape[1]


def test_collate_torch():
    torch = pytest.importorskip("torch")
    padded, lengths = collate([np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)], torch=True)
    assert isinstance(padded, torch.Tensor) and padded.shape == (2, 4, 3)
    assert lengths.tolist() == [2, 4] and padded[0, 2:].abs().sum() == 0


def test_noteheads_positions_are_not_read(long_corpus, tmp_path):
    root = _copy(long_corpus, tmp_path)
    path = root / "pieces" / "long" / "noteheads.npz"
    rng = np.random.default_rng(1)
    with np.load(path) as z:
        nh = {k: z[k] for k in z.files}
    # everything but the system a notehead belongs to becomes noise
    _rewrite(path, **{k: rng.permutation(v) * 3 + 11 for k, v in nh.items() if k != "system"})
    a, b = PassagePairs(long_corpus, "all"), PassagePairs(root, "all")
    np.testing.assert_array_equal(a.passages, b.passages)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.sheet(i), b.sheet(i))
        np.testing.assert_array_equal(a.audio(i), b.audio(i))


def test_system_without_onsets_is_skipped(long_corpus, tmp_path):
    root = _copy(long_corpus, tmp_path)
    path = root / "pieces" / "long" / "noteheads.npz"
    system = np.load(path)["system"]
    _rewrite(path, system=np.where(system == 1, 2, system))
    ds = PassagePairs(root, "all")
    # kept: systems 2, 3 and 2–3 in both performances; every other passage starts or ends at 1
    assert ds.skipped == {"no_onsets": 12, "empty_span": 0}
    kept = sorted({(int(r["system"]), int(r["systems"])) for r in ds.passages})
    assert kept == [(2, 1), (2, 2), (3, 1)]
    assert len(ds) == 6


def test_zero_length_span_is_skipped(long_corpus, tmp_path):
    root = _copy(long_corpus, tmp_path)
    system = Corpus(root).noteheads("long")["system"]
    path = root / "pieces" / "long" / "performances.npz"
    onsets = np.load(path)["onsets"].copy()
    onsets[0, system == 2] = onsets[0, system == 1].min()  # system 2 starts with system 1
    _rewrite(path, onsets=onsets)
    ds = PassagePairs(root, "all")
    # performance 0 loses system 1 and every longer passage containing systems 1 and 2's start
    assert ds.skipped == {"no_onsets": 0, "empty_span": 5}
    kept0 = sorted((int(r["system"]), int(r["systems"])) for r in ds.passages if r["perf"] == 0)
    assert kept0 == [(0, 1), (2, 1), (2, 2), (3, 1)]
    assert (ds.passages["perf"] == 1).sum() == 9


def test_cache_reused_and_checked(long_corpus, tmp_path):
    cache = tmp_path / "columns.json"
    a = PassagePairs(long_corpus, "all", cache=cache)
    cols = json.loads(cache.read_text())
    assert cols == {"long": system_columns(long_corpus, "long").tolist()}
    cache.write_text(json.dumps({"long": [0, 7, 9, 11, cols["long"][-1]]}))  # reused as it is
    b = PassagePairs(long_corpus, "all", cache=cache)
    assert b.passages["x1"][:4].tolist() == [7, 7, 9, 9]
    for stale in ([0, 9], [0, 5, cols["long"][-1]]):  # another width, other systems: found again
        cache.write_text(json.dumps({"long": stale}))
        c = PassagePairs(long_corpus, "all", cache=cache)
        np.testing.assert_array_equal(a.passages, c.passages)
        assert json.loads(cache.read_text()) == cols
