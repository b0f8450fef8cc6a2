"""Job ids are stable: users' ledgers hold them, so the same manifest must give the same ids
byte for byte in every release, whichever path of the expansion makes them (a whole pass, or
the counting pass of ``plan`` and of a run's validating pass). The pins below were taken from
the expansion as it was when they were written; a change that moves one is a breaking change.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest

#: name -> (manifest, jobs, first three ids, sha256 of all ids joined by newlines, 16 hex)
PINS: dict[str, tuple[str, int, list[str], str]] = {
    "styles x seed range": ("""\
        prompt: "a {style} painting of a lighthouse, seed {seed}"
        matrix:
          style: [oil, ink, pastel]
          seed: {from: 1, to: 40}
        """, 120,
        ["8313995b307cafa0", "ff747180d4fad0a7", "83396a36bc1951de"], "94a1232b9f683f9f"),
    "loras x size, named sets and scale sweeps": ("""\
        prompt: "a {style} fox"
        output_format: png
        matrix:
          style: [oil, "ink {wash}", "水彩"]
          loras:
            - []
            - [{path: "https://example.com/loras/ghibli.safetensors", scale: [0.5, 1.0, 0.00001]}]
            - {name: ink-wash, loras: [{path: "https://example.com/l/ink.safetensors", scale: 0.8},
                                       {path: "https://example.com/l/paper.safetensors", scale: 0.4}]}
          size: ["1024*1024", "768*1344"]
        """, 30,
        ["0ee85bbbaaa477c9", "a16372d2bbec0546", "b3e4d212b8ff8e62"], "ac9d9553a6a1fcf0"),
    "random seeds, format specs": ("""\
        prompt: "seed {seed:08d} of {n!r} / {{literal}}"
        matrix:
          n: [a, b]
          seed: {random: 25, base: 7}
        """, 50,
        ["308b8df356ccd1ff", "dcd5b046e2675598", "d44c630be8aa175e"], "4459f3c40beb8914"),
    "a float variable innermost": ("""\
        prompt: "a castle, weight {w:.2f} ({w})"
        seed: 3
        matrix:
          size: ["1024*1024", "768*1344"]
          w: {from: 0.1, to: 1.0, step: 0.1}
        """, 20,
        ["78d2101b9b915a35", "fcb25f9ecf7fafab", "315d77ee40f19d41"], "bbe63410888916f3"),
    "duplicates, repeat, include": ("""\
        prompt: "a {style} cat"
        repeat: 2
        matrix:
          style: [oil, ink, oil]
          seed: [1, 2, 1]
        include:
          - {style: charcoal, seed: 9}
        """, 20,
        ["b7825f82d1cde374", "b7825f82d1cde374-1", "4150f88f09e0fb44"], "39d217fa1756e010"),
    "img2img from a template": ("""\
        model: z-image-turbo
        prompt: "a {n} dog"
        image_url: "https://example.com/ref/{n}.png"
        strength: 0.6
        matrix:
          n: [1, 2]
          seed: {from: 5, to: 9}
        """, 10,
        ["8c14694548243feb", "91e951d7accfe064", "f56c000142e87212"], "1c47df2c53f0b0e0"),
    "one axis, a constant prompt": ("""\
        prompt: "a plain room"
        matrix:
          seed: {from: 100, to: 160, step: 3}
        """, 21,
        ["e9f20820dc4b9559", "af147a49257b5109", "d9804fa1547e6bb4"], "df9e6cf6da8ad5c0"),
}


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_manifest(path)


@pytest.mark.parametrize("name", list(PINS))
def test_job_ids_are_pinned(tmp_path: Path, name: str) -> None:
    text, count, first, digest = PINS[name]
    ids = [job.job_id for job in _load(tmp_path, text).jobs()]
    assert (len(ids), ids[:3], _digest(ids)) == (count, first, digest)
