"""A collection's items embedded again with another snippet model, without reading the files.

A collection stores, beside each item's embeddings, what its front end made of the file: the
unrolled strip of a score (uint8, with the geometry back to the pages) and the spectrogram of a
recording (float16). When a new model ships, or to compare models on the same material, those are
cut into snippets again (``frontend.strip.sheet_snippets``, ``frontend.audio.audio_snippets``,
with the source collection's hops) and embedded with the new model into a *new* collection; the
source is never changed. The copy records the source's front end
(``retrieval.store.front_end_version``): its strips and spectrograms are the ones that code made,
not necessarily what today's would make. Reading pages
is most of the cost of indexing scans (staff detection, deskew): the 874 scanned pages of
``benchmarks/real_dev`` took 28 minutes to index and about 8 to re-embed on the same shared cores.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from audiosheet.retrieval.collection import Collection
from audiosheet.retrieval.store import COMMIT_EVERY_S, FRONT_END, CollectionError


def _snippets(arrays: dict, kind: str, settings: dict, context: int) -> np.ndarray:
    """The snippets of one stored item, as its front end cut them when it was indexed."""
    if kind == "sheet":
        from audiosheet.frontend.strip import Strip, sheet_snippets

        strip = Strip(arrays["strip"], arrays["boxes"], arrays["offsets"], arrays["lefts"],
                      arrays["tops"], arrays["scales"], arrays["angles"], arrays["sizes"])
        snippets, loc = sheet_snippets(strip, hop=settings["sheet_hop"])
        if not np.array_equal(loc.column, arrays["column"]):
            raise CollectionError("its stored strip gives other snippet columns than stored")
        return snippets
    from audiosheet.frontend.audio import audio_snippets

    snippets, centres = audio_snippets(arrays["spec"].astype(np.float32), context, settings["audio_hop"])
    if not np.array_equal(centres, arrays["frame"]):
        raise CollectionError("its stored spectrogram gives other snippet frames than stored")
    return snippets


def reembed(source: str | Path, out: str | Path, model: str | None = None,
            progress: bool = True) -> dict:
    """Copy collection ``source`` into a new collection ``out`` whose embeddings are ``model``'s
    (default: the shipped model). Items keep their names, paths, hashes and info; a passage model
    of the source is added to ``out`` too. Returns {"items", "seconds", "failed": [(name, reason)]}.

    Raises ``CollectionError`` when ``out`` already holds items or the models' front ends differ
    (another hop or snippet shape cannot be cut from what is stored). An item that cannot be
    re-embedded (a damaged file) is reported in ``failed`` and left out; the others are copied.
    """
    from tqdm import tqdm

    t0 = time.time()
    src = Collection(source, create=False)
    dst = Collection(out, model=model)
    if len(dst):
        raise CollectionError(f"{out}: already holds {len(dst)} items; re-embed into a new folder")
    for key in ("sheet_hop", "audio_hop"):
        if src.settings[key] != dst.settings[key]:
            raise CollectionError(f"{out}: {key} {dst.settings[key]} differs from {source}'s "
                                  f"{src.settings[key]}")
    new_cfg = dst.embedder.config
    old_cfg = src.settings["model_config"]
    if list(old_cfg.get("sheet_shape", new_cfg.sheet_shape)) != list(new_cfg.sheet_shape):
        raise CollectionError(f"{model}: sheet snippets of {new_cfg.sheet_shape}, the collection's "
                              f"are {old_cfg.get('sheet_shape')}")
    items = src.items()
    failed: list[tuple[str, str]] = []
    with dst.writing():
        with dst.db:  # the strips and spectrograms are the source's: so is their front end
            dst.set_setting("front_end", src.settings.get("front_end"))
            dst.set_setting("front_end_settings", src.front_end_settings.to_dict())
        dst._export_query_model()
        pending, last = [], time.time()
        for it in tqdm(items, desc="re-embed", unit="item", disable=not progress, file=sys.stderr):
            try:
                with np.load(src.root / "items" / f"{it.sha256}.npz") as z:
                    arrays = {k: z[k] for k in z.files}
                snippets = _snippets(arrays, it.kind, src.settings, new_cfg.context)
                if it.kind == "sheet":
                    emb = dst.embedder.sheet(snippets)
                else:  # as ``embed_file`` embeds a recording: attention shared by its snippets
                    emb = dst.embedder.audio_sequence(arrays["spec"].astype(np.float32),
                                                      src.settings["audio_hop"], snippets)
                arrays["emb"] = emb.astype(np.float16)
                item = dst.store_item(it.kind, it.name, it.path, it.sha256, arrays, it.info, it.added)
            except Exception as exc:  # one item's failure; the others go on
                failed.append((it.name, f"{it.name}: {exc}"))
                continue
            pending.append((item, {k: v for k, v in arrays.items() if k not in FRONT_END}))
            if time.time() - last > COMMIT_EVERY_S:
                dst.commit(pending)
                pending, last = [], time.time()
        if pending:
            dst.commit(pending)
    if src.settings.get("passage_model"):
        dst.add_passage_model(src.settings["passage_model"], progress=progress)
    return {"items": len(dst), "seconds": round(time.time() - t0, 1), "failed": failed}
