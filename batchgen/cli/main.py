"""The `batchgen` command: parses arguments, calls the library, turns errors into exit codes.

Nothing here knows how a batch works; every command is a few lines over a library call, so
everything the CLI does can be done from Python too. User mistakes never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from batchgen._version import __version__
from batchgen.errors import BatchgenError, ManifestError

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _cmd_plan(args: argparse.Namespace) -> int:
    """Validate a manifest and show what it would run.

    Example: batchgen plan manifests/lora-sweep.yaml --json
    """
    from batchgen.cli.render import render_plan
    from batchgen.manifest import load_manifest, plan_manifest

    manifest = load_manifest(args.manifest)
    plan = plan_manifest(manifest, task_seconds=args.task_seconds)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render_plan(plan))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    """Print the manifest's JSON Schema, for editor completion.

    Example: batchgen schema > batchgen.schema.json
    """
    from batchgen.manifest.loader import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    """Serve the bundled provider simulator (API host and image host) until Ctrl-C.

    Any client can use it: point the API base URL at the printed API address and send any
    non-empty key (or the one given with --key). Port 0 picks free ports.

    Example: batchgen simulate --port 8000 --task-seconds 2 --fault-500 0.05
    """
    from batchgen.errors import UsageError
    from batchgen.simulator import SimConfig, serve
    from batchgen.simulator.config import FAULT_NAMES

    options = {name: getattr(args, name) for name in FAULT_NAMES}
    try:
        config = SimConfig(
            api_key=args.key, balance=args.balance, task_seconds=args.task_seconds,
            task_jitter=args.task_jitter, workers=args.workers, max_in_flight=args.max_in_flight,
            rpm=args.rpm, retry_after=args.retry_after, url_ttl=args.url_ttl,
            download_seconds=args.download_seconds,
            result_ttl=args.result_ttl, hints=not args.no_hints, seed_style=args.seed_style,
            base64_prefix=args.base64_prefix, fault_seed=args.fault_seed, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def ready(sim) -> None:
        print(f"batchgen simulator: API {sim.api_base_url}  images {sim.image_base_url}", flush=True)

    image_port = args.image_port
    if image_port is None:
        image_port = args.port + 1 if args.port else 0
    try:
        serve(config, host=args.host, port=args.port, image_port=image_port,
              public_host=args.public_host, access_log=args.access_log, on_ready=ready)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host} (ports {args.port}, {image_port}): "
                         f"{exc.strerror or exc}") from None
    return 0


def _run_options(args: argparse.Namespace):
    """The batch's parts as the command line gives them; --simulate gives the in-process
    simulator's two transports and a key it accepts."""
    from batchgen.cli.progress import ProgressMode, ProgressReporter
    from batchgen.engine.runner import RunOptions

    parts: dict = {}
    if getattr(args, "simulate", False):
        from batchgen.provider.targets import ApiKey
        from batchgen.simulator import SimConfig, Simulator

        sim = Simulator(SimConfig(task_seconds=args.sim_task_seconds, task_jitter=0.2))
        parts = dict(api_transport=sim.api_transport(), image_transport=sim.image_transport(),
                     api_key=ApiKey("simulated-key"), base_url=sim.api_base_url)
    mode = ProgressMode.QUIET if args.quiet else ProgressMode.AUTO
    return RunOptions(output=args.output, concurrency=args.concurrency, rate_limit=args.rpm,
                      base_url=parts.pop("base_url", args.base_url),
                      max_jobs=getattr(args, "max_jobs", None), handle_signals=True,
                      stop_after=args.stop_after,
                      include_rejected=getattr(args, "include_rejected", False),
                      reporter=ProgressReporter(mode=mode), **parts)


