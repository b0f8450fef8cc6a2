"""The block-wise replay gives exactly what the line-by-line replay gave, on any bytes: the
same records (every field, in the same order), the same counts of lines, unreadable lines and
tasks, the same clock floor, batch and runs (the reference is tests/storage/replaykit.py).
Torn lines, hostile fields, lines too long to read and lines cut across read blocks included."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.storage.ledger import Ledger
from batchgen.storage.replay import MAX_LINE, read_lines
from replaykit import reference_lines, reference_read, view

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SPEC = {"request": {"prompt": "p", "seed": 1}, "name": "a", "axes": {"n": 1}, "replica": 0, "index": 0}
HEADER = {"batchgen_ledger": 1, "batch": "exact", "created_at": 1.0, "version": "0"}

ANY = st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats(allow_nan=False) \
    | st.text(max_size=6) | st.lists(st.integers(), max_size=2) \
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def mostly(good: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a value batchgen writes, sometimes anything (a line is sound often enough to
    fold, and every check still meets values of every type)."""
    return st.integers(0, 3).flatmap(lambda n: good if n else ANY)


#: values of each field batchgen writes, and near misses of each check
VALUES = {
    "at": [2.0, 3, True, "1", None, -1.5],
    "task_id": ["t1", "t2", "x" * 300, 5, None],
    "file": ["images/a.png", "a/b.png", "../x.png", "/abs.png", "a//b", "a\\b", "", "a/./b", "a\u0000b",
             "x" * 1100, "x" * 1024, 7, ".", "..", "./a", "a/.", "a/..", "a/", ".hidden/a.png", "a/.b/c",
             "a/b.", "a..b/c"],
    "bytes": [0, 10, 10**6, -1, True, 1.5, "3", 2**70],
    "sidecar_bytes": [0, 900, -1, False, 2.0],
    "sha256": ["0" * 64, "ab" * 32, "zz" * 32, "ab", 5],
    "size_got": ["512*512", 5], "derived": ["0123456789abcdef", 5, ["x"]],
    "code": ["TIMEOUT", "TASK_FAILED", "REJECTED", 3], "reason": ["ILLEGAL_PROMPT: no", "r", 1.0],
    "label": ["X", ["X"]], "retryable": [True, False, 0, "no"],
    "maybe_duplicated": [0, 1, 3, -1, True, 0.5], "again": [True, False, 1],
    "submitted_at": [1.0, 50, "1", True],
    "spec": [SPEC, {**SPEC, "index": True}, {**SPEC, "index": 1.0}, {**SPEC, "replica": False},
             {**SPEC, "axes": []}, {**SPEC, "axes": None}, {"request": {}}, {**SPEC, "request": None},
             {**SPEC, "index": None}, {**SPEC, "name": None}, {**SPEC, "name": 1}, {**SPEC, "caption": 3},
             {"request": 1}, [SPEC]],
    "compact": [1, 0, True],
    "info": [{"derived": "0123456789abcdef"}, {"spec": SPEC, "reason": "r", "submitted_at": 1.0},
             {"failed_at": "x"}, {}, {"derived": 5}, {"spec": {**SPEC, "replica": False}},
             {"size_got": 1}, {"label": "X", "code": "TIMEOUT"}, [1]],
    "gone": [1, 0], "seed": [1, None], "in_manifest": [True, False, 0],
}
FIELDS = {key: mostly(st.sampled_from(values)) for key, values in VALUES.items()}
STATES = mostly(st.sampled_from(["pending", "submitting", "submitted", "generated", "done", "failed",
                                 "weird"]))


SHAPES = [  # the lines batchgen writes, one of each kind
    {"job": "a", "state": "submitting", "at": 2.0, "spec": SPEC},
    {"job": "a", "state": "submitted", "at": 3.0, "task_id": "t1", "maybe_duplicated": 1},
    {"job": "a", "state": "submitted", "at": 3.5, "task_id": "t1", "again": True, "spec": SPEC,
     "submitted_at": 1.0},
    {"job": "a", "state": "generated", "at": 3.7, "seed": 1},
    {"job": "a", "state": "done", "at": 4.0, "file": "images/a.png", "bytes": 10, "sha256": "0" * 64,
     "sidecar_bytes": 5, "derived": "0123456789abcdef"},
    {"job": "a", "state": "done", "at": 4.5, "file": "images/a.png", "bytes": 10, "sha256": "ab" * 32,
     "size_got": "512*512"},
    {"job": "b", "state": "failed", "at": 5.0, "code": "TASK_FAILED", "reason": "r", "label": "X",
     "retryable": True, "task_id": "t2"},
    {"job": "b", "state": "failed", "at": 5.5, "reason": "ILLEGAL_PROMPT: no"},
    {"job": "c", "state": "done", "compact": 1, "at": 6.0, "task_id": "t3", "file": "images/c.png",
     "bytes": 3, "sidecar_bytes": 2, "sha256": "0" * 64, "info": {"derived": "0123456789abcdef"}},
    {"job": "c", "state": "failed", "compact": 1, "at": 6.5, "gone": 1,
     "info": {"spec": SPEC, "reason": "x", "code": "TIMEOUT", "submitted_at": 1.0}},
    {"job": "c", "state": "pending", "at": 7.0},
]


