"""Every text a person reads about a plan, a run, a batch or an error, and every hint in it.

The engine and storage hand over data (RunSummary, StatusReport, notices, errors); the words
are chosen here, once, so a message never drifts between the CLI and the library. A hint is
always a whole command, built by ``Invocation`` from what the person typed (or from what the
ledger recorded of the last run), so it works when pasted.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchgen.cli.invocation import Invocation
from batchgen.engine.events import (Checking, Leaving, Notice, PossiblyCreated, Redo, Redoing,
                                    Starting, Stopping)
from batchgen.engine.stats import RunStats
from batchgen.engine.summary import RunMode, RunSummary
from batchgen.errors import BatchgenError, FileClash, FolderMismatch, NotABatchFolder, StopKind
from batchgen.manifest.plan import Plan
from batchgen.manifest.shards import ShardTally
from batchgen.provider.pacing import PaceReport
from batchgen.storage.diff import FolderDiff
from batchgen.storage.identity import Target
from batchgen.storage.status import RATE_WINDOW, StatusReport

if TYPE_CHECKING:  # the view package loads Pillow, export every layout: only their commands import them
    from batchgen.export.exporter import ExportPhase, ExportReport
    from batchgen.export.scan import Omission
    from batchgen.view.grid import GridResult
    from batchgen.view.viewer import ViewResult

__all__ = ["CHECKING_SHOWN_FROM", "format_duration", "render_error",
           "render_export", "render_export_progress", "render_grid", "render_notice",
           "render_pace", "render_plan", "render_progress", "render_status", "render_summary",
           "render_view"]

#: Manifests from this many jobs on get a line before their check (it takes a second or more).
CHECKING_SHOWN_FROM = 50_000


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


def _invocation(how: Invocation | str | Path) -> Invocation:
    return how if isinstance(how, Invocation) else Invocation(str(how))


def _cmd(how: Invocation, name: str, *extra: str) -> str:
    return f"`{how.command(name, *extra)}`"


# -- notices -----------------------------------------------------------------------------------

def render_notice(notice: Notice, how: Invocation | None = None) -> str | None:
    """A notice as a line (None: not worth a line, such as the check of a small manifest)."""
    if isinstance(notice, Checking):
        if notice.jobs < CHECKING_SHOWN_FROM:
            return None
        return (f"checking {notice.manifest}: {notice.jobs:,} jobs, every one before anything is "
                f"sent (Ctrl-C stops it)...")
    if isinstance(notice, Starting):
        return _starting(notice, how)
    if isinstance(notice, PossiblyCreated):
        return (f"{notice.count} job(s) were being submitted when an earlier run stopped: a task "
                f"may exist at the provider without its id; submitting them again.")
    if isinstance(notice, Redoing):
        if notice.why is Redo.FORGOTTEN:
            return (f"{notice.count} job(s) whose task the provider no longer knows: submitting "
                    f"them again.")
        return (f"{notice.count} timed-out task(s) still not finished after one more poll: "
                f"submitting them anew (the old tasks may still finish, and be billed).")
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
    ETA, counted against this run's goal (what ``--max-jobs`` leaves); with ``count``, the
    whole plain line printed when the output is not a terminal."""
    goal = stats.goal or stats.planned
    left = max(0, goal - stats.already_done - stats.done - stats.failed)
    eta = left / rate if rate > 0 else (0.0 if not left else None)
    pace = stats.pace.snapshot().to_json() if stats.pace is not None else {"in_flight": 0}
    detail = (f"{render_pace(pace)}, {stats.failed} failed, {rate * 60:.0f}/min, "
              f"ETA {format_duration(eta)}")
    if not count:
        return detail
    text = f"{stats.already_done + stats.done}/{goal} done"
    if goal < stats.planned:
        text += f" (of {stats.planned} in the manifest)"
    return f"{text}, {detail}"


