"""The public rung "file → embeddings", used by both ``index add`` and queries.

``ingest_file`` reads a score (PDF, scan, photo) or a recording with the front end a model was
trained with (``geometry.FrontEnd``: staff space, spectrogram settings) and cuts its snippets;
``embed_file`` embeds them with any embedder (the torch ``Embedder``, the ONNX ``OnnxEmbedder``)
and returns one ``FileEmbeddings``: the kind, the embeddings and what the front end made of the
file (strip and snippet locations, or spectrogram and snippet centres). ``Collection.add`` stores
``FileEmbeddings.arrays()``; ``identify`` ranks with ``emb``. No torch import here, so a query
embedded by ONNX Runtime never loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from audiosheet.files import file_kind
from audiosheet.geometry import (
    AUDIO_FRAMES,
    INDEX_AUDIO_HOP,
    INDEX_SHEET_HOP,
    LONG_QUERY_AUDIO_HOP,
    FrontEnd,
    FrontEndMismatch,
)
from audiosheet.geometry import DEFAULT as DEFAULT_FRONT_END


def check_front_end(front_end: FrontEnd) -> None:
    """Raise FrontEndMismatch unless this version's front end can make ``front_end``'s input: the
    staff space and the spectrogram settings are parameters; strip and snippet shapes are not."""
    fixed = ("strip_height", "sheet_h", "sheet_w")
    bad = [f"{k} {getattr(front_end, k)} (this version: {getattr(DEFAULT_FRONT_END, k)})" for k in fixed
           if getattr(front_end, k) != getattr(DEFAULT_FRONT_END, k)]
    if bad:
        raise FrontEndMismatch(f"front end not supported by this version of audiosheet: {', '.join(bad)}")


def ingest_file(path: str | Path, kind: str | None = None, front_end: FrontEnd = DEFAULT_FRONT_END,
                hop: int | None = None, context: int = AUDIO_FRAMES, start: float | None = None,
                end: float | None = None):
    """Read a file with ``front_end`` and cut its snippets every ``hop`` (strip columns for a score,
    default ``INDEX_SHEET_HOP``; spectrogram frames for a recording, default ``INDEX_AUDIO_HOP``).

    Returns ``frontend.strip.SheetIngest`` or ``frontend.audio.AudioIngest``. ``kind`` defaults to
    the suffix's (``files.file_kind``). Raises ValueError for a suffix that is neither, PageError /
    AudioError (one line naming the file) for a file that cannot be read, FrontEndMismatch for a
    front end this version cannot make. ``start``/``end`` (seconds) cut a recording.
    """
    path = Path(path)
    kind = kind or file_kind(path)
    check_front_end(front_end)
    if kind == "sheet":
        from audiosheet.frontend.strip import ingest_sheet

        return ingest_sheet(path, hop=hop or INDEX_SHEET_HOP, staff_space=front_end.staff_space)
    if kind == "audio":
        from audiosheet.frontend.audio import ingest_audio
        from audiosheet.frontend.spectrogram import SpectrogramConfig

        return ingest_audio(path, context=context, hop=hop or INDEX_AUDIO_HOP, start=start, end=end,
                            cfg=SpectrogramConfig(**front_end.spectrogram_settings()))
    raise ValueError(f"{path}: not a sheet-music or audio file (suffix '{path.suffix or '(none)'}')")


@dataclass
class FileEmbeddings:
    """A file's snippet embeddings and what the front end made of it."""

    kind: str  # "sheet" or "audio"
    emb: np.ndarray  # float32 (N, d), L2-normalised
    ingest: object  # frontend.strip.SheetIngest or frontend.audio.AudioIngest
    hop: int  # strip columns (sheet) or spectrogram frames (audio) between embedded snippets
    centres: np.ndarray | None = None  # audio: spectrogram frame of each embedded snippet's centre

    @property
    def snippet_s(self) -> float:
        """Seconds between the embedded audio snippets (recordings only)."""
        return self.hop / self.ingest.fps

    @property
    def warnings(self) -> list[str]:
        return list(self.ingest.warnings)

    def arrays(self) -> dict:
        """What a collection stores of the file: ``emb`` (float16) and where each snippet is
        (sheet: ``column, page, system, x0, x1`` and the strip's geometry and image; audio: centre
        ``frame``, ``fps`` and the spectrogram, float16), so later models need not read it again."""
        ing = self.ingest
        if self.kind == "sheet":
            st, loc = ing.strip, ing.locations
            return dict(emb=self.emb.astype(np.float16), column=loc.column, page=loc.page,
                        system=loc.system, x0=loc.x0.astype(np.float32), x1=loc.x1.astype(np.float32),
                        boxes=st.boxes, offsets=st.offsets, lefts=st.lefts, tops=st.tops,
                        scales=st.scales, angles=st.angles, sizes=st.sizes, strip=st.image)
        return dict(emb=self.emb.astype(np.float16), frame=self.centres, fps=np.float32(ing.fps),
                    spec=ing.spec.astype(np.float16))

    def info(self) -> dict:
        """What an item records of the file: pages, systems, staff spaces (sheet); seconds, sample
        rate, channels, level (audio); and the front end's warnings."""
        ing = self.ingest
        if self.kind == "sheet":
            info = {"pages": ing.n_pages, "systems": len(ing.strip.boxes), "skipped_pages": ing.skipped,
                    "staff_space": [round(lay.staff_space, 2) for lay in ing.layouts]}
        else:
            info = {"seconds": round(ing.seconds, 3), "sample_rate": ing.sample_rate,
                    "channels": ing.channels, **{k: v for k, v in ing.info.items()
                                                 if k in ("level_dbfs", "gain_db", "decoder")}}
        if ing.warnings:
            info["warnings"] = list(ing.warnings)
        return info


