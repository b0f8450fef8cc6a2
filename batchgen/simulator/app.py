"""The simulator's two ASGI apps (API host, image host) over one shared state.

Handlers are synchronous and run under the state lock: parse, decide, answer. They follow
the provider's API documentation to the letter, ugly parts included (string seeds, empty debug fields, unknown
extra fields, expiring URLs on another host). They never sleep and never call out. Every random
choice is a fault-dice draw keyed by what the request is about (its body, its task) and how
many times that was asked before, so the same requests get the same answers in any order.
The ASGI adapter uses only anyio, so the apps run under asyncio (uvicorn) and trio alike.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx

from batchgen.simulator.config import SimConfig
from batchgen.simulator.faults import DOWNLOAD_FAULTS, POLL_FAULTS, SUBMIT_FAULTS, Roll
from batchgen.simulator.images import render
from batchgen.simulator.state import (FAILED, FAILURE_REASON, PROCESSING, QUEUED, SUCCEED, UNKNOWN,
                                      Rejection, SimState, SimStats, Task)
from batchgen.simulator.transport import INPROCESS_KEY, Interruption, SimulatorTransport

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_IMAGE_BASE_URL", "Simulator"]

DEFAULT_API_BASE_URL = "http://api.simulator"
DEFAULT_IMAGE_BASE_URL = "http://images.simulator"

MODELS = {"/v3/async/z-image-turbo-lora": "z-image-turbo-lora", "/v3/async/z-image-turbo": "z-image-turbo"}
RESULT_PATH = "/v3/async/task-result"
FORMATS = ("jpeg", "png", "webp")
_MIN_SIDE, _MAX_SIDE = 256, 1536
_SIZE = re.compile(r"(\d{1,6})\*(\d{1,6})")
_IMG_PATH = re.compile(r"/img/([A-Za-z0-9_-]{1,200})\.([a-z]{1,5})")
_MIN_WATCHED_KEY = 8          # shorter keys would match innocent bytes by accident
_MAX_LEARNED_KEYS = 16
_MAX_BODY = 1 << 20

_RETRY_AFTER_STYLES = ("seconds", "date", "none")
_JSON_HEADERS = [(b"content-type", b"application/json")]
_NOT_JSON = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
             b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")


@dataclass(slots=True)
class Reply:
    """One answer. ``action``: "" normal, "drop" (start then break), "cut" (start, ``cut`` bytes
    of body, break), "stream" (``body`` then zeros up to ``total``, no Content-Length).
    ``delay``: seconds before the answer starts (the image host's latency), outside the lock."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    action: str = ""
    cut: int = 0
    total: int = 0
    delay: float = 0.0


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    raw_url: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def _json(status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Reply(status, _JSON_HEADERS + headers if headers else _JSON_HEADERS, body)


def _xml(status: int, code: str, message: str) -> Reply:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>").encode()
    return Reply(status, [(b"content-type", b"application/xml")], body)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _hash64(*parts: Any) -> int:
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest())


@dataclass(slots=True)
class _Submit:
    seed: int
    width: int
    height: int
    fmt: str
    loras: tuple[tuple[int, float], ...]
    scene: int
    img2img: bool
    base64_output: bool
    prompt: str = ""
    lora_names: tuple[str, ...] = ()


def _lora_name(path: str) -> str:
    """What an image shows for a LoRA: its file's stem (``ghibli`` for .../ghibli.safetensors)."""
    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name[1:] else name or "lora"


def _bad(message: str, reason: str = "INVALID_REQUEST_BODY") -> Rejection:
    return Rejection(400, reason, message)


# Built once: json.loads(..., parse_constant=...) builds a decoder per call (~3 us a submit).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def parse_body(body: bytes) -> Any:
    """The submit body as JSON (raise Rejection when it is not); decodes bytes as json.loads does."""
    try:
        return _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):     # UnicodeDecodeError and JSONDecodeError included
        raise _bad("request body is not valid JSON") from None


