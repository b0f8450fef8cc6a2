"""Contract tests of the provider client against the simulator (in-process and over loopback)."""

from __future__ import annotations

import io
import logging

import anyio
import httpx
import pytest
from PIL import Image

from batchgen.provider.channel import Channel
from batchgen.provider.client import ClientOptions, ProviderClient
from batchgen.errors import (
    AuthError,
    BadImage,
    BalanceError,
    BatchStopped,
    DownloadError,
    ImageExpired,
    JobRejected,
    RateLimited,
    TaskNotFound,
    TransientError,
)
from batchgen.provider.limits import Limits, Refusal, RetryBudget
from batchgen.provider.pacing import Backoff
from batchgen.provider.targets import ApiKey, ApiTarget
from batchgen.simulator import SimConfig, Simulator, running_simulator
from vclock import VIRTUAL_TIME

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789abcdef0123456789"
FAST = Backoff(base=0.001, cap=0.005, attempts=6)
BODY = {"prompt": "a lighthouse at dawn", "seed": 7, "size": "256*256", "output_format": "png",
        "enable_base64_output": False, "loras": []}


def client_for(sim: Simulator, *, key: str = KEY, loopback: bool = False, **options) -> ProviderClient:
    """A client wired to ``sim``: in-process transports, or real HTTP when ``loopback``."""
    target = ApiTarget("jiekou", sim.api_base_url, "JIEKOU_API_KEY")
    options.setdefault("overload_backoff", FAST)
    opts = ClientOptions(backoff=FAST, **options)
    limits = Limits(1000, probe_gap=(0.001, 0.005))
    if loopback:
        return ProviderClient(target, ApiKey(key), options=opts, limits=limits)
    return ProviderClient(target, ApiKey(key), options=opts, limits=limits,
                          transport=sim.api_transport(), image_transport=sim.image_transport())


async def finished(client: ProviderClient, task_id: str):
    for _ in range(200):
        result = await client.task_result(task_id)
        if result.finished:
            return result
        await anyio.sleep(0.01)
    raise AssertionError("task never finished")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_submit_poll_download_each_format(fmt: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0))
    async with client_for(sim) as client:
        sub = await client.submit("z-image-turbo-lora", {**BODY, "output_format": fmt})
        result = await finished(client, sub.task_id)
        assert result.succeeded and result.extra.seed == 7
        image = await client.fetch_image(result.images[0], fmt)
    assert (image.width, image.height, image.format) == (256, 256, fmt)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]


@pytest.mark.parametrize("prefix", ["always", "never"])
async def test_base64_output_with_and_without_data_prefix(prefix: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0, base64_prefix=prefix))
    async with client_for(sim) as client:
        sub = await client.submit("z-image-turbo-lora", {**BODY, "enable_base64_output": True})
        result = await finished(client, sub.task_id)
        assert result.images[0].image_url.startswith("data:") == (prefix == "always")
        image = await client.fetch_image(result.images[0], "png")
    assert (image.width, image.height) == (256, 256)
    assert sim.stats.image_requests == 0


async def test_non_lora_endpoint_and_seed_types() -> None:
    sim = Simulator(SimConfig(task_seconds=0, seed_style="int"))
    body = {k: v for k, v in BODY.items() if k != "loras"} | {"seed": -1}
    async with client_for(sim) as client:
        sub = await client.submit("z-image-turbo", body)
        result = await finished(client, sub.task_id)
    assert isinstance(result.extra.seed, int) and 0 <= result.extra.seed <= 2147483647


@pytest.mark.parametrize(("body", "reason"), [
    ({**BODY, "size": "100*100"}, "INVALID_IMAGE_SIZE"),
    ({**BODY, "output_format": "gif"}, "INVALID_IMAGE_FORMAT"),
    ({**BODY, "prompt": "something forbidden"}, "ILLEGAL_PROMPT"),
    ({**BODY, "strength": 0.5}, "INVALID_REQUEST_BODY"),
    ({**BODY, "loras": [{"path": "a", "scale": 9}]}, "INVALID_REQUEST_BODY"),
])
async def test_invalid_requests_are_rejected_not_retried(body: dict, reason: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0))
    async with client_for(sim) as client:
        with pytest.raises(JobRejected) as info:
            await client.submit("z-image-turbo-lora", body)
    assert info.value.reason == reason and info.value.status == 400
    assert sim.stats.submits == 1  # not retried
    assert "fix it in the manifest" in str(info.value)


