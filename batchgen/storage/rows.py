"""A million records in little memory: the ledger's table of jobs, and the block lines of a
compacted ledger.

A done job is most of a big batch and changes no more, so ``Records`` holds it packed: one
``bytes`` of about 100 (its time, sizes, sha256, the derived files' digest, a UUID task id as
16 bytes, its file with the job id cut out) under an 8-byte key for the usual 16-hex job id.
With the dict's slot that is about 220 bytes a job against about 680 for a ``JobRecord`` and
its strings. Any other job, or a done job whose fields do not pack (a task id that is no
UUID, rarer fields), is a ``JobRecord``, as is any job a caller looks up: ``get`` and ``[]``
unpack it for good, so what the caller changes stays. Walking the table (``items``,
``values``) reads a packed job in place (``PackedRecord``, read-only) and keeps it packed;
the pass over the manifest marks it seen in its row (``mark_seen``).

A compacted ledger holds its records in block lines, ``{"batchgen_rows": 1, "job": [...],
"state": [...], ...}``: one list per field, up to ``BLOCK_ROWS`` jobs a line. A block line
means exactly what the one-line-per-job compacted lines of its rows would mean, taken in
order (a null is an absent field, an ``info`` that is text is the derived files' digest
alone); ``take_block`` packs the rows it can straight from the lists, and replays any other
row as that line, checks and all. Reading one list per field decodes faster than a dict per
job, and the packed rows never become objects at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, MutableMapping
from itertools import repeat
from operator import add as _add
from operator import attrgetter, itemgetter
from operator import or_ as _or
from typing import Any

from batchgen.job import JobState
from batchgen.storage.record import DERIVED, MAX_FILE, JobRecord, compact_event, digest, safe_file

__all__ = ["BLOCK_ROWS", "ROWS_KEY", "Block", "PackedRecord", "Records", "block_lines", "blocks",
           "key_of", "take_block"]

#: the key that marks a block line, and its version
ROWS_KEY = "batchgen_rows"
#: jobs per block line at most (a block is also split to stay far below replay's longest line)
BLOCK_ROWS = 1024
#: the fields of a block line: a compacted line's, less its marker
COLUMNS = ("state", "at", "task_id", "file", "bytes", "sidecar_bytes", "sha256", "gone", "info")

DONE = JobState.DONE
_HEAD = struct.Struct("<BdQI")  # flags, at, image bytes, sidecar bytes
_GONE, _TASK, _SHA, _DERIVED, _FILE = 1, 2, 4, 8, 16  # a packed row's flags, its fields in this order
_SEEN = 32  # met by this process's pass over the manifest (``JobRecord.seen``; never written)
_first = itemgetter(0)
_FLOAT, _INT, _STR, _16, _36, _64 = {float}, {int}, {str}, {16}, {36}, {64}
_FULL = struct.Struct("<BdQI16s32s8s")  # a packed row with every field, less its file
_16B, _32B, _8B = struct.Struct("16s"), struct.Struct("32s"), struct.Struct("8s")
_DASHES = itemgetter(8, 13, 18, 23)
_DASH4 = ("-", "-", "-", "-")
_BYTES = {bytes}
_RECORD = {JobRecord}
_DONE = {JobState.DONE}
_STATE = attrgetter("state")
_SEEN_OF = attrgetter("seen")
_FIELDS = attrgetter("at", "task_id", "file", "size", "side", "sha256", "gone", "info")
_FULL_FLAGS = {_TASK | _SHA | _DERIVED | _FILE}
_tail = itemgetter(slice(_FULL.size, None))  # a full row's file
_FOUR_DASHES = {_DASH4}
_BIG = 1 << 64
_SIDE_BIG = 1 << 32
_fromhex = bytes.fromhex


def key_of(job_id: str) -> bytes | str:
    """The table's key for a job id: 8 bytes for the usual 16 lowercase hex digits (a str
    key costs 80 bytes, a bytes one 48), the id itself for any other."""
    if len(job_id) == 16:
        try:
            key = _fromhex(job_id)
        except ValueError:
            return job_id
        return key if key.hex() == job_id else job_id  # (fromhex takes spaces and capitals)
    return job_id


def _text(key: bytes | str) -> str:
    return key.hex() if type(key) is bytes else key  # type: ignore[union-attr]


def pack(job_id: str, at: float, task_id: Any, file: Any, size: Any, side: Any,
         sha256: bytes | None, derived: Any, gone: bool, seen: bool = False) -> bytes | None:
    """A done job's fields as one ``bytes``, or None when one does not pack (the job is then
    kept as a ``JobRecord``). ``file`` must already be known safe."""
    if type(size) is not int or not 0 <= size < _BIG or type(side) is not int \
            or not 0 <= side < _SIDE_BIG:
        return None
    flags = (_GONE if gone else 0) | (_SEEN if seen else 0)
    task = digest16 = b""
    try:
        if task_id is not None:  # a UUID's text, lower case: rebuilt from its 16 bytes
            if type(task_id) is not str or len(task_id) != 36 or _DASHES(task_id) != _DASH4:
                return None
            plain = task_id.replace("-", "")
            task = _fromhex(plain)
            if len(task) != 16 or task.hex() != plain:
                return None
            flags |= _TASK
        if derived is not None:
            if type(derived) is not str or len(derived) != 16:
                return None
            digest16 = _fromhex(derived)
            if digest16.hex() != derived:
                return None
            flags |= _DERIVED
        name = b""
        if file is not None:
            if type(file) is not str:
                return None
            name = file.replace(job_id, "\0").encode()  # a safe file has no NUL
            flags |= _FILE
    except (ValueError, UnicodeEncodeError):
        return None
    if sha256 is not None:
        if len(sha256) != 32:  # (64 characters of hex and spaces decode shorter)
            return None
        flags |= _SHA
    else:
        sha256 = b""
    return _HEAD.pack(flags, at, size, side) + task + sha256 + digest16 + name


def unpack(job_id: str, row: bytes) -> JobRecord:
    """The ``JobRecord`` a packed row stands for (a record of its own, to keep and change)."""
    view = PackedRecord(job_id, row)
    rec = JobRecord()
    rec.state = DONE
    rec.at, rec.size, rec.side = view.at, view.size, view.side
    rec.gone = view.gone
    rec.seen = view.seen
    rec.task_id, rec.sha256, rec.info, rec.file = view.task_id, view.sha256, view.info, view.file
    return rec


def _uuid_text(h: str) -> str:
    """A UUID's text from its 32 hex digits."""
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _starts(flags: int) -> tuple[int, int, int]:
    """Where the sha256, the derived digest and the file start in a row with these flags."""
    sha = 21 + (16 if flags & _TASK else 0)
    derived = sha + (32 if flags & _SHA else 0)
    return sha, derived, derived + (8 if flags & _DERIVED else 0)


