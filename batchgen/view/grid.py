"""``batchgen grid``: labelled contact sheets of a sweep, drawn with Pillow from the files on disk.

The layout (``layout.py``) decides every box first; this module draws it and says what it had
to do (downscale, split, draw a glyph the font lacks) as typed warnings for the CLI to word.

Decoding cells and encoding sheets are most of the time, and Pillow does both without holding
the GIL: cells are opened and reduced by a few threads while the sheet is pasted in order, and
sheets are encoded on writer threads while the next is drawn. At most ``_WRITERS`` + 1 sheets
(the one being drawn, those being written) and one sheet's cells are in memory at a time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

from batchgen.errors import OutputError, UsageError
from batchgen.view.choice import Choice, GridOptions, choose_axes
from batchgen.view.labels import LabelFont, installed_fallback
from batchgen.view.layout import Sheet, TextBox, lay_out
from batchgen.view.png import write_png
from batchgen.view.sweep import CellState, Sweep, load_sweep

__all__ = ["Downscaled", "Duplicates", "GridOptions", "GridProgress", "GridResult", "GridWarning",
           "MissingGlyphs",
           "Split", "Unplaced", "Unreadable", "draw_sheet", "make_grid"]

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (236, 236, 236)
#: PNG at zlib level 1: a sheet is for looking at, and level 6 took twice as long to write
#: for files a third smaller.
_FORMATS = {".png": ("PNG", {"compress_level": 1}), ".webp": ("WEBP", {"quality": 90}),
            ".jpg": ("JPEG", {"quality": 90}), ".jpeg": ("JPEG", {"quality": 90})}


@dataclass(frozen=True)
class MissingGlyphs:
    """Characters of the labels the font cannot draw (shown as boxes); ``suggestion`` is a
    font file on this machine that may have them."""

    chars: str
    font: str | None
    suggestion: str | None


@dataclass(frozen=True)
class Downscaled:
    natural: tuple[int, int]
    cell: tuple[int, int]
    max_size: int


@dataclass(frozen=True)
class Split:
    sheets: int    # sheets that had to be cut
    parts: int     # files they became
    max_size: int


@dataclass(frozen=True)
class Unreadable:
    file: str
    why: str


@dataclass(frozen=True)
class Unplaced:
    count: int


@dataclass(frozen=True)
class Duplicates:
    count: int


GridWarning = MissingGlyphs | Downscaled | Split | Unreadable | Unplaced | Duplicates


@dataclass
class GridResult:
    sweep: Sweep
    choice: Choice
    sheets: list[Sheet]
    warnings: list[GridWarning] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [sheet.file for sheet in self.sheets]


#: Called with (cells drawn, cells in all sheets) as the sheets are drawn.
GridProgress = Callable[[int, int], None]
_DECODERS = max(1, min(4, os.cpu_count() or 1))
_WRITERS = 2
_CHUNK = 25  # cells decoded per task: fewer hand-overs between threads


def make_grid(target: str | Path | Sweep, to: str | Path, options: GridOptions | None = None,
              progress: GridProgress | None = None) -> GridResult:
    """Draw the contact sheets of a batch (a manifest, a batch folder or a loaded Sweep) to
    ``to`` (``.png``, ``.webp`` or ``.jpg``); several pages or parts get suffixed names.
    ``progress`` hears how many cells are drawn, after each cell."""
    options = options or GridOptions()
    to = Path(to)
    if to.suffix.lower() not in _FORMATS:
        raise UsageError(f"--to {to}: the file name must end in .png, .webp or .jpg")
    if options.max_size < 1024:
        raise UsageError(f"the size cap must be at least 1024 pixels (got {options.max_size})")
    sweep = target if isinstance(target, Sweep) else load_sweep(target)
    choice = choose_axes(sweep, options)
    sheets = lay_out(sweep, choice, options, to)
    _unique_names(sheets)
    result = GridResult(sweep, choice, sheets)
    result.warnings.extend(_layout_warnings(result, options))
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError.from_os_error(str(to.parent), exc) from exc
    pil_format, save_args = _FORMATS[to.suffix.lower()]
    total = sum(len(sheet.cells) for sheet in sheets)
    drawn = [0]

    def cell_done() -> None:
        drawn[0] += 1
        if progress is not None:
            progress(drawn[0], total)

    def save(image: Image.Image, file: Path) -> None:
        try:
            if pil_format == "PNG":
                write_png(image, file, **save_args)
            else:
                image.save(file, format=pil_format, **save_args)
        except OSError as exc:
            raise OutputError.from_os_error(str(file), exc) from exc
        finally:
            image.close()

    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(_DECODERS) as decoders, ThreadPoolExecutor(_WRITERS) as writer:
        writing: list[Future[None]] = []
        for sheet in sheets:
            image = draw_sheet(sheet, sweep.folder, result.warnings, decoders, cell_done)
            if len(writing) >= _WRITERS:
                writing.pop(0).result()  # bounded: memory stays a few sheets
            writing.append(writer.submit(save, image, sheet.file))
        for future in writing:
            future.result()
    return result


def draw_sheet(sheet: Sheet, folder: Path, warnings: list[GridWarning] | None = None,
               decoders: ThreadPoolExecutor | None = None,
               cell_done: Callable[[], None] | None = None) -> Image.Image:
    """The sheet as an image: words where the layout put them, each cell's image fitted into
    its box, placeholders for the rest. ``decoders`` opens the cells' images in parallel."""
    image = Image.new("RGB", (sheet.width, sheet.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for text in sheet.texts:
        draw_text(draw, text)
    base = os.fspath(folder)
    wanted = [(os.path.join(base, box.cell.file), box.box) if box.state == CellState.DONE
              and box.cell is not None and box.cell.file else None for box in sheet.cells]
    # Cells in batches per task: a future and a thread hand-over per cell cost about as much
    # as pasting the cell.
    chunks = [wanted[i:i + _CHUNK] for i in range(0, len(wanted), _CHUNK)]
    loaded = itertools.chain.from_iterable(decoders.map(_load_chunk, chunks) if decoders is not None
                                           else map(_load_chunk, chunks))
    for box, got in zip(sheet.cells, loaded, strict=True):
        x0, y0, x1, y1 = box.box
        if isinstance(got, Image.Image):
            image.paste(got, (x0 + (x1 - x0 - got.width) // 2, y0 + (y1 - y0 - got.height) // 2))
            got.close()
            if cell_done is not None:
                cell_done()
            continue
        if got is not None and box.cell is not None:
            if warnings is not None:
                warnings.append(Unreadable(box.cell.file or "", got))
            font = _cell_font(sheet)
            box.text = TextBox(font.wrap(f"cannot read the image: {got}", x1 - x0 - 8, 4),
                               x0 + 4, y0 + 4, font, (176, 96, 0))
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=PLACEHOLDER, outline=(200, 200, 200))
        if box.text is not None:
            draw_text(draw, box.text)
        if cell_done is not None:
            cell_done()
    return image


def draw_text(draw: ImageDraw.ImageDraw, text: TextBox) -> None:
    """Each line at its place, as ``ImageDraw.text`` draws it: a line's coverage mask is
    rendered once per font and reused (every sheet repeats the column and row labels)."""
    for i, line in enumerate(text.lines):
        left, top, tile = _glyphs(text.font, line)
        if tile is not None:
            draw.bitmap((text.x + left, text.y + i * text.font.line_height + top), tile,
                        fill=text.fill)


@lru_cache(maxsize=1024)
def _glyphs(font: LabelFont, line: str) -> tuple[int, int, Image.Image | None]:
    """The line's coverage (0-255) as an "L" image and where its corner sits from the text
    origin; None for a line with no ink."""
    left, top, right, bottom = font.font.getbbox(line)
    if right <= left or bottom <= top:
        return 0, 0, None
    tile = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(tile).text((-left, -top), line, fill=255, font=font.font)
    return left, top, tile


def _cell_font(sheet: Sheet) -> LabelFont:
    """The labels' font (the first text is the title, a size larger)."""
    return sheet.texts[1].font if len(sheet.texts) > 1 else sheet.texts[0].font


def _load_chunk(jobs: list[tuple[str, tuple[int, int, int, int]] | None]) -> list[Image.Image | str | None]:
    return [None if job is None else _load(*job) for job in jobs]


def _load(path: str | Path, box: tuple[int, int, int, int]) -> Image.Image | str:
    """The image reduced to fit its box, or why it cannot be read."""
    x0, y0, x1, y1 = box
    try:
        with Image.open(path) as img:
            img.draft("RGB", (x1 - x0, y1 - y0))  # JPEG decodes at a reduced size, others ignore it
            if img.mode != "RGB":
                img = img.convert("RGB")
            else:
                img.load()  # already RGB: no copy to make
            if img.width > x1 - x0 or img.height > y1 - y0:
                img.thumbnail((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, reducing_gap=3.0)
            return img
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc)[:120] or type(exc).__name__


def _unique_names(sheets: list[Sheet]) -> None:
    """Two page values can make the same file name once cleaned; number the later ones."""
    seen: set[str] = set()
    for sheet in sheets:
        file, n = sheet.file, 1
        while file.name.casefold() in seen:
            n += 1
            file = sheet.file.with_name(f"{sheet.file.stem}-{n}{sheet.file.suffix}")
        seen.add(file.name.casefold())
        sheet.file = file


def _layout_warnings(result: GridResult, options: GridOptions) -> list[GridWarning]:
    found: list[GridWarning] = []
    sweep, sheets = result.sweep, result.sheets
    texts = {line for sheet in sheets for t in sheet.texts for line in t.lines}
    texts |= {line for sheet in sheets for c in sheet.cells if c.text for line in c.text.lines}
    font = LabelFont(options.font, 16)
    missing = font.missing(sorted(texts))
    if missing:
        suggestion = installed_fallback()
        if suggestion is not None and LabelFont(suggestion, 16).missing([missing]) == missing:
            suggestion = None  # that font lacks them too
        found.append(MissingGlyphs(missing, options.font, suggestion))
    shrunk = [s for s in sheets if s.cell != s.natural]
    if shrunk:
        found.append(Downscaled(shrunk[0].natural, min((s.cell for s in shrunk), key=max),
                                options.max_size))
    split = [s for s in sheets if s.part[1] > 1]
    if split:
        found.append(Split(len({(s.file.parent, tuple(s.page)) for s in split}), len(split),
                           options.max_size))
    if sweep.unplaced:
        found.append(Unplaced(sweep.unplaced))
    if sweep.duplicates:
        found.append(Duplicates(sweep.duplicates))
    return found

