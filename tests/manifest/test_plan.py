"""`batchgen plan` and `batchgen schema`: the CLI in-process, and the Plan object."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from batchgen.cli.render import render_plan
from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def write(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for rel, content in (files or {}).items():
        (folder / rel).write_text(content, encoding="utf-8")
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_plan_text(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JIEKOU_API_KEY", raising=False)
    assert main(["plan", str(MANIFESTS / "castle-sweep.yaml")]) == 0
    out = capsys.readouterr().out
    assert "castle-sweep" in out and "z-image-turbo-lora on jiekou" in out
    assert "$JIEKOU_API_KEY (not set" in out
    assert "style 2 x seed 3 x size 2 x loras 3" in out
    assert "jobs        36" in out
    assert "3 s per task is an assumption" in out
    assert "ghibli@0.5" in out  # preview shows the LoRA label


def test_plan_json_counts_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(MANIFESTS / "castle-sweep.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["jobs"] == 36
    assert data["axes"] == {"style": 2, "seed": 3, "size": 2, "loras": 3}
    assert (data["name"], data["model"], data["provider"]) == ("castle-sweep", "z-image-turbo-lora", "jiekou")
    assert data["duplicates"] == 0 and len(data["preview"]) == 5
    assert data["output"].endswith("output/castle-sweep")
    assert data["estimate_seconds"] == pytest.approx(36 * 3 / 8, abs=0.1)


def test_task_seconds_and_rate_limit_drive_the_estimate(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'prompt: x\nconcurrency: 10\nmatrix:\n  seed: {from: 1, to: 100}\n')
    assert main(["plan", str(path), "--json", "--task-seconds", "20"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["estimate_seconds"] == 200 and data["task_seconds_assumed"] is False
    path = write(tmp_path, 'prompt: x\nrate_limit: 10\nmatrix:\n  seed: {from: 1, to: 100}\n')
    assert plan_manifest(load_manifest(path)).estimate_seconds == 600  # 100 jobs at 10/min


def test_the_key_value_is_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-super-secret-value-123")
    path = write(tmp_path, "prompt: x\napi_key_env: MY_KEY\n")
    assert main(["plan", str(path)]) == 0
    assert main(["plan", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert "$MY_KEY (set)" in out and '"api_key_set": true' in out
    assert "sk-super-secret" not in out


def test_duplicates_and_unused_axis_warning(tmp_path: Path) -> None:
    plan = plan_manifest(load_manifest(write(tmp_path, """\
        prompt: "a cat"
        repeat: 2
        matrix:
          mood: [calm, wild]
          seed: [1, 2]
        """)))
    assert plan.jobs == 8 and plan.duplicates == 6 and plan.identical_cells == 2
    assert any("axis 'mood'" in w and "identical requests" in w for w in plan.warnings)
    text = render_plan(plan)
    assert "4 from repeat" in text and "2 from cells with identical requests" in text


def test_exclude_that_matches_nothing_is_a_warning(tmp_path: Path) -> None:
    plan = plan_manifest(load_manifest(write(tmp_path, """\
        prompt: "a {s}"
        matrix:
          s: [a, b]
        exclude:
          - {s: c}
        """)))
    assert plan.jobs == 2
    assert plan.warnings == ["exclude entry 1 (line 5) matches no cell"]


def test_many_bad_rows_are_capped_at_20_plus_a_count(tmp_path: Path) -> None:
    rows = "subject,seed\n" + "".join(f"s{i},x{i}\n" for i in range(30))
    m = load_manifest(write(tmp_path, 'prompt: "{subject}"\nmatrix:\n  rows: {file: r.csv}\n',
                            {"r.csv": rows}))
    with pytest.raises(ManifestError) as info:
        plan_manifest(m)
    problems = info.value.problems
    assert len(problems) == 21
    assert [p.line for p in problems[:3]] == [2, 3, 4]
    assert problems[-1].message == "and 10 more problems"


def test_name_collisions_are_case_insensitive(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, 'prompt: "{s}"\nfilename: "{s}"\nmatrix:\n  s: [Cat, cat, dog]\n'))
    with pytest.raises(ManifestError, match="jobs 0 and 1 both get the file name"):
        plan_manifest(m)


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_manifest_plans_cleanly(path: Path) -> None:
    plan = plan_manifest(load_manifest(path))
    # repeats.yaml repeats a seed on purpose (the dedupe example): plan must say so, and only that
    expected = ["axis 'seed' lists 7 more than once"] if path.name == "repeats.yaml" else []
    assert plan.jobs >= 1 and [w.split(":")[0] for w in plan.warnings] == expected
    assert plan.to_json()["jobs"] == plan.jobs


def test_bundled_manifests_fit_their_purpose() -> None:
    def plan(name: str):  # type: ignore[no-untyped-def]
        return plan_manifest(load_manifest(MANIFESTS / name))

    assert plan("castle-sweep.yaml").jobs == 36
    demo = plan("demo.yaml")
    m = demo.manifest
    assert m.name == "demo" and 8 <= demo.jobs <= 12 and m.concurrency >= 4 and m.base_url is None
    assert {j.request["size"] for j in m.jobs()} <= {"256*256", "512*512"}
    sweep = load_manifest(MANIFESTS / "lora-sweep.yaml")
    labels = {j.axes["loras"] for j in sweep.jobs()}
    assert {"ghibli@0", "ghibli@1.5", "ink-wash@0.8+0.4"} <= labels
    dataset = load_manifest(MANIFESTS / "dataset.yaml")
    assert all(j.caption for j in dataset.jobs()) and dataset.caption is True
    img = list(load_manifest(MANIFESTS / "img2img.yaml").jobs())
    assert all("image_url" in j.request and "strength" in j.request for j in img)
    assert sum("mask" in j.request for j in img) == 1


def test_schema_is_json_with_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "matrix" in schema["properties"]
    assert schema["properties"]["api_key_env"]["description"]
    assert schema["additionalProperties"] is False
    assert "MatrixSpec" in schema["$defs"]


def test_the_plan_pass_comes_in_steps_and_shows_every_job_to_an_observer(tmp_path: Path) -> None:
    from batchgen.manifest.plan import STEP, plan_steps

    m = load_manifest(write(tmp_path, f'prompt: "a {{n}}"\nmatrix:\n  n: {{from: 1, to: {2 * STEP + 5}}}\n'))
    seen = []
    steps = plan_steps(m, observe=seen.append)
    yielded = []
    while True:
        try:
            yielded.append(next(steps))
        except StopIteration as done:
            plan = done.value
            break
    # A caller on an event loop gets control back every STEP jobs (Ctrl-C lands there).
    assert yielded == [STEP, 2 * STEP] and plan.jobs == 2 * STEP + 5
    assert [j.index for j in seen] == list(range(plan.jobs))


def test_price_per_image_gives_the_cost_and_no_price_gives_none(tmp_path: Path) -> None:
    path = write(tmp_path, 'prompt: x\nprice_per_image: 0.0035\nmatrix:\n  seed: {from: 1, to: 40}\n')
    plan = plan_manifest(load_manifest(path))
    assert plan.cost_for(plan.jobs) == pytest.approx(0.14) and plan.to_json()["cost"] == pytest.approx(0.14)
    assert plan.cost_for(4) == pytest.approx(0.014)  # the new work of a resumed batch
    plain = plan_manifest(load_manifest(write(tmp_path, 'prompt: x\n')))
    assert plain.cost_for(1) is None and plain.to_json()["cost"] is None


def test_an_include_with_a_mask_and_no_image_url_is_reported_at_the_include(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        prompt: "a cat"
        matrix:
          seed: [1, 2]
        include:
          - {seed: 3}
          - {seed: 4, strength: 0.5}
        """)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)  # found when loading, before any job is expanded
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (6, "include.1.strength")


