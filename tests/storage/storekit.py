"""Jobs and sidecars for Writer tests, and a script that saves one job in a process of its own.

``python storekit.py URL NAME SIZE`` saves one job of SIZE random bytes (with a caption) through
an ObjectStoreWriter on URL, so a test can SIGKILL a writer in the middle of a save.
"""

from __future__ import annotations

import os
import sys

from batchgen.job import Job
from batchgen.storage.sidecar import ImageInfo, ProviderInfo, Sidecar


def job(name: str, n: int = 0, caption: str | None = "a caption", fmt: str = "png") -> Job:
    return Job(job_id=f"{n:016x}", index=n, request={"prompt": f"job {n}", "seed": n,
                                                    "size": "256*256", "output_format": fmt},
               axes={"n": n}, replica=0, name=name, caption=caption)


def sidecar(of: Job) -> Sidecar:
    return Sidecar(batchgen_version="test", batch="b", job_id=of.job_id, index=of.index,
                   replica=0, provider=ProviderInfo("jiekou", "api.jiekou.ai", "z-image-turbo-lora"),
                   task_id=f"task-{of.index}", request=of.request, axes=of.axes, seed=of.index,
                   caption=of.caption, image=ImageInfo(of.extension, 256, 256))


if __name__ == "__main__":
    from batchgen.storage.objectstore import ObjectStoreWriter

    url, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    one = job(name)
    ObjectStoreWriter(url).save(one, os.urandom(size), sidecar(one))
    print("saved")