def _render_pacing(pacing: PaceReport, how: Invocation, mode: RunMode) -> list[str]:
    lines: list[str] = []
    refused = sum(pacing.refusals.values())
    command = "run" if mode is RunMode.COLLECT else mode.value
    if pacing.adapted:
        lines.append(f"the provider took fewer tasks at once than asked: the limit on tasks in flight "
                     f"was {pacing.limit_median} (from {pacing.limit_min} to {pacing.limit_max}) of "
                     f"{pacing.ceiling}; `{how.command(command, '--concurrency', str(pacing.limit_median))}` "
                     f"starts there.")
    if refused:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(pacing.refusals.items(), key=lambda kv: -kv[1]))
        lines.append(f"{refused} submit(s) refused with 429 ({kinds}); none of them failed a job.")
    if pacing.window_learned and pacing.window:
        lines.append(f"the provider allows about {pacing.window} submits per minute; "
                     f"`{how.command(command, '--rpm', str(pacing.window))}` (or rate_limit: "
                     f"{pacing.window}) keeps to it from the start.")
    return lines


def _starting(n: Starting, how: Invocation | None) -> str:
    jobs = f"{n.planned:,} job(s)"
    if n.shard is not None:
        jobs = f"shard {n.shard} ({n.shard_source}): {jobs}"
        if n.concurrency is not None:
            jobs += f", at most {n.concurrency} in flight"
    where = f"{n.location} (ledger in {n.folder})" if n.location else f"{n.folder}"
    lines = [f"batchgen {n.mode}: batch {n.batch}, {jobs}, in {where}, "
             f"{n.target.describe()}"]
    work = f"  {n.done:,} done, {n.to_submit:,} to submit"
    if n.max_jobs is not None:
        work += f" (--max-jobs {n.max_jobs})"
    work += f", {n.to_collect:,} to collect from the provider"
    if n.failed:
        work += f", {n.failed:,} failed" + (" (left as they are; retry runs them)"
                                           if n.mode == RunMode.RUN else "")
    lines.append(work)
    lines.extend(_budget_lines(n))
    if n.adopted is not None:
        lines.append(f"  adopting the folder: it was made against {n.adopted.describe()}; "
                     f"its images keep that provenance in their sidecars")
    if n.vanished:
        lines.append(f"  {n.vanished:,} job(s) in the ledger are no longer in the manifest; "
                     f"their files are kept")
    if n.renamed:
        lines.append(f"  {n.renamed:,} done job(s) keep their files under the names an earlier "
                     f"filename gave them")
    return "\n".join(lines)


#: a run this big with no budget says what it is about to cost before its first submit
BIG_RUN = 10_000


def _budget_lines(n: Starting) -> list[str]:
    """The budget on the start line: spent and max_cost; or, for a big run without one, the
    job count and estimate before anything is paid."""
    s = n.spend
    if s is not None and s.max_cost is not None:
        left = f"; {s.left:,} more image(s) fit" if s.left is not None else ""
        if n.share_left is not None:
            left += f", {n.share_left:,} of them in this shard's share"
        return [f"  budget: spent {s.spent or 0:,.6g} of max_cost {s.max_cost:,.6g} "
                f"({s.tasks:,} task(s) at {s.price:g}){left}"]
    if n.to_submit <= BIG_RUN:
        return []
    time = f"~{format_duration(n.estimate_seconds)}" if n.estimate_seconds is not None else "time unknown"
    cost = (f", ~{n.cost:,.6g} at price_per_image" if n.cost is not None
            else ", cost unknown (no price_per_image)")
    return [f"  {n.to_submit:,} job(s) to submit: {time}{cost}; no max_cost caps the spend "
            f"(Ctrl-C stops it; max_cost or --max-cost sets a budget)"]


# -- a run's summary -------------------------------------------------------------------------

