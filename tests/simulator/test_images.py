"""Simulator images show their request: prompt words, seed, and each LoRA's name and scale."""

from __future__ import annotations

import io

from PIL import Image

from batchgen.simulator.images import Recipe, _draw, render

GREEN = 0x22AA55
PANEL = (16, 16, 24)


def picture(**fields) -> Image.Image:
    base = dict(scene=7, width=256, height=256, fmt="png")
    return Image.open(io.BytesIO(render(Recipe(**{**base, **fields})))).convert("RGB")


def count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return dict((c, n) for n, c in image.getcolors(1 << 24)).get(colour, 0)


def test_the_same_request_gives_the_same_bytes() -> None:
    recipe = Recipe(7, 256, 256, "webp", ((GREEN, 0.5),), "a fox", 42, ("ghibli",))
    assert _draw(recipe, "webp") == _draw(recipe, "webp")   # drawn twice: the same bytes
    first = render(recipe)
    assert first == _draw(recipe, "webp")
    # Drawn once per process: another simulator asking for it gets the same bytes, not a redraw.
    assert render(Recipe(7, 256, 256, "webp", ((GREEN, 0.5),), "a fox", 42, ("ghibli",))) is first
    assert render(recipe, "png") is not first and render(recipe, "png").startswith(b"\x89PNG")


def test_the_request_is_written_on_a_panel() -> None:
    plain = picture()
    told = picture(prompt="a lighthouse on a cliff", seed=42)
    assert count(plain, PANEL) == 0 and count(told, PANEL) > 500
    other_seed = picture(prompt="a lighthouse on a cliff", seed=43)
    other_words = picture(prompt="an old fisherman", seed=42)
    # Same scene hash, different words: only the writing differs, and it does.
    assert told.tobytes() != other_seed.tobytes() and told.tobytes() != other_words.tobytes()


def test_a_lora_s_colour_grows_with_its_scale() -> None:
    green = (0x22, 0xAA, 0x55)
    seen = [count(picture(prompt="p", seed=1, loras=((GREEN, s),), lora_names=("ghibli",)), green)
            for s in (0.0, 0.25, 0.5, 1.0, 1.5)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # frame and bar, both longer


def test_each_lora_gets_its_own_line() -> None:
    one = picture(prompt="p", seed=1, loras=((GREEN, 1.0),), lora_names=("ghibli",))
    two = picture(prompt="p", seed=1, loras=((GREEN, 1.0), (0xAA2255, 0.4)), lora_names=("ghibli", "ink"))
    assert count(two, PANEL) > count(one, PANEL)  # a taller panel for the second LoRA
