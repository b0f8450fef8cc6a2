"""The `batchgen` command: parses arguments, calls the library, turns errors into exit codes.

Nothing here knows how a batch works; every command is a few lines over a library call, so
everything the CLI does can be done from Python too. User mistakes never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from batchgen._version import __version__
from batchgen.errors import BatchgenError, ManifestError

__all__ = ["main"]


class _Layouts(Sequence[str]):
    """The export layouts' names, looked up only when asked for (a usage error, help, an
    export): the registry loads every layout's module, which no other command needs."""

    def _names(self) -> list[str]:
        from batchgen.export.formats import layouts

        return sorted(layouts())

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


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


def _concurrency(text: str) -> int:
    from batchgen.manifest.fields import MAX_CONCURRENCY  # the manifest's limit, one number

    value = _positive_int(text)
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_CONCURRENCY} (as in a manifest), "
                                         f"got {value}")
    return value


def _cmd_plan(args: argparse.Namespace) -> int:
    """Validate a manifest and show what it would run.

    When the batch folder already has a ledger, it also shows what is done, what is new and
    what is no longer in the manifest, and estimates the time (and, with price_per_image in
    the manifest, the cost) of the new work only. It refuses, as run would, a manifest whose
    jobs would write over files the ledger records for other jobs.

    Example: batchgen plan manifests/lora-sweep.yaml --json
    """
    from batchgen.cli.render import render_plan, render_shards
    from batchgen.engine.preflight import plan_batch

    base_url = args.base_url
    if args.simulate:
        from batchgen.simulator.app import DEFAULT_API_BASE_URL as base_url
    planned = plan_batch(args.manifest, output=args.output, shard=args.shard, base_url=base_url,
                         simulated=args.simulate, task_seconds=args.task_seconds)
    if args.json:
        print(json.dumps(planned.to_json(), indent=2, ensure_ascii=False))
        return 0
    print(render_plan(planned.plan, planned.diff, recorded=planned.recorded,
                      current=planned.current, refused=planned.refused,
                      output=planned.place.location, key_to=planned.key_to,
                      key_refused=planned.key_refused))
    if planned.check.tally is not None:
        print(render_shards(planned.check.tally, planned.shard_index, planned.shard_source))
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
            rpm=args.rpm, rpm_counts=args.rpm_counts, rpm_window=args.rpm_window,
            retry_after=args.retry_after, url_ttl=args.url_ttl,
            download_seconds=args.download_seconds, api_seconds=args.api_seconds,
            result_ttl=args.result_ttl, hints=not args.no_hints, seed_style=args.seed_style,
            base64_prefix=args.base64_prefix, fault_seed=args.fault_seed, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    started = []

    def ready(sim) -> None:
        started.append(sim)
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
    for sim in started:  # what a client made it do: a batch's cost, as the provider counts it
        stats = sim.stats
        print(f"batchgen simulator: stopped; {stats.tasks_created} task(s) created, "
              f"{stats.submits} submit(s), {stats.polls} poll(s)", flush=True)
    return 0


def _place(args: argparse.Namespace, parts: dict):
    """Where the batch lives (``storage/batch.py``): ``--output`` a folder, or an object store
    URL whose ledger lives in a state folder (``--state``, or one per URL under
    $XDG_STATE_HOME/batchgen) and is copied to the store."""
    from batchgen.storage.batch import place_of

    place = place_of(args.manifest, output=args.output, state=args.state)
    if place.in_store:
        from batchgen.storage.mirror import LedgerMirror
        from batchgen.storage.objectstore import ObjectStoreWriter

        writer = ObjectStoreWriter(place.url)  # one filesystem (one connection pool) for both
        parts.update(writer=writer, mirror=LedgerMirror(place.url, filesystem=writer.fs),
                     location=place.url)
    return place