_AT_FLAGS = tuple(_starts(flags) for flags in range(32))  # by a row's first byte, less bit 0


def _part(row: bytes, flag: int, which: int, width: int) -> bytes | None:
    """A fixed-width field of a packed row (``which``: its place in ``_starts``), if held."""
    if not row[0] & flag:
        return None
    pos = _AT_FLAGS[row[0] & 30][which]
    return row[pos:pos + width]


class PackedRecord(JobRecord):
    """A packed done job read in place, what a walk over the table gives: each field decoded
    when asked, and read-only (setting a field raises ``AttributeError``: a change goes
    through ``Records.get``, which keeps the record it gives)."""

    __slots__ = ("_job", "_row")

    def __init__(self, job_id: str, row: bytes) -> None:  # (the fields are read from the row)
        self._job = job_id
        self._row = row

    state = property(lambda self: DONE)  # type: ignore[assignment]
    seen = property(lambda self: bool(self._row[0] & _SEEN))  # type: ignore[assignment]
    gone = property(lambda self: bool(self._row[0] & _GONE))  # type: ignore[assignment]
    at = property(lambda self: _HEAD.unpack_from(self._row)[1])  # type: ignore[assignment]
    size = property(lambda self: _HEAD.unpack_from(self._row)[2])  # type: ignore[assignment]
    side = property(lambda self: _HEAD.unpack_from(self._row)[3])  # type: ignore[assignment]

    @property  # type: ignore[override]
    def task_id(self) -> str | None:
        row = self._row
        if not row[0] & _TASK:
            return None
        return _uuid_text(row[21:37].hex())

    @property  # type: ignore[override]
    def sha256(self) -> bytes | None:
        return _part(self._row, _SHA, 0, 32)

    @property  # type: ignore[override]
    def info(self) -> str | None:
        digest16 = _part(self._row, _DERIVED, 1, 8)
        return digest16.hex() if digest16 is not None else None

    @property  # type: ignore[override]
    def file(self) -> str | None:
        row = self._row
        if not row[0] & _FILE:
            return None
        return row[_AT_FLAGS[row[0] & 30][2]:].decode().replace("\0", self._job)

    def __repr__(self) -> str:
        return f"PackedRecord(task_id={self.task_id!r}, file={self.file!r})"


