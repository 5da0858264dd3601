"""Hostile files, made byte by byte: small files that cost much to decode.

Each generator builds the structure an attacker would send (a huge logical
screen, thousands of empty scans, millions of empty markers, an icon whose
directory lies about the picture it holds...) from a few parameters, so the
tests make small ones and ``benchmarks/hostile.py`` full-size ones. Pillow and
the standard library only; nothing here is ever written to disk.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

# -- PNG ----------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_gray(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """An 8-bit greyscale PNG of zero pixels, the rows deflated into one IDAT.

    1 x 100,000,000 is 194 KB: zlib shrinks runs of zeros about 1000 to 1.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    squeeze = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte 0, then the row's pixels
    parts = []
    rows_at_once = max(1, (1 << 20) // len(row))
    block = row * rows_at_once
    left = height
    while left:
        n = min(left, rows_at_once)
        parts.append(squeeze.compress(block if n == rows_at_once else row * n))
        left -= n
    parts.append(squeeze.flush())
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra_chunks
            + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b""))


def png_unknown_chunks(total_bytes: int, width: int = 8, height: int = 8) -> bytes:
    """A small PNG padded to about ``total_bytes`` with empty unknown ancillary
    chunks (12 bytes each): Pillow reads every one of them in Python."""
    empty = png_chunk(b"zzZz", b"")
    count = max(1, total_bytes // len(empty))
    return png_gray(width, height, empty * count)


# -- GIF ----------------------------------------------------------------------


def gif_screen(width: int, height: int) -> bytes:
    """A GIF whose logical screen is width x height, holding one 1x1 frame (35 bytes).

    Pillow decodes the first frame onto a canvas the size of the screen.
    """
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    data = b"\x02\x02\x4c\x01\x00"  # LZW minimum code size 2, one sub-block
    return header + palette + frame + data + b";"


def gif_frame_beyond_screen(screen: int, frame_at: int) -> bytes:
    """A GIF with a small screen and a 1x1 frame placed at (frame_at, frame_at):
    Pillow grows the canvas to hold the frame."""
    header = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", frame_at, frame_at, 1, 1, 0)
    return header + palette + frame + b"\x02\x02\x4c\x01\x00;"


def gif_comment_blocks(count: int) -> bytes:
    """A 4x4 GIF preceded by ``count`` one-byte comment extensions."""
    comments = b"!\xfe\x01x\x00" * count
    header = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x4c\x01\x00"
    return header + comments + frame + b";"


# -- WebP ---------------------------------------------------------------------


def webp_flat(width: int, height: int, lossless: bool = True) -> bytes:
    """A flat WebP, made by Pillow: 10000x10000 lossless is about 4 KB."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(
        buffer, "WEBP", lossless=lossless, quality=10, method=0
    )
    return buffer.getvalue()


def webp_animated_canvas(width: int, height: int) -> bytes:
    """An animated WebP of one 1x1 frame on a width x height canvas (about 70
    bytes): libwebp composes every frame onto a full-size RGBA canvas."""
    small = webp_flat(1, 1)
    vp8l = small[12:]  # the VP8L chunk of the 1x1 file
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x02\x00\x00\x00" + dims
    anim = b"ANIM" + struct.pack("<I", 6) + bytes(4) + struct.pack("<H", 0)
    frame = bytes(6) + bytes(6) + (100).to_bytes(3, "little") + b"\x00" + vp8l
    anmf = b"ANMF" + struct.pack("<I", len(frame)) + frame + (b"\x00" if len(frame) % 2 else b"")
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- JPEG ---------------------------------------------------------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


class _Bits:
    """An entropy-coded segment: bits in, bytes out with 0xFF stuffed."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.n = 0

    def done(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with ones
        return bytes(self.out)


def jpeg_empty_scans(scans: int, width: int = 2048, height: int = 2048) -> bytes:
    """A greyscale progressive JPEG: one DC scan, then ``scans`` AC scans that
    each code every block as one end-of-band run (a few bytes per scan).

    The decoder still visits every block in every scan, so its time grows with
    scans x blocks while the file stays small (15,000 scans: ~400 KB).
    """
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    head = b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64))
    head += _segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # DC table: one code "0" for difference category 0.
    head += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    # AC table: "0" -> EOB run of 2^14 + 14 bits, "10" -> EOB run of 2^0 (one block).
    head += _segment(0xC4, b"\x10" + bytes([1, 1] + [0] * 14) + b"\xe0\x00")
    dc = _Bits()
    for _ in range(blocks):
        dc.put(0, 1)
    body = _segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + dc.done()
    ac = _Bits()
    left = blocks
    while left >= 1 << 14:
        run = min(left, (1 << 15) - 1)
        ac.put(0, 1)
        ac.put(run - (1 << 14), 14)
        left -= run
    for _ in range(left):
        ac.put(0b10, 2)
    scan = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + ac.done()
    return head + body + scan * scans + b"\xff\xd9"


