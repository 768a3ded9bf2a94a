"""Files: which kinds audiosheet reads (sheet music, recordings), hashing, and atomic writes.

One home for the accepted suffixes (``index add``, queries and ``pretrain`` all read them from
here) and for writing a file so that a reader never sees it half-written: every write goes to a
hidden temporary file in the same folder and is moved into place with ``os.replace`` only when it
is complete; a failure (or a kill) leaves the previous file as it was.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

SHEET_SUFFIXES = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
# recordings: what libsndfile reads, and what FFmpeg (PyAV) commonly decodes, including the sound
# of video files (audiosheet.frontend.audio); .ts is left out (TypeScript sources far outnumber MPEG-TS)
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".spx", ".mp3", ".mp2",
                            ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64", ".rf64", ".caf",
                            ".m4a", ".m4b", ".aac", ".wma", ".ac3", ".eac3", ".dts", ".ape", ".wv", ".tta",
                            ".mpc", ".amr", ".mka", ".weba",
                            ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg",
                            ".3gp"})
KINDS = ("sheet", "audio")


def file_kind(path: str | Path) -> str | None:
    """``"sheet"``, ``"audio"`` or None (not a file kind audiosheet reads), from the suffix."""
    s = Path(path).suffix.lower()
    return "sheet" if s in SHEET_SUFFIXES else "audio" if s in AUDIO_SUFFIXES else None


def expand(paths: Iterable[str | Path], skipped: list | None = None
           ) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to read from files and folders (recursive, sorted), and (path, reason) for arguments
    that are neither an existing file nor a folder.

    In a folder, files whose suffix is neither sheet music (``SHEET_SUFFIXES``) nor audio
    (``AUDIO_SUFFIXES``) are not returned and not failures: each is appended to ``skipped`` as
    (path, "{path}: not sheet music or audio (suffix '.txt'), skipped"), for the caller to list.
    Hidden files and folders (name starting with '.') are passed over without a word. A file named
    on its own is always returned (an unknown suffix then fails where it is read).
    """
    files, bad = [], []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if file_kind(f):
                    files.append(f)
                elif skipped is not None:
                    skipped.append((str(f), f"{f}: not sheet music or audio "
                                            f"(suffix '{f.suffix or '(none)'}'), skipped"))
        elif p.is_file():
            files.append(p)
        else:
            bad.append((str(p), f"{p}: no such file or folder"))
    return files, bad


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` when the block ends
    without an exception, removed otherwise.

    ``suffix`` is added to the temporary name for writers that choose the format by suffix
    (``np.save`` adds ``.npy``, soundfile reads ``.flac``). The file gets the usual mode
    (0666 & ~umask) even where the writer made it owner-only.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int | None = 1, sort_keys: bool = False,
               ensure_ascii: bool = True) -> None:
    """Write ``obj`` as JSON (and a final newline) to ``path`` atomically; ``indent``,
    ``sort_keys`` and ``ensure_ascii`` as ``json.dumps`` takes them."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n")


def save_npz(path: str | Path, compressed: bool = True, **arrays) -> None:
    """``np.savez(_compressed)`` of ``arrays`` to ``path`` atomically."""
    import numpy as np

    with atomic_path(path, ".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)


def save_npy(path: str | Path, array) -> None:
    """``np.save`` of ``array`` to ``path`` atomically."""
    import numpy as np

    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy the bytes of ``src`` to ``dst`` atomically (``shutil.copyfile``: no metadata)."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` (``.NAME.tmp``, emptied first if a killed run left
    it) to fill; when the block ends without an exception it replaces ``path`` (a folder already
    there is removed first), otherwise it is removed."""
    import shutil

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