def body_digest(path: str, data: Any, body: bytes) -> bytes:
    """The stable identity of a submit for the fault dice: a digest of the canonical JSON of
    (model path, body), so key order and spacing do not matter; the raw bytes when the body
    is not JSON (``data`` is None then)."""
    if data is not None:
        try:
            text = _CANONICAL.encode([path, data])
            return hashlib.blake2b(text.encode(), digest_size=16, person=b"submit-json").digest()
        except (ValueError, TypeError, RecursionError):
            pass
    return hashlib.blake2b(path.encode() + b"\0" + body, digest_size=16, person=b"submit-raw").digest()


def validate_fields(model: str, data: Any, banned_words: list[str]) -> _Submit:
    """Check a submit body (parsed by ``parse_body``) as the provider does; raise Rejection
    for the first problem."""
    bad = _bad
    if not isinstance(data, dict):
        raise bad("request body must be a JSON object")
    get = data.get    # null counts as absent, as the provider's Go backend reads it

    prompt = get("prompt")
    if prompt is None:
        raise bad("prompt is required")
    if not isinstance(prompt, str):
        raise bad("prompt must be a string")
    if not prompt.strip():
        raise bad("prompt must not be empty")

    seed = get("seed")
    if seed is None:
        seed = -1
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise bad("seed must be an integer")
    if not -1 <= seed <= 2147483647:
        raise bad("seed must be in [-1, 2147483647]")

    size = get("size")
    if size is None:
        size = "1024*1024"
    if not isinstance(size, str):
        raise bad("size must be a string like \"1024*1024\"")
    match = _SIZE.fullmatch(size)
    if match is None:
        raise bad(f"size must be \"W*H\", got {size!r}", "INVALID_IMAGE_SIZE")
    width, height = int(match[1]), int(match[2])
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise bad(f"size {size} out of range: each side must be {_MIN_SIDE}..{_MAX_SIDE}", "INVALID_IMAGE_SIZE")

    loras_in = get("loras")
    loras: list[tuple[str, float]] = []
    if loras_in is not None:
        if model != "z-image-turbo-lora":
            raise bad(f"loras is not supported by {model}")
        if not isinstance(loras_in, list):
            raise bad("loras must be an array")
        if len(loras_in) > 3:
            raise bad("loras: at most 3 items")
        for i, item in enumerate(loras_in):
            if not isinstance(item, dict):
                raise bad(f"loras[{i}] must be an object")
            path = item.get("path")
            if not isinstance(path, str) or not path:
                raise bad(f"loras[{i}].path is required")
            scale = item.get("scale")
            if scale is None:
                scale = 1.0
            if not _is_number(scale) or not 0 <= scale <= 4:
                raise bad(f"loras[{i}].scale must be a number in [0, 4]")
            loras.append((path, float(scale)))

    image_url = get("image_url")
    if image_url is not None and not isinstance(image_url, str):
        raise bad("image_url must be a string")
    image_url = image_url or None
    strength = get("strength")
    if strength is not None:
        if not _is_number(strength) or not 0 <= strength <= 1:
            raise bad("strength must be a number in [0, 1]")
        if image_url is None:
            raise bad("strength needs image_url")
    mask = get("mask")
    if mask is not None and not isinstance(mask, str):
        raise bad("mask must be a string")
    mask = mask or None
    if mask is not None and image_url is None:
        raise bad("mask needs image_url")

    fmt = get("output_format")
    if fmt is None:
        fmt = "webp"
    if not isinstance(fmt, str):
        raise bad("output_format must be a string")
    if fmt not in FORMATS:
        raise bad(f"output_format must be one of jpeg, png, webp, got {fmt!r}", "INVALID_IMAGE_FORMAT")

    b64 = get("enable_base64_output")
    if b64 is None:
        b64 = False
    if not isinstance(b64, bool):
        raise bad("enable_base64_output must be a boolean")

    lowered = prompt.lower()
    for word in banned_words:
        if word in lowered:
            raise bad("the prompt contains content that is not allowed", "ILLEGAL_PROMPT")

    scene = _hash64(model, prompt, image_url, None if strength is None else float(strength), mask)
    recipe_loras = tuple((_hash64(path) & 0xFFFFFF, scale) for path, scale in loras)
    return _Submit(seed, width, height, fmt, recipe_loras, scene, image_url is not None, b64,
                   prompt, tuple(_lora_name(path) for path, _ in loras))