async def test_wrong_and_missing_key_stop_the_batch() -> None:
    sim = Simulator(SimConfig(task_seconds=0, api_key="the-right-key-000000"))
    async with client_for(sim, key="a-wrong-key-1111111111") as client:
        with pytest.raises(AuthError) as wrong:
            await client.submit("z-image-turbo-lora", BODY)
    async with client_for(sim, key="") as client:
        with pytest.raises(AuthError) as missing:
            await client.task_result("anything")
    assert (wrong.value.status, wrong.value.reason) == (403, "INVALID_API_KEY")
    assert (missing.value.status, missing.value.reason) == (401, "MISSING_API_KEY")
    assert "JIEKOU_API_KEY" in str(wrong.value) and "a-wrong-key" not in str(wrong.value)
    assert isinstance(wrong.value, BatchStopped) and wrong.value.exit_code == 3


@pytest.mark.parametrize(("style", "status", "reason"), [
    ("balance", 403, "NOT_ENOUGH_BALANCE"), ("billing", 400, "BILLING_BALANCE_NOT_ENOUGH")])
async def test_balance_exhausted_is_a_balance_stop(style: str, status: int, reason: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0, balance=1, balance_style=style))
    async with client_for(sim) as client:
        await client.submit("z-image-turbo-lora", BODY)
        with pytest.raises(BalanceError) as info:
            await client.submit("z-image-turbo-lora", BODY)
        assert (info.value.status, info.value.reason) == (status, reason)
        assert "Top up" in str(info.value)
        sim.state.balance = 5
        assert (await client.submit("z-image-turbo-lora", BODY)).task_id


async def test_unknown_task_and_unknown_path() -> None:
    sim = Simulator(SimConfig(task_seconds=0))
    async with client_for(sim) as client:
        with pytest.raises(TaskNotFound):
            await client.task_result("no-such-task")
        with pytest.raises(BatchStopped) as info:
            await client.submit("no-such-model", BODY)
    assert info.value.reason == "API_NOT_FOUND" and "base_url" in str(info.value)


async def test_sporadic_429s_are_retried_and_every_submit_passes() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_429=0.6, retry_after="none", fault_seed=3))
    async with client_for(sim) as client:
        ids = []
        for _ in range(10):
            ids.append((await client.submit("z-image-turbo-lora", BODY)).task_id)
            assert (await finished(client, ids[-1])).succeeded
            assert client.limits.in_flight == 0   # a poll that sees the task finished frees its slot
        refused = sum(client.limits.refusals.values())
    assert len(set(ids)) == 10 and sim.stats.tasks_created == 10
    assert refused > 0 and sim.stats.faults["fault_429"] == refused


@VIRTUAL_TIME
@pytest.mark.parametrize("style", ["seconds", "ms"])
async def test_a_refused_submit_waits_what_retry_after_says_then_goes(style: str) -> None:
    # One task in flight allowed; the second submit is refused until the first task ends (5 s):
    # Retry-After (or retry-after-ms) says so, and only that request waits for it.
    sim = Simulator(SimConfig(task_seconds=5, task_jitter=0, max_in_flight=1, retry_after=style),
                    clock=anyio.current_time)
    async with client_for(sim) as client:
        await client.submit("z-image-turbo-lora", BODY)
        started = anyio.current_time()
        assert (await client.submit("z-image-turbo-lora", BODY)).task_id
        waited = anyio.current_time() - started
        assert client.limits.refusals == {Refusal.OVERLOAD: 1}  # one refusal alone is no limit
    assert 5.0 <= waited < 5.5, waited
    assert sim.stats.submits_by_outcome["RATE_LIMIT_EXCEEDED"] == 1


@VIRTUAL_TIME
async def test_poll_429s_with_retry_after_wait_it_and_cost_no_retry_token() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_429_poll=0.3, retry_after="seconds", fault_seed=5),
                    clock=anyio.current_time)
    async with client_for(sim) as client:
        started = anyio.current_time()
        for _ in range(20):
            sub = await client.submit("z-image-turbo-lora", BODY)
            assert (await finished(client, sub.task_id)).succeeded
        took = anyio.current_time() - started
        budget = client.limits.budget
    refused = sim.stats.faults["fault_429_poll"]
    assert refused >= 3 and took >= refused * 1.0      # each waited the second it was told
    assert budget.spent == 0


