"""Fuzzing the export folder's own files: any state file or swap journal, however mangled,
is read without an exception and never names a file outside the export folder."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.export.stage import finish_swap
from batchgen.export.state import ExportState, batchgen_names

NAMES = st.one_of(
    st.sampled_from(["train-000000.tar", "data/train-00000-of-00001.parquet", "train/0000",
                     "train/metadata.jsonl", "../x", "/etc", "../../outside", "train/../../x",
                     "train-000000.tar/..", "", ".", "a\\b", "__stats__/train-000000_stats.json"]),
    st.text(max_size=20))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | NAMES,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["format", "split", "where", "columns", "units",
                                                       "files", "digest", "rows", "extra",
                                                       "features", "moves", "removes", "name"]),
                                      inner, max_size=6),
                    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_any_state_file_decodes_or_is_none_and_names_only_batchgen_files(data) -> None:
    allowed = batchgen_names("train")
    state = ExportState.decode(json.dumps(data).encode(), allowed)
    if state is not None:
        assert all(allowed(name) and ".." not in name.split("/") and not name.startswith("/")
                   for name in state.files())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(NAMES, max_size=5), removes=st.lists(NAMES, max_size=5))
def test_any_swap_journal_leaves_everything_outside_alone(tmp_path: Path, moves, removes) -> None:
    root = tmp_path / "a" / "export"
    outside = tmp_path / "a" / "x"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "keep").write_text("keep")
    (tmp_path / "outside").write_text("keep")
    root.mkdir(parents=True, exist_ok=True)
    (root / ".batchgen-swap-train.json").write_text(json.dumps({"moves": moves, "removes": removes}))
    finish_swap(root, "train", batchgen_names("train"))
    assert (outside / "keep").read_text() == "keep" and (tmp_path / "outside").read_text() == "keep"
    assert not (root / ".batchgen-swap-train.json").exists()
