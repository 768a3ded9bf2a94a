"""The Mutopia/LilyPond source (issue 15): a tiny Mutopia-like checkout made here.

Two short keyboard pieces (one with a volta repeat and alternatives, dynamics and pedal marks),
one bad .ly, one violin piece. Needs Debian's LilyPond ≥ 2.24 for the engraving tests (skipped
with the reason without it); the parsing, key and split tests run everywhere.
"""
from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest

from audiosheet.corpus import build as corpus_mod
from audiosheet.corpus import check as check_mod
from audiosheet.corpus import splits as splits_mod
from audiosheet.corpus.lilypond import TempoMap, lilypond_version, pedal_intervals, velocities
from audiosheet.corpus.mutopia import catalogue_keys, composer_surname, held_out_keys, list_pieces, scan_work_keys
from audiosheet.corpus.reader import Corpus

HEADER = """\\header {{
  title = "{title}"
  composer = "Test Composer"
  opus = "{opus}"
  mutopiacomposer = "ComposerT"
  mutopiainstrument = "{instrument}"
  license = "Public Domain"
}}
"""

PLAIN = """\\version "2.18.2"
{header}
upper = \\relative c'' {{ \\clef treble \\key c \\major \\time 4/4 \\tempo 4 = 120
  c4\\p d e f | g1 | e4\\f d c2\\sustainOn | c1\\sustainOff \\bar "|." }}
lower = \\relative c {{ \\clef bass \\key c \\major \\time 4/4
  c2 g' | c,1 | g'2 c, | c1 }}
\\score {{ \\new PianoStaff << \\new Staff \\upper \\new Staff \\lower >> \\layout {{ }} \\midi {{ }} }}
"""

# 2.10 syntax (convert-ly brings it to 2.24): a volta repeat with two alternatives
REPEAT = """\\version "2.10.0"
{header}
upper = \\relative c'' {{ \\clef treble \\time 3/4 \\tempo 4 = 90
  \\repeat volta 2 {{ c4 d e | f2 g4 | }}
  \\alternative {{ {{ a2. | }} {{ b2. | }} }}
  c1*3/4 \\bar "|." }}
lower = \\relative c {{ \\clef bass \\time 3/4
  \\repeat volta 2 {{ c2. | f,2. | }}
  \\alternative {{ {{ f2. | }} {{ g2. | }} }}
  c2. }}
\\score {{ \\new PianoStaff << \\new Staff \\upper \\new Staff \\lower >> \\layout {{ }} }}
\\score {{ \\unfoldRepeats \\new PianoStaff << \\new Staff \\upper \\new Staff \\lower >> \\midi {{ }} }}
"""

BAD = """\\version "2.18.2"
{header}
\\score {{ \\new Staff {{ c'4 d' \\undefinedCommandHere e' }} }}
"""


def make_checkout(root):
    def piece(rel, text, **h):
        d = root / "ftp" / "ComposerT" / rel
        d.mkdir(parents=True)
        hdr = HEADER.format(**{"title": rel, "opus": "", "instrument": "Piano", **h})
        (d / f"{d.name}.ly").write_text(textwrap.dedent(text).format(header=hdr))

    piece("O1/plain", PLAIN, title="Plain piece", opus="Op. 1 No. 1")
    piece("O2/repeat", REPEAT, title="Repeat piece", opus="Op. 2")
    piece("O3/bad", BAD, title="Bad piece", opus="Op. 3")
    piece("O4/violin", PLAIN, title="Violin piece", opus="Op. 4", instrument="Violin")
    return root


# ----------------------------------------------------------------------------------------------
# everywhere


def test_list_pieces_takes_keyboard_solo_only(tmp_path):
    pieces, skipped = list_pieces(make_checkout(tmp_path))
    assert [p.piece_id for p in pieces] == ["mutopia-ComposerT-O1-plain", "mutopia-ComposerT-O2-repeat",
                                            "mutopia-ComposerT-O3-bad"]
    assert any("violin" in path and "not keyboard music (instrument: Violin)" in why
               for path, why in skipped)
    p = pieces[0]
    assert (p.composer, p.catalogue, p.surname) == ("Test Composer", "Op. 1 No. 1", "composer")
    assert p.work_keys() == ["cat:composer:op1"]


