"""Accept bytes as an image only if they fully decode in the format that was asked for.

A truncated download or an error page saved as ``.png`` is worse than no file: training code
trips over it weeks later. Decoding everything costs a few milliseconds and runs in a thread.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from batchgen.errors import BadImage, ImageTooLarge

__all__ = ["CheckedImage", "check_image", "decode_base64_image"]

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


def check_image(data: bytes, expected_format: str) -> CheckedImage:
    """Decode ``data`` completely; raise BadImage unless it is a whole image of that format."""
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
            image.load()
            width, height = image.size
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
