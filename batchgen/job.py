"""One unit of work: a fully resolved submit request plus the axis values that produced it.

A Job is pure data, cheap to make and to drop: expansion yields them one at a time, so a
million-job manifest never holds a million of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Job"]


@dataclass(frozen=True, slots=True)
class Job:
    """What to ask the provider for, and where the answer goes.

    - ``job_id``: stable id, a hash of the canonical request (and replica index), the same on
      every machine for the same manifest.
    - ``index``: position in expansion order (0-based); for display and ``{index}`` only.
    - ``request``: the exact JSON body of the submit call; every field resolved.
    - ``axes``: the matrix values that made this cell (name -> JSON value), for sidecars.
    - ``replica``: 0 for the first copy of a request, 1.. for repeats of the same request.
    - ``name``: file path under the batch's ``images/`` folder, without extension; may hold
      ``/`` for subfolders, never ``..`` nor an absolute path.
    - ``caption``: text for a ``<name>.txt`` caption file next to the image, or None.
    """

    job_id: str
    index: int
    request: dict[str, Any]
    axes: dict[str, Any]
    replica: int
    name: str
    caption: str | None = None

    @property
    def extension(self) -> str:
        """File extension of the image, from the requested output format."""
        return str(self.request.get("output_format", "webp"))
