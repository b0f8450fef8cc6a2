"""Where everything goes on a contact sheet: which axis runs across, down and over pages, and
every label's and cell's box in pixels, decided before a single image is opened.

The layout is data (``Sheet``: text boxes and cell boxes), so the renderer draws exactly it and
tests check the picture against it. Sheets never exceed ``max_size`` on a side: cells are
downscaled first, never below ``min_cell``; past that a page is split into parts, each with
its own labels, instead of failing as an over-large grid would.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.view.choice import Choice, GridOptions
from batchgen.view.labels import LabelFont
from batchgen.view.sweep import Cell, CellState, Sweep

__all__ = ["CellBox", "Sheet", "TextBox", "lay_out", "placeholder_words"]

INK = (20, 20, 20)
MUTED = (96, 96, 96)
STATE_INK = {CellState.FAILED: (176, 32, 32), CellState.PENDING: (90, 90, 90),
             CellState.RUNNING: (30, 90, 170), CellState.NO_FILE: (176, 96, 0),
             CellState.NO_JOB: (128, 128, 128), CellState.DONE: INK}
_COLUMN_LABEL_LINES = 6


@dataclass
class TextBox:
    lines: list[str]
    x: int
    y: int
    font: LabelFont
    fill: tuple[int, int, int] = INK

    @property
    def box(self) -> tuple[int, int, int, int]:
        width = max((self.font.width(line) for line in self.lines), default=0)
        return (self.x, self.y, self.x + width, self.y + self.font.line_height * len(self.lines))


@dataclass
class CellBox:
    box: tuple[int, int, int, int]
    cell: Cell | None
    state: CellState
    text: TextBox | None = None   # the placeholder's words (None for an image)


@dataclass
class Sheet:
    """One output file: its size, its words and its cells; ``page`` names the page values."""

    file: Path
    width: int
    height: int
    cell: tuple[int, int]
    texts: list[TextBox]
    cells: list[CellBox]
    page: list[tuple[str, str]]
    part: tuple[int, int] = (1, 1)
    columns: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    natural: tuple[int, int] = (0, 0)   # the cell size before any downscaling


@dataclass
class _Frame:
    """The sizes one sheet needs at a given cell size and font."""

    cell: tuple[int, int]
    font: LabelFont
    title: LabelFont
    margin: int
    gap: int
    left: int
    head: int
    top: int


def lay_out(sweep: Sweep, choice: Choice, options: GridOptions, to: Path) -> list[Sheet]:
    """Every sheet of the grid: one per combination of page values that has a job, split in
    parts if need be; with a Z axis, a page holds one labelled sub-grid per Z value."""
    axes = sweep.axes
    index = {cell.coords: cell for cell in sweep.cells}
    xs = choice.kept[choice.x] if choice.x is not None else [None]
    ys = choice.kept[choice.y] if choice.y is not None else [None]
    zs = choice.kept[choice.z] if choice.z is not None else [None]
    base = [kept[0] for kept in choice.kept]
    pages = list(itertools.product(*(choice.kept[i] for i in choice.pages)))
    columns = [axes[choice.x].values[v].label for v in xs] if choice.x is not None else [""]
    rows = [axes[choice.y].values[v].label for v in ys] if choice.y is not None else [""]
    sheets: list[Sheet] = []
    for page_values in pages:
        coords = list(base)
        for axis_i, value_i in zip(choice.pages, page_values, strict=True):
            coords[axis_i] = value_i
        page = [(axes[a].name, axes[a].values[v].label) for a, v in zip(choice.pages, page_values, strict=True)]
        blocks: list[tuple[str, list[list[Cell | None]]]] = []
        for zv in zs:
            grid: list[list[Cell | None]] = []
            for yv in ys:
                row = []
                for xv in xs:
                    here = list(coords)
                    if choice.x is not None:
                        here[choice.x] = xv
                    if choice.y is not None:
                        here[choice.y] = yv
                    if choice.z is not None:
                        here[choice.z] = zv
                    row.append(index.get(tuple(here)))
                grid.append(row)
            if choice.z is None or any(c is not None for r in grid for c in r):
                label = f"{axes[choice.z].name}: {axes[choice.z].values[zv].label}" if zv is not None else ""
                blocks.append((label, grid))
        if len(pages) > 1 and not any(c is not None for _, g in blocks for r in g for c in r):
            continue  # no job has these page values (include cells, a sparse batch)
        if choice.z is not None:
            z_sheet = _z_sheet(sweep, choice, options, to, page, blocks, columns, rows,
                               len(pages) > 1)
            if z_sheet is not None:
                sheets.append(z_sheet)
                continue
            as_pages = dataclasses.replace(choice, z=None)
            for label, grid in blocks:  # too many to fit one image: one file per Z value
                name, _, value = label.partition(": ")
                sheets.extend(_page_sheets(sweep, as_pages, options, to, page + [(name, value)],
                                           grid, columns, rows, True))
            continue
        sheets.extend(_page_sheets(sweep, choice, options, to, page, blocks[0][1], columns, rows,
                                   len(pages) > 1))
    if not sheets and pages:  # nothing at all: one sheet that says so
        page_values = pages[0]
        page = [(axes[a].name, axes[a].values[v].label) for a, v in zip(choice.pages, page_values, strict=True)]
        empty: list[list[Cell | None]] = [[None] * len(columns) for _ in rows]
        sheets.extend(_page_sheets(sweep, choice, options, to, page, empty, columns, rows,
                                   len(pages) > 1))
    return sheets


def _natural_cell(grid: list[list[Cell | None]]) -> tuple[int, int]:
    sizes = [c.size for row in grid for c in row if c is not None and c.size]
    if not sizes:
        return (512, 512)
    return (max(w for w, _ in sizes), max(h for _, h in sizes))


def _frame(sweep: Sweep, choice: Choice, options: GridOptions, cell: tuple[int, int],
           columns: list[str], rows: list[str]) -> _Frame:
    size = options.font_size or max(14, min(36, round(min(cell) / 9)))
    if not options.font_size:
        size = _fitting_size(options.font, size, cell, columns)
    font = LabelFont(options.font, size)
    title = LabelFont(options.font, round(size * 1.25))
    margin, gap, pad = size, max(2, size // 6), max(2, size // 4)
    left = 0
    if choice.y is not None:
        widest = max(font.width(w) for label in rows + [sweep.axes[choice.y].name]
                     for w in label.split(" ")) + 2 * pad
        natural = max(font.width(label) for label in rows) + 2 * pad
        left = min(max(natural, widest, 5 * size), max(cell[0], 12 * size))
    lines = max(len(font.wrap(label, cell[0] - 2 * pad, _COLUMN_LABEL_LINES)) for label in columns)
    head = (font.line_height if choice.x is not None else 0) + lines * font.line_height + 2 * pad
    return _Frame(cell, font, title, margin, gap, left, head, 0)


#: The smallest label size a small cell may bring (a label is never cut mid-number above it).
_MIN_FONT = 8
_PLACEHOLDER_TEST = "pending\nnot run yet"


def _fitting_size(path: str | None, size: int, cell: tuple[int, int], columns: list[str]) -> int:
    """The label size, made smaller for small cells until every word of a column label fits
    a column (a seed is not wrapped mid-number) and a placeholder's words fit a cell (no
    "not run..."), never below ``_MIN_FONT``."""
    words = {w for label in columns for w in label.split(" ")}
    longest = max(words, key=len, default="")
    while size > _MIN_FONT:
        font = LabelFont(path, size)
        pad = max(2, size // 4)
        inner_w, inner_h = cell[0] - 2 * pad, cell[1] - 2 * pad
        word_fits = max((font.width(w) for w in words if len(w) >= len(longest) - 2), default=0) <= inner_w
        lines = font.wrap(_PLACEHOLDER_TEST, inner_w, 99)
        words_fit = len(lines) * font.line_height <= inner_h and max(font.width(x) for x in lines) <= inner_w
        if word_fits and words_fit:
            break
        size -= 1
    return size


def _scaled(cell: tuple[int, int], long_side: float) -> tuple[int, int]:
    s = long_side / max(cell)
    return (max(1, round(cell[0] * s)), max(1, round(cell[1] * s)))


def _page_sheets(sweep: Sweep, choice: Choice, options: GridOptions, to: Path,
                 page: list[tuple[str, str]], grid: list[list[Cell | None]], columns: list[str],
                 rows: list[str], paged: bool) -> list[Sheet]:
    natural = _natural_cell(grid)
    cell = _scaled(natural, options.cell_size) if options.cell_size else natural
    cap, ncols, nrows = options.max_size, len(columns), len(rows)
    frame = _frame(sweep, choice, options, cell, columns, rows)
    floor = min(options.min_cell, max(cell))  # never below the smallest cells asked for
    for _ in range(4):  # labels depend on the cell size and the cell size on the labels
        fixed_w = 2 * frame.margin + frame.left + frame.gap
        fixed_h = 2 * frame.margin + _title_height(sweep, choice, frame, page, cap) + frame.head
        scale = min(((cap - fixed_w) / ncols - frame.gap) / cell[0],
                    ((cap - fixed_h) / nrows - frame.gap) / cell[1])
        if scale >= 1 or max(cell) <= floor:
            break
        cell = _scaled(cell, max(math.floor(max(cell) * scale), floor))
        frame = _frame(sweep, choice, options, cell, columns, rows)
    fixed_w = 2 * frame.margin + frame.left + frame.gap
    fixed_h = 2 * frame.margin + _title_height(sweep, choice, frame, page, cap) + frame.head
    per_col = max(1, int((cap - fixed_w) // (cell[0] + frame.gap)))
    per_row = max(1, int((cap - fixed_h) // (cell[1] + frame.gap)))
    col_parts = math.ceil(ncols / per_col) if ncols > per_col else 1
    row_parts = math.ceil(nrows / per_row) if nrows > per_row else 1
    per_col, per_row = math.ceil(ncols / col_parts), math.ceil(nrows / row_parts)
    total = col_parts * row_parts
    sheets = []
    for part, (r0, c0) in enumerate(itertools.product(range(0, nrows, per_row),
                                                      range(0, ncols, per_col)), start=1):
        span = (r0, min(nrows, r0 + per_row), c0, min(ncols, c0 + per_col))
        file = _file_name(to, page if paged else [], part if total > 1 else 0)
        sheet = _sheet(sweep, choice, frame, file, page, grid, columns, rows, span, (part, total))
        sheet.natural = _scaled(natural, options.cell_size) if options.cell_size else natural
        sheets.append(sheet)
    return sheets


def _title_lines(sweep: Sweep, choice: Choice, page: list[tuple[str, str]],
                 part: tuple[int, int], span: tuple[int, int, int, int] | None) -> list[str]:
    head = sweep.batch or sweep.folder.name
    lines = [head]
    for name, label in page:
        lines.append(f"{name}: {label}")
    for name, label in choice.fixed:
        lines.append(f"{name}: {label}")
    if choice.z is not None:
        lines.append(f"one grid per {sweep.axes[choice.z].name}")
    if part[1] > 1 and span is not None:
        r0, r1, c0, c1 = span
        lines.append(f"part {part[0]} of {part[1]}: rows {r0 + 1}-{r1}, columns {c0 + 1}-{c1}")
    return lines


def _title_width(frame: _Frame) -> int:
    """The title wraps at least this wide (a sheet of one narrow column is widened to it)."""
    return 24 * frame.font.size


def _title_height(sweep: Sweep, choice: Choice, frame: _Frame, page, cap: int) -> int:
    # At the narrowest wrap and with a part line, which split sheets add: never an underestimate.
    lines = _title_lines(sweep, choice, page, (1, 2), (0, 1, 0, 1))
    count = sum(len(frame.title.wrap(line, _title_width(frame), 3)) for line in lines)
    return count * frame.title.line_height + frame.gap * 2


def _sheet(sweep: Sweep, choice: Choice, frame: _Frame, file: Path, page, grid, columns, rows,
           span: tuple[int, int, int, int], part: tuple[int, int]) -> Sheet:
    r0, r1, c0, c1 = span
    m, gap = frame.margin, frame.gap
    cw, ch = frame.cell
    width = max(2 * m + frame.left + gap + (c1 - c0) * (cw + gap), _title_width(frame) + 2 * m)
    texts: list[TextBox] = []
    y = _title(texts, _title_lines(sweep, choice, page, part, span), frame, width)
    cells: list[CellBox] = []
    bottom = _block(sweep, choice, frame, grid, columns, rows, span, m, y, texts, cells)
    return Sheet(file, width, bottom + m, (cw, ch), texts, cells, page, part,
                 columns[c0:c1], rows[r0:r1])


def _title(texts: list[TextBox], lines: list[str], frame: _Frame, width: int) -> int:
    """The title block at the top; returns where what follows starts."""
    m, gap, title = frame.margin, frame.gap, frame.title
    y = m
    for i, line in enumerate(lines):
        wrapped = title.wrap(line, width - 2 * m, 3)
        texts.append(TextBox(wrapped, m, y, title, INK if i == 0 else MUTED))
        y += title.line_height * len(wrapped)
    return y + 2 * gap


def _block(sweep: Sweep, choice: Choice, frame: _Frame, grid, columns, rows,
           span: tuple[int, int, int, int], left: int, y: int, texts: list[TextBox],
           cells: list[CellBox]) -> int:
    """One grid with its column and row labels, its top-left corner at (left, y); returns
    its bottom edge."""
    r0, r1, c0, c1 = span
    font, gap = frame.font, frame.gap
    pad = max(2, font.size // 4)
    cw, ch = frame.cell
    grid_x = left + frame.left + gap
    head_top = y
    if choice.x is not None:
        texts.append(TextBox([sweep.axes[choice.x].name], grid_x + pad, y, font, MUTED))
        y += font.line_height
    for c in range(c0, c1):
        lines = font.wrap(columns[c], cw - 2 * pad, _COLUMN_LABEL_LINES)
        texts.append(TextBox(lines, grid_x + (c - c0) * (cw + gap) + pad, y + pad, font))
    if choice.y is not None:
        name_lines = font.wrap(sweep.axes[choice.y].name, frame.left - 2 * pad, 2)
        texts.append(TextBox(name_lines, left + pad, head_top + frame.head - pad
                             - font.line_height * len(name_lines), font, MUTED))
    top = head_top + frame.head
    row_lines = max(1, ch // font.line_height)
    for r in range(r0, r1):
        cy = top + (r - r0) * (ch + gap)
        if choice.y is not None:
            lines = font.wrap(rows[r], frame.left - 2 * pad, row_lines)
            ty = cy + max(0, (ch - font.line_height * len(lines)) // 2)
            texts.append(TextBox(lines, left + pad, ty, font))
        for c in range(c0, c1):
            cx = grid_x + (c - c0) * (cw + gap)
            cell = grid[r][c]
            state = cell.state if cell is not None else CellState.NO_JOB
            box = (cx, cy, cx + cw, cy + ch)
            text = None
            if state != CellState.DONE:
                words = "\n".join(placeholder_words(cell, state, sweep.from_manifest))
                lines = font.wrap(words, cw - 2 * pad, max(1, (ch - 2 * pad) // font.line_height))
                text = TextBox(lines, cx + pad, cy + pad, font, STATE_INK[state])
            cells.append(CellBox(box, cell, state, text))
    return top + (r1 - r0) * (ch + gap)


def _z_sheet(sweep: Sweep, choice: Choice, options: GridOptions, to: Path,
             page: list[tuple[str, str]], blocks: list[tuple[str, list[list[Cell | None]]]],
             columns: list[str], rows: list[str], paged: bool) -> Sheet | None:
    """One image of sub-grids, one per Z value, in lines of about the square root of their
    number; cells are downscaled (never below ``min_cell``) to stay within the size cap, and
    None when even that cannot fit (the caller then writes one file per Z value)."""
    natural = _natural_cell([row for _, grid in blocks for row in grid])
    cell = _scaled(natural, options.cell_size) if options.cell_size else natural
    cap, ncols, nrows, count = options.max_size, len(columns), len(rows), len(blocks)
    floor = min(options.min_cell, max(cell))
    per_line = max(1, math.ceil(math.sqrt(count)))
    frame = _frame(sweep, choice, options, cell, columns, rows)

    def extent(frame: _Frame) -> tuple[int, int, int, int, int]:
        m, gap = frame.margin, frame.gap
        label_h = frame.title.line_height + gap
        block_w = frame.left + gap + ncols * (frame.cell[0] + gap)
        block_h = label_h + frame.head + nrows * (frame.cell[1] + gap)
        lines = math.ceil(count / per_line)
        width = max(2 * m + per_line * block_w + (per_line - 1) * 2 * m, _title_width(frame) + 2 * m)
        height = (2 * m + _title_height(sweep, choice, frame, page, cap)
                  + lines * block_h + (lines - 1) * m)
        return width, height, block_w, block_h, label_h

    for _ in range(6):
        width, height, *_ = extent(frame)
        if width <= cap and height <= cap:
            break
        if max(frame.cell) <= floor:
            return None
        scale = min(cap / width, cap / height)
        cell = _scaled(frame.cell, max(math.floor(max(frame.cell) * scale * 0.98), floor))
        frame = _frame(sweep, choice, options, cell, columns, rows)
    else:
        return None
    width, height, block_w, block_h, label_h = extent(frame)
    if width > cap or height > cap:
        return None
    m = frame.margin
    texts: list[TextBox] = []
    y0 = _title(texts, _title_lines(sweep, choice, page, (1, 1), None), frame, width)
    cells: list[CellBox] = []
    for n, (label, grid) in enumerate(blocks):
        line, col = divmod(n, per_line)
        bx, by = m + col * (block_w + 2 * m), y0 + line * (block_h + m)
        texts.append(TextBox(frame.title.wrap(label, block_w, 1), bx, by, frame.title, INK))
        _block(sweep, choice, frame, grid, columns, rows, (0, nrows, 0, ncols), bx, by + label_h,
               texts, cells)
    sheet = Sheet(_file_name(to, page if paged else [], 0), width, height, frame.cell, texts,
                  cells, page, (1, 1), columns, rows)
    sheet.natural = _scaled(natural, options.cell_size) if options.cell_size else natural
    return sheet


def placeholder_words(cell: Cell | None, state: CellState, from_manifest: bool) -> list[str]:
    """What a cell without an image says: its state, then why."""
    if state == CellState.FAILED and cell is not None:
        label = cell.label or "unknown"
        reason = cell.reason or ""
        if reason.startswith(label + ":"):
            reason = reason[len(label) + 1:].strip()
        return ["failed", label] + ([reason] if reason else [])
    if state == CellState.PENDING:
        return ["pending", "not run yet"]
    if state == CellState.RUNNING:
        return ["running", "not finished yet"]
    if state == CellState.NO_FILE and cell is not None:
        return ["file missing", cell.file or ""]
    if from_manifest:
        return ["no job", "the manifest has no job with these values"]
    return ["not recorded", "no job with these values is in the ledger"]


def _file_name(to: Path, page: list[tuple[str, str]], part: int) -> Path:
    stem = to.stem
    for name, label in page:
        stem += f"-{_slug(name)}_{_slug(label)}"
    if part:
        stem += f"-part{part}"
    return to.with_name(stem[:200] + to.suffix)


def _slug(text: str) -> str:
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._") else "_" for ch in text)
    return out.strip("_")[:60] or "value"
