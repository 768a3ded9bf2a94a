"""``audiosheet serve`` (issue 18): the JSON API through FastAPI's test client — the right piece
for an excerpt with its alignment path, 400 on a corrupt file, 413 on an oversized one, the items
and their page images, health, and that no request path reaches the file system."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install 'audiosheet[serve]')")
pytest.importorskip("starlette.testclient", reason="FastAPI's test client needs httpx2 (or httpx)")

from fastapi.testclient import TestClient  # noqa: E402

from audiosheet.cli import main  # noqa: E402
from audiosheet.retrieval.collection import Collection  # noqa: E402
from audiosheet.server.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def db(files, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serve") / "db"
    rep = Collection(d).add([files / "sheets"], progress=False)
    assert len(rep.added) == 4 and not rep.failed
    return d


@pytest.fixture(scope="module")
def client(db):
    with TestClient(create_app(db)) as c:
        yield c


def test_start_up_traces_the_query_graphs(client):
    """The first query pays no tracing: the server ran the model's graphs at start-up."""
    emb = client.app.state.collection.query_embedder
    assert {"audio_net", "attention_features", "sheet"} <= set(emb._traced)


def _post(client, path: Path, name: str | None = None, **form):
    with open(path, "rb") as f:
        return client.post("/api/identify", files={"file": (name or path.name, f)},
                           data={k: str(v) for k, v in form.items()})


