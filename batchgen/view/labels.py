"""Label text for contact sheets: the font, word wrap by pixel width, and glyphs a font lacks.

Labels keep one readable size and wrap onto more lines instead of shrinking (the complaint
about grids whose long labels end up unreadably small). Pillow's built-in font is the default,
the same on every machine but ASCII only; a TrueType file (``--font``) covers other scripts.
A character a font has no glyph for is drawn as its "missing" box, so it is found by comparing
its bitmap with that box's, and reported rather than left to look like a bug in the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from batchgen.errors import UsageError

__all__ = ["ELLIPSIS", "LabelFont", "SYSTEM_FONTS"]

ELLIPSIS = "..."
#: TrueType fonts with wide coverage that a Debian or Ubuntu machine often has; offered in the
#: warning about missing glyphs when one of them is there.
SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
_NOT_A_CHARACTER = "\U0010fffd"  # private use: no font draws it, so it shows the missing box


@dataclass(frozen=True)
class LabelFont:
    """A font at one size: ``path`` None is Pillow's built-in font."""

    path: str | None
    size: int

    @property
    def font(self) -> ImageFont.FreeTypeFont:
        return _load(self.path, self.size)

    @property
    def line_height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return ascent + descent + max(1, self.size // 6)

    def width(self, text: str) -> int:
        return _width(self.path, self.size, text)

    def wrap(self, text: str, width: int, max_lines: int) -> list[str]:
        """Words wrapped to ``width`` pixels, long words cut; past ``max_lines`` the last line
        ends in "..." so a reader knows there was more."""
        width = max(width, self.size)
        lines: list[str] = []
        for paragraph in text.splitlines() or [""]:
            line = ""
            for word in paragraph.split(" "):
                trial = f"{line} {word}" if line else word
                if self.width(trial) <= width:
                    line = trial
                    continue
                if line:
                    lines.append(line)
                line = ""
                while self.width(word) > width:  # a word longer than the line: cut it
                    cut = self._fit(word, width)
                    lines.append(word[:cut])
                    word = word[cut:]
                line = word
            lines.append(line)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            last = lines[-1]
            while last and self.width(last + ELLIPSIS) > width:
                last = last[:-1]
            lines[-1] = last.rstrip() + ELLIPSIS
        return lines

    def _fit(self, word: str, width: int) -> int:
        low, high = 1, len(word)
        while low < high:
            mid = (low + high + 1) // 2
            if self.width(word[:mid]) <= width:
                low = mid
            else:
                high = mid - 1
        return low

    def missing(self, texts: Iterable[str]) -> str:
        """The characters of ``texts`` this font has no glyph for, in first-seen order."""
        font = self.font
        box = _signature(font, _NOT_A_CHARACTER)
        found: dict[str, None] = {}
        checked: set[str] = set()
        for text in texts:
            for ch in text:
                if ch in checked or (ch.isascii() and self.path is None) or ch.isspace():
                    continue
                checked.add(ch)
                if _signature(font, ch) == box:
                    found[ch] = None
        return "".join(found)


def installed_fallback() -> str | None:
    """A wide-coverage TrueType font on this machine, for a hint that works when pasted."""
    for candidate in SYSTEM_FONTS:
        if Path(candidate).is_file():
            return candidate
    return None


@lru_cache(maxsize=32)
def _load(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        return ImageFont.load_default(size)
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise UsageError(f"cannot use the font {path}: {exc} (give a TrueType or OpenType "
                         f"file, such as {installed_fallback() or 'DejaVuSans.ttf'})") from None


@lru_cache(maxsize=65536)
def _width(path: str | None, size: int, text: str) -> int:
    """Cached: the layout measures the same labels and their prefixes for every sheet."""
    return int(_load(path, size).getlength(text) + 0.999)


def _signature(font: ImageFont.FreeTypeFont, ch: str) -> tuple:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)