def test_plan_names_a_fixed_seed_repeated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, """\
        prompt: "a castle"
        seed: 5
        repeat: 3
        """)
    plan = plan_manifest(load_manifest(path))
    assert any("repeat: 3 with a fixed seed (seed 5" in w and "2 copies" in w for w in plan.warnings)
    assert main(["plan", str(path)]) == 0
    assert "warning     repeat: 3 with a fixed seed" in capsys.readouterr().out
    # a seed the provider picks makes a new image each time: nothing to say
    free = write(tmp_path, 'prompt: "a castle"\nrepeat: 3\n')
    assert not plan_manifest(load_manifest(free)).warnings


def test_plan_names_a_value_written_twice_on_an_axis(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        prompt: "a {style} castle"
        matrix:
          style: [oil, ink, oil]
          seed: [1, 2]
        """)
    plan = plan_manifest(load_manifest(path))
    assert plan.identical_cells == 2
    assert any("axis 'style' lists 'oil' more than once" in w for w in plan.warnings)


def test_plan_names_cells_that_ask_the_same_from_two_axes(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        prompt: "a castle"
        matrix:
          mood: [calm, grim]
          seed: [1, 2]
        """)
    plan = plan_manifest(load_manifest(path))  # mood is used by nothing: same requests
    assert any("ask exactly what an earlier cell asks (e.g. job 2, mood=grim, seed=1)" in w
               for w in plan.warnings)


