"""Deterministic stand-in images: real, decodable, exactly the requested size and format.

The picture is a function of the request and the seed used, nothing else: a background and a
few shapes from a ``random.Random`` seeded by a hash of (model, prompt, seed, img2img fields),
one coloured frame per LoRA whose thickness follows its scale, and a caption panel that shows
the request itself (prompt words, seed, each LoRA's name and scale with a bar as long as the
scale), so a contact sheet of a LoRA sweep reads like one: the same scene, the same words, and
frames, labels and bars that change with the scale. Encoder settings are fixed so the bytes are
stable; the caption uses Pillow's built-in font, the same on every machine.
"""

from __future__ import annotations

import io
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

__all__ = ["ImageCache", "Recipe", "render"]

# Fast, deterministic encoder settings (flat shapes compress well losslessly).
_SAVE_ARGS: dict[str, tuple[str, dict]] = {
    "webp": ("WEBP", {"lossless": True, "quality": 0, "method": 0}),
    "png": ("PNG", {"compress_level": 1}),
    "jpeg": ("JPEG", {"quality": 85}),
}
#: Scale at which a LoRA's bar fills the caption panel's width (the API allows up to 4).
_BAR_FULL_SCALE = 2.0
_PANEL = (16, 16, 24)
_INK = (240, 240, 240)


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything needed to draw one task's image; small, and shared strings cost nothing.

    ``scene`` is a 64-bit hash of the request fields that shape the picture plus the seed used;
    ``loras`` holds (colour as 0xRRGGBB from the LoRA path, scale) per LoRA, in request order,
    and ``lora_names`` the name each shows (its file's stem). ``prompt`` and ``seed`` (the seed
    used) are written on the picture.
    """

    scene: int
    width: int
    height: int
    fmt: str
    loras: tuple[tuple[int, float], ...] = ()
    prompt: str = ""
    seed: int | None = None
    lora_names: tuple[str, ...] = ()


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


@lru_cache(maxsize=4096)
def _word(word: str, size: int) -> tuple[Image.Image, float]:
    """One word drawn white on black (a mask) and its advance. A caption is pasted together
    from these: the prompts of a batch share most of their words, and drawing each line anew
    was about 40 % of the time a picture took (0.9 of 2.2 ms at 256x256)."""
    font = _font(size)
    length = font.getlength(word)
    _, _, right, bottom = font.getbbox(word)
    mask = Image.new("L", (max(1, int(right)), max(1, int(bottom))))
    ImageDraw.Draw(mask).text((0, 0), word, fill=255, font=font)
    return mask, length


def _wrap(text: str, size: int, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last line ends in "..." when text is left."""
    lines: list[str] = []
    line, used = "", 0.0
    space = _word(" ", size)[1]
    for word in text.split():
        length = _word(word, size)[1]
        if not line or used + space + length <= width:
            line, used = (f"{line} {word}", used + space + length) if line else (word, length)
            continue
        lines.append(line)
        line, used = word, length
        if len(lines) == max_lines:
            lines[-1] = lines[-1] + " ..."
            return lines
    if line:
        lines.append(line)
    return lines[:max_lines]


def _write(image: Image.Image, xy: tuple[int, int], text: str, size: int) -> None:
    """``text`` in ``_INK`` with its top left at ``xy``, word by word."""
    x, y = xy
    space = _word(" ", size)[1]
    for word in text.split():
        mask, length = _word(word, size)
        image.paste(_INK, (round(x), y), mask)
        x += length + space


