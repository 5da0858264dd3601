"""TMK+PDQF and vPDQ against the reference tools' own outputs (tests/data/video).

The references: ThreatExchange's ``tmk-hash-video`` ``.tmk`` files and
``tmk-two-level-score`` pair scores, and ``vpdq-hash-video`` frame hashes
(see tests/data/video/README.md). Matching is checked against brute force
(python-threatexchange's rule written out here) on random frames.
"""

from __future__ import annotations

import json
import lzma
import random
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ItemCode, ItemFault
from appliance.hashers.video import VideoJob, hash_video
from appliance.index.video import FrameIndex
from appliance.video import tmk_format, vpdq, vpdq_format
from appliance.video.resample import Resampler
from appliance.video.tmk import TmkAccumulator, TmkFeatures
from appliance.video.vpdq_format import VpdqFrame

DATA = Path(__file__).parent / "data" / "video"
CLIP = "test-padded-dimensions"
TMK_FILES = sorted(p.stem for p in DATA.glob("*.tmk"))


def golden_tmk(name: str) -> TmkFeatures:
    return TmkFeatures.from_bytes((DATA / f"{name}.tmk").read_bytes())


def golden_vpdq(name: str, every: str = "1s") -> list[list[str]]:
    return [line.split(",") for line in (DATA / f"{name}.vpdq-{every}.txt").read_text().split()]


def _pairs() -> list[tuple[str, str, str, str]]:
    out = []
    for line in (DATA / "pair-scores-tmk.txt").read_text().splitlines():
        s1, s2, a, b = line.split()
        if a[:-4] in TMK_FILES and b[:-4] in TMK_FILES:
            out.append((s1, s2, a[:-4], b[:-4]))
    return out


@pytest.fixture(scope="module")
def ours() -> dict[str, bytes]:
    """Both hashes of the golden clip, from one decode."""
    result = hash_video((DATA / f"{CLIP}.mp4").read_bytes(), VideoJob(("tmk", "vpdq")))
    assert result.frames == 150
    return {h.signal: h.value for h in result.hashes}


def test_the_tmk_layout_round_trips_the_reference_files_byte_for_byte() -> None:
    for name in TMK_FILES:
        raw = (DATA / f"{name}.tmk").read_bytes()
        assert len(raw) == tmk_format.TMK_BYTES == 263_344
        assert raw[:32] == tmk_format.header(tmk_format.frames(raw))[:32]
        assert TmkFeatures.from_bytes(raw).to_bytes() == raw
        assert tmk_format.from_text(tmk_format.to_text(raw)) == raw


@pytest.mark.parametrize(("s1", "s2", "a", "b"), _pairs(), ids=lambda x: str(x))
def test_scores_of_reference_files_are_the_references_to_six_decimals(
        s1: str, s2: str, a: str, b: str) -> None:
    fa, fb = golden_tmk(a), golden_tmk(b)
    assert (f"{fa.level1(fb):.6f}", f"{fa.level2(fb):.6f}") == (s1, s2)


def test_the_pairs_checked_include_a_match_and_non_matches() -> None:
    scores = [float(s2) for s2, *_ in ((p[1], p[2]) for p in _pairs())]
    assert max(scores) > 0.99 and min(scores) < 0.1 and len(scores) >= 6


def test_the_reference_ffmpegs_frames_give_the_reference_tmk_byte_for_byte() -> None:
    # The frames tmk-hash-video reads (its ffmpeg command's output): our
    # features and sums of them are the reference's, every float equal.
    frames = np.frombuffer(lzma.decompress((DATA / f"{CLIP}.rgb64.xz").read_bytes()), np.uint8)
    sums = TmkAccumulator()
    sums.add(frames.reshape(-1, 64, 64, 3))
    assert sums.finish().to_bytes() == (DATA / f"{CLIP}.tmk").read_bytes()


def test_our_tmk_of_the_clip_scores_one_against_the_references(ours: dict[str, bytes]) -> None:
    mine, theirs = TmkFeatures.from_bytes(ours["tmk"]), golden_tmk(CLIP)
    assert mine.frames == theirs.frames == 77  # the -r 15 resampler's count
    assert mine.level1(theirs) >= 0.999 and mine.level2(theirs) >= 0.999
    # The structure the reference gives: sin[i][0] = 0, |cos[i][j]| = sqrt(a_j).
    assert not mine.sin[:, 0].any()
    norms = np.linalg.norm(mine.cos, axis=2)
    assert np.allclose(norms, np.sqrt(np.array(tmk_format.COEFFICIENTS))[None, :], rtol=1e-5)


