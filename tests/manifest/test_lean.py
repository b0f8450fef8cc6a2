"""The counting pass (``plan``, a run's validating pass) takes the innermost axis value by
value (manifest/lean.py): it must count, number and tell apart exactly the jobs a whole pass
makes, hash the same bytes for each, and make the same Jobs and Problems where it makes any."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from batchgen.errors import ManifestError, Problem
from batchgen.job import Job
from batchgen.manifest.lean import CHUNK
from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest
from test_id_pins import PINS


class _Recorded(set):  # type: ignore[type-arg]
    """A pass's set of request keys that also keeps the order they were added in."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[bytes] = []

    def add(self, key: bytes) -> None:
        self.order.append(key)
        super().add(key)


def _write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _same_pass(path: Path, light: int) -> int:
    """Checks the counting pass against the whole pass of the manifest at ``path``; returns
    how many items the counting pass yielded."""
    expansion = load_manifest(path).expansion
    whole = list(expansion.iter_jobs())
    keys = _Recorded()
    lean = list(expansion.iter_jobs(light=light, seen=keys))
    expected: list[Job | Problem | str] = []
    made = 0
    for item in whole:
        if isinstance(item, Problem):
            expected.append(item)
        elif made < light or item.replica:
            expected.append(item)
            made += 1
        else:
            expected.append("counted")
    got: list[Job | Problem | str] = []
    for item in lean:
        got.extend(["counted"] * item if type(item) is int else [item])
    assert got == expected
    # the same requests, hashed to the same keys, in the same order
    firsts = [bytes.fromhex(j.job_id) for j in whole if isinstance(j, Job) and not j.replica]
    assert keys.order == firsts
    return len(lean)


_TEXT = st.sampled_from(["oil", 'a "quoted" word', "back\\slash", "水彩", "{x}", "tab\there",
                         "", " ", "12", "line\nbreak"])
_INNER = st.one_of(
    st.builds(lambda a, n, s: ("seed", {"from": a, "to": a + (n - 1) * s, "step": s}),
              st.integers(-1, 4), st.integers(1, 7), st.integers(1, 3)),
    st.builds(lambda n, b: ("seed", {"random": n, "base": b}), st.integers(1, 6), st.integers(0, 9)),
    st.builds(lambda v: ("seed", v), st.lists(st.integers(-1, 4), min_size=1, max_size=6)),
    st.builds(lambda a, n, s: ("n", {"from": a, "to": a + (n - 1) * s, "step": s}),
              st.sampled_from([-3, 0, 7, 10**12]), st.integers(1, 6), st.sampled_from([1, 2, 5])),
    st.just(("n", {"from": 0.1, "to": 0.5, "step": 0.1})),
    st.builds(lambda v: ("n", v), st.lists(st.one_of(st.integers(-5, 5), _TEXT, st.booleans(),
                                                      st.sampled_from([0.5, 1e-7])),
                                            min_size=1, max_size=5)),
    st.builds(lambda v: ("size", v), st.lists(st.sampled_from(["1024*1024", "768*1344"]),
                                              min_size=1, max_size=3)),
)
_SPECS = st.sampled_from(["", "", "", "!r", ":>4", ":03d", "!s"])


