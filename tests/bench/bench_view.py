"""Benchmark `grid` and `view` on a 10,000-cell sweep.

Run by hand: `.venv/bin/python tests/bench/bench_view.py [--cells 10000] [--repeat 3] [--keep DIR]`.
Makes the batch once by really running a manifest (10 subjects x 10 seeds x 10 LoRA scales x
10 styles of 256*256 PNGs) on the in-process simulator, then, each in a fresh subprocess so
peak RSS is the command's own: `grid` with its defaults (one sheet per subject and seed) and
`view`; then the viewer opened from file:// in headless Chromium, timed until it is
interactive (every cell placed, the page answering). Prints markdown tables of medians.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE = 10


def manifest(folder: Path, cells: int) -> Path:
    side = round(cells ** 0.25)
    return sweep_manifest(folder, "bench-view", side, side)


def sweep_manifest(folder: Path, name: str, side: int, seeds: int) -> Path:
    """``side`` subjects x ``seeds`` seeds x ``side`` LoRA scales x ``side`` styles of 256*256
    PNGs, in ``folder/sweep.yaml``, writing to ``folder/out`` (bench_grid.py uses it too)."""
    scales = ", ".join(f"{0.25 * i:g}" for i in range(side))
    text = f"""name: {name}
prompt: "a {{subject}} in {{style}}, soft light"
size: "256*256"
output_format: png
concurrency: 64
output: {folder / 'out'}
filename: "{{subject}}/{{style}}/seed{{seed}}/{{loras}}"
matrix:
  subject: [{", ".join(f"subject {i}" for i in range(side))}]
  seed: {{from: 1, to: {seeds}}}
  loras:
    - [{{path: "https://example.com/loras/ghibli.safetensors", scale: [{scales}]}}]
  style: [{", ".join(f"style {i}" for i in range(side))}]
"""
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


def make_batch(path: Path) -> float:
    import anyio

    from batchgen import Batch, RunOptions, SimConfig, Simulator
    from batchgen.provider.targets import ApiKey

    sim = Simulator(SimConfig(task_seconds=0, task_jitter=0))
    options = RunOptions(api_transport=sim.api_transport(), image_transport=sim.image_transport(),
                         api_key=ApiKey("bench"), base_url=sim.api_base_url)
    started = time.perf_counter()
    summary = anyio.run(Batch(path, options).run)
    assert summary.done == summary.planned, summary
    return time.perf_counter() - started


def timed(args: list[str]) -> tuple[float, float, str]:
    """Seconds and peak RSS (MB) of one batchgen command in a fresh process."""
    code = ("import resource, sys, time; from batchgen.cli import main; t = time.perf_counter(); "
            "rc = main(sys.argv[1:]); dt = time.perf_counter() - t; "
            "print('BENCH', dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rc)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH"))
    _, seconds, rss, rc = line.split()
    assert rc == "0", out.stdout + out.stderr
    return float(seconds), float(rss), out.stdout


def open_in_chromium(index: Path) -> tuple[float, float, int]:
    """Wall seconds from navigation to interactive, the page's own ms to ready, cells shown."""
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp()
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                              options=options)
    try:
        started = time.perf_counter()
        driver.get(index.resolve().as_uri())
        WebDriverWait(driver, 120, poll_frequency=0.02).until(
            lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        # Interactive: the page answers a script at once after its first full render.
        driver.execute_script("return document.querySelectorAll('#grid .cell').length")
        wall = time.perf_counter() - started
        ready_ms = float(driver.execute_script("return document.body.dataset.readyMs"))
        count = driver.execute_script("return document.querySelectorAll('#grid .cell').length")
        return wall, ready_ms / 1000, count
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="make (or reuse) the batch here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-view-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = manifest(folder, args.cells)
    if not (folder / "out" / "ledger.jsonl").is_file():
        print(f"making the batch ({args.cells} jobs on the in-process simulator) ...", flush=True)
        print(f"  {make_batch(path):.0f} s")
    grid, view, browser = [], [], []
    for _ in range(args.repeat):
        shutil.rmtree(folder / "grid", ignore_errors=True)
        grid.append(timed(["grid", str(path), "--to", str(folder / "grid" / "sheet.png")]))
        view.append(timed(["view", str(path)]))
        browser.append(open_in_chromium(folder / "out" / "view" / "index.html"))
    sheets = len(list((folder / "grid").glob("*.png")))
    sheet_mb = sum(p.stat().st_size for p in (folder / "grid").glob("*.png")) / 2**20
    data_mb = (folder / "out" / "view" / "data.js").stat().st_size / 2**20
    med = lambda xs: statistics.median(xs)  # noqa: E731
    print(f"\n{args.cells} cells, 256*256 PNGs, median of {args.repeat} runs\n")
    print("| command | seconds | per cell | peak RSS | output |")
    print("|---|---:|---:|---:|---|")
    print(f"| `grid` (defaults: {sheets} sheets of 10 x 10) | {med([g[0] for g in grid]):.1f} | "
          f"{med([g[0] for g in grid]) / args.cells * 1000:.2f} ms | {med([g[1] for g in grid]):.0f} MB | "
          f"{sheet_mb:.0f} MB of PNG |")
    print(f"| `view` | {med([v[0] for v in view]):.2f} | {med([v[0] for v in view]) / args.cells * 1000:.3f} ms | "
          f"{med([v[1] for v in view]):.0f} MB | data.js {data_mb:.1f} MB |")
    print("\n| headless Chromium, file:// | seconds |")
    print("|---|---:|")
    print(f"| navigation to interactive ({browser[0][2]} cells placed) | {med([b[0] for b in browser]):.2f} |")
    print(f"| the page's own time to ready (performance.now) | {med([b[1] for b in browser]):.2f} |")
    print(json.dumps({"grid": grid and [g[:2] for g in grid], "view": [v[:2] for v in view],
                      "browser": browser}), file=sys.stderr)


if __name__ == "__main__":
    main()
