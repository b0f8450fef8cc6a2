"""Every text a person reads about a run or a batch: summaries, status, notices, durations.

The engine and storage hand over data (RunSummary, StatusReport, notices); the words are
chosen here, once, so a message never drifts between the CLI and the library.
"""

from __future__ import annotations

from pathlib import Path

from batchgen.engine.events import Leaving, Notice, PossiblyCreated, Stopping
from batchgen.export.base import ExportFormat
from batchgen.export.exporter import ExportPhase, ExportReport
from batchgen.export.scan import Problem
from batchgen.engine.summary import RunMode, RunSummary
from batchgen.manifest.plan import Plan
from batchgen.storage.status import RATE_WINDOW, StatusReport

__all__ = ["format_duration", "render_export", "render_export_progress", "render_notice",
           "render_plan", "render_status", "render_summary"]


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def render_notice(notice: Notice) -> str:
    if isinstance(notice, PossiblyCreated):
        return (f"{notice.count} job(s) were being submitted when an earlier run stopped: a task "
                f"may exist at the provider without its id; submitting them again.")
    if isinstance(notice, Stopping):
        return (f"stopping: no new submits; finishing the {notice.in_flight} task(s) in flight. "
                f"Press Ctrl-C again to leave at once (the next run collects them).")
    if isinstance(notice, Leaving):
        return "leaving now; the ledger is intact, run the same command to resume."
    raise TypeError(f"unknown notice {notice!r}")


def render_summary(summary: RunSummary, manifest_path: str | Path) -> str:
    """The lines printed when a run ends: what was done, what is left, what to type next."""
    self = summary
    lines: list[str] = []
    lines.append(f"{self.done}/{self.planned} images done in {self.folder / 'images'} "
                 f"({self.submitted} submitted, {self.collected} saved this run, "
                 f"{format_duration(self.elapsed)})")
    if self.possibly_created:
        lines.append(f"note: {self.possibly_created} job(s) were being submitted when an earlier run "
                     f"stopped; a task may exist at the provider without its id. They were "
                     f"submitted again.")
    if self.maybe_duplicated:
        lines.append(f"note: {self.maybe_duplicated} submit(s) broke off after the request was sent; "
                     f"the provider may have created (and billed) a task we hold no id for.")
    if self.redownloaded:
        lines.append(f"note: {self.redownloaded} image(s) recorded done were missing on disk and were "
                     f"fetched again.")
    if self.vanished:
        sample = ", ".join(self.vanished_sample)
        lines.append(f"note: {self.vanished} job(s) in the ledger are no longer in the manifest "
                     f"(e.g. {sample}); their files are kept.")
    if self.failed:
        reasons = ", ".join(f"{n} {r}" for r, n in self.failures.most_common())
        lines.append(f"{self.failed} job(s) failed ({reasons}). See `batchgen status {manifest_path}`; "
                     f"`batchgen retry {manifest_path}` runs the {self.retryable_failed} retryable "
                     f"one(s) again.")
    if self.stopped:
        lines.append(f"stopped: {self.stopped}")
    if self.interrupted:
        lines.append(f"interrupted: {self.pending} job(s) not submitted, {self.outstanding} task(s) "
                     f"still at the provider. Run the same command again to finish.")
    elif self.pending and not self.stopped and self.mode is RunMode.COLLECT:
        lines.append(f"{self.pending} job(s) not submitted yet: `batchgen run {manifest_path}` "
                     f"submits them.")
    elif self.pending and not self.stopped:
        lines.append(f"{self.pending} job(s) left to do: run the same command again.")
    elif self.outstanding and not self.stopped:
        lines.append(f"{self.outstanding} task(s) still at the provider: "
                     f"`batchgen collect {manifest_path}` picks them up.")
    return "\n".join(lines)


