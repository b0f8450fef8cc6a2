"""What comparing a manifest with its batch folder costs in the plan's one pass.

``plan`` and ``run`` pass every job of the manifest through ``FolderDiff`` when the folder has
a ledger. For N jobs all recorded done (a resumed batch), and for the same N after an edit that
makes every job new (so every file name is checked against the ledger's files), this prints
the plan pass alone and with the comparison, in µs per job (medians of ``--repeat`` runs),
and the peak RSS of the process.

Run by hand: ``.venv/bin/python tests/bench/bench_diff.py [--sizes 10000,100000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest
from batchgen.storage.diff import FolderDiff
from batchgen.storage.folder import image_path
from batchgen.storage.ledger import Ledger

MANIFEST = ('prompt: "a {style} painting, seed {seed}"\nexpansion_limit: 10000000\n'
            'filename: "{style}/{seed}"\nmatrix:\n'
            '  style: [oil, ink, pastel, charcoal, fresco, gouache, pencil, tempera, acrylic, pixel]\n'
            '  seed: {from: 1, to: SEEDS}\n')


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def measure(jobs: int, repeat: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    path = folder / "m.yaml"
    path.write_text(MANIFEST.replace("SEEDS", str(jobs // 10)))
    manifest = load_manifest(path)
    ledger = Ledger.open(folder / "out", manifest.name)
    for job in manifest.jobs():
        ledger.done(job.job_id, image_path(job), 1000, "0" * 64)
    ledger.close()
    ledger = Ledger.read(folder / "out")
    path.write_text("output_format: png\n" + path.read_text())
    edited = load_manifest(path)

    def compare(m) -> None:
        for rec in ledger.records.values():
            rec.seen = False
        diff = FolderDiff(ledger)
        plan_manifest(m, observe=diff.add)
        diff.finish()

    rows = {"plan": [], "resumed": [], "all new": []}
    for _ in range(repeat):
        rows["plan"].append(timed(lambda: plan_manifest(manifest)))
        rows["resumed"].append(timed(lambda: compare(manifest)))
        rows["all new"].append(timed(lambda: compare(edited)))
    return {k: statistics.median(v) / jobs * 1e6 for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| jobs | plan alone, µs/job | with the folder compared (all done) | (all new) | peak RSS |")
    print("|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args.repeat)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"| {size:,} | {row['plan']:.1f} | {row['resumed']:.1f} | {row['all new']:.1f} "
              f"| {rss} MB |", flush=True)


if __name__ == "__main__":
    main()
