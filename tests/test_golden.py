"""Golden test of the shipped models (issue 17 item 7): what the front end and the models make of
a small bundled page and clip, against numbers stored in tests/data/golden/expected.json.

The page (an engraved grand staff, two systems, A4 at 100 dpi) and the clip (4 s of synthesised
piano-like tones, the page's first two bars) are made by ``scripts/golden.py --inputs`` (seeded)
and bundled: the test never remakes them, so it sees one fixed input on every machine. They are
read as ``audiosheet index add`` reads a file (``Collection._ingest``: ``embed_file`` with the
collection's front end, hops and model, all taken from a freshly made collection's settings; the
model run in float32, see TOLERANCE), so any change to a front-end step that alters what a model
sees (page analysis, staff-space normalisation, strip cutting, snippet hops, decoding, level
normalisation, the spectrogram) moves the stored statistics or embeddings and fails here.

After a *deliberate* change of the front end or of a shipped model, rewrite the expected values
with ``python scripts/golden.py --write`` and say so in the commit message.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Every audiosheet import of this test and of scripts/golden.py, in one place (modules move).
from audiosheet.models.checkpoint import load_model, resolve_model
from audiosheet.models.embed import Embedder
from audiosheet.models.embed_file import embed_file
from audiosheet.models.passage_embed import PassageEmbedder
from audiosheet.retrieval.collection import DEFAULT_PASSAGE_MODEL, Collection

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
PAGE, CLIP, EXPECTED = GOLDEN / "page.png", GOLDEN / "clip.flac", GOLDEN / "expected.json"
REGENERATE = ("if the change is deliberate, rewrite the expected values with "
              "'python scripts/golden.py --write' and say so in the commit message")

ROWS, DIMS = 3, 4  # embeddings stored: the first DIMS dimensions of ROWS snippets spread over the file

# Tolerances (absolute), by the name of the stored number; measured on the bundled files.
# * Embeddings are golden in float32 without tracing (``Embedder(bf16=False, jit=False)``): float32
#   results differ between CPUs only by summation order (oneDNN/BLAS kernels per instruction set);
#   with ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY from SSE4.1 to AMX, and 1 or 2 threads, no
#   stored number moved by more than its last decimal (1e-5). The default path (bf16 autocast,
#   traced graphs) differs from float32 by up to 0.022 in single dimensions (0.003 on the stored
#   numbers), and differently with and without native bf16, so bf16 numbers cannot be golden at
#   a tolerance that still sees small front-end changes. 1e-3 is 100x the float32 noise; a page
#   shifted by 1 px moves stored dimensions by up to 0.034, +1 % staff space 0.1, a Hamming
#   instead of a Hann window 0.008, a level target 1 dB higher 0.008, a clip 5 ms later 0.008.
# * Front-end statistics come from deterministic numpy/scipy code on fixed inputs (uint8 strip,
#   float32 spectrogram): their tolerances allow float rounding (a few pixels one level off, ~1e-7
#   in a spectrogram mean) but catch what the embeddings barely see: rounding the 2 x 2 strip mean
#   down instead of to nearest moves the strip mean by 0.11 and the sheet embeddings by only 0.0014.
# * The default path itself (what a collection runs) is checked against the same float32 numbers
#   within DEFAULT_PATH_ATOL: 10x the largest bf16 difference measured on them.
TOLERANCE = {
    "strip_mean": 2e-3, "strip_std": 2e-3,  # strip pixels, 0..255
    "snippet_mean": 1e-5, "snippet_std": 1e-5,  # sheet snippets, ink 0..1; audio snippets, log magnitude
    "spec_mean": 1e-5, "spec_std": 1e-5,  # log spectrogram
    "staff_space": 1e-3,  # px on the page
    "level_dbfs": 0.011, "gain_db": 0.011,  # dB, stored with 2 decimals by the front end
    "first_dims": 1e-3, "mean": 1e-3,  # embeddings
}
DEFAULT_PATH_ATOL = 0.03


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _r(x, n: int = 6):
    return np.round(np.asarray(x, np.float64), n).tolist()


def _stats(x) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return round(float(x.mean()), 6), round(float(x.std()), 6)


def rows_of(n: int) -> list[int]:
    """ROWS snippet indices spread over n snippets: first, middle(s), last."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, ROWS)}) if n else []


