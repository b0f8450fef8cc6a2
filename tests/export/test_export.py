"""What an export does beyond the layouts: only done jobs, the rest reported; filters;
re-exporting keeps what did not change; no clobbering without --overwrite; typed columns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batchgen.cli import main
from batchgen.errors import UsageError
from batchgen.export import ExportFormat, ExportOptions, Omission, export_batch
from batchgen.export.rows import ColumnType, Columns
from exportkit import load_offline, make_folder, run_sweep, wds_samples


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return run_sweep(tmp_path_factory.mktemp("sweep"))


def test_a_batch_with_failures_exports_the_done_jobs_and_reports_the_rest(sweep, tmp_path: Path,
                                                                         capsys) -> None:
    manifest, _ = sweep
    code = main(["export", str(manifest), "--format", "parquet", "--to", str(tmp_path / "pq"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "exported 6 image(s) of batch sweep" in out
    assert "not exported, not done: 3 failed" in out and f"batchgen status {manifest}" in out
    assert 'load_dataset("parquet", data_dir=' in out


def test_the_batch_folder_alone_gives_the_same_rows(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    a = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "a"))
    b = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "b"))
    assert a.exported == b.exported == 6 and b.not_done == {"failed": 3}


def test_where_filters_rows_and_an_unknown_column_is_refused(sweep, tmp_path: Path, capsys) -> None:
    manifest, _ = sweep
    report = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w",
                                                  where=["subject=red", "loras=ghibli@0.25",
                                                         "loras=ghibli@0.5"]))
    assert report.exported == 2 and report.filtered_out == 4
    rows = [json.loads(s["json"]) for s in wds_samples(tmp_path / "w" / "train-000000.tar")]
    assert {(r["subject"], r["lora_1_scale"]) for r in rows} == {("red", 0.25), ("red", 0.5)}
    code = main(["export", str(manifest), "--format", "webdataset", "--to", str(tmp_path / "x"),
                 "--where", "colour=red", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--where colour: no such column" in err and "subject" in err
    assert not (tmp_path / "x" / "train-000000.tar").exists()


def test_a_numeric_where_matches_the_number(sweep, tmp_path: Path) -> None:
    manifest, _ = sweep
    report = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w",
                                                  where=["lora_1_scale=0.50"]))
    assert report.exported == 2


def test_reexport_after_more_jobs_keeps_unchanged_shards(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 250)
    opts = ExportOptions(ExportFormat.WEBDATASET, tmp_path / "wds", shard_size=100)
    first = export_batch(folder, opts)
    assert (first.units, first.written, first.kept, first.exported) == (3, 3, 0, 250)
    shards = sorted((tmp_path / "wds").glob("*.tar"))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards}
    again = export_batch(folder, opts)
    assert (again.written, again.kept) == (0, 3)
    make_folder(folder, 120, start=250)
    grown = export_batch(folder, opts)
    assert (grown.units, grown.kept, grown.written, grown.exported) == (4, 2, 2, 370)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
             for p in (tmp_path / "wds").glob("*.tar")}
    for name in ("train-000000.tar", "train-000001.tar"):
        assert after[name] == before[name]  # not rewritten
    assert sum(len(wds_samples(p)) for p in (tmp_path / "wds").glob("*.tar")) == 370


def test_reexport_of_parquet_renames_kept_shards_when_the_count_grows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    folder = tmp_path / "batch"
    make_folder(folder, 250, caption=False)
    size = sum(p.stat().st_size for p in (folder / "images").rglob("*.png"))
    opts = ExportOptions(ExportFormat.PARQUET, tmp_path / "pq", parquet_shard_bytes=size * 6 // 10)
    first = export_batch(folder, opts)
    assert first.files == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    kept = (tmp_path / "pq" / "data" / "train-00000-of-00002.parquet").stat().st_ino
    assert pq.ParquetFile(tmp_path / "pq" / first.files[0]).metadata.row_group(0).num_rows == 100
    make_folder(folder, 200, start=250, caption=False)
    grown = export_batch(folder, opts)
    assert grown.units >= 3 and grown.kept == 1 and grown.exported == 450
    names = sorted(p.name for p in (tmp_path / "pq" / "data").iterdir())
    assert names == [f"train-0000{i}-of-{grown.units:05d}.parquet" for i in range(grown.units)]
    assert (tmp_path / "pq" / "data" / names[0]).stat().st_ino == kept  # renamed, not rewritten
    ds = load_offline("parquet", tmp_path / "pq", tmp_path / "hf")["train"]
    assert ds.num_rows == 450


def test_imagefolder_subfolders_hold_at_most_1000_images(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 1100, caption=False)
    report = export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, tmp_path / "if"))
    train = tmp_path / "if" / "train"
    sizes = [len(list(d.iterdir())) for d in sorted(train.iterdir()) if d.is_dir()]
    assert sizes == [1000, 100] and report.exported == 1100
    lines = (train / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 1100 and "text" not in json.loads(lines[0])  # captions are off
    keys = {tuple(json.loads(line)) for line in lines}
    assert len(keys) == 1  # the same columns on every line
    ds = load_offline("imagefolder", tmp_path / "if", tmp_path / "hf")["train"]
    assert ds.num_rows == 1100


def test_an_earlier_export_of_another_kind_is_not_clobbered(sweep, tmp_path: Path, capsys) -> None:
    manifest, _ = sweep
    to = tmp_path / "ds"
    export_batch(manifest, ExportOptions(ExportFormat.PARQUET, to))
    code = main(["export", str(manifest), "--format", "webdataset", "--to", str(to), "--quiet"])
    assert code == 2 and "holds a parquet export of split 'train'" in capsys.readouterr().err
    report = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, to, overwrite=True))
    assert report.rewrote_all == "--overwrite" and report.removed == 1
    assert not list((to / "data").glob("*.parquet"))
    # another split beside it is another export, not a clash
    test = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, to, split="test"))
    assert test.exported == 6 and (to / "train-000000.tar").exists() and (to / "test-000000.tar").exists()


def test_files_batchgen_did_not_record_need_overwrite(sweep, tmp_path: Path) -> None:
    manifest, _ = sweep
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train-000000.tar").write_bytes(b"someone else's")
    with pytest.raises(UsageError, match="did not record"):
        export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "ds"))
    assert (tmp_path / "ds" / "train-000000.tar").read_bytes() == b"someone else's"


def test_a_missing_or_changed_image_is_left_out_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    ids = make_folder(folder, 5)
    images = sorted((folder / "images").rglob("*.png"))
    images[0].unlink()
    data = bytearray(images[1].read_bytes())
    data[-1] ^= 1  # same size, other bytes
    images[1].write_bytes(bytes(data))
    report = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w"))
    assert report.exported == 3
    assert report.problems == {Omission.NO_IMAGE: 1, Omission.CHANGED: 1}
    assert len(wds_samples(tmp_path / "w" / "train-000000.tar")) == 3 and len(ids) == 5


def test_webdataset_refuses_a_batch_of_mixed_formats(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 2)
    make_folder(folder, 2, start=2, fmt="webp")
    with pytest.raises(UsageError, match="--where output_format=png"):
        export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w"))
    report = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w",
                                                where=["output_format=png"]))
    assert report.exported == 2


def test_nothing_done_is_an_error_that_says_so(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f'prompt: "x"\noutput: {tmp_path / "out"}\n')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ledger.jsonl").write_text('{"batchgen_ledger": 1, "batch": "m"}\n')
    with pytest.raises(UsageError, match=r"no job of batch m is done yet \(1 pending\)"):
        export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"))


def test_exporting_into_the_batch_folder_is_refused(sweep) -> None:
    _, folder = sweep
    with pytest.raises(UsageError, match="folder of its own"):
        export_batch(folder, ExportOptions(ExportFormat.IMAGEFOLDER, folder / "images" / "x"))


def test_column_types_never_change_between_rows() -> None:
    cols = Columns()
    base = {"job_id": "a", "output_format": "png"}
    for row in ({"n": 1, "w": 1, "mix": 1, "only_null": None, "flag": True},
                {"n": 2, "w": 0.5, "mix": "text", "only_null": None, "flag": False},
                {"n": None, "w": 2}):
        cols.learn({**base, **row})
    schema = cols.schema()
    assert schema["n"] is ColumnType.INT and schema["w"] is ColumnType.FLOAT
    assert schema["mix"] is ColumnType.STRING and schema["only_null"] is ColumnType.STRING
    assert schema["flag"] is ColumnType.BOOL
    fitted = cols.fit({**base, "n": 3, "w": 2, "mix": 1}, schema)
    assert fitted["w"] == 2.0 and isinstance(fitted["w"], float) and fitted["mix"] == "1"
    assert fitted["flag"] is None and set(fitted) == set(schema)


def test_the_export_never_writes_in_the_batch_folder(sweep, tmp_path: Path) -> None:
    manifest, folder = sweep
    before = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    for fmt in ExportFormat:
        export_batch(manifest, ExportOptions(fmt, tmp_path / fmt.value))
    after = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    assert before == after
    assert not any(p.name == ".batchgen-tmp" for p in tmp_path.rglob("*"))
    assert sorted(os.listdir(tmp_path / "parquet")) == [".batchgen-export-train.json", "README.md",
                                                        "data"]


def test_a_dynamic_prompt_batch_exports_template_and_prompt(tmp_path: Path) -> None:
    manifest, folder = run_sweep(tmp_path / "dyn", """\
