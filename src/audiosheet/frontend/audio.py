"""Audio ingestion: a sound file → mono waveform → spectrogram → sliding audio snippets.

The recording-side twin of ``pages``. Two decoders: libsndfile (``soundfile``) for the formats it
reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, AU, ...; fast, exact), and FFmpeg through PyAV
(``av``, which ships its own FFmpeg) for everything else FFmpeg decodes: M4A/AAC/ALAC, raw AAC,
Opus, WMA, AC-3, APE, WavPack, ... and the audio track of video files (.mp4, .mkv, .webm, .mov,
...). A file with a libsndfile suffix that libsndfile cannot open is tried with FFmpeg. Both decode
block by block (bounded memory besides the mono result): channels are averaged to mono and the
result is resampled with soxr (streaming, "HQ") to the front end's rate (``spectrogram.DEFAULT``:
22,050 Hz, 20 frames/s, 92 bins). Frame ``i`` of a spectrogram covers time ``i / fps`` from the
start of what was read; ``AudioIngest.start`` says where that is in the file when only an excerpt
was read.

Level: ``ingest_audio`` (used by ``index add`` and by queries) scales what it read so that its
active level (``active_level``: RMS of the 100 ms blocks that are not silence, gated as EBU R128
gates loudness, without its K-weighting) is ``TARGET_DBFS``, the typical level of the training
corpus's renderings (see ``TARGET_DBFS``), so the same recording at any gain gives the same
spectrogram. Clipping and a very low level are reported in ``AudioIngest.warnings``.

Audio snippets are (92, context) windows, bins × frames, centred on a frame as in
``SnippetPairs.audio``, padded with 0 (silence) where they leave the recording.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiosheet.frontend.spectrogram import DEFAULT, SpectrogramConfig, spectrogram
from audiosheet.geometry import AUDIO_FRAMES, DENSE_AUDIO_HOP

SILENCE = 1e-4  # peak amplitude under which a recording is silent (-80 dBFS)
BLOCK = 1 << 18  # frames read at a time (bounded memory for many-channel files)
PREROLL = 0.5  # seconds decoded before an excerpt read with FFmpeg (see _read_ffmpeg)
# suffixes libsndfile reads (the fast path); any other file is decoded with FFmpeg (PyAV)
SNDFILE_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".w64", ".rf64", ".caf"}

# Level normalisation (``normalise_level``): the target is the typical active level of the audio the
# shipped model was trained on. Corpus renderings (``synth.render``: TinySoundFont at gain -3 dB,
# peak-limited to 0.99, no other normalisation; ``corpus build`` makes their spectrograms directly,
# and training reads those) measured with ``active_level`` on an 80-piece music21 corpus (seed 0,
# bundled SoundFonts, 2 performances each): training performances (136) median -32.2 dBFS, mean
# -30.9, 10th-90th percentile -36.5 to -23.3 (TimGM6mb -35 to -32.5 by program, Merlin -32 to
# -22.5; the test split's Merlin grand piano -24.5). Training adds a random gain of ±12 dB
# (``augment.AudioAugConfig.gain_db``) on top.
TARGET_DBFS = -32.0
LEVEL_BLOCK = 0.1  # seconds per block of the level measurement
ABSOLUTE_GATE_DBFS = -100.0  # blocks under this are digital silence, never counted
RELATIVE_GATE_DB = -20.0  # blocks this far under the level of the (absolute-gated) blocks are pauses
CLIP_LEVEL = 0.999  # |sample| at or above this, next to another such sample: a clipped sample
CLIP_WARN = 0.005  # warn above this fraction of clipped samples
LOW_WARN_DBFS = -45.0  # warn when the active level is below this


class AudioError(ValueError):
    """A file that gives no usable audio; the message is one line, ``"{path}: {reason}"``."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def _detail(exc: BaseException) -> str:
    """A decoder's own words for an error, one line, without the "Error opening 'path': " part
    (libsndfile) or the errno and file name (FFmpeg)."""
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(text).split())
    if text.startswith("Error : "):
        text = text[len("Error : "):]
    return text.rstrip(".")[:200] or type(exc).__name__


