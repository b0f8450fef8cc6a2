"""The dynamic-prompt axis: counts, reproducibility, weights, wildcards, bad syntax at its line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest


def write(folder: Path, text: str, wildcards: dict[str, str] | None = None) -> Path:
    for name, content in (wildcards or {}).items():
        path = folder / "wildcards" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def prompts(path: Path) -> list[str]:
    return [job.request["prompt"] for job in load_manifest(path).jobs()]


def test_every_combination_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a {red|blue|green} {car|bike}"}
        """)
    got = prompts(path)
    assert len(got) == 6 and len(set(got)) == 6
    assert set(got) == {f"a {c} {t}" for c in ("red", "blue", "green") for t in ("car", "bike")}
    assert plan_manifest(load_manifest(path)).jobs == 6


def test_random_n_is_n_prompts_times_the_other_axes(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a {red|blue|green|teal} {car|bike|boat|kite|bus|van}", random: 20, base: 7}
          seed: [1, 2, 3]
        """)
    m = load_manifest(path)
    assert m.axes[0].size == 20 and plan_manifest(m).jobs == 60
    got = prompts(path)
    assert len(got) == 60 and set(got) <= {f"a {c} {t}" for c in ("red", "blue", "green", "teal")
                                            for t in ("car", "bike", "boat", "kite", "bus", "van")}
    assert got[0::3] == got[1::3] == got[2::3]  # the inner seed axis repeats each prompt
    assert len(set(got[0::3])) == 20  # random draws are different prompts: no request twice


def test_the_same_base_gives_the_same_prompts_and_another_base_others(tmp_path: Path) -> None:
    text = 'matrix:\n  prompt: {dynamic: "{a|b|c|d|e|f} {g|h|i|j|k|l} {m|n|o|p}", random: 30, base: %d}\n'
    first = prompts(write(tmp_path, text % 1))
    assert prompts(write(tmp_path, text % 1)) == first
    assert prompts(write(tmp_path, text % 2)) != first


def test_the_prompts_are_the_same_in_another_process(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a {2::red|blue} {car|bike} in __colours__", random: 10, base: 11}
        """, {"colours.txt": "crimson\nteal\nolive\n"})
    code = ("import sys; from batchgen.manifest import load_manifest; "
            "print('\\n'.join(j.request['prompt'] for j in load_manifest(sys.argv[1]).jobs()))")
    outs = [subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")]
    assert outs[0] == outs[1] == "\n".join(prompts(path)) + "\n"


def test_weights_skew_the_draws(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "{9::common|rare} {1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|18|19|20}", random: 20}
        """)
    counts = Counter(p.split()[0] for p in prompts(path))
    assert counts["common"] > 3 * counts["rare"]


def test_wildcards_come_from_files_next_to_the_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a __colours__ __animals/birds__"}
        """, {"colours.txt": "crimson\nteal\n", "animals/birds.txt": "owl\nheron\n# a comment\n"})
    assert sorted(prompts(path)) == sorted(f"a {c} {b}" for c in ("crimson", "teal")
                                           for b in ("owl", "heron"))


def test_another_wildcard_folder_can_be_named(tmp_path: Path) -> None:
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "mood.txt").write_text("calm\nstormy\n")
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a __mood__ sea", wildcards: words}
        """)
    assert sorted(prompts(path)) == ["a calm sea", "a stormy sea"]


def test_a_variable_axis_records_its_template_and_the_prompt_axis_its_template(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        prompt: "a photo of {thing} at dusk"
        matrix:
          thing: {dynamic: "a {red|blue} car"}
        """)
    jobs = list(load_manifest(path).jobs())
    assert jobs[0].request["prompt"] == "a photo of a red car at dusk"
    assert jobs[0].axes == {"thing": "a red car", "thing_template": "a {red|blue} car"}
    path = write(tmp_path, 'matrix:\n  prompt: {dynamic: "a {red|blue} car"}\n')
    (job, _) = load_manifest(path).jobs()
    assert job.axes == {"prompt": "a {red|blue} car"} and job.request["prompt"] == "a red car"


def test_bad_syntax_is_reported_at_its_line_and_plan_exits_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, """\
        name: broken
        matrix:
          seed: [1, 2]
          prompt: {dynamic: "a {red|blue car", random: 4}
        """)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 4, "matrix.prompt.dynamic")
    assert "a '{' is never closed" in problem.message
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4:" in err and "Traceback" not in err


def test_a_missing_wildcard_file_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt:
            dynamic: "a __colors__ car"
        """, {"colours.txt": "teal\n"})
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    (problem,) = info.value.problems
    assert problem.line == 3 and "put colors.txt" in problem.message


def test_too_many_combinations_ask_for_random_draws(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        expansion_limit: 50
        matrix:
          prompt: {dynamic: "{a|b|c|d|e|f|g|h} {a|b|c|d|e|f|g|h}"}
        """)
    with pytest.raises(ManifestError, match="more than expansion_limit .50. combinations; draw some "
                                            "with random: N"):
        load_manifest(path)


def test_a_big_random_axis_is_generated_lazily(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "{0|1|2|3|4|5|6|7|8|9}{0|1|2|3|4|5|6|7|8|9}{0|1|2|3|4|5|6|7|8|9}{0|1|2|3|4|5|6|7|8|9}{0|1|2|3|4|5|6|7|8|9}{0|1|2|3|4|5|6|7|8|9}", random: 200000}
        """)
    m = load_manifest(path)  # loading draws nothing: the size is what was asked
    assert m.size == 200000
    first = [j.request["prompt"] for _, j in zip(range(5), m.jobs())]
    assert len(first) == 5


def test_asking_for_more_random_prompts_than_the_template_makes_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "a {red|blue} {car|bike}", random: 5}
        """)
    with pytest.raises(ManifestError, match="makes only 4 different prompts; ask for random: 4"):
        load_manifest(path)


def test_a_template_too_small_to_tell_at_load_is_reported_by_plan(tmp_path: Path, capsys) -> None:
    # Two picks of three ({2$$...}) cannot be counted from the template's shape: the draws
    # run dry while planning, and plan says so at the template's line.
    path = write(tmp_path, """\
        matrix:
          prompt: {dynamic: "{2$$a|b|c}", random: 50}
        """)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "different prompts could be drawn of the 50 asked for" in err
