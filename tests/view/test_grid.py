"""Contact sheets: cells, labels checked on the picture itself, pages, the size cap,
placeholders, the order written and labels in other scripts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageStat

from batchgen.errors import UsageError
from batchgen.view.grid import Downscaled, GridOptions, MissingGlyphs, Split, make_grid
from batchgen.view.labels import LabelFont
from batchgen.view.layout import TextBox
from batchgen.view.sweep import CellState
from viewkit import LORAS, SWEEP, run_sweep

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
needs_dejavu = pytest.mark.skipif(not DEJAVU.is_file(), reason=f"no TrueType font at {DEJAVU} "
                                  "(Debian: apt-get install fonts-dejavu-core)")


def drawn(sheet: Image.Image, text: TextBox, lines: list[str] | None = None) -> bool:
    """True when the sheet shows exactly these lines in this font at the text box's place."""
    x0, y0, x1, y1 = text.box
    crop = sheet.crop((x0, y0, x1, y1))
    background = sheet.getpixel((x0, y1 - 1)) if not text.lines else _corner(sheet, text)
    ref = Image.new("RGB", crop.size, background)
    draw = ImageDraw.Draw(ref)
    for i, line in enumerate(lines or text.lines):
        draw.text((0, i * text.font.line_height), line, fill=text.fill, font=text.font.font)
    return ref.tobytes() == crop.tobytes()


def _corner(sheet: Image.Image, text: TextBox) -> tuple[int, int, int]:
    x0, y0, *_ = text.box
    return sheet.getpixel((x0, y0))  # text starts below its line's top: this pixel is background


def test_one_sheet_per_page_value_with_every_cell(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_grid(batch.manifest, tmp_path / "grid.png", GridOptions(cell_size=128))
    c = result.choice
    assert (result.sweep.axes[c.x].name, result.sweep.axes[c.y].name) == ("loras", "style")
    assert [p.name for p in result.files] == ["grid-subject_fox.png", "grid-subject_owl.png",
                                             "grid-subject_forbidden_fruit.png"]
    for sheet in result.sheets:
        assert len(sheet.cells) == 5 * 2 and sheet.columns == LORAS and sheet.rows == ["oil", "ink"]
        with Image.open(sheet.file) as img:
            assert img.size == (sheet.width, sheet.height)
    states = [box.state for sheet in result.sheets for box in sheet.cells]
    assert states.count(CellState.DONE) == 19 and states.count(CellState.FAILED) == 10
    assert states.count(CellState.NO_JOB) == 1  # the excluded cell keeps its place


def test_every_label_is_on_the_picture_where_the_layout_says(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=128, where=[("subject", "owl")]))
    (sheet,) = result.sheets
    assert sheet.file == tmp_path / "g.png"  # one page: the name as given
    words = [line for t in sheet.texts for line in t.lines]
    assert words[:2] == ["sweep", "subject: owl"]  # the fixed value in the title block
    assert "loras" in words and "style" in words and all(v in words for v in LORAS + ["ink", "oil"])
    with Image.open(sheet.file) as img:
        img = img.convert("RGB")
        for text in sheet.texts + [b.text for b in sheet.cells if b.text]:
            assert drawn(img, text), text.lines
        label = next(t for t in sheet.texts if t.lines == ["ghibli@0.5"])
        assert not drawn(img, label, ["ghibli@0.7"])  # the check tells words apart


def test_cells_show_their_own_image(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=128, where=[("subject", "fox")]))
    (sheet,) = result.sheets
    with Image.open(sheet.file) as img:
        img = img.convert("RGB")
        for box in sheet.cells:
            assert box.state == CellState.DONE
            with Image.open(batch.folder / box.cell.file) as src:
                want = ImageStat.Stat(src.convert("RGB").resize((128, 128))).mean
            got = ImageStat.Stat(img.crop(box.box)).mean
            assert max(abs(a - b) for a, b in zip(want, got)) < 3, box.cell.file


