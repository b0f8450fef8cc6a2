"""The simulator over real HTTP on loopback: where the wire matters (drops, cut bodies,
redirects to another host, endless bodies) and the ``batchgen simulate`` command itself."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from PIL import Image

from batchgen.simulator import SimConfig, running_simulator

KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SMALL = {"prompt": "a red fox in the snow", "size": "256*256"}
LORA = "/v3/async/z-image-turbo-lora"
RESULT = "/v3/async/task-result"


def image_url(api: httpx.Client, body: dict | None = None) -> str:
    task_id = api.post(LORA, json=body or SMALL).json()["task_id"]
    return api.get(RESULT, params={"task_id": task_id}).json()["images"][0]["image_url"]


def test_roundtrip_over_loopback():
    with running_simulator(SimConfig(task_seconds=0, api_key=KEY)) as sim:
        api_port = httpx.URL(sim.api_base_url).port
        assert sim.api_base_url == f"http://127.0.0.1:{api_port}"
        assert sim.image_base_url.startswith("http://127.0.0.1:") and sim.image_base_url != sim.api_base_url
        with httpx.Client(base_url=sim.api_base_url, headers=AUTH) as api, httpx.Client() as images:
            assert api.post(LORA, json=SMALL, headers={"Authorization": ""}).json()["reason"] == "MISSING_API_KEY"
            url = image_url(api, {**SMALL, "output_format": "png"})
            assert url.startswith(sim.image_base_url + "/img/")
            response = images.get(url)
            assert response.status_code == 200
            picture = Image.open(io.BytesIO(response.content))
            assert picture.format == "PNG" and picture.size == (256, 256)
            assert images.get(sim.image_base_url + LORA).status_code == 404
        assert sim.stats.tasks_created == 1 and sim.stats.downloads == 1
        assert sim.stats.image_requests_with_auth == 0 and sim.stats.key_leaks == 0


def test_drop_over_the_wire():
    with running_simulator(SimConfig(task_seconds=0, fault_drop=1.0)) as sim:
        with httpx.Client(base_url=sim.api_base_url, headers=AUTH) as api:
            for _ in range(6):
                with pytest.raises(httpx.RemoteProtocolError):
                    api.post(LORA, json=SMALL)
            sim.config.fault_drop = 0.0
            assert api.post(LORA, json=SMALL).status_code == 200    # the server lives on
        stats = sim.stats
        assert stats.tasks_created == stats.tasks_created_but_dropped + 1


def test_truncate_over_the_wire():
    with running_simulator(SimConfig(task_seconds=0)) as sim:
        with httpx.Client(base_url=sim.api_base_url, headers=AUTH) as api, httpx.Client() as images:
            url = image_url(api)
            full = len(images.get(url).content)
            sim.config.fault_truncate = 1.0
            short = cut = 0
            for _ in range(12):
                try:
                    response = images.get(url)
                except httpx.RemoteProtocolError as exc:
                    assert f"expected {full}" in str(exc)
                    cut += 1
                else:
                    assert int(response.headers["content-length"]) == len(response.content) < full
                    short += 1
    assert short and cut


def test_redirect_over_the_wire_never_carries_the_key():
    with running_simulator(SimConfig(task_seconds=0, api_key=KEY, fault_redirect=1.0)) as sim:
        with httpx.Client(base_url=sim.api_base_url, headers=AUTH) as api, httpx.Client() as images:
            url = image_url(api)
            first = images.get(url)
            assert first.status_code == 302
            assert first.headers["location"].startswith(sim.api_base_url + "/img/")
            followed = images.get(url, follow_redirects=True)
            assert followed.status_code == 200
            assert Image.open(io.BytesIO(followed.content)).size == (256, 256)
        assert sim.stats.image_requests_with_auth == 0 and sim.stats.key_leaks == 0


def test_huge_image_over_the_wire_stops_when_the_client_leaves():
    with running_simulator(SimConfig(task_seconds=0, fault_huge_image=1.0)) as sim:
        with httpx.Client(base_url=sim.api_base_url, headers=AUTH) as api, httpx.Client() as images:
            url = image_url(api)
            with images.stream("GET", url) as response:
                assert "content-length" not in response.headers
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > 2 << 20:
                        break
            assert received > 2 << 20
            assert api.get(RESULT, params={"task_id": "x"}).status_code == 404   # still answering


def test_cli_simulate_subprocess():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "batchgen", "simulate", "--port", "0", "--task-seconds", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        killer = threading.Timer(30, proc.kill)     # never hang the suite
        killer.start()
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("batchgen simulator: API http://127.0.0.1:"), line
            words = line.split()
            api_url, image_base = words[3], words[5]
            assert words[4] == "images" and image_base != api_url and not api_url.endswith(":0")
            with httpx.Client(base_url=api_url, headers={"Authorization": "Bearer any-key"}) as api:
                url = image_url(api, {**SMALL, "output_format": "jpeg"})
                assert url.startswith(image_base + "/img/")
                with httpx.Client() as images:
                    response = images.get(url)
                assert response.status_code == 200
                assert Image.open(io.BytesIO(response.content)).format == "JPEG"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            killer.cancel()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err, err


def test_cli_simulate_usage_errors(capsys):
    from batchgen.cli.main import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["simulate", "--port", str(port)]) == 2
    assert "cannot listen" in capsys.readouterr().err
    assert main(["simulate", "--port", "0", "--fault-500", "1.5"]) == 2
    assert "fault_500" in capsys.readouterr().err
