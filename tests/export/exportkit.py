"""Batches to export: a real run against the in-process simulator, or a folder written
directly through the storage package (fast enough for thousands of jobs in a test).

``load_offline`` is ``datasets.load_dataset`` with the Hub switched off, as the export tests
(and a user without network) load every format: from local files only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Before datasets is imported: no Hub, no telemetry, and its caches in a folder of this run.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="batchgen-hf-"))

from PIL import Image  # noqa: E402

from batchgen.job import Job  # noqa: E402
from batchgen.simulator import SimConfig, Simulator  # noqa: E402
from batchgen.storage.folder import BatchFolder  # noqa: E402
from batchgen.storage.ledger import Ledger  # noqa: E402
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar, Timings  # noqa: E402
from faultkit import fast_options, run_batch, simulated  # noqa: E402

#: 9 jobs: 3 subjects x 3 LoRA settings (two with a dotted scale in their label); the
#: "forbidden" subject is refused by the provider (ILLEGAL_PROMPT), so 6 jobs are done.
SWEEP = """\
name: sweep
prompt: "a {subject} castle on a hill"
size: "256*256"
output_format: png
caption: "{subject} castle, {loras}"
filename: "{subject}/{loras}"
matrix:
  subject: [red, blue, forbidden]
  loras:
    - []
    - [{path: "https://example.com/loras/ghibli.safetensors", scale: [0.25, 0.5]}]
"""


def run_sweep(folder: Path, text: str = SWEEP, **config: Any) -> tuple[Path, Path]:
    """Run ``text`` against the in-process simulator (``config``: more ``SimConfig``
    fields); returns (manifest, batch folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "sweep.yaml"
    out = folder / "out"
    manifest.write_text(text + f"output: {out}\n")
    sim = Simulator(SimConfig(task_seconds=0, task_jitter=0, **config))
    run_batch(manifest, fast_options(out, **simulated(sim)))
    return manifest, out


def tiny_png(i: int) -> bytes:
    """A real, distinct, 8x8 PNG for job ``i``."""
    img = Image.new("RGB", (8, 8), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    img.putpixel((i % 8, (i // 8) % 8), (255 - (i % 256), 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def make_folder(folder: Path, count: int, *, start: int = 0, batch: str = "made",
                fmt: str = "png", caption: bool = True, image: Any = tiny_png) -> list[str]:
    """Write ``count`` done jobs into a batch folder through the storage package, as a run
    leaves them (default file names, sidecars, captions, a done ledger); returns job ids."""
    ledger = Ledger.open(folder, batch)
    writer = BatchFolder(folder)
    writer.prepare()
    ids = []
    try:
        for i in range(start, start + count):
            job_id = hashlib.sha256(f"{batch}-{i}".encode()).hexdigest()[:16]
            scale = (i % 4) * 0.25
            request = {"prompt": f"a tiny picture number {i}", "seed": i, "size": "256*256",
                       "loras": [{"path": "https://example.com/loras/ghibli.safetensors",
                                  "scale": scale}] if i % 2 else [],
                       "output_format": fmt, "enable_base64_output": False}
            axes = {"n": i, "loras": f"ghibli@{scale:g}" if i % 2 else "none"}
            job = Job(job_id, i, request, axes, 0, f"{job_id[:3]}/{job_id}",
                      request["prompt"] if caption else None)
            data = image(i)
            sidecar = Sidecar(batchgen_version="0", batch=batch, job_id=job_id, index=i, replica=0,
                              provider=ProviderInfo("jiekou", "api.simulator", "z-image-turbo-lora"),
                              task_id=f"task-{i}", request=request, axes=axes, seed=i,
                              caption=job.caption, image=ImageInfo(fmt, 8, 8), timings=Timings())
            ledger.submitting(job)
            ledger.submitted(job_id, f"task-{i}")
            saved = writer.save(job, data, sidecar)
            ledger.done(job_id, saved.file, saved.size, saved.sha256)
            ids.append(job_id)
    finally:
        ledger.close()
    return ids


def sidecars(folder: Path) -> dict[str, dict[str, Any]]:
    """Every sidecar of a batch folder by job id, as JSON."""
    out = {}
    for path in (folder / "images").rglob("*.json"):
        data = json.loads(path.read_text())
        out[data["job_id"]] = data
    return out


def image_bytes(folder: Path) -> dict[str, bytes]:
    """Every image of a batch folder by job id (from its sidecar's name)."""
    out = {}
    for path in (folder / "images").rglob("*.json"):
        data = json.loads(path.read_text())
        out[data["job_id"]] = path.with_suffix("." + data["image"]["format"]).read_bytes()
    return out


def load_offline(kind: str, data_dir: Path, cache: Path, **kwargs: Any) -> Any:
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(kind, data_dir=str(data_dir), cache_dir=str(cache), **kwargs)


def wds_samples(shard: Path) -> list[dict[str, Any]]:
    """The samples of one tar as ``webdataset`` groups them (its own tar reader and key
    rule), over a file this helper opens and closes."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    with open(shard, "rb") as fh:
        return list(group_by_keys(tar_file_expander([{"url": str(shard), "stream": fh}])))
