"""Before decoding: which format, whether it is read at all, and what decoding will cost.

``probe`` is the decode budget's first half (the second is ``admission``):

1. The format comes from the file's first bytes, and only the formats of the
   allow-list are read (``limits.image_formats``). Anything else is refused by
   name, among them formats that Pillow would hand to an external program or
   a temporary file (PostScript and EPS run Ghostscript), or whose containers
   hold other images (ICO, ICNS), or that need decoders this appliance does
   not vouch for.
2. The format's walker reads the container's structure (never its pixels),
   bounded in steps, and reports what Pillow will decode (``Layout``).
3. Pixels, scans, container items and frames are checked against their
   limits, and the memory that decoding and hashing will take is estimated
   from the layout (``Cost``). All of this happens before a single pixel is
   decoded, so a refusal costs microseconds to milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from appliance.config import IMAGE_FORMATS
from appliance.decode import bmp, gif, jpeg, png, tiff, webp
from appliance.decode.layout import Bounds, Layout, mode_bytes
from appliance.errors import ItemCode, ItemFault
from appliance.signals import pdq as _pdq_signal

Walker = Callable[[bytes | memoryview, Bounds], Layout]

# The formats the appliance reads, with their walkers. Pillow's name for each.
WALKERS: dict[str, Walker] = {
    "JPEG": jpeg.walk, "PNG": png.walk, "GIF": gif.walk, "WEBP": webp.walk,
    "BMP": bmp.walk, "TIFF": tiff.walk,
}
assert tuple(WALKERS) == IMAGE_FORMATS, "a walker for each format of config.IMAGE_FORMATS"

# Formats recognised only to be refused by name (first bytes -> name, why).
_REFUSED: tuple[tuple[bytes, int, str, str], ...] = (
    (b"%!PS", 0, "PostScript/EPS", "Pillow runs Ghostscript on a temporary file"),
    (b"\xc5\xd0\xd3\xc6", 0, "EPS", "Pillow runs Ghostscript on a temporary file"),
    (b"\x00\x00\x01\x00", 0, "ICO", "an icon holds other images"),
    (b"\x00\x00\x02\x00", 0, "CUR", "a cursor holds other images"),
    (b"icns", 0, "ICNS", "an icon holds other images"),
    (b"8BPS", 0, "PSD", "not read"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000", "not read"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000", "not read"),
    (b"qoif", 0, "QOI", "not read"),
    (b"DDS ", 0, "DDS", "not read"),
    (b"ftypavif", 4, "AVIF", "not read"),
    (b"ftypheic", 4, "HEIC", "not read"),
    (b"ftypheix", 4, "HEIC", "not read"),
    (b"ftypmif1", 4, "HEIF", "not read"),
    (b"\xd7\xcd\xc6\x9a", 0, "WMF", "not read"),
)
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (png.SIGNATURE, "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
)


def sniff(data: bytes | memoryview, allowed: tuple[str, ...] = IMAGE_FORMATS) -> str:
    """The allowed format ``data`` is in; ItemFault when it is none of them."""
    head = bytes(data[:16])
    found = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if found is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found = "WEBP"
    if found is None and head[:2] == b"BM" and head[6:10] == bytes(4):  # "BM" alone is text
        found = "BMP"
    if found is not None:
        if found not in allowed:
            raise ItemFault(ItemCode.UNSUPPORTED_FORMAT,
                            f"{found} is not among limits.image_formats {list(allowed)}")
        return found
    for magic, offset, name, why in _REFUSED:
        if head[offset : offset + len(magic)] == magic:
            if name in ("ICO", "CUR") and head[4:6] == b"\x00\x00":
                continue  # no images in it: a TGA header starts the same way
            raise ItemFault(ItemCode.UNSUPPORTED_FORMAT, f"{name} files are not decoded ({why})")
    if head.startswith(b"%PDF"):
        raise ItemFault(ItemCode.NOT_AN_IMAGE, "a PDF document; documents are not decoded")
    raise ItemFault(ItemCode.NOT_AN_IMAGE, "no image format recognised")


@dataclass(frozen=True)
class Cost:
    """What hashing one file will take, estimated from its layout (bytes)."""

    # Peak memory of the decode and the pixel hashes, over the worker's idle size.
    memory: int
    # Of which the RGB pixels handed to a device (0 when the CPU hashes them).
    exported: int = 0

    @property
    def picture_bytes(self) -> int:
        """The part that grows with the picture (``memory`` less the fixed slack):
        what tells a large picture from a small one."""
        return max(0, self.memory - SLACK)


@dataclass(frozen=True)
class Needs:
    """Which pixel work a request asks for, as far as memory is concerned."""

    pdq: bool = True
    family: bool = False
    # EXIF orientation variants: a second, turned copy of the picture.
    exif: bool = False
    # The RGB pixels go back to the parent (GPU backends) rather than to PDQ here.
    export_rgb: bool = False

    @classmethod
    def of(cls, groups: Collection[str], exported: Collection[str] = (),
           exif: bool = False) -> Needs:
        """The needs of hashing the signal groups ``groups`` (``SignalType.group``),
        of which ``exported`` go to a device as RGB pixels."""
        return cls(pdq=bool(RGB_GROUPS & set(groups)), family=bool(set(groups) - RGB_GROUPS),
                   exif=exif, export_rgb=bool(RGB_GROUPS & set(exported)))


# The image groups that hash an RGB array of the picture (with PDQ's strip
# buffers); the others start from Pillow's greyscale copy (the imagehash family).
RGB_GROUPS = frozenset({_pdq_signal.SIGNAL.group})


# Python objects, strip buffers, and the pages a freshly forked worker copies
# from the zygote as it first writes to them: noise next to a large picture.
SLACK = 24 << 20


def estimate(layout: Layout, needs: Needs) -> Cost:
    """Peak memory of decoding ``layout`` and hashing it as ``needs`` says.

    Two phases, whichever is larger: decoding (the picture as Pillow stores
    it, 4 bytes a pixel for RGB, plus what the format's decoder holds), then
    hashing (the picture, its RGB as an array for PDQ, PDQ's strip buffers,
    the greyscale copy the imagehash family starts from). Checked against
    measured peaks by tests/test_decode_cost.py.
    """
    w, h, pixels = layout.width, layout.height, layout.pixels
    picture = pixels * mode_bytes(layout.mode) + 16 * h  # rows and row pointers
    rgb = 3 * pixels if needs.pdq else 0
    pdq = 4 * w * (h // 128 + 200) + 512 * h if needs.pdq and not needs.export_rgb else 0
    # The greyscale copy, and wHash's float64 square of the largest power of 2
    # that fits the picture, with its wavelet coefficients.
    side = 1 << (min(w, h).bit_length() - 1)
    grey = pixels + 16 * h + 32 * side * side if needs.family else 0
    # The worker's copy of the file; Pillow's WebP plugin reads it all once more.
    held = layout.file_bytes * (2 if layout.format == "WEBP" else 1)
    decode = held + picture + layout.decoder_bytes
    hashing = held + picture + rgb + pdq + grey
    if layout.format == "WEBP":
        hashing += layout.decoder_bytes  # the animation decoder lives as long as the picture
    peak = max(decode, hashing) * (2 if needs.exif else 1)
    return Cost(memory=peak + SLACK, exported=rgb * (2 if needs.exif else 1)
                if needs.export_rgb else 0)


def probe(data: bytes | memoryview, bounds: Bounds,
          allowed: tuple[str, ...] = IMAGE_FORMATS) -> Layout:
    """The file's layout, or ItemFault: not an image, a format that is not
    read, a structure over its bounds, or more pixels than ``max_pixels``."""
    fmt = sniff(data, allowed)
    layout = replace(WALKERS[fmt](data, bounds), file_bytes=len(data))
    if layout.width <= 0 or layout.height <= 0:
        # Each walker refuses these; an empty picture would break ``estimate``.
        raise ItemFault(ItemCode.CORRUPT_IMAGE, f"{fmt}: a picture of {layout.width}x"
                                                f"{layout.height}")
    if layout.pixels > bounds.max_pixels:
        raise ItemFault(
            ItemCode.DECOMPRESSION_BOMB,
            f"{fmt} of {layout.width}x{layout.height} = {layout.pixels} pixels "
            f"exceeds the limit of {bounds.max_pixels}",
        )
    return layout