def test_list_pieces_rejects_a_folder_that_is_not_mutopia(tmp_path):
    with pytest.raises(ValueError, match="not a Mutopia checkout"):
        list_pieces(tmp_path)


@pytest.mark.parametrize("name,want", [("BeethovenLv", "beethoven"), ("ChopinFF", "chopin"),
                                       ("Mendelssohn-BartholdyF", "mendelssohn"),
                                       ("BachJS", "bach"), ("SchubertF", "schubert")])
def test_composer_surname(name, want):
    assert composer_surname(name) == want


def test_catalogue_keys_across_sources():
    # a Mutopia opus field and a scanned work's folder name give the same key
    assert catalogue_keys("chopin", "Opus 10 Nr. 9 Etüde") == ["cat:chopin:op10"]
    assert scan_work_keys("chopin_frederic_etudes_op_10") == ["cat:chopin:op10"]
    assert catalogue_keys("bach", "BWV 805") == ["bwv:805"]  # as the music21 source keys Bach
    assert catalogue_keys("haydn", "Hob. XVI:27") == ["cat:haydn:hobxvi:27"]
    assert catalogue_keys("schubert", "D. 935, Op. 142") == ["cat:schubert:d935", "cat:schubert:op142"]
    assert catalogue_keys("mozart", "KV 331") == ["cat:mozart:k331"]
    assert catalogue_keys("satie", "Gymnopédie No. 1") == []


def test_held_out_works_hold_the_development_set():
    keys = held_out_keys()
    # scanned works of the real-material development set and its recordings' sources
    for k in ("cat:chopin:op25", "cat:beethoven:op2", "cat:haydn:hobxvi:27", "cat:schubert:d935",
              "cat:debussy:l75"):
        assert k in keys


def test_assign_splits_fixed_works_go_where_they_must():
    metas = {f"p{i}": {"work_keys": [f"cat:x:op{i}"]} for i in range(60)}
    metas["q"] = {"work_keys": ["cat:x:op7", "bwv:1"]}  # joins op7's group through bwv:1
    fixed = {"cat:x:op3": "test", "bwv:1": "test", "cat:x:op5": "train"}
    s = splits_mod.assign_splits(metas, 0, fixed)
    split = {p: sp for sp, ids in s.items() for p in ids}
    assert split["p3"] == "test" and split["p7"] == "test" and split["q"] == "test"
    assert split["p5"] == "train"
    free = splits_mod.assign_splits({k: v for k, v in metas.items() if k not in ("p3", "p5", "p7", "q")}, 0)
    free_split = {p: sp for sp, ids in free.items() for p in ids}
    assert all(free_split[p] == split[p] for p in free_split)  # the others are untouched


def test_split_constraints_follow_music21_for_bach():
    fixed = splits_mod.split_constraints("mutopia:/x")
    assert fixed.get("cat:chopin:op25") == "test"
    held = splits_mod.reference_test()
    assert len(held) == 207 and all(not p.startswith("mutopia-") for p in held)
    bwv = next(p for p in held if p.startswith("bach-bwv")).split("bwv")[1].split(".")[0]
    assert fixed[f"bwv:{bwv}"] == "test"
    assert splits_mod.split_constraints("music21") == {}


def test_tempo_velocity_pedal_from_a_capture():
    tm = TempoMap([(0.0, 30.0), (1.0, 15.0)])  # 120 qpm for a whole, then 60 qpm
    assert np.allclose(tm.seconds([0.0, 1.0, 1.5]), [0.0, 2.0, 4.0])
    score = {"dynamic": [(0.0, "p"), (2.0, "f"), (3.0, "sf")],
             "hairpin": [(1.0, "cresc", -1), (2.0, "cresc", 1)],
             "sustain": [(0.5, -1), (1.0, 1), (1.0, -1), (4.0, 1), (5.0, -1)], "end": 6.0}
    v = velocities(score, np.array([0.0, 1.0, 1.5, 2.0, 3.0]))
    assert v[0] == 54 and v[3] == 92 and v[4] == 104 and 54 < v[2] < 92
    assert pedal_intervals(score) == [(0.5, 1.0), (1.0, 4.0), (5.0, 6.0)]


