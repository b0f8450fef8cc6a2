"""The object-store Writer against a real S3 API server (SeaweedFS on loopback).

Whole objects, the sidecar last, a killed write that leaves nothing under the final key, one
listing on resume instead of a HEAD per job, errors that say what to fix, and a real batch
written to s3:// whose objects never hold the API key.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from PIL import Image

from batchgen.errors import OutputError, UsageError
from batchgen.provider.targets import ApiKey
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.ledger import Ledger
from batchgen.storage.mirror import LedgerMirror
from batchgen.storage.objectstore import ObjectStoreWriter, is_store_url
from cluster.s3server import S3Server
from cluster.tcpproxy import Proxy
from faultkit import fast_options, run_batch
from storekit import job, sidecar

STOREKIT = Path(__file__).with_name("storekit.py")
REAL_SECONDS = 30.0  # a guard for waits on real processes, never a measure of anything


def key_of(url: str, relative: str) -> str:
    return f"{url.removeprefix('s3://')}/{relative}"


def test_save_puts_image_caption_and_sidecar_whole(s3_server: S3Server, s3_url: str) -> None:
    writer = ObjectStoreWriter(s3_url)  # endpoint and credentials from the AWS_* variables only
    writer.prepare()
    one = job("castle/seed1", caption="a castle")
    data = os.urandom(300_000)
    saved = writer.save(one, data, sidecar(one))

    assert (saved.file, saved.size, saved.sha256) == ("images/castle/seed1.png", len(data),
                                                       hashlib.sha256(data).hexdigest())
    fs = s3_server.filesystem()
    assert fs.cat(key_of(s3_url, saved.file)) == data
    assert fs.cat(key_of(s3_url, "images/castle/seed1.txt")) == b"a castle"
    side = json.loads(fs.cat(key_of(s3_url, "images/castle/seed1.json")))
    assert side["image"] == {"format": "png", "width": 256, "height": 256, "file": "images/castle/seed1.png",
                             "bytes": len(data), "sha256": saved.sha256, "requested": ""}
    assert fs.info(key_of(s3_url, saved.file))["ContentType"] == "image/png"
    assert [p.rsplit("/", 1)[1] for p in fs.find(s3_url.removeprefix("s3://"))] == [
        "seed1.json", "seed1.png", "seed1.txt"]  # the writability probe was removed again
    assert writer.has_result(saved.file, len(data))


def test_a_fresh_writer_knows_what_exists_from_one_listing(s3_server: S3Server, s3_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first = ObjectStoreWriter(s3_url)
    saved = {}
    for n in range(40):
        one = job(f"j{n:02d}", n, caption=None)
        saved[one.name] = first.save(one, os.urandom(1000 + n), sidecar(one))
    s3_server.filesystem().rm_file(key_of(s3_url, "images/j07.json"))  # an image without sidecar

    with Proxy(int(s3_server.endpoint.rsplit(":", 1)[1])) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        resumed = ObjectStoreWriter(s3_url)
        resumed.prepare()
        answers = {name: resumed.has_result(s.file, s.size) for name, s in saved.items()}
        assert not resumed.has_result(saved["j03"].file, saved["j03"].size + 1)  # wrong size
        assert not resumed.has_result("images/never.png", 10)
        methods = proxy.methods()

    assert [name for name, ok in answers.items() if not ok] == ["j07"]
    assert methods.count("GET") == 1 and "HEAD" not in methods  # one listing, no HEAD per job
    assert methods == ["PUT", "DELETE", "GET"]                 # probe, its removal, the listing


def saving_in_a_process(url_env: dict[str, str], url: str, name: str, size: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **url_env, "PYTHONPATH": os.pathsep.join(
        [str(STOREKIT.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(STOREKIT), url, name, str(size)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_mid_put(s3_server: S3Server, s3_env: dict[str, str], url: str, pattern: bytes,
                 extra: int, size: int) -> None:
    """Start a save in another process, freeze its traffic at ``pattern``, SIGKILL it there."""
    with Proxy(int(s3_server.endpoint.rsplit(":", 1)[1])) as proxy:
        proxy.stall_on(pattern, extra)
        writer = saving_in_a_process({**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}, url, "big/one", size)
        try:
            stalled = proxy.stalled.wait(REAL_SECONDS)
            assert writer.poll() is None, "the writer finished although its request was frozen"
            assert stalled, "the writer's request never reached the pattern"
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.communicate(timeout=REAL_SECONDS)
    # leaving the block cut the server's half of the frozen request


def test_a_write_killed_mid_put_leaves_nothing_under_the_final_key(s3_server: S3Server,
                                                                  s3_env: dict[str, str],
                                                                  s3_url: str) -> None:
    size = 4 << 20
    kill_mid_put(s3_server, s3_env, s3_url, b"/images/big/one.png", 256 << 10, size)
    # a later save of another job is a full round trip after the cut request was dropped
    other = job("after", 1)
    ObjectStoreWriter(s3_url).save(other, b"x" * 10, sidecar(other))

    names = [p.rsplit("/", 1)[1] for p in s3_server.filesystem().find(s3_url.removeprefix("s3://"))]
    assert not [n for n in names if n.startswith("one.")], names   # no image, caption nor sidecar
    assert not ObjectStoreWriter(s3_url).has_result("images/big/one.png", size)


def test_the_sidecar_goes_last_so_a_write_killed_before_it_is_no_result(
        s3_server: S3Server, s3_env: dict[str, str], s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    size = 100_000
    kill_mid_put(s3_server, s3_env, s3_url, b"/images/big/one.json", 16, size)
    fs = s3_server.filesystem()
    found = {p.rsplit("/", 1)[1]: info["size"] for p, info in
             fs.find(s3_url.removeprefix("s3://"), detail=True).items()}
    assert found == {"one.png": size, "one.txt": len(b"a caption")}  # both whole, no sidecar
    assert not ObjectStoreWriter(s3_url).has_result("images/big/one.png", size)

    with Proxy(int(s3_server.endpoint.rsplit(":", 1)[1])) as proxy, monkeypatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # the run after saves it again
        one = job("big/one")
        data = os.urandom(size)
        ObjectStoreWriter(s3_url).save(one, data, sidecar(one))
        puts = [path.rsplit("/", 1)[1] for method, path in proxy.requests if method == "PUT"]
    assert puts == ["one.png", "one.txt", "one.json"]
    assert ObjectStoreWriter(s3_url).has_result("images/big/one.png", size)
    assert fs.cat(key_of(s3_url, "images/big/one.png")) == data


def test_store_errors_are_output_errors_that_say_what_to_fix(s3_server: S3Server, s3_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    with pytest.raises(OutputError) as refused:
        ObjectStoreWriter(s3_url).prepare()
    assert refused.value.exit_code == 4
    assert "AWS_ACCESS_KEY_ID" in str(refused.value) and "not-the-secret-at-all" not in str(refused.value)

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    with pytest.raises(OutputError) as missing:
        ObjectStoreWriter("s3://no-such-bucket-here/prefix").prepare()
    assert "bucket does not exist" in str(missing.value)


def test_every_s3_client_of_a_process_loads_the_ca_bundle_once(s3_server: S3Server, s3_url: str,
                                                                ca_bundle_loads: list[tuple]) -> None:
    for n in range(3):
        ObjectStoreWriter(f"{s3_url}/{n}").prepare()   # three clients, each with its connections
    assert len(ca_bundle_loads) <= 1   # none when an earlier test of this process made the context


def test_urls_and_names_are_checked_before_anything_is_written() -> None:
    assert is_store_url("s3://bucket/prefix") and is_store_url("gs://b") and is_store_url("memory://x")
    assert not is_store_url("output/demo") and not is_store_url("file:///tmp/x") and not is_store_url("/abs")
    with pytest.raises(UsageError):
        ObjectStoreWriter("output/demo")
    writer = ObjectStoreWriter("memory://bucket/names")
    for bad in ("../escape", "/abs", "a//b", "a/./b"):
        with pytest.raises(OutputError):
            writer.save(job(bad), b"x", sidecar(job(bad)))
    assert writer.results() == {}


BATCH = """\
name: to-s3
prompt: "a {subject} at dusk"
size: "256*256"
output_format: png
caption: true
filename: "{subject}/seed{seed}"
concurrency: 4
matrix:
  subject: [fox, owl, heron]
  seed: [1, 2, 3, 4]