@VIRTUAL_TIME
async def test_polls_and_downloads_earn_back_what_unexplained_poll_429s_spend() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_429_poll=0.15, retry_after="none", fault_seed=6),
                    clock=anyio.current_time)
    async with client_for(sim) as client:
        # No trickle and a small reserve: only what the requests earn keeps it from running dry.
        budget = client.limits.budget = RetryBudget(per_second=0.0, burst=3.0)
        for _ in range(60):
            sub = await client.submit("z-image-turbo-lora", BODY)
            result = await finished(client, sub.task_id)
            await client.fetch_image(result.images[0], "png")
    assert sim.stats.faults["fault_429_poll"] >= 5 and budget.spent == sim.stats.faults["fault_429_poll"]
    assert budget.wait_for() == 0          # sporadic refusals left the budget for outages whole


async def test_rate_limit_without_end_gives_up() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_429=1.0, retry_after="none"))
    async with client_for(sim, max_rate_limited=4) as client:
        with pytest.raises(RateLimited):
            await client.submit("z-image-turbo-lora", BODY)
    assert sim.stats.tasks_created == 0 and sim.stats.submits == 4


@pytest.mark.parametrize("fault", ["fault_500", "fault_503"])
async def test_transient_faults_are_retried_until_success(fault: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_seed=11, **{fault: 0.3}))
    async with client_for(sim) as client:
        for _ in range(8):
            sub = await client.submit("z-image-turbo-lora", BODY)
            result = await finished(client, sub.task_id)
            assert result.succeeded
    assert sim.stats.faults[fault] > 0
    assert sim.stats.tasks_created == 8


@pytest.mark.parametrize("fault", ["fault_500", "fault_503"])
async def test_transient_faults_give_up_after_bounded_attempts(fault: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0, **{fault: 1.0}))
    async with client_for(sim) as client:
        with pytest.raises(TransientError) as info:
            await client.submit("z-image-turbo-lora", BODY)
    assert sim.stats.submits == FAST.attempts
    assert not info.value.maybe_created


async def test_dropped_submits_are_retried_and_counted_as_maybe_duplicated() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_drop=0.5, fault_seed=5))
    maybe = 0
    async with client_for(sim) as client:
        for _ in range(20):
            sub = await client.submit("z-image-turbo-lora", BODY)
            maybe += sub.maybe_duplicated
    assert sim.stats.tasks_created_but_dropped > 0
    # Every drop after the request was sent is counted: at least the ones that created a task.
    assert maybe >= sim.stats.tasks_created_but_dropped
    assert sim.stats.tasks_created == 20 + sim.stats.tasks_created_but_dropped


@pytest.mark.parametrize("fault", ["fault_no_task_id", "fault_not_json"])
async def test_a_200_submit_without_a_task_id_is_not_sent_again(fault: str) -> None:
    sim = Simulator(SimConfig(task_seconds=0, **{fault: 1.0}))
    async with client_for(sim) as client:
        with pytest.raises(TransientError) as info:
            await client.submit("z-image-turbo-lora", BODY)
    assert info.value.maybe_created and info.value.maybe_count == 1
    assert sim.stats.submits == 1  # it may have created (and billed) a task: not again


async def test_garbled_poll_answers_are_retried() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_not_json=0.3, fault_seed=11))
    async with client_for(sim) as client:
        submitted = 0
        while submitted < 5:
            try:
                task_id = (await client.submit("z-image-turbo-lora", BODY)).task_id
            except TransientError:
                continue
            submitted += 1
            assert (await finished(client, task_id)).succeeded
    assert sim.stats.faults["fault_not_json"] > 0


async def test_failed_task_reports_reason() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_task_failed=1.0))
    async with client_for(sim) as client:
        result = await finished(client, (await client.submit("z-image-turbo-lora", BODY)).task_id)
    assert result.failed and result.task.reason and not result.images


async def test_unknown_status_is_not_finished() -> None:
    now = [0.0]
    sim = Simulator(SimConfig(task_seconds=5, task_jitter=0, fault_unknown_status=1.0), clock=lambda: now[0])
    async with client_for(sim) as client:
        task_id = (await client.submit("z-image-turbo-lora", BODY)).task_id
        result = await client.task_result(task_id)
        assert result.status == "TASK_STATUS_UNKNOWN" and not result.finished
        now[0] = 10.0
        assert (await client.task_result(task_id)).succeeded


async def test_eta_and_progress_hints_while_processing() -> None:
    now = [0.0]
    sim = Simulator(SimConfig(task_seconds=4, task_jitter=0), clock=lambda: now[0])
    async with client_for(sim) as client:
        task_id = (await client.submit("z-image-turbo-lora", BODY)).task_id
        now[0] = 1.5
        result = await client.task_result(task_id)
    assert result.status == "TASK_STATUS_PROCESSING"
    assert result.task.eta == 3 and result.task.progress_percent == pytest.approx(37, abs=1)


