"""The fast PNG writer of contact sheets: the file holds exactly the pixels drawn, whichever
encoder wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from batchgen.view import png
from batchgen.view.grid import GridOptions, draw_sheet, make_grid
from viewkit import run_sweep


def _picture(width: int, height: int) -> Image.Image:
    """Noise (incompressible: several IDAT chunks) beside flat areas and a gradient."""
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 90 + 10 * i) for i in range(3)])
    noise.paste((255, 255, 255), (0, 0, width // 3, height))
    noise.paste(Image.linear_gradient("L").resize((width // 4, height)).convert("RGB"), (width // 3, 0))
    return noise


@pytest.mark.parametrize("size", [(1, 1), (333, 7), (1201, 900)])
def test_the_file_decodes_to_the_same_pixels(tmp_path: Path, size: tuple[int, int]) -> None:
    pytest.importorskip("isal")
    image = _picture(*size) if size[0] > 4 else Image.new("RGB", size, (1, 2, 3))
    file = tmp_path / "sheet.png"
    png.write_png(image, file, compress_level=1)
    with Image.open(file) as back:
        back.verify()  # chunk lengths and CRCs
    with Image.open(file) as back:
        assert back.format == "PNG" and back.mode == "RGB" and back.size == image.size
        assert back.tobytes() == image.tobytes()
    if size == (1201, 900):
        assert file.read_bytes().count(b"IDAT") >= 2  # written a band at a time


def test_without_isal_or_for_other_modes_pillow_writes_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    grey = Image.linear_gradient("L")
    png.write_png(grey, tmp_path / "grey.png", compress_level=1)
    with Image.open(tmp_path / "grey.png") as back:
        assert back.mode == "L" and back.tobytes() == grey.tobytes()
    monkeypatch.setattr(png, "isal_zlib", None)  # as when the grid extra is not installed
    image = _picture(200, 120)
    png.write_png(image, tmp_path / "rgb.png", compress_level=1)
    with Image.open(tmp_path / "rgb.png") as back:
        assert back.tobytes() == image.tobytes()


def test_grid_sheets_hold_exactly_the_drawn_picture(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=96))
    assert len(result.sheets) == 3
    for sheet in result.sheets:
        drawn = draw_sheet(sheet, result.sweep.folder)
        with Image.open(sheet.file) as written:
            assert written.size == drawn.size and written.tobytes() == drawn.convert(written.mode).tobytes()
