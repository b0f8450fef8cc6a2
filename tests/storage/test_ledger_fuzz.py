"""Ledger replay takes any bytes a folder may hold: random lines, and real lines with a field
mutated. A line is a record or it is skipped and counted; replay, status and the records it
gives never raise anything but batchgen's own errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import BatchgenError
from batchgen.storage.ledger import Ledger
from batchgen.storage.status import batch_status

HEADER = {"batchgen_ledger": 1, "batch": "fuzz", "created_at": 1.0, "version": "0"}
SPEC = {"request": {"prompt": "p", "seed": 1, "size": "256*256"}, "name": "a", "axes": {"n": 1},
        "replica": 0, "index": 0}
LINES = [
    {"job": "a", "state": "submitting", "at": 2.0, "spec": SPEC},
    {"job": "a", "state": "submitted", "at": 3.0, "task_id": "t1", "maybe_duplicated": 0},
    {"job": "a", "state": "done", "at": 4.0, "file": "images/a.png", "bytes": 10, "sidecar_bytes": 5,
     "sha256": "0" * 64, "size_got": "512*512"},
    {"job": "b", "state": "failed", "at": 5.0, "code": "TASK_FAILED", "reason": "r", "label": "X",
     "retryable": True, "task_id": "t2"},
    {"job": "c", "state": "done", "compact": 1, "at": 6.0, "task_id": "t3", "file": "images/c.png",
     "bytes": 3, "info": {"spec": SPEC, "reason": "x", "code": "TIMEOUT", "submitted_at": 1.0}},
    {"batchgen_run": 1, "at": 7.0},
]
VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | \
    st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _replay(tmp_path: Path, body: bytes) -> None:
    folder = tmp_path / "b"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "ledger.jsonl").write_bytes(orjson.dumps(HEADER) + b"\n" + body)
    try:
        ledger = Ledger.read(folder)
        for job_id, rec in ledger.records.items():
            rec.job(job_id), rec.failure, rec.label, rec.sha256_hex, rec.size_got
        report = batch_status(folder)
        json.dumps(report.counts)
    except BatchgenError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_replay_or_fail_as_batchgen(tmp_path: Path, body: bytes) -> None:
    _replay(tmp_path, body)


@FUZZ
@given(st.integers(0, len(LINES) - 1), st.text(max_size=10).filter(lambda k: k != "batchgen_ledger")
       | st.sampled_from(["job", "state", "file", "bytes", "sidecar_bytes", "spec", "task_id", "info",
                          "sha256", "reason", "code", "label", "at", "maybe_duplicated", "compact"]),
       VALUES)
def test_real_lines_with_a_field_mutated_replay(tmp_path: Path, which: int, key: str, value) -> None:
    lines = [dict(line) for line in LINES]
    lines[which][key] = value
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()   # big ints, NaN too
    _replay(tmp_path, body)