name: dyn
size: "256*256"
caption: true
matrix:
  prompt: {dynamic: "a {red|blue} {car|bike} at dusk", random: 4, base: 3}
""")
    export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"))
    ds = load_offline("parquet", tmp_path / "pq", tmp_path / "hf")["train"]
    assert ds.num_rows == 4
    for row in ds:
        side = json.loads(row["sidecar"])
        assert row["prompt_template"] == side["axes"]["prompt"] == "a {red|blue} {car|bike} at dusk"
        assert row["prompt"] == side["request"]["prompt"] == row["text"]
        assert "{" not in row["prompt"]


def test_progress_shows_as_lines_when_not_on_a_terminal(sweep, tmp_path: Path) -> None:
    import io

    from batchgen.cli.progress import ExportProgressView, ProgressMode

    manifest, _ = sweep
    out = io.StringIO()
    with ExportProgressView(ProgressMode.AUTO, stream=out, interval=0) as view:
        export_batch(manifest, ExportOptions(ExportFormat.PARQUET, tmp_path / "pq"),
                     progress=view.update)
    assert view.mode is ProgressMode.LINES
    assert "batchgen export: writing: 6/6" in out.getvalue()


def test_new_columns_rewrite_everything_and_say_so(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 30, caption=False)
    to = tmp_path / "wds"
    assert main(["export", str(folder), "--format", "webdataset", "--to", str(to),
                 "--shard-size", "10", "--quiet"]) == 0
    make_folder(folder, 5, start=30, caption=True)  # captions: a text column and .txt members
    capsys.readouterr()
    assert main(["export", str(folder), "--format", "webdataset", "--to", str(to),
                 "--shard-size", "10", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 shard(s) written; everything was rewritten: the columns, the shard size" in out
    samples = wds_samples(to / "train-000000.tar")
    assert all(set(s) == {"__key__", "__url__", "json", "png", "txt"} for s in samples)


def test_progress_on_a_terminal_draws_a_bar_and_clears_it(sweep, tmp_path: Path) -> None:
    import io

    from batchgen.cli.progress import ExportProgressView, ProgressMode

    manifest, _ = sweep
    out = io.StringIO()
    with ExportProgressView(ProgressMode.LIVE, stream=out) as view:
        report = export_batch(manifest, ExportOptions(ExportFormat.WEBDATASET, tmp_path / "w"),
                              progress=view.update)
    assert report.exported == 6 and view._progress is None  # the bar is gone with the export
