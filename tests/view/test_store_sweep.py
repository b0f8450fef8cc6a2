"""``grid`` and ``view`` of a batch in an object store (a real S3 API server, SeaweedFS on
loopback): the URL names the batch as it does for ``status`` and ``export``, and its images
are fetched once into a local cache to be drawn and shown."""

from __future__ import annotations

from pathlib import Path

from batchgen.cli import main
from batchgen.view.sweep import CellState, load_sweep
from cluster.s3server import S3Server
from uploadkit import upload_batch
from viewkit import run_sweep


def test_grid_and_view_read_a_batch_in_the_store(s3_server: S3Server, s3_url: str,
                                                 tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir()
    batch = run_sweep(tmp_path / "run")
    upload_batch(s3_server, batch.folder, s3_url)
    local = load_sweep(batch.folder)
    sweep = load_sweep(s3_url)
    assert sweep.target == s3_url  # never s3:/bucket/...
    assert sweep.counts() == local.counts() and local.counts()[CellState.DONE] > 10
    assert [(c.job_id, c.state) for c in sweep.cells] == [(c.job_id, c.state) for c in local.cells]
    done = [cell for cell in sweep.cells if cell.state is CellState.DONE]
    for cell in done[:3]:  # the cached copy is the stored image
        assert (sweep.folder / cell.file).read_bytes() == (batch.folder / cell.file).read_bytes()

    assert main(["grid", s3_url, "--to", str(tmp_path / "sheet.png")]) == 0
    assert list(tmp_path.glob("sheet*.png"))
    assert main(["view", s3_url, "--to", str(tmp_path / "viewer")]) == 0
    assert (tmp_path / "viewer" / "index.html").is_file()
    assert f"batchgen view {s3_url}" in (tmp_path / "viewer" / "data.js").read_text()
    assert "s3:/" + s3_url.split("://")[1] not in capsys.readouterr().err
