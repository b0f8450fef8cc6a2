"""The ledger replay as it was written first, line by line, kept as the reference that the
block-wise replay of ``storage/replay.py`` must match on any bytes (test_replay_exact.py).

Deliberately plain: ``readline`` per line, every field checked by walking the line's keys,
every event folded by the rules as ``Ledger.fold`` first stated them. Header and run lines go
through the real ``Replay`` (they are rare and unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from batchgen.job import Failure
from batchgen.storage.ledger import Ledger
from batchgen.storage.record import DERIVED, MAX_FILE, MAX_TASK_ID, JobRecord, digest
from batchgen.storage.replay import MAX_LINE, STATE_NAMES, Replay


def _count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _text(value: Any, limit: int | None = None) -> bool:
    return value is None or (isinstance(value, str) and (limit is None or len(value) <= limit))


def safe_file(value: Any) -> bool:
    """A recorded image path batchgen may open: relative, inside the folder (no ``..``, no
    absolute or drive path, no backslash, no NUL), short."""
    if not isinstance(value, str) or not value or len(value) > MAX_FILE:
        return False
    if value.startswith("/") or "\\" in value or "\0" in value:
        return False
    # no "", "." or ".." segment: framed in slashes, such a segment shows as //, /./ or /../
    framed = f"/{value}/"
    return "//" not in framed and "/./" not in framed and "/../" not in framed


def _task_id(value: Any) -> bool:
    return _text(value, MAX_TASK_ID)


def _file(value: Any) -> bool:
    return value is None or safe_file(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spec(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, dict) or not isinstance(value.get("request"), dict):
        return False
    return (isinstance(value.get("axes", {}), dict) and _text(value.get("name"))
            and _text(value.get("caption")) and _whole(value.get("index", -1))
            and _whole(value.get("replica", 0)))


def _info(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _sound(value, INFO_CHECKS))


def _sound(fields: dict[str, Any], checks: dict[str, Any]) -> bool:
    return all(checks.get(key) is None or checks[key](value) for key, value in fields.items())


CHECKS = {"task_id": _task_id, "file": _file, "bytes": _count, "sidecar_bytes": _count,
          "maybe_duplicated": _count, "sha256": _text, "size_got": _text, "code": _text,
          "reason": _text, "label": _text, "submitted_at": _number, "spec": _spec, "info": _info}
INFO_CHECKS = {"spec": _spec, "reason": _text, "code": _text, "label": _text, "size_got": _text,
               "submitted_at": _number, "failed_at": _number}


def restore(rec: JobRecord, event: dict[str, Any]) -> JobRecord:
    rec.task_id = event.get("task_id")
    rec.file = event.get("file")
    rec.size = int(event.get("bytes", 0) or 0)
    rec.side = int(event.get("sidecar_bytes", 0) or 0)
    rec.gone = bool(event.get("gone"))
    rec.sha256 = digest(event.get("sha256"))
    info = event.get("info")
    if not isinstance(info, dict) or not info:
        rec.info = None
    elif len(info) == 1 and type(info.get(DERIVED)) is str:
        rec.info = info[DERIVED]  # the common done record: the digest alone
    else:
        rec.info = info
    at = event.get("at")
    if isinstance(at, (int, float)):
        rec.at = float(at)
    return rec


def _set(rec: JobRecord, key: str, value: Any) -> None:
    if type(rec.info) is not dict:
        rec.info = rec.details() or {}
    rec.info[key] = value


def fold(ledger: Ledger, job_id: str, event: dict[str, Any], records: dict[str, JobRecord]) -> None:
    stats = ledger.stats
    rec = records.get(job_id)
    if rec is None:
        rec = records[job_id] = JobRecord()
    state = STATE_NAMES[event["state"]]
    rec.state = state
    at = event.get("at")
    if isinstance(at, (int, float)):
        rec.at = at
        if at > ledger.floor:
            ledger.floor = at
    if event.get("compact"):
        restore(rec, event)
        return
    if state == "submitting":
        rec.task_id = None
        rec.info = {"spec": event.get("spec"), "submitting_at": at}
    elif state == "submitted":
        rec.task_id = event.get("task_id")
        if event.get("again"):
            info = rec.details() or {}
            spec = event.get("spec") or info.get("spec")
            rec.info = {"spec": spec, "submitted_at": event.get("submitted_at", info.get("submitted_at"))}
            return
        stats.tasks_created += 1
        stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
        _set(rec, "submitted_at", at)
    elif state == "generated":
        pass
    elif state == "done":
        rec.file = event.get("file")
        rec.size = int(event.get("bytes", 0) or 0)
        rec.side = int(event.get("sidecar_bytes", 0) or 0)
        rec.sha256 = digest(event.get("sha256"))
        got = event.get("size_got")
        rec.info = {"size_got": got} if isinstance(got, str) else None
        derived = event.get("derived")
        if isinstance(derived, str):
            rec.info = derived if rec.info is None else {**rec.info, "derived": derived}
        if isinstance(at, (int, float)):
            stats.recent_done.append(float(at))
    elif state == "failed":
        spec = rec.get("spec")
        reason = str(event.get("reason", "unknown"))
        code = event.get("code")
        label = event.get("label")
        if not isinstance(code, str):
            label = reason.split(":", 1)[0]
            code = Failure.from_code(label).code
        submitted_at = rec.get("submitted_at")
        rec.info = {"reason": reason, "code": code, "label": label or code,
                    "retryable": bool(event.get("retryable", True)), "failed_at": at}
        if spec is not None:
            rec.info["spec"] = spec
        if submitted_at is not None:
            rec.info["submitted_at"] = submitted_at
        if event.get("task_id"):
            rec.task_id = event["task_id"]
        stats.maybe_duplicated += int(event.get("maybe_duplicated", 0) or 0)
    else:
        rec.task_id = None
        rec.file = None
        rec.size = 0
        rec.side = 0
        rec.sha256 = None
        rec.info = None


def reference_read(folder: Path, limit: int = MAX_LINE) -> Ledger:
    """``Ledger.read`` of a folder holding one ``ledger.jsonl``, the reference way."""
    ledger = Ledger(folder, None)
    replay = Replay(ledger)
    records, stats = ledger.records, ledger.stats
    with open(folder / "ledger.jsonl", "rb") as fh:
        while raw := fh.readline(limit):
            stats.lines += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                    pass
                stats.bad_lines += 1
                continue
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stats.bad_lines += 1
                continue
            if not isinstance(event, dict):
                stats.bad_lines += 1
                continue
            job_id = event.get("job")
            if job_id is None:
                if "batchgen_ledger" in event:
                    replay._header(event, None, stats, True, folder)
                elif "batchgen_run" in event and replay._run(event, True):
                    pass
                else:
                    stats.bad_lines += 1
                continue
            state = event.get("state")
            if state is None and "in_manifest" in event and isinstance(job_id, str):
                rec = records.get(job_id)
                if rec is not None:
                    rec.gone = not event["in_manifest"]
                continue
            if not isinstance(job_id, str) or not isinstance(state, str) \
                    or state not in STATE_NAMES or not _sound(event, CHECKS):
                stats.bad_lines += 1
                continue
            fold(ledger, job_id, event, records)
    if replay._file_run is not None:
        ledger.last_run = replay._file_run
    return ledger


def reference_lines(data: bytes, limit: int) -> list[bytes | None]:
    """The lines ``readline(limit)`` gives, newlines cut; None for one of ``limit`` bytes or more."""
    import io

    fh = io.BytesIO(data)
    out: list[bytes | None] = []
    while raw := fh.readline(limit):
        if len(raw) == limit and not raw.endswith(b"\n"):
            while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                pass
            out.append(None)
        else:
            out.append(raw[:-1] if raw.endswith(b"\n") else raw)
    return out


def view(ledger: Ledger) -> dict[str, Any]:
    """Everything a replay leaves in a Ledger that a caller can see."""
    records = {job_id: (rec.state, rec.task_id, rec.file, rec.size, rec.side, rec.sha256,
                        rec.info, rec.gone, rec.at, type(rec.at))
               for job_id, rec in ledger.records.items()}
    s = ledger.stats
    return {"records": records, "order": list(ledger.records),
            "stats": (s.lines, s.bad_lines, s.tasks_created, s.maybe_duplicated, list(s.recent_done)),
            "floor": ledger.floor, "batch": ledger.batch, "created_at": ledger.created_at,
            "runs": ledger.runs, "last_run": ledger.last_run}
