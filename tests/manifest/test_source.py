"""YAML loading with positions: what plain PyYAML lets slip must be refused, with a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest.source import load_yaml, parse_yaml


def _problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_yaml(text, "m.yaml")
    return [str(p) for p in info.value.problems]


def test_positions_of_keys_and_values_are_one_based() -> None:
    src = parse_yaml("prompt: a cat\nmatrix:\n  seed: [1, 22]\n", "m.yaml")
    assert src.data == {"prompt": "a cat", "matrix": {"seed": [1, 22]}}
    assert src.values[("prompt",)] == (1, 9)
    assert src.keys[("matrix", "seed")] == (3, 3)
    assert src.values[("matrix", "seed", 1)] == (3, 13)


def test_where_falls_back_to_the_nearest_enclosing_value() -> None:
    src = parse_yaml("matrix:\n  seed: {from: 1}\n", "m.yaml")
    assert src.where(("matrix", "seed", "to")) == src.values[("matrix", "seed")]
    assert src.problem(("matrix", "seed", "to"), "missing").line == 2


def test_duplicate_key_is_refused_naming_both_lines() -> None:
    (msg,) = _problems("seed: 1\nprompt: x\nseed: 2\n")
    assert msg.startswith("m.yaml:3:1: seed: duplicate key 'seed' (first at line 1)")


def test_duplicate_keys_in_nested_mappings_are_all_reported() -> None:
    msgs = _problems("a: {x: 1, x: 2}\nb:\n  - y: 1\n    y: 2\n")
    assert [m.split(":")[1] for m in msgs] == ["1", "4"]


def test_keys_stay_text_and_dates_stay_text() -> None:
    src = parse_yaml("on: yes\n1: 2024-01-01\nflag: no\n", "m.yaml")
    assert src.data == {"on": True, "1": "2024-01-01", "flag": False}


def test_not_utf8_names_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"prompt: ok\nseed: 1\nname: caf\xe9\n")
    with pytest.raises(ManifestError) as info:
        load_yaml(path, "m.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (3, 10)
    assert "0xE9" in problem.message and "UTF-8" in problem.message


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\xef\xbb\xbfprompt: caf\xc3\xa9\n")
    assert load_yaml(path).data == {"prompt": "café"}


def test_merge_keys_fill_in_and_explicit_keys_win() -> None:
    src = parse_yaml("base: &b {seed: 1, size: s}\nitem:\n  <<: *b\n  seed: 2\n", "m.yaml")
    assert src.data["item"] == {"seed": 2, "size": "s"}
    assert src.values[("item", "seed")] == (4, 9)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_documents_are_refused(text: str) -> None:
    (msg,) = _problems(text)
    assert msg.startswith("m.yaml:1:1:") and "empty" in msg


def test_syntax_error_carries_the_mark() -> None:
    (msg,) = _problems("prompt: x\nmatrix:\n  seed: [1, 2\n  size: [a]\n")
    assert msg.startswith("m.yaml:4:7: YAML syntax error")


def test_alias_bomb_is_stopped() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    (msg,) = _problems("\n".join(lines) + "\n")
    assert "alias bomb" in msg


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_yaml(tmp_path / "nope.yaml")