# ----------------------------------------------------------------------------------------------
# with LilyPond

needs_lilypond = pytest.mark.skipif(
    lilypond_version() is None or tuple(map(int, lilypond_version().split("."))) < (2, 24, 0),
    reason="LilyPond ≥ 2.24 is not installed (apt-get install lilypond)")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if lilypond_version() is None:
        pytest.skip("LilyPond is not installed (apt-get install lilypond)")
    from audiosheet.corpus.synth import missing_corpus_tools

    if missing_corpus_tools(engrave=False):
        pytest.skip("corpus tools missing: " + ", ".join(missing_corpus_tools(engrave=False)))
    root = make_checkout(tmp_path_factory.mktemp("mutopia"))
    outs = []
    for k in range(2):
        out = tmp_path_factory.mktemp(f"corpus{k}")
        opts = corpus_mod.BuildOptions(soundfonts="bundled", performances=1)
        summary = corpus_mod.build(f"mutopia:{root}", out, workers=1, options=opts, progress=False)
        outs.append((out, summary))
    return root, outs


@needs_lilypond
def test_build_logs_the_bad_file_and_goes_on(built):
    _, [(out, summary), _] = built
    assert summary["pieces"] == 2 and summary["failed"] == 1
    fail = (out / "failures.tsv").read_text().splitlines()[1].split("\t")
    assert fail[0] == "mutopia-ComposerT-O3-bad" and fail[2] == "engrave"
    assert fail[3].startswith("LilyPondError: error (bad.ly:11:") and "undefinedCommandHere" in fail[3]
    assert summary["failures_by_reason"] == {"engrave: LilyPondError: error": 1}
    assert "violin" in (out / "skipped.tsv").read_text()
    works = [ln.split("\t") for ln in (out / "works.tsv").read_text().splitlines()]
    assert works[0][:6] == ["piece", "split", "origin", "composer", "title", "catalogue"]
    assert works[1][0] == "mutopia-ComposerT-O1-plain" and works[1][2:6] == [
        "mutopia", "Test Composer", "Plain piece", "Op. 1 No. 1"] and works[1][6] == "cat:composer:op1"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mutopia"]["keyboard_pieces"] == 3 and manifest["tools"]["lilypond"]


@needs_lilypond
def test_repeat_is_unfolded_on_both_sides(built):
    _, [(out, _), _] = built
    c = Corpus(out)
    nh = c.noteheads("mutopia-ComposerT-O2-repeat")
    # printed unfolded: body twice with its alternatives, then the last bar
    upper = [72, 74, 76, 77, 79, 81, 72, 74, 76, 77, 79, 83, 84]
    lower = [48, 41, 41, 48, 41, 43, 48]
    top = nh["staff"] == 0
    assert nh["pitch"][top].tolist() == upper
    assert nh["pitch"][~top].tolist() == lower
    # the time of every notehead follows the unfolded score at 90 quarter notes per minute
    q = 60 / 90
    want = np.array([0, 1, 2, 3, 5, 6, 9, 10, 11, 12, 14, 15, 18]) * q
    assert np.allclose(nh["onset"][top], want, atol=1e-3)
    # and the pages agree: the second time through is printed further right or lower
    order = np.lexsort((nh["x"][top], nh["system"][top]))
    assert order.tolist() == list(range(13))


