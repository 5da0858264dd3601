"""A natural-image corpus that installs offline, and the perceptual-hash literature's transforms.

Shared by ``benchmarks/fast_pdq.py`` and ``benchmarks/robustness.py``.

Pictures: scikit-image's bundled sample photographs (those that load without
network; synthetic ones such as checkerboards and phantoms left out), the PDQ
golden images under ``tests/data/pdq`` (Meta's ThreatExchange test set, BSD),
and four off-centre crops of the largest picture of each source, so that there
are more than 60. Every picture records its *source*: two pictures of the same
source (a crop and its original; Meta's modified copies of one bridge photo)
are not a distinct pair when counting false matches.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "pdq"

# Photographs bundled in the scikit-image wheel. Left out: "cat" (the same
# picture as "chelsea"), the stereo pair's right view (nearly the left one),
# the synthetic images (horse, binary_blobs, checkerboard, shepp_logan_phantom)
# and those that need a download (eagle, kidney, lily, ...).
SKIMAGE_NAMES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "cell",
    "colorwheel",
    "logo",
    "stereo_motorcycle",
)


@dataclass(frozen=True)
class Picture:
    """One test picture: RGB pixels, a name, and the source picture it comes from."""

    name: str
    source: str
    image: Image.Image


def _rgb(array: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, 3|4) uint8 -> RGB PIL image (alpha dropped, as convert does)."""
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def skimage_pictures() -> list[Picture]:
    """scikit-image's bundled photographs, each its own source."""
    import skimage.data  # slow to import: only when used

    pictures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SKIMAGE_NAMES:
            array = getattr(skimage.data, name)()
            if isinstance(array, tuple):  # stereo_motorcycle: (left, right, disparity)
                array = array[0]
            pictures.append(Picture(f"skimage/{name}", f"skimage/{name}", _rgb(array)))
    return pictures


def _golden_source(relative: str) -> str:
    # Meta's test set modifies one bridge photograph in several ways (blurred,
    # shrunk, squared, turned); 1.png is that photo too. One source for all.
    if "bridge" in relative or relative.endswith("modes/1.png"):
        return "golden/bridge"
    return f"golden/{relative}"


def golden_pictures(root: Path = GOLDEN) -> list[Picture]:
    """Every *.jpg and *.png under root (recursive, sorted), converted to RGB."""
    pictures = []
    for path in sorted([*root.rglob("*.jpg"), *root.rglob("*.png")]):
        relative = path.relative_to(root).as_posix()
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        pictures.append(Picture(f"golden/{relative}", _golden_source(relative), rgb))
    return pictures


def corner_crops(picture: Picture, keep: float = 0.6) -> list[Picture]:
    """Four crops keeping ``keep`` of each side, one at each corner (same source)."""
    width, height = picture.image.size
    w, h = round(width * keep), round(height * keep)
    corners = {
        "tl": (0, 0),
        "tr": (width - w, 0),
        "bl": (0, height - h),
        "br": (width - w, height - h),
    }
    return [
        Picture(
            f"{picture.name}#crop-{tag}", picture.source, picture.image.crop((x, y, x + w, y + h))
        )
        for tag, (x, y) in corners.items()
    ]


def natural_pictures(min_side_to_crop: int = 400) -> list[Picture]:
    """All pictures: scikit-image's, the golden ones, and corner crops of the largest
    picture of each source whose shorter side is at least ``min_side_to_crop``."""
    pictures = skimage_pictures() + golden_pictures()
    largest: dict[str, Picture] = {}
    for p in pictures:
        best = largest.get(p.source)
        if best is None or _pixels(p) > _pixels(best):
            largest[p.source] = p
    crops = [
        crop
        for p in largest.values()
        if min(p.image.size) >= min_side_to_crop
        for crop in corner_crops(p)
    ]
    return pictures + crops


def _pixels(picture: Picture) -> int:
    return picture.image.size[0] * picture.image.size[1]


# ----------------------------------------------------------------------------- bytes


