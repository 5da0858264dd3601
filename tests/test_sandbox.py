"""Decode workers: the same hashes as inline, killed past their time, confined."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.decode import DEFAULT_BOUNDS, Bounds, Cost, Needs, estimate, probe
from appliance.errors import ItemCode, ItemFault
from appliance.pixels import PixelJob, hash_file
from appliance.sandbox import InlineDecoders, ProcessDecoders, shared_zygote
from appliance.sandbox.pool import Zygote
from appliance.sandbox.protocol import ChannelClosed, parse_reply, read_frame, send_frame
from tests import hostile
from tests.helpers import encode, scene_image, synthetic_image

ALL = ("pdq", "phash", "dhash", "ahash", "whash")


@pytest.fixture(scope="module")
def decoders():
    d = ProcessDecoders(2)
    d.start()
    yield d
    d.close()


def _run(decoders, data: bytes, job: PixelJob, seconds: float = 30.0, deadline=None,
         bounds: Bounds = DEFAULT_BOUNDS, cost: Cost | None = None):
    layout = probe(data, bounds)
    cost = cost or estimate(layout, Needs(family=True, export_rgb=bool(job.export)))
    return decoders.run(data, layout, job, cost, seconds, deadline)


def _files() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": encode(synthetic_image(1, (97, 71)), "PNG"),
        "jpeg": encode(scene_image(2, (320, 240)), "JPEG"),
        "exif-jpeg": encode(scene_image(3, (200, 120)), "JPEG", exif=exif.tobytes()),
        "gif": encode(synthetic_image(4, (50, 40)), "GIF"),
        "webp": encode(synthetic_image(5, (64, 64)), "WEBP"),
        "tiff-16": encode(synthetic_image(6, (40, 30)).convert("L").convert("I;16"), "TIFF"),
        "tiny": encode(synthetic_image(7, (3, 2)), "PNG"),
    }


@pytest.mark.parametrize("name", sorted(_files()))
@pytest.mark.parametrize("job", [
    PixelJob(ALL), PixelJob(("pdq",), pdq_dihedral=True),
    PixelJob(ALL, exif_orientation=True), PixelJob(("pdq", "whash"), export=("pdq",)),
    PixelJob(("pdq",), fast_min_side=64),
], ids=["all", "dihedral", "exif", "export", "fast"])
def test_a_worker_gives_what_inline_gives(decoders, name: str, job: PixelJob) -> None:
    data = _files()[name]
    inline = _run(InlineDecoders(), data, job)
    worker = _run(decoders, data, job)
    assert worker.hashes == inline.hashes
    assert len(worker.images) == len(inline.images)
    for a, b in zip(worker.images, inline.images, strict=True):
        assert a.dtype == np.uint8 and a.shape == b.shape and np.array_equal(a, b)


def test_faults_come_back_typed(decoders) -> None:
    data = encode(synthetic_image(8, (200, 150)), "PNG")
    with pytest.raises(ItemFault) as info:
        _run(decoders, data[: len(data) // 2], PixelJob(("pdq",)))
    assert info.value.code == ItemCode.CORRUPT_IMAGE


def _slow() -> tuple[bytes, Bounds]:
    """A progressive JPEG whose 3000 empty scans take seconds (allowed by its bounds)."""
    return hostile.jpeg_empty_scans(3000, 4096, 4096), Bounds(10**8, 10**6, 10**6, 10**4)


def test_a_decode_past_its_time_is_killed_and_the_worker_replaced(decoders) -> None:
    data, bounds = _slow()
    started = time.monotonic()
    with pytest.raises(ItemFault) as info:
        _run(decoders, data, PixelJob(("pdq",)), seconds=0.3, bounds=bounds)
    assert info.value.code == ItemCode.DECODE_TIMEOUT
    assert time.monotonic() - started < 5  # killed, not waited for
    # The next file gets a fresh worker at once.
    ok = _run(decoders, encode(synthetic_image(9), "PNG"), PixelJob(("pdq",)))
    assert ok.hashes[0].signal == "pdq"


def test_a_request_deadline_stops_the_decode(decoders) -> None:
    data, bounds = _slow()
    with pytest.raises(ItemFault) as info:
        _run(decoders, data, PixelJob(("pdq",)), seconds=30, deadline=time.monotonic() + 0.3,
             bounds=bounds)
    assert info.value.code == ItemCode.DEADLINE_EXCEEDED


def test_a_decode_over_its_memory_fails_in_the_worker(decoders) -> None:
    data = hostile.gif_screen(6000, 6000)  # 36 MP: ~150 MB to decode and hash
    with pytest.raises(ItemFault) as info:
        _run(decoders, data, PixelJob(("pdq",)), cost=Cost(memory=1 << 20))
    assert info.value.code == ItemCode.DECOMPRESSION_BOMB
    assert _run(decoders, data, PixelJob(("pdq",))).hashes[0].quality == 0  # flat, but hashed


def _slow_job_running(decoders: ProcessDecoders) -> tuple[threading.Thread, list[str]]:
    """A slow decode started in a thread, once its worker is busy; its fault codes."""
    data, bounds = _slow()
    codes: list[str] = []

    def slow_job() -> None:
        try:
            _run(decoders, data, PixelJob(("pdq",)), bounds=bounds)
        except ItemFault as fault:
            codes.append(fault.code)

    thread = threading.Thread(target=slow_job)
    thread.start()
    deadline = time.monotonic() + 30
    while not decoders.pool._busy and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread, codes


def test_a_worker_that_dies_fails_its_file_only() -> None:
    decoders = ProcessDecoders(1)
    thread, codes = _slow_job_running(decoders)
    [worker] = list(decoders.pool._busy)
    os.kill(worker.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    thread.join(30)
    assert codes == [ItemCode.DECODER_FAILED]
    assert _run(decoders, encode(synthetic_image(10), "PNG"), PixelJob(("pdq",))).hashes
    decoders.close()


def test_close_stops_busy_workers() -> None:
    decoders = ProcessDecoders(1)
    thread, codes = _slow_job_running(decoders)
    started = time.monotonic()
    decoders.close()
    thread.join(30)
    assert codes == [ItemCode.DECODER_FAILED] and time.monotonic() - started < 5
    with pytest.raises(ItemFault):
        _run(decoders, encode(synthetic_image(11), "PNG"), PixelJob(("pdq",)))


def test_the_zygote_is_restarted_when_it_dies() -> None:
    zygote = Zygote()
    decoders = ProcessDecoders(1, zygote)
    png = encode(synthetic_image(12), "PNG")
    first = _run(decoders, png, PixelJob(("pdq",)))
    assert zygote._proc is not None
    zygote._proc.kill()
    zygote._proc.wait()
    for worker in list(decoders.pool._idle):
        worker.kill()
    decoders.pool._idle.clear()
    assert _run(decoders, png, PixelJob(("pdq",))).hashes == first.hashes
    assert zygote.starts == 2
    decoders.close()
    zygote.close()


def test_workers_cannot_write_files_or_dump_core(tmp_path: Path) -> None:
    target = tmp_path / "written"
    code = (
        "import resource, sys\n"
        "from appliance.sandbox.worker import confine\n"
        "confine()\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        f"f = open({str(target)!r}, 'w')\n"
        "try:\n"
        "    f.write('x' * 10); f.flush()\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused 27" in out.stdout, out.stderr  # EFBIG
    assert target.stat().st_size == 0


def test_the_shared_zygote_is_one_process() -> None:
    assert shared_zygote() is shared_zygote()


# -- the protocol: a worker's reply is checked before anything is used -----------------


def _reply(**header):
    return {"ok": True, "hashes": [], "images": [], **header}


@pytest.mark.parametrize(("header", "payload"), [
    ({"ok": False, "code": "NO_SUCH_CODE", "message": "x"}, b""),
    (_reply(hashes=[["md5", "00" * 16, None, ""]]), b""),  # not asked for
    (_reply(hashes=[["pdq", "00" * 31, 50, ""]]), b""),  # wrong width
    (_reply(hashes=[["pdq", "00" * 32, 101, ""]]), b""),  # quality out of range
    (_reply(hashes=[["pdq", "zz" * 32, 50, ""]]), b""),  # not hex
    (_reply(images=[[2, 2]]), bytes(11)),  # pixels do not fill the shape
    (_reply(images=[[2, 2]]), bytes(13)),  # bytes left over
    (_reply(images=[[0, 5]]), b""),
    (_reply(hashes="nope"), b""),
])
def test_malformed_replies_are_refused(header, payload) -> None:
    with pytest.raises(ChannelClosed):
        parse_reply(header, bytearray(payload), ("pdq",))


def test_frames_over_their_bounds_are_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_frame(a, {"x": 1}, bytes(100))
        with pytest.raises(ChannelClosed):
            read_frame(b, 99)
        a2, b2 = socket.socketpair()
        with a2, b2:
            send_frame(a2, {"x": 1}, b"", [memoryview(bytes(10))])
            header, payload = read_frame(b2, 10)
            assert header == {"x": 1} and len(payload) == 10


def test_inline_is_the_reference_of_the_worker() -> None:
    data = encode(scene_image(13, (300, 200)), "PNG")
    layout = probe(data, DEFAULT_BOUNDS)
    direct = hash_file(data, layout, PixelJob(ALL))
    assert _run(InlineDecoders(), data, PixelJob(ALL)).hashes == direct.hashes


def test_killed_workers_are_counted_by_reason() -> None:
    from appliance.metrics import Metrics

    metrics = Metrics()
    decoders = ProcessDecoders(1, metrics=metrics)
    data, bounds = _slow()
    with pytest.raises(ItemFault):
        _run(decoders, data, PixelJob(("pdq",)), seconds=0.2, bounds=bounds)
    decoders.close()

    def value(reason: str) -> float:
        sample = metrics.registry.get_sample_value(
            "appliance_decode_workers_killed_total", {"reason": reason})
        return sample or 0.0

    assert value("timeout") == 1 and value("failed") == 0


def test_a_bug_in_a_worker_is_told_by_type_and_traced_for_the_log() -> None:
    decoders = ProcessDecoders(1)
    frame, payload = decoders.pool.exchange({"layout": {}}, b"x", 10.0, None, 1 << 20)
    reply = parse_reply(frame, payload, ("pdq",))
    decoders.close()
    assert reply.code == ItemCode.INTERNAL
    assert reply.message == "internal error in the decoder: KeyError"  # no detail to clients
    assert "Traceback" in reply.trace and "KeyError" in reply.trace