def _caption(image: Image.Image, draw: ImageDraw.ImageDraw, recipe: Recipe, w: int, h: int,
             inset: int) -> None:
    """The request, written on a dark panel at the top left inside the frames."""
    short = min(w, h)
    size = max(10, short // 22)
    pad = max(3, size // 3)
    x0 = inset + pad
    width = w - 2 * inset - 2 * pad
    if width < size * 4:
        return
    lines = _wrap(recipe.prompt, size, width - 2 * pad, 3) if recipe.prompt else []
    lines.append(f"seed {recipe.seed}" if recipe.seed is not None else "seed ?")
    loras = list(zip(recipe.lora_names, recipe.loras, strict=False))
    if not loras:
        lines.append("no LoRA")
    step = size + pad
    top = inset + pad
    panel_h = pad + step * (len(lines) + 2 * len(loras))
    draw.rectangle((x0, top, x0 + width, top + panel_h), fill=_PANEL)
    y = top + pad
    for text in lines:
        _write(image, (x0 + pad, y), text, size)
        y += step
    bar_w = width - 2 * pad
    for name, (colour, scale) in loras:
        fill = ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)
        _write(image, (x0 + pad, y), f"{name} x{scale:g}", size)
        y += step
        length = round(bar_w * min(scale, _BAR_FULL_SCALE) / _BAR_FULL_SCALE)
        draw.rectangle((x0 + pad, y, x0 + pad + bar_w, y + size - pad), outline=_INK, width=1)
        if length:
            draw.rectangle((x0 + pad, y, x0 + pad + length, y + size - pad), fill=fill)
        y += step


#: Bytes of drawn images every simulator in the process shares (see ``render``).
_DRAWN_MAX_BYTES = 32 << 20
_drawn: OrderedDict[tuple[Recipe, str], bytes] = OrderedDict()
_drawn_bytes = 0
_drawn_lock = threading.Lock()


def render(recipe: Recipe, fmt: str | None = None) -> bytes:
    """Encode the recipe's picture; ``fmt`` overrides the format (the bad-image fault uses it).

    The bytes are a function of the recipe alone, so the last 32 MB drawn are kept for the
    whole process: a second simulator (a benchmark's passes, a batch run again to compare)
    asking for a picture already drawn gets it without drawing it again."""
    key = (recipe, fmt or recipe.fmt)
    with _drawn_lock:
        data = _drawn.get(key)
        if data is not None:
            _drawn.move_to_end(key)
            return data
    data = _draw(recipe, key[1])
    if len(data) <= _DRAWN_MAX_BYTES // 64:
        global _drawn_bytes
        with _drawn_lock:
            if key not in _drawn:
                _drawn[key] = data
                _drawn_bytes += len(data)
                while _drawn_bytes > _DRAWN_MAX_BYTES:
                    _drawn_bytes -= len(_drawn.popitem(last=False)[1])
    return data


def _draw(recipe: Recipe, fmt: str) -> bytes:
    w, h = recipe.width, recipe.height
    rng = random.Random(recipe.scene)
    rgb = lambda: (rng.randrange(256), rng.randrange(256), rng.randrange(256))  # noqa: E731
    image = Image.new("RGB", (w, h), rgb())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(w // 8, w // 2), y0 + rng.randrange(h // 8, h // 2)
        colour = rgb()
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    inset = 0
    for colour, scale in recipe.loras:
        # Frame thickness grows with the scale: up to 1/16 of the short side at scale 4.
        thickness = round(min(w, h) / 64 * scale)
        if thickness:
            fill = ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)
            draw.rectangle((inset, inset, w - 1 - inset, h - 1 - inset), outline=fill, width=thickness)
            inset += thickness
    if recipe.prompt or recipe.seed is not None or recipe.lora_names:
        _caption(image, draw, recipe, w, h, inset)
    pil_format, options = _SAVE_ARGS[fmt]
    out = io.BytesIO()
    image.save(out, format=pil_format, **options)
    return out.getvalue()


class ImageCache:
    """A bounded LRU of rendered images: a task is usually downloaded once, soon after it ends,
    but a re-poll, a retry or a base64 answer asks for the same bytes again."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Recipe, bytes] = OrderedDict()
        self.renders = 0

    def get(self, recipe: Recipe) -> bytes:
        data = self._items.get(recipe)
        if data is not None:
            self._items.move_to_end(recipe)
            return data
        data = render(recipe)
        self.renders += 1
        if self.maxsize:
            self._items[recipe] = data
            if len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return data