def render_summary(summary: RunSummary, how: Invocation | str | Path) -> str:
    """The lines printed when a run ends: what was done, what is left, what to type next.

    ``how`` is the command's Invocation (or just the manifest path as typed).
    """
    self, how = summary, _invocation(how)
    if self.nothing_to_retry:
        return _nothing_to_retry(self, how)
    lines: list[str] = []
    sent = f"{self.submitted} submitted"
    if self.refused:
        sent += f", {self.refused} of them refused by the provider"
    lines.append(f"{'shard ' + self.shard + ': ' if self.shard else ''}"
                 f"{self.done}/{self.planned} images done in "
                 f"{self.location + '/images' if self.location else self.folder / 'images'} "
                 f"({sent}, {self.collected} saved this run, {format_duration(self.elapsed)})")
    if self.shard:
        lines.append(f"note: the other shards' jobs are theirs; "
                     f"`{shlex.join(['batchgen', 'status', self.location or str(self.folder)])}` shows the whole batch.")
    if self.location:
        lines.append(f"ledger: {self.folder / 'ledger.jsonl' if not self.shard else self.folder / 'ledgers'}"
                     f" (copied to {self.location})")
    if self.copy_failed:
        lines.append(f"warning: the ledger's last copy to the store failed ({self.copy_failed}); "
                     f"the local ledger is whole, and the next run copies it again.")
    if self.adopted:
        lines.append("note: this run adopted a folder made against another target; each image's "
                     "sidecar names the target that made it.")
    if self.possibly_created:
        lines.append(f"note: {self.possibly_created} job(s) were being submitted when an earlier run "
                     f"stopped; a task may exist at the provider without its id. They were "
                     f"submitted again.")
    if self.maybe_duplicated:
        lines.append(f"note: {self.maybe_duplicated} submit(s) broke off after the request was sent; "
                     f"the provider may have created (and billed) a task we hold no id for.")
    if self.redownloaded:
        lines.append(f"note: {self.redownloaded} image(s) recorded done were missing or broken on "
                     f"disk and were fetched again from their task.")
    if self.rederived:
        lines.append(f"note: {self.rederived} done job(s) had their caption and sidecar rewritten "
                     f"to follow the manifest (no new task).")
    if self.redone:
        lines.append(f"note: {self.redone} job(s) whose task the provider no longer knew were "
                     f"submitted again.")
    if self.resubmitted_stuck:
        lines.append(f"note: {self.resubmitted_stuck} timed-out task(s) were still not finished "
                     f"after one more poll and were submitted anew; the old tasks may still "
                     f"finish, and be billed.")
    if self.size_mismatched:
        lines.append(f"warning: {self.size_mismatched} image(s) are not the size the request asked "
                     f"for (e.g. {self.size_example}); each one's sidecar says so.")
    if self.renamed and self.renamed_example:
        old, new = self.renamed_example
        lines.append(f"note: {self.renamed} done job(s) keep their files under the names an earlier "
                     f"filename gave them (e.g. {old}, named {new} now).")
    if self.pacing is not None:
        lines.extend(_render_pacing(self.pacing, how, self.mode))
    if self.vanished:
        sample = ", ".join(self.vanished_sample)
        lines.append(f"note: {self.vanished} job(s) in the ledger are no longer in the manifest "
                     f"(e.g. {sample}); their files are kept.")
    if self.failed:
        reasons = ", ".join(f"{n} {r}" for r, n in self.failures.most_common())
        text = f"{self.failed} job(s) failed ({reasons}). See {_cmd(how, 'status')}; "
        if self.retryable_failed:
            text += f"{_cmd(how, 'retry')} runs the {self.retryable_failed} retryable one(s) again"
            if self.failures.get("TIMEOUT"):
                text += " (a timed-out task is polled once more, then submitted anew)"
            text += "."
        else:
            text += (f"none can pass as sent; {_cmd(how, 'retry', '--include-rejected')} sends "
                     f"them again anyway.")
        lines.append(text)
    if self.stopped:
        text = f"stopped: {self.stopped}"
        if self.stop_kind is StopKind.ENDPOINT and how.base_url:
            text += f" (the base URL was given with --base-url {how.base_url})"
        lines.append(text)
    if self.interrupted:
        lines.append(f"interrupted: {self.pending} job(s) not submitted, {self.outstanding} task(s) "
                     f"still at the provider. Run the same command again to finish.")
    elif self.pending and not self.stopped and self.mode is RunMode.COLLECT:
        lines.append(f"{self.pending} job(s) not submitted yet: {_cmd(how, 'run')} submits them.")
    elif self.pending and not self.stopped:
        share = (f" (this run took on {self.max_jobs} new job(s), as --max-jobs said)"
                 if self.max_jobs is not None else "")
        lines.append(f"{self.pending} job(s) left to do{share}: run the same command again.")
    elif self.outstanding and not self.stopped:
        lines.append(f"{self.outstanding} task(s) still at the provider: "
                     f"{_cmd(how, 'collect')} picks them up.")
    return "\n".join(lines)