def _at(value: bytes | JobRecord) -> float:
    return _HEAD.unpack_from(value)[1] if type(value) is bytes else value.at  # type: ignore[union-attr]


class Records(MutableMapping[str, JobRecord]):
    """The ledger's records by job id, in the order jobs were first recorded, as a dict of
    ``JobRecord`` would keep them. A done job may be held packed (module docstring): ``get``
    and ``[]`` give it as a record for good; ``items`` and ``values`` read it in place and
    leave it packed, so a walk over a million done jobs costs no memory."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[bytes | str, bytes | JobRecord] = {}

    def get(self, job_id: str, default: Any = None) -> Any:  # type: ignore[override]
        key = key_of(job_id)
        value = self._rows.get(key)
        if value is None:
            return default
        if type(value) is bytes:
            value = self._rows[key] = unpack(job_id, value)
        return value

    def mark_seen(self, job_id: str) -> JobRecord | None:
        """Mark the job met by a pass over the manifest and give its record to read (None:
        not recorded). A packed job stays packed, its mark in its row: a pass over a million
        done jobs keeps them small."""
        key = key_of(job_id)
        rows = self._rows
        rec = rows.get(key)
        if rec is None:
            return None
        if type(rec) is bytes:
            if not rec[0] & _SEEN:
                rec = rows[key] = bytes((rec[0] | _SEEN,)) + rec[1:]
            return PackedRecord(job_id, rec)
        rec.seen = True  # type: ignore[union-attr]
        return rec  # type: ignore[return-value]

    def record(self, job_id: str) -> JobRecord:
        """The job's record, to change: a new one if the job has none (what folding an
        event into the table needs, in one call)."""
        key = key_of(job_id)
        rows = self._rows
        rec = rows.get(key)
        if rec is None:
            rec = rows[key] = JobRecord()
        elif type(rec) is bytes:
            rec = rows[key] = unpack(job_id, rec)
        return rec  # type: ignore[return-value]

    def __getitem__(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        if rec is None:
            raise KeyError(job_id)
        return rec

    def __setitem__(self, job_id: str, rec: JobRecord) -> None:
        self._rows[key_of(job_id)] = rec

    def __delitem__(self, job_id: str) -> None:
        del self._rows[key_of(job_id)]

    def __contains__(self, job_id: object) -> bool:
        return type(job_id) is str and key_of(job_id) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return map(_text, self._rows)

    def items(self) -> Iterator[tuple[str, JobRecord]]:  # type: ignore[override]
        """Every (job id, record), in order; a packed job's is a read-only ``PackedRecord``
        (a change goes through ``get``)."""
        for key, value in self._rows.items():
            job_id = _text(key)
            rec = PackedRecord(job_id, value) if type(value) is bytes else value  # type: ignore[arg-type]
            yield job_id, rec  # type: ignore[misc]

    def values(self) -> Iterator[JobRecord]:  # type: ignore[override]
        for _, rec in self.items():
            yield rec

    def loose(self) -> Iterator[tuple[str, JobRecord]]:
        """The jobs held as records, in order: every job that is not done is among them (a
        packed job is done), so a search for jobs out at the provider or failed looks here."""
        for key, value in self._rows.items():
            if type(value) is not bytes:
                yield _text(key), value  # type: ignore[misc]

    def packed(self, *, seen: bool | None = None, gone: bool | None = None) -> int:
        """How many jobs are held packed (all of them done), of those marked seen or gone as
        asked (None: either)."""
        mask = (_SEEN if seen is not None else 0) | (_GONE if gone is not None else 0)
        want = (_SEEN if seen else 0) | (_GONE if gone else 0)
        return sum(1 for value in self._rows.values() if type(value) is bytes and value[0] & mask == want)

    def take_newer(self, other: Records, holds: Callable[[str], bool] | None = None) -> None:
        """Take each of ``other``'s jobs that this table lacks or holds with an earlier latest
        event (``holds``: only the jobs it says yes to), packed ones left packed."""
        rows = self._rows
        for key, value in other._rows.items():
            if holds is not None and not holds(_text(key)):
                continue
            mine = rows.get(key)
            if mine is None or _at(value) > _at(mine):
                rows[key] = value

    def pack_finished(self, job_ids: list[str]) -> None:
        """Hold packed each of these jobs that is done and packs (a replay packs the jobs a
        run's lines finished, once the lines of that step are folded): all at once when every
        one is a plain done job, else one by one."""
        rows = self._rows
        ids = list(dict.fromkeys(job_ids))
        keys = list(map(key_of, ids))
        recs = list(map(rows.get, keys))
        if set(map(type, recs)) == _RECORD and set(map(_STATE, recs)) == _DONE \
                and not any(map(_SEEN_OF, recs)):
            ats, tasks, files, sizes, sides, shas, gones, infos = zip(*map(_FIELDS, recs))
            try:
                sha_text = list(map(bytes.hex, shas))
            except TypeError:  # a digest missing
                sha_text = None
            packed = None if sha_text is None else _pack_all(ids, list(ats), list(tasks), list(files),
                                                               list(sizes), list(sides), sha_text,
                                                               list(gones), list(infos))
            if packed is not None:
                rows.update(zip(keys, packed))
                return
        for job_id in ids:
            self.pack_done(job_id)

    def pack_done(self, job_id: str) -> None:
        """Hold this job packed if it is done and its fields pack: a run packs each job it
        finishes, a replay the ones a step of lines finished (its mark of a pass over the
        manifest goes into its row)."""
        key = key_of(job_id)
        rec = self._rows.get(key)
        if type(rec) is not JobRecord or rec.state is not DONE \
                or type(rec.at) is not float:  # type: ignore[union-attr]
            return
        info = rec.info  # type: ignore[union-attr]
        if info is not None and type(info) is not str:
            return
        row = pack(job_id, rec.at, rec.task_id, rec.file, rec.size, rec.side,  # type: ignore[union-attr]
                   rec.sha256, info, rec.gone, rec.seen)  # type: ignore[union-attr]
        if row is not None:
            self._rows[key] = row

    def __repr__(self) -> str:
        return f"Records({len(self._rows)} jobs, {self.packed()} packed)"


# -- block lines -------------------------------------------------------------------------------

def block_lines(records: Records, dumps: Callable[[Any], bytes], limit: int) -> Iterator[bytes]:
    """The compacted ledger's lines for ``records``: blocks of up to ``BLOCK_ROWS`` jobs, each
    encoded by ``dumps`` (with its newline) and split in halves until shorter than ``limit``."""
    for block in blocks(records):
        yield from _encode(list(zip(block.keys, block.rows)), dumps, limit)


class Block:
    """Up to ``BLOCK_ROWS`` jobs of a table, in its order: their keys and rows (the very
    objects the table holds), and where a compaction wrote the block's lines (``offset``,
    ``length``, ``lines``).

    A block whose rows are all packed can be written again as it was while the table still
    holds the same rows under the same keys: a packed row is immutable bytes, its block's
    lines a function of the keys and rows alone, and any change to a job puts another row
    (or an unpacked record, never equal to one) in its place. So a compaction in the middle
    of a run copies the lines of the blocks no job changed since the last one and encodes
    only the rest (the jobs that finished since, and the few in flight)."""

    __slots__ = ("keys", "rows", "offset", "length", "lines")

    def __init__(self, keys: list[bytes | str], rows: list[bytes | JobRecord]) -> None:
        self.keys = keys
        self.rows = rows
        self.offset = self.length = self.lines = 0

    def encode(self, dumps: Callable[[Any], bytes], limit: int) -> bytes:
        """The block's lines (and how many there are in ``lines``)."""
        parts = list(_encode(list(zip(self.keys, self.rows)), dumps, limit))
        self.lines = len(parts)
        return b"".join(parts)

    @property
    def settled(self) -> bool:
        """Every row packed: the lines written can be kept as long as the rows are."""
        return set(map(type, self.rows)) == _BYTES

    def same(self, other: Block) -> bool:
        """The same rows under the same keys. A list compares its items by identity first, so
        the rows no job changed cost no read of their bytes; equal bytes encode alike anyway."""
        return self.rows == other.rows and self.keys == other.keys