def test_identify_answers_the_cli_json_plus_the_alignment(client, db, files, capsys):
    sheets = sorted((files / "sheets").glob("*.pdf"))
    query = files / "audio" / f"{sheets[2].stem}.flac"
    r = _post(client, query, start=0, end=12)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["results"][0]["piece"] == sheets[2].stem
    assert main(["identify", "--db", str(db), str(query), "--json", "--start", "0", "--end", "12"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(got) == set(cli) | {"alignment"}
    for k in ("method", "confident", "match", "query_kind", "query_info"):
        assert got[k] == cli[k], k
    assert [m["piece"] for m in got["results"]] == [m["piece"] for m in cli["results"]]
    assert got["query"] == query.name  # the upload's name, never the server's temporary file
    path = got["alignment"]
    assert len(path) > 10 and path[0]["t"] == pytest.approx(0.0) and path[-1]["t"] <= 12.0
    t = np.array([p["t"] for p in path])
    assert np.all(np.diff(t) > 0)
    box = got["results"][0]["location"]["spans"][0]
    for p in path:  # every point lies on a system of the matched page
        assert p["page"] >= 1 and p["y0"] < p["y1"] and 0 <= p["x"] <= p["page_size"][0]
    first = path[0]
    assert first["page"] == box["page"] and box["box"][0] - 1 <= first["x"] <= box["box"][2] + 1


def test_a_page_query_finds_nothing_to_match_and_says_so(client, files):
    page = sorted((files / "sheets").glob("*.pdf"))[0]
    r = _post(client, page)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert f"has no recordings to match {page.name}" in detail and "query.pdf" not in detail


@pytest.mark.parametrize("name,data,reason", [
    ("corrupt.flac", b"fLaC" + bytes(300), "not a readable audio file"),
    ("notes.flac", b"hello\n", "not a readable audio file"),
    ("page.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "page.png"),
    ("notes.txt", b"hello", "not a sheet-music or audio file"),
    ("noname", b"hello", "not a sheet-music or audio file"),
    ("../../etc/passwd.flac", b"hello", "passwd.flac: not a readable audio file"),
    ("empty.wav", b"", "empty file"),
])
def test_bad_uploads_are_a_400_with_one_line(client, tmp_path, name, data, reason):
    r = client.post("/api/identify", files={"file": (name, data)})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert reason in detail and "\n" not in detail and "audiosheet-upload" not in detail
    assert not list(Path("/tmp").glob("audiosheet-upload-*/query*"))  # nothing left behind


def test_bad_options_are_a_400(client, files):
    q = next((files / "audio").glob("*.flac"))
    assert _post(client, q, method="best").status_code == 400
    assert _post(client, q, top=0).status_code == 400


def test_oversized_upload_is_a_413(db, files):
    with TestClient(create_app(db, max_upload=100_000, warm=False)) as small:
        q = next((files / "audio").glob("*.flac"))
        assert q.stat().st_size > 200_000
        r = _post(small, q)
        assert r.status_code == 413 and "too large" in r.json()["detail"]
        ok = small.post("/api/identify", files={"file": ("x.flac", b"hello")})
        assert ok.status_code == 400  # small uploads still go through


def test_items_pages_and_health(client, files):
    items = client.get("/api/items").json()
    assert sorted(i["name"] for i in items) == sorted(p.stem for p in (files / "sheets").glob("*.pdf"))
    one = items[0]
    r = client.get(f"/api/items/{one['id']}/pages/1.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    from PIL import Image
    import io

    from audiosheet.frontend.pages import load_pages

    w, h = Image.open(io.BytesIO(r.content)).size
    page = load_pages(next(i for i in Collection(client.app.state.collection.root).items() if i.id == one["id"]).path)[0]
    assert (h, w) == page.shape  # the page as read: the coordinate system of every location
    assert client.get(f"/api/items/{one['id']}/pages/{one['pages'] + 1}.png").status_code == 404
    assert client.get("/api/items/9999/pages/1.png").status_code == 404
    assert client.get("/api/items/..%2F..%2Fetc/pages/1.png").status_code in (404, 422)
    assert client.app.state.collection.item(one["id"]).name == one["name"]
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["items"] == len(items)
    assert client.get("/openapi.json").json()["paths"]["/api/identify"]["post"]
    assert "<title>audiosheet</title>" in client.get("/").text
    assert "follow" in client.get("/static/app.js").text


def test_health_answers_while_a_query_runs(client, files):
    q = files / "audio" / f"{sorted((files / 'sheets').glob('*.pdf'))[1].stem}.flac"
    done = {}

    def query():
        done["status"] = _post(client, q).status_code

    t = threading.Thread(target=query)
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    assert client.get("/api/health").status_code == 200
    waited = time.perf_counter() - t0
    t.join()
    assert done["status"] == 200
    assert waited < 5.0  # health does not wait for the query's lock


def test_the_collection_grows_under_a_running_server(files, tmp_path):
    sheets = sorted((files / "sheets").glob("*.pdf"))
    d = tmp_path / "db"
    Collection(d).add(sheets[:2], progress=False)
    with TestClient(create_app(d, warm=False)) as c:
        assert c.get("/api/health").json()["items"] == 2
        Collection(d).add(sheets[2:], progress=False)  # another process's index add
        assert c.get("/api/health").json()["items"] == 4
        q = files / "audio" / f"{sheets[3].stem}.flac"
        assert _post(c, q, end=10).json()["results"][0]["piece"] == sheets[3].stem


def test_a_long_recording_is_aligned_segment_by_segment(db, files):
    from audiosheet.retrieval.identify import identify

    piece = sorted((files / "sheets").glob("*.pdf"))[1].stem
    coll = Collection(db, create=False)
    res = identify(coll, files / "audio" / f"{piece}.flac", segment_over=4.0, segment_s=4.0, align=True)
    assert len(res.segments) >= 2
    t = [p["t"] for p in res.alignment]
    assert len(t) > 10 and all(b > a for a, b in zip(t, t[1:]))
    assert identify(coll, files / "audio" / f"{piece}.flac").alignment is None  # only when asked


def test_alignment_points_are_the_passage_locations(db):
    """``snippet_points`` (all of a path's snippets at once) gives, for every snippet of every
    indexed score, exactly what ``sheet_location`` gives for that one snippet."""
    from audiosheet.retrieval.identify import sheet_location, snippet_points

    coll = Collection(db, create=False)
    for item in coll.items("sheet"):
        d = coll.data(item)
        js = np.arange(len(d["emb"]))
        for j, p in zip(js, snippet_points(d, js)):
            span = sheet_location(d, int(j), int(j))["spans"][0]
            assert p == {"page": span["page"], "system": span["system"], "x": span["x0"], "y0": span["box"][1],
                         "y1": span["box"][3], "page_size": span["page_size"]}
