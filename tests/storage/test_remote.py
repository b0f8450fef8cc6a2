"""A batch read back from an object store (a real S3 API server, SeaweedFS on loopback).

The store holds what a run writing to ``s3://`` leaves there: images, sidecars and copies of
the ledger files at their paths in a batch folder. ``status`` reads the copies (merged across
shards, as of their upload, never calling an unfinished batch complete), the ledger copies
are found with listings rather than a HEAD per file, and no object holds the API key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from batchgen.cli import main
from batchgen.errors import UsageError
from batchgen.manifest.shards import Shard
from batchgen.storage.remote import open_store_batch
from batchgen.storage.results import open_results
from batchgen.storage.status import store_status
from cluster.s3server import S3Server
from cluster.tcpproxy import Proxy
from remotekit import KEY, run_into, upload_batch


def test_status_reads_the_ledger_copies_as_of_their_upload(s3_server: S3Server, s3_url: str,
                                                           tmp_path: Path, capsys) -> None:
    upload_batch(s3_server, run_into(tmp_path, 12), s3_url)
    report = store_status(s3_url)
    assert (report.planned, report.done, report.pending, report.complete) == (12, 12, 0, True)
    assert report.store == s3_url and report.tasks_created == 12
    assert list(report.copies) == ["ledger.jsonl"]
    assert abs(report.uploaded - time.time()) < 300  # the object's LastModified

    assert main(["status", s3_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["folder"], data["store"], data["complete"], data["done"]) == (s3_url, s3_url, True, 12)
    assert data["as_of"] == data["ledger_copies"]["ledger.jsonl"]
    assert main(["status", s3_url]) == 0
    text = capsys.readouterr().out
    assert f"in {s3_url}" in text and "as of " in text and "complete: 12/12 done" in text


def test_shard_ledgers_in_the_store_give_one_merged_status(s3_server: S3Server, s3_url: str,
                                                          tmp_path: Path) -> None:
    for index in range(3):
        out = run_into(tmp_path, 18, shard=Shard(index, 3))
    assert sorted(p.name for p in (out / "ledgers").glob("*.jsonl")) == [
        f"shard-{i}-of-3.jsonl" for i in range(3)]
    upload_batch(s3_server, out, s3_url)
    report = store_status(s3_url)
    assert sorted(report.copies) == [f"ledgers/shard-{i}-of-3.jsonl" for i in range(3)]
    assert (report.ledgers, report.done, report.planned, report.complete) == (3, 18, 18, True)
    assert report.tasks_created == 18  # each shard's tasks counted once


@pytest.mark.slow
def test_an_unfinished_batch_in_the_store_is_not_complete(s3_server: S3Server, s3_url: str,
                                                         tmp_path: Path, capsys) -> None:
    out = run_into(tmp_path / "a", 12, shard=Shard(0, 2))  # one shard of two has run
    upload_batch(s3_server, out, s3_url)
    report = store_status(s3_url)
    assert report.done < 12 and report.planned == 12 and not report.complete
    assert report.pending == 12 - report.done

    other = s3_url + "-partial"
    upload_batch(s3_server, run_into(tmp_path / "b", 12, max_jobs=5), other)
    assert main(["status", other]) == 0
    text = capsys.readouterr().out
    assert "not complete: 5/12 done" in text and "complete: 12" not in text
    assert f"--output {other}" in text  # the hint finishes the batch in the same prefix
    assert main(["status", other, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is False


def test_no_batch_under_the_url_is_a_clear_usage_error(s3_server: S3Server, s3_url: str,
                                                       tmp_path: Path, capsys) -> None:
    with pytest.raises(UsageError, match="no batch under"):
        open_store_batch(s3_url)
    s3_server.filesystem().pipe_file(f"{s3_url.removeprefix('s3://')}/images/a.png", b"x")
    for argv in (["status", s3_url], ["status", s3_url, "--json"],
                 ["export", s3_url, "--format", "parquet", "--to", str(tmp_path / "ds")],
                 ["status", f"s3://{s3_server.bucket}-missing/x"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no batch under" in err and "Traceback" not in err
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").rglob("*.parquet"))


@pytest.mark.slow
def test_the_ledger_copies_are_found_with_listings_not_a_head_per_file(
        s3_server: S3Server, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(4):
        out = run_into(tmp_path, 8, shard=Shard(index, 4))
    upload_batch(s3_server, out, s3_url)
    with Proxy(int(s3_server.endpoint.rsplit(":", 1)[1])) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = open_store_batch(s3_url)
        results = open_results(s3_url)
        done = list(results.done())
        got = store.read_many([r.sidecar_file() for r in done] + ["images/none.json"])
        methods = proxy.methods()
    assert len(store.copies) == 4 and len(done) == 8
    assert "HEAD" not in methods
    listings = [path for method, path in proxy.requests if "list-type=2" in path]
    assert len(listings) == 2  # one of ledger/ for each of the two openings
    assert all(got[r.sidecar_file()] for r in done) and got["images/none.json"] is None
    assert results.source == s3_url and results.store is not None


def test_no_object_in_the_bucket_holds_the_api_key(s3_server: S3Server, s3_url: str,
                                                   tmp_path: Path) -> None:
    upload_batch(s3_server, run_into(tmp_path, 6), s3_url)
    assert store_status(s3_url).done == 6
    fs = s3_server.filesystem()
    everything = fs.find(s3_server.bucket)  # the whole bucket, every test's prefix
    assert any("/ledger/ledger.jsonl/" in p for p in everything)
    leaked = [p for p, data in fs.cat(everything).items() if KEY.encode() in data]  # fetched at once
    assert not leaked
