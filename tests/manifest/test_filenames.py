"""File names that scale and stay WebDataset keys: the default fan-out, dot-free values,
scale order, and what an old flat-named batch folder gets on resume."""

from __future__ import annotations

import json

import random
import re
from collections import Counter
from pathlib import Path

from batchgen.manifest.loader import load_manifest
from batchgen.manifest.templates import DEFAULT_FILENAME, sanitize

SWEEP = """\
name: sweep
prompt: "a castle"
filename: "{loras}/s{seed}"
matrix:
  seed: [1, 2]
  loras:
    - []
    - [{path: "https://example.com/loras/ghibli.safetensors", scale: {from: 0, to: 1.5, step: 0.25}}]
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "m.yaml"
    path.write_text(text)
    return path


def test_the_default_spreads_jobs_over_folders_by_a_prefix_of_the_job_id(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, 'prompt: "a {n}"\nmatrix:\n  n: {from: 1, to: 50}\n'))
    assert m.filename == DEFAULT_FILENAME
    for job in m.jobs():
        assert job.name == f"{job.job_id[:3]}/{job.job_id}"


def test_a_million_default_names_keep_every_folder_small() -> None:
    # Job ids are the leading hex digits of a SHA-256: uniform, so random hex stands in.
    rng = random.Random(1)
    folders = Counter(f"{rng.getrandbits(64):016x}"[:3] for _ in range(1_000_000))
    assert len(folders) == 4096
    # an image, its sidecar and a caption per job: far under 10,000 files in any folder
    assert 3 * max(folders.values()) < 1000


def test_lora_labels_lose_their_dots_in_names_and_keep_them_in_axes(tmp_path: Path) -> None:
    jobs = list(load_manifest(write(tmp_path, SWEEP)).jobs())
    names = {j.name for j in jobs}
    assert "ghibli_0p25/s1" in names and "ghibli_1p5/s2" in names and "none/s1" in names
    for job in jobs:
        assert "." not in job.name  # a dot would end a WebDataset key
        assert re.fullmatch(r"[A-Za-z0-9_/-]+", job.name)
    assert {j.axes["loras"] for j in jobs} >= {"ghibli@0.25", "ghibli@1.5"}


def test_names_sort_in_scale_order(tmp_path: Path) -> None:
    jobs = [j for j in load_manifest(write(tmp_path, SWEEP)).jobs()
            if j.request["loras"] and j.request["seed"] == 1]
    by_name = sorted(jobs, key=lambda j: j.name + ".png")
    assert [j.request["loras"][0]["scale"] for j in by_name] == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5]


def test_sanitize_turns_decimal_points_into_p_and_other_dots_into_underscores() -> None:
    assert sanitize("0.5") == "0p5"
    assert sanitize("ghibli@0.25+detail@1") == "ghibli_0p25_detail_1"
    assert sanitize("v1.2 final.png") == "v1p2_final_png"
    assert sanitize("../x") == "___x"


def test_a_folder_made_by_the_old_flat_default_resumes_where_its_files_are(tmp_path: Path) -> None:
    """The ledger records each done job's file, so a manifest without ``filename:`` run
    against a folder made with the old ``{job_id}`` default keeps those files where they are
    (nothing is fetched or paid for again) and puts only new jobs in the fanned-out folders."""
    from batchgen.storage.folder import BatchFolder
    from batchgen.storage.ledger import Ledger
    from batchgen.storage.results import join

    m = load_manifest(write(tmp_path, 'prompt: "a {n}"\nmatrix:\n  n: [1, 2]\n'))
    first, second = list(m.jobs())
    folder = tmp_path / "out"
    ledger = Ledger.open(folder, m.name)
    (folder / "images").mkdir()
    old = f"images/{first.job_id}.webp"
    (folder / old).write_bytes(b"x" * 10)
    (folder / old).with_suffix(".json").write_text(json.dumps({"job_id": first.job_id, "image": {}}))
    ledger.submitting(first)
    ledger.submitted(first.job_id, "task-1")
    ledger.done(first.job_id, old, 10, "0" * 64)
    ledger.close()
    results = list(join(m.jobs(), Ledger.read(folder)))
    writer = BatchFolder(folder)
    assert results[0].file == old and writer.has_result(old, 10)  # done: not redone
    assert results[1].record is None
    assert writer.image_file(second) == f"images/{second.job_id[:3]}/{second.job_id}.webp"
