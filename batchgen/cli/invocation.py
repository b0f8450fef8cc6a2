"""The command line a person typed, so every hint the CLI prints is a command that works.

A hint that drops ``--output`` reads another folder, one that drops ``--simulate`` starts a
paid run: ``Invocation.command`` keeps the manifest and the options that decide which batch and
which API, with absolute paths (it works pasted in any directory), quoted for a POSIX shell. ``from_run`` rebuilds one from what the
ledger recorded of a run, for hints printed from a folder alone.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass

from batchgen.storage.identity import RunRecord

__all__ = ["Invocation"]


def name_runs(args: argparse.Namespace) -> bool:
    """True for the commands whose ``--shard`` picks the jobs to run (not plan's tally)."""
    return getattr(args, "command", None) in _RUNS

#: Commands that take --base-url and --simulate (plan and status only read).
_RUNS = frozenset({"run", "collect", "retry"})


@dataclass(frozen=True, slots=True)
class Invocation:
    """The manifest and the options that pick the batch folder and the API."""

    manifest: str
    output: str | None = None
    base_url: str | None = None
    simulate: bool = False
    shard: str | None = None  # as typed (``auto`` stays auto: the hint runs in the same array)
    state: str | None = None  # the ledger's folder of an object store output, when given

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Invocation:
        """The command as typed, its paths made absolute: a hint pasted in another directory
        names the same manifest and the same batch."""
        output = getattr(args, "output", None)
        if output is not None and "://" not in str(output):
            output = os.path.abspath(output)
        state = getattr(args, "state", None)
        return cls(manifest=os.path.abspath(args.manifest),
                   output=str(output) if output is not None else None,
                   base_url=getattr(args, "base_url", None),
                   simulate=bool(getattr(args, "simulate", False)),
                   shard=getattr(args, "shard", None) if name_runs(args) else None,
                   state=os.path.abspath(state) if state is not None and name_runs(args) else None)

    @classmethod
    def from_run(cls, run: RunRecord) -> Invocation | None:
        """The command of a recorded run (absolute paths), or None without its manifest."""
        if run.manifest is None:
            return None
        return cls(manifest=run.manifest, output=run.output, base_url=run.base_url,
                   simulate=run.target.simulated)

    def command(self, name: str, *extra: str) -> str:
        """``batchgen NAME MANIFEST [--output DIR] [--base-url URL] [--simulate] EXTRA...``."""
        argv = ["batchgen", name, self.manifest]
        if self.output is not None:
            argv += ["--output", self.output]
        if name in _RUNS:
            if self.base_url is not None:
                argv += ["--base-url", self.base_url]
            if self.simulate:
                argv.append("--simulate")
            if self.shard is not None:
                argv += ["--shard", self.shard]
            if self.state is not None:
                argv += ["--state", self.state]
        argv += extra
        return shlex.join(argv)

    def with_output(self, output: str) -> Invocation:
        return Invocation(self.manifest, output, self.base_url, self.simulate, self.shard, self.state)
