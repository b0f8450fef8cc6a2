"""``export`` of a batch in an object store (a real S3 API server, SeaweedFS on loopback):
each format loads back with ``datasets`` (and ``webdataset``) as an export of the same batch
from its local folder does, the image bytes equal by sha256; an object changed in the store
is left out, not exported; exporting again downloads nothing that did not change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchgen.cli import main
from batchgen.export import ExportFormat, ExportOptions, Omission, export_batch
from cluster.s3server import S3Server
from exportkit import image_bytes, load_offline, run_sweep, wds_samples
from uploadkit import upload_batch


@pytest.fixture(scope="module")
def stored(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The sweep run into a local folder, then uploaded as a run writing to s3:// leaves it."""
    _, folder = run_sweep(tmp_path_factory.mktemp("sweep"))
    url = s3_server.url(f"export-{tmp_path_factory.getbasetemp().name}")
    upload_batch(s3_server, folder, url)
    return folder, url


def hashes(rows: list[dict]) -> dict[str, str]:
    return {row["job_id"]: row["sha256"] for row in rows}


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_each_format_exports_from_the_store_and_loads_back(
        stored, fmt: ExportFormat, s3_env: dict[str, str], tmp_path: Path) -> None:
    folder, url = stored
    remote = export_batch(url, ExportOptions(fmt, tmp_path / "remote"))
    local = export_batch(folder, ExportOptions(fmt, tmp_path / "local"))
    assert remote.exported == local.exported == 6 and remote.not_done == {"failed": 3}
    assert remote.folder == url and remote.downloaded == 6 and not remote.problems
    originals = {job: hashlib.sha256(data).hexdigest() for job, data in image_bytes(folder).items()}

    kind = fmt.value
    ds = load_offline(kind, tmp_path / "remote", tmp_path / "hf")["train"]
    assert ds.num_rows == 6
    from datasets import Image as HFImage

    rows = list(ds.cast_column("image" if fmt is not ExportFormat.WEBDATASET else "png",
                               HFImage(decode=False)))
    if fmt is ExportFormat.WEBDATASET:
        got = {json.loads(r["json"]["sidecar"])["job_id"]: hashlib.sha256(r["png"]["bytes"]).hexdigest()
               for r in rows}
        samples = [s for tar in sorted((tmp_path / "remote").glob("train-*.tar"))
                   for s in wds_samples(tar)]
        assert {s["__key__"].rsplit("/", 1)[-1]: hashlib.sha256(s["png"]).hexdigest()
                for s in samples} == originals
    else:
        def data(r: dict) -> bytes:
            image = r["image"]
            return image["bytes"] if image.get("bytes") else Path(image["path"]).read_bytes()

        got = {r["job_id"]: hashlib.sha256(data(r)).hexdigest() for r in rows}
        assert hashes(rows) == originals
    assert got == originals
    if fmt is not ExportFormat.WEBDATASET:  # the same rows as the local folder's export
        again = load_offline(kind, tmp_path / "local", tmp_path / "hf2")["train"]
        assert sorted(again["job_id"]) == sorted(ds["job_id"])

    before = remote.downloaded
    repeat = export_batch(url, ExportOptions(fmt, tmp_path / "remote"))
    assert (repeat.kept, repeat.written, repeat.downloaded) == (1, 0, 0) and before == 6


@pytest.mark.slow
def test_an_image_changed_in_the_store_is_left_out(s3_server: S3Server, s3_url: str,
                                                   tmp_path: Path, capsys) -> None:
    _, folder = run_sweep(tmp_path / "sweep")
    upload_batch(s3_server, folder, s3_url)
    victim = next((folder / "images").rglob("*.png"))
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes: only the sha256 can tell
    fs = s3_server.filesystem()
    fs.pipe_file(f"{s3_url.removeprefix('s3://')}/{victim.relative_to(folder).as_posix()}", bytes(data))
    for fmt in ("imagefolder", "parquet"):
        assert main(["export", s3_url, "--format", fmt, "--to", str(tmp_path / fmt), "--quiet"]) == 0
        text = capsys.readouterr().out
        assert "exported 5 image(s)" in text and "sha256 differs" in text, text
        assert f"--output {s3_url}" in text  # the rerun hint writes to the same prefix
    report = export_batch(s3_url, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds"))
    assert report.exported == 5 and report.problems == {Omission.CHANGED: 1}
    fs.rm_file(f"{s3_url.removeprefix('s3://')}/{victim.with_suffix('.json').relative_to(folder).as_posix()}")
    report = export_batch(s3_url, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq2"))
    assert report.exported == 5 and report.problems == {Omission.NO_SIDECAR: 1}


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_each_format_exports_to_the_store_whole_and_loads_back(
        fmt: ExportFormat, s3_server: S3Server, s3_url: str, tmp_path: Path, capsys) -> None:
    from exportkit import make_folder

    folder = tmp_path / "batch"
    make_folder(folder, 12)
    to = f"{s3_url}/ds"
    assert main(["export", str(folder), "--format", fmt.value, "--to", to, "--shard-size", "5",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "exported 12 image(s)" in out and f"put in {to}:" in out
    fs = s3_server.filesystem()
    local = tmp_path / "copy"
    fs.get(to.removeprefix("s3://") + "/", str(local), recursive=True)
    assert (local / "README.md").exists() and (local / ".batchgen-export-train.json").exists()
    assert not [p for p in local.rglob("*") if ".batchgen-stage" in str(p) or ".batchgen-tmp" in str(p)]
    ds = load_offline(fmt.value, local, tmp_path / "hf")["train"]
    assert ds.num_rows == 12
    local_export = export_batch(folder, ExportOptions(fmt, tmp_path / "local", shard_size=5))
    assert sorted(p.relative_to(tmp_path / "local").as_posix()
                  for p in (tmp_path / "local").rglob("*") if p.is_file()) == sorted(
        p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert local_export.exported == 12


def test_a_store_export_again_with_fewer_shards_removes_the_stale_objects(
        s3_server: S3Server, s3_url: str, tmp_path: Path) -> None:
    from exportkit import make_folder

    folder = tmp_path / "batch"
    make_folder(folder, 12)
    to = f"{s3_url}/wds"
    export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=3))
    fs = s3_server.filesystem()
    key = to.removeprefix("s3://")
    assert len(fs.glob(f"{key}/train-*.tar")) == 4
    fs.pipe_file(f"{key}/notes.txt", b"mine")  # not batchgen's: never removed
    report = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to, shard_size=6))
    assert report.exported == 12 and report.removed == 4  # 2 tars and their 2 stats files
    assert len(fs.glob(f"{key}/train-*.tar")) == 2 and fs.cat_file(f"{key}/notes.txt") == b"mine"
