"""The floor for overhead: a minimal client doing per job the same work batchgen must do.

Submit, poll until the task succeeded, download, decode the image fully (Pillow, as
batchgen's check does), write the image and a JSON sidecar each through a temp file and a
rename, and append one ledger line; ``workers`` jobs at a time, over the same httpx transport
batchgen uses (``httpx.AsyncHTTPTransport``, requests handed to it directly). Nothing else: no
manifest, no retries, no limits, no progress, no error handling beyond asserting success.
What batchgen spends beyond this is its own overhead.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import anyio
import httpx
from PIL import Image

MODEL_PATH = "/v3/async/z-image-turbo-lora"


async def run_floor(api_base: str, key: str, jobs: int, workers: int, folder: Path,
                    fmt: str = "webp", connections: int = 8, submits_at_once: int | None = None) -> None:
    """``submits_at_once``: how many submits may be on the wire together (None: as many as
    workers); 1 is batchgen's rule, so a crash can cost at most one task."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tmp"
    tmp.mkdir(exist_ok=True)
    ledger = os.open(folder / "ledger.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    api = httpx.AsyncHTTPTransport(limits=limits)
    images = httpx.AsyncHTTPTransport(limits=limits)
    gate = anyio.Semaphore(connections)
    submitting = anyio.Semaphore(submits_at_once or workers)
    numbers = iter(range(jobs))

    async def call(transport: httpx.AsyncHTTPTransport, method: str, url: str,
                   content: bytes | None = None, auth: bool = True) -> tuple[int, bytes]:
        request = httpx.Request(method, url, headers=headers if auth else [], content=content)
        async with gate:
            response = await transport.handle_async_request(request)
            try:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            finally:
                await response.aclose()
        return response.status_code, body

    async def one(n: int) -> None:
        body = json.dumps({"prompt": f"floor {n}", "size": "256*256", "seed": n,
                           "output_format": fmt}).encode()
        async with submitting:
            status, answer = await call(api, "POST", api_base + MODEL_PATH, body)
        assert status == 200, answer
        task_id = json.loads(answer)["task_id"]
        while True:
            status, answer = await call(api, "GET", f"{api_base}/v3/async/task-result?task_id={task_id}")
            result = json.loads(answer)
            if result["task"]["status"] == "TASK_STATUS_SUCCEED":
                break
            await anyio.sleep(0.01)
        url = result["images"][0]["image_url"]
        status, data = await call(images, "GET", url, auth=False)
        assert status == 200
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
        name = f"{n:06d}"
        for suffix, payload in ((fmt, data), ("json", json.dumps(
                {"job": n, "task_id": task_id, "width": size[0], "height": size[1],
                 "bytes": len(data)}).encode())):
            part = tmp / f"{name}.{suffix}"
            part.write_bytes(payload)
            os.replace(part, folder / f"{name}.{suffix}")
        os.write(ledger, json.dumps({"job": n, "state": "done", "task_id": task_id}).encode() + b"\n")

    async def worker() -> None:
        for n in numbers:
            await one(n)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)
    finally:
        os.close(ledger)
        await api.aclose()
        await images.aclose()
