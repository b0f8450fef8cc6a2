"""Seeing a sweep: labelled contact sheets (``grid``) and a static offline viewer (``viewer``).

Reads what was paid for, through the storage package's results reader and typed sidecars, and
never submits or fetches anything: it imports no HTTP stack and nothing of the engine.
"""

from __future__ import annotations

__all__ = ["GridOptions", "Sweep", "ViewOptions", "load_sweep", "make_grid", "make_viewer"]


def __getattr__(name: str):
    if name in ("Sweep", "load_sweep"):
        from batchgen.view import sweep

        return getattr(sweep, name)
    if name in ("GridOptions", "make_grid"):
        from batchgen.view import grid

        return getattr(grid, name)
    if name in ("ViewOptions", "make_viewer"):
        from batchgen.view import viewer

        return getattr(viewer, name)
    raise AttributeError(f"module 'batchgen.view' has no attribute {name!r}")