def blocks(records: Records) -> Iterator[Block]:
    """The table's jobs in blocks of up to ``BLOCK_ROWS``, in order."""
    keys, rows = list(records._rows), list(records._rows.values())
    for start in range(0, len(keys), BLOCK_ROWS):
        yield Block(keys[start:start + BLOCK_ROWS], rows[start:start + BLOCK_ROWS])


def _encode(chunk: list[tuple[bytes | str, bytes | JobRecord]], dumps: Callable[[Any], bytes],
            limit: int) -> Iterator[bytes]:
    line = _full_block(chunk)
    if line is None:
        line = _block(chunk)
    data = dumps(line)
    if len(data) < limit or len(chunk) == 1:
        yield data
        return
    half = len(chunk) // 2
    yield from _encode(chunk[:half], dumps, limit)
    yield from _encode(chunk[half:], dumps, limit)


def _block(chunk: list[tuple[bytes | str, bytes | JobRecord]]) -> dict[str, Any]:
    """A block line from each job's compacted line."""
    events = []
    for key, value in chunk:
        job_id = _text(key)
        rec = PackedRecord(job_id, value) if type(value) is bytes else value
        events.append(compact_event(job_id, rec))  # type: ignore[arg-type]
    line: dict[str, Any] = {ROWS_KEY: 1, "job": [event["job"] for event in events]}
    for column in COLUMNS:
        line[column] = [event.get(column) for event in events]
    line["info"] = list(map(_info_cell, line["info"]))
    if not any(line["gone"]):
        del line["gone"]
    return line