@needs_lilypond
def test_noteheads_tempo_dynamics_pedal(built):
    _, [(out, _), _] = built
    c = Corpus(out)
    pid = "mutopia-ComposerT-O1-plain"
    nh = c.noteheads(pid)
    top = nh["staff"] == 0
    assert np.allclose(nh["onset"][top][:4], [0, 0.5, 1.0, 1.5], atol=1e-3)  # 4 = 120
    with np.load(c.piece_dir(pid) / "notes.npz") as z:
        vel, pedal, notes = z["velocity"], z["pedal"], z["notes"]
    first_p = vel[np.argmin(np.abs(notes[:, 0] - 0.0) + (notes[:, 2] != 72))]
    first_f = vel[np.argmin(np.abs(notes[:, 0] - 4.0) + (notes[:, 2] != 76))]
    assert first_p == 54 and first_f == 92
    assert np.allclose(pedal, [[5.0, 6.0]], atol=1e-3)  # \sustainOn on beat 3 of bar 3, off at bar 4
    info = c.info(pid)
    assert info["origin"] == "mutopia" and info["style"]["engraver"] == "lilypond"
    assert info["timing"][0]["tempo"] == "metronome marks"
    r = check_mod.check(out, progress=False)
    assert r.ok, r.problems
    s = check_mod.stats(out)
    assert s["by_source"]["mutopia"]["pieces"] == 2
    assert s["by_composer"]["composer"]["pieces"] == 2


@needs_lilypond
def test_build_is_deterministic(built):
    _, [(a, _), (b, _)] = built
    for pid in ("mutopia-ComposerT-O1-plain", "mutopia-ComposerT-O2-repeat"):
        ca, cb = Corpus(a), Corpus(b)
        for key, x in ca.noteheads(pid).items():
            assert np.array_equal(x, cb.noteheads(pid)[key]), key
        assert np.array_equal(ca.spectrogram(pid, 0), cb.spectrogram(pid, 0))
        assert np.array_equal(ca.page(pid, 0), cb.page(pid, 0))
        ia, ib = ca.info(pid), cb.info(pid)
        assert ia["style"] == ib["style"] and ia["performances"] == ib["performances"]


@needs_lilypond
def test_resume_does_nothing_twice(built):
    root, [(out, _), _] = built
    opts = corpus_mod.BuildOptions(soundfonts="bundled", performances=1)
    again = corpus_mod.build(f"mutopia:{root}", out, workers=1, options=opts, progress=False)
    assert again["already_done"] == 2 and again["rendered_now"] == 0


def test_without_lilypond_the_build_says_so(tmp_path, monkeypatch):
    import audiosheet.corpus.lilypond as lp

    lp.lilypond_version.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        with pytest.raises(lp.LilyPondError, match="apt-get install lilypond"):
            corpus_mod.build(f"mutopia:{make_checkout(tmp_path)}", tmp_path / "c", progress=False)
    finally:
        lp.lilypond_version.cache_clear()


