"""The sidecar: a typed record of how one image was made, written next to it as JSON.

One model for the writer and for every reader (status, export, the viewers), so a field is
named in one place. ``to_json`` keeps the key order people see in the files; ``from_json``
reads them back, tolerating fields a newer or older batchgen added or left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ImageInfo", "ProviderInfo", "Sidecar", "Timings"]


@dataclass(slots=True)
class ProviderInfo:
    name: str
    host: str
    model: str


@dataclass(slots=True)
class ImageInfo:
    """What was received: format and size as decoded, the size the request asked for, then
    where it went (the path the ledger records, relative to the batch folder) and its digest."""

    format: str
    width: int
    height: int
    file: str = ""
    bytes: int = 0
    sha256: str = ""
    requested: str = ""  # "W*H" as asked; differs from width*height when the provider erred

    @property
    def size(self) -> str:
        """The size received, written as a request writes it ("W*H")."""
        return f"{self.width}*{self.height}"

    @property
    def size_differs(self) -> bool:
        return bool(self.requested) and self.requested != self.size


@dataclass(slots=True)
class Timings:
    """ISO 8601 UTC times on one clock (the run's, never the provider's, so they are in
    order), and how many polls the task took. ``started`` is when a poll first saw the task
    processing (None when the first poll already found it finished)."""

    submitted: str | None = None
    started: str | None = None
    finished: str | None = None
    downloaded: str | None = None
    polls: int = 0


@dataclass(slots=True)
class Sidecar:
    batchgen_version: str
    batch: str
    job_id: str
    index: int
    replica: int
    provider: ProviderInfo
    task_id: str
    request: dict[str, Any]
    axes: dict[str, Any]
    seed: int | None
    caption: str | None
    image: ImageInfo
    timings: Timings = field(default_factory=Timings)
    warnings: list[str] = field(default_factory=list)  # what a reader must know (a wrong size)
    #: the provider's NSFW detection of the image (``valid``, ``confidence``), None when it said nothing
    nsfw: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "batchgen_version": self.batchgen_version, "batch": self.batch, "job_id": self.job_id,
            "index": self.index, "replica": self.replica,
            "provider": {"name": self.provider.name, "host": self.provider.host,
                         "model": self.provider.model},
            "task_id": self.task_id, "request": self.request, "axes": self.axes,
            "seed": self.seed, "caption": self.caption,
            "image": {"format": self.image.format, "width": self.image.width,
                      "height": self.image.height, "requested": self.image.requested,
                      "file": self.image.file, "bytes": self.image.bytes,
                      "sha256": self.image.sha256},
            "timings": {"submitted": self.timings.submitted, "started": self.timings.started,
                        "finished": self.timings.finished, "downloaded": self.timings.downloaded,
                        "polls": self.timings.polls},
            "warnings": list(self.warnings),
            **({"nsfw": dict(self.nsfw)} if self.nsfw is not None else {}),
        }

    def encode(self) -> bytes:
        """The file's bytes: indented JSON, UTF-8, one trailing newline."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sidecar:
        """A sidecar as read from a file; raises ValueError when it is not one."""
        try:
            provider = data.get("provider") or {}
            image = data["image"]
            timings = data.get("timings") or {}
            return cls(
                batchgen_version=str(data.get("batchgen_version", "")), batch=str(data.get("batch", "")),
                job_id=str(data["job_id"]), index=int(data.get("index", -1)),
                replica=int(data.get("replica", 0)),
                provider=ProviderInfo(str(provider.get("name", "")), str(provider.get("host", "")),
                                      str(provider.get("model", ""))),
                task_id=str(data.get("task_id", "")), request=dict(data.get("request") or {}),
                axes=dict(data.get("axes") or {}), seed=data.get("seed"), caption=data.get("caption"),
                image=ImageInfo(str(image.get("format", "")), int(image.get("width", 0)),
                                int(image.get("height", 0)), str(image.get("file", "")),
                                int(image.get("bytes", 0)), str(image.get("sha256", "")),
                                str(image.get("requested", ""))),
                timings=Timings(timings.get("submitted"), timings.get("started"),
                                timings.get("finished"), timings.get("downloaded"),
                                int(timings.get("polls", 0) or 0)),
                warnings=[str(w) for w in data.get("warnings") or []],
                nsfw=_nsfw(data.get("nsfw")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a batchgen sidecar ({type(exc).__name__}: {exc})") from None

    @classmethod
    def decode(cls, raw: bytes) -> Sidecar:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls.from_json(data)


def _nsfw(value: Any) -> dict[str, Any] | None:
    """The recorded NSFW result, only its two typed keys (a sidecar is read as untrusted)."""
    if not isinstance(value, dict):
        return None
    kept: dict[str, Any] = {}
    if isinstance(value.get("valid"), bool):
        kept["valid"] = value["valid"]
    confidence = value.get("confidence")
    if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
        kept["confidence"] = float(confidence)
    return kept or None
