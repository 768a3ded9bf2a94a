"""Training pairs: shapes, what the windows hold, the fast batch path, torch compatibility."""
from __future__ import annotations

import numpy as np
import pytest

from audiosheet.corpus.reader import Corpus
from audiosheet.frontend.spectrogram import onset_strength
from audiosheet.frontend.windows import half_resolution
from audiosheet.training.pairs import SnippetPairs


def test_half_resolution_is_block_mean():
    a = np.array([[0, 255, 10, 10], [255, 0, 10, 10]], np.uint8)
    np.testing.assert_array_equal(half_resolution(a), [[128, 10]])


def test_pairs_cover_every_notehead_and_performance(corpus):
    c = Corpus(corpus)
    ds = SnippetPairs(corpus, "train")
    expected = sum(c.info(p)["n_noteheads"] * len(c.info(p)["performances"]) for p in c.split("train"))
    assert len(ds) == expected > 0
    sheet, audio = ds[0]
    assert sheet.shape == (1, 80, 100) and audio.shape == (1, 92, 42)
    assert sheet.dtype == audio.dtype == np.float32 and 0 <= sheet.min() and sheet.max() <= 1
    assert SnippetPairs(corpus, "train", context=84)[0][1].shape == (1, 92, 84)
    assert SnippetPairs(corpus, "all", context=168)[5][1].shape == (1, 92, 168)


def test_windows_are_centred_on_notehead_and_onset(corpus):
    ds = SnippetPairs(corpus, "all")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), 200, replace=False)
    sheets, audios = ds.batch(idx)
    for j, i in enumerate(idx):  # the batch path equals the one-by-one path
        s, a = ds[i]
        np.testing.assert_array_equal(s, sheets[j])
        np.testing.assert_array_equal(a, audios[j])
    # ink at the centre of the sheet window (the notehead), in the notehead's row
    centre_ink = []
    for j, i in enumerate(idx):
        piece, nh, _ = ds.index[i]
        row = int(round(np.load(ds.corpus.piece_dir(ds.piece_ids[piece]) / "noteheads.npz")["strip_y"][nh]))
        y = row - (100 - 80) // 2
        centre_ink.append(sheets[j, 0, max(y - 1, 0):y + 2, 48:53].mean())
    assert np.mean(np.asarray(centre_ink) > 0.3) > 0.95
    # energy rises at the centre frame of the audio window
    flux = np.stack([onset_strength(a[0].T) for a in audios])
    assert flux[:, 20:23].max(axis=1).mean() > 2 * flux.mean()


def test_torch_dataloader(corpus):
    torch = pytest.importorskip("torch")
    ds = SnippetPairs(corpus, "all")
    assert len(ds) > 8  # a map-style dataset: DataLoader takes it without subclassing (no torch import)
    sheets, audios = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    assert sheets.shape == (8, 1, 80, 100) and audios.shape == (8, 1, 92, 42)


def test_unknown_split(corpus):
    with pytest.raises(ValueError, match="no split 'dev'"):
        SnippetPairs(corpus, "dev")


def test_windows_leaving_the_arrays_are_padded():
    from audiosheet.frontend.windows import pad_window

    a = np.arange(10).reshape(5, 2)
    np.testing.assert_array_equal(pad_window(a, 1, 3, -1), a[1:4])
    np.testing.assert_array_equal(pad_window(a, -2, 4, -1), [[-1, -1], [-1, -1], [0, 1], [2, 3]])
    np.testing.assert_array_equal(pad_window(a, 4, 3, -1), [[8, 9], [-1, -1], [-1, -1]])
    assert pad_window(a, 7, 2, 0).sum() == 0


def test_first_onset_window_is_silence_padded(corpus):
    ds = SnippetPairs(corpus, "all")
    piece = int(np.argmax([p.frames.min() == 0 for p in ds.pieces]))
    nh = int(np.argmin(ds.pieces[piece].frames[0]))
    a = ds.audio(piece, nh, 0)
    assert a.shape == (92, 42) and np.all(a[:, :20] == 0) and a[:, 21:].sum() > 0
