"""The docs stay true: README.md and docs/*.md are checked against the code they describe.

Every YAML example is planned by the library as a manifest (an example that cannot stand
alone says so with a first line `# fragment`, and must still parse), every command and
option the CLI's parser knows is named somewhere in the docs, every relative link (and its
`#anchor`) resolves, and every `pip install` line installs from the clone with extras that
pyproject.toml declares. All of it reads files and plans small manifests: a second or two.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from batchgen import load_manifest, plan_manifest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MANIFESTS = ROOT / "manifests"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (their `#` lines are no headings, their brackets no links)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _yaml_blocks() -> list[tuple[str, str, int | None]]:
    """Each YAML block with where it is and the job count the paragraph before it states."""
    blocks = []
    for path in DOCS:
        text = _text(path)
        for m in FENCE.finditer(text):
            if m.group(1) in ("yaml", "yml"):
                line = text.count("\n", 0, m.start()) + 1
                paragraph = text[:m.start()].rstrip().rsplit("\n\n", 1)[-1]
                said = re.search(r"\b(\d[\d,]*) jobs\b", paragraph)
                count = int(said.group(1).replace(",", "")) if said else None
                blocks.append((f"{path.relative_to(ROOT)}:{line}", m.group(2), count))
    return blocks


YAML_BLOCKS = _yaml_blocks()


def test_the_docs_have_yaml_examples():
    assert len(YAML_BLOCKS) >= 5, [where for where, _, _ in YAML_BLOCKS]
    assert sum(count is not None for _, _, count in YAML_BLOCKS) >= 3  # the counts are read


@pytest.mark.parametrize("where,block,count", YAML_BLOCKS, ids=[where for where, _, _ in YAML_BLOCKS])
def test_every_yaml_example_plans(where, block, count, tmp_path):
    """Planned as a manifest; where the paragraph before it says "N jobs", it plans N."""
    if block.startswith("# fragment"):
        yaml.safe_load(block)  # a fragment need not plan, but must be YAML
        return
    # Examples name data files and wildcards as the bundled manifests do: relative to
    # the manifest's folder, so they find manifests/'s own.
    for name in ("data", "wildcards"):
        (tmp_path / name).symlink_to(MANIFESTS / name, target_is_directory=True)
    path = tmp_path / "example.yaml"
    path.write_text(block, encoding="utf-8")
    plan = plan_manifest(load_manifest(path))
    assert plan.jobs > 0, f"{where} plans no job"
    if count is not None:
        assert plan.jobs == count, f"{where}: the text says {count} jobs, plan makes {plan.jobs}"


def test_the_readme_example_is_a_bundled_manifest():
    """The README's manifest is castle-sweep.yaml, so `batchgen plan manifests/castle-sweep.yaml` shows it."""
    block = next(b for where, b, _ in YAML_BLOCKS if where.startswith("README.md"))
    assert yaml.safe_load(block) == yaml.safe_load(_text(MANIFESTS / "castle-sweep.yaml"))


def _commands() -> dict[str, argparse.ArgumentParser]:
    # The parser `batchgen` itself parses with: walked, so a new option cannot go unseen.
    cli_main = importlib.import_module("batchgen.cli.main")  # the module; batchgen.cli.main is the function
    build = getattr(cli_main, "build_parser", None) or getattr(cli_main, "_build_parser")
    parser = build()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [opt for action in parser._actions if action.help is not argparse.SUPPRESS
            for opt in action.option_strings if opt.startswith("--") and opt != "--help"]


def test_every_command_and_option_is_documented():
    docs = "\n".join(_text(path) for path in DOCS)
    missing = []
    for name, parser in _commands().items():
        if name and not re.search(rf"\bbatchgen {re.escape(name)}\b", docs):
            missing.append(f"batchgen {name}")
        for opt in _options(parser):
            if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", docs):
                missing.append(f"batchgen {name} {opt}".replace("  ", " "))
    assert not missing, "not in README.md or docs/: " + ", ".join(missing)


def test_the_option_walk_sees_the_parser():
    """The check above can only fail if it reads the real parser: it must find its commands."""
    commands = _commands()
    assert {"plan", "run", "status", "export"} <= set(commands)
    assert "--simulate" in _options(commands["run"])


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group(0) == "_" else "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in HEADING.findall(_prose(_text(path)))}


def test_every_relative_link_resolves():
    broken = []
    for path in DOCS:
        for target in LINK.findall(_prose(_text(path))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, file:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where} no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where} no such heading")
    assert not broken, "\n".join(broken)


def test_every_pip_install_line_installs_from_the_clone():
    """The distribution is not on the package index: extras are installed from the clone."""
    extras = set(tomllib.loads(_text(ROOT / "pyproject.toml"))["project"]["optional-dependencies"])
    bad = []
    for path in DOCS:
        for line in _text(path).splitlines():
            if "pip install" not in line:
                continue
            if re.search(r"pip install\s+(-\S+\s+)*['\"]?(batchgen|batchgen-runner)\b", line):
                bad.append(f"{path.relative_to(ROOT)}: {line.strip()} (installs by name)")
            for group in re.findall(r"\.\[([^\]]*)\]", line):
                unknown = {e.strip() for e in group.split(",")} - extras
                if unknown:
                    bad.append(f"{path.relative_to(ROOT)}: {line.strip()} (no extra {sorted(unknown)})")
    assert not bad, "\n".join(bad)


def test_the_readme_is_a_front_door():
    readme = _text(ROOT / "README.md")
    assert len(readme.splitlines()) < 300
    ci = _text(ROOT / ".ci" / "run")
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    blocks = [line.strip() for line in readme.splitlines() if line.startswith("    python3 -m venv")]
    assert blocks[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/batchgen run manifests/demo.yaml --simulate",
        test_command,
    ]


def test_every_declared_dependency_says_why_in_the_readme():
    project = tomllib.loads(_text(ROOT / "pyproject.toml"))["project"]
    declared = [*project["dependencies"], *(d for ds in project["optional-dependencies"].values() for d in ds)]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() for d in declared}
    readme = _text(ROOT / "README.md")
    why = readme[readme.index("## Dependencies"):]
    table = {m.lower() for row in why.splitlines() if row.startswith("| `")
             for m in re.findall(r"`([A-Za-z0-9_.-]+)`", row.split("|")[1])}
    assert names <= table, f"declared but not in the README's Dependencies: {sorted(names - table)}"
