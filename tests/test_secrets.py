"""The API key goes to the API host's Authorization header and nowhere else.

A batch with faults and failures runs over loopback with a distinctive key, through the CLI
(quiet and normal output) and in-process with every logger at DEBUG; then everything batchgen
wrote or said is searched for the key: the output folder (ledger, sidecars, captions, images),
stdout and stderr, log records and their tracebacks, error texts, reprs of the public objects.
The simulator watches the other side: the key arrives only where it belongs.
"""

from __future__ import annotations

import base64
import logging
import pickle
from pathlib import Path

import anyio
import pytest

from batchgen.cli.render import render_summary
from batchgen.provider.classify import classify_error
from batchgen.provider.client import ProviderClient
from batchgen.errors import AuthError
from batchgen.provider.targets import ApiKey, ApiTarget
from batchgen.engine.runner import Batch, RunOptions
from batchgen.simulator import SimConfig, running_simulator
from faultkit import cli, fast_options, manifest_text, run_batch, write_manifest

KEY = "sk-LEAKCHECK-7f3a9c2e1b0d4f68a5e2"
WRONG = "sk-WRONGKEY-0c9d8e7f6a5b4c3d2e1f"
JOBS = 16
# Faults on every path (drops, 5xx, failed tasks, redirects of image URLs to the API host) and
# two prompts the provider rejects, so error paths write and print too.
CONFIG = dict(api_key=KEY, task_seconds=0.02, task_jitter=0.01, fault_seed=9, fault_500=0.1,
              fault_drop=0.05, fault_task_failed=0.1, fault_redirect=0.3, fault_truncate=0.1,
              retry_after="seconds")
EXTRA = ('caption: "{n} caption"\ninclude:\n  - {n: "forbidden thing"}\n  - {n: "forbidden place"}\n')


def forms(secret: str) -> list[bytes]:
    """The key as it could appear: raw, base64 (Basic auth, data URLs), and its distinctive core."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw[3:]]


def assert_clean(where: str, blob: bytes | str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for form in forms(KEY) + forms(WRONG):
        assert form not in data, f"the API key leaked into {where}"


def scan_folder(folder: Path) -> int:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        assert_clean(str(path.relative_to(folder)), path.read_bytes())
    return len(files)


@pytest.mark.slow
def test_the_key_appears_nowhere_but_the_authorization_header(tmp_path: Path, caplog) -> None:
    path = write_manifest(tmp_path, manifest_text("secret", JOBS, concurrency=4, extra=EXTRA))
    env = {"JIEKOU_API_KEY": KEY}
    with running_simulator(SimConfig(**CONFIG)) as sim:
        base = ["--base-url", sim.api_base_url]
        quiet = cli("run", str(path), *base, "--output", str(tmp_path / "cli"), "--quiet", env=env)
        normal = cli("retry", str(path), *base, "--output", str(tmp_path / "cli"), env=env)
        status = cli("status", str(tmp_path / "cli"), env=env)
        status_json = cli("status", str(tmp_path / "cli"), "--json", env=env)

        caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
        options = fast_options(tmp_path / "lib", base_url=sim.api_base_url, environ=env)
        summary = run_batch(path, options)
        again = run_batch(path, fast_options(tmp_path / "lib", base_url=sim.api_base_url,
                                             environ=env), "retry")
        stats = sim.stats

    # The runs did meet faults and failures, so the error paths were exercised.
    assert quiet.returncode == 1 and "ILLEGAL_PROMPT" in quiet.stdout, quiet.stdout + quiet.stderr
    assert normal.returncode == 1 and summary.failures["ILLEGAL_PROMPT"] == 2
    assert stats.faults["fault_500"] and stats.faults["fault_redirect"]
    assert stats.faults["fault_task_failed"] + stats.faults["fault_truncate"] + stats.faults["fault_drop"] > 0
    assert stats.downloads_by_outcome["redirect"] > 0  # image requests went to the API host too
    assert again.done > 0 and summary.done > 0

    # The simulator saw the key only in the API's Authorization header.
    assert stats.key_leaks == 0, stats.key_leak_places
    assert stats.image_requests_with_auth == 0
    assert stats.tasks_created >= 2 * JOBS  # it authenticated every one of them

    for name, result in (("quiet run", quiet), ("normal retry", normal), ("status", status),
                         ("status --json", status_json)):
        assert result.returncode in (0, 1), result.stderr
        assert_clean(f"{name} stdout", result.stdout)
        assert_clean(f"{name} stderr", result.stderr)
    assert scan_folder(tmp_path / "cli") > 2 * JOBS  # images, sidecars, captions: enough to mean something
    assert scan_folder(tmp_path / "lib") > 2 * JOBS

    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) > 20 and any(r.name.startswith("httpcore") for r in debug)
    assert_clean("log text", caplog.text)
    for record in caplog.records:
        assert_clean(f"log record {record.name}", record.getMessage())
        assert_clean(f"log args {record.name}", repr(record.args))
    handler = logging.Formatter()
    for record in caplog.records:
        if record.exc_info:
            assert_clean("a logged traceback", handler.formatException(record.exc_info))

    for obj in (ApiKey(KEY), options, summary, again, Batch(path, options)):
        assert_clean(f"repr of {type(obj).__name__}", repr(obj))
        assert_clean(f"str of {type(obj).__name__}", str(obj))
    assert_clean("summary text", render_summary(summary, path))


def test_the_key_stays_out_of_objects_errors_and_pickles() -> None:
    key = ApiKey(KEY)
    client = ProviderClient(ApiTarget("jiekou", "http://127.0.0.1:9", "JIEKOU_API_KEY"), key)
    try:
        assert_clean("client repr", repr(client))
        assert_clean("client vars", repr(vars(client)))
    finally:
        anyio.run(client.aclose)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert_clean("RunOptions", repr(RunOptions(environ={"JIEKOU_API_KEY": KEY})))
    # A provider that echoes the key in an error message: the message is scrubbed.
    body = f'{{"code": 403, "reason": "INVALID_API_KEY", "message": "key {KEY} is not valid"}}'.encode()
    error = classify_error(403, body, {}, key_env="JIEKOU_API_KEY", base_url="http://x", scrub=key.scrub)
    assert isinstance(error, AuthError) and "JIEKOU_API_KEY" in str(error)
    assert_clean("an error carrying the provider's message", str(error) + repr(error))


def test_a_wrong_key_stops_with_exit_3_naming_the_variable_not_the_key(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, manifest_text("secret", 4))
    with running_simulator(SimConfig(api_key=KEY, task_seconds=0.02)) as sim:
        wrong = cli("run", str(path), "--base-url", sim.api_base_url, "--output", str(tmp_path / "out"),
                    env={"JIEKOU_API_KEY": WRONG})
        created = sim.stats.tasks_created
        leaks = sim.stats.key_leaks
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert "JIEKOU_API_KEY" in wrong.stdout + wrong.stderr
    assert "refused the API key" in wrong.stdout + wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert_clean("stdout", wrong.stdout)
    assert_clean("stderr", wrong.stderr)
    scan_folder(tmp_path / "out")
    assert created == 0 and leaks == 0

    missing = cli("run", str(path), "--base-url", "http://127.0.0.1:9", "--output", str(tmp_path / "out"),
                  env={"JIEKOU_API_KEY": ""})
    assert missing.returncode == 2 and "JIEKOU_API_KEY is set but empty" in missing.stderr
