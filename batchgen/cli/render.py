"""Every text a person reads about a run or a batch: summaries, status, notices, durations.

The engine and storage hand over data (RunSummary, StatusReport, notices); the words are
chosen here, once, so a message never drifts between the CLI and the library.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchgen.engine.events import Leaving, Notice, PossiblyCreated, Stopping
from batchgen.engine.stats import RunStats
from batchgen.engine.summary import Pacing, RunMode, RunSummary
from batchgen.manifest.plan import Plan
from batchgen.storage.status import RATE_WINDOW, StatusReport

__all__ = ["format_duration", "render_notice", "render_pace", "render_plan", "render_progress",
           "render_status", "render_summary"]


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


def render_pace(pace: Mapping[str, Any]) -> str:
    """Tasks in flight against the limit, and any pause or outage, from a PaceSnapshot's JSON
    (the progress line and ``status`` say it the same way)."""
    limit, ceiling = pace.get("limit"), pace.get("ceiling")
    text = f"{pace.get('in_flight', 0)} in flight"
    if limit is not None and ceiling is not None and limit < ceiling:
        text += f" (limit {limit} of {ceiling}, adapted to the provider)"
    paused = pace.get("paused_for") or 0
    if paused >= 0.5:
        window = pace.get("window")
        why = (f"rate window, {window}/min{' learned' if pace.get('window_learned') else ''}"
               if window else "the provider asked to wait")
        text += f", submits paused {format_duration(paused)} ({why})"
    outage = pace.get("outage_for")
    if outage is not None and outage >= 1:
        text += f", provider unreachable for {format_duration(outage)} (outage: retrying)"
    return text


def render_progress(stats: RunStats, rate: float, count: bool = False) -> str:
    """The progress detail beside the bar: in flight and the limit, pauses, failed, rate and
    ETA; with ``count``, the whole plain line printed when the output is not a terminal."""
    todo = max(0, stats.planned - stats.already_done)
    eta = (todo - stats.done - stats.failed) / rate if rate > 0 else None
    pace = stats.pace.snapshot().to_json() if stats.pace is not None else {"in_flight": 0}
    detail = (f"{render_pace(pace)}, {stats.failed} failed, {rate * 60:.0f}/min, "
              f"ETA {format_duration(eta)}")
    if count:
        return f"batchgen: {stats.already_done + stats.done}/{stats.planned} done, {detail}"
    return detail


def _render_pacing(pacing: Pacing, manifest_path: str | Path, mode: RunMode) -> list[str]:
    lines: list[str] = []
    refused = sum(pacing.refusals.values())
    command = "run" if mode is RunMode.COLLECT else mode.value
    if pacing.adapted:
        lines.append(f"the provider took fewer tasks at once than asked: the limit on tasks in flight "
                     f"was {pacing.limit_median} (from {pacing.limit_min} to {pacing.limit_max}) of "
                     f"{pacing.ceiling}; `batchgen {command} {manifest_path} --concurrency "
                     f"{pacing.limit_median}` starts there.")
    if refused:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(pacing.refusals.items(), key=lambda kv: -kv[1]))
        lines.append(f"{refused} submit(s) refused with 429 ({kinds}); none of them failed a job.")
    if pacing.window_learned and pacing.window:
        lines.append(f"the provider allows about {pacing.window} submits per minute; `batchgen {command} "
                     f"{manifest_path} --rpm {pacing.window}` (or rate_limit: {pacing.window}) keeps "
                     f"to it from the start.")
    return lines


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
    if self.pacing is not None:
        lines.extend(_render_pacing(self.pacing, manifest_path, self.mode))
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
    if self.running is not None:
        out.append(f"  running now (pid {self.running.get('pid')}): {render_pace(self.running)}")
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
