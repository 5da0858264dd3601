"""Video decoding (appliance.video.decode): every test video is encoded here, in memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

av = pytest.importorskip("av")

from appliance.config import LimitsConfig  # noqa: E402
from appliance.errors import ItemCode, ItemFault  # noqa: E402
from appliance.video import VideoLimits, synthetic  # noqa: E402
from appliance.video.decode import Frame, decode_frames, open_video, sniff  # noqa: E402

_has_encoder, _source = synthetic.has_encoder, synthetic.clip
encode = synthetic.encode


H264 = "libx264" if _has_encoder("libx264") else "mpeg4"
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mp4-h264": ("mp4", H264, {}),
    "mov-h264": ("mov", H264, {}),
    "mkv-h264": ("matroska", H264, {}),
    "mp4-h265": ("mp4", "libx265", {}),
    "webm-vp8": ("webm", "libvpx", {}),
    "webm-vp9": ("webm", "libvpx-vp9", {}),
    "avi-mpeg4": ("avi", "mpeg4", {}),
    "gif": ("gif", "gif", {"pix": "rgb8", "rate": 10}),
}
# Lossy codecs at their defaults on smooth 64x48 frames; GIF's rgb8 palette
# keeps 3, 3 and 2 bits of red, green and blue.
MAX_MEAN_ERROR = 12.0
MAX_GIF_ERROR = 32.0


@pytest.mark.parametrize("name", list(CASES))
def test_each_container_and_codec_decodes_to_its_frames_in_order(name: str) -> None:
    fmt, codec, kw = CASES[name]
    if not _has_encoder(codec):
        pytest.skip(f"this PyAV wheel has no {codec} encoder")
    rate = kw.get("rate", 25)
    data = encode(fmt, codec, **kw)
    with open_video(data) as video:
        info = video.info
        assert (info.width, info.height) == (64, 48)
        assert info.frame_bytes == 64 * 48 * 3 and info.decode_bytes > info.frame_bytes
        if name != "gif":
            assert info.average_rate == pytest.approx(rate, rel=0.01)
        frames = list(video.frames())
    assert [f.index for f in frames] == list(range(8))
    for i, frame in enumerate(frames):
        assert frame.rgb.shape == (48, 64, 3) and frame.rgb.dtype == np.uint8
        assert frame.rgb.flags.c_contiguous
        error = np.abs(frame.rgb.astype(int) - _source(i, 64, 48)).mean()
        assert error < (MAX_GIF_ERROR if name == "gif" else MAX_MEAN_ERROR), (i, error)
        assert frame.seconds == pytest.approx(i / rate, abs=0.011), i
        assert frame.rotation == 0


def test_odd_dimensions() -> None:
    data = encode("mp4", "mpeg4", width=33, height=17)
    frames = list(decode_frames(data))
    assert len(frames) == 8 and all(f.rgb.shape == (17, 33, 3) for f in frames)
    assert np.abs(frames[3].rgb.astype(int) - _source(3, 33, 17)).mean() < 2 * MAX_MEAN_ERROR


def test_variable_frame_rate_keeps_each_frames_timestamp() -> None:
    pts = [0, 40, 120, 130, 300, 310, 500, 1000]  # milliseconds
    data = encode("matroska", H264, pts=pts, time_base=Fraction(1, 1000))
    frames = list(decode_frames(data))
    assert [f.seconds for f in frames] == pytest.approx([p / 1000 for p in pts], abs=0.002)


def test_rotation_metadata_is_reported_and_pixels_kept_as_stored() -> None:
    data = encode("mp4", H264, rotation=90)
    frames = list(decode_frames(data))
    assert {f.rotation for f in frames} == {90}
    assert frames[0].rgb.shape == (48, 64, 3)


def _fault(data: bytes, limits: VideoLimits | None = None) -> str:
    with pytest.raises(ItemFault) as info:
        for _ in decode_frames(data, limits):
            pass
    return info.value.code


def _wav() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buf.getvalue()


def _aac_in_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000, layout="mono")
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


def test_what_is_not_a_video() -> None:
    assert _fault(_wav()) == ItemCode.NOT_A_VIDEO  # RIFF, but WAVE
    assert _fault(_aac_in_mp4()) == ItemCode.NOT_A_VIDEO  # an MP4 with audio only
    assert _fault(_png()) == ItemCode.NOT_A_VIDEO
    assert _fault(bytes(range(256)) * 8) == ItemCode.NOT_A_VIDEO
    assert _fault(b"") == ItemCode.NOT_A_VIDEO


def test_garbage_behind_a_valid_signature_is_corrupt() -> None:
    rng = np.random.default_rng(0)
    for head in (b"\x00\x00\x00\x18ftypisom", b"\x1a\x45\xdf\xa3"):
        assert _fault(head + rng.bytes(4096)) == ItemCode.CORRUPT_VIDEO, head
    # FFmpeg's AVI demuxer opens a header it cannot make sense of with no
    # stream in it: no video stream, so not a video.
    assert _fault(b"RIFF\0\0\0\0AVI " + rng.bytes(4096)) in (
        ItemCode.CORRUPT_VIDEO, ItemCode.NOT_A_VIDEO)


def test_a_truncated_mp4() -> None:
    # FFmpeg's MP4 muxer writes the index (moov) after the frames: the first
    # half has no index and cannot be opened.
    data = encode("mp4", H264, frames=30)
    assert _fault(data[: len(data) // 2]) == ItemCode.CORRUPT_VIDEO
    # With the index first (a fragmented MP4), the frames before the cut are
    # decoded and given; the packet the cut went through breaks the stream,
    # and the iteration ends in CORRUPT_VIDEO (a cut on a packet's boundary
    # would just end it): a consumer has the frames and knows the file is
    # damaged. The missing frames are never invented. (MPEG-4 part 2: no
    # B-frames, so each frame comes out of the decoder as its packet goes in.)
    fast = encode("mp4", "mpeg4", frames=30, options={"movflags": "frag_keyframe+empty_moov"})
    got: list[Frame] = []
    try:
        got.extend(decode_frames(fast[: len(fast) // 2]))
    except ItemFault as exc:
        assert exc.code == ItemCode.CORRUPT_VIDEO
    assert 0 < len(got) < 30
    assert np.abs(got[0].rgb.astype(int) - _source(0, 64, 48)).mean() < MAX_MEAN_ERROR


def test_limits_refuse_from_the_header_before_decoding() -> None:
    data = encode("mp4", H264, frames=50)  # 2 s at 25 fps
    for limits, code in (
        (VideoLimits(max_video_seconds=1.0), ItemCode.VIDEO_TOO_LONG),
        (VideoLimits(max_video_frames=10), ItemCode.VIDEO_TOO_LONG),
        (VideoLimits(max_video_pixels=64 * 48 - 1), ItemCode.VIDEO_TOO_LARGE),
    ):
        with pytest.raises(ItemFault) as info:
            open_video(data, limits)
        assert info.value.code == code, limits


def test_limits_hold_while_decoding_when_the_header_is_silent() -> None:
    # Matroska written to a stream has no duration nor frame count in its header.
    data = encode("matroska", H264, frames=50)
    with open_video(data) as video:
        assert video.info.frames == 0
    got: list[Frame] = []
    with pytest.raises(ItemFault) as info, open_video(data, VideoLimits(max_video_frames=10)) as v:
        got.extend(v.frames())
    assert info.value.code == ItemCode.VIDEO_TOO_LONG and len(got) == 10


def test_the_deadline_is_checked_per_frame() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every look at the clock costs a second
        return now[0]

    data = encode("mp4", H264, frames=50)
    with pytest.raises(ItemFault) as info, \
            open_video(data, VideoLimits(max_video_decode_seconds=10.0), clock=clock) as v:
        for _ in v.frames():
            pass
    assert info.value.code == ItemCode.DECODE_TIMEOUT
    assert now[0] < 20  # stopped at the deadline, not at the end


def test_the_servers_limits_are_video_limits() -> None:
    limits = LimitsConfig(max_video_frames=3)
    with pytest.raises(ItemFault) as info:
        open_video(encode("mp4", H264), limits)
    assert info.value.code == ItemCode.VIDEO_TOO_LONG


@pytest.fixture
def local_video(tmp_path: Path) -> Path:
    path = tmp_path / "local.mp4"
    path.write_bytes(encode("mp4", H264))
    return path


def _playlists(path: Path) -> dict[str, bytes]:
    return {
        "hls": (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{path}\n"
                "#EXT-X-ENDLIST\n").encode(),
        "concat": f"ffconcat version 1.0\nfile '{path}'\n".encode(),
    }


def test_playlists_are_refused_never_read(local_video: Path) -> None:
    for name, data in _playlists(local_video).items():
        assert _fault(data) == ItemCode.NOT_A_VIDEO, name


def test_ffmpeg_itself_refuses_playlist_demuxers_and_other_files(local_video: Path) -> None:
    """Beneath the sniff: were FFmpeg handed these demuxers, the whitelists refuse them."""
    from appliance.video.decode import _open

    for name, data in _playlists(local_video).items():
        with pytest.raises(ItemFault) as info:
            _open(data, name).close()
        assert info.value.code == ItemCode.CORRUPT_VIDEO, name
    # And unconfined, FFmpeg would have read the local file through the playlist:
    # the refusal above is the whitelist's doing.
    with av.open(io.BytesIO(_playlists(local_video)["hls"]), format="hls") as free:
        assert sum(1 for _ in free.decode(video=0)) == 8


def test_sniff_names_only_the_allowed_demuxers() -> None:
    assert sniff(encode("mp4", H264)) == "mov"
    assert sniff(encode("webm", "libvpx")) == "matroska" if _has_encoder("libvpx") else True
    assert sniff(encode("avi", "mpeg4")) == "avi"
    with pytest.raises(ItemFault):
        sniff(b"\x00\x00\x00\x18ftypheic" + bytes(16))


_WATCH = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from appliance.video.decode import decode_frames
    from appliance.errors import ItemFault
    out = {}
    for name, hexed in json.loads(sys.stdin.read()).items():
        try:
            out[name] = sum(1 for _ in decode_frames(bytes.fromhex(hexed)))
        except ItemFault as exc:
            out[name] = exc.code
    print(json.dumps(out))
""")


def test_decoding_writes_no_file(tmp_path: Path, local_video: Path) -> None:
    files = {name: encode(fmt, codec, **kw) for name, (fmt, codec, kw) in CASES.items()
             if _has_encoder(codec)}
    files.update(_playlists(local_video))
    work, tmp, home = (tmp_path / n for n in ("cwd", "tmp", "home"))
    for folder in (work, tmp, home):
        folder.mkdir()
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    env = {**os.environ, "TMPDIR": str(tmp), "HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", _WATCH, str(Path(__file__).parents[1])],
                         input=json.dumps({k: v.hex() for k, v in files.items()}),
                         capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.splitlines()[-1])
    assert counts["hls"] == counts["concat"] == ItemCode.NOT_A_VIDEO
    assert all(counts[name] == 8 for name in files if name in CASES), counts
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == [] and list(home.iterdir()) == []
    if os.path.isdir("/dev/shm"):
        assert set(os.listdir("/dev/shm")) - before == set()
