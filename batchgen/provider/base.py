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
    """An account at one API. ``submit`` returns a ``Submitted`` (task id, tries).

    Submits wait their turn at the run's ``Limits`` (``limits.py``) and report every answer
    to it (accepted, refused with 429, or neither), so the limit on tasks in flight and the
    rate window follow the provider; the engine reports tasks it sees finished to the same
    ``Limits``.
    """

    target: ApiTarget

    async def submit(self, model: str, body: dict[str, Any],
                     still_wanted: Callable[[], bool] = ...,
                     sending: Callable[[], None] = ...) -> Any:
        """Create one task; ``still_wanted`` is asked while waiting and before each try goes
        out, ``sending`` is called right before each try goes out."""

    async def task_result(self, task_id: str) -> TaskResult:
        """The task's state, parsed."""

    async def fetch_image(self, image: ResultImage, expected_format: str,
                          good_until: float | None = None, pixels: int | None = None) -> CheckedImage:
        """The finished image's bytes, checked to decode in the expected format (with at most
        a few times ``pixels``, the size asked for); ImageExpired when the URL expired, or
        would be past ``good_until`` before another try."""

    async def aclose(self) -> None:
        """Close connections; safe to call during cancellation."""
