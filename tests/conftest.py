"""Shared test fixtures: async tests run on asyncio through anyio's pytest plugin (tests of
timing choose virtual time instead: see ``vclock``); a real S3 API server on loopback for any
folder that asks for ``s3_server``, ``s3_env`` or ``s3_url`` (see ``cluster/s3server.py``)."""

from __future__ import annotations

import pytest

from cluster.s3server import s3_env, s3_server, s3_url  # noqa: F401 - fixtures for every test folder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
