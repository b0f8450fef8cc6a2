"""Which axis runs across, which down, which makes pages, and which values are kept.

The rules that fit a sweep, shared by the contact sheets and the viewer's first view: X is the
LoRA axis when it varies (else the last varying axis), Y the varying axis just before X in
matrix order, pages every other varying axis. Pure data: no Pillow, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchgen.errors import UsageError
from batchgen.view.sweep import LORA_AXIS, Sweep

__all__ = ["Choice", "GridOptions", "choose_axes"]


@dataclass
class GridOptions:
    """What ``batchgen grid`` takes; None picks what fits a sweep (see ``choose_axes``)."""

    x: str | None = None
    y: str | None = None
    pages: list[str] | None = None
    where: list[tuple[str, str]] = field(default_factory=list)
    cell_size: int | None = None     # long side of a cell in pixels (default: the images' own)
    max_size: int = 8192             # no sheet is wider or taller than this
    min_cell: int = 96               # cells are never downscaled below this long side
    font: str | None = None          # a TrueType file; None: Pillow's built-in font (ASCII)
    font_size: int | None = None


@dataclass
class Choice:
    """Axis indices on X, Y and pages, the values kept of each axis, and the fixed ones."""

    x: int | None
    y: int | None
    pages: list[int]
    kept: list[list[int]]
    fixed: list[tuple[str, str]]


def choose_axes(sweep: Sweep, options: GridOptions) -> Choice:
    """X: the LoRA axis if it varies, else the last varying one; Y: the varying axis just
    before X in matrix order; pages: every other varying axis. ``where`` keeps only the values
    it names (several for one axis keep several)."""
    kept: list[list[int]] = [list(range(len(axis.values))) for axis in sweep.axes]
    chosen: dict[int, set[int]] = {}
    for name, text in options.where:
        i = sweep.axis_index(name)
        chosen.setdefault(i, set()).add(sweep.axes[i].find(text))
    for i, values in chosen.items():
        kept[i] = sorted(values)
    varying = [i for i in range(len(sweep.axes)) if len(kept[i]) > 1]
    pick = sweep.axis_index
    x = pick(options.x) if options.x else None
    if x is None and varying:
        lora = [i for i in varying if sweep.axes[i].name == LORA_AXIS]
        x = lora[0] if lora else varying[-1]
    y = pick(options.y) if options.y else None
    if y is None:
        before = [i for i in varying if i != x]
        y = before[-1] if before else None
    if x is not None and x == y:
        raise UsageError(f"--x and --y are both {sweep.axes[x].name!r}; give two different axes")
    if options.pages is not None:
        pages = [pick(name) for name in options.pages]
        for i in pages:
            if i in (x, y):
                raise UsageError(f"axis {sweep.axes[i].name!r} is already on X or Y; it cannot "
                                 f"also make the pages")
    else:
        pages = [i for i in varying if i not in (x, y)]
    for i in varying:
        if i not in pages and i not in (x, y):
            name = sweep.axes[i].name
            raise UsageError(
                f"axis {name!r} has {len(kept[i])} values but is not on X, Y or a page: add "
                f"--page {name}, or keep one value with --where {name}="
                f"{sweep.axes[i].values[kept[i][0]].label}")
    fixed = [(axis.name, axis.values[kept[i][0]].label) for i, axis in enumerate(sweep.axes)
             if i not in (x, y) and i not in pages and len(kept[i]) == 1]
    return Choice(x, y, pages, kept, fixed)
