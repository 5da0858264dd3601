"""Videos through the pipeline, the lists and the server: defaults, bad videos,
edited copies against the reference's own hashes, every list format of
video values, compiled snapshots, Match and MatchStream.

The list entries are the reference tools' outputs (tests/data/video), so a
match here is our hash of a file against the reference's hash of it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from appliance.config import Config, LimitsConfig, ListSpec, MatchingConfig
from appliance.errors import ItemCode
from appliance.hashers.video import VideoJob, hash_video
from appliance.index.compiled import open_compiled, write_compiled
from appliance.index.snapshot import ListIndex, Snapshot
from appliance.lists import HashList, load_list, parse_csv
from appliance.pipeline import Pipeline
from appliance.results import Item, ItemResult
from appliance.sandbox import ProcessDecoders
from appliance.settings import Isolation
from appliance.signals import SIGNALS
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from appliance.video import VideoLimits, synthetic, tmk_format, vpdq_format
from appliance.video.limits import decode_memory
from tests.helpers import ServerThread, encode, make_config, synthetic_image

DATA = Path(__file__).parent / "data" / "video"
CLIP = "test-padded-dimensions"
VIDEO = (DATA / f"{CLIP}.mp4").read_bytes()
INLINE = Config(limits=LimitsConfig(decode_isolation="inline"))
TMK, VPDQ = SIGNALS["tmk"], SIGNALS["vpdq"]
DIGESTS = ["md5", "sha1", "sha256"]


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as p:
        yield p


def run(items: list[Item], pool: ThreadPoolExecutor, config: Config = INLINE,
        snapshot: Snapshot | None = None) -> list[ItemResult]:
    pipeline = Pipeline(config)
    pipeline.start()
    try:
        return pipeline.run(items, snapshot, pool)
    finally:
        pipeline.close()


def reference_values() -> dict[str, str]:
    """The clip's values as the reference tools made them, as list text."""
    tmk = tmk_format.to_text((DATA / f"{CLIP}.tmk").read_bytes())
    frames = vpdq_format.parse_signal((DATA / f"{CLIP}.vpdq-1s.txt").read_text())
    return {"tmk": tmk, "vpdq": vpdq_format.format_signal(frames)}


def test_defaults_follow_what_the_file_is(pool: ThreadPoolExecutor) -> None:
    gif = synthetic.encode("gif", "gif", pix="rgb8", rate=10)
    png = encode(synthetic_image(3, (64, 48)), "PNG")
    video, picture, animation = run([Item("v", VIDEO), Item("p", png), Item("g", gif)], pool)
    assert [h.signal for h in video.hashes] == [*DIGESTS, "tmk", "vpdq"] and not video.skipped
    assert [h.signal for h in picture.hashes] == [*DIGESTS, "pdq"] and not picture.skipped
    # A GIF is a picture by default, and a video when asked.
    assert [h.signal for h in animation.hashes] == [*DIGESTS, "pdq"]
    [asked] = run([Item("g", gif, ("pdq", "tmk", "vpdq"))], pool)
    assert [h.signal for h in asked.hashes] == ["pdq", "tmk", "vpdq"] and not asked.skipped
    assert len(vpdq_format.unpack(asked.hashes[2].value)) == 1  # 8 frames at 10 fps: frame 0


def _audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        for _ in range(4):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