class _AsgiApp:
    """Adapts a synchronous handler to ASGI 3 (HTTP and lifespan)."""

    def __init__(self, handle: Callable[[_Request], Reply], name: str,
                 latency: Callable[[], float] = lambda: 0.0) -> None:
        self._handle = handle
        self.name = name
        self._latency = latency

    def __repr__(self) -> str:
        return f"<batchgen simulator {self.name} app>"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= _MAX_BODY:
                chunks.append(chunk)
            more = message.get("more_body", False)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        request = _Request(scope["method"], scope["path"], raw_path + b"?" + query if query else raw_path,
                           query, scope["headers"], b"".join(chunks))
        reply = self._handle(request)
        delay = reply.delay + self._latency()
        if delay > 0:
            await anyio.sleep(delay)
        headers = reply.headers
        if reply.action != "stream":
            headers = headers + [(b"content-length", str(len(reply.body)).encode())]
        if reply.action and scope.get(INPROCESS_KEY):
            raise Interruption(reply.action, reply.status, headers,
                               reply.body[:reply.cut] if reply.action == "cut" else reply.body, reply.total)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.action == "drop":
            return        # the server closes the connection: headers came, the body never will
        if reply.action == "cut":
            await send({"type": "http.response.body", "body": reply.body[:reply.cut], "more_body": True})
            return
        if reply.action == "stream":
            await _stream(reply, receive, send)
            return
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else reply.body})


async def _stream(reply: Reply, receive: Callable, send: Callable) -> None:
    """Send ``reply.body`` then zeros up to ``reply.total``, stopping if the client goes away.

    A watcher task waits for ``http.disconnect`` and cancels the sender; anyio, not asyncio, so
    the app streams under any backend (uvicorn's asyncio, or an ASGI client under trio).
    """
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await send({"type": "http.response.body", "body": reply.body, "more_body": True})
        left = reply.total - len(reply.body)
        chunk = bytes(1 << 16)
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await anyio.lowlevel.checkpoint()   # let the disconnect (and other clients) through
        await send({"type": "http.response.body", "body": b""})
        group.cancel_scope.cancel()