@st.composite
def job_line(draw) -> bytes:
    """A line batchgen writes, for one of a few jobs, often with a field or two changed to a
    value of any type, dropped or added."""
    event = dict(draw(st.sampled_from(SHAPES)))
    event["job"] = draw(st.sampled_from(["a", "b", "c"]) | ANY)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([k for k in event if k != "job"]) | st.sampled_from(sorted(FIELDS)))
        if draw(st.integers(0, 4)) == 0:
            event.pop(key, None)
        else:
            event[key] = draw(STATES if key == "state" else FIELDS[key])
    return json.dumps(event).encode()  # json, not orjson: big ints written as they are


OTHER = st.sampled_from([orjson.dumps(HEADER), orjson.dumps({**HEADER, "batch": "other"}),
                         orjson.dumps({"batchgen_run": 1, "at": 7.0}), orjson.dumps({"batchgen_run": 1}),
                         b"", b"[1,2]", b"null", b"\xff\xfe", b'{"job": "a", "state": "done"} x',
                         orjson.dumps({"job": "a", "in_manifest": False})]) | st.binary(max_size=30)


@st.composite
def ledger_bytes(draw) -> bytes:
    lines = draw(st.lists(job_line() | job_line() | OTHER, max_size=40))
    body = b"\n".join(lines)
    if lines and draw(st.booleans()):
        body += b"\n"
    elif body and draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]  # torn anywhere
    return orjson.dumps(HEADER) + b"\n" + body


def _both(tmp_path: Path, data: bytes) -> tuple[dict, dict]:
    folder = tmp_path / "b"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "ledger.jsonl").write_bytes(data)
    return view(Ledger.read(folder)), view(reference_read(folder))


@SETTINGS
@given(ledger_bytes())
def test_replay_matches_the_line_by_line_replay_on_any_ledger(tmp_path: Path, data: bytes) -> None:
    fast, reference = _both(tmp_path, data)
    assert fast == reference


@SETTINGS
@given(st.lists(st.sampled_from([b"\n", b"a", b"bc", b"\n\n", b"x" * 7, b"{}"]), max_size=30).map(b"".join),
       st.integers(1, 12), st.integers(1, 9))
def test_lines_read_in_blocks_are_the_lines_readline_gives(data: bytes, block: int, limit: int) -> None:
    """Any cut of blocks against lines, lines as long as the limit and longer, a last line
    with no newline: the same lines, and a line too long to read is one None."""
    got = [line for part in read_lines(io.BytesIO(data), block, limit) for line in part]
    assert got == reference_lines(data, limit)


@pytest.mark.parametrize("length", [MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, 3 * MAX_LINE])
@pytest.mark.parametrize("last", [False, True])
def test_a_line_near_the_longest_read_is_kept_or_skipped_as_before(tmp_path: Path, length: int,
                                                                    last: bool) -> None:
    done = {"job": "a", "state": "done", "at": 2.0, "file": "images/a.png", "bytes": 1}
    pad = orjson.dumps({**done, "reason": ""})
    long = pad[:-2] + b" " * (length - len(pad)) + pad[-2:]  # valid JSON, ``length`` bytes
    assert len(long) == length
    tail = b"" if last else b"\n" + orjson.dumps({"job": "b", "state": "pending", "at": 3.0}) + b"\n"
    data = orjson.dumps(HEADER) + b"\n" + orjson.dumps(done) + b"\n" + long + tail
    fast, reference = _both(tmp_path, data)
    assert fast == reference
    assert fast["stats"][1] == (length >= MAX_LINE)


def test_every_near_miss_of_every_field_of_every_line_is_taken_or_skipped_as_before(tmp_path: Path) -> None:
    """Each line batchgen writes with each field set to each value above, all in one ledger
    (whether each line is taken shows in the records and the count of unreadable lines)."""
    lines = [orjson.dumps(HEADER)]
    for n, shape in enumerate(SHAPES):
        for key, values in VALUES.items():
            for value in values:
                lines.append(json.dumps({**shape, "job": f"j{n}-{key}", key: value}).encode())
                lines.append(json.dumps({**shape, "job": "a", key: value}).encode())
    fast, reference = _both(tmp_path, b"\n".join(lines) + b"\n")
    assert fast == reference
    assert 0 < fast["stats"][1] < len(lines) - 1  # some taken, some skipped


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="a./\\\x00", max_size=12) | st.text(max_size=4))
def test_a_recorded_file_is_judged_safe_as_before(value: str) -> None:
    from batchgen.storage.record import safe_file

    from replaykit import safe_file as reference

    assert safe_file(value) == reference(value)
