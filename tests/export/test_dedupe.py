"""``export --dedupe exact|near``: duplicates dropped, the first of each group in the
manifest's order kept, and the report counts and names what was dropped."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from batchgen.cli import main
from batchgen.errors import UsageError
from batchgen.export import ExportFormat, ExportOptions, export_batch
from exportkit import load_offline, make_folder, tiny_png


def picture(seed: int, brighter: int = 0) -> bytes:
    """A 64x64 picture of smooth random shapes (the seed picks them), optionally made a few
    levels brighter: other bytes, the same picture to the eye."""
    rng = random.Random(seed)
    small = Image.new("RGB", (8, 8))
    small.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    img = small.resize((64, 64), Image.Resampling.BICUBIC)
    if brighter:
        img = img.point(lambda v: min(255, v + brighter))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_exact_keeps_the_first_in_manifest_order_whatever_finished_first(tmp_path: Path,
                                                                          capsys) -> None:
    folder = tmp_path / "batch"
    later = make_folder(folder, 3, start=3, image=lambda i: tiny_png(i % 3))  # finished first
    first = make_folder(folder, 3, start=0, image=lambda i: tiny_png(i % 3))
    to = tmp_path / "pq"
    assert main(["export", str(folder), "--format", "parquet", "--to", str(to), "--dedupe",
                 "exact", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "exported 3 image(s)" in out and "dropped 3 duplicate image(s) (exact" in out
    assert f"job {later[0]}: " in out and f"(same as job {first[0]})" in out
    ds = load_offline("parquet", to, tmp_path / "hf")["train"]
    assert sorted(ds["job_id"]) == sorted(first)
    assert "3 duplicate image(s) (the same bytes as an earlier one) were dropped by `--dedupe exact`" \
        in (to / "README.md").read_text()


def test_near_drops_the_same_picture_saved_again_and_keeps_different_ones(tmp_path: Path) -> None:
    pytest.importorskip("imagehash")
    folder = tmp_path / "batch"
    pictures = [picture(0), picture(1), picture(0, brighter=3), picture(1, brighter=5),
                picture(0, brighter=8), picture(2)]
    ids = make_folder(folder, 6, image=lambda i: pictures[i])
    exact = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "e",
                                               dedupe="exact"))
    assert exact.exported == 6 and exact.duplicates == []  # every file's bytes differ
    near = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "n",
                                              dedupe="near"))
    assert near.exported == 3
    assert {(d.job_id, d.same_as) for d in near.duplicates} == {
        (ids[2], ids[0]), (ids[3], ids[1]), (ids[4], ids[0])}
    assert all(d.distance <= 4 for d in near.duplicates)
    strict = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "s",
                                                dedupe="near", dedupe_distance=0))
    assert strict.exported >= near.exported


def test_changing_the_dedupe_rewrites_and_a_bad_distance_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 4, image=lambda i: tiny_png(i % 2))
    to = tmp_path / "w"
    assert export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to)).exported == 4
    again = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, dedupe="exact"))
    assert again.exported == 2 and again.rewrote_all
    with pytest.raises(UsageError, match="dedupe-distance"):
        export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, dedupe="near",
                                           dedupe_distance=40))
