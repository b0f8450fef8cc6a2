"""The viewer's files, without a browser: one data file, relative image paths, no network."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from batchgen.storage.live import read_status
from batchgen.view.viewer import make_viewer
from viewkit import LORAS, run_sweep


def data_of(folder: Path) -> dict:
    text = (folder / "data.js").read_text()
    assert text.startswith("window.BATCHGEN_VIEW = ") and text.endswith(";\n")
    return json.loads(text[len("window.BATCHGEN_VIEW = "):-2])


def test_one_data_file_with_every_cell_and_shared_strings_once(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    result = make_viewer(batch.manifest)
    data = data_of(result.folder)
    assert result.folder == batch.folder / "view" and sorted(os.listdir(result.folder)) == ["data.js", "index.html"]
    assert [a["name"] for a in data["axes"]] == ["subject", "style", "loras"] and data["axes"][2]["values"] == LORAS
    assert len(data["cells"]) == 29 and data["batch_path"] == ".."
    assert len(data["strings"]) == 6  # one prompt per subject and style, however many cells share it
    done = [c for c in data["cells"] if c["s"] == "d"]
    assert all((result.folder / data["batch_path"] / c["f"]).is_file() for c in done)
    assert all(c["t"] and c["su"] is not None and len(c["tm"]) == 5 for c in done)
    failed = [c for c in data["cells"] if c["s"] == "f"]
    assert len(failed) == 10 and all(c["lb"] == "ILLEGAL_PROMPT" for c in failed)
    assert data["defaults"] == {"x": 2, "y": 1, "super": [0]}
    assert read_status(batch.folder)["running"] is False  # the run's own status file, kept


def test_a_viewer_elsewhere_finds_the_batch_by_a_relative_path(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    from batchgen.view.viewer import ViewOptions

    result = make_viewer(batch.folder, ViewOptions(to=tmp_path / "share" / "sweep"))
    data = data_of(result.folder)
    assert data["batch_path"] == "../../out" and not data["from_manifest"]
    assert str(tmp_path / "share" / "sweep") in data["command"]


def test_the_page_asks_for_nothing_outside_its_folders(tmp_path: Path) -> None:
    batch = run_sweep(tmp_path)
    page = make_viewer(batch.manifest).index.read_text()
    assert not re.search(r"https?://", page)  # no CDN, no font service, no analytics
    assert "default-src 'none'" in page and "connect-src 'none'" in page
