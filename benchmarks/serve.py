"""The web server under load (issue 18): warm end-to-end query time, concurrent requests, memory.

    python benchmarks/serve.py --files EXPORT --db DIR [--pieces 1000] [--queries 20]
        [--concurrent 20] [--memory 200] [--port 8765] [--json OUT] [--screenshot PNG]

EXPORT is a corpus export (``audiosheet corpus export CORPUS --split test --out EXPORT``:
sheets/PIECE.pdf, audio/PIECE.flac). The PDFs are indexed into --db with the shipped model and
synthetic filler items are added until it holds --pieces pieces (``benchmarks/identify.py``'s
filler: random stretches of real embeddings, rotated and noised). Then ``audiosheet serve`` runs
in its own process and, over HTTP on localhost:

1. warm queries: --queries uploads of a 30-s WAV excerpt (seeded random start) of a real piece's
   recording, one at a time, after two warm-up queries; end-to-end seconds per query as the client
   sees them (upload, decode, spectrogram, embedding, search, DTW, alignment path, JSON), median
   and p90, and top-1;
2. concurrency: --concurrent of those requests sent again at once from as many threads: all
   answered, each with the top piece it got when sent alone (and how many are the right piece);
3. memory: the server process's resident memory (VmRSS) after 10 and after --memory queries.

--screenshot also drives the page in headless chromium (selenium) for a picture of a query.
Figures only, never asserted (issue 18: median <= 0.35 s at 1,000 pieces, 20 concurrent answered
correctly, memory after 200 queries within 10 % of after 10).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from identify import add_filler  # noqa: E402  (benchmarks/identify.py: the filler items)

from audiosheet.retrieval.collection import Collection  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def excerpts(files: Path, n: int, seconds: float, rng, out: Path) -> list[tuple[Path, str]]:
    """``n`` WAV excerpts of ``seconds`` from real recordings: (path, piece)."""
    import soundfile as sf

    audio = sorted((files / "audio").glob("*.flac"))
    made = []
    for k in range(n):
        src = audio[rng.integers(len(audio))]
        info = sf.info(str(src))
        start = float(rng.uniform(0, max(info.duration - seconds, 0)))
        data, sr = sf.read(str(src), start=int(start * info.samplerate),
                           frames=int(seconds * info.samplerate), dtype="float32")
        path = out / f"q{k:03d}.wav"
        sf.write(str(path), data, sr, subtype="PCM_16")
        made.append((path, src.stem))
    return made


def post(client, url: str, path: Path) -> tuple[float, dict, int]:
    t = time.perf_counter()
    with open(path, "rb") as f:
        r = client.post(url + "/api/identify", files={"file": (path.name, f, "audio/wav")}, timeout=300)
    return time.perf_counter() - t, r.json(), r.status_code


def screenshot(url: str, query: Path, out: Path, at: float) -> None:
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get(url + "/")
        WebDriverWait(d, 30).until(lambda d: "items" in d.find_element(By.ID, "status").text)
        d.find_element(By.ID, "file").send_keys(str(query))
        WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"))
        WebDriverWait(d, 30).until(lambda d: d.execute_script(
            "const i = document.getElementById('pageimg'); return i.complete && i.naturalWidth > 0"))
        d.execute_script("const a = document.getElementById('player'); a.currentTime = arguments[0];"
                         "a.dispatchEvent(new Event('timeupdate'))", at)
        time.sleep(0.5)
        d.save_screenshot(str(out))
    finally:
        d.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=Path, required=True)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--pieces", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--memory", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--screenshot", type=Path)
    a = ap.parse_args()
    import httpx

    rng = np.random.default_rng(a.seed)
    if not (a.db / "collection.sqlite").is_file():
        Collection(a.db).add([a.files / "sheets"], progress=True)
    coll = Collection(a.db)
    added = add_filler(coll, a.pieces, rng)
    pieces = len(coll.items("sheet"))
    coll.close()
    port = a.port or socket.create_server(("127.0.0.1", 0)).getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "audiosheet.cli", "serve", "--db", str(a.db), "--port", str(port)],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    out = {"pieces": pieces, "filler_added": added}
    try:
        with httpx.Client() as client, tempfile.TemporaryDirectory() as tmp:
            for _ in range(600):
                try:
                    if client.get(url + "/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            n_total = a.queries + 2 + a.concurrent + max(a.memory - a.queries - 2, 0)
            qs = excerpts(a.files, min(n_total, 60), a.seconds, rng, Path(tmp))
            for q, _ in qs[:2]:
                post(client, url, q)  # warm-up: first requests, page cache, allocator
            times, right, rss10, inside, answered_alone = [], 0, None, [], []
            for q, piece in qs[2:2 + a.queries]:
                dt, res, code = post(client, url, q)
                times.append(dt)
                inside.append(res.get("latency_s", float("nan")))
                right += code == 200 and bool(res["results"]) and res["results"][0]["piece"] == piece
                answered_alone.append((q, res["results"][0]["piece"] if code == 200 and res["results"] else None))
                if len(times) + 2 == 10:
                    rss10 = rss_mb(proc.pid)
            out.update(queries=len(times), median_s=round(float(np.median(times)), 3),
                       p90_s=round(float(np.percentile(times, 90)), 3), top1=round(right / len(times), 3),
                       identify_median_s=round(float(np.median(inside)), 3))
            done = a.queries + 2
            rss10 = rss10 or rss_mb(proc.pid)
            batch = [qs[2 + k % a.queries] for k in range(a.concurrent)]  # answered alone above
            alone = {q.name: r for q, r in answered_alone}
            t = time.perf_counter()
            with ThreadPoolExecutor(a.concurrent) as ex:
                answers = list(ex.map(lambda qp: post(client, url, qp[0]) + (qp[1],), batch))
            out.update(concurrent=a.concurrent, concurrent_wall_s=round(time.perf_counter() - t, 2),
                       concurrent_answered=sum(c == 200 for _, _, c, _ in answers),
                       concurrent_right=sum(c == 200 and r["results"][0]["piece"] == p for _, r, c, p in answers),
                       concurrent_same_as_alone=sum(c == 200 and r["results"][0]["piece"] == alone.get(q.name)
                                                    for (_, r, c, _), (q, _) in zip(answers, batch)))
            done += a.concurrent
            k = 0
            while done < a.memory:
                post(client, url, qs[k % len(qs)][0])
                done, k = done + 1, k + 1
            out.update(rss_mb_after_10=round(rss10, 1), rss_mb_after_n=round(rss_mb(proc.pid), 1),
                       memory_queries=done)
            out["rss_growth"] = round(out["rss_mb_after_n"] / out["rss_mb_after_10"] - 1, 3)
            if a.screenshot:
                screenshot(url, qs[2][0], a.screenshot, at=8.0)
                out["screenshot"] = str(a.screenshot)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