def render_status(report: StatusReport) -> str:
    """``batchgen status`` as text."""
    self = report
    c = self.counts
    total = self.planned if self.planned is not None else sum(c.values())
    out = [f"batch {self.batch} in {self.folder}",
           f"  {c.get('done', 0)}/{total} done, {c.get('failed', 0)} failed, "
           f"{c.get('submitted', 0) + c.get('generated', 0)} at the provider, "
           f"{c.get('submitting', 0)} being submitted, {c.get('pending', 0)} pending"]
    out.append(f"  tasks paid for: {self.tasks_created} created at the provider"
               + (f" (+ up to {self.maybe_duplicated} created without an id after broken "
                  f"connections)" if self.maybe_duplicated else ""))
    if self.rate_per_minute:
        out.append(f"  pace: {self.rate_per_minute:.1f} images/min over the last "
                   f"{RATE_WINDOW / 60:.0f} min, ETA {format_duration(self.eta_seconds)}")
    if self.vanished:
        out.append(f"  {self.vanished} job(s) in the ledger are no longer in the manifest")
    if self.unreadable_lines:
        out.append(f"  {self.unreadable_lines} unreadable ledger line(s) were skipped")
    if self.failures:
        out.append("  failures by reason:")
        for item in self.failures:
            kind = "retryable" if item["retryable"] else "not retryable"
            out.append(f"    {item['count']:>6}  {item['reason']} ({kind}), e.g. job {item['example_job']}: "
                       f"{item['example']}")
    return "\n".join(out)


def render_plan(plan: Plan) -> str:
    """``batchgen plan`` as text: the summary a person reads before spending money."""
    self = plan
    m = self.manifest
    key = m.key_variable
    key_note = ("set" if self.key_is_set else
                "not set in this environment: needed for a real run, not for --simulate")
    axes = " x ".join(f"{ax.name} {ax.size}" for ax in m.axes) or "(no matrix)"
    lines = [
        f"manifest    {m.path}",
        f"batch       {m.name}",
        f"model       {m.model} on {m.provider} ({m.endpoint})",
        f"api key     ${key} ({key_note})",
        f"output      {m.output}",
        f"axes        {axes}",
    ]
    for ax in m.axes:
        lines.append(f"  {ax.name:<12} {ax.size:>9,}  {ax.description}")
    repeat = f" (each cell x{m.repeat})" if m.repeat > 1 else ""
    lines.append(f"jobs        {self.jobs:,}{repeat}")
    dup = f"{self.duplicates:,}"
    if self.duplicates:
        parts = []
        if self.duplicates - self.identical_cells:
            parts.append(f"{self.duplicates - self.identical_cells:,} from repeat")
        if self.identical_cells:
            parts.append(f"{self.identical_cells:,} from cells with identical requests")
        dup += f" ({', '.join(parts)}; each gets its own id and image)"
    lines.append(f"duplicates  {dup}")
    example = self.example_file()
    if example:
        lines.append(f"file names  {example}  (template {m.filename!r})")
    caption = repr(m.caption) if isinstance(m.caption, str) else \
        ("the prompt, in <name>.txt" if m.caption else "none")
    lines.append(f"captions    {caption}")
    lines.append(f"estimate    {_approx(self.estimate_seconds)} wall time: {self.jobs:,} jobs x "
                 f"{self.task_seconds:g} s / {m.concurrency} in flight"
                 + (f", at most {m.rate_limit}/min" if m.rate_limit else "")
                 + (f" ({self.task_seconds:g} s per task is an assumption; --task-seconds "
                    "changes it)" if self.task_seconds_assumed else ""))
    for warning in self.warnings:
        lines.append(f"warning     {warning}")
    if self.preview:
        lines.append("preview")
        lines.append(f"  {'#':>5}  {'job id':<20} {'seed':>10}  {'size':<9}  {'loras':<16} prompt")
        for j in self.preview:
            prompt = j.request["prompt"].replace("\n", " ")
            prompt = prompt if len(prompt) <= 50 else prompt[:47] + "..."
            lines.append(f"  {j.index:>5}  {j.job_id:<20} {j.request['seed']:>10}  "
                         f"{j.request['size']:<9}  {self.lora_label(j):<16} {prompt}")
            if j.name != j.job_id:
                lines.append(f"  {'':>5}  -> images/{j.name}.{j.extension}")
        if self.jobs > len(self.preview):
            lines.append(f"  ... and {self.jobs - len(self.preview):,} more")
    return "\n".join(lines)


