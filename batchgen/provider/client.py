"""The provider's API over HTTP: submit, task result, and fetching the finished image.

Two httpx clients, on purpose: the API client carries the key and talks only to the API host;
the image client never holds a key at all, so no URL, redirect or bug can send it elsewhere.
Retries live here (bounded, with jitter, paid from the retry budget), so callers see only
final outcomes. Every submit waits its turn at the run's ``Limits`` and tells it what the
provider said, so the limits learn from every answer. A host that was never reached (refused,
DNS, TLS) stops the batch naming the URL; once it has answered, the same failures are an outage
and are retried for as long as it lasts.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from batchgen._version import __version__
from batchgen.provider.channel import Answer, AnswerTooLarge, Channel, read_capped
from batchgen.provider.classify import classify_error
from batchgen.errors import (
    DownloadError,
    DownloadTimedOut,
    ImageExpired,
    ImageTooLarge,
    ProviderError,
    ProviderUnreachable,
    RateLimited,
    TaskNotFound,
    TransientError,
)
from batchgen.provider.imagecheck import CheckedImage, check_image, decode_base64_image
from batchgen.provider.offload import off_loop
from batchgen.provider.limits import Limits, Refusal
from batchgen.provider.pacing import Backoff
from batchgen.provider.targets import ApiKey, ApiTarget
from batchgen.provider.wire import ResultImage, TaskResult, parse_task_result

__all__ = ["MAX_SUBMIT_ANSWER", "MAX_TASK_ID", "ClientOptions", "ProviderClient", "SubmitWithdrawn",
           "Submitted"]

#: the longest task id accepted (the provider's are 36); a longer one is no task id
MAX_TASK_ID = 256
#: the largest answer to a submit (a task id in a small JSON object)
MAX_SUBMIT_ANSWER = 1024 * 1024

log = logging.getLogger("batchgen.provider.client")

# Failures after which the request certainly never reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
             httpx.LocalProtocolError, httpx.ProxyError)
# ... and among them, those where the host itself could not be reached (refused, DNS, TLS).
_UNREACHED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)


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
    # Downloads at once (None: max_connections). The collector hands out as many download
    # turns, so a URL never waits for a connection behind its turn while it ages.
    image_connections: int | None = None
    max_image_bytes: int = 64 * 1024 * 1024
    # One deadline for the whole download of an image, every try included (a host that drips
    # a byte every few seconds never trips a read timeout).
    download_deadline: float = 120.0
    backoff: Backoff = Backoff()
    # A 429 taken for a passing overload: that request alone waits (Retry-After when given).
    overload_backoff: Backoff = Backoff(base=0.1, factor=2.0, cap=8.0)
    # The host could not be reached: before it ever answered, give up after unreachable_after
    # seconds (a wrong URL); after it answered, an outage, retried for as long as it lasts.
    outage_backoff: Backoff = Backoff(base=1.0, factor=2.0, cap=30.0)
    unreachable_after: float = 10.0
    max_rate_limited: int = 30
    download_attempts: int = 4
    resubmit_ambiguous: bool = True
    # POSTs in flight at once (the Limits hand out turns accordingly). A crash can leave each of
    # them as a task whose id never reached the ledger, so it is also the most a crash can cost;
    # a submit takes one round trip, so N of them allow N / RTT submits per second. None: as
    # ``submits_for`` says for the run's ceiling on tasks in flight.
    parallel_submits: int | None = None


def submits_for(ceiling: int) -> int:
    """Submits on the wire at once for a ceiling on tasks in flight: one up to 8 tasks, then
    one per 4 tasks, at most 8.

    A provider a round trip of 0.2 s away takes 5 submits a second from one at a time, which
    keeps 8 tasks of 1.5 s in flight but not 32 (measured: 32 s for what takes 12 s with 8 on
    the wire). A crash costs at most this many tasks: each submit on the wire may leave one
    whose id never reached the ledger."""
    return 1 if ceiling <= 8 else min(8, -(-ceiling // 4))


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

    ``limits`` is where submits wait their turn (one per run, shared with the scheduler);
    ``sleep`` and ``now`` are the run's clock: every backoff and Retry-After wait goes through it.
    """

    def __init__(self, target: ApiTarget, key: ApiKey, *, options: ClientOptions | None = None,
                 limits: Limits | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 image_transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
                 now: Callable[[], float] = anyio.current_time) -> None:
        self.target = target
        self.options = options or ClientOptions()
        self.limits = limits or Limits(1000, now=now, parallel=self.options.parallel_submits or 1)
        self._sleep = sleep
        self._now = now
        self._key = key
        self._rng = rng or random.Random()
        self._answered = False          # the API host has answered something in this run
        self._unreached_since: float | None = None
        opts = self.options
        timeout = httpx.Timeout(opts.timeout, connect=opts.connect_timeout, pool=None)
        agent = f"batchgen/{__version__}"
        self._base = target.base_url.rstrip("/")
        # A task result may carry a base64 image: that fits, a flood does not.
        self._max_answer = opts.max_image_bytes * 4 // 3 + MAX_SUBMIT_ANSWER
        self._api = Channel([("Authorization", f"Bearer {key.reveal()}"),
                             ("Content-Type", "application/json"), ("Accept", "application/json"),
                             ("User-Agent", agent)], timeout, opts.max_connections, transport)
        # Image hosts get a channel that never holds the key: no redirect can carry it there.
        self._images = Channel([("User-Agent", agent)], timeout,
                               opts.image_connections or opts.max_connections, image_transport)

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
                     still_wanted: Callable[[], bool] = lambda: True,
                     sending: Callable[[], None] = lambda: None) -> Submitted:
        """Create one task: wait for a turn at the limits, send, retry what may pass.

        ``still_wanted`` is asked while waiting and right before each try goes out; when it
        says no (the batch is stopping), SubmitWithdrawn is raised instead of sending.
        ``sending`` is called right before each try goes out (the engine records the job as
        being submitted there, so a crash in the wait never looks like a possible task).
        """
        content = json.dumps(body, ensure_ascii=False).encode()
        path = f"/v3/async/{model}"
        limits = self.limits
        opts = self.options
        failures = refused = overloads = unreached = maybe = 0
        paid = False   # the next try is paid from the retry budget
        while True:
            tries = failures + refused + unreached
            if not await limits.turn(still_wanted, retry=paid, again=tries > 0):
                raise SubmitWithdrawn(maybe)
            started = self._now()
            try:
                task_id = await self._submit_once(path, content, still_wanted, sending, maybe)
            except RateLimited as exc:
                verdict = limits.refused(exc.retry_after)
                refused += 1
                # A refusal the provider explains (Retry-After) is its pacing, not a failure:
                # the wait it names is the cost, and the budget is kept for outages.
                paid = exc.retry_after is None
                log.info("submit refused (429, taken for %s)", verdict.value)
                if refused >= opts.max_rate_limited:
                    raise
                if verdict is Refusal.OVERLOAD:  # only this request waits; the others go on
                    overloads += 1
                    delay = exc.retry_after if exc.retry_after is not None else \
                        opts.overload_backoff.delay(overloads - 1, self._rng)
                    if not await limits.hold(delay):
                        raise SubmitWithdrawn(maybe) from None
                continue
            except _AcceptedWithoutId as exc:
                # The API answered 200, so it handled the request: another try would likely
                # create (and bill) another task. The job fails; `retry` is the user's call.
                limits.released()
                exc.maybe_count = maybe + 1
                raise
            except TransientError as exc:
                limits.released()
                paid = True
                if exc.unreached:
                    # Nothing arrived: free to try again, and never the job's fault.
                    unreached += 1
                    self._not_reached(exc, started)
                    delay = opts.outage_backoff.delay(unreached - 1, self._rng)
                else:
                    failures += 1
                    if exc.maybe_created:
                        maybe += 1
                        if not opts.resubmit_ambiguous:
                            exc.maybe_count = maybe
                            raise
                    if failures >= opts.backoff.attempts:
                        exc.maybe_created, exc.maybe_count = maybe > 0, maybe
                        raise
                    delay = opts.backoff.delay(failures - 1, self._rng)
                log.info("submit failed (%s); retry in %.1fs", exc, delay)
                if not await limits.hold(delay):
                    raise SubmitWithdrawn(maybe) from None
                continue
            except BaseException:
                limits.released()
                raise
            limits.accepted(task_id)
            return Submitted(task_id=task_id, attempts=tries + 1, maybe_duplicated=maybe)

    def _not_reached(self, exc: TransientError, started: float) -> None:
        """A request found no host: an outage if the host answered before, else, once this
        has lasted ``unreachable_after`` seconds, the batch stops naming the URL."""
        if self._answered:
            self.limits.unreachable()
            return
        if self._unreached_since is None:
            self._unreached_since = started
        waited = self._now() - self._unreached_since
        if waited >= self.options.unreachable_after:
            t = self.target
            raise ProviderUnreachable(
                f"cannot reach the API at {t.base_url} (from {t.origin}): {exc.message}, for "
                f"{waited:.0f}s without a single answer. Check the URL (and any proxy or "
                f"firewall), then run the same command again; no job was marked failed.",
                url=t.base_url, origin=t.origin) from exc

    async def _retry_pause(self, delay: float) -> None:
        """Wait ``delay``, then for the retry budget (an outage must not become a storm)."""
        await self._sleep(delay)
        budget = self.limits.budget
        while (wait := budget.wait_for()) > 0:
            await self._sleep(wait)
        budget.spend()

    async def _call(self, what: str, method: str, url: str, content: bytes | None = None) -> Answer:
        """One API request; a failure to get a whole answer becomes a TransientError."""
        cap = MAX_SUBMIT_ANSWER if what == "submit" else self._max_answer
        try:
            answer = await self._api.send(method, url, content, max_bytes=cap)
        except AnswerTooLarge as exc:
            raise TransientError(f"{what}: the answer is {exc}", maybe_created=what == "submit") from exc
        except httpx.TransportError as exc:
            raise self._transport_error(what, exc) from exc
        if not self._answered:
            self._answered = True
        self.limits.answered()
        if answer.status != 200:
            raise self._error(answer)
        return answer

    async def _submit_once(self, path: str, content: bytes, still_wanted: Callable[[], bool],
                           sending: Callable[[], None], maybe: int) -> str:
        # The caller records the id before it next awaits, so once this returns the id is safe.
        # Each submit on the wire holds a turn (Limits.parallel), so no more than that are out.
        if not still_wanted():
            raise SubmitWithdrawn(maybe)
        sending()
        response = await self._call("submit", "POST", self._base + path, content)
        try:
            data = self._json(response, "submit")
        except TransientError as exc:
            raise _AcceptedWithoutId(str(exc)) from None
        task_id = data.get("task_id") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id.strip():
            raise _AcceptedWithoutId("the provider accepted the submit but sent no task_id")
        task_id = task_id.strip()
        if len(task_id) > MAX_TASK_ID or not task_id.isprintable():
            raise _AcceptedWithoutId(f"the provider accepted the submit but sent no usable task_id "
                                     f"({len(task_id):,} characters; at most {MAX_TASK_ID} "
                                     f"printable ones are taken)")
        return task_id

    # -- task result ------------------------------------------------------------------------

    async def task_result(self, task_id: str) -> TaskResult:
        """One task's state; transient failures and 429s are retried a few times. A finished
        or forgotten task frees its slot at the limits the moment this sees it."""
        failures = 0
        while True:
            started = self._now()
            try:
                result = await self._task_result_once(task_id)
            except TaskNotFound:
                self.limits.ended(task_id)
                raise
            except (TransientError, RateLimited) as exc:
                if isinstance(exc, TransientError) and exc.unreached:
                    self._not_reached(exc, started)
                failures += 1
                explained = isinstance(exc, RateLimited) and exc.retry_after is not None
                # No token in the retry budget: the caller's own polling backoff takes over.
                # A 429 with Retry-After is paced by the provider and costs no token.
                if failures >= self.options.backoff.attempts or \
                        not (explained or self.limits.budget.try_spend()):
                    raise
                if explained:
                    delay = exc.retry_after
                elif isinstance(exc, RateLimited):   # unexplained: a passing overload, most likely
                    delay = self.options.overload_backoff.delay(failures - 1, self._rng)
                else:
                    delay = self.options.backoff.delay(failures - 1, self._rng)
                log.info("task-result for %s failed (%s); retry in %.1fs", task_id, exc, delay)
                if isinstance(exc, RateLimited):
                    # Not asked again sooner than that, yet likely finished by then: its slot
                    # need not stay idle for the wait.
                    self.limits.poll_deferred(task_id, delay)
                await self._sleep(delay)
                continue
            self.limits.budget.earn()   # a poll that went well earns, as a submit does
            if result.finished:
                self.limits.ended(task_id)
            else:
                self.limits.poll_answered(task_id)
                if result.task.eta:
                    self.limits.expect(task_id, self._now() + result.task.eta)
            return result

    async def _task_result_once(self, task_id: str) -> TaskResult:
        response = await self._call("task-result", "GET",
                                    f"{self._base}/v3/async/task-result?task_id={quote(task_id, safe='')}")
        result = parse_task_result(self._json(response, "task-result"))
        if result.task.reason:  # provider text: stored and printed only masked and cleaned
            result.task.reason = self._key.scrub(result.task.reason)
        return result

    # -- images -----------------------------------------------------------------------------

    async def fetch_image(self, image: ResultImage, expected_format: str,
                          good_until: float | None = None, pixels: int | None = None) -> CheckedImage:
        """The image's bytes, checked to decode as ``expected_format`` (with at most a few
        times ``pixels``, the size asked for).

        Raises ImageExpired when the URL answers 403/404/410, or when it would be past
        ``good_until`` (clock time) before another try (ask for the task result again for a
        fresh URL), BadImage when the bytes stay wrong, DownloadTimedOut when all tries
        together took ``download_deadline``, DownloadError otherwise.
        """
        value = image.image_url
        if not value.lower().startswith(("http://", "https://")):
            data = decode_base64_image(value, self.options.max_image_bytes)
            return await off_loop(len(data), check_image, data, expected_format, pixels)
        last: DownloadError | None = None
        deadline = self._now() + self.options.download_deadline
        for attempt in range(self.options.download_attempts):
            if attempt:
                delay = self.options.backoff.delay(attempt - 1, self._rng)
                if good_until is not None and self._now() + delay >= good_until:
                    raise ImageExpired(f"the image URL is too old to try again ({last})")
                if self._now() + delay >= deadline:
                    raise DownloadTimedOut(f"the image download did not succeed within "
                                           f"{self.options.download_deadline:.0f}s ({last})")
                await self._retry_pause(delay)
            try:
                with anyio.fail_after(max(0.0, deadline - self._now())):
                    data = await self._download(value)
                self.limits.budget.earn()
                return await off_loop(len(data), check_image, data, expected_format, pixels)
            except (ImageExpired, ImageTooLarge):
                raise
            except TimeoutError:
                raise DownloadTimedOut(f"the image download took longer than "
                                       f"{self.options.download_deadline:.0f}s, every try "
                                       f"included") from None
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
        if isinstance(exc, _UNREACHED):
            detail = str(exc).strip()[:200]
            text = f"{what} could not connect ({kind}{': ' + detail if detail else ''})"
        elif isinstance(exc, httpx.TimeoutException):
            text = f"{what} timed out ({kind})"
        else:
            text = f"{what} failed: connection problem ({kind})"
        return TransientError(text, maybe_created=sent and what == "submit",
                              unreached=isinstance(exc, _UNREACHED))