@pytest.mark.parametrize("loopback", [False, True])
async def test_truncated_downloads_are_retried_not_accepted(loopback: bool) -> None:
    config = SimConfig(task_seconds=0, fault_truncate=0.5, fault_seed=2)
    with _maybe_loopback(config, loopback) as sim:
        async with client_for(sim, loopback=loopback) as client:
            for _ in range(6):
                result = await finished(client, (await client.submit("z-image-turbo-lora", BODY)).task_id)
                image = await client.fetch_image(result.images[0], "png")
                assert image.width == 256
        assert sim.stats.faults["fault_truncate"] > 0


async def test_always_truncated_download_fails_clearly() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_truncate=1.0))
    async with client_for(sim) as client:
        result = await finished(client, (await client.submit("z-image-turbo-lora", BODY)).task_id)
        with pytest.raises(DownloadError):
            await client.fetch_image(result.images[0], "png")


async def test_expired_url_raises_and_a_fresh_result_gives_a_working_url() -> None:
    now = [0.0]
    sim = Simulator(SimConfig(task_seconds=0, url_ttl=60), clock=lambda: now[0])
    async with client_for(sim) as client:
        task_id = (await client.submit("z-image-turbo-lora", BODY)).task_id
        result = await client.task_result(task_id)
        now[0] = 120.0
        with pytest.raises(ImageExpired):
            await client.fetch_image(result.images[0], "png")
        fresh = await client.task_result(task_id)
        assert fresh.images[0].image_url != result.images[0].image_url
        assert (await client.fetch_image(fresh.images[0], "png")).height == 256


@pytest.mark.parametrize(("fault", "error"), [
    ("fault_bad_image", BadImage), ("fault_bad_base64", BadImage)])
async def test_bytes_that_are_not_the_image_are_refused(fault: str, error: type) -> None:
    sim = Simulator(SimConfig(task_seconds=0, **{fault: 1.0}))
    body = {**BODY, "enable_base64_output": fault == "fault_bad_base64"}
    async with client_for(sim) as client:
        result = await finished(client, (await client.submit("z-image-turbo-lora", body)).task_id)
        with pytest.raises(error):
            await client.fetch_image(result.images[0], "png")


async def test_huge_image_is_cut_off_at_the_limit() -> None:
    sim = Simulator(SimConfig(task_seconds=0, fault_huge_image=1.0, huge_image_bytes=8 << 20))
    async with client_for(sim, max_image_bytes=1 << 20) as client:
        result = await finished(client, (await client.submit("z-image-turbo-lora", BODY)).task_id)
        with pytest.raises(BadImage, match="limit"):
            await client.fetch_image(result.images[0], "png")


async def test_over_loopback_redirects_drops_and_the_key_never_leaves_the_api_host(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    config = SimConfig(task_seconds=0, fault_redirect=0.5, fault_drop=0.3, fault_seed=9)
    errors: list[str] = []
    with running_simulator(config) as sim:
        async with client_for(sim, loopback=True) as client:
            for _ in range(12):
                try:
                    sub = await client.submit("z-image-turbo-lora", BODY)
                    result = await finished(client, sub.task_id)
                    await client.fetch_image(result.images[0], "png")
                except Exception as exc:  # noqa: BLE001 - collected to scan their text
                    errors.append(f"{exc!s} {exc!r}")
            errors.append(repr(client))
        stats = sim.stats
    assert stats.faults["fault_redirect"] > 0 and stats.faults["fault_drop"] > 0
    assert stats.image_requests_with_auth == 0
    assert stats.key_leaks == 0, stats.key_leak_places
    assert KEY not in caplog.text
    assert all(KEY not in text for text in errors)


def _maybe_loopback(config: SimConfig, loopback: bool):
    from contextlib import nullcontext

    return running_simulator(config) if loopback else nullcontext(Simulator(config))


async def test_every_channel_of_a_process_loads_the_ca_bundle_once(ca_bundle_loads: list[tuple]) -> None:
    for _ in range(3):   # the API's channel, the image hosts', another run's
        channel = Channel([], httpx.Timeout(1.0), 2)
        with pytest.raises(httpx.TransportError):
            await channel.send("GET", "http://127.0.0.1:9/", max_bytes=100)   # a pool is made, then refused
    assert len(ca_bundle_loads) <= 1   # none when an earlier test of this process made the context
