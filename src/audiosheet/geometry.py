"""Every front-end number, named once: what a model sees and how files are cut for it.

The sheet side (Dorfer et al. 2018, "Learning audio-sheet music correspondences for cross-modal
retrieval and piece identification", TISMIR 1(1); MSMD's geometry): a page is rescaled to a common
staff space, each system becomes a band of the half-resolution *strip*, and a sheet snippet is an
``SHEET_H × SHEET_W`` window of it. The audio side: a log-frequency spectrogram at ``FPS`` frames per
second (the MSMD/madmom recipe, ``frontend.spectrogram``), and an audio snippet is ``AUDIO_FRAMES``
(the model config's ``context``) frames of it.

``FrontEnd`` gathers the numbers a model was trained with. It is stored beside the weights in every
checkpoint and in every collection's settings, and ingestion and queries read it from there
(``FrontEnd.check`` raises one line on a mismatch). Files written before it existed carry today's
defaults. This module imports nothing heavy (no numpy), so every layer may use it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# --- audio: waveform → spectrogram -----------------------------------------------------------
SAMPLE_RATE = 22050  # Hz, mono: rendering (corpus), decoding (queries) and the spectrogram
FRAME_SIZE = 2048  # samples per STFT frame (Hann window)
FPS = 20.0  # spectrogram frames per second (hop = SAMPLE_RATE / FPS samples, may be fractional)
BANDS_PER_OCTAVE = 16  # logarithmic filterbank resolution
FMIN, FMAX = 30.0, 6000.0  # Hz: lowest and highest filter centre
SPEC_BINS = 92  # spectrogram bins these settings give (merged filters; frontend.spectrogram.n_bins)
AUDIO_BINS = SPEC_BINS  # rows of an audio snippet
AUDIO_FRAMES = 42  # columns of an audio snippet (2.1 s) unless a model config says otherwise

# --- sheet: page → strip → snippet -----------------------------------------------------------
TARGET_STAFF_SPACE = 7.0  # px between staff lines of a normalised page (3.5 in the strip)
STRIP_HEIGHT = 100  # rows of the half-resolution strip (200 px of the page around a system centre)
SHEET_H, SHEET_W = 80, 100  # sheet snippet, strip px (160 × 200 px of the normalised page)
SHEET_CROP_W = 120  # training crop around a snippet centre: wide enough that a scaled crop shows no edge

# --- hops: how densely files are cut -----------------------------------------------------------
INDEX_SHEET_HOP = 10  # strip columns between indexed (and sheet-query) snippets (20 px of the page)
INDEX_AUDIO_HOP = 5  # spectrogram frames between indexed (and recording-query) snippets (0.25 s)
LONG_QUERY_AUDIO_HOP = 10  # frames between snippets of a recording query longer than a segment (0.5 s)
DENSE_AUDIO_HOP = 2  # frames between snippet centres of a densely cut recording (0.1 s): ingest_audio's default,
# the cut a passage-model query starts from
PRETRAIN_SHEET_HOP = 4  # strip columns between candidate centres of a pre-training sheet view
PRETRAIN_AUDIO_HOP = 2  # frames between candidate starts of a pre-training audio view
PASSAGE_AUDIO_WINDOW, PASSAGE_AUDIO_HOP = 20, 18  # frames per passage-model audio window (10 % overlap)
PASSAGE_SHEET_WINDOW, PASSAGE_SHEET_HOP = 90, 81  # strip columns per passage-model sheet window


class FrontEndMismatch(ValueError):
    """A model, a collection or a corpus was made with other front-end settings than it meets."""


@dataclass(frozen=True)
class FrontEnd:
    """The front-end settings a model was trained with (see the module docstring).

    Stored as ``to_dict()`` in checkpoints (safetensors metadata ``front_end``) and collections
    (setting ``front_end``); ``from_dict(None)`` (a file older than this record) gives today's
    defaults, so old files keep loading.
    """
    sample_rate: int = SAMPLE_RATE
    frame_size: int = FRAME_SIZE
    fps: float = FPS
    bands_per_octave: int = BANDS_PER_OCTAVE
    fmin: float = FMIN
    fmax: float = FMAX
    spec_bins: int = SPEC_BINS
    staff_space: float = TARGET_STAFF_SPACE
    strip_height: int = STRIP_HEIGHT
    sheet_h: int = SHEET_H
    sheet_w: int = SHEET_W

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "FrontEnd":
        """Settings from a stored record; missing keys (older files) take today's defaults.

        Raises FrontEndMismatch on a key this version does not know (a newer file)."""
        if not d:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FrontEndMismatch(f"front-end settings {unknown} are unknown to this version of audiosheet")
        return cls(**d)

    def spectrogram_settings(self) -> dict:
        """The keyword arguments of ``frontend.spectrogram.SpectrogramConfig``."""
        return {k: getattr(self, k) for k in ("sample_rate", "frame_size", "fps", "bands_per_octave",
                                              "fmin", "fmax")}

    def check(self, other: "FrontEnd", what: str, against: str) -> None:
        """Raise FrontEndMismatch (one line naming ``what``, ``against`` and the differing settings)
        unless ``other`` equals these settings."""
        if other != self:
            diff = ", ".join(f"{k} {getattr(other, k)} vs {getattr(self, k)}" for k in self.to_dict()
                             if getattr(other, k) != getattr(self, k))
            raise FrontEndMismatch(f"{what} was made with other front-end settings than {against}: {diff}")


DEFAULT = FrontEnd()
