"""Score sources: listing, loading with clear errors, piano grand-staff layout, work keys."""
from __future__ import annotations

import re

import pytest

from audiosheet.corpus.engrave import LayoutStyle, engrave
from audiosheet.corpus.scores import ScoreError, list_sources, load_score, to_piano

from .conftest import four_part_musicxml, kern


def test_errors_name_the_file_and_the_reason(tmp_path):
    (tmp_path / "empty.krn").write_text("")
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    (tmp_path / "bad.musicxml").write_text("<score-partwise><part")
    cases = {"empty.krn": "empty file", "x.pdf": "unsupported score format '.pdf'",
             "missing.mxl": "no such file", "bad.musicxml": "cannot parse score"}
    for name, reason in cases.items():
        with pytest.raises(ScoreError) as e:
            load_score(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and reason in msg and "\n" not in msg


def test_listing_prefers_one_format_and_groups_folders(tmp_path):
    (tmp_path / "op1").mkdir()
    (tmp_path / "op1" / "mvt1.krn").write_text(kern("C D E F", "c d e f"))
    (tmp_path / "op1" / "mvt1.abc").write_text("X:1\nK:C\nCDEF|\n")
    (tmp_path / "op1" / "mvt2.krn").write_text(kern("C D E F", "c d e f"))
    (tmp_path / "solo.krn").write_text(kern("C D E F", "c d e f"))
    (tmp_path / ".hidden.krn").write_text("")
    srcs = list_sources(str(tmp_path))
    assert [s.piece_id for s in srcs] == ["op1-mvt1", "op1-mvt2", "solo"]
    assert srcs[0].path.endswith("mvt1.krn")  # kern preferred over ABC
    assert srcs[0].group_hint == srcs[1].group_hint == "op1" and srcs[2].group_hint == ""
    with pytest.raises(ScoreError, match="not a folder"):
        list_sources(str(tmp_path / "nope"))


def test_music21_listing_has_a_thousand_polyphonic_pieces():
    srcs = list_sources("music21")
    assert len(srcs) >= 1000
    assert not any(s.monophonic_pool for s in srcs)
    assert any(s.piece_id.startswith("bach-bwv") for s in srcs)
    mono = list_sources("music21", monophonic=True)
    assert len(mono) > len(srcs) and all(s.monophonic_pool for s in mono if s not in srcs
                                         and s.piece_id not in {x.piece_id for x in srcs})


def test_four_parts_become_a_grand_staff(tmp_path):
    four_part_musicxml(tmp_path / "four.musicxml")
    src = list_sources(str(tmp_path))[0]
    ps = to_piano(src)
    assert ps.n_source_parts == 4 and not ps.monophonic
    assert re.findall(r"<sign>([GF])</sign>", ps.musicxml) == ["G", "F"]
    eng = engrave(ps.musicxml, LayoutStyle())
    assert all(len(sys_["staff_lines"]) == 2 for sys_ in eng.systems)
    assert len(eng.noteheads["x"]) == 32
    # upper staff holds the two upper parts (octaves 5 and 4), lower staff the others
    up = eng.noteheads["staff"] == 0
    assert eng.noteheads["pitch"][up].min() >= 60 > eng.noteheads["pitch"][~up].max()


def test_single_part_is_flagged_monophonic(tmp_path):
    (tmp_path / "tune.abc").write_text("X:1\nT:Tune\nM:4/4\nL:1/4\nK:G\nGABc|dedB|\n")
    ps = to_piano(list_sources(str(tmp_path))[0])
    assert ps.monophonic and ps.title == "Tune"
    assert re.findall(r"<sign>([GF])</sign>", ps.musicxml) == ["G"]


def test_work_keys_link_movements_and_chorale_settings():
    srcs = {s.piece_id: s for s in list_sources("music21")}
    k1 = to_piano(srcs["beethoven-opus18no1-movement3"]).work_keys
    assert "folder:beethoven/opus18no1" in k1
    pal = to_piano(srcs["palestrina-Agnus_01"]).work_keys
    assert any(k.startswith("work:") and "missa" in k for k in pal)
    ch = to_piano(srcs["bach-bwv269"]).work_keys
    assert "chorale:aus meines herzens grunde" in ch and any(k.startswith("melody:") for k in ch)
