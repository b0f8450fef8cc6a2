"""A manifest someone else wrote is untrusted input (docs/security.md): whatever it holds, the
loader answers with located problems (exit 2, FILE:LINE:COL) in bounded time and memory, never
a traceback, and no request it plans costs more than the caps allow.

The Hypothesis tests feed random and mutated text to the loader: the only exception it may
raise is batchgen's own ManifestError.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.cli.main import main
from batchgen.errors import ManifestError
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest

LOCATED = re.compile(r"m\.yaml:\d+:\d+: ")


def refused(tmp_path: Path, text: str, capsys) -> str:
    """Plan ``text`` through the CLI: exit 2 with a located problem and no traceback."""
    path = tmp_path / "m.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    code = main(["plan", str(path)])
    said = capsys.readouterr()
    assert code == 2, said.out + said.err
    assert LOCATED.search(said.err), said.err
    assert "Traceback" not in said.err and len(said.err) < 5_000
    return said.err


@pytest.mark.parametrize(("where", "text"), [
    ("prompt", 'name: w\nprompt: "{v:>50000000}"\nmatrix:\n  v: [a]\n'),
    ("filename", 'name: w\nprompt: "x {v}"\nfilename: "{v:>50000000}"\nmatrix:\n  v: [a]\n'),
    ("precision", 'name: w\nprompt: "{v:.10000000000f}"\nmatrix:\n  v: [1.5]\n'),
])
def test_a_format_width_over_the_cap_is_refused_at_plan(tmp_path: Path, capsys, where: str, text: str) -> None:
    err = refused(tmp_path, text, capsys)
    assert "at most 1000" in err and where.replace("precision", "prompt") in err


def test_a_prompt_over_the_cap_is_refused_at_plan_written_or_rendered(tmp_path: Path, capsys) -> None:
    assert "at most 20,000" in refused(tmp_path, f'name: p\nprompt: "{"x" * 20_001}"\n', capsys)
    rendered = 'name: p\nprompt: "' + "{v:0>1000}" * 21 + '"\nmatrix:\n  v: [a]\n'
    assert "21,000 characters" in refused(tmp_path, rendered, capsys)


@pytest.mark.parametrize(("case", "text", "says"), [
    ("flow", "name: d\nprompt: hi\nx: " + "[" * 50_000 + "\n", "nested more than 64"),
    ("block", "name: d\nprompt: hi\nx:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(5_000)),
     "nested more than 64"),
    ("nul", 'name: d\nprompt: "hi\x00there"\n', "U+0000"),
    ("braces", 'name: d\nprompt: "{v}"\nmatrix:\n  v: {dynamic: "' + "{a|" * 2_000 + "b" + "}" * 2_000 + '"}\n',
     "nested more than 20 deep"),
])
def test_deep_nesting_and_nul_bytes_are_located_errors(tmp_path: Path, capsys, case: str, text: str,
                                                       says: str) -> None:
    if case == "braces":
        pytest.importorskip("dynamicprompts")
    assert says in refused(tmp_path, text, capsys)


def test_the_expansion_has_a_hard_ceiling_whatever_expansion_limit_says(tmp_path: Path, capsys) -> None:
    huge = 'name: big\nprompt: "p {a} {b}"\nmatrix:\n  a: {from: 1, to: 1000000}\n  b: {from: 1, to: 1000000}\n'
    err = refused(tmp_path, "expansion_limit: 1000000000000\n" + huge, capsys)
    assert "expansion_limit" in err and "1e+07" in err   # the limit itself is capped
    err = refused(tmp_path, huge, capsys)
    assert "ceiling of 10,000,000 jobs" in err and "set expansion_limit" not in err


# -- fuzzing ----------------------------------------------------------------------------------

SEED = ('name: fuzz\nprompt: "a {style} photo of {n}"\nsize: "512*512"\nseed: 7\n'
        'caption: "{style}"\nmatrix:\n  style: [oil, ink]\n  n: {from: 1, to: 3}\n'
        'include:\n  - {style: ink, n: 9}\nexclude:\n  - {style: oil, n: 2}\n')
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def _load(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(data)
    try:
        plan_manifest(load_manifest(path))  # a problem found only when a job renders is planning's
    except ManifestError as exc:
        assert exc.problems and all(p.file for p in exc.problems)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_random_text_is_a_manifest_or_a_manifest_error(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED)), st.integers(0, 40),
                          st.sampled_from(["", "{", "}", "[", "]", ":", "\n", "  ", "- ", "*a", "&a ",
                                           "!!python/object ", "\x00", "{v:>9}", "1e999", "'", '"',
                                           "<<: ", "\t", "%", "|", ">"])),
                max_size=6))
def test_mutated_manifests_are_a_manifest_or_a_manifest_error(tmp_path: Path, edits) -> None:
    text = SEED
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    _load(tmp_path, text.encode("utf-8", "surrogatepass"))