def _approx(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    hours, rest = divmod(seconds, 3600)
    return f"~{hours:.0f} h {rest / 60:.0f} min"


_LEFT_OUT = {
    Problem.NO_IMAGE: ("with no image on disk, or one of another size than recorded",
                       "{rerun} fetches them again"),
    Problem.NO_SIDECAR: ("with no readable sidecar", "{rerun} fetches them again"),
    Problem.CHANGED: ("whose image changed after it was saved (its sha256 differs)",
                      "delete those images and {rerun} fetches them again"),
}

_LOADERS = {
    ExportFormat.IMAGEFOLDER: 'load_dataset("imagefolder", data_dir="{to}")',
    ExportFormat.PARQUET: 'load_dataset("parquet", data_dir="{to}")',
    ExportFormat.WEBDATASET: 'load_dataset("webdataset", data_dir="{to}")',
}


def render_export_progress(phase: ExportPhase, done: int, total: int | None) -> str:
    """One line of export progress, for output that is not a terminal."""
    return f"batchgen export: {phase.value}: {done:,}" + (f"/{total:,}" if total else "")


def render_export(report: ExportReport, target: str | Path) -> str:
    """``batchgen export`` as text: what went where, what was left out and why, how to load it."""
    r = report
    where = f", only {' and '.join(r.where)}" if r.where else ""
    lines = [f"exported {r.exported:,} image(s) of batch {r.batch} to {r.to} "
             f"({r.format.value}, split {r.split}{where}, {format_duration(r.elapsed)})"]
    noun = {ExportFormat.IMAGEFOLDER: "folder", ExportFormat.PARQUET: "shard",
            ExportFormat.WEBDATASET: "shard"}[r.format]
    parts = [f"{r.written} {noun}(s) written"]
    if r.kept:
        parts.append(f"{r.kept} unchanged and kept")
    if r.removed:
        parts.append(f"{r.removed} stale file(s) removed")
    lines.append("  " + ", ".join(parts) + (f"; everything was rewritten: {r.rewrote_all}"
                                            if r.rewrote_all else ""))
    if r.linked or r.copied:
        lines.append(f"  images: {r.linked:,} hard-linked, {r.copied:,} copied "
                     "(another filesystem)" if r.copied else f"  images: {r.linked:,} hard-linked")
    if r.filtered_out:
        lines.append(f"  {r.filtered_out:,} done job(s) did not match the --where filters")
    if r.not_done:
        left = ", ".join(f"{n:,} {state}" for state, n in sorted(r.not_done.items()))
        lines.append(f"  not exported, not done: {left}. `batchgen status {target}` says why; "
                     f"export again when they are done to add them.")
    if r.not_in_manifest:
        lines.append(f"  {r.not_in_manifest:,} done job(s) no longer in the manifest were left out "
                     f"(export the batch folder {r.folder} to include them)")
    rerun = (f"`batchgen run {target}`" if Path(target).is_file()
             else "running the batch's manifest again (`batchgen run MANIFEST`)")
    for problem, n in r.problems.items():
        example = r.examples.get(problem)
        what, fix = _LEFT_OUT[problem]
        lines.append(f"  left out: {n:,} done job(s) {what}" + (f" (e.g. {example})" if example else "")
                     + f"; {fix.format(rerun=rerun)}")
    lines.append("  load it: from datasets import load_dataset; "
                 + _LOADERS[r.format].format(to=r.to))
    return "\n".join(lines)
