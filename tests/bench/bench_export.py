"""Benchmark `batchgen export` in each format beside `cp -r` of the same files.

Run by hand: `.venv/bin/python tests/bench/bench_export.py [--sizes 10000,100000] [--repeat 3]`,
or `... --store [--sizes 1000]` for a batch read back from an object store (below).

A batch folder of N small images (256*256 PNG from the simulator's renderer, ~3-7 KB each,
with sidecar and caption) is written once through the storage package (the default layout),
as a finished run leaves it, and kept under output/bench-export-N/ for later runs. Then, each
`--repeat` times, in fresh subprocesses: `cp -r` of its images folder, and
`python -m batchgen export FOLDER --format F --to DIR --quiet` for each format (the whole
command: interpreter start, imports, both passes). Files are read once beforehand so every
case starts from a warm page cache. Prints medians (and the spread) as markdown, with each
export's peak RSS (GNU time's maximum resident set size), and the default layout's folder
fan-out: measured on the batch folder, and for 10^6 jobs from the names a 10^6-job manifest
expands to.

`--store` measures what reading a batch back from an object store costs: a batch of N
images of about 20 KB (noise PNGs, which do not compress) is written the same way, uploaded
to a SeaweedFS S3 server on loopback (`weed mini`, as the tests start it), and each format is
exported from `s3://bucket/prefix` and from the local folder, in fresh subprocesses, `--repeat`
times; it prints the medians and the store's cost per image. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

FORMATS = ("imagefolder", "parquet", "webdataset")


def noise_pngs(kb: int, count: int = 64) -> list[bytes]:
    """Distinct PNGs of about ``kb`` KB each (random pixels do not compress)."""
    import io

    from PIL import Image

    side = int((kb * 1000 / 3) ** 0.5)
    pool = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG")
        pool.append(buf.getvalue())
    return pool


def make_batch(folder: Path, count: int, pool: list[bytes] | None = None) -> None:
    """N done jobs written through the storage package (ledger, images, sidecars, captions)."""
    from batchgen.job import Job
    from batchgen.simulator.images import Recipe, render
    from batchgen.storage.folder import BatchFolder
    from batchgen.storage.ledger import Ledger
    from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar, Timings

    pool = pool or [render(Recipe(scene=i, width=256, height=256, fmt="png")) for i in range(256)]
    ledger = Ledger.open(folder, "bench")
    writer = BatchFolder(folder)
    writer.prepare()
    try:
        for i in range(count):
            job_id = hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:16]
            scale = (i % 5) * 0.25
            request = {"prompt": f"a lighthouse at dusk, variant {i}", "seed": i, "size": "256*256",
                       "loras": [{"path": "https://example.com/l/ghibli.safetensors", "scale": scale}],
                       "output_format": "png", "enable_base64_output": False}
            axes = {"n": i, "loras": f"ghibli@{scale:g}"}
            job = Job(job_id, i, request, axes, 0, f"{job_id[:3]}/{job_id}", request["prompt"])
            sidecar = Sidecar("bench", "bench", job_id, i, 0,
                              ProviderInfo("jiekou", "api.simulator", "z-image-turbo-lora"),
                              f"task-{i}", request, axes, i, job.caption,
                              ImageInfo("png", 256, 256), Timings())
            ledger.submitting(job)
            ledger.submitted(job_id, f"task-{i}")
            saved = writer.save(job, pool[i % len(pool)], sidecar)
            ledger.done(job_id, saved.file, saved.size, saved.sha256)
    finally:
        ledger.close()


def warm(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int | None]:
    """Wall seconds of a command, and its peak RSS in MB as GNU time measures it."""
    started = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{out.stdout}\n{out.stderr}")
    rss = None
    for line in out.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.rsplit(":", 1)[1]) // 1024
    return elapsed, rss


def fan_out(images: Path) -> tuple[int, int, int]:
    """(folders under images/, entries in images/ itself, most files in any one folder)."""
    most, folders, top = 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(images):
        folders += len(dirnames)
        if Path(dirpath) == images:
            top = len(dirnames) + len(filenames)
        most = max(most, len(filenames))
    return folders, top, most


def million_fan_out() -> tuple[int, int]:
    """Folders and the fullest folder's file count (image + sidecar + caption) for the default
    names of a 10^6-job manifest, from its expansion (no files written)."""
    from batchgen.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_text('prompt: "a lighthouse, variant {n}"\ncaption: true\n'
                        "matrix:\n  n: {from: 1, to: 1000000}\n")
        folders = Counter(job.name.split("/", 1)[0] for job in load_manifest(path).jobs())
    return len(folders), 3 * max(folders.values())


def store_bench(sizes: list[int], repeat: int, kb: int) -> None:
    """Export from an S3 server on loopback against export from the local folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cluster.s3server import running_s3_server

    rows = []
    for n in sizes:
        folder = Path("output") / f"bench-export-store-{n}-{kb}k"
        if not (folder / "ledger.jsonl").exists():
            shutil.rmtree(folder, ignore_errors=True)
            make_batch(folder, n, noise_pngs(kb))
        size = warm(folder / "images")
        with tempfile.TemporaryDirectory(dir="output") as tmp, \
                running_s3_server(Path(tmp) / "s3") as server:
            env = {**os.environ, **server.env}
            url = server.url("bench")
            files = [p for p in folder.rglob("*") if p.is_file() and (
                p.parts[len(folder.parts)] == "images" or p.name == "ledger.jsonl")]
            t = time.perf_counter()
            server.filesystem().put([str(p) for p in files],
                                    [f"{url[5:]}/{p.relative_to(folder).as_posix()}" for p in files])
            upload = time.perf_counter() - t
            for fmt in FORMATS:
                local, remote = [], []
                for i in range(repeat):
                    local.append(timed([sys.executable, "-m", "batchgen", "export", str(folder),
                                        "--format", fmt, "--to", f"{tmp}/l{fmt}{i}", "--quiet"],
                                       env)[0])
                    remote.append(timed([sys.executable, "-m", "batchgen", "export", url,
                                         "--format", fmt, "--to", f"{tmp}/r{fmt}{i}", "--quiet"],
                                        env)[0])
                lm, rm = statistics.median(local), statistics.median(remote)
                rows.append((n, fmt, lm, rm, (rm - lm) / n * 1000, size / n / 1000))
        print(f"{n:,} jobs: {size / 1e6:.1f} MB of images, uploaded in {upload:.1f} s "
              f"({len(files)} objects)", file=sys.stderr)
    print("| jobs | format | local folder, median s | S3 store, median s | store cost ms/image "
          "| KB/image |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, fmt, lm, rm, per, kb_each in rows:
        print(f"| {n:,} | {fmt} | {lm:.2f} | {rm:.2f} | {per:.2f} | {kb_each:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", action="store_true",
                        help="export from an S3 server on loopback against the local folder")
    parser.add_argument("--image-kb", type=int, default=20, help="with --store: image size")
    args = parser.parse_args()
    if args.store:
        store_bench([int(s) for s in (args.sizes or "1000").split(",")], args.repeat, args.image_kb)
        return
    args.sizes = args.sizes or "10000,100000"
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = Path("output") / f"bench-export-{n}"
        if not (folder / "ledger.jsonl").exists():
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            make_batch(folder, n)
            print(f"made {n} jobs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        size = warm(folder / "images")
        folders, top, most = fan_out(folder / "images")
        times: dict[str, list[float]] = {"cp -r": []}
        rss: dict[str, list[int]] = {}
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(dir="output") as tmp:
                times["cp -r"].append(timed(["cp", "-r", str(folder / "images"), f"{tmp}/copy"])[0])
                for fmt in FORMATS:
                    elapsed, peak = timed([sys.executable, "-m", "batchgen", "export", str(folder),
                                           "--format", fmt, "--to", f"{tmp}/{fmt}", "--quiet"])
                    times.setdefault(fmt, []).append(elapsed)
                    rss.setdefault(fmt, []).append(peak or 0)
        cp = statistics.median(times["cp -r"])
        for name, values in times.items():
            med = statistics.median(values)
            rows.append((n, name, med, min(values), max(values), med / cp,
                         statistics.median(rss[name]) if name in rss else None))
        print(f"{n:,} jobs: {size / 1e6:.0f} MB in images/, {folders} folders ({top} entries "
              f"in images/ itself), at most {most} files in one folder", file=sys.stderr)
    print("| jobs | what | median s | min-max s | / cp -r | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, name, med, lo, hi, ratio, peak in rows:
        print(f"| {n:,} | {name} | {med:.2f} | {lo:.2f}-{hi:.2f} | {ratio:.2f} | "
              f"{'' if peak is None else f'{peak:.0f}'} |")
    folders, most = million_fan_out()
    print(f"\ndefault layout at 10^6 jobs: {folders} folders under images/, at most {most} files "
          "(image + sidecar + caption) in one")


if __name__ == "__main__":
    main()
