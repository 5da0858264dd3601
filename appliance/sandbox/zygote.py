"""The zygote: a warm process that forks decode workers on request.

Starting a Python process that imports NumPy, Pillow, SciPy and numba and
loads the compiled PDQ kernels takes about a second; forking one that already
has takes milliseconds. So the server starts one zygote (a plain
``python -m appliance.sandbox.zygote`` process in a session of its own, so
that a Ctrl-C meant for the server does not reach the workers), which imports
everything, runs every pixel hash once on a tiny picture so that every
kernel is compiled, and then forks a worker each time the server sends it a
socket to serve. A worker that is killed (a decode past its time limit) is
replaced by another fork in milliseconds.

The zygote is single-threaded, so forking it is safe. It ignores SIGCHLD, so
the kernel reaps its exited workers. It exits when the server closes its
control socket (the server exited or shut it down).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys

from appliance.sandbox.protocol import FORK, PID, READY


def _warm() -> None:
    """Every pixel path once on tiny pictures, and the video path on a tiny
    clip, so workers never compile."""
    from PIL import Image

    from appliance.decode import DEFAULT_BOUNDS, probe
    from appliance.pixels import PixelJob, hash_file
    from appliance.signals import SIGNALS

    names = tuple(n for n, s in SIGNALS.items() if s.media == "image")
    # As the GPU backends ask: the groups with a device hasher left to the device.
    exported = tuple(n for n in names if SIGNALS[n].device_hasher)
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.linear_gradient("L").resize((96, 80)).convert("RGB").save(buffer, fmt)
        data = buffer.getvalue()
        layout = probe(data, DEFAULT_BOUNDS)
        for dihedral in (False, True):
            for export in ((), exported):
                hash_file(data, layout, PixelJob(names, dihedral, export=export))
    from appliance.hashers.video import VideoJob, hash_video
    from appliance.video.synthetic import tiny

    hash_video(tiny(), VideoJob(tuple(n for n, s in SIGNALS.items() if s.media == "video")))


def _fork_worker(control: socket.socket, fd: int) -> int:
    pid = os.fork()
    if pid:
        os.close(fd)
        return pid
    # The worker: nothing of the zygote's but its imports.
    try:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from appliance.sandbox.worker import serve

        serve(socket.socket(fileno=fd))
    finally:
        os._exit(0)


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # exited workers are reaped by the kernel
    _warm()
    control.sendall(READY)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not message:
            return  # the server closed the channel
        if message != FORK or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        control.sendall(PID.pack(_fork_worker(control, fds[0])))


if __name__ == "__main__":
    main(int(sys.argv[1]))
