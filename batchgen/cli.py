"""The `batchgen` command: parses arguments, calls the library, turns errors into exit codes.

Nothing here knows how a batch works; every command is a few lines over a library call, so
everything the CLI does can be done from Python too. User mistakes never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from batchgen._version import __version__
from batchgen.errors import BatchgenError

__all__ = ["main"]


def _cmd_plan(args: argparse.Namespace) -> int:
    """Validate a manifest and show what it would run.

    Example: batchgen plan manifests/lora-sweep.yaml --json
    """
    from batchgen.manifest import load_manifest
    from batchgen.plan import plan_manifest

    manifest = load_manifest(args.manifest)
    plan = plan_manifest(manifest, task_seconds=args.task_seconds)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
    else:
        print(plan.to_text())
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    """Print the manifest's JSON Schema, for editor completion.

    Example: batchgen schema > batchgen.schema.json
    """
    from batchgen.manifest import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Run a YAML manifest of image generations against an asynchronous API, resumably.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip()
        p = sub.add_parser(name, help=help_text, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("plan", _cmd_plan, "validate a manifest and show the jobs it expands to")
    p.add_argument("manifest", help="path to the manifest (YAML)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--task-seconds", type=float, default=None, metavar="S",
                   help="assumed seconds per task for the time estimate")

    command("schema", _cmd_schema, "print the manifest JSON Schema")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting, so tests can call it."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except BatchgenError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
