"""An export folder, and the batch folder an export reads, are untrusted: a planted state file
or swap journal never makes export delete or write outside the export folder, and a done
record whose image is a symlink or a path out of the batch is never exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.errors import UsageError
from batchgen.export import ExportFormat, ExportOptions, Omission, export_batch
from exportkit import make_folder


def outside(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with a file in it, and a lone file, both outside every export."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep me")
    lone = tmp_path / "lone.txt"
    lone.write_text("keep me too")
    return folder, lone


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_a_state_file_listing_outside_paths_never_deletes_them(
        fmt: ExportFormat, overwrite: bool, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 5)
    precious, lone = outside(tmp_path)
    to = tmp_path / "deep" / "export"
    to.mkdir(parents=True)
    names = ["../../precious", str(precious), str(lone), "../../lone.txt"]
    state = {"batchgen_export": 1, "format": fmt.value, "split": "train", "where": [],
             "columns": "x", "batch": "made", "source": str(folder), "rows": 4,
             "units": [{"digest": "d", "files": {n: 1}, "rows": 1} for n in names],
             "extra": names}
    (to / ".batchgen-export-train.json").write_text(json.dumps(state))
    report = export_batch(folder, ExportOptions(fmt, to, overwrite=overwrite))
    assert report.exported == 5
    assert (precious / "keep.txt").read_text() == "keep me" and lone.read_text() == "keep me too"


def test_a_planted_swap_journal_never_moves_or_deletes_outside(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 5)
    precious, lone = outside(tmp_path)
    to = tmp_path / "export"
    to.mkdir()
    journal = {"split": "train", "moves": ["../lone.txt", str(lone)],
               "removes": ["../precious", str(precious), "../precious/keep.txt", str(lone)]}
    (to / ".batchgen-swap-train.json").write_text(json.dumps(journal))
    report = export_batch(folder, ExportOptions(ExportFormat.WEBDATASET, to))
    assert report.exported == 5 and report.finished_swap
    assert (precious / "keep.txt").read_text() == "keep me" and lone.read_text() == "keep me too"


def test_a_symlinked_folder_in_the_export_is_never_written_through(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    make_folder(folder, 5)
    precious, _ = outside(tmp_path)
    to = tmp_path / "export"
    to.mkdir()
    (to / "data").symlink_to(precious)
    with pytest.raises(UsageError, match="symbolic link"):
        export_batch(folder, ExportOptions(ExportFormat.PARQUET, to))
    assert sorted(p.name for p in precious.iterdir()) == ["keep.txt"]


def test_done_records_pointing_out_of_the_batch_are_never_exported(tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    ids = make_folder(folder, 6)
    secret = tmp_path / "secret.png"
    secret.write_text("SECRET TEXT, not an image")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_text("SECRET TEXT, not an image")
    (folder / "images" / "evil").symlink_to(elsewhere)
    victim = next((folder / "images").rglob(f"{ids[0]}.png"))
    victim.unlink()
    victim.symlink_to(secret)  # a symlink in place of a done image
    size = secret.stat().st_size
    lines = []
    for job, file in [(ids[1], str(secret)), (ids[2], "../secret.png"),
                      (ids[3], "images/evil/x.png")]:
        lines.append({"job": job, "state": "done", "at": 1.0, "file": file, "bytes": size})
    with open(folder / "ledger.jsonl", "a") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))
    # An absolute or ../ path is refused when the ledger is read (the line counts as unreadable),
    # so those two jobs keep their earlier, sound record; the links are refused by the export.
    for fmt in ExportFormat:
        to = tmp_path / f"out-{fmt.value}"
        report = export_batch(folder, ExportOptions(fmt, to))
        assert report.exported == 4, fmt
        assert {o.job_id for o in report.omitted} == {ids[0], ids[3]}
        assert all(o.why in (Omission.OUTSIDE, Omission.NO_IMAGE, Omission.NO_SIDECAR)
                   for o in report.omitted)
        for path in to.rglob("*"):
            if path.is_file():
                assert b"SECRET TEXT" not in path.read_bytes(), path
            assert not path.is_symlink()