@st.composite
def _manifests(draw: st.DrawFn) -> dict[str, Any]:
    inner, values = draw(_INNER)
    outer = draw(st.lists(_TEXT, min_size=1, max_size=3)) if draw(st.booleans()) else None
    names = (["a"] if outer else []) + [inner, "seed"] * draw(st.booleans())
    pieces = draw(st.lists(st.one_of(_TEXT.map(lambda t: t.replace("{", "{{").replace("}", "}}")),
                                     st.builds(lambda n, s: "{" + n + s + "}",
                                               st.sampled_from(names or ["size"]) if names
                                               else st.just("size"), _SPECS)),
                           min_size=1, max_size=5))
    if inner != "seed" and draw(st.booleans()):
        pieces.append("{" + inner + "}")
    data: dict[str, Any] = {"prompt": "".join(pieces) or "x", "expansion_limit": 100000}
    if draw(st.booleans()):
        data["model"] = "z-image-turbo"
    elif draw(st.booleans()):
        data["loras"] = [{"path": "https://example.com/l/a.safetensors",
                          "scale": draw(st.sampled_from([0.5, 1, 0.00001]))}]
    if inner != "seed" and draw(st.booleans()):
        data["seed"] = draw(st.integers(-1, 3))
    matrix: dict[str, Any] = {}
    if outer:
        matrix["a"] = outer
    matrix[inner] = values
    data["matrix"] = matrix
    if outer and draw(st.booleans()):
        data["include"] = [{"a": outer[0], inner: "768*1344" if inner == "size" else 2}]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_manifests(), st.integers(0, 4))
def test_the_counting_pass_matches_a_whole_pass(data: dict[str, Any], light: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _write(Path(tmp), data)
            load_manifest(path)
        except ManifestError:
            return  # a manifest the loader refuses has no pass to compare
        _same_pass(path, light)


def test_counting_a_seed_range_makes_no_job_past_the_preview(tmp_path: Path) -> None:
    """10 styles x 3,000 seeds: five Jobs, then counts of up to CHUNK jobs (not one item a
    job), and the same ids a whole pass gives."""
    styles = ["oil", "ink", "pastel", "charcoal", "fresco", "gouache", "pencil", "tempera",
              "acrylic", "pixel"]
    path = _write(tmp_path, {"prompt": "a {style} painting of a lighthouse, seed {seed}",
                             "matrix": {"style": styles, "seed": {"from": 1, "to": 3000}}})
    items = _same_pass(path, 5)
    assert items <= 5 + 10 * (3000 // CHUNK + 2)
    assert plan_manifest(load_manifest(path)).jobs == 30000


def test_a_slice_that_ends_in_a_replica_does_not_end_the_count(tmp_path: Path) -> None:
    """The counting pass takes the axis CHUNK values at a time: a slice whose last value
    repeats an earlier one counts nothing after it, and the values past it still count."""
    seeds = [*range(1, CHUNK + 1), 5, *range(10**6, 10**6 + 50)]   # CHUNK + 1: after the preview's one
    path = _write(tmp_path, {"prompt": "a fox {seed}", "expansion_limit": 100000,
                             "matrix": {"seed": seeds}})
    _same_pass(path, 1)
    assert plan_manifest(load_manifest(path)).jobs == len(seeds)


def test_counting_keeps_replicas_problems_and_includes_in_order(tmp_path: Path) -> None:
    """Repeated seeds are replicas (whole Jobs) in the middle of a counted run; a value the
    prompt cannot take is a Problem at its place; include cells come last."""
    path = _write(tmp_path, {"prompt": "a {style} cat {n:03d}",
                             "matrix": {"style": ["oil", "ink"], "n": [1, 2, 1, "x", 3]},
                             "include": [{"style": "pastel", "n": 4}]})
    _same_pass(path, 1)
    path = _write(tmp_path, {"prompt": "a {style} cat",
                             "matrix": {"style": ["oil", "ink"], "seed": [5, 6, 5, 7]},
                             "include": [{"style": "oil", "seed": 6}]})
    _same_pass(path, 0)
    plan = plan_manifest(load_manifest(path))
    assert (plan.jobs, plan.duplicates) == (9, 3)


@pytest.mark.parametrize("name", list(PINS))
def test_the_counting_pass_hashes_the_pinned_ids(tmp_path: Path, name: str) -> None:
    """The manifests whose ids are pinned (test_id_pins.py), counted: the same keys, in the
    same order, as the whole pass that the pins hold."""
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(PINS[name][0]), encoding="utf-8")
    _same_pass(path, 2)
