"""Fault draws replay whatever the interleaving; task ids and URLs never repeat across instances.

The fault dice are keyed by what a request is about (a digest of the submit body, a task's
body digest and ordinal) and how often it was asked, so the same requests sent in another
order, or concurrently, meet the same faults. Time is a hand-driven clock; nothing sleeps.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from batchgen.simulator import SimConfig, Simulator
from batchgen.simulator.config import FAULT_NAMES

AUTH = {"Authorization": "Bearer sk-test-0123456789abcdef"}
LORA = "/v3/async/z-image-turbo-lora"
RESULT = "/v3/async/task-result"

pytestmark = pytest.mark.anyio

#: Every fault at once, at rates where these 240 jobs make each fire several times.
EVERY_FAULT = {
    "fault_drop": 0.05,
    "fault_503": 0.05,
    "fault_500": 0.05,
    "fault_429": 0.08,
    "fault_429_poll": 0.05,
    "fault_not_json": 0.05,
    "fault_no_task_id": 0.08,
    "fault_stuck": 0.06,
    "fault_task_failed": 0.1,
    "fault_unknown_status": 0.15,
    "fault_expire": 0.08,
    "fault_bad_base64": 0.15,
    "fault_bad_image": 0.08,
    "fault_redirect": 0.12,
    "fault_huge_image": 0.1,
    "fault_truncate": 0.15,
}
assert set(EVERY_FAULT) == set(FAULT_NAMES)

# 240 jobs over 200 distinct bodies (identical bodies are indistinguishable to the provider);
# some in base64 mode, some leaving the seed to the provider.
BODIES = [{"prompt": f"a fox, take {i % 200}", "size": "256*256", "output_format": "png",
           **({"enable_base64_output": True} if i % 200 % 4 == 0 else {}),
           **({"seed": i % 200} if i % 200 % 3 else {})} for i in range(240)]
CONTENT = [json.dumps(body, sort_keys=True) for body in BODIES]


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def clients(sim: Simulator):
    async with httpx.AsyncClient(transport=sim.api_transport(), base_url=sim.api_base_url,
                                 headers=AUTH) as api, \
            httpx.AsyncClient(transport=sim.image_transport()) as images:
        yield api, images


async def each(items: list, action, concurrent: bool) -> None:
    if not concurrent:
        for item in items:
            await action(item)
        return
    async with anyio.create_task_group() as group:
        for item in items:
            group.start_soon(action, item)


async def run_batch(order: list[int], concurrent: bool, seed: int = 7):
    """Submit (3 rounds of retries), poll once while running and twice when done, then download
    once; in ``order``, one request after another or all of a phase at once."""
    clock = Clock()
    sim = Simulator(SimConfig(task_seconds=5, task_jitter=1, fault_seed=seed, huge_image_bytes=200_000,
                              seed_style="mixed", **EVERY_FAULT), clock=clock)
    events: dict[int, list[str]] = defaultdict(list)     # per job
    task_of: dict[int, str] = {}
    url_of: dict[int, str] = {}

    async with clients(sim) as (api, images):
        async def submit(i: int) -> None:
            try:
                response = await api.post(LORA, json=BODIES[i])
            except httpx.RemoteProtocolError:
                events[i].append("submit dropped")
                return
            try:
                task_id = response.json().get("task_id")
            except json.JSONDecodeError:
                task_id = None
            if task_id:
                task_of[i] = task_id
                events[i].append("submitted")
            else:
                events[i].append(f"submit {response.status_code} {response.text[:40]}")

        pending = list(order)
        for _ in range(3):
            await each(pending, submit, concurrent)
            pending = [i for i in pending if i not in task_of]

        async def poll(i: int, times: int) -> None:
            for _ in range(times):
                try:
                    response = await api.get(RESULT, params={"task_id": task_of[i]})
                except httpx.RemoteProtocolError:
                    events[i].append("poll dropped")
                    continue
                if response.headers["content-type"] != "application/json":
                    events[i].append("poll not json")
                    continue
                answer = response.json()
                if response.status_code != 200:
                    events[i].append(f"poll {answer['reason']}")
                    continue
                seed = answer["extra"]["seed"]
                events[i].append(f"{answer['task']['status']} seed={seed!r}")
                if answer["images"]:
                    value = answer["images"][0]["image_url"]
                    if value.startswith("http"):
                        url_of[i] = value
                    else:
                        events[i].append(f"base64 {value[:16]}")

        polled = [i for i in order if i in task_of]
        await each(polled, lambda i: poll(i, 1), concurrent)
        clock.now += 30                      # every task that can finish has finished
        await each(polled[::-1], lambda i: poll(i, 2), concurrent)

        async def download(i: int) -> None:
            try:
                response = await images.get(url_of[i])
            except httpx.RemoteProtocolError:
                events[i].append("download cut")
                return
            events[i].append(f"download {response.status_code} {len(response.content)}")

        await each([i for i in order if i in url_of], download, concurrent)

    # Jobs with identical bodies may swap outcomes with each other: compare them as a group.
    by_content: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for i, seen in events.items():
        by_content[CONTENT[i]].append(tuple(seen))
    stats = sim.stats
    counts = {"faults": dict(stats.faults), "submits": dict(stats.submits_by_outcome),
              "polls": dict(stats.polls_by_status), "downloads": dict(stats.downloads_by_outcome),
              "errors": dict(stats.errors_by_reason), "created": stats.tasks_created,
              "requests": (stats.submits, stats.polls, stats.downloads)}
    return counts, {content: sorted(seen) for content, seen in by_content.items()}


@pytest.mark.slow
async def test_same_seed_same_faults_in_any_order():
    jobs = list(range(len(BODIES)))
    shuffled = jobs[:]
    random.Random(5).shuffle(shuffled)
    counts, outcomes = await run_batch(jobs, concurrent=False)
    for fault in FAULT_NAMES:
        assert counts["faults"].get(fault, 0) >= 4, f"{fault} fired {counts['faults'].get(fault, 0)} times"
    again, seen = await run_batch(shuffled, concurrent=True)   # another order, interleaved
    assert again == counts
    assert seen == outcomes
    other, other_outcomes = await run_batch(jobs, concurrent=False, seed=8)
    assert other["faults"] != counts["faults"] and other_outcomes != outcomes


async def test_submit_faults_follow_the_body_not_its_spelling():
    """Key order and spacing do not change a body's identity; its submit count does."""
    compact = json.dumps({"prompt": "a heron", "size": "256*256", "seed": 9}).encode()
    spaced = b'{ "seed" : 9,\n  "size": "256*256", "prompt": "a heron" }'

    async def outcomes(body: bytes) -> list[int | str]:
        sim = Simulator(SimConfig(task_seconds=0, fault_seed=3, fault_500=0.5, fault_drop=0.3))
        seen: list[int | str] = []
        async with clients(sim) as (api, _):
            for _ in range(24):
                try:
                    seen.append((await api.post(LORA, content=body,
                                                headers={"Content-Type": "application/json"})).status_code)
                except httpx.RemoteProtocolError:
                    seen.append("dropped")
        return seen

    first = await outcomes(compact)
    assert first == await outcomes(spaced)
    assert {200, 500, "dropped"} <= set(first)