def _execute(args: argparse.Namespace, mode: str) -> int:
    import anyio

    from batchgen.cli.exitcodes import exit_code
    from batchgen.cli.render import render_summary
    from batchgen.engine.runner import Batch

    batch = Batch(args.manifest, _run_options(args))
    summary = anyio.run({"run": batch.run, "collect": batch.collect, "retry": batch.retry}[mode])
    print(render_summary(summary, args.manifest))
    return exit_code(summary)


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a manifest: submit every job not done yet, collect the images, resume anything left.

    Run the same command again after an interruption, a crash or a provider stop: tasks already
    submitted are collected, never submitted twice.

    Exit codes: 0 all done, 1 some jobs failed, 2 bad input or usage, 3 stopped by the
    provider (key or balance), 4 output folder not writable or disk full, 130 interrupted.

    Example: batchgen run manifests/demo.yaml --simulate
    """
    return _execute(args, "run")


def _cmd_collect(args: argparse.Namespace) -> int:
    """Only poll and download tasks already submitted (nothing new is submitted).

    Example: batchgen collect manifests/lora-sweep.yaml
    """
    return _execute(args, "collect")


def _cmd_retry(args: argparse.Namespace) -> int:
    """Put failed (and expired) jobs back and run them; takes the same options as run.

    Requests the provider rejected as invalid are left alone unless --include-rejected.

    Example: batchgen retry manifests/dataset.yaml
    """
    return _execute(args, "retry")


def _cmd_status(args: argparse.Namespace) -> int:
    """Show a batch's progress: counts by state, failures by reason, pace, tasks paid for.

    Takes the manifest or the batch folder; safe to use while the batch runs.

    Example: batchgen status output/castle-sweep --json
    """
    from batchgen.cli.render import render_status
    from batchgen.storage.status import batch_status

    report = batch_status(args.target)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render_status(report))
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

    p = command("simulate", _cmd_simulate, "serve the bundled provider simulator (no key needed)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0 = any free port)")
    p.add_argument("--image-port", type=int, default=None,
                   help="image host port (default: --port + 1, or any free port with --port 0)")
    p.add_argument("--public-host", default=None, metavar="NAME",
                   help="host name written into URLs (default: --host, or 127.0.0.1 for 0.0.0.0)")
    p.add_argument("--key", default=None, help="the only API key accepted (default: any non-empty key)")
    p.add_argument("--balance", type=int, default=None, metavar="N",
                   help="tasks the account can pay for (default unlimited)")
    p.add_argument("--task-seconds", type=float, default=1.0, metavar="S",
                   help="mean processing time per task (default 1.0; 0 = instant)")
    p.add_argument("--task-jitter", type=float, default=0.3, metavar="S",
                   help="standard deviation of the processing time (default 0.3)")
    p.add_argument("--workers", type=int, default=10_000, metavar="N",
                   help="tasks processed in parallel; more wait QUEUED (default 10000)")
    p.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="queued + processing tasks allowed; beyond: 429 (default unlimited)")
    p.add_argument("--rpm", type=int, default=None, metavar="N",
                   help="submits allowed per minute; beyond: 429 (default unlimited)")
    from batchgen.simulator.config import RETRY_AFTER_STYLES  # dataclasses only: cheap to import

    p.add_argument("--retry-after", choices=list(RETRY_AFTER_STYLES), default="mixed",
                   help="how a 429 says when to come back: Retry-After seconds or date, "
                        "retry-after-ms, none, seconds on half of them, or mixed (default)")
    p.add_argument("--url-ttl", type=float, default=3600.0, metavar="S",
                   help="image URL lifetime in seconds (default 3600)")
    p.add_argument("--download-seconds", type=float, default=0.0, metavar="S",
                   help="latency of the image host for each download (default 0)")
    p.add_argument("--result-ttl", type=float, default=None, metavar="S",
                   help="task results are forgotten this long after completion (default never)")
    p.add_argument("--no-hints", action="store_true", help="leave eta and progress_percent at 0")
    p.add_argument("--seed-style", choices=["string", "int", "mixed"], default="string",
                   help="type of extra.seed in task results (default string, as the docs)")
    p.add_argument("--base64-prefix", choices=["mixed", "always", "never"], default="mixed",
                   help="data: prefix on base64 images (default mixed)")
    from batchgen.simulator.config import FAULT_HELP  # dataclasses only: cheap to import

    for name, text in FAULT_HELP.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=float, default=0.0, metavar="RATE",
                       help=f"rate in [0, 1]: {text}")
    p.add_argument("--fault-seed", type=int, default=0, metavar="N", help="seed of the fault dice (default 0)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn access log)")

    for name, func, text in (("run", _cmd_run, "run a manifest (resumes an interrupted batch)"),
                             ("collect", _cmd_collect, "only poll and download submitted tasks"),
                             ("retry", _cmd_retry, "run failed jobs again")):
        p = command(name, func, text)
        p.add_argument("manifest", help="path to the manifest (YAML)")
        p.add_argument("--simulate", action="store_true",
                       help="run against the bundled simulator, in-process (no key, no network)")
        p.add_argument("--sim-task-seconds", type=float, default=1.0, metavar="S",
                       help=argparse.SUPPRESS)
        p.add_argument("--base-url", metavar="URL", help="send requests to this API base URL")
        p.add_argument("--concurrency", type=_positive_int, metavar="N",
                       help="at most N tasks in flight at the provider; fewer when it takes fewer "
                            "(default: the manifest's)")
        p.add_argument("--rpm", type=_positive_float, metavar="N",
                       help="at most N submits in any minute (default: the manifest's rate_limit; "
                            "none: learned from the provider's 429s)")
        p.add_argument("--stop-after", type=_positive_float, metavar="SECONDS",
                       help="after the first Ctrl-C or SIGTERM, leave at once SECONDS later even if "
                            "tasks are still in flight (set it below a Kubernetes or Slurm grace period)")
        p.add_argument("--output", type=Path, metavar="DIR",
                       help="the batch folder (default: output/<name>/)")
        p.add_argument("--quiet", action="store_true", help="no progress display, only the summary")
        if name == "run":
            p.add_argument("--max-jobs", type=_positive_int, metavar="N",
                           help="submit at most N new jobs this time")
        if name == "retry":
            p.add_argument("--include-rejected", action="store_true",
                           help="also retry requests the provider rejected as invalid")

    p = command("status", _cmd_status, "show a batch's progress and failures")
    p.add_argument("target", help="the manifest, or the batch folder")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")

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
    except ManifestError as exc:  # one FILE:LINE:COL line per problem, as editors expect
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in the manifest; nothing was sent.",
              file=sys.stderr)
        return exc.exit_code
    except BatchgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
