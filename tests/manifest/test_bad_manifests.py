"""The bad-input corpus: every manifest in tests/manifest/bad/ must be refused by the CLI
with exit code 2, one `FILE:LINE:COL: field: message` line per problem, and no traceback.

``bad_manifest_cases()`` is the corpus as (path, expected) pairs, so other commands (`run`)
can be checked against the same files.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchgen.cli.main import main
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest

CORPUS = Path(__file__).resolve().parent / "bad"


@functools.cache
def _expected() -> dict[str, dict[str, Any]]:
    """Read once per process, with libyaml where PyYAML has it: every test worker collects
    this file, and the pure-Python parser took a tenth of a second for it."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((CORPUS / "expected.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506


def bad_manifest_cases() -> list[tuple[Path, dict[str, Any]]]:
    """(manifest path, expectation) for every bad manifest; expectation keys: line, message,
    and optionally field, file (a data file, relative to the corpus), secret (never shown)."""
    return [(CORPUS / name, exp) for name, exp in sorted(_expected().items()) if not exp.get("ok")]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def _lines(output: str) -> list[str]:
    # main() prefixes a one-problem error with "error: "; the location follows it.
    return [ln.removeprefix("error: ") for ln in output.splitlines()]


def test_corpus_is_complete() -> None:
    listed = set(_expected())
    present = {p.name for p in CORPUS.glob("*.yaml")} - {"expected.yaml"}
    assert listed == present
    assert len(bad_manifest_cases()) >= 45


@pytest.mark.parametrize(("path", "expected"), bad_manifest_cases(), ids=lambda v: getattr(v, "name", ""))
def test_bad_manifest_is_refused_at_its_line(path: Path, expected: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(["plan", str(path)], capsys)
    assert code == 2, output
    assert "Traceback" not in output
    where = str(CORPUS / expected["file"]) if "file" in expected else str(path)
    prefix = f"{where}:{expected['line']}:"
    hits = [ln for ln in _lines(output) if ln.startswith(prefix) and expected["message"] in ln]
    assert hits, f"no line starting {prefix!r} containing {expected['message']!r} in:\n{output}"
    if "field" in expected:
        assert any(f": {expected['field']}: " in ln for ln in hits), output
    if "secret" in expected:
        assert expected["secret"] not in output


def test_values_that_look_like_paths_are_sanitized_not_refused() -> None:
    manifest = load_manifest(CORPUS / "escape_by_value.yaml")
    assert plan_manifest(manifest).jobs == 4
    root = Path("/batch/images")
    names = [job.name for job in manifest.jobs()]
    assert names == ["______etc/1", "_abs_olute/1", "__/1", "ok/1"]
    for name in names:
        resolved = (root / name).resolve()
        assert resolved.is_relative_to(root) and ".." not in Path(name).parts


def test_issue_yaml_syntax_error_exits_2_naming_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "syntax_error.yaml"
    code, output = run_cli(["plan", str(path)], capsys)
    assert code == 2
    assert f"{path}:4:7: YAML syntax error" in output


def test_issue_unknown_key_exits_2_naming_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "unknown_key_typo.yaml"
    code, output = run_cli(["plan", str(path)], capsys)
    assert code == 2
    assert f"{path}:1:1: promt: unknown key 'promt'; did you mean 'prompt'?" in output


def test_issue_lora_scale_of_5_exits_2_naming_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "lora_scale_5.yaml"
    code, output = run_cli(["plan", str(path)], capsys)
    assert code == 2
    assert f"{path}:5:59: matrix.loras.1.0.scale: must be between 0 and 4 (got 5)" in output


@pytest.fixture(scope="module")
def live_simulator():
    from batchgen.simulator import SimConfig, running_simulator

    with running_simulator(SimConfig(task_seconds=0)) as sim:
        yield sim


@pytest.mark.parametrize(("path", "expected"), bad_manifest_cases(), ids=lambda v: getattr(v, "name", ""))
def test_run_refuses_a_bad_manifest_before_sending_anything(
        path: Path, expected: dict[str, Any], live_simulator, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIEKOU_API_KEY", "sk-corpus-test-key-000000")
    before = live_simulator.stats.api_requests
    code, output = run_cli(["run", str(path), "--base-url", live_simulator.api_base_url,
                            "--output", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2, output
    where = str(CORPUS / expected["file"]) if "file" in expected else str(path)
    assert any(ln.startswith(f"{where}:{expected['line']}:") for ln in _lines(output)), output
    assert "Traceback" not in output
    assert live_simulator.stats.api_requests == before  # nothing was sent
    assert not (tmp_path / "out").exists()              # nothing was written
