"""The in-process simulator under trio, in virtual time: nothing in it needs asyncio.

``Simulator(config, clock=anyio.current_time)`` under ``trio.testing.MockClock(autojump_threshold=0)``
is how the engine's tests run: a 30 s task takes no wall time. The streaming path of the ASGI
app (``fault_huge_image`` over a real server) is driven by hand under both backends.
"""

from __future__ import annotations

import io
import time

import anyio
import httpx
import pytest
from PIL import Image
from trio.testing import MockClock

from batchgen.simulator import SimConfig, Simulator

AUTH = {"Authorization": "Bearer sk-test-0123456789abcdef"}
LORA = "/v3/async/z-image-turbo-lora"
RESULT = "/v3/async/task-result"
SMALL = {"prompt": "a red fox in the snow", "size": "256*256"}


def run_virtual(main) -> float:
    """Run ``main`` on trio in virtual time; return the wall seconds it took."""
    started = time.perf_counter()
    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})
    return time.perf_counter() - started


def clients(sim: Simulator) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    return (httpx.AsyncClient(transport=sim.api_transport(), base_url=sim.api_base_url, headers=AUTH),
            httpx.AsyncClient(transport=sim.image_transport()))


def test_a_30s_task_in_virtual_time_under_trio():
    # Built outside any event loop: the clock cannot be read yet, and need not be.
    sim = Simulator(SimConfig(task_seconds=30, task_jitter=0, max_in_flight=1, retry_after="seconds",
                              url_ttl=600), clock=anyio.current_time)

    async def main() -> None:
        api, images = clients(sim)
        async with api, images:
            started = anyio.current_time()
            task_id = (await api.post(LORA, json=SMALL)).json()["task_id"]
            running = (await api.get(RESULT, params={"task_id": task_id})).json()["task"]
            assert (running["status"], running["eta"]) == ("TASK_STATUS_PROCESSING", 30)
            busy = await api.post(LORA, json=SMALL)          # the in-flight cap reads the same clock
            assert busy.status_code == 429 and busy.headers["retry-after"] == "30"

            await anyio.sleep(31)
            done = (await api.get(RESULT, params={"task_id": task_id})).json()
            assert done["task"]["status"] == "TASK_STATUS_SUCCEED"
            debug = done["extra"]["debug_info"]
            assert int(debug["complete_time_ms"]) - int(debug["submit_time_ms"]) == 30000
            url = done["images"][0]["image_url"]
            response = await images.get(url)
            assert response.status_code == 200
            picture = Image.open(io.BytesIO(response.content))
            assert picture.format == "WEBP" and picture.size == (256, 256)

            await anyio.sleep(600)                            # URL expiry follows the clock too
            assert (await images.get(url)).status_code == 403
            assert anyio.current_time() - started >= 631
        assert sim.stats.tasks_created == 1 and sim.stats.downloads == 2

    assert run_virtual(main) < 5      # virtual: milliseconds in practice; never 631 real seconds


def test_wire_faults_in_process_under_trio():
    sim = Simulator(SimConfig(task_seconds=0, huge_image_bytes=3 << 20, retry_after="mixed"),
                    clock=anyio.current_time)
    cfg = sim.config

    async def main() -> None:
        api, images = clients(sim)
        async with api, images:
            cfg.fault_drop = 1.0
            with pytest.raises(httpx.RemoteProtocolError):
                await api.post(LORA, json=SMALL)
            cfg.fault_drop = 0.0
            cfg.fault_429 = 1.0
            styles = set()
            for _ in range(12):
                response = await api.post(LORA, json=SMALL)
                assert response.status_code == 429
                value = response.headers.get("retry-after")
                styles.add("none" if value is None else "seconds" if value.isdigit() else "date")
            assert styles == {"none", "seconds", "date"}
            cfg.fault_429 = 0.0
            task_id = (await api.post(LORA, json=SMALL)).json()["task_id"]
            url = (await api.get(RESULT, params={"task_id": task_id})).json()["images"][0]["image_url"]

            cfg.fault_huge_image = 1.0
            async with images.stream("GET", url) as response:
                assert response.status_code == 200 and "content-length" not in response.headers
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
            assert received == 3 << 20
            cfg.fault_huge_image = 0.0

            cfg.fault_truncate = 1.0
            outcomes = set()
            for _ in range(12):
                try:
                    outcomes.add(len((await images.get(url)).content))
                except httpx.RemoteProtocolError:
                    outcomes.add("cut")
            assert "cut" in outcomes and len(outcomes) == 2
            cfg.fault_truncate = 0.0

            cfg.fault_redirect = 1.0
            followed = await images.get(url, follow_redirects=True)
            assert followed.status_code == 200 and followed.url.host == httpx.URL(sim.api_base_url).host

    assert run_virtual(main) < 5


async def _image_path(sim: Simulator) -> str:
    api, images = clients(sim)
    async with api, images:
        task_id = (await api.post(LORA, json=SMALL)).json()["task_id"]
        url = (await api.get(RESULT, params={"task_id": task_id})).json()["images"][0]["image_url"]
    return httpx.URL(url).path


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("leaves", [True, False])
def test_huge_image_streams_over_asgi_and_stops_when_the_client_leaves(backend, leaves):
    """The app's own streaming (what a real server runs) under either backend: all the bytes
    and a final empty chunk, or, once the client disconnects, it stops and returns."""
    total = 8 << 20
    sim = Simulator(SimConfig(task_seconds=0, huge_image_bytes=total), clock=anyio.current_time)

    async def main() -> None:
        scope = {"type": "http", "method": "GET", "path": await _image_path(sim), "query_string": b"",
                 "headers": [(b"host", b"images.simulator")]}
        sim.config.fault_huge_image = 1.0
        enough = anyio.Event()
        messages: list[dict] = []
        sent = 0

        async def receive() -> dict:
            if not messages:
                messages.append({"type": "http.request"})
                return {"type": "http.request", "body": b"", "more_body": False}
            if leaves:
                await enough.wait()
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()

        async def send(message: dict) -> None:
            nonlocal sent
            messages.append(message)
            sent += len(message.get("body", b""))
            if sent > 1 << 20:
                enough.set()

        with anyio.fail_after(10):
            await sim.image_app(scope, receive, send)
        assert messages[1]["type"] == "http.response.start" and messages[1]["status"] == 200
        if leaves:
            assert (1 << 20) < sent < 2 << 20
        else:
            assert sent == total and messages[-1] == {"type": "http.response.body", "body": b""}

    anyio.run(main, backend=backend)
