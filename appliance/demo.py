"""The embedded demo: a few synthetic images and a list that matches them.

``appliance demo --out DIR`` writes them; ``appliance serve`` without
``--lists`` loads the same list, built in memory from the same images, so a
new user sees a match with nothing else to fetch. The images are drawn from a
fixed seed (shapes and gradients, nothing real) and the list's hashes are
computed by the appliance's own hashers, so the two always agree.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from appliance.hashers.digests import digest_bytes
from appliance.hashers.pdq import pdq_from_rgb, pdq_hex

LIST_NAME = "demo"
LIST_FILE = "demo-list.csv"


@dataclass(frozen=True)
class DemoSet:
    files: dict[str, bytes]
    list_csv: bytes
    # file name -> what the README says it should do against the list
    expectations: dict[str, str]


def _scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A deterministic picture: a smooth gradient under random shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(xx / (17 + seed) + c) * np.cos(yy / (23 + 2 * seed) - c)
            for c in (0.0, 1.3, 2.6)
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return image


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build() -> DemoSet:
    """The demo files and a CSV list that matches some of them."""
    first, second, clean = _scene(1), _scene(2), _scene(3)
    near = ImageEnhance.Brightness(first).enhance(1.08)
    files = {
        "listed-by-digest-and-pdq.png": _encode(first, "PNG"),
        "listed-by-pdq.jpg": _encode(second, "JPEG", quality=90),
        "near-copy-of-listed.jpg": _encode(near, "JPEG", quality=70),
        "not-listed.png": _encode(clean, "PNG"),
    }
    rows = ["id,category,md5,sha1,sha256,pdq"]
    for entry_id, name, with_digests in (
        ("demo-0001", "listed-by-digest-and-pdq.png", True),
        ("demo-0002", "listed-by-pdq.jpg", False),
    ):
        data = files[name]
        pdq, _ = pdq_from_rgb(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        digests = digest_bytes(data) if with_digests else {}
        cells = [digests[n].hex() if n in digests else "" for n in ("md5", "sha1", "sha256")]
        rows.append(",".join([entry_id, "demo", *cells, pdq_hex(pdq)]))
    expectations = {
        "listed-by-digest-and-pdq.png": "matches demo-0001 by md5, sha1, sha256 and pdq",
        "listed-by-pdq.jpg": "matches demo-0002 by pdq only",
        "near-copy-of-listed.jpg": "matches demo-0001 by pdq at a small distance",
        "not-listed.png": "matches nothing",
    }
    return DemoSet(files, ("\n".join(rows) + "\n").encode(), expectations)


def write(out: Path) -> list[Path]:
    """Write the demo images and ``demo-list.csv`` into ``out`` (made if it is
    missing; its parent must exist)."""
    demo = build()
    out.mkdir(exist_ok=True)
    written = []
    for name, data in {**demo.files, LIST_FILE: demo.list_csv}.items():
        path = out / name
        path.write_bytes(data)
        written.append(path)
    return written