def _embeddings(emb: np.ndarray) -> dict:
    rows = rows_of(len(emb))
    return {"count": len(emb), "rows": rows, "first_dims": _r(emb[rows, :DIMS], 5),
            "mean": _r(emb.mean(0), 5)}


def collection_settings() -> dict:
    """What ``index add`` of a new default collection reads files with: model, hops, front end."""
    with tempfile.TemporaryDirectory() as tmp:
        coll = Collection(Path(tmp) / "c")
        return {"model": coll.model_name, "sheet_hop": int(coll.settings["sheet_hop"]),
                "audio_hop": int(coll.settings["audio_hop"]), "front_end": coll.front_end_settings}


def ingest(page: Path = PAGE, clip: Path = CLIP):
    """(settings, sheet FileEmbeddings, audio FileEmbeddings) of the page and the clip, as
    ``Collection._ingest`` makes them, but embedded in float32 without tracing (see TOLERANCE)."""
    s = collection_settings()
    emb = Embedder(load_model(s["model"]), bf16=False, jit=False)
    sheet = embed_file(page, emb, "sheet", s["front_end"], s["sheet_hop"])
    audio = embed_file(clip, emb, "audio", s["front_end"], s["audio_hop"])
    return s, sheet, audio


def measure(page: Path = PAGE, clip: Path = CLIP, passages: bool = True) -> dict:
    """The golden numbers of a page and a clip (what expected.json holds)."""
    return numbers(*ingest(page, clip), page, clip, passages)


def numbers(s: dict, sheet, audio, page: Path = PAGE, clip: Path = CLIP, passages: bool = True) -> dict:
    """The golden numbers of ``ingest``'s output."""
    ing = sheet.ingest
    out = {
        "inputs": {"page.png": sha256(page), "clip.flac": sha256(clip)},
        "settings": {"model": s["model"], "sheet_hop": s["sheet_hop"], "audio_hop": s["audio_hop"],
                     "front_end": s["front_end"].to_dict()},
        "sheet": {"pages": ing.n_pages, "systems": len(ing.strip.boxes),
                  "staves": [len(sy.staves) for sy in ing.systems],
                  "staff_space": _r([lay.staff_space for lay in ing.layouts], 4),
                  "strip_shape": list(ing.strip.image.shape),
                  "offsets": [int(o) for o in ing.strip.offsets],
                  **dict(zip(("strip_mean", "strip_std"), _stats(ing.strip.image))),
                  "snippets": len(ing.snippets),
                  **dict(zip(("snippet_mean", "snippet_std"), _stats(ing.snippets)))},
        "audio": {"seconds": round(float(audio.ingest.seconds), 4), "fps": float(audio.ingest.fps),
                  "level_dbfs": audio.ingest.info["level_dbfs"], "gain_db": audio.ingest.info["gain_db"],
                  "spec_shape": list(audio.ingest.spec.shape),
                  **dict(zip(("spec_mean", "spec_std"), _stats(audio.ingest.spec))),
                  "snippets": len(audio.ingest.snippets),
                  "snippet_shape": list(audio.ingest.snippets.shape[1:]),
                  **dict(zip(("snippet_mean", "snippet_std"), _stats(audio.ingest.snippets)))},
        "snippet_embeddings": {"model": s["model"], "sha256": sha256(resolve_model(s["model"])),
                               "sheet": _embeddings(sheet.emb), "audio": _embeddings(audio.emb)},
    }
    if passages:
        out["passage_embeddings"] = measure_passages(sheet, audio)
    return out


def measure_passages(sheet, audio, name: str = DEFAULT_PASSAGE_MODEL) -> dict:
    """Passage embeddings from the stored front-end arrays, as ``Collection._write_passages``
    makes them (the spectrogram goes through float16 as in the collection), in float32."""
    pe = PassageEmbedder(name, bf16=False)
    sa, aa = sheet.arrays(), audio.arrays()
    e_sheet = pe.sheet(sa["strip"], sa["offsets"])[0]
    e_audio = pe.audio(aa["spec"].astype(np.float32))[0]
    return {"model": name, "sha256": sha256(resolve_model(name)),
            "sheet": _embeddings(e_sheet), "audio": _embeddings(e_audio)}


