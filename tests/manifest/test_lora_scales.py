"""A LoRA's scale taken from a matrix variable: each such variable is an ordinary axis, so two
LoRAs' scales can be two axes of one sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import Problem
from batchgen.manifest.loader import load_manifest
from test_expand import jobs_of, load

BUNDLED = Path(__file__).resolve().parents[2] / "manifests" / "two-lora-sweep.yaml"

TWO = """\
model: z-image-turbo-lora
prompt: a lighthouse
filename: "{loras}/{seed}"
loras:
  - {path: "https://example.com/loras/ghibli.safetensors", scale: "{style_scale}"}
  - {path: "https://example.com/loras/detail.safetensors", scale: 0.7}
matrix:
  style_scale: [1.0, 0, 0.5]
  seed: [1, 2]
"""


def test_each_job_takes_its_scale_from_its_variable(tmp_path: Path) -> None:
    jobs = jobs_of(tmp_path, TWO)
    assert len(jobs) == 6
    assert [j.request["loras"][0]["scale"] for j in jobs] == [1.0, 1.0, 0.0, 0.0, 0.5, 0.5]
    assert all(j.request["loras"][1] == {"path": "https://example.com/loras/detail.safetensors",
                                         "scale": 0.7} for j in jobs)
    assert jobs[0].axes == {"style_scale": 1.0, "seed": 1}  # the variable is an axis by name
    assert jobs[4].name == "ghibli_0p5_detail_0p7/1"  # the label is the scales this job sent
    assert len({j.job_id for j in jobs}) == 6


def test_the_bundled_two_lora_sweep_is_a_3_by_3_of_scales(tmp_path: Path) -> None:
    manifest = load_manifest(BUNDLED)
    jobs = list(manifest.jobs())
    scales = {(j.axes["style_scale"], j.axes["detail_scale"]) for j in jobs}
    assert scales == {(s, d) for s in (0, 0.5, 1.0) for d in (0.0, 0.5, 1.0)}
    for job in jobs:
        sent = [item["scale"] for item in job.request["loras"]]
        assert sent == [job.axes["style_scale"], job.axes["detail_scale"]]


def test_a_set_of_the_loras_axis_can_take_a_variable(tmp_path: Path) -> None:
    text = """\
    model: z-image-turbo-lora
    prompt: a lighthouse
    filename: "{loras}"
    matrix:
      loras:
        - []
        - name: ink
          loras: [{path: "https://example.com/ink.safetensors", scale: "{ink}"}]
      ink: {from: 0.5, to: 1.5, step: 0.5}
    exclude:
      - {loras: none, ink: 1.0}
      - {loras: none, ink: 1.5}
    """
    jobs = jobs_of(tmp_path, text)
    assert [(j.axes["loras"], j.axes["ink"]) for j in jobs] == [
        ("none", 0.5), ("ink@{ink}", 0.5), ("ink@{ink}", 1.0), ("ink@{ink}", 1.5)]
    assert [j.request["loras"] for j in jobs][1:] == [
        [{"path": "https://example.com/ink.safetensors", "scale": s}] for s in (0.5, 1.0, 1.5)]
    assert [j.name for j in jobs] == ["none", "ink_0p5", "ink_1", "ink_1p5"]


def test_a_vars_entry_gives_one_scale_for_every_job(tmp_path: Path) -> None:
    text = TWO.replace("matrix:\n  style_scale: [1.0, 0, 0.5]\n", "vars:\n  style_scale: 0.3\nmatrix:\n")
    assert {j.request["loras"][0]["scale"] for j in jobs_of(tmp_path, text)} == {0.3}


def test_a_bad_value_from_a_data_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    text = TWO.replace("style_scale: [1.0, 0, 0.5]", "style_scale: {file: scales.txt}")
    manifest = load(tmp_path, text, {"scales.txt": "0.5\nlots\n1\n"})
    out = list(manifest.expand())
    problems = [p for p in out if isinstance(p, Problem)]
    assert [j.request["loras"][0]["scale"] for j in out if not isinstance(j, Problem)] == [0.5, 0.5, 1.0, 1.0]
    assert problems and all(p.file.endswith("scales.txt") and p.line == 2 for p in problems)
    assert "must be a number" in problems[0].message


def test_an_include_must_give_the_variable(tmp_path: Path) -> None:
    from batchgen.errors import ManifestError

    text = TWO + "include:\n  - {seed: 9}\n"
    with pytest.raises(ManifestError) as info:
        load(tmp_path, text)
    assert "gives no value for style_scale" in str(info.value)
    ok = list(load(tmp_path, TWO + "include:\n  - {seed: 9, style_scale: 2}\n").jobs())
    assert ok[-1].request["loras"][0]["scale"] == 2.0 and ok[-1].request["seed"] == 9


def test_the_variable_is_not_reported_unused(tmp_path: Path) -> None:
    assert load(tmp_path, TWO).unused_axes == []