def _run_options(args: argparse.Namespace):
    """The batch's parts as the command line gives them; --simulate gives the in-process
    simulator's two transports and a key it accepts."""
    from batchgen.cli.invocation import Invocation
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
    from batchgen.manifest.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    place = _place(args, parts)
    output = place.folder if place.given_output else None
    return place.manifest, RunOptions(output=output, concurrency=args.concurrency, shard=shard,
                      rate_limit=getattr(args, "rpm", None),
                      base_url=parts.pop("base_url", args.base_url),
                      max_jobs=getattr(args, "max_jobs", None), max_cost=args.max_cost,
                      handle_signals=True,
                      stop_after=args.stop_after,
                      include_rejected=getattr(args, "include_rejected", False),
                      simulated=bool(args.simulate), adopt=args.adopt,
                      reporter=ProgressReporter(mode=mode, invocation=Invocation.from_args(args)),
                      **parts)


def _execute(args: argparse.Namespace, mode: str) -> int:
    import anyio

    from batchgen.cli.exitcodes import exit_code
    from batchgen.cli.invocation import Invocation
    from batchgen.cli.render import render_summary
    from batchgen.engine.runner import Batch

    batch = Batch(*_run_options(args))
    summary = anyio.run({"run": batch.run, "collect": batch.collect, "retry": batch.retry}[mode])
    print(render_summary(summary, Invocation.from_args(args)))
    return exit_code(summary)


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a manifest: submit every job not done yet, collect the images, resume anything left.

    Run the same command again after an interruption, a crash or a provider stop: tasks already
    submitted are collected, never submitted twice.

    The folder remembers what made it (provider, API host, model, simulated or not): a run
    against another target refuses it (exit 2) unless --adopt.

    Exit codes: 0 all done, 1 some jobs failed, 2 bad input or usage (a folder of another
    target or batch included), 3 stopped by the provider (key or balance), 4 output folder
    not writable or disk full, 5 stopped by the budget (max_cost), 130 interrupted.

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

    A timed-out task is polled once more, and submitted anew if it is still not finished
    (the old task may still finish, and be billed). Requests the provider rejected as
    invalid are left alone unless --include-rejected. With nothing failed, nothing is sent.

    Example: batchgen retry manifests/dataset.yaml
    """
    return _execute(args, "retry")


def _cmd_status(args: argparse.Namespace) -> int:
    """Show a batch's progress: counts by state, failures by reason, pace, tasks paid for.

    Takes the manifest, the batch folder, or the batch's object-store URL (s3://bucket/prefix:
    read from the ledger copies a run uploads there, so the figures are as of their upload);
    safe to use while the batch runs. Given only the folder or URL, the planned job count is
    the one the latest run recorded; "complete" means every planned job is done.

    Example: batchgen status output/castle-sweep --json
    """
    from batchgen.cli.render import render_status
    from batchgen.storage.batch import open_batch

    report = open_batch(args.target, output=args.output).status()
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(render_status(report))
    return 0


#: ``grid --max-size`` unless given: no sheet wider or taller
_MAX_SHEET = 8192


def _pasteable(path: str | Path) -> str:
    """A path for a printed command: absolute, so it works pasted in any directory (a store
    URL as it is)."""
    text = str(path)
    return text if "://" in text else os.path.abspath(text)


def _where(text: str) -> tuple[str, str]:
    axis, sep, value = text.partition("=")
    if not sep or not axis.strip():
        raise argparse.ArgumentTypeError(f"expected AXIS=VALUE, got {text!r}")
    return axis.strip(), value.strip()


def _cmd_grid(args: argparse.Namespace) -> int:
    """Draw labelled contact sheets of a sweep from the images on disk (nothing is generated).

    Axis names and values go on the top and left edges, the values every cell shares in a
    title block, and a placeholder naming the reason stands in for a failed, pending or
    missing cell. By default X is the LoRA axis (or the last varying one), Y the varying axis
    before it, and every other varying axis makes one file per value (--z AXIS draws one
    labelled sub-grid per value side by side in one image instead). Sheets stay within
    --max-size pixels: cells are downscaled first, then pages split into parts.

    Example: batchgen grid manifests/lora-sweep.yaml --to sweep.png --y subject --page seed
    """
    from batchgen.cli.progress import ExportProgressView, ProgressMode
    from batchgen.cli.render import render_grid, render_grid_progress
    from batchgen.view.grid import GridOptions, make_grid

    options = GridOptions(x=args.x, y=args.y, pages=args.page, z=args.z, where=args.where or [],
                          cell_size=args.cell_size, max_size=args.max_size, font=args.font,
                          font_size=args.font_size)
    mode = ProgressMode.QUIET if args.quiet else ProgressMode.AUTO
    with ExportProgressView(mode, sys.stderr, interval=5.0, render=render_grid_progress) as view:
        result = make_grid(args.target, args.to, options,
                           progress=lambda done, total: view.update("drawing", done, total))
    command = ["batchgen", "grid", _pasteable(args.target), "--to", _pasteable(args.to)]
    for flag in ("x", "y", "z", "cell_size", "max_size", "font", "font_size"):
        value = getattr(args, flag)
        if value is not None and not (flag == "max_size" and value == _MAX_SHEET):
            command += ["--" + flag.replace("_", "-"), _pasteable(value) if flag == "font" else str(value)]
    command += [w for axis in args.page or () for w in ("--page", axis)]
    command += [w for axis, value in args.where or () for w in ("--where", f"{axis}={value}")]
    print(render_grid(result, command))
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    """Write a static, offline viewer of a sweep: index.html and one data file.

    Open index.html from the file system or any static host: pick the axes across, down and
    for grids of grids, toggle values, hover or click a cell for its details, step through
    cells full-screen with the arrow keys. While a run goes on the page fills in as jobs finish.

    Example: batchgen view output/lora-sweep
    """
    from batchgen.cli.render import render_view
    from batchgen.view.viewer import ViewOptions, make_viewer

    print(render_view(make_viewer(args.target, ViewOptions(to=args.to))))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a batch's done jobs as a dataset: ImageFolder, Parquet or WebDataset.

    Takes the manifest, the batch folder, or the batch's object-store URL (s3://bucket/prefix:
    its ledger copies, sidecars and images are read from the store, many at a time, and
    checked by size and sha256 as on disk). Only done jobs are exported (the rest are counted
    in the report); every row carries the job's provenance as flat columns. Exporting again
    after more jobs finished keeps what did not change and rewrites the rest.

    Example: batchgen export manifests/dataset.yaml --format parquet --to datasets/flowers
    """
    from batchgen.cli.progress import ExportProgressView, ProgressMode
    from batchgen.cli.render import render_export
    from batchgen.export import ExportOptions, export_batch

    options = ExportOptions(format=args.format, to=args.to, split=args.split,
                            where=args.where or (), overwrite=args.overwrite,
                            link=args.link, dedupe=args.dedupe,
                            dedupe_distance=args.dedupe_distance, shard_size=args.shard_size)
    with ExportProgressView(ProgressMode.QUIET if args.quiet else ProgressMode.AUTO) as view:
        report = export_batch(args.target, options, progress=view.update)
    print(render_export(report, _pasteable(args.target)))
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Run a YAML manifest of image generations against an asynchronous API, resumably.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip()
        p = sub.add_parser(name, help=help_text, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("plan", _cmd_plan, "validate a manifest and show the jobs it expands to")
    p.add_argument("manifest", help="path to the manifest (YAML)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.add_argument("--task-seconds", type=_positive_float, default=None, metavar="S",
                   help="assumed seconds per task for the time estimate")
    p.add_argument("--output", metavar="DIR|URL",
                   help="the batch folder to compare with (default: the manifest's), or an "
                        "object store URL")
    p.add_argument("--base-url", metavar="URL", help="compare with a run against this base URL")
    p.add_argument("--simulate", action="store_true", help="compare with a --simulate run")
    p.add_argument("--shard", metavar="I/N|auto/N",
                   help="show how many jobs each of N shards takes (and which is this process's)")

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
    from batchgen.simulator.config import RETRY_AFTER_STYLES, RPM_COUNTS, RPM_WINDOWS  # dataclasses only

    p.add_argument("--rpm-counts", choices=list(RPM_COUNTS), default="accepted",
                   help="what the --rpm window counts: the submits it accepted (default) or all "
                        "it saw, refused ones too")
    p.add_argument("--rpm-window", choices=list(RPM_WINDOWS), default="sliding",
                   help="the --rpm window: the last 60 s (sliding, default) or each clock minute (fixed)")

    p.add_argument("--retry-after", choices=list(RETRY_AFTER_STYLES), default="mixed",
                   help="how a 429 says when to come back: Retry-After seconds or date, "
                        "retry-after-ms, none, seconds on half of them, or mixed (default)")
    p.add_argument("--url-ttl", type=float, default=3600.0, metavar="S",
                   help="image URL lifetime in seconds (default 3600)")
    p.add_argument("--download-seconds", type=float, default=0.0, metavar="S",
                   help="latency of the image host for each download (default 0)")
    p.add_argument("--api-seconds", type=float, default=0.0, metavar="S",
                   help="round trip of the API host: each answer leaves S after its request "
                        "(default 0; a real provider is some 0.1-0.3 s away)")
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
        p.add_argument("--concurrency", type=_concurrency, metavar="N",
                       help="at most N tasks in flight at the provider, 1..1000; fewer when it takes "
                            "fewer (default: the manifest's; a shard's share of it with --shard)")
        p.add_argument("--shard", metavar="I/N|auto|auto/N",
                       help="run shard I of N (0-based) of the jobs, with its own ledger in the "
                            "folder; auto reads a Slurm, Kubernetes (auto/N) or AWS Batch array index")
        if name != "collect":  # collect submits nothing: no submit rate to limit
            p.add_argument("--rpm", type=_positive_float, metavar="N",
                           help="at most N submits in any minute (default: the manifest's rate_limit; "
                                "none: learned from the provider's 429s)")
        p.add_argument("--stop-after", type=_positive_float, metavar="SECONDS",
                       help="after the first Ctrl-C or SIGTERM, leave at once SECONDS later even if "
                            "tasks are still in flight (set it below a Kubernetes or Slurm grace period)")
        p.add_argument("--output", metavar="DIR|URL",
                       help="the batch folder (default: the manifest's output, or output/<name>/ "
                            "beside the manifest), or an object store URL "
                            "such as s3://bucket/prefix (pip install 'batchgen[s3]')")
        p.add_argument("--state", metavar="DIR",
                       help="with --output s3://...: the local folder of the ledger (default: one "
                            "per URL under $XDG_STATE_HOME/batchgen)")
        p.add_argument("--adopt", action="store_true",
                       help="go on in a folder made against another target (provider, host, "
                            "model or simulator), recording this one")
        p.add_argument("--quiet", action="store_true", help="no progress display, only the summary")
        p.add_argument("--max-cost", type=_positive_float, metavar="AMOUNT",
                       help="the batch's budget in the currency of price_per_image (default: the "
                            "manifest's max_cost): no submit that could pass it is sent; exit 5")
        if name != "collect":
            p.add_argument("--max-jobs", type=_positive_int, metavar="N",
                           help="submit at most N new jobs this time")
        if name == "retry":
            p.add_argument("--include-rejected", action="store_true",
                           help="also retry requests the provider rejected as invalid")

    p = command("status", _cmd_status, "show a batch's progress and failures")
    p.add_argument("target", help="the manifest, the batch folder, or its store URL")
    p.add_argument("--output", metavar="DIR|URL",
                   help="with a manifest: its batch folder or store URL, if not the manifest's")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")

    p = command("grid", _cmd_grid, "draw labelled contact sheets of a sweep")
    p.add_argument("target", metavar="BATCH", help="the manifest, the batch folder, or its store URL")
    p.add_argument("--to", type=Path, required=True, metavar="PATH",
                   help="the sheet to write (.png, .webp or .jpg); pages and parts add suffixes")
    p.add_argument("--x", metavar="AXIS", help="the axis across (default: loras, or the last varying)")
    p.add_argument("--y", metavar="AXIS", help="the axis down (default: the varying axis before X)")
    p.add_argument("--page", action="append", metavar="AXIS",
                   help="one file per value of this axis (repeat for more; default: the rest)")
    p.add_argument("--z", metavar="AXIS", help="one labelled sub-grid per value of this axis, "
                   "side by side (wrapped) in one image")
    p.add_argument("--where", action="append", type=_where, metavar="AXIS=VALUE",
                   help="keep only this value of an axis (repeat to keep several)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    p.add_argument("--cell-size", type=_positive_int, metavar="PX",
                   help="long side of a cell (default: the images' own size)")
    p.add_argument("--max-size", type=_positive_int, default=_MAX_SHEET, metavar="PX",
                   help="no sheet wider or taller than this (default 8192)")
    p.add_argument("--font", metavar="FILE", help="a TrueType/OpenType font for the labels "
                   "(default: Pillow's built-in font, ASCII only)")
    p.add_argument("--font-size", type=_positive_int, metavar="PX",
                   help="label size (default: from the cell size, 14 to 36)")

    p = command("view", _cmd_view, "write a static offline viewer of a sweep")
    p.add_argument("target", metavar="BATCH", help="the manifest, the batch folder, or its store URL")
    p.add_argument("--to", type=Path, metavar="DIR", help="the viewer's folder (default: BATCH/view/)")

    p = command("export", _cmd_export, "export done jobs as a dataset (ImageFolder, Parquet, WebDataset)")
    p.add_argument("target", help="the manifest, the batch folder, or its store URL")
    p.add_argument("--format", required=True, choices=_Layouts(), metavar="FORMAT",
                   help="the dataset layout: %(choices)s")
    p.add_argument("--to", required=True, metavar="DIR|URL",
                   help="the dataset folder, or an object store (s3://bucket/prefix)")
    p.add_argument("--split", default="train", help="split name (default train)")
    p.add_argument("--where", action="append", metavar="AXIS=VALUE",
                   help="export only rows whose column AXIS is VALUE; repeat for more "
                        "(the same AXIS twice: either value)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export of another kind, or files batchgen did not record")
    p.add_argument("--dedupe", choices=["exact", "near"],
                   help="drop duplicate images, keeping the first in the manifest's order: exact "
                        "(the same bytes) or near (a perceptual hash; needs imagehash)")
    p.add_argument("--dedupe-distance", type=int, default=4, metavar="BITS",
                   help="near: how many of the 64 pHash bits may differ (default 4)")
    p.add_argument("--link", action="store_true",
                   help="imagefolder: hard-link the images to the batch's (both made read-only) "
                        "instead of copying them")
    p.add_argument("--shard-size", type=_positive_int, default=10_000, metavar="N",
                   help="WebDataset samples per shard (default 10000)")
    p.add_argument("--quiet", action="store_true", help="no progress display, only the report")

    return parser


#: Exit code when whoever read the output went away (``batchgen status --json | head``),
#: as a shell reports a process ended by SIGPIPE.
EXIT_PIPE_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting, so tests can call it."""
    if argv is None:  # the command itself, not a program calling main()
        _lighter_start()
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.command is None:  # a bare `batchgen`: what it can do, not an error
        parser.print_help()
        return 0
    args.argv = argv[1:]  # after the command's name: hints repeat the command as typed
    try:
        return int(args.func(args))
    except ManifestError as exc:  # one FILE:LINE:COL line per problem, as editors expect
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in the manifest; nothing was sent.",
              file=sys.stderr)
        return exc.exit_code
    except BatchgenError as exc:
        from batchgen.cli.invocation import Invocation
        from batchgen.cli.render import render_error

        how = Invocation.from_args(args) if hasattr(args, "manifest") else None
        print(render_error(exc, how, args.command), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE_CLOSED


def _lighter_start() -> None:
    """Skip two imports the command never uses, together a sixth of its start-up:

    - httpx's own command-line tool: ``import httpx`` loads it (and click, pygments, rich)
      whenever those are installed. Marking the module absent is Python's documented way to
      say so (``sys.modules[name] = None``); httpx then defines a stub ``main``.
    - pydantic's plugins: looking for them reads the metadata of every installed package.
      batchgen's models are internal; a user who wants plugins sets the variable themselves.
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