def _nothing_to_retry(s: RunSummary, how: Invocation) -> str:
    lines = []
    if s.failed:
        reasons = ", ".join(f"{n} {r}" for r, n in s.failures.most_common())
        lines.append(f"nothing to retry: the {s.failed} failed job(s) ({reasons}) were refused by "
                     f"the provider as invalid, and would be again as sent; nothing was sent. "
                     f"{_cmd(how, 'retry', '--include-rejected')} sends them anyway.")
    else:
        lines.append(f"nothing to retry: no job of the manifest has failed; nothing was sent "
                     f"({s.done}/{s.planned} done).")
    if s.pending:
        lines.append(f"{s.pending} job(s) not submitted yet: {_cmd(how, 'run')} submits them.")
    elif s.outstanding:
        lines.append(f"{s.outstanding} task(s) still at the provider: {_cmd(how, 'collect')} "
                     f"picks them up.")
    return "\n".join(lines)


# -- status ----------------------------------------------------------------------------------

def render_status(report: StatusReport) -> str:
    """``batchgen status`` as text."""
    self = report
    c = self.counts
    head = f"batch {self.batch or '(unnamed)'} in {self.location}"
    if self.manifest:
        head += f" (manifest {self.manifest})"
    out = [head]
    if self.target is not None:
        out.append(f"  made with {self.target.describe()}")
    numbers = (f"{self.done:,}/{self.planned:,} done, {self.failed:,} failed, "
               f"{self.at_provider:,} at the provider, {self.pending:,} pending")
    if c.get("submitting"):
        numbers += f" ({c['submitting']:,} being submitted)"
    if self.store is not None:
        out.append("  " + _as_of(self))
    if not self.planned_known and self.store is not None:
        out.append(f"  {numbers}; planned jobs unknown: no run is recorded in these ledger copies")
    elif not self.planned_known:
        out.append(f"  {numbers}; planned jobs unknown: no run is recorded in this ledger "
                   f"(`batchgen status MANIFEST --output {self.folder}` counts them)")
    elif self.complete:
        out.append(f"  complete: {numbers}")
    else:
        out.append(f"  not complete: {numbers}")
    if self.missing:
        out.append(f"  {self.missing:,} done job(s) have no image file in the batch (deleted or "
                   f"moved); a run fetches them again from their task")
    if self.shards_running:
        names = sorted(self.shards_running, key=lambda s: tuple(int(x) for x in s.split("/")))
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        out.append(f"  {'running now' if self.running else 'maybe running'}: "
                   f"{len(names)} shard(s) ({shown})")
    elif self.running:
        out.append(f"  running now (pid {self.holder.pid})" if self.holder else "  running now")
    elif self.running is None and self.holder is not None:
        out.append(f"  maybe running on {self.holder.host} (pid {self.holder.pid})")
    elif self.running is None and self.store is not None:
        from batchgen.storage.status import UPLOAD_EVERY

        out.append(f"  maybe running: a ledger copy was uploaded in the last "
                   f"{3 * UPLOAD_EVERY:.0f} s (a run uploads them every {UPLOAD_EVERY:.0f} s)")
    out.append(f"  tasks paid for: {self.tasks_created} created at the provider"
               + (f" (+ up to {self.maybe_duplicated} created without an id after broken "
                  f"connections)" if self.maybe_duplicated else ""))
    if self.spent is not None:
        used_up = self.max_cost is not None and self.spent >= self.max_cost and not self.complete
        out.append(f"  spent: {self.spent:,.6g}" + (f" of max_cost {self.max_cost:,.6g}"
                                                   if self.max_cost is not None else
                                                   " (no max_cost)")
                   + ("; the budget is used up: raise max_cost (or --max-cost) to go on"
                      if used_up else ""))
    if self.live is not None:
        out.append(f"  pace now: {render_pace(self.live)}")
    if self.rate_per_minute:
        pace = (f"  pace: {self.rate_per_minute:.1f} images/min over the last "
                f"{RATE_WINDOW / 60:.0f} min")
        if self.eta_seconds is not None:
            pace += f", ETA {format_duration(self.eta_seconds)}"
        out.append(pace)
    if self.size_mismatched:
        out.append(f"  warning: {self.size_mismatched} image(s) are not the size the request asked "
                   f"for (e.g. {self.size_example})")
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
    hint = _status_hint(self)
    if hint:
        out.append(f"  next: {hint}")
    return "\n".join(out)


