"""Jobs per second of the written and the spread order over one manifest, and the memory a
spread pass holds (run by hand: python tests/bench/bench_order.py [JOBS])."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from batchgen.manifest import load_manifest


def manifest(folder: Path, jobs: int) -> Path:
    side = max(1, int(round((jobs / 8) ** 0.5)))
    path = folder / "bench.yaml"
    path.write_text(f'prompt: "a {{style}} {{a}} {{b}}"\norder: spread\nexpansion_limit: {10 * jobs}\n'
                    f"matrix:\n  style: [oil, ink, pencil, chalk, pastel, charcoal, gouache, fresco]\n"
                    f"  a: {{from: 1, to: {side}}}\n  b: {{from: 1, to: {side}}}\n")
    return path


def timed(make) -> tuple[float, int]:
    start = time.perf_counter()
    count = sum(1 for _ in make())
    return time.perf_counter() - start, count


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        m = load_manifest(manifest(Path(tmp), jobs))
        rows = []
        for name, make in (("written", m.jobs), ("spread", m.submit_order)):
            runs = [timed(make) for _ in range(3)]
            seconds = statistics.median(r[0] for r in runs)
            tracemalloc.start()
            for _ in make():
                pass
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append((name, runs[0][1], seconds, runs[0][1] / seconds, peak / 1e6))
    print(f"{'order':<8} {'jobs':>9} {'median s':>9} {'jobs/s':>10} {'peak MB':>8}")
    for name, count, seconds, rate, peak in rows:
        print(f"{name:<8} {count:>9,} {seconds:>9.2f} {rate:>10,.0f} {peak:>8.1f}")
    print(f"spread / written time: {rows[1][2] / rows[0][2]:.2f}")


if __name__ == "__main__":
    main()
