"""The provider's API over HTTP: submit, task result, and fetching the finished image.

Two httpx clients, on purpose: the API client carries the key and talks only to the API host;
the image client never holds a key at all, so no URL, redirect or bug can send it elsewhere.
Retries live here (bounded, with jitter), so callers see only final outcomes.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from batchgen._version import __version__
from batchgen.provider.channel import Answer, AnswerTooLarge, Channel, read_capped
from batchgen.provider.classify import classify_error
from batchgen.errors import (
    DownloadError,
    ImageExpired,
    ImageTooLarge,
    ProviderError,
    RateLimited,
    TransientError,
)
from batchgen.provider.imagecheck import CheckedImage, check_image, decode_base64_image
from batchgen.provider.offload import off_loop
from batchgen.provider.pacing import Backoff, RateGate
from batchgen.provider.targets import ApiKey, ApiTarget
from batchgen.provider.wire import ResultImage, TaskResult, parse_task_result

__all__ = ["ClientOptions", "ProviderClient", "SubmitWithdrawn", "Submitted"]

log = logging.getLogger("batchgen.provider.client")

# Failures after which the request certainly never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
             httpx.LocalProtocolError, httpx.ProxyError)


@dataclass(frozen=True)
class ClientOptions:
    """Knobs of the client; the defaults suit the public provider."""

    timeout: float = 30.0
    connect_timeout: float = 10.0
    # Requests are short and slots are held by tasks, not connections: a few connections
    # carry hundreds of tasks in flight. httpcore checks every pooled connection (a syscall
    # each) and every queued request on each request, so requests wait for a connection
    # here, in a semaphore, and the pool stays small.
    max_connections: int = 8
    max_image_bytes: int = 64 * 1024 * 1024
    download_deadline: float = 120.0
    backoff: Backoff = Backoff()
    max_rate_limited: int = 30
    download_attempts: int = 4
    resubmit_ambiguous: bool = True
    # POSTs in flight at once. A crash can leave each of them as a task whose id never reached
    # the ledger, so one at a time keeps that to at most one task per crash; a submit takes one
    # round trip, so this allows 1 / RTT submits per second (hundreds on a near network).
    parallel_submits: int = 1


@dataclass(frozen=True, slots=True)
class Submitted:
    """A task the provider accepted, and how many tries it took.

    ``maybe_duplicated`` counts earlier tries that may have created a task at the provider
    whose id we never learned (a dropped connection after the request was sent).
    """

    task_id: str
    attempts: int
    maybe_duplicated: int = 0


class SubmitWithdrawn(Exception):
    """A submit the caller no longer wanted was not sent; ``maybe_count`` earlier tries of it
    may have created a task all the same."""

    def __init__(self, maybe_count: int) -> None:
        super().__init__("submit withdrawn before it was sent")
        self.maybe_count = maybe_count


class _AcceptedWithoutId(TransientError):
    """A 200 answer to a submit that carries no usable task id."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, maybe_created=True)


