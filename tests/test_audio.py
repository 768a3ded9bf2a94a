import numpy as np
import pytest
import soundfile as sf

from audiosheet.frontend.audio import AudioError, audio_snippets, ingest_audio, load_audio, normalise_level
from audiosheet.frontend.spectrogram import DEFAULT, spectrogram
from audiosheet.frontend.windows import pad_window
from audiosheet.geometry import AUDIO_BINS

SR = DEFAULT.sample_rate
MP3 = "MP3" in sf.available_formats()

FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]
if MP3:
    FORMATS.append(("mp3", "MP3", "MPEG_LAYER_III"))


def sine(sr, seconds=1.0, freq=440.0, amp=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, mono, sr, channels=1, fmt="WAV", subtype="PCM_16"):
    data = np.repeat(mono[:, None], channels, axis=1)
    sf.write(str(path), data, sr, format=fmt, subtype=subtype)
    return path


def peak_bin(spec):
    return int(np.argmax(spec[3:-3].mean(axis=0)))


REF_BIN = peak_bin(spectrogram(sine(SR)))


@pytest.mark.parametrize("ext,fmt,subtype", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("sr", [8000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_any_format_rate_and_channels(tmp_path, ext, fmt, subtype, sr, channels):
    if fmt == "MP3" and channels > 2:
        pytest.skip("MP3 holds at most 2 channels")
    seconds = 1.3
    path = write(tmp_path / f"a.{ext}", sine(sr, seconds), sr, channels, fmt, subtype)
    n = sf.info(str(path)).frames
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - round(n * SR / sr)) <= 1
    ing = ingest_audio(path)
    assert (ing.sample_rate, ing.channels) == (sr, channels)
    assert abs(ing.seconds - seconds) <= 1 / DEFAULT.fps
    assert abs(len(ing.spec) - seconds * DEFAULT.fps) <= 1
    assert ing.spec.shape[1] == AUDIO_BINS
    assert peak_bin(ing.spec) == REF_BIN
    if fmt in ("WAV", "FLAC"):  # lossless: the whole spectrogram matches the direct one
        ref = spectrogram(normalise_level(sine(SR, seconds))[0])  # ingest_audio sets the level
        m = min(len(ref), len(ing.spec))
        assert np.abs(ing.spec[2:m - 2] - ref[2:m - 2]).max() < 0.05


def test_resampling_is_soxr_and_mixes_channels(tmp_path):
    import soxr

    rng = np.random.default_rng(0)
    sr = 44100
    left = (0.3 * rng.standard_normal(12345)).astype(np.float32)
    right = (0.2 * rng.standard_normal(12345)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), np.stack([left, right], 1), sr, subtype="FLOAT")
    audio = load_audio(tmp_path / "a.wav")
    expected = soxr.resample((left + right) / 2, sr, SR, quality="HQ")
    assert len(audio) == len(expected) and abs(len(audio) - round(12345 * SR / sr)) <= 1
    np.testing.assert_allclose(audio, expected, atol=1e-6)
    # at the front end's own rate nothing is resampled
    sf.write(str(tmp_path / "b.wav"), left, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "b.wav"), left)


def check_error(path, word):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{path}: ") and info.value.path == str(path)
    assert word in info.value.reason, msg
    assert isinstance(info.value, ValueError)
    return msg


