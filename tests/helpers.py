"""Shared test helpers: synthetic images and a real server on a background loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from appliance.batching import Clock
from appliance.config import Config, LimitsConfig, ListSpec, MatchingConfig, ServerConfig
from appliance.loading import Loaded
from appliance.server import ServerHandle, create_server
from tests.imaging import encode, synthetic_image

__all__ = ["encode", "synthetic_image"]  # re-exported: most tests import them from here

T = TypeVar("T")


def scene_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photograph-like picture: smooth gradients under hard-edged shapes.

    Unlike ``synthetic_image`` (fine texture that PDQ's 64x64 sampling aliases),
    its PDQ is stable under rotations and flips, as a photograph's is.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([127 + 100 * np.sin(xx / (20 + 5 * c) + c) * np.cos(yy / (25 + 3 * c) - c)
                     for c in range(3)], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return image


def picture_field(
    rng: np.random.Generator, content: str, h: int, w: int, c: int
) -> NDArray[np.float64]:
    """(h, w, c) float64 in [0, 1]: a synthetic picture before it is quantised for
    its mode. ``content``: noise, gradient, natural, flat, stripes, halves, dots.
    Flat, halves and dots make many equal coefficients, so median ties."""
    yy = np.linspace(0.0, 1.0, h)[:, None, None]
    xx = np.linspace(0.0, 1.0, w)[None, :, None]
    shape = (h, w, c)
    if content == "noise":
        return rng.random(shape)
    if content == "gradient":
        a, b = rng.uniform(-1, 1, (2, 1, 1, c))
        return np.broadcast_to((a * yy + b * xx + 2) / 4, shape)
    if content == "natural":
        fy, fx = rng.uniform(1, 12, 2)
        phase = rng.uniform(0, 6, (1, 1, c))
        wave = 0.5 + 0.3 * np.sin(fy * 6 * yy + phase) * np.cos(fx * 6 * xx + 2 * phase)
        noisy: NDArray[np.float64] = np.clip(wave + rng.normal(0, 0.05, shape), 0, 1)
        return noisy
    if content == "flat":
        return np.broadcast_to(rng.random((1, 1, c)), shape)
    if content == "stripes":
        period = int(rng.integers(1, 9))
        axis = yy if rng.random() < 0.5 else xx
        stripes = (np.floor(axis * max(h, w) / period) % 2).astype(np.float64)
        return np.broadcast_to(stripes, shape)
    if content == "halves":
        return np.broadcast_to(np.where(xx < rng.random(), 0.2, 0.7), shape)
    out = np.full(shape, rng.random())  # dots: a flat picture with a few bright pixels
    n = max(1, h * w // 500)
    out[rng.integers(0, h, n), rng.integers(0, w, n)] = 1.0
    return out


def make_config(**limits: Any) -> Config:
    return Config(
        server=ServerConfig(host="127.0.0.1", port=0, metrics_port=0, workers=2,
                            grace_seconds=1.0),
        limits=LimitsConfig(**limits),
        matching=MatchingConfig(),
    )


def with_lists(*specs: ListSpec, **server: Any) -> Config:
    """``make_config()`` loading ``specs``, with ``server`` settings changed."""
    config = make_config()
    return replace(config, lists=specs, server=replace(config.server, **server))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class ServerThread:
    """A real grpc.aio server on its own event loop thread, for sync test code."""

    def __init__(
        self,
        config: Config,
        loader: Callable[[Config], Loaded] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle: ServerHandle = self.call(create_server(config, loader, clock=clock))
        self.address = f"127.0.0.1:{self.handle.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the server's loop (e.g. advance a FakeClock) and wait for it."""

        async def call() -> None:
            fn()
            await asyncio.sleep(0.05)  # let the woken tasks run

        self.call(call())

    def wait_ready(self) -> Loaded:
        return self.call(self.handle.wait_ready())

    def stop(self) -> None:
        """Stop the server and its loop; again is a no-op (a test may stop one early)."""
        if self.loop.is_closed():
            return
        self.call(self.handle.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start_server_process(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    """``appliance serve --port 0 --metrics-port 0 ARGS`` as a new process.

    Returns (process, gRPC address, its ready line) once it is ready; standard
    error stays open for the caller to read further log lines.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--port", "0", "--metrics-port", "0",
         *args],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "appliance ready" in line:
            found = re.search(r"grpc=(\S+)", line)
            assert found, line
            return proc, found.group(1), line
    proc.kill()
    raise AssertionError(f"the server exited before it was ready: {proc.wait()}")
