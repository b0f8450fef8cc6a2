"""Shared test fixtures: async tests run on asyncio through anyio's pytest plugin (tests of
timing choose virtual time instead: see ``vclock``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