def differences(expected, got, path: str = "") -> list[str]:
    """One line per stored number that differs beyond its tolerance (exact for everything but
    floats: counts, shapes, names, hashes)."""
    key = path.rsplit(".", 1)[-1]
    if isinstance(expected, dict) and isinstance(got, dict):
        out = [f"{path}.{k}: missing" for k in expected if k not in got]
        out += [f"{path}.{k}: new" for k in got if k not in expected]
        for k in expected:
            if k in got:
                out += differences(expected[k], got[k], f"{path}.{k}" if path else k)
        return out
    if key in TOLERANCE:
        e, g = np.asarray(expected, np.float64), np.asarray(got, np.float64)
        if e.shape != g.shape:
            return [f"{path}: shape {list(e.shape)} -> {list(g.shape)}"]
        bad = np.abs(e - g) > TOLERANCE[key]
        if bad.any():
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(e - g)), e.shape))
            return [(f"{path}: {int(bad.sum())} of {e.size} values off by more than {TOLERANCE[key]:g} "
                     f"(worst{list(worst) if worst else ''}: {e[worst]:.6g} -> {g[worst]:.6g})")]
        return []
    return [] if expected == got else [f"{path}: {expected} -> {got}"]


def report(lines: list[str], what: str) -> str:
    return (f"{what} changed since tests/data/golden/expected.json was written:\n  "
            + "\n  ".join(lines) + f"\n{REGENERATE}")


# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(EXPECTED.read_text())


@pytest.fixture(scope="module")
def ingested() -> tuple:
    return ingest()


@pytest.fixture(scope="module")
def golden(ingested) -> dict:
    return numbers(*ingested)


def test_golden_inputs_are_the_bundled_ones(expected):
    got = {"page.png": sha256(PAGE), "clip.flac": sha256(CLIP)}
    assert got == expected["inputs"], (
        "tests/data/golden/page.png or clip.flac is not the file expected.json was made from; "
        "make both with 'python scripts/golden.py --inputs' (which also rewrites expected.json)")
    assert PAGE.stat().st_size + CLIP.stat().st_size < 200_000


@pytest.mark.parametrize("section", ["settings", "sheet", "audio"])
def test_front_end_matches_golden(expected, golden, section):
    """What the front end makes of the page and the clip: settings, systems, strip, spectrogram,
    snippet counts and statistics."""
    lines = differences(expected[section], golden[section], section)
    assert not lines, report(lines, f"the front end's {section} output")


@pytest.mark.parametrize("section", ["snippet_embeddings", "passage_embeddings"])
def test_embeddings_match_golden(expected, golden, section):
    """The shipped models' embeddings of the page and the clip (float32)."""
    lines = differences(expected[section], golden[section], section)
    assert not lines, report(lines, f"what the shipped models make of the golden page and clip ({section})")


def test_default_precision_path_is_close_to_golden(expected, ingested):
    """The embedder a collection really runs (``Embedder(model)``: bf16 autocast, traced graphs),
    given the same snippets, stays within bf16's error of the float32 golden numbers."""
    s, sheet, audio = ingested
    embedder = Embedder(load_model(s["model"]))
    for kind, emb in (("sheet", embedder.sheet(sheet.ingest.snippets)),
                      ("audio", embedder.audio(audio.ingest.snippets))):
        want = expected["snippet_embeddings"][kind]
        what = "the default embedding path's output"
        assert len(emb) == want["count"], report([f"{kind}: {want['count']} -> {len(emb)} snippets"], what)
        got = {"first_dims": emb[want["rows"], :DIMS], "mean": emb.mean(0)}
        for k, v in got.items():
            err = float(np.abs(np.asarray(want[k]) - v).max())
            assert err < DEFAULT_PATH_ATOL, report(
                [f"{kind} {k}: off by {err:.4f} (bf16 allows {DEFAULT_PATH_ATOL})"], what)
