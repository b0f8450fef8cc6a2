"""Each export loaded by the libraries people train with: ``datasets`` for ImageFolder and
Parquet (and WebDataset), ``webdataset`` for the tars. Row counts equal the done jobs, the
columns equal the sidecars, the image bytes equal the originals, and a LoRA label with a
dot in it stays one sample."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from batchgen.export import ExportFormat, ExportOptions, export_batch
from exportkit import make_folder, image_bytes, load_offline, run_sweep, sidecars, wds_samples


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return run_sweep(tmp_path_factory.mktemp("sweep"))


def check_row(row: dict, side: dict) -> None:
    """A row's columns are the sidecar's values."""
    assert row["task_id"] == side["task_id"]
    assert row["prompt"] == side["request"]["prompt"]
    assert row["text"] == side["caption"]
    assert row["seed"] == side["seed"] and isinstance(row["seed"], int)
    assert (row["width"], row["height"]) == (side["image"]["width"], side["image"]["height"])
    assert row["output_format"] == side["image"]["format"] == "png"
    assert row["loras"] == side["axes"]["loras"]
    assert row["subject"] == side["axes"]["subject"]
    assert row["sha256"] == side["image"]["sha256"]
    loras = side["request"]["loras"]
    assert row["lora_1_path"] == (loras[0]["path"] if loras else None)
    assert row["lora_1_scale"] == (loras[0]["scale"] if loras else None)
    assert json.loads(row["sidecar"]) == side


def test_imagefolder_loads_with_datasets(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    report = export_batch(manifest, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "ds"))
    assert report.exported == 6 and report.not_done == {"failed": 3}
    assert (tmp_path / "ds" / "train" / "metadata.jsonl").is_file()
    ds = load_offline("imagefolder", tmp_path / "ds", tmp_path / "hf")["train"]
    assert ds.num_rows == 6
    assert "label" not in ds.features  # a metadata file: no bogus label from folder names
    assert ds.features["image"].__class__.__name__ == "Image"
    by_id, originals = sidecars(folder), image_bytes(folder)
    from datasets import Image as HFImage

    raw = ds.cast_column("image", HFImage(decode=False))
    for row, undecoded in zip(ds, raw):
        check_row(row, by_id[row["job_id"]])
        assert row["image"].size == (256, 256)
        data = Path(undecoded["image"]["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert data == originals[row["job_id"]]


def test_imagefolder_images_are_copies_an_edit_never_reaches_the_paid_original(
        tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 4)
    before = image_bytes(folder)
    report = export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "ds"))
    assert set(report.images) <= {"copied", "reflinked"} and sum(report.images.values()) == 4
    exported = sorted((tmp_path / "ds" / "train" / "0000").iterdir())
    originals = {p.stat().st_ino for p in (folder / "images").rglob("*.png")}
    assert len(exported) == 4 and not {p.stat().st_ino for p in exported} & originals
    for path in exported:  # edited in place, as an image editor saving over it does
        path.write_bytes(b"edited")
    assert image_bytes(folder) == before


def test_imagefolder_link_keeps_hard_links_made_read_only(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 4)
    report = export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "ds",
                                                link=True))
    assert report.images == {"hard-linked (read-only)": 4}
    exported = sorted((tmp_path / "ds" / "train" / "0000").iterdir())
    originals = {p.stat().st_ino for p in (folder / "images").rglob("*.png")}
    assert {p.stat().st_ino for p in exported} == originals
    assert all(not p.stat().st_mode & 0o222 for p in exported)
    again = export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "ds"))
    assert again.rewrote_all and set(again.images) <= {"copied", "reflinked"}
    assert not {p.stat().st_ino for p in (tmp_path / "ds" / "train" / "0000").iterdir()} & originals


def test_parquet_loads_with_datasets_as_images(sweep, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    manifest, folder = sweep
    report = export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"))
    (shard,) = (tmp_path / "pq" / "data").iterdir()
    assert shard.name == "train-00000-of-00001.parquet" and report.files == ["data/" + shard.name]
    meta = json.loads(pq.read_schema(shard).metadata[b"huggingface"])
    assert meta["info"]["features"]["image"] == {"_type": "Image"}
    ds = load_offline("parquet", tmp_path / "pq", tmp_path / "hf")["train"]
    assert ds.num_rows == 6 and ds.features["image"].__class__.__name__ == "Image"
    by_id, originals = sidecars(folder), image_bytes(folder)
    from datasets import Image as HFImage

    raw = ds.cast_column("image", HFImage(decode=False))
    for row, undecoded in zip(ds, raw):
        check_row(row, by_id[row["job_id"]])
        assert row["image"].size == (256, 256)
        assert undecoded["image"]["bytes"] == originals[row["job_id"]]
        assert undecoded["image"]["path"] == f"{row['job_id']}.png"


def test_webdataset_reads_one_sample_per_done_job(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds"))
    shard = tmp_path / "wds" / "train-000000.tar"
    samples = wds_samples(shard)
    by_id, originals = sidecars(folder), image_bytes(folder)
    assert sorted(s["__key__"] for s in samples) == sorted(by_id)
    for sample in samples:
        assert set(sample) == {"__key__", "__url__", "json", "png", "txt"}
        row = json.loads(sample["json"])
        check_row(row, by_id[sample["__key__"]])
        assert sample["txt"].decode() == by_id[sample["__key__"]]["caption"]
        assert sample["png"] == originals[sample["__key__"]]
    stats = json.loads((tmp_path / "wds" / "__stats__" / "train-000000_stats.json").read_text())
    assert stats["count"] == stats["successes"] == 6
    assert stats["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_webdataset_loads_with_datasets(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds"))
    ds = load_offline("webdataset", tmp_path / "wds", tmp_path / "hf")["train"]
    assert ds.num_rows == 6
    by_id = sidecars(folder)
    for row in ds:
        check_row(row["json"], by_id[row["__key__"]])
        assert row["txt"] == by_id[row["__key__"]]["caption"]


def test_shards_are_sorted_and_byte_identical_for_the_same_batch(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    first = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "a"))
    second = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "b"))
    assert first.exported == second.exported == 6
    a, b = (tmp_path / x / "train-000000.tar" for x in "ab")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {946_684_800} and {m.uid for m in members} == {0}


def test_a_plain_tar_of_a_sweep_folder_keeps_dotted_labels_as_one_sample(sweep, tmp_path: Path) -> None:
    """The names themselves are WebDataset keys now: ``ghibli@0.25`` is ``ghibli_0p25`` on
    disk, so even a tar made by hand of the images folder splits no sample in two."""
    _, folder = sweep
    shard = tmp_path / "plain.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted((folder / "images").rglob("*.*")):
            tar.add(path, arcname=str(path.relative_to(folder / "images")))
    samples = wds_samples(shard)
    assert len(samples) == 6
    assert {s["__key__"] for s in samples} >= {"red/ghibli_0p25", "red/ghibli_0p5", "blue/none"}
    assert all(set(s) == {"__key__", "__url__", "json", "png", "txt"} for s in samples)


def test_webdataset_image_member_matches_its_bytes(sweep, tmp_path: Path) -> None:
    from PIL import Image

    manifest, _ = sweep
    export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds"))
    with tarfile.open(tmp_path / "wds" / "train-000000.tar") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".png"):
                data = tar.extractfile(member).read()
                with Image.open(io.BytesIO(data)) as img:
                    assert img.format == "PNG"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_webdataset_pipeline_decodes_every_sample(sweep, tmp_path: Path) -> None:
    # webdataset's own pipeline (it leaves its file handles to the garbage collector)
    import webdataset as wds

    manifest, folder = sweep
    export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds", shard_size=4))
    urls = str(tmp_path / "wds" / "train-{000000..000001}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False)
                   .decode("pil").to_tuple("__key__", "png", "json", "txt"))
    by_id = sidecars(folder)
    assert sorted(k for k, *_ in samples) == sorted(by_id)
    for key, image, row, caption in samples:
        assert image.size == (256, 256) and row["job_id"] == key
        assert caption == by_id[key]["caption"]