def _full_block(chunk: list[tuple[bytes | str, bytes | JobRecord]]) -> dict[str, Any] | None:
    """The same block line as ``_block`` gives, in one pass of C loops per field, when every
    job of the chunk is packed with every field (the block a finished batch compacts to);
    None otherwise."""
    keys, rows = zip(*chunk)
    if set(map(type, rows)) != _BYTES or set(map(_full_flags, rows)) != _FULL_FLAGS \
            or set(map(type, keys)) != _BYTES:
        return None
    ids = list(map(bytes.hex, keys))
    flags, ats, sizes, sides, tasks, shas, digests = zip(*map(_FULL.unpack_from, rows))
    names = map(bytes.decode, map(_tail, rows))
    line: dict[str, Any] = {
        ROWS_KEY: 1, "job": ids, "state": ["done"] * len(ids), "at": [at or None for at in ats],
        "task_id": list(map(_uuid_text, map(bytes.hex, tasks))),
        "file": list(map(str.replace, names, repeat("\0"), ids)), "bytes": list(sizes),
        "sidecar_bytes": [side or None for side in sides], "sha256": list(map(bytes.hex, shas))}
    gone = [1 if flag & _GONE else None for flag in flags]
    if any(gone):
        line["gone"] = gone
    line["info"] = list(map(bytes.hex, digests))
    return line


