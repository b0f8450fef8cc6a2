"""The `batchgen` command: argument parsing, every text a person reads, progress, exit codes.

A thin layer over the library: each command builds a library object and calls one method.
Nothing below it prints or picks an exit code.
"""

from __future__ import annotations

from batchgen.cli.main import main

__all__ = ["main"]
