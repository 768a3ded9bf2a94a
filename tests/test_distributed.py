"""Ingestion on Ray workers (issue 19, item 3): the same items and embeddings as one process, a bad
file reported as its one-line failure, a worker that dies replaced. Skipped where Ray is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiosheet.cli import main
from audiosheet.retrieval.collection import Collection

GOLDEN = Path(__file__).parent / "data" / "golden"
NO_RAY = "Ray is not installed (the optional extra: pip install 'audiosheet[distributed]')"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Two score pages, two recordings and a corrupt recording between them."""
    import soundfile as sf
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    page = Image.open(GOLDEN / "page.png")
    page.save(d / "page.png")
    page.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "mirrored.png")  # other content, same staves
    audio, sr = sf.read(GOLDEN / "clip.flac", dtype="float32")
    sf.write(d / "clip.flac", audio, sr)
    sf.write(d / "later.wav", audio[len(audio) // 3:], sr)
    (d / "corrupt.flac").write_bytes(b"fLaC\x00\x00\x00\x22" + bytes(range(256)) * 4)
    return [d / "page.png", d / "clip.flac", d / "corrupt.flac", d / "mirrored.png", d / "later.wav"]


def _same(a: Collection, b: Collection) -> None:
    ia, ib = a.items(), b.items()
    def key(i):
        return i.name, i.kind, i.sha256, i.n, i.info

    assert [key(i) for i in ia] == [key(i) for i in ib]
    for x, y in zip(ia, ib):
        dx, dy = a.data(x), b.data(y)
        assert sorted(dx) == sorted(dy)
        for k in dx:  # bit for bit: torch on one thread per worker sums as on two here
            np.testing.assert_array_equal(dx[k], dy[k], err_msg=f"{x.name}: {k}")
        fx, fy = a.front_end_data(x), b.front_end_data(y)
        for k in fx:
            np.testing.assert_array_equal(fx[k], fy[k], err_msg=f"{x.name}: {k}")


def test_ray_cli_gives_the_same_collection_as_one_process(inputs, tmp_path, capsys):
    pytest.importorskip("ray", reason=NO_RAY)
    local = Collection(tmp_path / "local")
    rep = local.add(inputs, progress=False)
    assert [i.name for i in rep.added] == ["page", "clip", "mirrored", "later"]
    assert len(rep.failed) == 1
    db = tmp_path / "ray"
    assert main(["index", "add", "--ray", "--workers", "2", "--db", str(db), *map(str, inputs), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "added 4, already indexed 0, failed 1" in out
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert failed == [f"FAILED  {rep.failed[0][1]}"] and "corrupt" in failed[0] and "Traceback" not in err
    ray_coll = Collection(db)
    assert [i.name for i in ray_coll.items()] == ["page", "clip", "mirrored", "later"]  # committed in order
    _same(local, ray_coll)


def test_a_worker_that_dies_is_replaced_and_its_files_tried_again(inputs, tmp_path):
    ray = pytest.importorskip("ray", reason=NO_RAY)
    from audiosheet.retrieval.distributed import RayIngest

    sheets = [inputs[0], inputs[3]]
    local = Collection(tmp_path / "local")
    local.add(sheets, progress=False)
    coll = Collection(tmp_path / "ray")
    with RayIngest(workers=2, in_flight=1) as ri:
        ri.start(coll, {"sheet"})
        dead = ri._actors[0]
        ray.kill(dead)  # the first file, sent to it, fails with a dead actor and is sent again
        rep = coll.add(sheets, progress=False, ingest=ri)
        assert ri._actors[0] is not dead
        assert not rep.failed and [i.name for i in rep.added] == ["page", "mirrored"]
        assert ray.is_initialized()  # started by hand: kept for more adds until close()
    assert not ray.is_initialized()
    _same(local, coll)


def test_a_files_exception_comes_back_as_itself():
    """A worker's front-end error is rebuilt on the driver with its class, fields and message, so
    the failure line is the one local ingestion prints (no Ray needed)."""
    import pickle

    from audiosheet.frontend.audio import AudioError
    from audiosheet.frontend.images import PageError
    from audiosheet.retrieval.collection import file_failure
    from audiosheet.retrieval.distributed import _pack_exception, _unpack_exception

    for exc in (PageError("/s/p.png", "blank page", 2), AudioError("/a.flac", "silent"),
                FileNotFoundError(2, "No such file or directory", "/gone.pdf"), MemoryError(), KeyError("x")):
        back = _unpack_exception(pickle.loads(pickle.dumps(_pack_exception(exc))))
        assert type(back) is type(exc) and vars(back) == vars(exc)
        assert file_failure(Path("/f"), back) == file_failure(Path("/f"), exc)


def test_without_ray_the_error_is_one_line(monkeypatch):
    import builtins

    from audiosheet.retrieval import distributed

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(distributed.RayUnavailable, match=r"pip install 'audiosheet\[distributed\]'") as e:
        distributed.RayIngest()
    assert "\n" not in str(e.value)