@pytest.mark.parametrize("word", ["true", "yes", "False", "on"])
def test_a_quoted_boolean_caption_is_refused_at_its_line(tmp_path: Path, word: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f'prompt: "a castle"\ncaption: "{word}"\n')
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert "m.yaml:2" in str(caught.value) and "caption" in str(caught.value)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml:2" in err and "not a boolean" in err and "Traceback" not in err
    assert load_manifest(write(tmp_path, 'prompt: "a castle"\ncaption: "true to {prompt}"\n')).caption


def test_plan_shows_the_budget_and_the_order(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        prompt: "a {n} castle"
        price_per_image: 0.5
        max_cost: 2
        order: spread
        matrix:
          n: [1, 2, 3, 4, 5]
        """)
    text = render_plan(plan_manifest(load_manifest(path)))
    assert "cost        ~2.5 for 5 jobs" in text
    assert "budget      max_cost 2; a run stops at the budget before all of it (exit 5)" in text
    assert "order       spread" in text


def test_light_pass_counts_and_numbers_what_a_whole_pass_does(tmp_path: Path) -> None:
    """A pass that only counts (``light``) yields counts for most first copies, but the same
    problems, the same count, and Jobs with the same ids for the preview and every replica."""
    path = write(tmp_path, """
        prompt: "a {style} fox, seed {seed}"
        repeat: 2
        matrix:
          style: [oil, ink, oil]
          seed: {from: 1, to: 30}
        """)
    manifest = load_manifest(path)
    whole = list(manifest.expand())
    light = list(manifest.expand(light=3))
    counted = sum(item for item in light if type(item) is int)
    made = [item for item in light if type(item) is not int]
    assert len(made) + counted == len(whole) == 180
    assert light[:3] == whole[:3]
    assert {job.job_id for job in made} <= {job.job_id for job in whole}
    # every replica (the repeat copies and the second "oil" cells) is a whole Job
    assert sorted(j.job_id for j in made if j.replica) == sorted(j.job_id for j in whole if j.replica)
    assert counted == sum(1 for j in whole[3:] if not j.replica)
    plan = plan_manifest(manifest)
    assert (plan.jobs, plan.duplicates, plan.identical_cells) == (180, 120, 30)
    assert [j.job_id for j in plan.preview] == [j.job_id for j in whole[:5]]
