"""Every text a person reads about a run or a batch: summaries, status, notices, durations.

The engine and storage hand over data (RunSummary, StatusReport, notices); the words are
chosen here, once, so a message never drifts between the CLI and the library.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.engine.events import Leaving, Notice, PossiblyCreated, Stopping
from batchgen.engine.summary import RunMode, RunSummary
from batchgen.manifest.plan import Plan
from batchgen.storage.status import RATE_WINDOW, StatusReport

if TYPE_CHECKING:  # the view package loads Pillow: only the commands that draw import it
    from batchgen.view.grid import GridResult
    from batchgen.view.viewer import ViewResult

__all__ = ["format_duration", "render_grid", "render_notice", "render_plan", "render_status",
           "render_summary", "render_view"]


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


def render_grid(result: GridResult, command: list[str]) -> str:
    """``batchgen grid`` as text: the files written, then what had to give way and why."""
    from batchgen.view.grid import (Downscaled, Duplicates, MissingGlyphs, Split, Unplaced,
                                    Unreadable)

    sweep, choice = result.sweep, result.choice

    def role(i: int | None) -> str:
        return f"{sweep.axes[i].name} ({len(choice.kept[i])})" if i is not None else "none"

    pages = ", ".join(role(i) for i in choice.pages) or "none"
    lines = [f"{len(result.sheets)} sheet(s) of {sweep.batch or sweep.folder}: X {role(choice.x)}, "
             f"Y {role(choice.y)}, pages {pages}"]
    for sheet in result.sheets:
        lines.append(f"  {sheet.file}  ({sheet.width} x {sheet.height}, {len(sheet.columns)} x "
                     f"{len(sheet.rows)} cells of {sheet.cell[0]} x {sheet.cell[1]})")
    unreadable = [w for w in result.warnings if isinstance(w, Unreadable)]
    for w in result.warnings:
        if isinstance(w, MissingGlyphs):
            chars = " ".join(repr(c) for c in w.chars[:20]) + (" ..." if len(w.chars) > 20 else "")
            font = w.font or "the built-in font (ASCII only)"
            line = f"warning: {font} has no glyph for {chars}; they are drawn as boxes."
            if w.suggestion:
                line += f" With a font that has them: {shlex.join(_with_font(command, w.suggestion))}"
            else:
                line += " Give a font that has them with --font FILE.ttf."
            lines.append(line)
        elif isinstance(w, Downscaled):
            lines.append(f"note: cells downscaled from {w.natural[0]} x {w.natural[1]} to "
                         f"{w.cell[0]} x {w.cell[1]} to keep each sheet within {w.max_size} px "
                         f"(--max-size)")
        elif isinstance(w, Split):
            lines.append(f"note: {w.sheets} page(s) were split into {w.parts} files to stay within "
                         f"{w.max_size} px even at the smallest cells; --where keeps fewer values, "
                         f"--max-size allows bigger sheets")
        elif isinstance(w, Unplaced):
            lines.append(f"note: {w.count} recorded job(s) cannot say their axis values (no sidecar "
                         f"and no request in the ledger) and are left out")
        elif isinstance(w, Duplicates):
            lines.append(f"note: {w.count} job(s) have the same axis values as another; the first "
                         f"is shown")
    if unreadable:
        sample = "; ".join(f"{w.file} ({w.why})" for w in unreadable[:3])
        lines.append(f"warning: {len(unreadable)} image(s) could not be read and show a "
                     f"placeholder: {sample}")
    return "\n".join(lines)


def _with_font(command: list[str], font: str) -> list[str]:
    out, skip = [], False
    for word in command:
        if skip:
            skip = False
            continue
        if word == "--font":
            skip = True
            continue
        if word.startswith("--font="):
            continue
        out.append(word)
    return out + ["--font", font]


def render_view(result: ViewResult) -> str:
    """``batchgen view`` as text: where the page is, how to open it, what it will do."""
    sweep = result.sweep
    varying = ", ".join(f"{a.name} ({len(a.values)})" for a in sweep.varying()) or "none"
    lines = [f"viewer of {sweep.batch or sweep.folder}: {result.cells} cells, varying axes {varying}",
             f"  {result.index}  (data.js {result.data_bytes / 1024:,.0f} KB)",
             f"  open it: {result.index.resolve().as_uri()}"]
    if not sweep.from_manifest:
        lines.append("note: made from the batch folder alone, so jobs never started are not shown; "
                     "give the manifest to see every planned cell")
    if sweep.unplaced:
        lines.append(f"note: {sweep.unplaced} recorded job(s) cannot say their axis values and are "
                     f"left out")
    lines.append(f"  while a run goes on the page fills in from {sweep.folder / 'status.js'}")
    return "\n".join(lines)