class _Mixer:
    """Blocks (n, channels) of float samples at ``rate`` → mono float32 at ``sample_rate``, with
    the peak (all channels), the count of clipped samples and non-finite samples checked."""

    def __init__(self, path, rate: int, sample_rate: int, decoder: str):
        import soxr

        self.decoder = decoder
        self.path, self.rate, self.n, self.peak, self.clipped, self.samples = path, rate, 0, 0.0, 0, 0
        self.out: list[np.ndarray] = []
        self.stream = (soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
                       if rate != sample_rate else None)

    def add(self, block: np.ndarray) -> None:
        if not len(block):
            return
        if not np.isfinite(block).all():
            raise AudioError(self.path, "non-finite samples (NaN or infinity)")
        mag = np.abs(block)
        self.peak = max(self.peak, float(mag.max()))
        hot = mag >= CLIP_LEVEL
        if hot.any():  # clipped: at full scale next to another full-scale sample of its channel
            run = np.zeros_like(hot)
            run[1:] |= hot[:-1]
            run[:-1] |= hot[1:]
            self.clipped += int((hot & run).sum())
        self.samples += block.size
        self.n += len(block)
        mono = block.mean(axis=1, dtype=np.float32)
        self.out.append(self.stream.resample_chunk(mono) if self.stream else mono)

    def finish(self) -> np.ndarray:
        if self.n == 0:
            raise AudioError(self.path, "no audio (0 samples)")
        if self.stream:
            self.out.append(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
        audio = np.concatenate(self.out).astype(np.float32, copy=False)
        if self.peak < SILENCE:
            raise AudioError(self.path, "silent (peak below -80 dBFS)")
        if np.abs(audio).max() < SILENCE:
            raise AudioError(self.path, "silent when mixed to mono (the channels cancel out)")
        return audio


def _outside(path, a: float, b: float | None, file_seconds: float | None):
    span = f"from {a:g} s" if b is None else f"{a:g}–{b:g} s"
    length = "" if file_seconds is None else f" ({file_seconds:.1f} s long)"
    return AudioError(path, f"excerpt {span} is outside the recording{length}")


def _read_sndfile(f, path: Path, sample_rate: int, start: float, end: float | None):
    import soundfile as sf

    with f:
        sr, channels, n = int(f.samplerate), int(f.channels), int(f.frames)
        if sr <= 0 or channels <= 0:
            raise AudioError(path, f"not a readable audio file ({sr} Hz, {channels} channels)")
        file_seconds = n / sr
        a = int(round(start * sr))
        b = n if end is None else min(int(round(end * sr)), n)
        if n and (a >= n or b <= a):
            raise _outside(path, a / sr, end, file_seconds)
        mix = _Mixer(path, sr, sample_rate, "libsndfile")
        try:
            if a:
                f.seek(a)
            for block in f.blocks(BLOCK, frames=b - a, dtype="float32", always_2d=True):
                mix.add(block)
        except sf.SoundFileError as exc:
            raise AudioError(path, f"corrupt or truncated audio data ({_detail(exc)})") from None
    return mix, sr, channels, file_seconds, a / sr


_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _frame_block(frame) -> np.ndarray:
    """A decoded PyAV audio frame as float32 (n, channels) in [-1, 1]."""
    x = frame.to_ndarray()
    planar, channels = frame.format.is_planar, frame.layout.nb_channels
    x = x.reshape(channels, -1) if planar else x.reshape(-1, channels).T
    base = frame.format.name[:-1] if planar else frame.format.name  # u8, s16, s32, s64, flt, dbl
    if base == "u8":
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif base in _SCALE:
        x = (x / _SCALE[base]).astype(np.float32)
    else:  # flt, dbl
        x = x.astype(np.float32, copy=False)
    return x.T


def _read_ffmpeg(path: Path, sample_rate: int, start: float, end: float | None,
                 unreadable: str | None = None, seek: bool = True):
    """Decode the first audio stream with FFmpeg (PyAV). ``unreadable``: the reason to give when
    FFmpeg cannot open the file either (libsndfile's, for a libsndfile suffix)."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as exc:  # FFmpegError, and anything else a damaged header provokes
        raise AudioError(path, unreadable or f"not a readable audio file ({_detail(exc).lower()})") from None
    with container:
        if not container.streams.audio:
            what = "a video without sound" if container.streams.video else "no audio stream"
            raise AudioError(path, unreadable or f"not a readable audio file ({what})")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        # as declared; the first decoded frame has the last word (some codecs tell only then)
        sr, channels = int(cc.sample_rate or 0), int(cc.layout.nb_channels if cc.layout else 0)
        tb = stream.time_base
        t_first = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if stream.duration is not None and tb is not None:
            declared = float(stream.duration * tb)
        else:
            declared = container.duration / 1e6 if container.duration else None
        if (end is not None and end <= start) or (declared and start >= declared):
            raise _outside(path, start, end, declared)
        # the decoder's rate may differ from the container's (HE-AAC: the core rate is declared,
        # twice that is decoded): the first decoded frame's rate is the one used
        mix, a, b = None, 0, None
        # seek only past the pre-roll: from the beginning, the decoder also sees what comes
        # before the first time stamp (AAC's priming frame)
        pos, sought = 0, bool(seek and tb is not None and start > PREROLL)
        try:
            if sought:
                # from PREROLL earlier: decoders of overlapping transforms (AAC, Opus, MP3)
                # need a frame or more before the first correct sample
                container.seek(int((t_first + start - PREROLL) / tb), stream=stream,
                               backward=True)
            for frame in container.decode(stream):
                if mix is None:
                    sr, channels = int(frame.sample_rate or sr), frame.layout.nb_channels or channels
                    if sr <= 0:
                        raise AudioError(path, "not a readable audio file (no sample rate)")
                    mix = _Mixer(path, sr, sample_rate, "ffmpeg")
                    a, b = int(round(start * sr)), None if end is None else int(round(end * sr))
                elif frame.sample_rate and frame.sample_rate != sr:
                    raise AudioError(path, f"not a readable audio file (the sample rate changes "
                                           f"within the recording, {sr} → {frame.sample_rate} Hz)")
                if sought:  # where the decoder resumed: the first frame's time stamp
                    if frame.time is None:
                        break
                    pos, sought = int(round((frame.time - t_first) * sr)), False
                x = _frame_block(frame)
                lo, hi = max(a - pos, 0), len(x) if b is None else min(b - pos, len(x))
                if hi > lo:
                    mix.add(x[lo:hi])
                pos += len(x)
                if b is not None and pos >= b:
                    break
            else:
                sought = False
        except (AudioError, MemoryError):
            raise
        except Exception as exc:  # the decoder's error on damaged data, whatever its type
            raise AudioError(path, f"corrupt or truncated audio data ({_detail(exc).lower()})") from None
    if sought:  # no time stamps to place a seek: read from the beginning instead
        return _read_ffmpeg(path, sample_rate, start, end, unreadable, seek=False)
    # decoded to the end: its length is known exactly; else (stopped at the excerpt's end, or
    # nothing after a seek) the container's word for it
    if mix is None and not sr:  # nothing decoded and no rate declared: not a recording
        raise AudioError(path, unreadable or "not a readable audio file (no audio decoded)")
    file_seconds = pos / sr if pos and (b is None or pos < b) else (declared or pos / sr)
    if mix is None or (mix.n == 0 and a):
        if start:
            raise _outside(path, start, end, file_seconds or None)
        mix = _Mixer(path, max(sr, 1), sample_rate, "ffmpeg")  # nothing decoded: "no audio (0 samples)"
    return mix, sr, channels, file_seconds, a / max(sr, 1)


def _read(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None):
    """(mono float32 at ``sample_rate``, the ``_Mixer`` (peak, clipped samples), file sample rate,
    file channels, file seconds, start and length of what was read in seconds)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    start = max(float(start or 0.0), 0.0)
    unreadable = None
    if path.suffix.lower() in SNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            f = sf.SoundFile(str(path))
        except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            detail = _detail(exc)
            if "does not exist" in detail:  # libsndfile's words for some garbage files
                detail = "format not recognised"
            unreadable = f"not a readable audio file ({detail.lower()})"
        else:
            result = _read_sndfile(f, path, sample_rate, start, end)
    if unreadable is not None or path.suffix.lower() not in SNDFILE_SUFFIXES:
        result = _read_ffmpeg(path, sample_rate, start, end, unreadable)
    mix, sr, channels, file_seconds, t0 = result
    audio = mix.finish()
    return audio, mix, sr, channels, file_seconds, t0, mix.n / sr


def load_audio(path: str | Path, sample_rate: int = DEFAULT.sample_rate, start: float = 0.0,
               end: float | None = None) -> np.ndarray:
    """Read a sound file as mono float32 at ``sample_rate`` (channels averaged, resampled with
    soxr), at its own level (not normalised; ``ingest_audio`` normalises). ``start``/``end``
    (seconds) read only an excerpt; ``end`` past the file is clipped.

    ``AudioError`` for a missing, unreadable, corrupt, empty or silent file, or an excerpt outside
    the recording. A recording too short for one snippet is fine here (snippets are padded with
    silence).
    """
    return _read(path, sample_rate, start, end)[0]


def _db(x: float) -> float:
    return float(20 * np.log10(max(x, 1e-12)))


def active_level(audio: np.ndarray, sample_rate: int = DEFAULT.sample_rate) -> float:
    """Active level of a mono waveform, dBFS (RMS; a full-scale sine is -3 dBFS).

    The power mean of its ``LEVEL_BLOCK`` (100 ms) blocks, gated as EBU R128 gates loudness
    (ITU-R BS.1770-4, without K-weighting, non-overlapping blocks): blocks under
    ``ABSOLUTE_GATE_DBFS`` are not counted, nor blocks more than ``RELATIVE_GATE_DB`` under the
    power mean of the rest (pauses, fades, the silence around a recording). Scaling the waveform
    by g dB changes this by exactly g dB as long as no block crosses the absolute gate (-100 dBFS).
    A recording shorter than one block is measured whole. -inf for all-zero audio.
    """
    audio = np.asarray(audio, dtype=np.float32)
    n = max(int(round(LEVEL_BLOCK * sample_rate)), 1)
    k = len(audio) // n
    blocks = audio[:k * n].reshape(k, n) if k else audio[None, :]
    power = np.mean(np.square(blocks, dtype=np.float64), axis=1)
    power = power[power > 10 ** (ABSOLUTE_GATE_DBFS / 10)]
    if not len(power):
        return float("-inf")
    power = power[power > power.mean() * 10 ** (RELATIVE_GATE_DB / 10)]
    return float(10 * np.log10(power.mean()))


def normalise_level(audio: np.ndarray, sample_rate: int = DEFAULT.sample_rate,
                    target: float = TARGET_DBFS) -> tuple[np.ndarray, float, float]:
    """The waveform scaled to an active level of ``target`` dBFS (``active_level``): returns
    (scaled float32 waveform, measured level dBFS, gain applied dB). Nothing is clipped: samples
    may exceed ±1 after a large gain (the spectrogram takes any float). Used by ``ingest_audio``
    for both indexed recordings and queries, so both meet the model at the training corpus's
    level."""
    level = active_level(audio, sample_rate)
    if not np.isfinite(level):
        return np.asarray(audio, np.float32), level, 0.0
    gain = target - level
    return (np.asarray(audio, np.float32) * np.float32(10 ** (gain / 20))), level, gain


def audio_snippets(spec: np.ndarray, context: int = AUDIO_FRAMES,
                   hop: int = DENSE_AUDIO_HOP) -> tuple[np.ndarray, np.ndarray]:
    """Sliding spectrogram windows centred on frames 0, hop, 2 hop, ... < T.

    ``spec``: (T, bins). Returns (float32 (N, bins, context), bins × frames as ``Embedder.audio``
    and ``SnippetPairs.audio``; centres int (N,)). Window k is
    ``spec[centres[k] - context // 2 : ... + context].T`` with 0 (silence) beyond the ends.
    """
    spec = np.asarray(spec, dtype=np.float32)
    context, hop = int(context), int(hop)
    if spec.ndim != 2 or context < 1 or hop < 1:
        raise ValueError(f"audio_snippets: spec (T, bins), context ≥ 1, hop ≥ 1; got shape "
                         f"{spec.shape}, context {context}, hop {hop}")
    t, bins = spec.shape
    centres = np.arange(0, t, hop, dtype=np.int64)
    lo = context // 2
    padded = np.zeros((lo + t + context - lo, bins), np.float32)
    padded[lo:lo + t] = spec
    view = np.lib.stride_tricks.sliding_window_view(padded, context, axis=0)  # (., bins, context)
    return np.ascontiguousarray(view[centres]), centres


@dataclass
class AudioIngest:
    """A recording read for queries: its spectrogram and audio snippets."""

    path: str
    seconds: float  # length of the audio read (the excerpt, if one was asked for)
    file_seconds: float  # length of the whole file
    start: float  # where frame 0 is in the file, seconds
    sample_rate: int  # the file's
    channels: int  # the file's
    fps: float  # spectrogram frames per second
    spec: np.ndarray  # float32 (T, 92)
    snippets: np.ndarray  # float32 (N, 92, context)
    centres: np.ndarray  # int (N,) spectrogram frame of each snippet's centre
    # one line each, without the path: clipping, a very low level (see ``ingest_audio``)
    warnings: list[str] = field(default_factory=list)
    # how the level was set, for callers to pass on: level_dbfs (active level as read), gain_db
    # (applied), peak_dbfs (as read, all channels), clipped_percent, decoder ("libsndfile"/"ffmpeg")
    info: dict = field(default_factory=dict)

    def cut(self, context: int = AUDIO_FRAMES, hop: int = DENSE_AUDIO_HOP) -> tuple[np.ndarray, np.ndarray]:
        """Snippets for another context or hop (see ``audio_snippets``)."""
        return audio_snippets(self.spec, context, hop)

    def times(self, frames=None) -> np.ndarray:
        """Seconds into the file of spectrogram frames (default: the snippet centres)."""
        frames = self.centres if frames is None else np.asarray(frames)
        return self.start + frames / self.fps


def ingest_audio(path: str | Path, context: int = AUDIO_FRAMES, hop: int = DENSE_AUDIO_HOP,
                 start: float | None = None, end: float | None = None,
                 cfg: SpectrogramConfig = DEFAULT) -> AudioIngest:
    """Read a sound file (or its ``start``–``end`` seconds), scale it to the training corpus's level
    (``normalise_level``: active level ``TARGET_DBFS``, measured on what was read), make its
    spectrogram and cut audio snippets every ``hop`` frames. ``AudioError`` as ``load_audio``.

    ``warnings`` (one line each): more than ``CLIP_WARN`` (0.5 %) of the samples clipped (at
    |x| ≥ 0.999 next to another such sample of the channel), or an active level under
    ``LOW_WARN_DBFS`` (-45 dBFS) before normalisation.
    """
    audio, mix, sr, channels, file_seconds, t0, seconds = _read(path, cfg.sample_rate, start or 0.0, end)
    audio, level, gain = normalise_level(audio, cfg.sample_rate)
    clipped = mix.clipped / max(mix.samples, 1)
    warnings = []
    if clipped > CLIP_WARN:
        warnings.append(f"clipped: {100 * clipped:.1f} % of the samples are at full scale "
                        "(distortion can lower the match quality)")
    if level < LOW_WARN_DBFS:
        warnings.append(f"very low level: {level:.1f} dBFS active RMS, raised by {gain:.0f} dB "
                        "(noise and hum are raised with it)")
    info = {"level_dbfs": round(level, 2), "gain_db": round(gain, 2),
            "peak_dbfs": round(_db(mix.peak), 2), "clipped_percent": round(100 * clipped, 3),
            "decoder": mix.decoder}
    spec = spectrogram(audio, cfg)
    snippets, centres = audio_snippets(spec, context, hop)
    return AudioIngest(str(path), seconds, file_seconds, t0, sr, channels,
                       float(cfg.fps), spec, snippets, centres, warnings, info)
