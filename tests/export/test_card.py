"""Every export writes a dataset card, ``README.md``: front matter that ``datasets`` reads
(configs naming the files, the features), then prose generated from the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchgen.export import ExportFormat, ExportOptions, export_batch
from exportkit import make_folder, run_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return run_sweep(tmp_path_factory.mktemp("sweep"))


def front(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    head, _, body = text.removeprefix("---\n").partition("\n---\n")
    return yaml.safe_load(head), body


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_the_card_alone_lets_datasets_load_every_format_typed(sweep, fmt: ExportFormat,
                                                              tmp_path: Path) -> None:
    import datasets

    manifest, _ = sweep
    to = tmp_path / "ds"
    report = export_batch(manifest, ExportOptions(fmt, to))
    assert report.card == "README.md"
    meta, body = front(to / "README.md")
    assert meta["license"] == "unknown"
    assert meta["configs"][0]["data_files"][0]["split"] == "train"
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(to), cache_dir=str(tmp_path / "hf"))["train"]  # no format named
    assert ds.num_rows == 6
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert list(ds.features) == names
    if fmt is ExportFormat.WEBDATASET:
        assert isinstance(ds.features["png"], datasets.Image)
        assert ds.features["json"]["seed"].dtype == "int64"
    else:
        assert isinstance(ds.features["image"], datasets.Image)
        assert ds.features["seed"].dtype == "int64" and ds.features["sha256"].dtype == "string"


def test_the_card_body_tells_how_the_batch_was_made(sweep, tmp_path: Path) -> None:
    manifest, _ = sweep
    export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"))
    _, body = front(tmp_path / "pq" / "README.md")
    assert "z-image-turbo-lora" in body and "jiekou" in body   # model and provider
    assert manifest.read_text().splitlines()[1] in body and "```yaml" in body  # embedded
    assert "done 6" in body and "failed 3" in body                # jobs by state
    assert "| subject |" in body and "`red` (3)" in body          # axes and their values
    assert "Images finished between 20" in body                   # dates
    import batchgen

    assert batchgen.__version__ in body and "## Licence" in body


def test_a_licence_set_by_the_user_is_kept_and_a_readme_of_theirs_never_replaced(
        tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 4)
    to = tmp_path / "wds"
    export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to))
    card = to / "README.md"
    card.write_text(card.read_text().replace("license: unknown", "license: cc-by-4.0"))
    make_folder(folder, 2, start=4)
    export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to))
    meta, body = front(card)
    assert meta["license"] == "cc-by-4.0" and "6 image(s)" in body
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# my own notes\n")
    report = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, mine))
    assert report.card is None and (mine / "README.md").read_text() == "# my own notes\n"


def test_two_splits_in_one_folder_are_both_named(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 4)
    to = tmp_path / "pq"
    export_batch(folder, ExportOptions(ExportFormat.PARQUET, to, where=["n=1", "n=2", "n=3"]))
    export_batch(folder, ExportOptions(ExportFormat.PARQUET, to, split="test", where=["n=0"]))
    meta, _ = front(to / "README.md")
    assert meta["configs"][0]["data_files"] == [
        {"split": "test", "path": "data/test-*.parquet"},
        {"split": "train", "path": "data/train-*.parquet"}]