def hamming(a: bytes, b: bytes) -> int:
    """Bits that differ between two hashes of equal length."""
    x = np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)
    return int(np.bitwise_count(x).sum())


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    """image as a baseline JPEG at ``quality`` (Pillow's defaults otherwise: 4:2:0)."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def resize_to_megapixels(image: Image.Image, megapixels: float) -> Image.Image:
    """image resized (Lanczos, up or down) to about ``megapixels`` MP, aspect kept."""
    width, height = image.size
    factor = (megapixels * 1e6 / (width * height)) ** 0.5
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Transform:
    """One edit of the perceptual-hash literature; the result is saved as JPEG ``quality``."""

    name: str
    apply: Callable[[Image.Image], Image.Image]
    quality: int = 90


def _scaled(factor: int) -> Callable[[Image.Image], Image.Image]:
    def apply(image: Image.Image) -> Image.Image:
        w, h = image.size
        return image.resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.LANCZOS)

    return apply


def _centre_crop(percent: float) -> Callable[[Image.Image], Image.Image]:
    """Trim ``percent`` % of the width from the left and from the right, and of the
    height from the top and from the bottom (10 % keeps the central 80 % x 80 %)."""

    def apply(image: Image.Image) -> Image.Image:
        w, h = image.size
        dx, dy = round(w * percent / 100), round(h * percent / 100)
        return image.crop((dx, dy, w - dx, h - dy))

    return apply


def _border(percent: float) -> Callable[[Image.Image], Image.Image]:
    """A black frame ``percent`` % of the width (left, right) and height (top, bottom)
    wide added around the picture: the picture grows."""

    def apply(image: Image.Image) -> Image.Image:
        w, h = image.size
        bx, by = max(1, round(w * percent / 100)), max(1, round(h * percent / 100))
        return ImageOps.expand(image, border=(bx, by, bx, by), fill=(0, 0, 0))

    return apply


def _rotated(degrees: float) -> Callable[[Image.Image], Image.Image]:
    def apply(image: Image.Image) -> Image.Image:
        # expand=False: same size, corners cut, black wedges filled in.
        return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)

    return apply


def _enhanced(
    kind: Callable[[Image.Image], ImageEnhance._Enhance], factor: float
) -> Callable[[Image.Image], Image.Image]:
    def apply(image: Image.Image) -> Image.Image:
        return kind(image).enhance(factor)

    return apply


def _same(image: Image.Image) -> Image.Image:
    return image


def _greyscale(image: Image.Image) -> Image.Image:
    return image.convert("L")  # saved as a one-channel JPEG; the decoder gives it back as RGB


OVERLAY_TEXT = "SAMPLE TEXT OVERLAY - 28 NOV 2026"


def _text_overlay(image: Image.Image) -> Image.Image:
    """One line of white, black-outlined text in Pillow's default font, sized to span
    90 % of the width, across the lower middle of the picture."""
    out = image.copy()
    w, h = out.size
    probe = ImageFont.load_default(size=100)
    left, _, right, _ = probe.getbbox(OVERLAY_TEXT)
    size = max(6, int(100 * 0.9 * w / max(1, right - left)))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(OVERLAY_TEXT)
    x = (w - (right - left)) // 2 - left
    y = int(h * 0.62) - (bottom - top) // 2 - top
    ImageDraw.Draw(out).text(
        (x, y), OVERLAY_TEXT, font=font, fill=(255, 255, 255),
        stroke_width=max(1, size // 16), stroke_fill=(0, 0, 0),
    )  # fmt: skip
    return out


TRANSFORMS: tuple[Transform, ...] = (
    Transform("jpeg q90", _same, 90),
    Transform("jpeg q70", _same, 70),
    Transform("jpeg q50", _same, 50),
    Transform("jpeg q30", _same, 30),
    Transform("scale 1/2", _scaled(2)),
    Transform("scale 1/4", _scaled(4)),
    Transform("crop 2%", _centre_crop(2)),
    Transform("crop 5%", _centre_crop(5)),
    Transform("crop 10%", _centre_crop(10)),
    Transform("border 5% black", _border(5)),
    Transform("rotate 1 deg", _rotated(1)),
    Transform("rotate 3 deg", _rotated(3)),
    Transform("rotate 5 deg", _rotated(5)),
    Transform("mirror", ImageOps.mirror),
    Transform("brightness +20%", _enhanced(ImageEnhance.Brightness, 1.2)),
    Transform("brightness -20%", _enhanced(ImageEnhance.Brightness, 0.8)),
    Transform("contrast +20%", _enhanced(ImageEnhance.Contrast, 1.2)),
    Transform("contrast -20%", _enhanced(ImageEnhance.Contrast, 0.8)),
    Transform("greyscale", _greyscale),
    Transform("text overlay", _text_overlay),
)
"""Every edit, applied to the original's pixels and then saved as JPEG."""
