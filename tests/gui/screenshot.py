"""A screenshot without any image tool: Xvfb's ``-fbdir`` keeps its screen as an XWD file; this turns a
rectangle of it into a PNG (XWD and PNG are both simple enough to read and write with ``struct`` and ``zlib``)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

HEADER_FIELDS = 25
"""CARD32s in an XWD (version 7) header, before the window name."""


def _shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def xwd_to_png(xwd: Path, png: Path, box: tuple[int, int, int, int] | None = None) -> tuple[int, int]:
    """Write ``box`` (left, top, width, height; the whole screen if ``None``) of a TrueColor ZPixmap XWD
    (24/32 bits per pixel, as Xvfb writes it) as an RGB PNG; returns the PNG's size."""
    data = xwd.read_bytes()
    header = struct.unpack(f">{HEADER_FIELDS}I", data[:HEADER_FIELDS * 4])
    (header_size, version, pixmap_format, _depth, width, height, _xoffset, byte_order, _unit, _bit_order, _pad,
     bits_per_pixel, bytes_per_line, _visual, red_mask, green_mask, blue_mask, _bits_rgb, _entries, ncolors) = header[:20]
    if version != 7 or pixmap_format != 2 or bits_per_pixel not in (24, 32):
        raise ValueError(f"not a TrueColor ZPixmap XWD: version {version}, format {pixmap_format}, {bits_per_pixel} bpp")
    pixel_bytes = bits_per_pixel // 8
    start = header_size + ncolors * 12
    left, top, box_width, box_height = box or (0, 0, width, height)
    left, top = max(0, left), max(0, top)
    box_width, box_height = min(box_width, width - left), min(box_height, height - top)
    endian = "little" if byte_order == 0 else "big"
    shifts = [(mask, _shift(mask)) for mask in (red_mask, green_mask, blue_mask)]
    raw = bytearray()
    for y in range(top, top + box_height):
        raw.append(0)  # PNG filter: none
        line = start + y * bytes_per_line
        for x in range(left, left + box_width):
            offset = line + x * pixel_bytes
            pixel = int.from_bytes(data[offset:offset + pixel_bytes], endian)
            raw += bytes((pixel & mask) >> shift for mask, shift in shifts)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(b"\x89PNG\r\n\x1a\n"
                    + chunk(b"IHDR", struct.pack(">IIBBBBB", box_width, box_height, 8, 2, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
                    + chunk(b"IEND", b""))
    return box_width, box_height