class Simulator:
    """A simulated provider account: the API app, the image app, and their shared state.

    ``clock`` is injectable: every task state, limit and URL expiry is computed from it at
    request time, so tests move time by hand. ``api_base_url`` / ``image_base_url`` are the
    in-process hosts by default; ``running_simulator`` sets the real loopback ones.
    """

    def __init__(self, config: SimConfig | None = None, *, clock: Callable[[], float] = time.monotonic,
                 api_base_url: str = DEFAULT_API_BASE_URL, image_base_url: str = DEFAULT_IMAGE_BASE_URL) -> None:
        self.config = config if config is not None else SimConfig()
        self.clock = clock
        self.state = SimState(self.config, clock)
        self.api_base_url = api_base_url
        self.image_base_url = image_base_url
        self.api_app = _AsgiApp(self._handle_api, "API", lambda: self.config.api_seconds)
        self.image_app = _AsgiApp(self._handle_image_host, "image")
        self._learned_keys: list[bytes] = []

    def __repr__(self) -> str:
        return f"Simulator(api={self.api_base_url!r}, images={self.image_base_url!r})"

    @property
    def stats(self) -> SimStats:
        return self.state.stats

    def api_transport(self) -> httpx.AsyncBaseTransport:
        """In-process transport for the API host (requests for the image host route there)."""
        return SimulatorTransport(self, "api")

    def image_transport(self) -> httpx.AsyncBaseTransport:
        """In-process transport for the image host (requests for the API host route there)."""
        return SimulatorTransport(self, "image")

    # --- shared helpers ------------------------------------------------------------------
    def _error(self, status: int, reason: str, message: str,
               headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        self.state.stats.errors_by_reason[reason] += 1
        return _json(status, {"code": status, "reason": reason, "message": message, "metadata": {}}, headers)

    def _retry_after(self, seconds: float, identity: bytes, attempt: int) -> list[tuple[bytes, bytes]]:
        """The Retry-After header of a 429 to the submit (identity, attempt).

        ``seconds`` comes from the injected clock. An HTTP-date is the one place real wall time
        is read: clients read it against real time (``time.time()``), and a date derived from a
        fake or virtual clock would be off by however far that clock was moved.
        """
        style = self.config.retry_after
        if style == "mixed":
            style = _RETRY_AFTER_STYLES[int(self.state.dice.uniform(b"retry-after", identity, attempt) * 3)]
        elif style == "half":
            style = "seconds" if self.state.dice.uniform(b"retry-after", identity, attempt) < 0.5 else "none"
        if style == "ms":
            return [(b"retry-after-ms", str(max(1, math.ceil(seconds * 1000))).encode())]
        whole = max(1, math.ceil(seconds))
        if style == "seconds":
            return [(b"retry-after", str(whole).encode())]
        if style == "date":
            when = email.utils.formatdate(math.ceil(time.time()) + whole, usegmt=True)
            return [(b"retry-after", when.encode())]
        return []

    def _watched_keys(self) -> list[bytes]:
        key = self.config.api_key
        if key is not None:
            return [key.encode()] if len(key) >= _MIN_WATCHED_KEY else []
        return self._learned_keys

    def _record_leaks(self, host: str, request: _Request, exempt_authorization: bool) -> None:
        keys = self._watched_keys()
        if not keys:
            return
        places: set[str] = set()
        for key in keys:
            if key in request.raw_url:
                places.add(f"{host}:url")
            for name, value in request.headers:
                if exempt_authorization and name == b"authorization":
                    continue
                if key in value or key in name:
                    places.add(f"{host}:header:{name.decode('latin-1')}")
            if request.body and key in request.body:
                places.add(f"{host}:body")
        if places:
            stats = self.state.stats
            stats.key_leaks += 1
            for place in places:
                stats.key_leak_places[place] += 1

    # --- API host ------------------------------------------------------------------------
    def _handle_api(self, request: _Request) -> Reply:
        with self.state.lock:
            self.state.stats.api_requests += 1
            path = request.path
            is_api = request.method == "POST" and path in MODELS or request.method == "GET" and path == RESULT_PATH
            if path.startswith("/img/") and request.method in ("GET", "HEAD"):
                # The image host's redirects land here: a mirror of the images, not of the API.
                self._record_leaks("api", request, exempt_authorization=False)
                return self._image(request, "api")
            self._record_leaks("api", request, exempt_authorization=is_api)
            if not is_api:
                return self._error(404, "API_NOT_FOUND", f"no API at {request.method} {path}")
            denied = self._authenticate(request)
            if denied is not None:
                return denied
            if path == RESULT_PATH:
                return self._poll(request)
            return self._submit(path, request)

    def _authenticate(self, request: _Request) -> Reply | None:
        value = b""
        for name, header in request.headers:
            if name == b"authorization":
                value = header
                break
        scheme, _, key = value.decode("latin-1").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return self._error(401, "MISSING_API_KEY", "missing API key: send Authorization: Bearer <key>")
        expected = self.config.api_key
        if expected is not None and key != expected:
            return self._error(403, "INVALID_API_KEY", "invalid API key")
        if expected is None and len(key) >= _MIN_WATCHED_KEY and len(self._learned_keys) < _MAX_LEARNED_KEYS:
            raw = key.encode()
            if raw not in self._learned_keys:
                self._learned_keys.append(raw)
        return None

    def _submit(self, path: str, request: _Request) -> Reply:
        state = self.state
        stats = state.stats
        stats.submits += 1
        # Faults are decided before validation (a 503 hides a bad body), keyed by the body.
        try:
            data, invalid = parse_body(request.body), None
        except Rejection as no:
            data, invalid = None, no
        identity = body_digest(path, data, request.body)
        attempt = state.submit_attempt(identity)
        roll = state.dice.roll(SUBMIT_FAULTS, b"submit", identity, attempt)
        fault = roll.first()
        if fault == "fault_drop" and not roll.coin:
            return self._submit_fault(fault, "dropped_before_create", Reply(200, _JSON_HEADERS, b"{}", "drop"))
        if fault == "fault_503":
            return self._submit_fault(fault, "SERVICE_NOT_AVAILABLE", self._error(
                503, "SERVICE_NOT_AVAILABLE", "service not available, please retry later"))
        if fault == "fault_500":
            return self._submit_fault(fault, "CREATE_TASK_FAILED", self._error(
                500, "CREATE_TASK_FAILED", "create task failed"))
        if fault == "fault_429":
            return self._submit_fault(fault, "RATE_LIMIT_EXCEEDED", self._error(
                429, "RATE_LIMIT_EXCEEDED", "rate limit exceeded", self._retry_after(1.0, identity, attempt)))
        if fault == "fault_not_json":
            return self._submit_fault(fault, "not_json", Reply(200, [(b"content-type", b"text/html")], _NOT_JSON))
        now = self.clock()
        try:
            if invalid is not None:
                raise invalid
            ask = validate_fields(MODELS[path], data, self.config.banned_words)
            task = state.create_task(now, ask.scene, ask.width, ask.height, ask.fmt, ask.loras,
                                     ask.seed, ask.img2img, ask.base64_output, identity,
                                     prompt=ask.prompt, lora_names=ask.lora_names)
        except Rejection as no:
            headers = self._retry_after(no.retry_after, identity, attempt) if no.retry_after is not None else None
            reply = self._error(no.status, no.reason, no.message, headers)
            if fault == "fault_drop":
                return self._submit_fault(fault, "dropped", Reply(reply.status, reply.headers, reply.body, "drop"))
            stats.submits_by_outcome[no.reason] += 1
            return reply
        reply = _json(200, {"task_id": task.task_id})
        if fault == "fault_drop":
            stats.tasks_created_but_dropped += 1
            return self._submit_fault(fault, "dropped_after_create", Reply(200, reply.headers, reply.body, "drop"))
        if fault == "fault_no_task_id":
            stats.tasks_created_but_dropped += 1
            return self._submit_fault(fault, "no_task_id", _json(200, {}))
        stats.submits_by_outcome["ok"] += 1
        return reply

    def _submit_fault(self, fault: str, outcome: str, reply: Reply) -> Reply:
        stats = self.state.stats
        stats.faults[fault] += 1
        stats.submits_by_outcome[outcome] += 1
        return reply

    def _poll(self, request: _Request) -> Reply:
        state = self.state
        stats = state.stats
        stats.polls += 1
        values = parse_qs(request.query.decode("latin-1")).get("task_id") if request.query else None
        task_id = values[0].strip() if values else ""
        if task_id:
            stats.polls_by_task[task_id] += 1
        draw = state.poll_attempt(task_id)    # keyed by the task and its poll count
        roll = state.dice.roll(POLL_FAULTS, *draw)
        fault = roll.first()
        if fault == "fault_drop":
            stats.faults[fault] += 1
            stats.polls_by_status["dropped"] += 1
            return Reply(200, _JSON_HEADERS, b"{}", "drop")
        if fault == "fault_503":
            stats.faults[fault] += 1
            return self._error(503, "SERVICE_NOT_AVAILABLE", "service not available, please retry later")
        if fault == "fault_500":
            stats.faults[fault] += 1
            return self._error(500, "GET_RESULT_FAILED", "get result failed")
        if "fault_429_poll" in roll:
            stats.faults["fault_429_poll"] += 1
            stats.polls_by_status["RATE_LIMIT_EXCEEDED"] += 1
            _, identity, attempt = draw
            return self._error(429, "RATE_LIMIT_EXCEEDED", "rate limit exceeded",
                               self._retry_after(1.0, identity, attempt))
        if fault == "fault_not_json":
            stats.faults[fault] += 1
            stats.polls_by_status["not_json"] += 1
            return Reply(200, [(b"content-type", b"text/html")], _NOT_JSON)
        if not task_id:
            return self._error(400, "INVALID_REQUEST_BODY", "task_id is required")
        now = self.clock()
        task = state.lookup(task_id, now)
        if task is None:
            return self._error(404, "TASK_NOT_FOUND", f"task {task_id} not found")
        status = task.status(now)
        if status in (QUEUED, PROCESSING) and "fault_unknown_status" in roll:
            stats.faults["fault_unknown_status"] += 1
            status = UNKNOWN
        stats.polls_by_status[status] += 1
        return _json(200, self._task_result(task, status, now, roll, draw))

    def _task_result(self, task: Task, status: str, now: float, roll: Roll,
                     draw: tuple[bytes, bytes, int]) -> dict[str, Any]:
        """The task-result answer; ``draw`` (kind, identity, attempt) keys the mixed styles."""
        state = self.state
        cfg = self.config
        style = cfg.seed_style
        if style == "mixed":
            _, identity, attempt = draw
            style = "int" if state.dice.uniform(b"seed-style", identity, attempt) < 0.5 else "string"
        finished = status in (SUCCEED, FAILED)
        if finished:
            debug = {"request_info": "", "submit_time_ms": state.wall_ms(task.submitted),
                     "execute_time_ms": state.wall_ms(task.start), "complete_time_ms": state.wall_ms(task.end)}
        else:
            debug = {"request_info": "", "submit_time_ms": "", "execute_time_ms": "", "complete_time_ms": ""}
        eta, progress = task.hints(now) if cfg.hints and status in (QUEUED, PROCESSING) else (0, 0)
        images = [self._image_entry(task, now, roll, draw)] if status == SUCCEED else []
        return {
            "extra": {"seed": task.seed if style == "int" else str(task.seed), "enable_nsfw_detection": False,
                      "debug_info": debug, "sim_node": {"region": "sim-1", "gpu": "none"}},
            "task": {"task_id": task.task_id, "status": status,
                     "reason": FAILURE_REASON if status == FAILED else "",
                     "task_type": "IMG_TO_IMG" if task.img2img else "TXT_TO_IMG",
                     "eta": eta, "progress_percent": progress, "queue_priority": 0},
            "images": images,
            "videos": [],
            "audios": [],
            "trace_id": f"sim-{task.seq:08x}",
        }

    def _image_entry(self, task: Task, now: float, roll: Roll, draw: tuple[bytes, bytes, int]) -> dict[str, Any]:
        state = self.state
        cfg = self.config
        fmt = task.recipe.fmt
        if task.base64:
            data = state.images.get(task.recipe)
            if "fault_bad_image" in roll:
                state.stats.faults["fault_bad_image"] += 1
                data = self._bad_image(task, data, roll.coin)
            prefix = cfg.base64_prefix
            if prefix == "mixed":
                _, identity, attempt = draw
                prefix = "always" if state.dice.uniform(b"base64-prefix", identity, attempt) < 0.5 else "never"
            head = f"data:image/{fmt};base64," if prefix == "always" else ""
            if "fault_bad_base64" in roll:
                state.stats.faults["fault_bad_base64"] += 1
                value = head + "%%% this is not base64 %%%"
            else:
                value = head + base64.b64encode(data).decode("ascii")
        else:
            expires = now + cfg.url_ttl
            if "fault_expire" in roll:
                state.stats.faults["fault_expire"] += 1
                expires = now
            value = f"{self.image_base_url}/img/{state.issue_token(task, expires)}.{fmt}"
        return {"image_url": value, "image_url_ttl": int(cfg.url_ttl), "image_type": fmt,
                "nsfw_detection_result": self._nsfw(task) if cfg.nsfw_detection else {},
                "image_index": 0}

    @staticmethod
    def _nsfw(task: Task) -> dict[str, Any]:
        """A filled detection result, the same for the same seed: one seed in four flagged."""
        flagged = task.seed % 4 == 0
        return {"valid": flagged, "confidence": round(0.5 + (task.seed % 50) / 100, 2)
                if flagged else round((task.seed % 40) / 100, 2)}

    @staticmethod
    def _bad_image(task: Task, data: bytes, coin: bool) -> bytes:
        """Half of the time not an image at all, else a real image in another format."""
        if coin:
            return b"<html><body><h1>Service Unavailable</h1></body></html>"
        other = "png" if task.recipe.fmt != "png" else "jpeg"
        return render(task.recipe, other)

    # --- image host ----------------------------------------------------------------------
    def _handle_image_host(self, request: _Request) -> Reply:
        with self.state.lock:
            self._record_leaks("image", request, exempt_authorization=False)
            return self._image(request, "image")

    def _image(self, request: _Request, host: str) -> Reply:
        state = self.state
        stats = state.stats
        stats.image_requests += 1
        if any(name == b"authorization" for name, _ in request.headers):
            stats.image_requests_with_auth += 1
        match = _IMG_PATH.fullmatch(request.path)
        if match is None:
            return _xml(404, "NoSuchKey", "The specified key does not exist.")
        if request.method not in ("GET", "HEAD"):
            return _xml(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        stats.downloads += 1
        found = state.read_token(match[1])
        if found is None or found[0].recipe.fmt != match[2]:
            stats.downloads_by_outcome["not_found"] += 1
            return _xml(404, "NoSuchKey", "The specified key does not exist.")
        task, expires = found
        attempt = task.downloads              # keyed by the task and its download count
        task.downloads = attempt + 1
        roll = state.dice.roll(DOWNLOAD_FAULTS, b"download", task.key, attempt)
        if self.clock() >= expires:
            stats.downloads_by_outcome["expired"] += 1
            return _xml(403, "AccessDenied", "Request has expired")
        fault = next((name for name in roll.fired if host == "image" or name != "fault_redirect"), None)
        if fault == "fault_redirect":
            stats.faults[fault] += 1
            stats.downloads_by_outcome["redirect"] += 1
            location = f"{self.api_base_url}/img/{match[1]}.{match[2]}"
            return Reply(302, [(b"location", location.encode()), (b"content-type", b"application/xml")], b"")
        data = state.images.get(task.recipe)
        fmt = task.recipe.fmt
        headers = [(b"content-type", f"image/{fmt}".encode()),
                   (b"etag", f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'.encode())]
        if fault == "fault_huge_image":
            stats.faults[fault] += 1
            stats.downloads_by_outcome["huge"] += 1
            return Reply(200, headers, data[:64], "stream", total=self.config.huge_image_bytes)
        if fault == "fault_bad_image":
            stats.faults[fault] += 1
            stats.downloads_by_outcome["bad_image"] += 1
            return Reply(200, headers, self._bad_image(task, data, roll.coin))
        if fault == "fault_truncate":
            stats.faults[fault] += 1
            stats.downloads_by_outcome["truncated"] += 1
            if roll.coin:   # the short body is all there is, and the length says so
                return Reply(200, headers, data[: len(data) // 2])
            return Reply(200, headers, data, "cut", cut=len(data) // 2, delay=self.config.download_seconds)
        stats.downloads_by_outcome["ok"] += 1
        return Reply(200, headers, data, delay=self.config.download_seconds)