class ProviderClient:
    """The jiekou / Novita API shape (a ``Provider``). Use as ``async with ProviderClient(...) as c``.

    ``sleep`` is the clock's: every backoff and Retry-After wait goes through it.
    """

    def __init__(self, target: ApiTarget, key: ApiKey, *, options: ClientOptions | None = None,
                 gate: RateGate | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 image_transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.target = target
        self.options = options or ClientOptions()
        self.gate = gate or RateGate(sleep=sleep)
        self._sleep = sleep
        self._key = key
        self._rng = rng or random.Random()
        opts = self.options
        timeout = httpx.Timeout(opts.timeout, connect=opts.connect_timeout, pool=None)
        agent = f"batchgen/{__version__}"
        self._base = target.base_url.rstrip("/")
        self._max_answer = 2 * opts.max_image_bytes  # a base64 image fits, a flood does not
        self._submitting = anyio.Semaphore(opts.parallel_submits)
        self._api = Channel([("Authorization", f"Bearer {key.reveal()}"),
                             ("Content-Type", "application/json"), ("Accept", "application/json"),
                             ("User-Agent", agent)], timeout, opts.max_connections, transport)
        # Image hosts get a channel that never holds the key: no redirect can carry it there.
        self._images = Channel([("User-Agent", agent)], timeout, opts.max_connections, image_transport)

    def __repr__(self) -> str:
        return f"ProviderClient({self.target.base_url!r})"

    async def __aenter__(self) -> ProviderClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._api.aclose()
            await self._images.aclose()

    # -- submit ---------------------------------------------------------------------------

    async def submit(self, model: str, body: dict[str, Any],
                     still_wanted: Callable[[], bool] = lambda: True) -> Submitted:
        """Create one task; waits at the shared rate gate and retries what may pass.

        ``still_wanted`` is asked right before each request goes out; when it says no (the
        batch is stopping), SubmitWithdrawn is raised instead of sending.
        """
        content = json.dumps(body, ensure_ascii=False).encode()
        path = f"/v3/async/{model}"
        failures = rate_limited = maybe = 0
        while True:
            await self.gate.wait()
            try:
                task_id = await self._submit_once(path, content, still_wanted, maybe)
            except RateLimited as exc:
                delay = self.gate.limited(exc.retry_after)
                rate_limited += 1
                log.info("submit rate limited; every submitter pauses %.1fs", delay)
                if rate_limited >= self.options.max_rate_limited:
                    raise
                continue
            except _AcceptedWithoutId as exc:
                # The API answered 200, so it handled the request: another try would likely
                # create (and bill) another task. The job fails; `retry` is the user's call.
                self.gate.passed()
                exc.maybe_count = maybe + 1
                raise
            except TransientError as exc:
                self.gate.passed()
                failures += 1
                if exc.maybe_created:
                    maybe += 1
                    if not self.options.resubmit_ambiguous:
                        exc.maybe_count = maybe
                        raise
                if failures >= self.options.backoff.attempts:
                    exc.maybe_created, exc.maybe_count = maybe > 0, maybe
                    raise
                delay = self.options.backoff.delay(failures - 1, self._rng)
                log.info("submit failed (%s); retry %d in %.1fs", exc, failures, delay)
                await self._sleep(delay)
                continue
            except BaseException:
                self.gate.passed()
                raise
            self.gate.passed()
            return Submitted(task_id=task_id, attempts=failures + rate_limited + 1, maybe_duplicated=maybe)

    async def _call(self, what: str, method: str, url: str, content: bytes | None = None) -> Answer:
        """One API request; a failure to get a whole answer becomes a TransientError."""
        try:
            answer = await self._api.send(method, url, content, max_bytes=self._max_answer)
        except AnswerTooLarge as exc:
            raise TransientError(f"{what}: the answer is {exc}", maybe_created=what == "submit") from exc
        except httpx.TransportError as exc:
            raise self._transport_error(what, exc) from exc
        if answer.status != 200:
            raise self._error(answer)
        return answer

    async def _submit_once(self, path: str, content: bytes, still_wanted: Callable[[], bool],
                           maybe: int) -> str:
        # The caller records the id before it next awaits, so once this returns the id is safe.
        async with self._submitting:
            if not still_wanted():
                raise SubmitWithdrawn(maybe)
            response = await self._call("submit", "POST", self._base + path, content)
        try:
            data = self._json(response, "submit")
        except TransientError as exc:
            raise _AcceptedWithoutId(str(exc)) from None
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id.strip():
            raise _AcceptedWithoutId("the provider accepted the submit but sent no task_id")
        return task_id.strip()

    # -- task result ------------------------------------------------------------------------

    async def task_result(self, task_id: str) -> TaskResult:
        """One task's state; transient failures and 429s are retried a few times."""
        failures = 0
        while True:
            try:
                return await self._task_result_once(task_id)
            except (TransientError, RateLimited) as exc:
                failures += 1
                if failures >= self.options.backoff.attempts:
                    raise
                delay = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after is not None \
                    else self.options.backoff.delay(failures - 1, self._rng)
                log.info("task-result for %s failed (%s); retry in %.1fs", task_id, exc, delay)
                await self._sleep(delay)

    async def _task_result_once(self, task_id: str) -> TaskResult:
        query = urlencode({"task_id": task_id})
        response = await self._call("task-result", "GET", f"{self._base}/v3/async/task-result?{query}")
        return parse_task_result(self._json(response, "task-result"))

    # -- images -----------------------------------------------------------------------------

    async def fetch_image(self, image: ResultImage, expected_format: str) -> CheckedImage:
        """The image's bytes, checked to decode as ``expected_format``.

        Raises ImageExpired when the URL answers 403/404/410 (ask for the task result again
        for a fresh URL), BadImage when the bytes stay wrong, DownloadError otherwise.
        """
        value = image.image_url
        if not value.lower().startswith(("http://", "https://")):
            data = decode_base64_image(value, self.options.max_image_bytes)
            return await off_loop(len(data), check_image, data, expected_format)
        last: DownloadError | None = None
        for attempt in range(self.options.download_attempts):
            if attempt:
                await self._sleep(self.options.backoff.delay(attempt - 1, self._rng))
            try:
                with anyio.fail_after(self.options.download_deadline):
                    data = await self._download(value)
                return await off_loop(len(data), check_image, data, expected_format)
            except (ImageExpired, ImageTooLarge):
                raise
            except TimeoutError:
                last = DownloadError(f"the image download took longer than "
                                     f"{self.options.download_deadline:.0f}s")
            except DownloadError as exc:
                last = exc
            log.info("image download failed (%s); attempt %d", last, attempt + 1)
        assert last is not None
        raise last

    async def _download(self, url: str) -> bytes:
        try:
            async with self._images.stream(url) as response:
                status = response.status_code
                if status in (403, 404, 410):
                    raise ImageExpired(f"the image URL answered {status} (expired or unknown)")
                if status != 200:
                    raise DownloadError(f"the image host answered {status}")
                return await read_capped(response, self.options.max_image_bytes)
        except AnswerTooLarge as exc:
            raise ImageTooLarge(f"the image is {exc}") from exc
        except httpx.TooManyRedirects as exc:
            raise DownloadError("the image URL redirects in circles") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise DownloadError(f"the image URL (or a redirect) is not a usable URL ({exc})") from exc
        except httpx.TransportError as exc:
            raise DownloadError(f"the image download broke off ({type(exc).__name__})") from exc

    # -- helpers ----------------------------------------------------------------------------

    def _error(self, response: Answer) -> ProviderError:
        return classify_error(response.status, response.content, response.headers,
                              key_env=self.target.key_env, base_url=self.target.base_url,
                              scrub=self._key.scrub)

    def _json(self, response: Answer, what: str, maybe_created: bool = False) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise TransientError(f"the provider's {what} answer was not JSON "
                                 f"({response.headers.get('content-type', 'no content type')})",
                                 status=response.status, maybe_created=maybe_created) from None

    @staticmethod
    def _transport_error(what: str, exc: httpx.TransportError) -> TransientError:
        sent = not isinstance(exc, _NOT_SENT)
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            text = f"{what} timed out ({kind})"
        else:
            text = f"{what} failed: connection problem ({kind})"
        return TransientError(text, maybe_created=sent and what == "submit")
