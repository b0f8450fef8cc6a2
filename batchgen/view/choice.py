"""Which axis runs across, which down, which makes pages, and which values are kept.

The rules that fit a sweep, shared by the contact sheets and the viewer's first view: X is the
LoRA axis when it varies (else the last varying axis), Y the varying axis just before X in
matrix order, pages every other varying axis; an axis the user names for Z or the pages is
never taken for a default X or Y. Pure data: no Pillow, no files.
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
    z: str | None = None             # sub-grids side by side in one image, one per value
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
    z: int | None = None


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
    y = pick(options.y) if options.y else None
    z = pick(options.z) if options.z else None
    asked_pages = [pick(name) for name in options.pages] if options.pages is not None else []
    taken = {i for i in (x, y, z) if i is not None} | set(asked_pages)  # named by the user
    if x is None and varying:
        free = [i for i in varying if i not in taken]
        lora = [i for i in free if sweep.axes[i].name == LORA_AXIS]
        x = lora[0] if lora else (free[-1] if free else None)
    if y is None:  # a default: it gives way to an axis the user put on Z or the pages
        before = [i for i in varying if i != x and i not in taken]
        y = before[-1] if before else None
    if x is not None and x == y:
        raise UsageError(f"--x and --y are both {sweep.axes[x].name!r}; give two different axes")
    if z is not None and z in (x, y):
        raise UsageError(f"axis {sweep.axes[z].name!r} is already on X or Y; it cannot also be Z")
    if options.pages is not None:
        pages = asked_pages
        for i in pages:
            if i in (x, y, z):
                raise UsageError(f"axis {sweep.axes[i].name!r} is already on X, Y or Z; it "
                                 f"cannot also make the pages")
    else:
        pages = [i for i in varying if i not in (x, y, z)]
    for i in varying:
        if i not in pages and i not in (x, y, z):
            name = sweep.axes[i].name
            raise UsageError(
                f"axis {name!r} has {len(kept[i])} values but is not on X, Y, Z or a page: add "
                f"--page {name} or --z {name}, or keep one value with --where {name}="
                f"{sweep.axes[i].values[kept[i][0]].label}")
    fixed = [(axis.name, axis.values[kept[i][0]].label) for i, axis in enumerate(sweep.axes)
             if i not in (x, y, z) and i not in pages and len(kept[i]) == 1]
    return Choice(x, y, pages, kept, fixed, z)