def _as_of(r: StatusReport) -> str:
    """When the store's ledger copies were uploaded: the figures are as of then."""
    import time
    from datetime import datetime, timezone

    copies = f"{r.ledgers} ledger cop{'y' if r.ledgers == 1 else 'ies'}"
    at = r.uploaded
    if at is None:
        return f"read from {copies} in the store (upload time unknown)"
    when = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ago = format_duration(max(0.0, time.time() - at))
    return (f"as of {when} ({ago} ago): read from {copies} in the store, as last uploaded; "
            f"images finished since are not counted yet")


def _status_hint(r: StatusReport) -> str | None:
    """The command that goes on from here, rebuilt from the last recorded run."""
    if r.running or r.complete or r.last_run is None:
        return None
    how = Invocation.from_run(r.last_run)
    if how is None:
        return None
    if r.store is not None:
        how = how.with_output(r.store)  # the run that finishes it writes to the same prefix
    if any(f["retryable"] for f in r.failures):
        return f"{_cmd(how, 'retry')} runs the retryable failures again"
    if r.pending or r.at_provider or r.missing:
        return f"{_cmd(how, 'run')} finishes the batch"
    return None


# -- plan ------------------------------------------------------------------------------------

def render_shards(tally: ShardTally, index: int | None, source: str | None) -> str:
    """``plan --shard``: each shard's job count (the largest decides how long the array runs)."""
    count, jobs = tally.count, tally.jobs
    lines = [f"shards      {count} (the largest takes {tally.imbalance:.3f}x the mean of "
             f"{tally.total / count:,.1f} jobs)"]
    shown = range(count) if count <= 16 else sorted({*range(4), *range(count - 2, count),
                                                      *([index] if index is not None else [])})
    last = -1
    for i in shown:
        if i != last + 1:
            lines.append("  ...")
        mark = f"  <- this process ({source})" if i == index else ""
        lines.append(f"  {i}/{count:<8} {jobs[i]:>9,} jobs{mark}")
        last = i
    if last != count - 1:
        lines.append("  ...")
    return "\n".join(lines)