def jpeg_with_markers(base: bytes, total_bytes: int, marker: int = 0xFE) -> bytes:
    """``base`` (a JPEG) with empty segments of ``marker`` (COM by default)
    inserted after SOI until the file is about ``total_bytes``."""
    empty = struct.pack(">HH", 0xFF00 | marker, 2)
    count = max(1, (total_bytes - len(base)) // len(empty))
    return base[:2] + empty * count + base[2:]


def jpeg_photoshop_resources(base: bytes, segments: int) -> bytes:
    """``base`` with APP13 "Photoshop 3.0" segments full of tiny 8BIM
    resources, which Pillow parses one by one in Python."""
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", 0)
    payload = b"Photoshop 3.0\x00" + resource * ((65533 - 14) // len(resource))
    return base[:2] + _segment(0xED, payload) * segments + base[2:]


def jpeg_small(width: int = 64, height: int = 48, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(
        buffer, "JPEG", quality=80, progressive=progressive
    )
    return buffer.getvalue()


# -- containers Pillow can open but the appliance refuses -----------------------


def ico_lying(directory_size: int, png_size: int) -> bytes:
    """An ICO whose directory says directory_size x directory_size (<= 256) and
    whose one entry is a PNG of png_size x png_size."""
    png = png_gray(png_size, png_size)
    side = 0 if directory_size >= 256 else directory_size
    entry = struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def icns_lying(png_size: int) -> bytes:
    """An ICNS whose 'ic10' (1024x1024) entry holds a PNG of png_size x png_size."""
    png = png_gray(png_size, png_size)
    entry = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def eps_file() -> bytes:
    """A tiny Encapsulated PostScript file (Pillow hands these to Ghostscript)."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
            b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


def pdf_file() -> bytes:
    return b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


# -- TIFF and BMP -----------------------------------------------------------------


def tiff_tiles(width: int, height: int, tile: int, compression: int = 8) -> bytes:
    """A little-endian greyscale TIFF of width x height with one tile of
    tile x tile pixels (deflate-compressed zeros by default)."""
    raw = bytes(tile * tile)
    data = zlib.compress(raw, 9) if compression == 8 else raw
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, compression),
        (262, 3, 1, 1), (277, 3, 1, 1), (322, 4, 1, tile), (323, 4, 1, tile),
        (324, 4, 1, 0), (325, 4, 1, len(data)),
    ]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    body = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        if tag == 324:
            value = data_offset
        body += struct.pack("<HHII", tag, kind, count, value)
    body += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + bytes(body) + data


def bmp_rle8_eol(width: int, height: int) -> bytes:
    """An 8-bit RLE BMP whose every row is one pixel and an end-of-line code:
    4 bytes a row, and Pillow pads each row to its width one byte at a time in
    Python."""
    rle = b"\x01\x00\x00\x00" * height + b"\x00\x01"
    palette = bytes(4 * 256)
    offset = 14 + 40 + len(palette)
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 0, 0, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rle), 0, 0, offset) + header + palette + rle
