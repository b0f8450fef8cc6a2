"""Derived files follow the manifest: a caption template edited after a batch is done is
rewritten beside every image (caption file and sidecar), with no new task; plan counts them."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import orjson
from trio.testing import MockClock

from batchgen.manifest.loader import load_manifest
from batchgen.manifest.plan import plan_manifest
from batchgen.simulator import SimConfig, Simulator
from batchgen.storage.diff import FolderDiff
from batchgen.storage.ledger import Ledger
from faultkit import fast_options, run_batch, simulated, write_manifest

TEXT = """\
name: cap
prompt: "a {thing} at dawn"
size: "256*256"
output_format: png
filename: "{thing}"
caption: true
matrix:
  thing: [fox, owl, cat, dog]
"""


def simulator() -> Simulator:
    return Simulator(SimConfig(task_seconds=1.0, task_jitter=0.2), clock=anyio.current_time)


def go(manifest: Path, out: Path, sim: Simulator):
    return run_batch(manifest, fast_options(out, simulated=True, **simulated(sim)),
                     clock=MockClock(autojump_threshold=0))


def to_rederive(manifest: Path, out: Path) -> FolderDiff:
    diff = FolderDiff(Ledger.read(out))
    plan_manifest(load_manifest(manifest), observe=diff.add)
    return diff.finish()


def captions(out: Path) -> dict[str, tuple[str | None, str | None]]:
    found = {}
    for side in sorted((out / "images").glob("*.json")):
        txt = side.with_suffix(".txt")
        found[side.stem] = (json.loads(side.read_text())["caption"],
                            txt.read_text() if txt.exists() else None)
    return found


def test_an_edited_caption_template_rewrites_captions_and_sidecars_without_a_task(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, TEXT)
    out = tmp_path / "out"
    sim = simulator()
    assert go(manifest, out, sim).done == 4
    assert captions(out)["fox"] == ("a fox at dawn", "a fox at dawn")
    images = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}
    manifest.write_text(TEXT.replace("caption: true", 'caption: "photo of a {thing}"'))
    assert to_rederive(manifest, out).rederive == 4        # plan says how many
    summary = go(manifest, out, sim)
    assert summary.rederived == 4 and summary.submitted == 0 and sim.stats.tasks_created == 4
    assert captions(out) == {t: (f"photo of a {t}", f"photo of a {t}") for t in ("cat", "dog", "fox", "owl")}
    assert {p.name: p.read_bytes() for p in (out / "images").glob("*.png")} == images
    report = to_rederive(manifest, out)
    assert report.rederive == 0 and report.done == 4
    again = go(manifest, out, sim)                            # nothing left to do
    assert again.rederived == 0 and again.done == 4 and sim.stats.tasks_created == 4


def test_captions_turned_off_lose_their_files_and_a_label_edit_reaches_the_sidecar(tmp_path: Path) -> None:
    text = TEXT + "  mood: [calm]\n"
    manifest = write_manifest(tmp_path, text)
    out = tmp_path / "out"
    sim = simulator()
    go(manifest, out, sim)
    manifest.write_text(text.replace("caption: true\n", "").replace("[calm]", "[serene]"))
    summary = go(manifest, out, sim)
    assert summary.rederived == 4 and sim.stats.tasks_created == 4
    assert set(captions(out).values()) == {(None, None)}
    side = json.loads((out / "images" / "fox.json").read_text())
    assert side["axes"]["mood"] == "serene" and side["image"]["file"] == "images/fox.png"


def test_a_batch_recorded_without_digests_is_checked_once_and_left_alone_when_right(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, TEXT)
    out = tmp_path / "out"
    sim = simulator()
    go(manifest, out, sim)
    ledger = out / "ledger.jsonl"
    lines = []
    for raw in ledger.read_bytes().splitlines():
        event = orjson.loads(raw)
        event.pop("derived", None)  # as a ledger written before digests were kept
        lines.append(orjson.dumps(event))
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    diff = to_rederive(manifest, out)
    assert diff.rederive == 4 and diff.unrecorded == 4
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.json")}
    summary = go(manifest, out, sim)
    assert summary.rederived == 0  # checked: every sidecar already said it
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.json")} == before
    assert to_rederive(manifest, out).rederive == 0


def test_a_rewrite_cut_before_its_ledger_line_is_finished_without_a_download(tmp_path: Path) -> None:
    from batchgen.storage.derived import rederived

    manifest = write_manifest(tmp_path, TEXT)
    out = tmp_path / "out"
    sim = simulator()
    go(manifest, out, sim)
    manifest.write_text(TEXT.replace("caption: true", 'caption: "photo of a {thing}"'))
    fox = next(j for j in load_manifest(manifest).jobs() if j.axes["thing"] == "fox")
    side = out / "images" / "fox.json"
    side.write_bytes(rederived(side.read_bytes(), fox))  # the files rewritten, then a kill -9
    summary = go(manifest, out, sim)
    assert summary.redownloaded == 0 and summary.submitted == 0 and sim.stats.tasks_created == 4
    assert captions(out)["fox"] == ("photo of a fox", "photo of a fox")
    assert summary.rederived == 3  # the other three; fox's sidecar already said it
    assert to_rederive(manifest, out).rederive == 0


def test_a_batch_out_of_budget_still_rewrites_its_captions(tmp_path: Path) -> None:
    first = TEXT.replace("[fox, owl, cat, dog]", "[cat, dog]") + "price_per_image: 1\nmax_cost: 2\n"
    manifest = write_manifest(tmp_path, first)
    out = tmp_path / "out"
    sim = simulator()
    assert go(manifest, out, sim).done == 2
    # fox and owl come first now and the budget pays for neither; cat and dog are done
    manifest.write_text(first.replace("[cat, dog]", "[fox, owl, cat, dog]")
                        .replace("caption: true", 'caption: "photo of a {thing}"'))
    summary = go(manifest, out, sim)
    assert summary.budget_reached and summary.rederived == 2 and sim.stats.tasks_created == 2
    assert captions(out) == {t: (f"photo of a {t}", f"photo of a {t}") for t in ("cat", "dog")}