@pytest.mark.parametrize(("frames", "rate", "kept"), [
    (673, 30.0, 338), (120, 30.0, 62), (206, 30.0, 105), (150, 30.0, 77),  # golden headers
    (45, 15.0, 45), (10, 7.5, 20)])  # 7.5 fps: each frame twice
def test_the_resampler_keeps_the_reference_counts(frames: int, rate: float, kept: int) -> None:
    resampler = Resampler(rate, one_stream=False)
    total = sum(sum(resampler.step(n / rate, 1 / rate)) for n in range(frames))
    assert total + resampler.flush() == kept


def test_at_30_fps_the_resampler_keeps_frames_0_1_2_3_then_every_odd_one() -> None:
    resampler = Resampler(30.0, one_stream=False)
    kept = [n for n in range(12) if resampler.step(n / 30, 1 / 30)[1]]
    assert kept == [0, 1, 2, 3, 5, 7, 9, 11]


def test_our_vpdq_of_the_clip_is_the_references_frame_for_frame(ours: dict[str, bytes]) -> None:
    mine, theirs = vpdq_format.unpack(ours["vpdq"]), golden_vpdq(CLIP)
    assert [f.frame for f in mine] == [int(t[0]) for t in theirs] == [0, 30, 60, 90, 120]
    assert [f"{f.seconds:.3f}" for f in mine] == [t[3] for t in theirs]
    assert [f.quality for f in mine] == [int(t[1]) for t in theirs]
    assert [f.pdq.hex() for f in mine] == [t[2] for t in theirs]  # same swscale: bit for bit


def test_every_frame_vpdq_is_within_a_few_bits_of_the_published_hashes() -> None:
    result = hash_video((DATA / f"{CLIP}.mp4").read_bytes(), VideoJob(("vpdq",), 0.0))
    mine, theirs = vpdq_format.unpack(result.hashes[0].value), golden_vpdq(CLIP, "every-frame")
    assert [f.frame for f in mine] == [int(t[0]) for t in theirs] == list(range(150))
    bits = [bin(int.from_bytes(f.pdq, "big") ^ int(t[2], 16)).count("1")
            for f, t in zip(mine, theirs, strict=True)]
    assert max(bits) <= 6  # the published set used another FFmpeg's swscale


def _value(name: str) -> bytes:
    """A golden vPDQ text file as a value (the CLI line format)."""
    return vpdq_format.parse_signal((DATA / f"{name}.vpdq-1s.txt").read_text())


@pytest.mark.parametrize(("a", "b", "percents"), [
    ("chair-22-sd-grey-bar", "chair-orig-22-sd-bar", (100.0, 100.0)),
    ("pattern-hd-no-bar", "pattern-sd-grey-bar", (0.0, 0.0)),
    ("chair-22-sd-grey-bar", "doorknob-hd-no-bar", (0.0, 0.0))])
