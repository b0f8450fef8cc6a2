"""The manifest stage: YAML with positions, schema, field rules, axes, lazy expansion and plan.

Owns everything between a manifest file and a lazy stream of Jobs. Never imports httpx, anyio,
rich or Pillow, and never the engine, the provider client or storage: it has no network and
no event loop.
"""

from __future__ import annotations

from batchgen.manifest.loader import Manifest, load_manifest, manifest_json_schema
from batchgen.manifest.plan import Plan, plan_manifest

__all__ = ["Manifest", "Plan", "load_manifest", "manifest_json_schema", "plan_manifest"]