BAD = {
    "not a video": (b"\x00\x01not a video at all" * 10, ItemCode.NOT_A_VIDEO),
    "HLS playlist": (b"#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/passwd\n", ItemCode.NOT_A_VIDEO),
    "truncated": (VIDEO[: len(VIDEO) // 3], ItemCode.CORRUPT_VIDEO),
    "header only": (VIDEO[:64], ItemCode.CORRUPT_VIDEO),
}


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_bad_videos_get_typed_errors_and_keep_their_digests(isolation: Isolation,
                                                            pool: ThreadPoolExecutor) -> None:
    cases = {**BAD, "audio only": (_audio_only(), ItemCode.NOT_A_VIDEO)}
    config = Config(limits=LimitsConfig(decode_isolation=isolation, max_video_seconds=2.0))
    items = [Item(name, data, ("md5", "tmk", "vpdq")) for name, (data, _) in cases.items()]
    items.append(Item("too long", VIDEO, ("md5", "tmk")))  # 5 s over a 2 s limit
    items.append(Item("fine", synthetic.tiny(), ("md5", "tmk", "vpdq")))
    results = run(items, pool, config)
    want = {**{n: c for n, (_, c) in cases.items()}, "too long": ItemCode.VIDEO_TOO_LONG}
    for result in results[:-1]:
        assert result.error is None and [h.signal for h in result.hashes] == ["md5"]
        assert {r.code for r in result.skipped.values()} == {want[result.id]}, result.skipped
    assert [h.signal for h in results[-1].hashes] == ["md5", "tmk", "vpdq"]


def test_frames_over_the_pixel_limit_are_refused(pool: ThreadPoolExecutor) -> None:
    config = Config(limits=LimitsConfig(decode_isolation="inline", max_video_pixels=1000))
    [result] = run([Item("big", VIDEO, ("tmk",))], pool, config)
    assert result.skipped["tmk"].code == ItemCode.VIDEO_TOO_LARGE


def _csv(rows: list[dict[str, str]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, ["id", "category", "tmk", "vpdq"])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def _frames() -> list[np.ndarray]:
    container = av.open(io.BytesIO(VIDEO), "r")
    # Half size (540 x 540), even: the edits below encode fast.
    return [np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize((540, 540)))
            for f in container.decode(video=0)]


def _grey(p: np.ndarray) -> np.ndarray:
    g = (p.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    return np.stack([g] * 3, -1)


def _letterbox(p: np.ndarray) -> np.ndarray:
    out = np.zeros((p.shape[0] + 136, p.shape[1], 3), np.uint8)
    out[68:68 + p.shape[0]] = p
    return out


def _logo(p: np.ndarray) -> np.ndarray:
    q = p.copy()
    q[8:48, 8:120] = 255
    return q


def _small(p: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(p).resize((270, 270)))


def _edits() -> dict[str, tuple[bytes, bool, bool]]:
    """name -> (video, TMK should match, vPDQ should match) against the reference's hashes."""
    frames = _frames()

    def make(pictures: list[np.ndarray], fmt: str = "mp4", rate: int = 30) -> bytes:
        height, width = pictures[0].shape[:2]
        return synthetic.encode(fmt, "mpeg4", width=width, height=height, rate=rate,
                                pictures=pictures)
    return {
        "re-encode": (make(frames), True, True),
        "half size": (make([_small(p) for p in frames]), True, True),
        "grey": (make([_grey(p) for p in frames]), True, True),
        # A white box over 1.5 % of the frame moves some frames past 31 bits.
        "logo": (make([_logo(p) for p in frames]), True, False),
        "frame rate 15": (make(frames[::2], rate=15), True, True),
        "mkv": (make(frames, "matroska"), True, True),
        # Stretched to 64x64, bars move every pixel: TMK's cosine falls to ~0.55.
        "letterbox": (make([_letterbox(p) for p in frames]), False, False),
    }


@pytest.fixture(scope="module")
def reference_snapshot() -> Snapshot:
    rows = [{"id": "clip", "category": "test", **reference_values()}]
    return Snapshot([load_list_bytes(_csv(rows))], MatchingConfig())


def load_list_bytes(data: bytes, name: str = "videos") -> HashList:
    return parse_csv(data, name, "test")


def test_edited_copies_match_the_references_hashes_as_the_rules_decide(
        pool: ThreadPoolExecutor, reference_snapshot: Snapshot) -> None:
    edits = _edits()
    items = [Item(name, data, ("tmk", "vpdq")) for name, (data, _, _) in edits.items()]
    unrelated = Item("unrelated", synthetic.encode("mp4", "mpeg4", width=320, height=240,
                                                   frames=60, rate=30), ("tmk", "vpdq"))
    results = run([*items, unrelated], pool, snapshot=reference_snapshot)
    for result in results:
        assert not result.skipped, result.skipped
        want = edits.get(result.id, (b"", False, False))
        got = {h.signal: dict(h.scores) for h in result.matches}
        assert ("tmk" in got, "vpdq" in got) == want[1:], (result.id, got)
        if "tmk" in got:
            assert min(got["tmk"]["level1"], got["tmk"]["level2"]) >= 0.7
        if "vpdq" in got:
            assert got["vpdq"]["query_percent"] >= 80 and got["vpdq"]["last_seconds"] >= 4.0


def _reference_list_files(tmp_path: Path) -> dict[str, Path]:
    values = reference_values()
    raw = (DATA / f"{CLIP}.tmk").read_bytes()
    directory = tmp_path / "tmks"
    directory.mkdir()
    (directory / "clip.tmk").write_bytes(raw)
    (directory / "notes.txt").write_text("ignored")
    files = {
        "csv": tmp_path / "v.csv",
        "threatexchange": tmp_path / "v.te",
        "ncmec": tmp_path / "v.xml",
        "stopncii": tmp_path / "v.json",
        "tmk-dir": directory,
    }
    files["csv"].write_bytes(_csv([{"id": "clip", "category": "", **values}]))
    files["threatexchange"].write_text(f"pdq {'0' * 64}\nvpdq {values['vpdq']}\n")
    files["ncmec"].write_text(
        '<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><videos>'
        f'<video><id>clip</id><fingerprints><md5>{"a" * 32}</md5>'
        f'<tmk_pdqf>{values["tmk"]}</tmk_pdqf></fingerprints></video></videos></queryResult>')
    files["stopncii"].write_text(json.dumps(
        [{"signalType": "VideoTMK", "hashValue": values["tmk"], "hashStatus": "Active",
          "hashId": "clip"}]))
    return files


def test_every_list_format_of_video_values_loads_and_matches(tmp_path: Path,
                                                             pool: ThreadPoolExecutor) -> None:
    files = _reference_list_files(tmp_path)
    [ours] = run([Item("q", VIDEO, ("tmk", "vpdq"))], pool)
    values = {h.signal: h.value for h in ours.hashes}
    for fmt, path in files.items():
        hl = load_list(str(path), fmt)
        signals = {s for s in ("tmk", "vpdq") if hl.count(s)}
        assert signals == ({"vpdq"} if fmt == "threatexchange" else
                           {"tmk", "vpdq"} if fmt == "csv" else {"tmk"}), fmt
        assert all(hl.count(s) == 1 for s in signals)
        snapshot = Snapshot([hl], MatchingConfig())
        for signal in signals:
            [hits] = snapshot.match(signal, [values[signal]])
            assert [h.entry_id.split(":")[-1] for h in hits] in (["clip"], ["line-2"]), fmt


def test_a_compiled_snapshot_keeps_video_entries_and_matches_the_same(tmp_path: Path) -> None:
    hl = load_list(str(_reference_list_files(tmp_path)["csv"]), "videos")
    path = tmp_path / "lists.snap"
    write_compiled(path, [ListIndex(hl)], {"videos": "v.csv"})
    indexes, _ = open_compiled(path)
    compiled, parsed = Snapshot(indexes, MatchingConfig()), Snapshot([hl], MatchingConfig())
    assert compiled.entry_counts() == parsed.entry_counts() == {
        ("videos", "tmk"): 1, ("videos", "vpdq"): 1}
    [result] = run([Item("q", VIDEO, ("tmk", "vpdq"))], ThreadPoolExecutor(1))
    for value in result.hashes:
        assert compiled.match(value.signal, [value.value]) == \
            parsed.match(value.signal, [value.value])
        assert compiled.match(value.signal, [value.value])[0]


def test_thresholds_are_configurable(reference_snapshot: Snapshot) -> None:
    [result] = run([Item("q", VIDEO, ("tmk", "vpdq"))], ThreadPoolExecutor(1))
    strict = Snapshot(reference_snapshot.indexes, replace(
        MatchingConfig(), tmk_level2=1.0000001, vpdq_query_percent=100.0, vpdq_threshold=0))
    tmk, vpdq = result.hashes
    assert reference_snapshot.match("tmk", [tmk.value])[0]
    assert strict.match("tmk", [tmk.value]) == [[]]
    assert len(strict.match("vpdq", [vpdq.value])[0]) == 1  # bit-exact frames: distance 0


def _chunks(data: bytes, size: int, ident: str) -> Iterator[pb.Chunk]:
    yield pb.Chunk(data=data[:size], id=ident)
    for at in range(size, len(data), size):
        yield pb.Chunk(data=data[at:at + size])


def test_the_server_matches_videos_by_match_and_by_stream(
        tmp_path: Path, serve: Callable[[Config], ServerThread]) -> None:
    path = _reference_list_files(tmp_path)["csv"]
    config = replace(make_config(max_file_bytes=4 << 20), lists=(ListSpec("videos", str(path)),))
    server = serve(config)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        by_match = stub.Match(pb.FileRequest(content=VIDEO, id="m")).result
        by_stream = stub.MatchStream(_chunks(VIDEO, 16 << 10, "s")).result
        status = stub.GetStatus(pb.StatusRequest())
    for result in (by_match, by_stream):
        assert [h.signal for h in result.hashes] == [*DIGESTS, "tmk", "vpdq"]
        assert result.matched and {m.signal for m in result.matches} == {"tmk", "vpdq"}
        scores = {m.signal: dict(m.scores) for m in result.matches}
        assert scores["tmk"]["level2"] >= 0.999 and scores["vpdq"]["query_percent"] == 100.0
        assert all(m.query == "" and m.entry_id == "clip" for m in result.matches)
    assert {h.signal: h.value for h in by_match.hashes} == \
        {h.signal: h.value for h in by_stream.hashes}
    # Entries (videos), not frames: the vPDQ column holds 5 frames of one video.
    assert dict(status.lists[0].entries) == {"tmk": 1, "vpdq": 1}
    assert {"tmk", "vpdq"} <= set(status.signals)


def test_variable_frame_rate_and_rotation_hash_as_the_references_would(
        pool: ThreadPoolExecutor) -> None:
    # vPDQ samples by frame number whatever the timestamps; TMK resamples by
    # timestamp (a frame held 0.5 s is written 7 or 8 times at 15 a second).
    pts = [0, 40, 120, 130, 300, 310, 500, 1000, 1040, 1100]  # milliseconds
    vfr = synthetic.encode("matroska", "mpeg4", pts=pts, time_base=Fraction(1, 1000),
                           frames=len(pts), rate=25)
    turned = synthetic.encode("mp4", "mpeg4", rotation=90, frames=10)
    plain = synthetic.encode("mp4", "mpeg4", frames=10)
    results = run([Item(n, d, ("tmk", "vpdq")) for n, d in
                   (("vfr", vfr), ("turned", turned), ("plain", plain))], pool)
    values = {r.id: {h.signal: h.value for h in r.hashes} for r in results}
    frames = [f.frame for f in vpdq_format.unpack(values["vfr"]["vpdq"])]
    assert frames == [0]  # the container's average rate: under 25 a second, one sample
    # What the reference's own ffmpeg -r 15 (FFmpeg 5.1.9) writes for this file.
    assert tmk_format.frames(values["vfr"]["tmk"]) == 18
    # Rotation metadata is not applied (the references hash frames as stored).
    assert values["turned"] == values["plain"]


# (container, codec, rate, frames) -> frames the reference's ffmpeg -r 15 writes,
# counted with FFmpeg 5.1.9's CLI (Debian 12) on exactly these encodes.
FFMPEG_COUNTS = [
    ("mp4", "mpeg4", 24, 50, 33), ("mp4", "mpeg4", 25, 50, 32),
    ("mp4", "mpeg4", Fraction(30000, 1001), 61, 33), ("mp4", "mpeg4", 60, 100, 27),
    ("matroska", "mpeg4", 50, 77, 25), ("avi", "mpeg4", 12, 30, 37),
    ("mp4", "mpeg4", 10, 33, 50), ("webm", "libvpx", 30, 45, 24),
]


@pytest.mark.parametrize(("fmt", "codec", "rate", "count", "written"), FFMPEG_COUNTS)
def test_tmk_resamples_as_the_references_ffmpeg_does(fmt: str, codec: str, rate: int,
                                                     count: int, written: int) -> None:
    if not synthetic.has_encoder(codec):
        pytest.skip(f"no {codec} encoder in this PyAV wheel")
    data = synthetic.encode(fmt, codec, rate=rate, frames=count)
    result = hash_video(data, VideoJob(("tmk",)))
    assert tmk_format.frames(result.hashes[0].value) == written


def test_a_video_past_its_time_limit_is_stopped(pool: ThreadPoolExecutor) -> None:
    config = Config(limits=LimitsConfig(max_video_decode_seconds=0.05))
    [result] = run([Item("slow", VIDEO, ("md5", "tmk"))], pool, config)
    assert result.skipped["tmk"].code == ItemCode.DECODE_TIMEOUT
    assert [h.signal for h in result.hashes] == ["md5"]


def _large_video(mib: int) -> bytes:
    """A video of about ``mib`` MiB: noise frames at near-lossless quality."""
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    frames = []
    data = b""
    while len(data) < mib << 20:
        frames += pictures
        data = synthetic.encode("avi", "mpeg4", width=640, height=480, rate=30,
                                pictures=frames, options={"qscale": "1"})
    return data


def test_a_30_mib_video_streamed_in_chunks_matches_with_bounded_memory(
        tmp_path: Path, serve: Callable[[Config], ServerThread]) -> None:
    data = _large_video(30)
    assert len(data) >= 30 << 20
    decoders = ProcessDecoders(1)
    try:
        made = decoders.run_video(data, VideoJob(("tmk", "vpdq")), VideoLimits(),
                                  decode_memory(VideoLimits()), None)
    finally:
        decoders.close()
    # The worker's peak over its idle size: a frame and a batch, not the video.
    assert 0 < made.peak_bytes < 200 << 20 and made.frames >= 90
    listing = tmp_path / "big.csv"
    listing.write_bytes(_csv([{"id": "big", "category": "",
                               "tmk": TMK.format(made.hashes[0].value),
                               "vpdq": VPDQ.format(made.hashes[1].value)}]))
    config = replace(make_config(max_stream_bytes=64 << 20),
                     lists=(ListSpec("videos", str(listing)),))
    server = serve(config)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        result = stub.MatchStream(_chunks(data, 1 << 20, "big")).result
    assert {m.signal for m in result.matches} == {"tmk", "vpdq"}, result