def test_vpdq_percentages_of_golden_pairs(a: str, b: str, percents: tuple[float, float]) -> None:
    score = vpdq.compare(_value(a), _value(b))
    assert score is not None and (score.query_percent, score.compared_percent) == percents
    [found] = FrameIndex(vpdq.records(_value(b)),
                         np.zeros(len(_value(b)) // 41, np.int64)).match([_value(a)],
                                                                         vpdq.VpdqRules())
    assert bool(found) == (percents[0] >= 80)


def test_the_signal_string_is_python_threatexchanges() -> None:
    frames = [VpdqFrame(bytes(range(32)), 100, 0, 0.0), VpdqFrame(bytes(32), 7, 30, 1.0),
              VpdqFrame(b"\xff" * 32, 55, 3703, 123.4333)]
    text = vpdq_format.format_signal(vpdq_format.pack(frames))
    items = json.loads(text)
    assert text.startswith('["') and '", "' in text  # json.dumps' default separators
    assert items[0] == f"{bytes(range(32)).hex()},100,0.0"
    assert items[1].endswith(",7,1.0") and items[2].endswith(",55,1.23e+02")  # ".3": 3 digits
    parsed = vpdq_format.unpack(vpdq_format.parse_signal(text))
    assert [(f.pdq, f.quality, f.frame) for f in parsed] == [
        (f.pdq, f.quality, vpdq_format.NO_FRAME) for f in frames]


@pytest.mark.parametrize("text", [
    "", "[]", "[1]", '["00,1,0"]', f'["{"0" * 64},101,0.0"]', f'["{"0" * 64},50,-1"]',
    f'["{"0" * 64},50,nan"]', f'["{"g" * 64},50,0"]', "[", f'{{"a": "{"0" * 64},1,0"}}',
    "12,50\n"])
def test_malformed_vpdq_values_are_refused(text: str) -> None:
    with pytest.raises(ItemFault) as info:
        vpdq_format.parse_signal(text)
    assert info.value.code == ItemCode.MALFORMED_HASH


def test_malformed_tmk_values_are_refused() -> None:
    good = (DATA / f"{CLIP}.tmk").read_bytes()
    nan = bytearray(good)
    nan[2000:2004] = b"\x00\x00\xc0\x7f"
    bad_values = [good[:-1], good + b"\0", b"TMK2" + good[4:], good[:8] + b"PDQX" + good[12:],
                  good[:12] + (30).to_bytes(4, "little") + good[16:], bytes(nan),
                  good[:40] + (1).to_bytes(4, "little") + good[44:]]
    for raw in bad_values:
        with pytest.raises(ItemFault) as info:
            tmk_format.check(raw)
        assert info.value.code == ItemCode.MALFORMED_HASH
    for text in ("", "not base64!" * 40000, tmk_format.to_text(good)[:-4]):
        with pytest.raises(ItemFault):
            tmk_format.from_text(text)


def _brute(query: bytes, entry: bytes, rules: vpdq.VpdqRules) -> tuple[float, float] | None:
    """python-threatexchange's match_VPDQ_hash_brute, written out plainly."""
    def prepare(value: bytes) -> list[VpdqFrame]:
        seen, out = set(), []
        for f in vpdq_format.unpack(value):
            if f.pdq not in seen:
                seen.add(f.pdq)
                out.append(f)
        return [f for f in out if f.quality >= rules.quality_min]

    def close(a: VpdqFrame, b: VpdqFrame) -> bool:
        return bin(int.from_bytes(a.pdq, "big") ^ int.from_bytes(b.pdq, "big")).count("1") \
            <= rules.distance
    q, e = prepare(query), prepare(entry)
    if not q or not e:
        return None
    qc = sum(any(close(a, b) for b in e) for a in q)
    ec = sum(any(close(b, a) for a in q) for b in e)
    return qc * 100 / len(q), ec * 100 / len(e)


def test_the_frame_index_equals_brute_force_on_random_videos() -> None:
    rng = random.Random(7)
    base = [rng.getrandbits(256).to_bytes(32, "big") for _ in range(12)]

    def video(n: int) -> bytes:
        frames = []
        for k in range(n):
            h = int.from_bytes(rng.choice(base), "big")
            for _ in range(rng.choice((0, 3, 20, 40))):
                h ^= 1 << rng.randrange(256)
            frames.append(VpdqFrame(h.to_bytes(32, "big"), rng.choice((10, 49, 50, 90)), k, k))
        if rng.random() < 0.3:
            frames.append(frames[0])  # a duplicate hash
        return vpdq_format.pack(frames)

    entries = [video(rng.randrange(1, 9)) for _ in range(40)]
    rows = np.concatenate([np.full(len(v) // 41, i, np.int64) for i, v in enumerate(entries)])
    values = np.frombuffer(b"".join(entries), np.uint8).reshape(-1, 41)
    index = FrameIndex(values, rows)
    for rules in (vpdq.VpdqRules(), vpdq.VpdqRules(distance=10, query_percent=30.0,
                                                   compared_percent=20.0, quality_min=0)):
        queries = [video(rng.randrange(1, 9)) for _ in range(30)]
        for query, found in zip(queries, index.match(queries, rules), strict=True):
            want = {}
            for row, entry in enumerate(entries):
                got = _brute(query, entry, rules)
                if got and got[0] >= rules.query_percent and got[1] >= rules.compared_percent \
                        and got[0] > 0:
                    want[row] = got
            assert {row: (dict(s)["query_percent"], dict(s)["compared_percent"])
                    for row, s in found} == want


def test_protected_identities_get_no_video_scores() -> None:
    from appliance.results import Hit
    from appliance.security.secrecy import WITHHELD, redact

    hit = Hit("tmk", "L", "v", "e", "", 0, "", scores=(("level1", 0.9), ("level2", 0.8)))
    [shown] = redact([hit])
    assert shown.scores == () and shown.distance == WITHHELD and shown.entry_id == "e"
