"""The provider's NSFW flags (``images[].nsfw_detection_result``) are kept: parsed leniently
from the task result, recorded in the sidecar, exported as typed columns, and ``--where`` can
filter on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.export import ExportFormat, ExportOptions, export_batch
from batchgen.provider.wire import parse_task_result
from batchgen.storage.sidecar import Sidecar
from exportkit import load_offline, run_sweep, sidecars

SEEDS = """\
name: flags
prompt: "a red castle"
size: "256*256"
output_format: png
matrix:
  seed: [1, 2, 3, 4, 5, 6, 7, 8]
"""


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return run_sweep(tmp_path_factory.mktemp("flags"), SEEDS, nsfw_detection=True)


def test_the_sidecar_records_the_providers_flags(flagged) -> None:
    _, folder = flagged
    got = {side["request"]["seed"]: side["nsfw"] for side in sidecars(folder).values()}
    assert got[4] == {"valid": True, "confidence": 0.54} and got[8]["valid"] is True
    assert got[1] == {"valid": False, "confidence": 0.01}
    assert sum(1 for v in got.values() if v["valid"]) == 2


def test_nsfw_columns_load_typed_and_where_filters_on_them(flagged, tmp_path: Path) -> None:
    manifest, _ = flagged
    report = export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "all"))
    assert report.exported == 8
    import pyarrow.parquet as pq  # loaded by the tests that read Parquet, not at collection

    table = pq.read_table(next((tmp_path / "all" / "data").glob("*.parquet")))
    assert str(table.schema.field("nsfw_valid").type) == "bool"
    assert str(table.schema.field("nsfw_confidence").type) == "double"
    clean = export_batch(manifest, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "clean",
                                                 where=["nsfw_valid=false"]))
    assert clean.exported == 6 and clean.filtered_out == 2
    ds = load_offline("imagefolder", tmp_path / "clean", tmp_path / "hf")["train"]
    assert ds["nsfw_valid"] == [False] * 6 and all(c < 0.5 for c in ds["nsfw_confidence"])


def test_a_batch_without_flags_has_no_nsfw_columns(tmp_path: Path) -> None:
    manifest, _ = run_sweep(tmp_path / "plain", SEEDS)
    report = export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"))
    import pyarrow.parquet as pq

    names = pq.read_schema(next((tmp_path / "pq" / "data").glob("*.parquet"))).names
    assert report.exported == 8 and "nsfw_valid" not in names


@pytest.mark.parametrize(("given", "kept"), [
    ({}, None), (None, None), ("yes", None), ([1], None),
    ({"valid": True, "confidence": 0.9}, {"valid": True, "confidence": 0.9}),
    ({"valid": "true", "confidence": "0.2"}, {"confidence": 0.2}),
    ({"valid": False, "confidence": 7, "extra": "x" * 100}, {"valid": False}),
    ({"confidence": True}, None),
])
def test_the_task_result_keeps_only_well_typed_flags(given, kept) -> None:
    result = parse_task_result({"task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
                                "images": [{"image_url": "https://x/y.png",
                                            "nsfw_detection_result": given}]})
    assert result.images[0].nsfw_detection_result == kept


def test_a_sidecar_reads_back_its_flags_and_ignores_junk() -> None:
    base = json.loads(Sidecar.decode(json.dumps({
        "job_id": "j", "image": {"format": "png"}, "nsfw": {"valid": True, "confidence": 1}}).encode())
        .encode())
    assert base["nsfw"] == {"valid": True, "confidence": 1.0}
    junk = Sidecar.decode(json.dumps({"job_id": "j", "image": {}, "nsfw": ["x"]}).encode())
    assert junk.nsfw is None and "nsfw" not in junk.to_json()
