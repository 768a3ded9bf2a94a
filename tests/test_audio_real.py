"""Real-world recordings: FFmpeg formats (PyAV), level independence, warnings, folders."""
import itertools

import numpy as np
import pytest
import soundfile as sf

av = pytest.importorskip("av")

from audiosheet.files import expand  # noqa: E402
from audiosheet.frontend.audio import (
    CLIP_LEVEL,
    TARGET_DBFS,
    AudioError,
    _read_ffmpeg,
    active_level,
    ingest_audio,
    load_audio,
    normalise_level,
)
from audiosheet.frontend.spectrogram import DEFAULT, spectrogram  # noqa: E402
from audiosheet.retrieval.collection import AddReport

SR = DEFAULT.sample_rate


def music(sr, seconds=2.0, seed=0):
    """A few decaying partial-rich notes over a little noise: float32 (n,), peak 1."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.003 * rng.standard_normal(n)
    for k, start in enumerate(np.arange(0, seconds, 0.25)):
        f0 = 220 * 2 ** (rng.integers(0, 12) / 12)
        env = np.where(t >= start, np.exp(-(t - start) * 4), 0)
        x += sum(env * np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3))
    return (x / np.abs(x).max()).astype(np.float32)


def encode(path, x, sr, codec, video=False):
    """Write (n,) or (n, channels) float audio with PyAV (and a black video stream if asked)."""
    x = x[:, None] if x.ndim == 1 else x
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10) if video else None
        # FFmpeg's AAC encoder without noise substitution (PNS): its decoder makes up that noise
        s = c.add_stream(codec, rate=sr, options={"aac_pns": "0"} if codec == "aac" else {}) if codec else None
        if s:
            if codec == "wmav2":
                s.bit_rate = 128000  # it has no default
            s.layout = "mono" if x.shape[1] == 1 else "stereo"
        if v:
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            for _ in range(int(len(x) / sr * 10)):
                img = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for p in v.encode(img):
                    c.mux(p)
            for p in v.encode(None):
                c.mux(p)
        if s is None:
            return path
        for i in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[i:i + 1024].T), format="fltp",
                                            layout=s.layout)
            fr.sample_rate, fr.pts = sr, i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def resampled(x, sr):
    import soxr

    return soxr.resample(x, sr, SR, quality="HQ").astype(np.float32) if sr != SR else x


@pytest.mark.parametrize("name,codec,sr,channels,video", [
    ("a.m4a", "aac", 44100, 2, False), ("a.opus", "libopus", 48000, 1, False),
    ("a.mp4", "aac", 44100, 2, True), ("a.mkv", "libopus", 48000, 2, True),
    ("a.wma", "wmav2", 44100, 2, False),
])
def test_ffmpeg_formats(tmp_path, name, codec, sr, channels, video):
    x = 0.5 * music(sr)
    path = encode(tmp_path / name, np.repeat(x[:, None], channels, 1), sr, codec, video)
    ing = ingest_audio(path)
    assert ing.info["decoder"] == "ffmpeg" and ing.warnings == []
    assert (ing.sample_rate, ing.channels) == (sr, channels)
    # lossy codecs add or drop up to one frame of padding (AAC: 1024 samples, 23 ms)
    assert abs(ing.seconds - 2.0) <= 0.03 and ing.file_seconds == ing.seconds
    if codec == "wmav2":  # FFmpeg's own WMA encoder is crude (waveform correlation 0.85 here)
        return
    ref = spectrogram(normalise_level(resampled(x, sr))[0])
    m = len(ref)
    # AAC and Opus at their default bit rates: the log spectrogram within 0.03 on average (values
    # up to 4.5 here), correlation 0.995
    a, b = ing.spec[2:m - 2], ref[2:m - 2]
    assert np.abs(a - b).mean() < 0.03 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995
    # the waveform lines up with the original: no delay from encoder priming
    wave = load_audio(path)[:len(resampled(x, sr))]
    lag = np.argmax(np.correlate(wave[SR // 2:SR // 2 + 4000], resampled(x, sr)[SR // 2 - 50:SR // 2 + 4050],
                                 "valid")) - 50
    assert lag == 0


def test_ffmpeg_and_libsndfile_decode_alike(tmp_path):
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal((30000, 2))).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(str(path), x, 44100, subtype="FLOAT")
    mix, sr, channels, seconds, t0 = _read_ffmpeg(path, SR, 0.0, None)
    assert (sr, channels, seconds, t0, mix.decoder) == (44100, 2, 30000 / 44100, 0.0, "ffmpeg")
    np.testing.assert_allclose(mix.finish(), load_audio(path), atol=1e-6)


def test_ffmpeg_excerpt(tmp_path):
    x = 0.5 * music(44100, 3.0, seed=1)
    path = encode(tmp_path / "a.m4a", x, 44100, "aac")
    whole = load_audio(path)
    # 0.2 s is read from the beginning, the others after a seek to 0.5 s before them
    for start, end in [(0.2, 0.9), (0.7, 1.6), (1.0, None), (2.0, 2.9)]:
        part = load_audio(path, start=start, end=end)
        a = int(round(start * SR))
        n = len(whole) - a if end is None else int(round((end - start) * SR))
        assert abs(len(part) - n) <= 1
        # the same samples, apart from the resampler's start and end (its first and last 20 ms
        # differ slightly). (With noise substitution, AAC's decoder makes up noise for some bands
        # whose random state after a seek differs from a decoder's that read from the beginning.)
        mid = slice(500, len(part) - 500)
        np.testing.assert_allclose(part[mid], whole[a:a + len(part)][mid],
                                   atol=1e-5)
    ing = ingest_audio(path, start=0.7, end=1.6)
    assert ing.start == 0.7 and abs(ing.seconds - 0.9) < 1e-3 and ing.file_seconds == 3.0
    assert ing.times()[0] == 0.7
    with pytest.raises(AudioError) as info:
        ingest_audio(path, start=5.0)
    assert str(info.value) == f"{path}: excerpt from 5 s is outside the recording (3.0 s long)"
    with pytest.raises(AudioError, match="outside the recording"):
        load_audio(path, start=1.0, end=1.0)


def one_line_error(path, reason):
    with pytest.raises(AudioError) as info:
        ingest_audio(path)
    assert str(info.value) == f"{path}: {reason}" and "\n" not in str(info.value)


def test_corrupt_and_unreadable(tmp_path, monkeypatch):
    good = encode(tmp_path / "good.m4a", 0.5 * music(44100), 44100, "aac").read_bytes()
    mdat = good.find(b"mdat")
    assert 0 < mdat < good.find(b"moov")  # the index (moov) is at the end of the file
    (tmp_path / "half.m4a").write_bytes(good[:len(good) // 2])
    one_line_error(tmp_path / "half.m4a",
                   "not a readable audio file (invalid data found when processing input)")
    junk = np.random.default_rng(0).bytes(10000)
    (tmp_path / "garbage.m4a").write_bytes(good[:mdat + 200] + junk + good[mdat + 10200:])
    one_line_error(tmp_path / "garbage.m4a",
                   "corrupt or truncated audio data (invalid data found when processing input)")
    (tmp_path / "notes.m4a").write_text("not audio\n" * 50)
    one_line_error(tmp_path / "notes.m4a",
                   "not a readable audio file (invalid data found when processing input)")
    encode(tmp_path / "mute.mp4", np.zeros(44100, np.float32), 44100, None, video=True)
    one_line_error(tmp_path / "mute.mp4", "not a readable audio file (a video without sound)")
    # a .wav that neither libsndfile nor FFmpeg reads keeps libsndfile's reason
    (tmp_path / "text.wav").write_text("RIFF? no, just text\n")
    with pytest.raises(AudioError, match=r"text.wav: not a readable audio file \(") as info:
        ingest_audio(tmp_path / "text.wav")
    assert "invalid data found" not in str(info.value)
    # whatever the decoder raises becomes that file's one-line error
    import audiosheet.frontend.audio as audio

    def crash(frame):
        raise RuntimeError("decoder exploded\nwith a second line")

    monkeypatch.setattr(audio, "_frame_block", crash)
    one_line_error(tmp_path / "good.m4a",
                   "corrupt or truncated audio data (decoder exploded with a second line)")


def test_active_level():
    x = music(SR, seed=2)
    level = active_level(x)
    for db in (-50, -20, -1, 10):
        assert active_level(x * 10 ** (db / 20)) == pytest.approx(level + db, abs=1e-4)
    # a full-scale sine is -3 dBFS; silence around it does not lower the level
    sine = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    assert active_level(sine) == pytest.approx(-3.0103, abs=1e-3)
    padded = np.concatenate([np.zeros(3 * SR, np.float32), sine, 1e-4 * sine, np.zeros(SR, np.float32)])
    assert active_level(padded) == pytest.approx(-3.0103, abs=1e-3)
    assert active_level(np.zeros(SR, np.float32)) == float("-inf")
    y, lvl, gain = normalise_level(0.01 * sine)
    assert lvl == pytest.approx(-43.0103, abs=1e-3) and gain == pytest.approx(TARGET_DBFS - lvl)
    assert active_level(y) == pytest.approx(TARGET_DBFS, abs=1e-4)


@pytest.mark.parametrize("suffix", ["wav", "m4a"])
def test_level_independent(tmp_path, suffix):
    x = music(44100, seed=4)
    peak_level = active_level(x, 44100)  # of x, whose peak is 1
    specs, levels = [], []
    for db in (-50, -20, -1):  # peak level of the clip, dBFS
        y = x * np.float32(10 ** (db / 20))
        path = tmp_path / f"{db}.{suffix}"
        if suffix == "wav":
            sf.write(str(path), y, 44100, subtype="FLOAT")
        else:
            encode(path, y, 44100, "aac")
        ing = ingest_audio(path)
        specs.append(ing.spec)
        levels.append(ing.info["level_dbfs"])
        assert ing.info["level_dbfs"] == pytest.approx(peak_level + db, abs=0.05)
        assert ing.info["gain_db"] == pytest.approx(TARGET_DBFS - ing.info["level_dbfs"], abs=0.011)
    # float WAV: the same up to float rounding. AAC: its coding error (0.03 on average from the
    # original's spectrogram at every level here) differs from level to level, as its encoder
    # decides differently, so the spectrograms differ by about as much
    for s in specs[1:]:
        assert s.shape == specs[0].shape
        d = np.abs(s - specs[0])
        if suffix == "wav":
            assert d.max() < 1e-3 and d.mean() < 1e-4
        else:
            assert d.mean() < 0.05 and np.corrcoef(s.ravel(), specs[0].ravel())[0, 1] > 0.99
    # without the normalisation they would be far apart
    raw = [spectrogram(load_audio(tmp_path / f"{db}.{suffix}")) for db in (-50, -1)]
    assert np.abs(raw[1] - raw[0]).mean() > 0.5


def test_warnings(tmp_path):
    x = music(44100, seed=5)
    sf.write(str(tmp_path / "ok.wav"), 0.5 * x, 44100, subtype="FLOAT")
    ok = ingest_audio(tmp_path / "ok.wav")
    assert ok.warnings == [] and ok.info["clipped_percent"] == 0.0
    # one full-scale sample alone is not clipping
    y = 0.5 * x
    y[1000] = 1.0
    sf.write(str(tmp_path / "touch.wav"), y, 44100, subtype="FLOAT")
    assert ingest_audio(tmp_path / "touch.wav").warnings == []

    clipped = np.clip(3 * x, -1, 1)
    sf.write(str(tmp_path / "clipped.wav"), np.stack([clipped, 0.5 * x], 1), 44100, subtype="FLOAT")
    ing = ingest_audio(tmp_path / "clipped.wav")
    # samples at full scale in runs of two or more, counted with a plain loop, over both channels
    runs = [len(list(g)) for hot, g in itertools.groupby(np.abs(clipped) >= CLIP_LEVEL) if hot]
    frac = sum(r for r in runs if r >= 2) / (2 * len(clipped))
    assert frac > 0.005
    assert ing.warnings == [f"clipped: {100 * frac:.1f} % of the samples are at full scale "
                            "(distortion can lower the match quality)"]
    assert ing.info["clipped_percent"] == round(100 * frac, 3)

    quiet = x * np.float32(10 ** ((-52 - active_level(x, 44100)) / 20))
    sf.write(str(tmp_path / "quiet.wav"), quiet, 44100, subtype="FLOAT")
    ing = ingest_audio(tmp_path / "quiet.wav")
    level = ing.info["level_dbfs"]
    assert level == pytest.approx(-52, abs=0.2)
    assert ing.warnings == [f"very low level: {level:.1f} dBFS active RMS, raised by "
                            f"{TARGET_DBFS - level:.0f} dB (noise and hum are raised with it)"]


def test_folder_reports_other_files(tmp_path):
    d = tmp_path / "scans"
    (d / "sub").mkdir(parents=True)
    encode(d / "sub" / "take.m4a", 0.5 * music(44100), 44100, "aac")
    (d / "notes.txt").write_text("page order\n")
    (d / "systems.json").write_text("{}")
    (d / "README").write_text("x")
    (d / ".DS_Store").write_bytes(b"\0")
    (d / "video.MP4").write_bytes(b"")
    skipped = []
    files, bad = expand([d, tmp_path / "nope"], skipped)
    assert files == [d / "sub" / "take.m4a", d / "video.MP4"]
    assert bad == [(str(tmp_path / "nope"), f"{tmp_path / 'nope'}: no such file or folder")]
    assert skipped == [(str(d / name), f"{d / name}: not sheet music or audio (suffix '{suf}'), skipped")
                       for name, suf in [("README", "(none)"), ("notes.txt", ".txt"),
                                         ("systems.json", ".json")]]
    rep = AddReport(skipped=skipped)
    assert rep.summary() == "added 0, already indexed 0, failed 0, skipped 3 other file(s)"
    assert AddReport().summary() == "added 0, already indexed 0, failed 0"


def test_collection_indexes_m4a_and_reports_the_rest(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("faiss")
    from audiosheet.retrieval.collection import Collection

    d = tmp_path / "recordings"
    d.mkdir()
    encode(d / "take.m4a", 0.5 * music(44100, 3.0), 44100, "aac")
    (d / "broken.m4a").write_bytes(b"\0" * 1000)
    (d / "notes.txt").write_text("x")
    rep = Collection(tmp_path / "db").add([d], progress=False)
    assert [i.name for i in rep.added] == ["take"]
    assert rep.failed == [(str(d / "broken.m4a"), f"{d / 'broken.m4a'}: not a readable audio file "
                                                  "(invalid data found when processing input)")]
    assert [p for p, _ in rep.skipped] == [str(d / "notes.txt")]
    assert rep.added[0].info["sample_rate"] == 44100 and 3.0 <= rep.added[0].info["seconds"] < 3.03
