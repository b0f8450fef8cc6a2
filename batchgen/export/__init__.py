"""The export stage: a batch's done jobs as a dataset people train on (ImageFolder, Parquet,
WebDataset), read through the storage package's results reader.

It reads what was paid for and never submits: it never imports httpx, anyio or the engine,
and never writes in the batch folder. pyarrow is loaded only for the Parquet format.
"""

from __future__ import annotations

from batchgen.export.base import Layout, layouts
from batchgen.export.exporter import ExportOptions, ExportPhase, ExportReport, export_batch
from batchgen.export.formats import ExportFormat
from batchgen.export.scan import Omission

__all__ = ["ExportFormat", "ExportOptions", "ExportPhase", "ExportReport", "Layout", "Omission",
           "export_batch", "layouts"]
