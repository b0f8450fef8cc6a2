"""The local batch folder's write path: files land under images/ only, through .tmp/ and a
rename, each folder made once per run and made again if it vanishes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchgen.errors import OutputError
from batchgen.job import Job
from batchgen.storage.folder import BatchFolder
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar


def job(name: str, n: int = 0, caption: str | None = None) -> Job:
    return Job(job_id=f"{n:064x}", index=n, request={"prompt": f"p {n}", "output_format": "png"},
               axes={"n": n}, replica=0, name=name, caption=caption)


def sidecar(j: Job) -> Sidecar:
    return Sidecar(batchgen_version="0", batch="b", job_id=j.job_id, index=j.index, replica=0,
                   provider=ProviderInfo("simulator", "127.0.0.1", "m"), task_id=f"t{j.index}",
                   request=j.request, axes=j.axes, seed=None, caption=j.caption,
                   image=ImageInfo("png", 1, 1))


def ready(tmp_path: Path, durable: bool = True) -> BatchFolder:
    folder = BatchFolder(tmp_path / "out", durable=durable)
    folder.prepare()
    return folder


def test_each_file_is_put_in_place_whole_and_nothing_stays_in_tmp(tmp_path: Path) -> None:
    folder = ready(tmp_path)
    saved = [folder.save(job(f"a{n % 3}/x{n}", n, caption=f"c {n}"), bytes([n]) * (n + 1),
                         sidecar(job(f"a{n % 3}/x{n}", n))) for n in range(12)]
    for n, s in enumerate(saved):
        assert (folder.root / s.file).read_bytes() == bytes([n]) * (n + 1)
        assert (folder.root / s.file).with_suffix(".txt").read_text() == f"c {n}"
        side = (folder.root / s.file).with_suffix(".json")
        assert Sidecar.decode(side.read_bytes()).image.file == s.file
        assert side.stat().st_size == s.sidecar_size
    assert list(folder.tmp.iterdir()) == []
    assert sorted(p.name for p in folder.images.iterdir()) == ["a0", "a1", "a2"]
    folder.sync()   # every saved file and folder fsynced; none left for the next group
    assert folder._unsynced == []


def test_a_folder_removed_during_the_run_is_made_again(tmp_path: Path) -> None:
    folder = ready(tmp_path)
    folder.save(job("sub/one", 1), b"1", sidecar(job("sub/one", 1)))
    for p in (folder.images / "sub").iterdir():
        p.unlink()
    (folder.images / "sub").rmdir()
    saved = folder.save(job("sub/two", 2), b"2", sidecar(job("sub/two", 2)))
    assert (folder.root / saved.file).read_bytes() == b"2"


def test_a_symlinked_folder_leading_outside_images_is_refused(tmp_path: Path) -> None:
    folder = ready(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder.images / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match="outside"):
        folder.save(job("link/x", 1), b"1", sidecar(job("link/x", 1)))
    assert list(outside.iterdir()) == [] and list(folder.tmp.iterdir()) == []


def test_a_symlink_under_a_files_own_name_is_replaced_not_followed(tmp_path: Path) -> None:
    folder = ready(tmp_path)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    (folder.images / "x.png").symlink_to(victim)
    saved = folder.save(job("x", 1), b"new", sidecar(job("x", 1)))
    assert victim.read_bytes() == b"keep me"
    target = folder.root / saved.file
    assert not target.is_symlink() and target.read_bytes() == b"new"


def test_a_failed_write_leaves_neither_image_nor_temp_file(tmp_path: Path) -> None:
    folder = ready(tmp_path)
    j = job("d/x", 1)
    (folder.images / "d").mkdir()
    (folder.images / "d" / "x.json").mkdir()   # the sidecar's name is taken by a folder
    with pytest.raises(OutputError):
        folder.save(j, b"img", sidecar(j))
    assert not (folder.images / "d" / "x.png").exists()
    assert list(folder.tmp.iterdir()) == []


def test_files_keep_the_umask_permissions_a_plain_open_gives(tmp_path: Path) -> None:
    folder = ready(tmp_path, durable=False)
    saved = folder.save(job("p", 1), b"1", sidecar(job("p", 1)))
    mask = os.umask(0)
    os.umask(mask)
    assert (folder.root / saved.file).stat().st_mode & 0o777 == 0o666 & ~mask
    assert folder._unsynced == []   # not durable: nothing queued for fsync


class Part:
    def __init__(self, index: int, count: int) -> None:
        self.index, self.count = index, count

    def holds(self, job_id: str) -> bool:
        return True


def test_a_shard_starting_beside_another_leaves_its_temp_files_and_probes_alone(tmp_path: Path) -> None:
    # Shards share the folder; each one's prepare used to empty all of .tmp/ (and remove every
    # probe), so a shard starting late broke the saves of one already writing.
    first = BatchFolder(tmp_path / "out", shard=Part(0, 8))
    first.prepare()
    writing = first.tmp / "in-the-middle-of-a-save"
    writing.write_bytes(b"half")
    probe = first.images / ".probe-shard-0-of-8-abc"   # a probe between its rename and unlink
    probe.write_bytes(b"ok")
    second = BatchFolder(tmp_path / "out", shard=Part(1, 8))
    second.prepare()
    assert writing.read_bytes() == b"half" and probe.exists()
    one = job("a/x", 1)
    assert first.save(one, b"image", sidecar(one)).file == "images/a/x.png"
    BatchFolder(tmp_path / "out", shard=Part(0, 8)).prepare()   # the same shard again: its own leftovers go
    assert not writing.exists() and not probe.exists()
    stray = second.tmp / "left"
    stray.write_bytes(b"x")
    BatchFolder(tmp_path / "out").prepare()   # a whole-batch run holds the folder alone: all of .tmp/
    assert not stray.exists() and not (tmp_path / "out" / ".tmp" / "shard-1-of-8").exists()