def test_errors(tmp_path):
    check_error(tmp_path / "missing.wav", "no such file")
    check_error(tmp_path, "not a file")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    check_error(tmp_path / "text.wav", "not a readable audio file")
    (tmp_path / "empty.wav").write_bytes(b"")
    check_error(tmp_path / "empty.wav", "empty")

    flac = write(tmp_path / "a.flac", sine(44100, 2.0), 44100, 1, "FLAC")
    data = flac.read_bytes()
    (tmp_path / "half.flac").write_bytes(data[: len(data) // 2])
    check_error(tmp_path / "half.flac", "corrupt")
    rng = np.random.default_rng(1)
    (tmp_path / "garbage.flac").write_bytes(data[:200] + rng.bytes(len(data) - 200))
    check_error(tmp_path / "garbage.flac", "corrupt")

    sf.write(str(tmp_path / "zero.wav"), np.zeros((0, 2), np.float32), 44100)
    check_error(tmp_path / "zero.wav", "0 samples")
    sf.write(str(tmp_path / "silent.wav"), np.zeros((44100, 2), np.float32), 44100)
    check_error(tmp_path / "silent.wav", "silent (peak below")
    sf.write(str(tmp_path / "quiet.wav"), sine(44100, amp=5e-5), 44100, subtype="FLOAT")
    check_error(tmp_path / "quiet.wav", "silent")
    x = sine(44100)
    sf.write(str(tmp_path / "cancel.wav"), np.stack([x, -x], 1), 44100, subtype="FLOAT")
    check_error(tmp_path / "cancel.wav", "channels cancel out")
    x[100] = np.nan
    sf.write(str(tmp_path / "nan.wav"), x, 44100, subtype="FLOAT")
    check_error(tmp_path / "nan.wav", "non-finite")


def test_short_file_is_not_an_error(tmp_path):
    path = write(tmp_path / "short.wav", sine(44100, 0.04), 44100)  # 882 samples at 22,050 Hz
    ing = ingest_audio(path, context=42)
    assert len(ing.spec) == 1 and ing.snippets.shape == (1, AUDIO_BINS, 42)


def reference_windows(spec, context, hop):
    """A plain loop with explicit padding (independent of the vectorised version)."""
    t, bins = spec.shape
    out, centres = [], list(range(0, t, hop))
    for c in centres:
        w = np.zeros((context, bins), np.float32)
        for j in range(context):
            f = c - context // 2 + j
            if 0 <= f < t:
                w[j] = spec[f]
        out.append(w.T)
    return np.array(out), np.array(centres)


@pytest.mark.parametrize("t,context,hop", [(37, 42, 2), (37, 41, 3), (100, 42, 1), (5, 42, 2),
                                           (1, 7, 4)])
def test_audio_snippets(t, context, hop):
    rng = np.random.default_rng(t + context + hop)
    spec = rng.random((t, AUDIO_BINS)).astype(np.float32) + 0.5  # no zeros inside
    windows, centres = audio_snippets(spec, context, hop)
    ref, ref_centres = reference_windows(spec, context, hop)
    assert windows.shape == (-(-t // hop), AUDIO_BINS, context) and windows.dtype == np.float32
    np.testing.assert_array_equal(centres, ref_centres)
    np.testing.assert_array_equal(windows, ref)
    half = context // 2
    for k, c in enumerate(centres):  # the training side's windows, bins × frames
        np.testing.assert_array_equal(windows[k], pad_window(spec, c - half, context, 0).T)
        if half <= c <= t - (context - half):
            np.testing.assert_array_equal(windows[k], spec[c - half:c - half + context].T)
    # padded with silence: the first window's left half, the last window's right end
    assert (windows[0][:, :half] == 0).all() and (windows[0][:, half] != 0).all()
    last = t - 1 - centres[-1] + half  # last real frame in the last window
    assert (windows[-1][:, last + 1:] == 0).all() and (windows[-1][:, last] != 0).all()


def test_audio_snippets_empty_and_bad_arguments():
    windows, centres = audio_snippets(np.zeros((0, AUDIO_BINS), np.float32), 42)
    assert windows.shape == (0, AUDIO_BINS, 42) and centres.shape == (0,)
    with pytest.raises(ValueError):
        audio_snippets(np.zeros((10, AUDIO_BINS)), 42, hop=0)


def test_excerpt(tmp_path):
    rng = np.random.default_rng(2)
    x = (0.3 * rng.standard_normal(3 * SR)).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    ing = ingest_audio(path, context=42, hop=4, start=1.0, end=2.5)
    assert ing.start == 1.0 and ing.seconds == 1.5 and ing.file_seconds == 3.0
    np.testing.assert_allclose(ing.spec, spectrogram(normalise_level(x[SR:int(2.5 * SR)])[0]),
                               atol=1e-6)
    np.testing.assert_allclose(ing.times(), 1.0 + np.arange(0, 30, 4) / DEFAULT.fps)
    assert ing.snippets.shape == (8, AUDIO_BINS, 42)
    w, c = ing.cut(context=20, hop=10)
    assert w.shape == (3, AUDIO_BINS, 20) and list(c) == [0, 10, 20]
    # end past the file is clipped; an excerpt outside the file is an error
    assert ingest_audio(path, start=2.0, end=60).seconds == 1.0
    with pytest.raises(AudioError, match="outside"):
        ingest_audio(path, start=5.0)
    # a resampled file: the excerpt has the right length at 22,050 Hz
    path44 = tmp_path / "noise44.wav"
    sf.write(str(path44), np.repeat(x, 2), 2 * SR, subtype="FLOAT")
    audio = load_audio(path44, start=0.5, end=2.0)
    assert abs(len(audio) - 1.5 * SR) <= 1


@pytest.mark.skipif(not MP3, reason="libsndfile without MP3")
def test_mp3_excerpt(tmp_path):
    path = write(tmp_path / "a.mp3", sine(44100, 3.0), 44100, 2, "MP3", "MPEG_LAYER_III")
    ing = ingest_audio(path, start=1.0, end=2.0)
    assert abs(ing.seconds - 1.0) < 1e-3 and peak_bin(ing.spec) == REF_BIN
