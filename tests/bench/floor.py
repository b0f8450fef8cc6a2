"""The floor for overhead: a minimal client doing per job the same work batchgen must do.

Submit, poll until the task succeeded, download, decode the image fully (Pillow, as
batchgen's check does), write the image and a JSON sidecar each through a temp file and a
rename, and append one ledger line; ``workers`` jobs at a time, over the same httpx transport
batchgen uses (``httpx.AsyncHTTPTransport``, requests handed to it directly), or over aiohttp
(``http="aiohttp"``) to see what the HTTP layer itself costs. Nothing else: no manifest, no
retries, no limits, no progress, no error handling beyond asserting success. What batchgen
spends beyond this is its own overhead.

``durable``: the files are fsynced before their ledger line is written, in groups in a worker
thread every 0.1 s (as batchgen's group commit does), to set beside batchgen's default;
without it nothing is fsynced, to set beside ``RunOptions(durable=False)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import anyio
import httpx
from PIL import Image

MODEL_PATH = "/v3/async/z-image-turbo-lora"


class _Httpx:
    def __init__(self, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.api = httpx.AsyncHTTPTransport(limits=limits)
        self.images = httpx.AsyncHTTPTransport(limits=limits)

    async def call(self, transport: httpx.AsyncHTTPTransport, method: str, url: str,
                   headers: list[tuple[str, str]], content: bytes | None) -> tuple[int, bytes]:
        request = httpx.Request(method, url, headers=headers, content=content)
        response = await transport.handle_async_request(request)
        try:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        finally:
            await response.aclose()
        return response.status_code, body

    async def aclose(self) -> None:
        await self.api.aclose()
        await self.images.aclose()


class _Aiohttp:
    def __init__(self, connections: int) -> None:
        import aiohttp

        self.api = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
        self.images = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))

    async def call(self, session, method: str, url: str, headers: list[tuple[str, str]],
                   content: bytes | None) -> tuple[int, bytes]:
        async with session.request(method, url, headers=headers, data=content) as response:
            return response.status, await response.read()

    async def aclose(self) -> None:
        await self.api.close()
        await self.images.close()


async def run_floor(api_base: str, key: str, jobs: int, workers: int, folder: Path,
                    fmt: str = "webp", connections: int = 8, submits_at_once: int | None = None,
                    http: str = "httpx", durable: bool = False) -> None:
    """``submits_at_once``: how many submits may be on the wire together (None: as many as
    workers); 1 is batchgen's rule, so a crash can cost at most one task."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tmp"
    tmp.mkdir(exist_ok=True)
    ledger = os.open(folder / "ledger.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    made: set[Path] = set()
    headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    client = _Httpx(connections) if http == "httpx" else _Aiohttp(connections)
    gate = anyio.Semaphore(connections)
    submitting = anyio.Semaphore(submits_at_once or workers)
    numbers = iter(range(jobs))
    unsynced: list[tuple[list[str], bytes]] = []   # (files, ledger line) waiting for an fsync

    async def call(pool, method: str, url: str, content: bytes | None = None,
                   auth: bool = True) -> tuple[int, bytes]:
        async with gate:
            return await client.call(pool, method, url, headers if auth else [], content)

    async def one(n: int) -> None:
        # seed -1, as a manifest without seeds sends: the simulator draws one, so no picture is
        # ever served from its cache (a fixed seed would make every later round cheaper)
        body = json.dumps({"prompt": f"floor {n}", "size": "256*256", "seed": -1,
                           "output_format": fmt}).encode()
        async with submitting:
            status, answer = await call(client.api, "POST", api_base + MODEL_PATH, body)
        assert status == 200, answer
        task_id = json.loads(answer)["task_id"]
        while True:
            status, answer = await call(client.api, "GET",
                                        f"{api_base}/v3/async/task-result?task_id={task_id}")
            result = json.loads(answer)
            if result["task"]["status"] == "TASK_STATUS_SUCCEED":
                break
            await anyio.sleep(0.01)
        url = result["images"][0]["image_url"]
        status, data = await call(client.images, "GET", url, auth=False)
        assert status == 200
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size = image.size
        name = hashlib.sha256(body).hexdigest()[:16]
        # The folder layout batchgen's default gives (4,096 folders by the name's first three
        # hex digits, so no folder grows past about a thousand files), each made once.
        where = folder / name[:3]
        if where not in made:
            where.mkdir(exist_ok=True)
            made.add(where)
        paths = []
        for suffix, payload in ((fmt, data), ("json", json.dumps(
                {"job": n, "task_id": task_id, "width": size[0], "height": size[1],
                 "bytes": len(data)}).encode())):
            part = tmp / f"{name}.{suffix}"
            part.write_bytes(payload)
            os.replace(part, where / f"{name}.{suffix}")
            paths.append(str(where / f"{name}.{suffix}"))
        line = json.dumps({"job": n, "state": "done", "task_id": task_id}).encode() + b"\n"
        if durable:
            unsynced.append((paths, line))
        else:
            os.write(ledger, line)

    def fsync_group(group: list[tuple[list[str], bytes]]) -> None:
        parents: set[str] = set()
        for paths, _ in group:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                parents.add(os.path.dirname(path))
        for parent in parents:  # the renames last too, as batchgen's group commit does
            fd = os.open(parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    async def committer() -> None:
        written = 0
        while written < jobs:
            await anyio.sleep(0.1)
            group = unsynced[:]
            del unsynced[:len(group)]
            if group:
                await anyio.to_thread.run_sync(fsync_group, group)
                os.write(ledger, b"".join(line for _, line in group))
                written += len(group)

    async def worker() -> None:
        for n in numbers:
            await one(n)

    try:
        async with anyio.create_task_group() as group:
            if durable:
                group.start_soon(committer)
            for _ in range(workers):
                group.start_soon(worker)
    finally:
        os.close(ledger)
        await client.aclose()
