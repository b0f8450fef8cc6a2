"""Every text a person reads about a run or a batch: summaries, status, notices, durations.

The engine and storage hand over data (RunSummary, StatusReport, notices); the words are
chosen here, once, so a message never drifts between the CLI and the library.
"""

from __future__ import annotations

from pathlib import Path

from batchgen.engine.events import Leaving, Notice, PossiblyCreated, Stopping
from batchgen.engine.summary import RunMode, RunSummary
from batchgen.storage.status import RATE_WINDOW, StatusReport

__all__ = ["format_duration", "render_notice", "render_status", "render_summary"]


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
