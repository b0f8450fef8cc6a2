"""Writing a contact sheet as PNG fast, when the ``isal`` package is installed.

A sheet is tens of megabytes of pixels, and encoding it is most of ``grid``'s time. Pillow's
PNG encoder tries four row filters on every row before compressing; here every row is left
unfiltered and compressed with ISA-L's deflate at level 1, which is about 2.5x less CPU for a
file about half again as large (the sheet is for looking at; the pixels are the same, PNG is
lossless). Without ``isal``, Pillow writes the file as before.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

try:  # optional: ``pip install isal``
    from isal import isal_zlib
except ImportError:  # pragma: no cover - depends on what is installed
    isal_zlib = None

__all__ = ["fast_png_available", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BAND_BYTES = 1 << 20


def fast_png_available() -> bool:
    return isal_zlib is not None


def write_png(image: Image.Image, file: Path, **pillow_args: Any) -> None:
    """``image`` as a PNG file: rows unfiltered, ISA-L deflate, when the image is RGB and
    ``isal`` is installed; otherwise Pillow's encoder with ``pillow_args``."""
    if isal_zlib is None or image.mode != "RGB":
        image.save(file, format="PNG", **pillow_args)
        return
    width, height = image.size
    stride = width * 3
    band = max(1, _BAND_BYTES // stride)  # rows packed at a time: memory stays a band
    packer = isal_zlib.compressobj(1)
    with open(file, "wb") as out:
        out.write(_SIGNATURE)
        out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for top in range(0, height, band):
            rows = memoryview(image.crop((0, top, width, min(height, top + band))).tobytes())
            parts = []
            for offset in range(0, len(rows), stride):
                parts.append(packer.compress(b"\0"))  # filter type 0: the row as it is
                parts.append(packer.compress(rows[offset:offset + stride]))
            rows.release()
            _write_idat(out, b"".join(parts))
        _write_idat(out, packer.flush())
        out.write(_chunk(b"IEND", b""))


def _write_idat(out: BinaryIO, data: bytes) -> None:
    if data:
        out.write(_chunk(b"IDAT", data))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
