"""``order: spread``: every prefix samples each axis evenly; the same jobs (ids, indexes, file
names) as written order; stable; lazy."""

from __future__ import annotations

import itertools
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.errors import ManifestError
from batchgen.manifest import load_manifest
from batchgen.manifest.order import _sheared


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SWEEP = """\
name: s
prompt: "a {style} {subject}"
filename: "{style}/{subject}-{seed}-{index}"
order: spread
repeat: 2
matrix:
  style: [oil, ink, pencil]
  subject: [fox, owl, cat, dog]
  seed: [1, 2]
exclude:
  - {style: ink, subject: owl}
include:
  - {style: chalk, subject: bee, seed: 9}
"""


@given(st.lists(st.integers(1, 7), min_size=1, max_size=4))
@settings(max_examples=100, deadline=None)
def test_every_prefix_uses_each_axis_value_evenly_and_every_cell_once(sizes: list[int]) -> None:
    seq = [tuple(d) for d in _sheared(sizes)]
    assert sorted(seq) == sorted(itertools.product(*(range(n) for n in sizes)))
    for axis, n in enumerate(sizes):
        counts = [0] * n
        for digits in seq:
            counts[digits[axis]] += 1
            assert max(counts) - min(counts) <= 1


def test_spread_keeps_every_jobs_id_index_and_name(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, SWEEP))
    written = {j.job_id: (j.index, j.name, j.replica, j.request["prompt"]) for j in m.jobs()}
    spread = list(m.submit_order())
    assert len(spread) == len(written) == (3 * 4 * 2 - 2 + 1) * 2
    assert {j.job_id: (j.index, j.name, j.replica, j.request["prompt"]) for j in spread} == written
    assert [j.job_id for j in spread] != [j.job_id for j in m.jobs()]
    # stable: the same manifest, the same order
    again = load_manifest(write(tmp_path, SWEEP, "copy.yaml"))
    assert [j.job_id for j in again.submit_order()] == [j.job_id for j in spread]
    # every cell once before any cell twice
    assert {j.replica for j in spread[:23]} == {0} and {j.replica for j in spread[23:]} == {1}


def test_a_prefix_of_spread_covers_every_value_of_every_axis(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, SWEEP.replace("repeat: 2\n", "").replace(
        "exclude:\n  - {style: ink, subject: owl}\ninclude:\n  - {style: chalk, subject: bee, seed: 9}\n", "")))
    first = list(itertools.islice(m.submit_order(), 4))
    assert {j.axes["subject"] for j in first} == {"fox", "owl", "cat", "dog"}
    assert {j.axes["style"] for j in first} == {"oil", "ink", "pencil"}
    assert Counter(j.axes["seed"] for j in first) == {1: 2, 2: 2}
    written = list(itertools.islice(m.jobs(), 4))  # the first corner
    assert {j.axes["style"] for j in written} == {"oil"}


def test_written_is_the_default_and_other_orders_are_refused(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, SWEEP.replace("order: spread\n", "")))
    assert m.order == "written"
    assert [j.job_id for j in m.submit_order()] == [j.job_id for j in m.jobs()]
    with pytest.raises(ManifestError) as caught:
        load_manifest(write(tmp_path, SWEEP.replace("order: spread", "order: random"), "bad.yaml"))
    assert "bad.yaml:4" in str(caught.value) and "order" in str(caught.value)


def test_spread_is_lazy_a_million_jobs_are_not_held(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, 'prompt: "x {a} {b}"\norder: spread\nmatrix:\n'
                                      '  a: {from: 1, to: 1000}\n  b: {from: 1, to: 1000}\n'))
    assert m.size == 1_000_000
    tracemalloc.start()
    try:
        first = list(itertools.islice(m.submit_order(), 2000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len({j.request["prompt"] for j in first}) == 2000
    assert {j.axes["a"] for j in first[:1000]} == set(range(1, 1001))
    assert peak < 20_000_000  # the axes' 2,000 values and 2,000 jobs, not a million