def render_plan(plan: Plan, folder: FolderDiff | None = None, *, recorded: Target | None = None,
                current: Target | None = None, refused: str | None = None,
                output: str | None = None, key_to: str | None = None,
                key_refused: str | None = None) -> str:
    """``batchgen plan`` as text: the summary a person reads before spending money.

    ``key_to``: the host the API key would go to (and who chose it), or ``key_refused``: why
    a run would refuse to send it anywhere.

    With ``folder`` (the manifest compared with the batch folder's ledger), what is done, new
    and gone, and the time and cost of the new work only.
    """
    self = plan
    m = self.manifest
    key = m.key_variable
    key_note = ("set" if self.key_is_set else
                "set but empty: a real run would refuse it" if self.key_is_empty else
                "not set in this environment: needed for a real run, not for --simulate")
    axes = " x ".join(f"{ax.name} {ax.size}" for ax in m.axes) or "(no matrix)"
    includes = len(m.expansion.includes)
    if includes:
        axes += f", + {includes} include cell(s)"
    lines = [
        f"manifest    {m.path}",
        f"batch       {m.name}",
        f"model       {m.model} on {m.provider} ({m.endpoint})",
        f"api key     ${key} ({key_note})",
        f"output      {output or (folder.ledger.folder if folder is not None else m.output)}",
        f"axes        {axes}",
    ]
    if key_to:
        lines.insert(4, f"key goes to {key_to}")
    elif key_refused:
        lines.insert(4, f"key goes to nowhere: a run would refuse. {key_refused}")
    for ax in m.axes:
        lines.append(f"  {ax.name:<12} {ax.size:>9,}  {ax.description}")
    repeat = f" (each cell x{m.repeat})" if m.repeat > 1 else ""
    lines.append(f"jobs        {self.jobs:,}{repeat}{_job_sources(m, self.jobs)}")
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
    work = self.jobs
    if folder is not None:
        work = folder.new
        lines.append(f"in folder   {folder.done:,} done, {folder.new:,} new, {folder.failed:,} failed "
                     f"(a run leaves them, retry runs them), {folder.at_provider:,} at the "
                     f"provider; {folder.vanished:,} no longer in the manifest (files kept)")
        if folder.rederive:
            lines.append(f"derived     {folder.rederive:,} done job(s) get their caption and sidecar "
                         f"rewritten to follow the manifest (no new task)"
                         + (f"; {folder.unrecorded:,} of them recorded without a digest, "
                            f"checked against their sidecar" if folder.unrecorded else ""))
        for r in folder.renamed_sample:
            lines.append(f"renamed     {r.old} keeps its name (the manifest names it {r.new} now)")
        if folder.renamed > len(folder.renamed_sample):
            lines.append(f"            ... {folder.renamed:,} done job(s) in all keep an earlier name")
        if recorded is not None and current is not None and recorded != current:
            lines.append(f"target      the folder was made with {recorded.describe()}, this "
                         f"run would use {current.describe()}: run refuses it without --adopt")
    what = f"{work:,} {'new ' if folder is not None else ''}jobs"
    lines.append(f"estimate    {_approx(self.seconds_for(work))} wall time: {what} x "
                 f"{self.task_seconds:g} s / {m.concurrency} in flight"
                 + (f", at most {m.rate_limit}/min" if m.rate_limit else "")
                 + (f" ({self.task_seconds:g} s per task is an assumption; --task-seconds "
                    "changes it)" if self.task_seconds_assumed else ""))
    cost = self.cost_for(work)
    if cost is not None:
        lines.append(f"cost        ~{cost:,.4g} for {what} at {m.price_per_image:g} per image "
                     f"(price_per_image)")
    if m.max_cost is not None:
        spent = folder.ledger.stats.tasks_created * (m.price_per_image or 0) if folder is not None else 0
        over = bool(cost) and spent + (cost or 0) > m.max_cost + 1e-9
        lines.append(f"budget      max_cost {m.max_cost:,.6g}" + (f", {spent:,.6g} spent" if spent else "")
                     + ("; a run stops at the budget before all of it (exit 5)" if over else ""))
    if m.order == "spread":
        lines.append("order       spread: every prefix samples each axis evenly")
    for warning in self.warnings:
        lines.append(f"warning     {warning}")
    if refused:
        lines.append(f"warning     run would refuse the output folder: {refused}")
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


