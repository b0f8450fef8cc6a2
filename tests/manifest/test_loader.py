"""Loading manifests: settings, defaults, paths, and problems reported all at once, located."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.loader import Manifest, load_manifest

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def write(folder: Path, text: str, files: dict[str, str] | None = None,
          name: str = "m.yaml") -> Path:
    for rel, content in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(content, encoding="utf-8")
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return [str(p) for p in info.value.problems]


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    m = load_manifest(write(tmp_path, 'prompt: "a cat"\n', name="my-batch.yaml"))
    assert isinstance(m, Manifest)
    assert (m.name, m.model, m.provider) == ("my-batch", "z-image-turbo-lora", "jiekou")
    assert (m.base_url, m.api_key_env, m.rate_limit) == (None, None, None)
    assert (m.concurrency, m.task_timeout, m.repeat, m.expansion_limit) == (8, 1800.0, 1, 1_000_000)
    assert m.output == tmp_path / "output" / "my-batch"
    assert m.path == tmp_path / "my-batch.yaml"
    assert (m.key_variable, m.endpoint) == ("JIEKOU_API_KEY", "https://api.jiekou.ai")
    assert m.filename == "{job_id:.3}/{job_id}" and m.caption is None


def test_settings_are_read(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, """\
        name: run.1
        provider: novita
        base_url: "http://127.0.0.1:8000"
        api_key_env: MY_KEY
        model: z-image-turbo
        concurrency: 32
        rate_limit: 120
        task_timeout: 60
        output: /data/out
        prompt: "a cat"
        """))
    assert (m.name, m.provider, m.model) == ("run.1", "novita", "z-image-turbo")
    assert (m.base_url, m.endpoint) == ("http://127.0.0.1:8000", "http://127.0.0.1:8000")
    assert (m.api_key_env, m.key_variable) == ("MY_KEY", "MY_KEY")
    assert (m.concurrency, m.rate_limit, m.task_timeout) == (32, 120, 60.0)
    assert m.output == Path("/data/out")


def test_novita_default_key_variable(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, "provider: novita\nprompt: x\n"))
    assert (m.key_variable, m.endpoint) == ("NOVITA_API_KEY", "https://api.novita.ai")


def test_relative_output_and_data_files_are_relative_to_the_manifest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = write(folder, """\
        prompt: "{subject}"
        output: out/here
        matrix:
          subject: {file: data/s.txt}
        """, {"data/s.txt": "cat\ndog\n"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    m = load_manifest(path)
    assert m.output == folder / "out" / "here"  # the same batch from any working directory
    assert [j.request["prompt"] for j in m.jobs()] == ["cat", "dog"]
    default = load_manifest(write(folder, 'prompt: "a cat"\n', name="d.yaml"))
    assert default.output == folder / "output" / "d"
    monkeypatch.chdir(tmp_path)
    assert load_manifest(Path("project/d.yaml")).output == folder / "output" / "d"


def test_key_in_manifest_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "sk-live-AbCdEf0123456789XyZ"
    msgs = problems(write(tmp_path, f'prompt: x\napi_key: "{secret}"\nKey: "{secret}"\n'))
    assert len(msgs) == 2
    assert all("never put the API key in a manifest" in m for m in msgs)
    assert all(secret not in m for m in msgs)


@pytest.mark.parametrize("value", ["sk-abc123", "sk_live_zzz", "AbCdEfGh12345678IjKlMn90"])
def test_api_key_env_holding_a_key_is_refused_without_echo(tmp_path: Path, value: str) -> None:
    (msg,) = problems(write(tmp_path, f"prompt: x\napi_key_env: {value}\n"))
    assert "api_key_env must name an environment variable, not hold the key" in msg
    assert value not in msg


def test_unknown_key_gets_did_you_mean(tmp_path: Path) -> None:
    (msg,) = problems(write(tmp_path, "prompt: x\nconcurency: 4\n"))
    assert msg.startswith(f"{tmp_path / 'm.yaml'}:2:1: concurency: unknown key 'concurency'; "
                          "did you mean 'concurrency'?")


def test_all_problems_are_reported_in_file_order(tmp_path: Path) -> None:
    msgs = problems(write(tmp_path, """\
        prompt: "a {style} cat"
        seed: 1.5
        size: "1024x1024"
        output_format: gif
        matrix:
          style: [oil]
          loras:
            - [{path: "https://e.com/a.safetensors", scale: 9}]
        """))
    lines = [int(m.split(":")[1]) for m in msgs]
    assert lines == [2, 3, 4, 8]
    assert "1024*1024" in msgs[1]


def test_yaml_booleans_are_booleans_but_quoted_true_is_refused(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, "prompt: x\nenable_base64_output: yes\n"))
    assert next(m.jobs()).request["enable_base64_output"] is True
    (msg,) = problems(write(tmp_path, 'prompt: x\nenable_base64_output: "true"\n'))
    assert "must be true or false without quotes" in msg


def test_top_level_list_says_to_use_matrix(tmp_path: Path) -> None:
    (msg,) = problems(write(tmp_path, "prompt: x\nseed: [1, 2]\n"))
    assert "to vary seed put it under matrix:" in msg


def test_stem_that_cannot_name_a_folder_needs_name(tmp_path: Path) -> None:
    (msg,) = problems(write(tmp_path, "prompt: x\n", name="my batch.yaml"))
    assert "add name:" in msg
    assert load_manifest(write(tmp_path, "name: ok\nprompt: x\n", name="my batch.yaml")).name == "ok"


def test_missing_manifest_file(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path / "absent.yaml")
    assert "no such file" in msg


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_manifests_load(path: Path) -> None:
    m = load_manifest(path)
    assert m.name == path.stem
    assert m.size >= 1