"""


def test_a_batch_written_to_s3_has_every_image_whole_and_never_the_api_key(
        s3_server: S3Server, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-Zx9-never-in-the-store"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(BATCH)
    sim = Simulator(SimConfig(task_seconds=0.05, task_jitter=0))
    with Proxy(int(s3_server.endpoint.rsplit(":", 1)[1])) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        options = fast_options(tmp_path / "state", writer=ObjectStoreWriter(s3_url),
                               api_transport=sim.api_transport(), image_transport=sim.image_transport(),
                               base_url=sim.api_base_url, api_key=ApiKey(secret))
        summary = run_batch(manifest, options)
        wire = bytes(proxy.sent)
    assert summary.done == summary.planned == 12

    fs = s3_server.filesystem()
    objects = {p.removeprefix(key_of(s3_url, "")): fs.cat(p) for p in fs.find(s3_url.removeprefix("s3://"))}
    assert len(objects) == 36                                   # image, caption, sidecar per job
    ledger = Ledger.read(tmp_path / "state")                    # the ledger stays on local disk
    for record in ledger.records.values():
        data = objects[record.file]
        side = json.loads(objects[record.file.removesuffix(".png") + ".json"])
        assert hashlib.sha256(data).hexdigest() == side["image"]["sha256"] == record.sha256.hex()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    assert all(secret.encode() not in body for body in objects.values())
    assert secret.encode() not in wire                         # not in any request to the store


@pytest.mark.anyio
async def test_a_store_dropped_inside_a_running_loop_closes_its_client_on_its_own_loop(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    # s3fs's client lives on fsspec's loop; its own finalizer closed it on whichever loop ran in
    # the collecting thread, and a task of that loop (here: the test's) failed.
    failures: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: failures.append(context))
    writer = ObjectStoreWriter(s3_url)
    writer.prepare()
    writer.save(job("a"), b"image", sidecar(job("a")))
    LedgerMirror(s3_url).fetch(tmp_path / "copies")
    s3_server.filesystem().ls(s3_server.bucket)
    del writer
    gc.collect()
    for _ in range(5):
        await anyio.sleep(0.01)  # let any close scheduled on this loop run
    assert failures == []


def test_a_store_sidecar_names_its_image_as_the_ledger_and_a_folder_do(tmp_path: Path) -> None:
    from batchgen.storage.folder import BatchFolder

    one = job("d01/d0165b54caa8cb65", fmt="webp")
    store = ObjectStoreWriter("memory://bucket/same-names")
    store.prepare()
    saved = store.save(one, b"RIFF....WEBP", sidecar(one))
    side = json.loads(store.fs.cat(f"{store.store.root}/images/d01/d0165b54caa8cb65.json"))
    assert saved.file == "images/d01/d0165b54caa8cb65.webp" == side["image"]["file"]
    folder = BatchFolder(tmp_path / "b", durable=False)
    folder.prepare()
    local = folder.save(one, b"RIFF....WEBP", sidecar(one))
    local_side = json.loads((tmp_path / "b" / "images/d01/d0165b54caa8cb65.json").read_text())
    assert local_side["image"]["file"] == local.file == side["image"]["file"]


def test_an_object_store_rewrites_caption_and_sidecar_in_place() -> None:
    store = ObjectStoreWriter("memory://bucket/derived")
    store.prepare()
    one = job("d01/abc", caption="old words")
    saved = store.save(one, b"\x89PNG....", sidecar(one))
    new = job("d01/abc", caption="new words")
    size, changed = store.rewrite_derived(new, saved.file)
    assert changed and store.fs.cat(f"{store.store.root}/images/d01/abc.txt") == b"new words"
    side = json.loads(store.fs.cat(f"{store.store.root}/images/d01/abc.json"))
    assert side["caption"] == "new words" and len(store.fs.cat(f"{store.store.root}/images/d01/abc.json")) == size
    assert store.rewrite_derived(new, saved.file) == (size, False)
