"""The package's public names are exactly ``__all__``, and each one resolves."""

from __future__ import annotations

import subprocess
import sys

import batchgen


def test_every_public_name_resolves() -> None:
    for name in batchgen.__all__:
        assert getattr(batchgen, name) is not None, name
    assert dir(batchgen) == batchgen.__all__ == sorted(batchgen.__all__)


def test_importing_the_package_does_not_load_the_http_stack() -> None:
    code = "import sys, batchgen, batchgen.cli.main; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
