"""The CLI in-process: every command documented, usage errors exit 2, runs end with the right code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cli.main import _build_parser, main

ROOT = Path(__file__).resolve().parents[2]
SMALL = """\
name: small
prompt: "a {thing}"
size: "256*256"
output_format: png
concurrency: 4
matrix:
  thing: [cat, dog, owl]
"""


def sub_commands() -> dict:
    parser = _build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return action.choices


def test_every_command_is_documented_with_an_example(capsys) -> None:
    for name, parser in sub_commands().items():
        assert parser.description and "Example: batchgen" in parser.description, name
        assert main([name, "--help"]) == 0
        assert "Example:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["frobnicate"], ["run"], ["run", "m.yaml", "--concurrency", "0"], ["run", "m.yaml", "--concurrency", "x"],
    ["run", "m.yaml", "--max-jobs", "-1"], ["run", "m.yaml", "--rpm", "0"], ["collect", "m.yaml", "--max-jobs", "3"],
    ["status"], ["plan"], ["simulate", "--port", "nope"], ["run", "m.yaml", "--stop-after", "-1"],
    ["simulate", "--retry-after", "sometimes"],
])
def test_bad_usage_exits_2_with_usage_text(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


def test_a_missing_manifest_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path / "nope.yaml"), "--simulate"]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "Traceback" not in err


def test_run_without_a_key_says_which_variable_before_doing_anything(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("JIEKOU_API_KEY", raising=False)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(SMALL)
    assert main(["run", str(manifest), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "JIEKOU_API_KEY" in err and "--simulate" in err
    assert not (tmp_path / "out").exists()


def test_run_simulate_then_status(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(SMALL)
    out = str(tmp_path / "out")
    assert main(["run", str(manifest), "--simulate", "--output", out, "--quiet",
                 "--sim-task-seconds", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "3/3 images done" in text
    assert len(list(Path(out, "images").rglob("*.png"))) == 3
    assert main(["status", out, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["done"] == 3 and report["tasks_created"] == 3
    assert main(["status", out]) == 0
    assert "3/3 done" in capsys.readouterr().out


def test_the_demo_manifest_runs_on_the_simulator(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(["run", str(ROOT / "manifests" / "demo.yaml"), "--simulate", "--output", str(out),
                 "--quiet", "--sim-task-seconds", "0.05"])
    assert code == 0, capsys.readouterr()
    sidecars = list((out / "images").rglob("*.json"))
    assert sidecars and all(json.loads(p.read_text())["task_id"] for p in sidecars)


def test_grid_and_view_from_the_command_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(SMALL.replace("thing: [cat, dog, owl]", "thing: [cat, dog, owl]\n  seed: [2, 1]"))
    assert main(["run", "m.yaml", "--simulate", "--quiet", "--sim-task-seconds", "0.05"]) == 0
    capsys.readouterr()
    assert main(["grid", "m.yaml", "--to", "g.png", "--cell-size", "96"]) == 0
    out = capsys.readouterr().out
    assert "X seed (2), Y thing (3), pages none" in out and Path("g.png").is_file()
    assert main(["view", "output/small"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "output/small/view/index.html").as_uri() in out
    assert (tmp_path / "output/small/view/data.js").is_file()
    assert main(["grid", "m.yaml", "--to", "g.png", "--x", "colour"]) == 2
    assert "no axis 'colour'" in capsys.readouterr().err
    assert main(["grid", "m.yaml", "--to", "g.png", "--where", "seed"]) == 2  # usage: AXIS=VALUE


def test_a_glyph_warning_offers_a_command_that_works(tmp_path: Path, capsys, monkeypatch) -> None:
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font.is_file():
        pytest.skip(f"no TrueType font at {font} (Debian: apt-get install fonts-dejavu-core)")
    monkeypatch.chdir(tmp_path)
    Path("m.yaml").write_text(SMALL.replace("[cat, dog, owl]", "[chat, café]"))
    assert main(["run", "m.yaml", "--simulate", "--quiet", "--sim-task-seconds", "0.05"]) == 0
    capsys.readouterr()
    assert main(["grid", "m.yaml", "--to", "g.png"]) == 0
    out = capsys.readouterr().out
    hint = next(line for line in out.splitlines() if "no glyph for 'é'" in line)
    command = hint.split("With a font that has them: ", 1)[1]
    assert command == f"batchgen grid {tmp_path / 'm.yaml'} --to {tmp_path / 'g.png'} --font {font}"
    assert main(command.split()[1:]) == 0
    assert "no glyph" not in capsys.readouterr().out


def test_run_stopped_by_the_budget_exits_5_and_status_shows_the_spend(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text('name: b\nprompt: "a {n}"\nsize: "256*256"\nprice_per_image: 0.5\n'
                        'max_cost: 1\nmatrix:\n  n: [1, 2, 3, 4]\n')
    out = str(tmp_path / "out")
    args = ["run", str(manifest), "--simulate", "--output", out, "--sim-task-seconds", "0.05"]
    assert main(args) == 5
    text = capsys.readouterr().out
    assert "budget: spent 0 of max_cost 1 (0 task(s) at 0.5); 2 more image(s) fit" in text
    assert "stopped: stopped by the budget: spent 1 of max_cost 1" in text
    assert main(["status", str(manifest), "--output", out]) == 0
    assert "spent: 1 of max_cost 1" in capsys.readouterr().out
    assert main(["status", out, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["spent"], report["max_cost"], report["done"]) == (1.0, 1.0, 2)
    assert main([*args, "--max-cost", "2", "--quiet"]) == 0