def _job_sources(m: Any, jobs: int) -> str:
    """Where the jobs come from when it is not just the product of the axes: the include
    cells and the excluded cells, named."""
    product = 1
    for ax in m.axes:
        product *= ax.size
    if not m.axes:
        product = 0 if m.expansion.includes else 1
    includes = len(m.expansion.includes)
    excluded = product + includes - jobs // max(1, m.repeat)
    if not includes and excluded <= 0:
        return ""
    parts = [f"{product - max(excluded, 0):,} from the matrix"
             + (f" ({excluded:,} excluded)" if excluded > 0 else "")]
    if includes:
        parts.append(f"{includes:,} from include")
    return f" ({' + '.join(parts)})"


def render_grid_progress(phase: object, done: int, total: int | None) -> str:
    """One line of grid progress, for output that is not a terminal."""
    share = f" ({done / total:.0%})" if total else ""
    return f"batchgen grid: {phase}: {done:,}" + (f"/{total:,} cells{share}" if total else " cells")


def render_grid(result: GridResult, command: list[str]) -> str:
    """``batchgen grid`` as text: the files written, then what had to give way and why."""
    from batchgen.view.grid import (Downscaled, Duplicates, MissingGlyphs, Split, Unplaced,
                                    Unreadable)

    sweep, choice = result.sweep, result.choice

    def role(i: int | None) -> str:
        return f"{sweep.axes[i].name} ({len(choice.kept[i])})" if i is not None else "none"

    pages = ", ".join(role(i) for i in choice.pages) or "none"
    z = f", Z {role(choice.z)} side by side" if choice.z is not None else ""
    lines = [f"{len(result.sheets)} sheet(s) of {sweep.batch or sweep.folder}: X {role(choice.x)}, "
             f"Y {role(choice.y)}{z}, pages {pages}"]
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


# -- errors ----------------------------------------------------------------------------------

def render_error(exc: BatchgenError, how: Invocation | None = None,
                 command: str = "run") -> str:
    """An error as printed (``error: ...``), with the command that goes on when there is one."""
    text = f"error: {exc}"
    if how is None:
        return text
    if isinstance(exc, FolderMismatch):
        other = f"{exc.folder}-{'sim' if exc.current.simulated else exc.current.provider}"
        text += (f"\n  a new folder:    {how.with_output(other).command(command)}"
                 f"\n  adopt this one:  {how.command(command, '--adopt')}")
    elif isinstance(exc, FileClash):
        for clash in exc.clashes:
            owner = "in the manifest" if clash.owner_in_manifest else "no longer in the manifest"
            text += (f"\n  {clash.file}: job {clash.job_id} (#{clash.index}) would overwrite "
                     f"job {clash.owner} ({clash.owner_state}, {owner})")
        if exc.count > len(exc.clashes):
            text += f"\n  ... {exc.count - len(exc.clashes)} more"
        text += f"\n  or a new folder: {how.with_output(f'{exc.folder}-2').command(command)}"
    elif isinstance(exc, NotABatchFolder):
        text += f"\n  for example:     {how.with_output(f'{exc.folder}-batch').command(command)}"
    return text


# -- export ----------------------------------------------------------------------------------

@functools.cache
def _left_out() -> dict[Omission, tuple[str, str]]:
    """Per reason a job was left out of an export: what happened, and what fixes it."""
    from batchgen.export.scan import Omission

    return {
        Omission.NO_IMAGE: ("with no image on disk, or one of another size than recorded",
                           "{rerun} fetches them again"),
        Omission.NO_SIDECAR: ("with no readable sidecar", "{rerun} fetches them again"),
        Omission.CHANGED: ("whose image changed after it was saved (its sha256 differs)",
                          "delete those images and {rerun} fetches them again"),
        Omission.UNREADABLE: ("whose image (no sha256 recorded) does not decode as an image",
                             "delete those images and {rerun} fetches them again"),
        Omission.OUTSIDE: ("whose recorded path is a symlink, absolute or leads out of the batch "
                          "folder", "the batch folder was edited: check those records"),
    }


#: left-out jobs named one by one in the report, per reason, at most
_NAMED = 5


def render_export_progress(phase: ExportPhase, done: int, total: int | None) -> str:
    """One line of export progress, for output that is not a terminal."""
    return f"batchgen export: {phase.value}: {done:,}" + (f"/{total:,}" if total else "")


