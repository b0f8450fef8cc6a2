"""The Provider protocol: the three calls the engine makes of an image-generation API.

The engine knows a provider only through this shape, so a second API (another host's paths,
bodies or auth) is one new module implementing it, with no edit to the engine. Each call
retries what may pass and raises only final outcomes from ``batchgen.errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from batchgen.provider.imagecheck import CheckedImage
from batchgen.provider.targets import ApiTarget
from batchgen.provider.wire import ResultImage, TaskResult

__all__ = ["Provider"]


class Provider(Protocol):
    """An account at one API. ``submit`` returns a ``Submitted`` (task id, tries)."""

    target: ApiTarget

    async def submit(self, model: str, body: dict[str, Any],
                     still_wanted: Callable[[], bool] = ...) -> Any:
        """Create one task; ``still_wanted`` is asked before each try goes out."""

    async def task_result(self, task_id: str) -> TaskResult:
        """The task's state, parsed."""

    async def fetch_image(self, image: ResultImage, expected_format: str) -> CheckedImage:
        """The finished image's bytes, checked to decode in the expected format."""

    async def aclose(self) -> None:
        """Close connections; safe to call during cancellation."""