@needs_lilypond
def test_union_holds_both_corpora_and_guards_splits_by_work(built, tmp_path):
    from audiosheet.corpus.union import union

    _, [(a, _), (b, _)] = built
    # two copies of one corpus share piece ids: refused
    with pytest.raises(ValueError, match="is in both"):
        union([a, b], tmp_path / "u0")
    # a second source: the same pieces under other ids, one work moved to another split
    other = tmp_path / "other"
    shutil.copytree(b, other, symlinks=True)
    splits = json.loads((other / "splits.json").read_text())
    renamed = {}
    for sp, ids in splits.items():
        renamed[sp] = []
        for pid in ids:
            new = pid.replace("mutopia-", "other-")
            (other / "pieces" / pid).rename(other / "pieces" / new)
            (other / "scores" / f"{pid}.json").rename(other / "scores" / f"{new}.json")
            renamed[sp].append(new)
    (other / "splits.json").write_text(json.dumps(renamed))
    u = union([a, other], tmp_path / "u1")
    assert u["pieces"] == 4
    s = check_mod.stats(tmp_path / "u1")
    assert s["pieces"] == 4 and s["by_source"]["mutopia"]["pieces"] == 4
    assert check_mod.check(tmp_path / "u1", progress=False).ok
    # put one work of the first source in test and the same work of the other in train: refused
    sa = json.loads((a / "splits.json").read_text())
    pid = sa["train"][0] if sa["train"] else sa["valid"][0]
    moved = {sp: [p for p in ids if p != pid] for sp, ids in sa.items()}
    moved["test"].append(pid)
    a2 = tmp_path / "a2"
    shutil.copytree(a, a2, symlinks=True)
    (a2 / "splits.json").write_text(json.dumps(moved))
    info = json.loads((a2 / "pieces" / pid / "piece.json").read_text())
    info["split"] = "test"
    (a2 / "pieces" / pid / "piece.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="cross splits between sources"):
        union([a2, other], tmp_path / "u2")


LONG = """\\version "2.24.0"
{header}
upper = \\relative c'' {{ \\clef treble \\time 4/4 \\tempo 4 = 132
  \\repeat unfold 8 {{ c8\\mf d e f g a b c | <c, e g>4 <d f a> <e g b>2 | c'8 b a g f e d c | <g b d>1 | }}
  \\bar "|." }}
lower = \\relative c {{ \\clef bass \\time 4/4
  \\repeat unfold 8 {{ c4 e g c | g,2 g' | c,4 e g c | g1 | }} }}
\\score {{ \\new PianoStaff << \\new Staff \\upper \\new Staff \\lower >> \\layout {{ }} \\midi {{ }} }}
"""


@needs_lilypond
def test_restrip_variants_and_training_pairs_read_lilypond_pieces(tmp_path):
    from audiosheet.corpus.variants import make_variants
    from audiosheet.training.pairs import SnippetPairs

    d = tmp_path / "m" / "ftp" / "ComposerT" / "O9" / "long"
    d.mkdir(parents=True)
    (d / "long.ly").write_text(LONG.format(header=HEADER.format(title="Long", opus="Op. 9",
                                                                 instrument="Piano")))
    c = tmp_path / "c"
    opts = corpus_mod.BuildOptions(soundfonts="bundled", performances=1)
    corpus_mod.build(f"mutopia:{tmp_path / 'm'}", c, workers=1, options=opts, progress=False)
    assert len(Corpus(c).info("mutopia-ComposerT-O9-long")["systems"]) >= 4
    r = corpus_mod.restrip(c, workers=1, progress=False)
    assert not r["failed"]
    summary = make_variants(c, tmp_path / "v", split="all", workers=1, progress=False)
    for name, v in summary["variants"].items():
        assert v["pieces"] == 1 and not v["failed"], (name, v)
        assert check_mod.check(tmp_path / "v" / name, progress=False).ok, name
    pairs = SnippetPairs(c, "all")
    sheet, audio = pairs[len(pairs) // 2]
    assert sheet.shape == (1, 80, 100) and audio.shape[:2] == (1, 92) and sheet.max() > 0.5


def test_overlapping_pieces_of_a_folder_are_left_out():
    from audiosheet.corpus.mutopia import chord_sequence, overlapping

    rng = np.random.default_rng(0)

    def movement(n):
        on = np.arange(n) * 0.25
        return np.column_stack([on, np.full(n, 0.25), rng.integers(40, 90, n)]).astype(float)

    b, c = movement(300), movement(200)
    whole = np.vstack([b, c + [b[-1, 0] + 1.0, 0, 0]])  # the whole work: both movements in a row
    chord = np.array([[0.0, 1.0, 60], [0.0, 1.0, 64], [0.5, 1.0, 62]])
    assert chord_sequence(chord) == [(60, 64), (62,)]
    pieces = {"w-all": ("f", whole), "w-1": ("f", b), "w-2": ("f", c), "w-1-copy": ("f", b.copy()),
              "other-1": ("g", b.copy()), "other-2": ("g", movement(300))}
    drop = overlapping(pieces)
    assert set(drop) == {"w-all", "w-1-copy"}  # another folder's copy is not this folder's business
    assert "holds the music of w-1" in drop["w-all"] and "same music as w-1" in drop["w-1-copy"]
    assert overlapping({"a": ("f", b), "b": ("f", c)}) == {}  # different music: both kept
