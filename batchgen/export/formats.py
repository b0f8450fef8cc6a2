"""The export formats: importing each layout's module registers it, and ``ExportFormat``
names every registered one (its values are the ``--format`` choices)."""

from __future__ import annotations

from enum import StrEnum

from batchgen.export import imagefolder, parquet, webdataset  # noqa: F401 - each registers its layout
from batchgen.export.base import Layout, layouts

__all__ = ["ExportFormat", "layout", "layouts"]

ExportFormat = StrEnum("ExportFormat", {name.upper(): name for name in layouts()},  # type: ignore[misc]
                      module=__name__)
ExportFormat.__doc__ = "A registered export layout, by its ``--format`` name."


def layout(name: str) -> type[Layout]:
    """The layout class of a format name."""
    return layouts()[str(name)]
