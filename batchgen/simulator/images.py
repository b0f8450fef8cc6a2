"""Deterministic stand-in images: real, decodable, exactly the requested size and format.

The picture is a function of the request and the seed used, nothing else: a background and a
few shapes from a ``random.Random`` seeded by a hash of (model, prompt, seed, img2img fields),
plus one coloured frame per LoRA whose thickness follows its scale, so a LoRA sweep shows the
same scene with visibly different frames. Encoder settings are fixed so the bytes are stable.
"""

from __future__ import annotations

import io
import random
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageDraw

__all__ = ["ImageCache", "Recipe", "render"]

# Fast, deterministic encoder settings (flat shapes compress well losslessly).
_SAVE_ARGS: dict[str, tuple[str, dict]] = {
    "webp": ("WEBP", {"lossless": True, "quality": 0, "method": 0}),
    "png": ("PNG", {"compress_level": 1}),
    "jpeg": ("JPEG", {"quality": 85}),
}


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything needed to draw one task's image; a few dozen bytes per task.

    ``scene`` is a 64-bit hash of the request fields that shape the picture plus the seed used;
    ``loras`` holds (colour as 0xRRGGBB from the LoRA path, scale) per LoRA, in request order.
    """

    scene: int
    width: int
    height: int
    fmt: str
    loras: tuple[tuple[int, float], ...] = ()


def render(recipe: Recipe, fmt: str | None = None) -> bytes:
    """Encode the recipe's picture; ``fmt`` overrides the format (the bad-image fault uses it)."""
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
    pil_format, options = _SAVE_ARGS[fmt or recipe.fmt]
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