def embed_file(path: str | Path, embedder, kind: str | None = None,
               front_end: FrontEnd = DEFAULT_FRONT_END, hop: int | None = None,
               start: float | None = None, end: float | None = None,
               long_over: float = float("inf")) -> FileEmbeddings:
    """Read, cut and embed one file (``ingest_file``, then ``embedder.sheet``/``.audio``).

    ``embedder``: anything with ``.config.context`` and ``.sheet(snippets)``/``.audio(snippets)``
    → float32 (N, d) (a recording goes to ``.audio_sequence(spec, hop, snippets)`` where it has one, as
    ``embed.Embedder``: its snippets' attention from one pass over the spectrogram); or a callable
    ``n_snippets → embedder`` (a collection picks ONNX or torch by the query's length). ``long_over``: a recording longer than this many seconds is embedded
    every ``LONG_QUERY_AUDIO_HOP`` frames instead of every ``hop`` (long queries are identified in
    segments, where a coarser hop costs nothing and halves the work). Errors as ``ingest_file``.
    """
    pick: Callable[[int], object] = embedder if callable(embedder) and not hasattr(embedder, "sheet") \
        else (lambda n: embedder)
    path = Path(path)
    kind = kind or file_kind(path)
    if kind == "audio":
        context = int(pick(0).config.context)
        ing = ingest_file(path, "audio", front_end, hop or INDEX_AUDIO_HOP, context, start, end)
        step = hop or INDEX_AUDIO_HOP
        snippets, centres = ing.snippets, ing.centres
        if ing.seconds > long_over:
            stride = max(1, LONG_QUERY_AUDIO_HOP // step)
            snippets, centres, step = snippets[::stride], centres[::stride], step * stride
        emb = pick(len(snippets))
        if hasattr(emb, "audio_sequence"):  # the attention computed once for the whole recording
            return FileEmbeddings("audio", emb.audio_sequence(ing.spec, step, snippets), ing, step, centres)
        return FileEmbeddings("audio", emb.audio(snippets), ing, step, centres)
    ing = ingest_file(path, kind, front_end, hop or INDEX_SHEET_HOP)
    return FileEmbeddings("sheet", pick(len(ing.snippets)).sheet(ing.snippets), ing, hop or INDEX_SHEET_HOP)