def _info_cell(info: Any) -> Any:
    """A done job's usual rarer field, the derived files' digest alone, as its text."""
    if type(info) is dict and len(info) == 1 and type(info.get(DERIVED)) is str:
        return info[DERIVED]
    return info


def _row_event(job_id: Any, columns: list[tuple[str, list[Any]]], i: int) -> dict[str, Any]:
    """The compacted line one row of a block stands for."""
    event: dict[str, Any] = {"job": job_id, "compact": 1}
    for name, values in columns:
        value = values[i]
        if value is not None:
            event[name] = {DERIVED: value} if name == "info" and type(value) is str else value
    return event


def _take_uniform(jobs: list[Any], states: list[Any], ats: list[Any], tasks: list[Any],
                  files: list[Any], sizes: list[Any], sides: list[Any], shas: list[Any],
                  gones: list[Any], infos: list[Any], rows: dict[bytes | str, Any],
                  note_time: Callable[[float], None]) -> bool:
    """Pack a whole block at once when every row is a new done job with every field present
    and packable (what a compaction of a finished batch writes). False, with nothing taken:
    the rows go one by one."""
    n = len(jobs)
    try:
        if states.count("done") != n:
            return False
        keys = list(map(_fromhex, jobs))
        if list(map(bytes.hex, keys)) != jobs or len(set(keys)) != n or not rows.keys().isdisjoint(keys):
            return False
    except (TypeError, ValueError):
        return False
    packed = _pack_all(jobs, ats, tasks, files, sizes, sides, shas, gones, infos)
    if packed is None:
        return False
    rows.update(zip(keys, packed))
    note_time(max(ats))
    return True


def _pack_all(jobs: list[Any], ats: list[Any], tasks: list[Any], files: list[Any], sizes: list[Any],
              sides: list[Any], shas: list[Any], gones: list[Any],
              infos: list[Any]) -> Iterator[bytes] | None:
    """Done jobs' rows packed, when every job has every field and each packs (``shas`` as
    hex text): each field's list checked and converted in one pass of C loops (``map``,
    ``join``) rather than job by job. None when any does not."""
    n = len(jobs)
    try:
        if _types(ats) != _FLOAT or _types(sizes) != _INT or _types(sides) != _INT or min(sizes) < 0 \
                or max(sizes) >= _BIG or min(sides) < 0 or max(sides) >= _SIDE_BIG:
            return None
        # each text field: its lengths, then all of it decoded as hex at once (bytes.fromhex
        # skips whitespace: a blob of the full length had none); a task id's dashes where a
        # UUID has them, and text in lower case (it is rebuilt so)
        if _lengths(tasks) != _36 or _lengths(shas) != _64 or _lengths(infos) != _16 \
                or _types(shas) != _STR or set(map(_DASHES, tasks)) != _FOUR_DASHES:
            return None
        task_text, derived_text = "".join(tasks), "".join(infos)
        task_blob = _fromhex(task_text.replace("-", ""))
        sha_blob, derived_blob = _fromhex("".join(shas)), _fromhex(derived_text)
        if len(task_blob) != 16 * n or len(sha_blob) != 32 * n or len(derived_blob) != 8 * n \
                or task_text != task_text.lower() or derived_text != derived_text.lower():
            return None
        joined = "\0".join(files)
        if joined.count("\0") != n - 1 or min(map(len, files)) < 1 or max(map(len, files)) > MAX_FILE:
            return None
        framed = f"/{joined.replace(chr(0), '/')}/"  # what safe_file checks, for every file at once
        if "//" in framed or "/./" in framed or "/../" in framed or "\\" in framed:
            return None
        joined.encode()
    except (TypeError, ValueError, UnicodeEncodeError):
        return None  # a field of another type, or text that is not hex or UTF-8
    flags = map(_or, repeat(_TASK | _SHA | _DERIVED | _FILE), map(bool, gones))
    heads = map(_FULL.pack, flags, ats, sizes, sides, _chunks(task_blob, _16B), _chunks(sha_blob, _32B),
                _chunks(derived_blob, _8B))
    return map(_add, heads, map(str.encode, map(str.replace, files, jobs, repeat("\0"))))


