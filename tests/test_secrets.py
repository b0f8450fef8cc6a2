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
from batchgen.simulator import SimConfig, Simulator, running_simulator
from faultkit import cli, cli_here, fast_options, manifest_text, run_batch, write_manifest

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
@pytest.mark.waits
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
        wrong = cli_here("run", str(path), "--base-url", sim.api_base_url, "--output", str(tmp_path / "out"),
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

    missing = cli_here("run", str(path), "--base-url", "http://127.0.0.1:9", "--output", str(tmp_path / "out"),
                       env={"JIEKOU_API_KEY": ""})
    assert missing.returncode == 2 and "JIEKOU_API_KEY is set but empty" in missing.stderr


# -- the key is bound to hosts the user chose (docs/security.md) ----------------------------------

def _sim_manifest(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    return write_manifest(tmp_path, manifest_text("bound", 2, extra=f"base_url: {base_url}\n{extra}"))


@pytest.mark.parametrize("variable", ["JIEKOU_API_KEY", "AWS_SECRET_ACCESS_KEY"])
def test_a_manifest_alone_cannot_point_the_key_at_another_host(tmp_path: Path, variable: str,
                                                                capsys) -> None:
    from batchgen.cli.main import main
    from batchgen.errors import UsageError

    extra = f"api_key_env: {variable}\n" if variable != "JIEKOU_API_KEY" else ""
    with running_simulator(SimConfig(api_key=KEY, task_seconds=0.01)) as sim:
        path = _sim_manifest(tmp_path, sim.api_base_url, extra)   # loopback, and still refused
        env = {variable: KEY}
        with pytest.raises(UsageError, match="BATCHGEN_TRUSTED_HOSTS") as refused:
            run_batch(path, RunOptions(output=tmp_path / "out", environ=env))
        assert "--base-url" in str(refused.value) and "not a provider's own host" in str(refused.value)
        assert sim.stats.api_requests == 0 and sim.stats.key_leaks == 0
        # plan says where the key would go: nowhere, and why
        assert main(["plan", str(path)]) == 0
        plan = capsys.readouterr().out
        assert "key goes to nowhere: a run would refuse" in plan
        # the user's own word, on the command line or in the environment, is taken
        assert main(["plan", str(path), "--base-url", sim.api_base_url]) == 0
        assert f"key goes to {sim.api_base_url.split('//')[1]} (--base-url)" in capsys.readouterr().out
        trusted = {**env, "BATCHGEN_TRUSTED_HOSTS": sim.api_base_url.split("//")[1]}
        summary = run_batch(path, fast_options(tmp_path / "out", environ=trusted))
        assert summary.done == 2 and sim.stats.key_leaks == 0


def test_plain_http_goes_only_to_loopback_and_a_password_in_a_url_is_never_kept(tmp_path: Path,
                                                                                capsys) -> None:
    from batchgen.cli.main import main

    path = write_manifest(tmp_path, manifest_text("plain", 2))
    env = {"JIEKOU_API_KEY": KEY}
    # 192.0.2.1 is TEST-NET: nothing may even be tried there
    off = cli("run", str(path), "--base-url", "http://192.0.2.1:9", "--output", str(tmp_path / "o"),
              env=env, timeout=60)
    assert off.returncode == 2 and "plain http to another machine" in off.stderr, off.stderr
    assert not (tmp_path / "o").exists()
    with running_simulator(SimConfig(api_key=KEY, task_seconds=0.01)) as sim:
        secret_url = sim.api_base_url.replace("http://", "http://user:PASSW0RD-9f8e@")
        code = main(["run", str(path), "--base-url", secret_url, "--output", str(tmp_path / "o")])
        said = capsys.readouterr()
        assert code == 2 and "user name or password" in said.err and "***@" in said.err
        assert "PASSW0RD" not in said.out + said.err and sim.stats.api_requests == 0
    bad = write_manifest(tmp_path, manifest_text("p", 1, extra="base_url: https://u:PASSW0RD-9f8e@x.example\n"),
                         "bad.yaml")
    assert main(["plan", str(bad)]) == 2
    said = capsys.readouterr()
    assert "bad.yaml:" in said.err and "user name or password" in said.err
    assert "PASSW0RD" not in said.out + said.err


def test_provider_text_is_masked_and_stripped_of_terminal_escapes_everywhere(tmp_path: Path,
                                                                             capsys) -> None:
    from batchgen.cli.main import main
    from batchgen.view.viewer import make_viewer
    from faultkit import Rewriter, on_poll, simulated
    hostile = f"\x1b]0;pwned\x07\x1b[2J\x1b[31mbad prompt {KEY} \u202eevil\x9b"

    def fail(data: dict) -> dict:
        data["task"] = {**data["task"], "status": "TASK_STATUS_FAILED", "reason": hostile}
        return data
    sim = Rewriter(Simulator(SimConfig(api_key=KEY, task_seconds=0.01, task_jitter=0.0)), on_poll(fail))
    path = write_manifest(tmp_path, manifest_text("masked", 3))
    out = tmp_path / "out"
    summary = run_batch(path, fast_options(out, **{**simulated(sim), "api_key": ApiKey(KEY)}))
    assert summary.failed == 3
    make_viewer(out)
    assert main(["status", str(out)]) in (0, 1)
    assert main(["status", str(out), "--json"]) in (0, 1)
    printed = capsys.readouterr()
    assert "bad prompt ***" in printed.out
    everything = printed.out + printed.err + "".join(
        p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".png")
    assert_clean("ledger, status.js, view/data.js and status output", everything)
    for char in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert char not in everything, repr(char)
