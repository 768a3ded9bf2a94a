"""Read access to a built corpus folder: manifest, splits, pieces and their arrays (the layout of
a corpus folder: ``audiosheet.corpus.build``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audiosheet.geometry import FrontEnd, FrontEndMismatch

FORMAT_VERSION = 1


# how strips are made: "pixels-v1" = systems found from the page pixels, staff space normalised
# to geometry.TARGET_STAFF_SPACE (the query geometry). Corpora without it predate issue 4.
STRIP_GEOMETRY = "pixels-v1"


# a piece's system offsets in its strip: int64 (S + 1,), system s is strip columns c[s]:c[s + 1]
# (``frontend.strip.Strip.offsets``); pieces built before it have none
STRIP_SYSTEMS = "strip_systems.npy"


SPLITS = ("train", "valid", "test")


SPLIT_FRACTIONS = (0.80, 0.05, 0.15)


class CorpusError(ValueError):
    """A corpus folder that is missing, incomplete or inconsistent."""


class Corpus:
    """Read access to a built corpus folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            raise CorpusError(f"{self.root}: not a corpus (no manifest.json); build one with "
                              f"'audiosheet corpus build'")
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        self.splits = json.loads((self.root / "splits.json").read_text())

    @property
    def front_end(self) -> FrontEnd:
        """The front end the corpus's strips and spectrograms were made with: the manifest's
        ``front_end`` record, or for a corpus built before it, its spectrogram settings and
        today's sheet geometry. A model trained on the corpus records it in its checkpoint."""
        try:
            if "front_end" in self.manifest:
                return FrontEnd.from_dict(self.manifest["front_end"])
            spec = self.manifest.get("spectrogram") or {}
            keys = FrontEnd().spectrogram_settings()
            return FrontEnd.from_dict({k: v for k, v in spec.items() if k in keys})
        except (FrontEndMismatch, TypeError) as exc:
            raise CorpusError(f"{self.root}: {exc}") from None

    def split(self, name: str) -> list[str]:
        if name == "all":
            return sorted(p for ids in self.splits.values() for p in ids)
        if name not in self.splits:
            raise CorpusError(f"{self.root}: no split '{name}' (have {', '.join(self.splits)})")
        return list(self.splits[name])

    @property
    def piece_ids(self) -> list[str]:
        return self.split("all")

    def piece_dir(self, piece_id: str) -> Path:
        d = self.root / "pieces" / piece_id
        if not (d / "piece.json").is_file():
            raise CorpusError(f"{self.root}: no piece '{piece_id}'")
        return d

    def info(self, piece_id: str) -> dict:
        return json.loads((self.piece_dir(piece_id) / "piece.json").read_text())

    def noteheads(self, piece_id: str) -> dict[str, np.ndarray]:
        with np.load(self.piece_dir(piece_id) / "noteheads.npz") as z:
            return {k: z[k] for k in z.files}

    def strip_systems(self, piece_id: str) -> np.ndarray | None:
        """int64 (S + 1,): where each system of the piece's strip begins, and the strip's width;
        None for a piece built before they were stored."""
        path = self.piece_dir(piece_id) / STRIP_SYSTEMS
        return np.load(path).astype(np.int64) if path.is_file() else None

    def onsets(self, piece_id: str) -> np.ndarray:
        with np.load(self.piece_dir(piece_id) / "performances.npz") as z:
            return z["onsets"]

    def spectrogram(self, piece_id: str, perf: int = 0, mmap: bool = True) -> np.ndarray:
        return np.load(self.piece_dir(piece_id) / f"perf_{perf}.npy", mmap_mode="r" if mmap else None)

    def page(self, piece_id: str, page: int) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.open(self.piece_dir(piece_id) / f"page_{page + 1}.png").convert("L"))