def _full_flags(row: bytes) -> int:
    return row[0] & 30  # (neither gone nor seen)


def _types(values: list[Any]) -> set[type]:
    return set(map(type, values))


def _lengths(values: list[Any]) -> set[int]:
    return set(map(len, values))


def _chunks(blob: bytes, width: struct.Struct) -> Iterator[bytes]:
    return map(_first, width.iter_unpack(blob))


def take_block(line: dict[str, Any], records: Records, fold_line: Callable[[dict[str, Any]], bool],
               note_time: Callable[[float], None]) -> int:
    """Replay one block line into ``records``; returns the rows skipped as unreadable. A
    block whose lists are not all there and of one length is one unreadable line. A row that
    is a new done job whose fields are sound and pack is packed here, its time given to
    ``note_time`` (the latest of a run of such rows, before the next other row: the same
    latest time as one line at a time); any other row is handed to ``fold_line`` as the
    compacted line it stands for (False: skipped, unreadable)."""
    jobs = line.get("job")
    if type(jobs) is not list or line.get(ROWS_KEY) != 1:
        return 1
    n = len(jobs)
    columns: list[tuple[str, list[Any]]] = []
    for name in COLUMNS:
        values = line.get(name)
        if values is None:
            continue
        if type(values) is not list or len(values) != n:
            return 1
        columns.append((name, values))
    got = dict(columns)
    nones = [None] * n
    states = got.get("state", nones)
    ats, tasks, files = got.get("at", nones), got.get("task_id", nones), got.get("file", nones)
    sizes, sides, shas = got.get("bytes", nones), got.get("sidecar_bytes", nones), got.get("sha256", nones)
    gones, infos = got.get("gone", nones), got.get("info", nones)
    rows = records._rows
    if _take_uniform(jobs, states, ats, tasks, files, sizes, sides, shas, gones, infos, rows, note_time):
        return 0
    bad = 0
    latest: float | None = None
    for i in range(n):
        job_id = jobs[i]
        row = key = at = None
        if states[i] == "done" and type(job_id) is str:
            key = key_of(job_id)
            at, file, sha = ats[i], files[i], shas[i]
            if type(at) is float and key not in rows and (file is None or safe_file(file)) \
                    and (sha is None or type(sha) is str):
                size, side = sizes[i], sides[i]
                row = pack(job_id, at, tasks[i], file, 0 if size is None else size,
                           0 if side is None else side, digest(sha), infos[i], bool(gones[i]))
        if row is None:
            if latest is not None:
                note_time(latest)
                latest = None
            if not fold_line(_row_event(job_id, columns, i)):
                bad += 1
            continue
        rows[key] = row  # type: ignore[index]
        if latest is None or at > latest:  # type: ignore[operator]
            latest = at
    if latest is not None:
        note_time(latest)
    return bad
