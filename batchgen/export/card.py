"""The dataset card: ``README.md`` in the export folder, as the Hugging Face Hub reads one.

Its YAML front matter names every split's files (``configs``) and their features
(``dataset_info``), so ``load_dataset(DIR)`` finds the data and its types without being told
the format; the prose below is generated from the batch: model and provider, the manifest
(embedded), jobs by state, the axes and their values, when the images were made, the batchgen
version, and a licence for the user to fill in. A ``README.md`` batchgen did not write is
never replaced. Every split recorded in the folder is listed, each read from its own state
file; file names come from the layout, never from what a state file says.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from batchgen._version import __version__
from batchgen.export.base import atomic_write, layouts
from batchgen.export.files import read_no_follow
from batchgen.export.scan import Provenance
from batchgen.export.state import ExportState, batchgen_names

__all__ = ["CARD", "CardFacts", "write_card"]

CARD = "README.md"
#: the line that says a card is batchgen's own (and so may be rewritten)
MARK = "<!-- written by batchgen export; edit the licence above, anything else is rewritten -->"
#: a manifest longer than this is not embedded whole
MANIFEST_BYTES = 64 * 1024


@dataclass
class CardFacts:
    """What the card says about the batch."""

    batch: str
    source: str                        # the batch folder or store URL
    manifest: Path | None              # the manifest file the export was given, if any
    counts: dict[str, int]             # jobs by state
    about: Provenance
    exported: int
    format: str
    split: str
    where: list[str]
    dropped: str | None = None         # what --dedupe dropped, in words


def _ours(root: Path) -> bool | None:
    """None when there is no card, True when it is batchgen's, False when it is someone's."""
    path = root / CARD
    if not os.path.lexists(path):
        return None
    raw = read_no_follow(path)
    return raw is not None and MARK.encode() in raw


def write_card(root: Path, facts: CardFacts) -> bool:
    """Write (or rewrite) the card; False when a README.md batchgen did not write is there."""
    ours = _ours(root)
    if ours is False:
        return False
    configs, features = _splits(root)
    meta: dict[str, object] = {"license": _licence(root) if ours else "unknown",
                               "tags": ["batchgen", "synthetic"], "configs": configs}
    if features is not None:
        meta["dataset_info"] = {"features": features}
    text = ("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
            + MARK + "\n\n" + _body(facts))
    atomic_write(root, CARD, text.encode())
    return True


def _licence(root: Path) -> str:
    """The licence the user wrote into batchgen's card, kept across rewrites."""
    raw = read_no_follow(root / CARD) or b""
    head, sep, _ = raw.decode("utf-8", "replace").removeprefix("---\n").partition("\n---\n")
    try:
        meta = yaml.safe_load(head) if sep else None
    except yaml.YAMLError:
        meta = None
    value = meta.get("license") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else "unknown"


def _splits(root: Path) -> tuple[list[dict[str, object]], list | None]:
    """One config naming every split's files; the features when every split agrees on them."""
    states = []
    for path in sorted(root.glob(".batchgen-export-*.json")):
        split = path.name.removeprefix(".batchgen-export-").removesuffix(".json")
        state = ExportState.load(root, split, batchgen_names(split))
        if state is not None and state.split == split and state.format in layouts():
            states.append(state)
    files = [{"split": s.split, "path": layouts()[s.format].data_files(s.split)} for s in states]
    kinds = {s.format for s in states}
    shared = {repr(s.features) for s in states}
    features = states[0].features if states and len(shared) == 1 and len(kinds) == 1 else None
    return [{"config_name": "default", "data_files": files}], features or None


def _body(f: CardFacts) -> str:
    lines = [f"# {f.batch}", "",
             f"Synthetic images made with [batchgen](https://pypi.org/project/batchgen-runner/) "
             f"{__version__}, from the batch `{f.batch}` ({f.source}).", ""]
    lines += ["## Licence", "",
              "Not set: fill in `license:` above (the provider's and the model's terms apply "
              "to the images).", ""]
    lines += ["## How it was made", "", "| provider | host | model | images |", "|---|---|---|---:|"]
    for (name, host, model), n in sorted(f.about.providers.items()):
        lines.append(f"| {name} | {host} | {model} | {n:,} |")
    lines.append("")
    if f.about.first:
        lines += [f"Images finished between {f.about.first} and {f.about.last}.", ""]
    lines += ["## Contents", "",
              f"{f.exported:,} image(s) in split `{f.split}` ({f.format})"
              + (f", only {' and '.join(f.where)}" if f.where else "") + "."
              + (f" {f.dropped}." if f.dropped else ""), "",
              "Jobs of the batch by state: "
              + (", ".join(f"{state} {n:,}" for state, n in sorted(f.counts.items())) or "none")
              + ".", ""]
    if f.about.axes:
        lines += ["| axis | values (images) |", "|---|---|"]
        for axis, values in sorted(f.about.axes.items()):
            shown = ", ".join(f"`{v}` ({n:,})" for v, n in _order(values))
            more = " and more" if axis in f.about.more else ""
            lines.append(f"| {axis} | {shown}{more} |")
        lines.append("")
    lines += ["Every row carries its job's provenance as columns (prompt, seed, LoRAs, axis "
              "values, sha256) and the whole sidecar as JSON in `sidecar`.", ""]
    lines += ["## Manifest", ""]
    lines += _manifest(f.manifest)
    return "\n".join(lines) + "\n"


def _order(values: Counter[str]) -> list[tuple[str, int]]:
    return sorted(values.items(), key=lambda kv: kv[0])


def _manifest(path: Path | None) -> list[str]:
    if path is None:
        return ["Exported from the batch folder: the manifest was not given.", ""]
    try:
        raw = path.read_bytes()
    except OSError:
        return [f"`{path.name}` could not be read.", ""]
    text = raw[:MANIFEST_BYTES].decode("utf-8", "replace")
    fence = "````" if "```" in text else "```"
    cut = [f"(the first {MANIFEST_BYTES // 1024} KB of {len(raw):,} bytes)", ""] \
        if len(raw) > MANIFEST_BYTES else []
    return [f"`{path.name}`:", "", *cut, fence + "yaml", text.rstrip("\n"), fence, ""]
