"""batchgen: declarative, resumable batch runs of asynchronous image-generation APIs.

    from batchgen import Batch, RunOptions, load_manifest
    summary = anyio.run(Batch(load_manifest("m.yaml"), RunOptions()).run)

Names load on first use, so ``batchgen plan`` does not pay for the HTTP stack.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from batchgen._version import __version__

# A library logs; it never prints. Without a handler of its own, Python's last-resort handler
# would print every warning to stderr next to the CLI's own words (a stop said twice).
logging.getLogger("batchgen").addHandler(logging.NullHandler())

_PUBLIC = {
    "AuthError": "batchgen.errors",
    "BalanceError": "batchgen.errors",
    "Batch": "batchgen.engine.runner",
    "ExportFormat": "batchgen.export",
    "ExportOptions": "batchgen.export",
    "ExportReport": "batchgen.export",
    "Failure": "batchgen.job",
    "FileClash": "batchgen.errors",
    "FolderMismatch": "batchgen.errors",
    "JobState": "batchgen.job",
    "BatchStopped": "batchgen.errors",
    "BatchgenError": "batchgen.errors",
    "Job": "batchgen.job",
    "Manifest": "batchgen.manifest.loader",
    "ManifestError": "batchgen.errors",
    "NotABatchFolder": "batchgen.errors",
    "OutputError": "batchgen.errors",
    "Plan": "batchgen.manifest.plan",
    "Problem": "batchgen.errors",
    "ProviderClient": "batchgen.provider.client",
    "ProviderError": "batchgen.errors",
    "RunOptions": "batchgen.engine.runner",
    "RunMode": "batchgen.engine.summary",
    "RunOutcome": "batchgen.engine.summary",
    "RunSummary": "batchgen.engine.summary",
    "SimConfig": "batchgen.simulator",
    "Target": "batchgen.storage.identity",
    "Simulator": "batchgen.simulator",
    "StatusReport": "batchgen.storage.status",
    "StopKind": "batchgen.errors",
    "UsageError": "batchgen.errors",
    "batch_status": "batchgen.storage.status",
    "export_batch": "batchgen.export",
    "load_manifest": "batchgen.manifest.loader",
    "manifest_json_schema": "batchgen.manifest.loader",
    "plan_manifest": "batchgen.manifest.plan",
    "run_batch": "batchgen.engine.runner",
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
