"""Accept bytes as an image only if they fully decode in the format that was asked for.

A truncated download or an error page saved as ``.png`` is worse than no file: training code
trips over it weeks later. Decoding everything costs a few milliseconds and runs in a thread.

Before anything is decoded, the header's width and height are held against the pixels the
request asked for (at most ``PIXEL_SLACK`` times as many, and never more than ``MAX_PIXELS``):
a 12000x12000 PNG sent for a 512*512 request would take 600 MB to decode (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from batchgen.errors import BadImage, ImageTooLarge

__all__ = ["MAX_PIXELS", "PIXEL_SLACK", "CheckedImage", "check_image", "decode_base64_image",
           "requested_pixels"]

#: an image may have at most this many times the pixels its request asked for
PIXEL_SLACK = 4
#: and never more than this many pixels (8192*8192), whatever was asked for
MAX_PIXELS = 8192 * 8192

# Pixels are checked here from the header, before Pillow decodes anything; its own warning
# for large images would only repeat that check (and print the provider's numbers raw).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[*xX]\s*(\d{1,6})\s*$")

PIL_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """Bytes that decoded as an image, and what they decoded to."""

    data: bytes
    format: str
    width: int
    height: int


def requested_pixels(size: object) -> int | None:
    """The pixels of a request's ``size`` ("W*H"), None when it names none."""
    match = _SIZE.match(size) if isinstance(size, str) else None
    return int(match[1]) * int(match[2]) if match else None


def check_image(data: bytes, expected_format: str, pixels: int | None = None) -> CheckedImage:
    """Decode ``data`` completely; raise BadImage unless it is a whole image of that format,
    of at most ``PIXEL_SLACK`` times ``pixels`` (the size asked for) and ``MAX_PIXELS``."""
    cap = MAX_PIXELS if pixels is None else min(MAX_PIXELS, PIXEL_SLACK * pixels)
    want = PIL_FORMATS.get(expected_format.lower())
    if want is None:
        raise BadImage(f"unknown image format {expected_format!r}")
    if not data:
        raise BadImage("the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
            if found != want:
                raise BadImage(f"expected a {want} image, got {found or 'something else'} "
                               f"({len(data)} bytes)")
            width, height = image.size
            if width * height > cap:
                why = "the most batchgen decodes" if cap == MAX_PIXELS else \
                    f"{PIXEL_SLACK}x the size asked for"
                raise ImageTooLarge(f"the image is {width}x{height}, more than {cap:,} pixels "
                                    f"({why}); not decoded")
            image.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"the bytes are not a complete {want} image ({len(data)} bytes: {exc})") from exc
    except Image.DecompressionBombError as exc:
        raise BadImage(f"the image is absurdly large ({exc})") from exc
    return CheckedImage(data=data, format=expected_format.lower(), width=width, height=height)


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """Decode the base64 image field, with or without a ``data:image/...;base64,`` prefix."""
    body = _WHITESPACE.sub("", _DATA_URL.sub("", text.strip(), count=1))
    if len(body) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"the base64 image is larger than the {max_bytes} byte limit")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"the base64 image field is not valid base64 ({exc})") from exc
