"""The simulator in-process: every endpoint, error reason, state, limit and fault of the provider's API.

Raw httpx requests only (no batchgen client); time is driven by hand through an injected clock.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import re
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from PIL import Image

import batchgen.simulator as simulator_pkg
from batchgen.simulator import SimConfig, Simulator

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
LORA = "/v3/async/z-image-turbo-lora"
TURBO = "/v3/async/z-image-turbo"
RESULT = "/v3/async/task-result"
SMALL = {"prompt": "a red fox in the snow", "size": "256*256"}

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: Clock | None = None, **config) -> Simulator:
    config.setdefault("task_jitter", 0.0)
    return Simulator(SimConfig(**config), clock=clock or Clock())


@asynccontextmanager
async def clients(sim: Simulator, headers: dict | None = None):
    async with httpx.AsyncClient(transport=sim.api_transport(), base_url=sim.api_base_url,
                                 headers=AUTH if headers is None else headers) as api, \
            httpx.AsyncClient(transport=sim.image_transport()) as images:
        yield api, images


async def submit(api: httpx.AsyncClient, body: dict | None = None, path: str = LORA) -> str:
    response = await api.post(path, json=SMALL if body is None else body)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


async def poll(api: httpx.AsyncClient, task_id: str) -> dict:
    response = await api.get(RESULT, params={"task_id": task_id})
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["reason"] == reason
    assert isinstance(body["message"], str) and body["message"] and body["metadata"] == {}


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- surface -------------------------------------------------------------------------------

def test_public_names():
    assert sorted(simulator_pkg.__all__) == simulator_pkg.__all__
    for name in simulator_pkg.__all__:
        assert hasattr(simulator_pkg, name)
    assert {"Simulator", "SimConfig", "running_simulator"} <= set(simulator_pkg.__all__)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="fault_500"):
        SimConfig(fault_500=1.5)
    with pytest.raises(ValueError, match="workers"):
        SimConfig(workers=0)
    assert SimConfig(seed_as_int=True).seed_style == "int"


# --- the happy path and the answer's shape -------------------------------------------------

async def test_submit_poll_download_shape():
    clock = Clock()
    sim = make(clock, task_seconds=5)
    async with clients(sim) as (api, images):
        task_id = await submit(api)
        assert len(task_id) == 36 and task_id[14] == "4"     # uuid4-like
        running = await poll(api, task_id)
        assert set(running) >= {"extra", "task", "images", "videos", "audios"}
        assert running["task"]["status"] == "TASK_STATUS_PROCESSING"
        assert running["task"]["task_type"] == "TXT_TO_IMG" and running["task"]["reason"] == ""
        assert running["images"] == [] and running["videos"] == [] and running["audios"] == []
        assert running["extra"]["debug_info"] == {"request_info": "", "submit_time_ms": "",
                                                 "execute_time_ms": "", "complete_time_ms": ""}
        assert running["extra"]["enable_nsfw_detection"] is False
        # unknown fields at several levels, which clients must ignore
        assert set(running) - {"extra", "task", "images", "videos", "audios"}
        assert set(running["extra"]) - {"seed", "enable_nsfw_detection", "debug_info"}
        assert set(running["task"]) - {"task_id", "status", "reason", "task_type", "eta", "progress_percent"}

        clock.advance(5)
        done = await poll(api, task_id)
        assert done["task"]["status"] == "TASK_STATUS_SUCCEED"
        assert isinstance(done["extra"]["seed"], str) and int(done["extra"]["seed"]) >= 0
        debug = done["extra"]["debug_info"]
        assert int(debug["complete_time_ms"]) - int(debug["submit_time_ms"]) == 5000
        assert debug["execute_time_ms"].isdigit()
        [image] = done["images"]
        assert image["image_type"] == "webp" and image["image_url_ttl"] == 3600
        assert image["nsfw_detection_result"] == {}
        assert image["image_url"].startswith(sim.image_base_url + "/img/")
        assert image["image_url"].endswith(".webp")

        download = await images.get(image["image_url"])
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/webp"
        picture = decode(download.content)
        assert picture.format == "WEBP" and picture.size == (256, 256)
    stats = sim.stats
    assert stats.tasks_created == 1 and stats.polls == 2 and stats.downloads == 1
    assert stats.polls_by_task[task_id] == 2 and stats.polls_per_task() == 2.0
    assert stats.task_seconds_total == 5.0 and stats.max_in_flight_seen == 1
    assert stats.image_requests_with_auth == 0 and stats.key_leaks == 0


async def test_turbo_endpoint_and_img2img_task_type():
    sim = make(task_seconds=0)
    async with clients(sim) as (api, _):
        task_id = await submit(api, {**SMALL, "image_url": "https://example.com/a.png", "strength": 0.5,
                                     "mask": "https://example.com/m.png"}, path=TURBO)
        assert (await poll(api, task_id))["task"]["task_type"] == "IMG_TO_IMG"
        response = await api.post(TURBO, json={**SMALL, "loras": []})
        assert_error(response, 400, "INVALID_REQUEST_BODY")


async def test_unknown_routes():
    sim = make()
    async with clients(sim) as (api, images):
        assert_error(await api.get("/v3/async/nope"), 404, "API_NOT_FOUND")
        assert_error(await api.get(LORA), 404, "API_NOT_FOUND")
        assert_error(await api.post(RESULT, json={}), 404, "API_NOT_FOUND")
        # the image host serves images only, nothing of the API
        response = await images.post(sim.image_base_url + LORA, json=SMALL, headers=AUTH)
        assert response.status_code == 404 and b"<Code>NoSuchKey</Code>" in response.content
    assert sim.stats.tasks_created == 0


# --- auth --------------------------------------------------------------------------------

@pytest.mark.parametrize("path,method", [(LORA, "POST"), (RESULT, "GET")])
async def test_auth(path, method):
    sim = make(api_key=KEY)
    kwargs = {"json": SMALL} if method == "POST" else {"params": {"task_id": "x"}}
    async with clients(sim, headers={}) as (api, _):
        assert_error(await api.request(method, path, **kwargs), 401, "MISSING_API_KEY")
        assert_error(await api.request(method, path, headers={"Authorization": "Bearer "}, **kwargs),
                     401, "MISSING_API_KEY")
        assert_error(await api.request(method, path, headers={"Authorization": "Basic abc"}, **kwargs),
                     401, "MISSING_API_KEY")
        assert_error(await api.request(method, path, headers={"Authorization": "Bearer wrong-key-123"},
                                       **kwargs), 403, "INVALID_API_KEY")
    assert sim.stats.tasks_created == 0


async def test_any_non_empty_key_is_accepted_by_default():
    sim = make(task_seconds=0)
    async with clients(sim, headers={"Authorization": "Bearer x"}) as (api, _):
        await submit(api)


# --- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("body,reason", [
    ([1, 2], "INVALID_REQUEST_BODY"),
    ({}, "INVALID_REQUEST_BODY"),
    ({"prompt": ""}, "INVALID_REQUEST_BODY"),
    ({"prompt": "   "}, "INVALID_REQUEST_BODY"),
    ({"prompt": 3}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "seed": "5"}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "seed": 1.5}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "seed": -2}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "seed": 2147483648}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "loras": [{"path": "a"}] * 4}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "loras": [{"scale": 1}]}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "loras": [{"path": "a", "scale": 4.5}]}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "loras": [{"path": "a", "scale": -0.1}]}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "loras": "a"}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "image_url": "u", "strength": 1.5}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "strength": 0.5}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "mask": "m"}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "enable_base64_output": "yes"}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "size": 1024}, "INVALID_REQUEST_BODY"),
    ({"prompt": "x", "size": "1024x1024"}, "INVALID_IMAGE_SIZE"),
    ({"prompt": "x", "size": "255*512"}, "INVALID_IMAGE_SIZE"),
    ({"prompt": "x", "size": "512*1537"}, "INVALID_IMAGE_SIZE"),
    ({"prompt": "x", "output_format": "gif"}, "INVALID_IMAGE_FORMAT"),
    ({"prompt": "x", "output_format": "PNG"}, "INVALID_IMAGE_FORMAT"),
    ({"prompt": "something Forbidden here"}, "ILLEGAL_PROMPT"),
])
async def test_validation(body, reason):
    sim = make()
    async with clients(sim) as (api, _):
        assert_error(await api.post(LORA, json=body), 400, reason)
    assert sim.stats.tasks_created == 0 and sim.stats.errors_by_reason[reason] == 1


async def test_validation_edges_that_pass():
    sim = make(task_seconds=0)
    async with clients(sim) as (api, _):
        for body in ({"prompt": "x", "seed": -1, "size": "256*1536", "unknown_field": {"a": 1}},
                     {"prompt": "x", "seed": 2147483647, "size": "1536*256", "output_format": "png"},
                     {"prompt": "x", "loras": [{"path": "a", "scale": 0}, {"path": "b", "scale": 4},
                                               {"path": "c"}]},
                     {"prompt": "x", "image_url": "u", "strength": 0, "mask": "m"},
                     {"prompt": "x", "seed": None, "loras": None}):
            await submit(api, body)
        assert_error(await api.post(LORA, content=b"{not json", headers={"Content-Type": "application/json"}),
                     400, "INVALID_REQUEST_BODY")


async def test_task_result_errors():
    sim = make()
    async with clients(sim) as (api, _):
        assert_error(await api.get(RESULT), 400, "INVALID_REQUEST_BODY")
        assert_error(await api.get(RESULT, params={"task_id": ""}), 400, "INVALID_REQUEST_BODY")
        assert_error(await api.get(RESULT, params={"task_id": "no-such-task"}), 404, "TASK_NOT_FOUND")


# --- time: states, queueing, hints ---------------------------------------------------------

async def test_progression_with_eta_and_progress():
    clock = Clock()
    sim = make(clock, task_seconds=10)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        seen = []
        for step in (0, 2.5, 7.2, 0.3):
            clock.advance(step)
            task = (await poll(api, task_id))["task"]
            seen.append((task["status"][12:], task["eta"], task["progress_percent"]))
        assert seen == [("PROCESSING", 10, 0), ("PROCESSING", 8, 25), ("PROCESSING", 1, 97), ("SUCCEED", 0, 0)]


async def test_queueing_with_few_workers():
    clock = Clock()
    sim = make(clock, task_seconds=2, workers=1)
    async with clients(sim) as (api, _):
        ids = [await submit(api, {**SMALL, "seed": i}) for i in range(3)]

        async def states():
            return [((t := (await poll(api, i))["task"])["status"][12:], t["eta"], t["progress_percent"])
                    for i in ids]

        assert await states() == [("PROCESSING", 2, 0), ("QUEUED", 4, 0), ("QUEUED", 6, 0)]
        clock.advance(3)
        assert await states() == [("SUCCEED", 0, 0), ("PROCESSING", 1, 50), ("QUEUED", 3, 0)]
        clock.advance(3)
        assert await states() == [("SUCCEED", 0, 0)] * 3
    assert sim.stats.max_in_flight_seen == 3 and sim.stats.task_seconds_total == 6.0


async def test_hints_off_and_zero_latency():
    clock = Clock()
    sim = make(clock, task_seconds=4, hints=False)
    async with clients(sim) as (api, _):
        task = (await poll(api, await submit(api)))["task"]
        assert (task["status"], task["eta"], task["progress_percent"]) == ("TASK_STATUS_PROCESSING", 0, 0)
    sim = make(clock, task_seconds=0)
    async with clients(sim) as (api, _):
        assert (await poll(api, await submit(api)))["task"]["status"] == "TASK_STATUS_SUCCEED"


def test_durations_are_seeded_and_truncated():
    def durations(seed):
        sim = Simulator(SimConfig(task_seconds=0.2, task_jitter=1.0, fault_seed=seed), clock=Clock())
        return [sim.state.create_task(0.0, 1, 256, 256, "png", (), 1, False, False).end for _ in range(50)]

    first = durations(3)
    assert first == durations(3) and first != durations(4)
    assert min(first) == pytest.approx(0.05) and max(first) > 0.5


# --- limits, Retry-After, balance ----------------------------------------------------------

def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.isdigit():
        return float(value)
    return email.utils.parsedate_to_datetime(value).timestamp() - time.time()


@pytest.mark.parametrize("style", ["seconds", "date", "none"])
async def test_max_in_flight(style):
    clock = Clock()
    sim = make(clock, task_seconds=10, max_in_flight=2, retry_after=style)
    async with clients(sim) as (api, _):
        await submit(api)
        clock.advance(3)
        await submit(api)
        response = await api.post(LORA, json=SMALL)
        assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
        wait = retry_after_seconds(response)
        if style == "none":
            assert wait is None
        elif style == "seconds":
            assert response.headers["retry-after"] == "7"   # the first task ends in 7 s
        else:
            assert 5 <= wait <= 8.5
        assert sim.stats.tasks_created == 2
        clock.advance(7)
        await submit(api)
    assert sim.stats.submits_by_outcome == {"ok": 3, "RATE_LIMIT_EXCEEDED": 1}


@pytest.mark.parametrize(("style", "header"), [("ms", "retry-after-ms"), ("half", "retry-after")])
async def test_retry_after_in_milliseconds_and_on_half_of_the_429s(style, header):
    clock = Clock()
    sim = make(clock, task_seconds=0, fault_429=1.0, retry_after=style, fault_seed=4)
    async with clients(sim) as (api, _):
        answers = [await api.post(LORA, json={**SMALL, "seed": n}) for n in range(40)]
    for response in answers:
        assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    with_header = [r for r in answers if header in r.headers]
    if style == "ms":
        assert len(with_header) == 40 and all(r.headers[header] == "1000" for r in with_header)
        assert not any("retry-after" in r.headers for r in answers)
    else:
        assert 10 <= len(with_header) <= 30 and all(r.headers[header] == "1" for r in with_header)


async def test_download_latency_holds_each_image_answer():
    sim = Simulator(SimConfig(task_seconds=0, download_seconds=0.2))
    async with clients(sim) as (api, images):
        task_id = (await submit(api))
        result = (await api.get(RESULT, params={"task_id": task_id})).json()
        started = time.monotonic()
        response = await images.get(result["images"][0]["image_url"])
        assert response.status_code == 200 and 0.2 <= time.monotonic() - started < 1.0


async def test_rpm_sliding_window_and_mixed_retry_after():
    clock = Clock()
    sim = make(clock, task_seconds=0, rpm=2)
    async with clients(sim) as (api, _):
        await submit(api)
        clock.advance(10)
        await submit(api)
        styles = set()
        for _ in range(12):
            response = await api.post(LORA, json=SMALL)
            assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
            value = response.headers.get("retry-after")
            styles.add("none" if value is None else "seconds" if value.isdigit() else "date")
            if value is not None and value.isdigit():
                assert value == "50"
        assert styles == {"none", "seconds", "date"}
        clock.advance(50)      # the first submit leaves the window
        await submit(api)
        assert (await api.post(LORA, json=SMALL)).status_code == 429
    assert sim.stats.tasks_created == 3


async def test_an_rpm_window_that_counts_refusals_is_pushed_out_by_each_early_retry():
    clock = Clock()
    sim = make(clock, task_seconds=0, rpm=2, rpm_counts="all", retry_after="seconds")
    async with clients(sim) as (api, _):
        await submit(api)
        await submit(api)
        clock.advance(30)
        assert (await api.post(LORA, json=SMALL)).status_code == 429   # counted: 3 in the window
        clock.advance(31)      # the two accepted ones left; the refused one holds a place
        await submit(api)
        response = await api.post(LORA, json=SMALL)
        assert response.status_code == 429 and response.headers["retry-after"] == "29"
    assert sim.stats.tasks_created == 3
    accepted_only = make(clock, task_seconds=0, rpm=2)
    async with clients(accepted_only) as (api, _):
        await submit(api)
        await submit(api)
        clock.advance(30)
        assert (await api.post(LORA, json=SMALL)).status_code == 429   # not counted
        clock.advance(31)
        await submit(api)
        await submit(api)


async def test_a_fixed_rpm_window_opens_at_the_start_of_each_clock_minute():
    clock = Clock(start=1050.0)      # 30 s before the minute at 1080
    sim = make(clock, task_seconds=0, rpm=2, rpm_window="fixed", retry_after="seconds")
    async with clients(sim) as (api, _):
        await submit(api)
        await submit(api)
        response = await api.post(LORA, json=SMALL)
        assert response.status_code == 429 and response.headers["retry-after"] == "30"
        clock.advance(30)
        await submit(api)
        await submit(api)
        assert (await api.post(LORA, json=SMALL)).status_code == 429
    assert sim.stats.tasks_created == 4


async def test_429s_on_task_result_polls_with_and_without_retry_after():
    sim = make(task_seconds=0, fault_429_poll=0.5, retry_after="half", fault_seed=2)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        answers = [await api.get(RESULT, params={"task_id": task_id}) for _ in range(60)]
    refused = [r for r in answers if r.status_code == 429]
    assert 15 <= len(refused) <= 45 and sim.stats.faults["fault_429_poll"] == len(refused)
    assert all(r.json()["reason"] == "RATE_LIMIT_EXCEEDED" for r in refused)
    with_header = sum(1 for r in refused if r.headers.get("retry-after") == "1")
    assert 0 < with_header < len(refused)
    assert all(r.json()["task"]["status"] == "TASK_STATUS_SUCCEED" for r in answers if r.status_code == 200)


@pytest.mark.parametrize("style,status,reason", [("balance", 403, "NOT_ENOUGH_BALANCE"),
                                                 ("billing", 400, "BILLING_BALANCE_NOT_ENOUGH")])
async def test_balance_exhaustion_and_top_up(style, status, reason):
    sim = make(task_seconds=0, balance=2, balance_style=style)
    async with clients(sim) as (api, _):
        paid = await submit(api)
        await submit(api)
        assert_error(await api.post(LORA, json=SMALL), status, reason)
        assert sim.state.balance == 0 and sim.stats.tasks_created == 2
        # tasks already paid for can still be collected
        assert (await poll(api, paid))["task"]["status"] == "TASK_STATUS_SUCCEED"
        sim.state.balance = 1
        await submit(api)
        assert_error(await api.post(LORA, json=SMALL), status, reason)
        sim.state.balance = None
        await submit(api)


# --- image URLs, expiry, result TTL --------------------------------------------------------

async def test_url_expiry_and_fresh_url_on_repoll():
    clock = Clock()
    sim = make(clock, task_seconds=0, url_ttl=100)
    async with clients(sim) as (api, images):
        task_id = await submit(api)
        first = (await poll(api, task_id))["images"][0]
        assert first["image_url_ttl"] == 100
        assert (await images.get(first["image_url"])).status_code == 200
        clock.advance(100)
        expired = await images.get(first["image_url"])
        assert expired.status_code == 403
        assert b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>" in expired.content
        second = (await poll(api, task_id))["images"][0]["image_url"]
        assert second != first["image_url"]
        fresh = await images.get(second)
        assert fresh.status_code == 200
        unknown = await images.get(sim.image_base_url + "/img/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.webp")
        assert unknown.status_code == 404 and b"<Code>NoSuchKey</Code>" in unknown.content
        wrong_ext = await images.get(second.rsplit(".", 1)[0] + ".png")
        assert wrong_ext.status_code == 404
        tampered = second.replace("/img/", "/img/x")
        assert (await images.get(tampered)).status_code == 404
    assert sim.stats.downloads_by_outcome == {"ok": 2, "expired": 1, "not_found": 3}


async def test_result_ttl():
    clock = Clock()
    sim = make(clock, task_seconds=10, result_ttl=50)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        clock.advance(59)
        assert (await poll(api, task_id))["task"]["status"] == "TASK_STATUS_SUCCEED"
        clock.advance(1)
        assert_error(await api.get(RESULT, params={"task_id": task_id}), 404, "TASK_NOT_FOUND")


# --- base64 mode and images ----------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["always", "never"])
async def test_base64_output(prefix):
    sim = make(task_seconds=0, base64_prefix=prefix)
    async with clients(sim) as (api, _):
        task_id = await submit(api, {**SMALL, "size": "320*256", "output_format": "png",
                                     "enable_base64_output": True})
        [image] = (await poll(api, task_id))["images"]
        value = image["image_url"]
        if prefix == "always":
            assert value.startswith("data:image/png;base64,")
            value = value.split(",", 1)[1]
        else:
            assert not value.startswith("data:")
        picture = decode(base64.b64decode(value, validate=True))
        assert picture.format == "PNG" and picture.size == (320, 256)
    assert sim.stats.downloads == 0


async def test_base64_prefix_mixed():
    sim = make(task_seconds=0)
    async with clients(sim) as (api, _):
        task_id = await submit(api, {**SMALL, "enable_base64_output": True})
        prefixed = {(await poll(api, task_id))["images"][0]["image_url"].startswith("data:") for _ in range(12)}
    assert prefixed == {True, False}


@pytest.mark.parametrize("fmt,pil", [("webp", "WEBP"), ("png", "PNG"), ("jpeg", "JPEG")])
async def test_images_real_size_format_and_deterministic(fmt, pil):
    body = {"prompt": "a lighthouse", "seed": 42, "size": "384*256", "output_format": fmt,
            "loras": [{"path": "style.safetensors", "scale": 1.5}]}

    async def fetch(body):
        sim = make(task_seconds=0)
        async with clients(sim) as (api, images):
            url = (await poll(api, await submit(api, body)))["images"][0]["image_url"]
            first, again = (await images.get(url)).content, (await images.get(url)).content
            assert first == again
            return first

    data = await fetch(body)
    picture = decode(data)
    assert picture.format == pil and picture.size == (384, 256)
    assert await fetch(dict(body)) == data                       # same request + seed: same bytes
    assert await fetch({**body, "seed": 43}) != data
    assert await fetch({**body, "loras": [{"path": "style.safetensors", "scale": 3}]}) != data


async def test_seed_minus_one_is_reported_and_deterministic():
    async def reported(**config):
        sim = make(task_seconds=0, **config)
        async with clients(sim) as (api, _):
            return [(await poll(api, await submit(api, {**SMALL, "seed": -1})))["extra"]["seed"]
                    for _ in range(3)]

    seeds = await reported()
    assert all(isinstance(s, str) and 0 <= int(s) <= 2147483647 for s in seeds)
    assert len(set(seeds)) == 3 and await reported() == seeds
    assert await reported(seed_as_int=True) == [int(s) for s in seeds]
    sim = make(task_seconds=0, seed_style="mixed")
    async with clients(sim) as (api, _):
        task_id = await submit(api, {**SMALL, "seed": 7})
        kinds = {type((await poll(api, task_id))["extra"]["seed"]) for _ in range(12)}
    assert kinds == {int, str}


async def test_same_request_with_reported_seed_gives_same_image():
    """A resume that re-submits with the seed the first run reported gets the same bytes."""
    sim = make(task_seconds=0)
    async with clients(sim) as (api, images):
        first = await poll(api, await submit(api, {**SMALL, "seed": -1}))
        seed = int(first["extra"]["seed"])
        again = await poll(api, await submit(api, {**SMALL, "seed": seed}))
        a = (await images.get(first["images"][0]["image_url"])).content
        b = (await images.get(again["images"][0]["image_url"])).content
    assert a == b


# --- faults at rate 1.0 --------------------------------------------------------------------

@pytest.mark.parametrize("fault,status,reason", [("fault_429", 429, "RATE_LIMIT_EXCEEDED"),
                                                 ("fault_500", 500, "CREATE_TASK_FAILED"),
                                                 ("fault_503", 503, "SERVICE_NOT_AVAILABLE")])
async def test_submit_error_faults(fault, status, reason):
    sim = make(**{fault: 1.0})
    async with clients(sim) as (api, _):
        assert_error(await api.post(LORA, json=SMALL), status, reason)
    assert sim.stats.tasks_created == 0 and sim.stats.faults[fault] == 1


@pytest.mark.parametrize("fault,status,reason", [("fault_500", 500, "GET_RESULT_FAILED"),
                                                 ("fault_503", 503, "SERVICE_NOT_AVAILABLE")])
async def test_poll_error_faults(fault, status, reason):
    sim = make(task_seconds=0)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        setattr(sim.config, fault, 1.0)
        assert_error(await api.get(RESULT, params={"task_id": task_id}), status, reason)


async def test_drop_fault_in_process():
    sim = make(task_seconds=0, fault_drop=1.0)
    async with clients(sim) as (api, _):
        for _ in range(16):
            with pytest.raises(httpx.RemoteProtocolError):
                await api.post(LORA, json=SMALL)
        stats = sim.stats
        assert stats.tasks_created == stats.tasks_created_but_dropped
        assert 0 < stats.tasks_created_but_dropped < 16        # about half after the task exists
        assert stats.submits_by_outcome["dropped_before_create"] == 16 - stats.tasks_created
        task_id = next(iter(sim.state.tasks))                  # the client never saw it; it exists
        with pytest.raises(httpx.RemoteProtocolError):
            await api.get(RESULT, params={"task_id": task_id})
        sim.config.fault_drop = 0.0
        assert (await poll(api, task_id))["task"]["status"] == "TASK_STATUS_SUCCEED"


async def test_task_failed_fault():
    clock = Clock()
    sim = make(clock, task_seconds=3, fault_task_failed=1.0)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        assert (await poll(api, task_id))["task"]["status"] == "TASK_STATUS_PROCESSING"
        clock.advance(3)
        result = await poll(api, task_id)
    assert result["task"]["status"] == "TASK_STATUS_FAILED"
    assert result["task"]["reason"] and result["images"] == []
    assert result["extra"]["debug_info"]["complete_time_ms"].isdigit()


async def test_truncate_fault_both_variants():
    sim = make(task_seconds=0, fault_truncate=1.0)
    async with clients(sim) as (api, images):
        url = (await poll(api, await submit(api)))["images"][0]["image_url"]
        short = cut = 0
        full = len(sim.state.images.get(next(iter(sim.state.tasks.values())).recipe))
        for _ in range(12):
            try:
                response = await images.get(url)
            except httpx.RemoteProtocolError:
                cut += 1
                continue
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == len(response.content) < full
            with pytest.raises(OSError):
                decode(response.content)
            short += 1
        async with images.stream("GET", url) as response:   # the cut variant announces the full length
            if response.headers["content-length"] == str(full):
                with pytest.raises(httpx.RemoteProtocolError):
                    await response.aread()
    assert short and cut


async def test_expire_fault_then_fresh_url():
    sim = make(task_seconds=0, fault_expire=1.0)
    async with clients(sim) as (api, images):
        task_id = await submit(api)
        url = (await poll(api, task_id))["images"][0]["image_url"]
        assert (await images.get(url)).status_code == 403
        sim.config.fault_expire = 0.0
        url = (await poll(api, task_id))["images"][0]["image_url"]
        assert (await images.get(url)).status_code == 200


async def test_unknown_status_fault():
    clock = Clock()
    sim = make(clock, task_seconds=5, fault_unknown_status=1.0)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        assert (await poll(api, task_id))["task"]["status"] == "TASK_STATUS_UNKNOWN"
        clock.advance(5)
        assert (await poll(api, task_id))["task"]["status"] == "TASK_STATUS_SUCCEED"


async def test_stuck_fault():
    clock = Clock()
    sim = make(clock, task_seconds=2, fault_stuck=1.0, max_in_flight=1)
    async with clients(sim) as (api, _):
        task_id = await submit(api)
        clock.advance(1e6)
        task = (await poll(api, task_id))["task"]
        assert task["status"] == "TASK_STATUS_QUEUED" and task["eta"] == 2
        assert (await api.post(LORA, json=SMALL)).status_code == 429   # it holds its slot forever


async def test_not_json_fault():
    sim = make(task_seconds=0, fault_not_json=1.0)
    async with clients(sim) as (api, _):
        response = await api.post(LORA, json=SMALL)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        with pytest.raises(json.JSONDecodeError):
            response.json()
        assert sim.stats.tasks_created == 0
        sim.config.fault_not_json = 0.0
        task_id = await submit(api)
        sim.config.fault_not_json = 1.0
        assert (await api.get(RESULT, params={"task_id": task_id})).text.startswith("<!DOCTYPE html>")


async def test_no_task_id_fault_creates_the_task():
    sim = make(task_seconds=0, fault_no_task_id=1.0)
    async with clients(sim) as (api, _):
        response = await api.post(LORA, json=SMALL)
    assert response.status_code == 200 and response.json() == {}
    assert sim.stats.tasks_created == 1 and sim.stats.tasks_created_but_dropped == 1


async def test_bad_base64_fault():
    sim = make(task_seconds=0, fault_bad_base64=1.0, base64_prefix="never")
    async with clients(sim) as (api, _):
        task_id = await submit(api, {**SMALL, "enable_base64_output": True})
        value = (await poll(api, task_id))["images"][0]["image_url"]
    with pytest.raises(ValueError):
        base64.b64decode(value, validate=True)


async def test_bad_image_fault():
    sim = make(task_seconds=0, fault_bad_image=1.0)
    async with clients(sim) as (api, images):
        url = (await poll(api, await submit(api, {**SMALL, "output_format": "webp"})))["images"][0]["image_url"]
        kinds = set()
        for _ in range(10):
            response = await images.get(url)
            assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
            try:
                kinds.add(decode(response.content).format)
            except OSError:
                kinds.add("not an image")
        task_id = await submit(api, {**SMALL, "enable_base64_output": True, "output_format": "jpeg"})
        value = (await poll(api, task_id))["images"][0]["image_url"].split(",")[-1]
        try:
            assert decode(base64.b64decode(value)).format != "JPEG"
        except OSError:
            pass
    assert kinds == {"not an image", "PNG"}


async def test_redirect_fault():
    sim = make(task_seconds=0, fault_redirect=1.0, api_key=KEY)
    async with clients(sim) as (api, images):
        url = (await poll(api, await submit(api)))["images"][0]["image_url"]
        response = await images.get(url)
        assert response.status_code == 302
        location = response.headers["location"]
        assert location.startswith(sim.api_base_url + "/img/")
        # httpx drops Authorization on a cross-origin redirect: the other host gets no key
        followed = await images.get(url, follow_redirects=True, headers=AUTH)
        assert followed.status_code == 200 and decode(followed.content).size == (256, 256)
        assert sim.stats.image_requests_with_auth == 1 and sim.stats.key_leaks == 1   # the first hop
        leaky = await api.get(location)       # a client that sends the key to the redirect target
        assert leaky.status_code == 200
    assert sim.stats.image_requests_with_auth == 2 and sim.stats.key_leaks == 2
    assert sim.stats.key_leak_places["api:header:authorization"] == 1


async def test_huge_image_fault():
    sim = make(task_seconds=0, fault_huge_image=1.0, huge_image_bytes=5 << 20)
    async with clients(sim) as (api, images):
        url = (await poll(api, await submit(api)))["images"][0]["image_url"]
        async with images.stream("GET", url) as response:
            assert response.status_code == 200 and "content-length" not in response.headers
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > 1 << 20:
                    break
    assert received > 1 << 20


async def test_fault_dice_replay():
    async def outcomes(seed):
        clock = Clock()
        sim = make(clock, task_seconds=1, fault_seed=seed, fault_500=0.3, fault_drop=0.2, fault_429=0.2,
                   fault_task_failed=0.3)
        seen = []
        async with clients(sim) as (api, _):
            for i in range(30):
                try:
                    response = await api.post(LORA, json={**SMALL, "seed": i})
                    # task ids are random per instance; the faults are what must replay
                    seen.append(re.sub(r'"task_id":"[^"]+"', '"task_id":"*"', response.text))
                except httpx.RemoteProtocolError:
                    seen.append("dropped")
            clock.advance(5)
            for task_id in list(sim.state.tasks):
                try:
                    response = await api.get(RESULT, params={"task_id": task_id})
                except httpx.RemoteProtocolError:
                    seen.append("dropped")
                    continue
                seen.append(response.json()["task"]["status"] if response.status_code == 200 else response.text)
        return seen

    first = await outcomes(11)
    assert first == await outcomes(11)
    assert first != await outcomes(12)
    assert "dropped" in first and any("CREATE_TASK_FAILED" in s for s in first)
    assert "TASK_STATUS_FAILED" in first and "TASK_STATUS_SUCCEED" in first


# --- key leaks -----------------------------------------------------------------------------

async def test_key_leak_recording():
    sim = make(task_seconds=0, api_key=KEY)
    async with clients(sim) as (api, images):
        task_id = await submit(api)
        url = (await poll(api, task_id))["images"][0]["image_url"]
        await images.get(url)
        assert sim.stats.key_leaks == 0 and sim.stats.image_requests_with_auth == 0
        await api.get(RESULT, params={"task_id": task_id, "key": KEY})
        await api.post(LORA, json={**SMALL, "prompt": f"key is {KEY}"})
        await images.get(url, headers={"X-Debug": KEY})
        await images.get(url, headers={"Authorization": "Bearer something-else"})
    assert sim.stats.key_leaks == 3
    assert dict(sim.stats.key_leak_places) == {"api:url": 1, "api:body": 1, "image:header:x-debug": 1}
    assert sim.stats.image_requests_with_auth == 1


async def test_key_leaks_watch_the_key_in_use_when_none_is_configured():
    sim = make(task_seconds=0)
    async with clients(sim) as (api, images):
        url = (await poll(api, await submit(api)))["images"][0]["image_url"]
        await images.get(url, headers=AUTH)
    assert sim.stats.key_leaks == 1 and sim.stats.image_requests_with_auth == 1


def test_balance_top_up_from_another_thread_is_safe():
    import threading

    sim = make(task_seconds=0, balance=0)
    thread = threading.Thread(target=lambda: setattr(sim.state, "balance", 100))
    thread.start()
    thread.join()
    assert sim.state.balance == 100