async def test_task_ids_and_urls_are_unique_per_instance():
    """Same fault seed, same requests: the same faults, but never the same task ids, and one
    instance's image URL is nothing to another (a restarted simulator, a resumed batch)."""
    async def run() -> tuple[Simulator, list[str], list[str], list[str]]:
        sim = Simulator(SimConfig(task_seconds=0, fault_seed=3, fault_task_failed=0.4))
        async with clients(sim) as (api, _):
            ids = [(await api.post(LORA, json={"prompt": f"a boat {i}", "seed": 1})).json()["task_id"]
                   for i in range(16)]
            answers = [(await api.get(RESULT, params={"task_id": task_id})).json() for task_id in ids]
        return sim, ids, [a["task"]["status"] for a in answers], [u["image_url"] for a in answers
                                                                   for u in a["images"]]

    sim_a, ids_a, statuses_a, urls_a = await run()
    sim_b, ids_b, statuses_b, _ = await run()
    assert not set(ids_a) & set(ids_b)
    assert all(len(task_id) == 36 and task_id[14] == "4" for task_id in ids_a + ids_b)   # uuid4-like
    assert statuses_a == statuses_b
    assert {"TASK_STATUS_FAILED", "TASK_STATUS_SUCCEED"} <= set(statuses_a)
    async with clients(sim_b) as (api, images):
        assert (await api.get(RESULT, params={"task_id": ids_a[0]})).status_code == 404
        assert (await images.get(urls_a[0])).status_code == 404
    async with clients(sim_a) as (_, images):
        assert (await images.get(urls_a[0])).status_code == 200
