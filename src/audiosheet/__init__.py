"""audiosheet: link music recordings with sheet music.

    from audiosheet import Collection
    coll = Collection("my-collection")          # a folder; created on first use
    coll.add(["scores/", "recordings/"])         # PDFs, scans, WAV/FLAC/OGG/MP3
    result = coll.identify("excerpt.mp3", method="dtw")
    result.results[0].piece, result.results[0].location
"""

__version__ = "0.1.0"

__all__ = ["Collection", "Identification", "Match", "__version__"]


def __getattr__(name):  # heavy imports (torch, faiss) only when the API is used
    if name == "Collection":
        from .index import Collection

        return Collection
    if name in ("Identification", "Match"):
        from . import identify

        return getattr(identify, name)
    raise AttributeError(f"module 'audiosheet' has no attribute {name!r}")
