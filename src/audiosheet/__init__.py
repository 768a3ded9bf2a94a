"""audiosheet: link music recordings with sheet music.

    from audiosheet import Collection
    coll = Collection("my-collection")          # a folder; created on first use
    coll.add(["scores/", "recordings/"])         # PDFs, scans, WAV/FLAC/OGG/MP3
    result = coll.identify("excerpt.mp3", method="dtw")
    result.results[0].piece, result.results[0].location

The stages, each a subpackage: ``frontend`` (files → strips and spectrograms → snippets),
``corpus`` (building training corpora from symbolic scores; no torch), ``models`` (the snippet and
passage models, checkpoints, ``embed_file``: file → embeddings), ``retrieval`` (the collection,
matching and identification) and ``training``; ``geometry`` names every front-end number once.
"""

__version__ = "0.1.0"

__all__ = ["Collection", "Identification", "Match", "load_model", "embed_file", "FrontEnd", "__version__"]

_LAZY = {  # heavy imports (torch, faiss) only when the API is used
    "Collection": "audiosheet.retrieval.collection",
    "Identification": "audiosheet.retrieval.identify",
    "Match": "audiosheet.retrieval.identify",
    "load_model": "audiosheet.models.checkpoint",
    "embed_file": "audiosheet.models.embed_file",
    "FrontEnd": "audiosheet.geometry",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiosheet' has no attribute {name!r}")
