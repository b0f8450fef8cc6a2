"""Benchmark `grid` alone at several sweep sizes (default 3,000 and 10,000 cells).

Run by hand: `.venv/bin/python tests/bench/bench_grid.py [--cells 3000 10000] [--repeat 3]
[--keep DIR]`. Each batch is made once on the in-process simulator with the manifest of
bench_view.py (subjects x seeds x LoRA scales x styles of 256*256 PNGs), then `grid` with its
defaults runs in a fresh subprocess per repeat (``--to`` a throwaway folder). Prints a markdown
table of medians. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_view import make_batch, sweep_manifest, timed  # noqa: E402


def manifest(folder: Path, cells: int) -> Path:
    """About ``cells`` jobs: 10 subjects x N seeds x 10 LoRA scales x 10 styles."""
    return sweep_manifest(folder, "bench-grid", 10, max(1, round(cells / 1000)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[3000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="make (or reuse) the batches under here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-grid-"))
    rows = []
    for cells in args.cells:
        folder = root / str(cells)
        folder.mkdir(parents=True, exist_ok=True)
        path = manifest(folder, cells)
        if not (folder / "out" / "ledger.jsonl").is_file():
            print(f"making the batch ({cells} jobs on the in-process simulator) ...", flush=True)
            print(f"  {make_batch(path):.0f} s", flush=True)
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(folder / "grid", ignore_errors=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, rss, _ = timed(["grid", str(path), "--to", str(folder / "grid" / "sheet.png"),
                                     "--quiet"])
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            runs.append((seconds, rss, cpu))
            print(f"  {cells} cells: {seconds:.1f} s, {cpu:.1f} s of CPU", flush=True)
        sheets = len(list((folder / "grid").glob("*.png")))
        rows.append((cells, sheets, statistics.median(r[0] for r in runs),
                     statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)))
    print(f"\n`grid` with its defaults, 256*256 PNGs, median of {args.repeat} runs "
          "(CPU: user + sys of the process, steadier than wall on a shared machine)\n")
    print("| cells | sheets | seconds | CPU seconds | per cell | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for cells, sheets, seconds, rss, cpu in rows:
        print(f"| {cells:,} | {sheets} | {seconds:.1f} | {cpu:.1f} | {seconds / cells * 1000:.2f} ms | {rss:.0f} MB |")


if __name__ == "__main__":
    main()