def render_export(report: ExportReport, target: str | Path) -> str:
    """``batchgen export`` as text: what went where, what was left out and why, how to load it."""
    r = report
    where = f", only {' and '.join(r.where)}" if r.where else ""
    lines = [f"exported {r.exported:,} image(s) of batch {r.batch} to {r.to} "
             f"({r.format}, split {r.split}{where}, {format_duration(r.elapsed)})"]
    from batchgen.export.formats import layout

    kind = layout(r.format)
    noun = kind.noun
    parts = [f"{r.written} {noun}(s) written"]
    if r.resumed:
        parts.append(f"{r.resumed} finished by the export that was cut short")
    if r.finished_swap:
        parts.append("an earlier export's swap, cut short, finished first")
    if r.kept:
        parts.append(f"{r.kept} unchanged and kept")
    if r.removed:
        parts.append(f"{r.removed} stale file(s) removed")
    lines.append("  " + ", ".join(parts) + (f"; everything was rewritten: {r.rewrote_all}"
                                            if r.rewrote_all else ""))
    if r.images:
        lines.append("  images: " + ", ".join(f"{n:,} {how}" for how, n in sorted(r.images.items())))
    store = isinstance(r.folder, str)  # read from an object store
    if store:
        lines.append(f"  read from {r.folder}: {r.downloaded:,} image(s) downloaded")
    if r.dedupe:
        how = ("exact: the same bytes as an earlier row" if r.dedupe == "exact" else
               f"near: pHash within {r.dedupe_distance} of 64 bits of an earlier row")
        lines.append(f"  dropped {len(r.duplicates):,} duplicate image(s) ({how}); the first of "
                     f"each group in the manifest's order was kept")
        for d in r.duplicates[:_NAMED]:
            lines.append(f"    job {d.job_id}: {d.path} (same as job {d.same_as}"
                         + (f", {d.distance} bits apart)" if d.distance else ")"))
        if len(r.duplicates) > _NAMED:
            lines.append(f"    and {len(r.duplicates) - _NAMED:,} more")
    if r.filtered_out:
        lines.append(f"  {r.filtered_out:,} done job(s) did not match the --where filters")
    if r.not_done:
        left = ", ".join(f"{n:,} {state}" for state, n in sorted(r.not_done.items()))
        lines.append(f"  not exported, not done: {left}. `{shlex.join(['batchgen', 'status', str(target)])}` says why; "
                     f"export again when they are done to add them.")
    if r.not_in_manifest:
        lines.append(f"  {r.not_in_manifest:,} done job(s) no longer in the manifest were left out "
                     f"(they are no longer part of the batch)")
    if store:
        rerun = ("running the batch's manifest again "
                 f"(`{shlex.join(['batchgen', 'run', 'MANIFEST', '--output', str(r.folder)])}`)")
    else:
        rerun = (f"`batchgen run {target}`" if Path(target).is_file()
                 else "running the batch's manifest again (`batchgen run MANIFEST`)")
    for problem, n in r.problems.items():
        what, fix = _left_out()[problem]
        if store:
            what = what.replace("on disk", "in the store")
        lines.append(f"  left out: {n:,} done job(s) {what}; {fix.format(rerun=rerun)}")
        named = [o for o in r.omitted if o.why is problem]
        for o in named[:_NAMED]:
            lines.append(f"    job {o.job_id}: {o.path}")
        if len(named) > _NAMED:
            lines.append(f"    and {len(named) - _NAMED:,} more")
    if r.uploaded:
        lines.append(f"  put in {r.to}: {r.uploaded:,} object(s), each whole")
    if r.card:
        lines.append(f"  dataset card: {r.to}/{r.card} (set its licence)")
    else:
        lines.append(f"  no dataset card: {r.to}/README.md is not batchgen's, so it was left as it is")
    lines.append("  load it: from datasets import load_dataset; "
                 + kind.loader.format(to=r.to))
    return "\n".join(lines)