def test_placeholders_name_the_reason(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    (batch.folder / "images" / "fox" / "oil" / "none.png").unlink()
    batch.manifest.write_text(batch.manifest.read_text().replace("[fox, owl,", "[cat, fox, owl,"))
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=192))
    said = {box.state: " ".join(box.text.lines) for s in result.sheets for box in s.cells if box.text}
    assert said[CellState.FAILED].startswith("failed ILLEGAL_PROMPT") and "rejected" in said[CellState.FAILED]
    assert said[CellState.PENDING] == "pending not run yet"
    assert said[CellState.NO_FILE].replace(" ", "") == "filemissingimages/fox/oil/none.png"  # cut to fit
    assert said[CellState.NO_JOB].startswith("no job")
    sheet = next(s for s in result.sheets if s.page == [("subject", "forbidden fruit")])
    with Image.open(sheet.file) as img:
        box = next(b for b in sheet.cells if b.state == CellState.FAILED)
        assert drawn(img.convert("RGB"), box.text)


def test_a_sheet_over_the_cap_gets_smaller_cells_then_parts(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    where = [("subject", "fox")]
    shrunk = make_grid(batch.manifest, tmp_path / "s.png", GridOptions(where=where, cell_size=400, max_size=1024))
    (sheet,) = shrunk.sheets
    assert sheet.width <= 1024 and sheet.height <= 1024 and 96 <= sheet.cell[0] < 400
    assert any(isinstance(w, Downscaled) for w in shrunk.warnings)
    parts = make_grid(batch.manifest, tmp_path / "p.png",
                      GridOptions(where=where, cell_size=400, max_size=1024, min_cell=300))
    assert len(parts.sheets) > 1 and all(s.width <= 1024 and s.height <= 1024 for s in parts.sheets)
    assert sum(len(s.cells) for s in parts.sheets) == 10 and parts.sheets[0].cell == (300, 300)
    assert [p.name for p in parts.files][:2] == ["p-part1.png", "p-part2.png"]
    assert any(isinstance(w, Split) for w in parts.warnings)
    assert any(line.startswith("part 1 of") for t in parts.sheets[0].texts for line in t.lines)
    for s in parts.sheets:
        with Image.open(s.file) as img:
            assert max(img.size) <= 1024


def test_numbers_keep_the_order_written(tmp_path: Path) -> None:
    text = SWEEP.replace("style: [oil, ink]", "seed: [1234, 42, 7]").replace("{style}", "{seed}") \
        .replace("/{style}/", "/{seed}/").replace("style: ink", "seed: 42")
    batch = run_sweep(tmp_path, text)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=96, where=[("subject", "fox")]))
    assert result.sheets[0].rows == ["1234", "42", "7"] and result.sheets[0].columns == LORAS


def test_bad_choices_are_clear_errors(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    with pytest.raises(UsageError, match="not on X, Y, Z or a page"):
        make_grid(batch.manifest, tmp_path / "g.png", GridOptions(pages=[]))
    with pytest.raises(UsageError, match="both 'style'"):
        make_grid(batch.manifest, tmp_path / "g.png", GridOptions(x="style", y="style"))
    with pytest.raises(UsageError, match=r"\.png, \.webp or \.jpg"):
        make_grid(batch.manifest, tmp_path / "g.gif")


NON_ASCII = SWEEP.replace("style: [oil, ink]", "style: [café crème, Жар-птица]").replace("style: ink", "style: Жар-птица") \
    .replace("/{style}/", "/{style}-x/")


def test_a_value_the_default_font_cannot_draw_is_warned_about(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path, NON_ASCII)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=128))
    (warning,) = [w for w in result.warnings if isinstance(w, MissingGlyphs)]
    assert set("éЖар") <= set(warning.chars) and "f" not in warning.chars and warning.font is None
    if DEJAVU.is_file():
        assert warning.suggestion == str(DEJAVU)


@needs_dejavu
def test_with_a_truetype_font_the_value_is_drawn(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path, NON_ASCII)
    result = make_grid(batch.manifest, tmp_path / "g.png", GridOptions(cell_size=192, font=str(DEJAVU),
                                                                       where=[("subject", "fox")]))
    assert not [w for w in result.warnings if isinstance(w, MissingGlyphs)]
    (sheet,) = result.sheets
    label = next(t for t in sheet.texts if t.lines == ["Жар-птица"])
    assert label.font.path == str(DEJAVU)
    with Image.open(sheet.file) as img:
        img = img.convert("RGB")
        assert drawn(img, label)
        boxes = TextBox(["Жар-птица"], label.x, label.y, LabelFont(None, label.font.size), label.fill)
        assert not drawn(img, boxes)  # not the default font's boxes
