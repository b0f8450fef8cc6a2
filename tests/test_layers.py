"""The layers hold: what each package may load, checked in a fresh interpreter."""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "batchgen"
HEAVY = ("httpx", "anyio", "rich", "PIL", "uvicorn")


# One interpreter starts, then forks a child per module: each child begins with nothing but
# the interpreter's own start-up loaded (as a fresh ``python -c`` does) and imports one module.
_FORKS = """
import json, os, sys
found = {}
for module in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        __import__(module)
        os.write(write, json.dumps(sorted(sys.modules)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        found[module] = json.loads(pipe.read() or b"null")
    _, status = os.wait()
    if status:
        found[module] = None
print(json.dumps(found))
"""


@functools.cache
def _loaded(modules: tuple[str, ...]) -> dict[str, list[str] | None]:
    out = subprocess.run([sys.executable, "-c", _FORKS, *modules], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def loaded_by(module: str) -> set[str]:
    """The top-level packages importing ``module`` loads, in a fresh interpreter."""
    names = _loaded(tuple(module for module, _ in LAYERS))[module]
    assert names is not None, f"importing {module} failed"
    return {name.split(".")[0] for name in names}


LAYERS = [
    ("batchgen.manifest", (*HEAVY, "dynamicprompts", "pyparsing", "pyarrow")),
    ("batchgen.manifest.shards", HEAVY),
    ("batchgen.storage", ("httpx", "anyio", "rich", "PIL", "uvicorn")),
    ("batchgen.storage.results", ("httpx", "anyio", "rich", "PIL")),
    ("batchgen.storage.objectstore", HEAVY + ("fsspec", "s3fs", "botocore", "aiohttp")),
    ("batchgen.storage.mirror", HEAVY + ("fsspec", "s3fs", "botocore", "aiohttp")),
    ("batchgen.storage.remote", HEAVY + ("fsspec", "s3fs", "botocore", "aiohttp")),
    ("batchgen.storage.status", HEAVY + ("fsspec", "s3fs", "botocore", "aiohttp")),
    ("batchgen.export.images", HEAVY + ("fsspec", "s3fs", "botocore", "aiohttp", "pyarrow")),
    ("batchgen.storage.diff", ("httpx", "anyio", "rich", "PIL", "pydantic")),
    ("batchgen.storage.identity", ("httpx", "anyio", "rich", "PIL", "orjson", "pydantic")),
    ("batchgen.cli.invocation", ("httpx", "anyio", "rich", "PIL", "pydantic")),
    ("batchgen.export", ("httpx", "anyio", "rich", "PIL", "uvicorn", "pyarrow", "dynamicprompts")),
    ("batchgen.simulator", ("uvicorn",)),
    ("batchgen.engine.summary", ("httpx", "anyio", "rich", "PIL")),
    ("batchgen.view", HEAVY),
    ("batchgen.view.grid", ("httpx", "anyio", "rich", "uvicorn")),
    ("batchgen.view.viewer", HEAVY),  # the HTML viewer needs no Pillow
    ("batchgen.storage.live", HEAVY),
    ("batchgen.provider.limits", ("httpx", "rich", "PIL", "uvicorn", "pydantic")),
    ("batchgen", HEAVY),
]


@pytest.mark.parametrize(("module", "never"), LAYERS)
def test_a_package_loads_none_of_what_its_layer_forbids(module: str, never: tuple[str, ...]) -> None:
    assert not loaded_by(module) & set(never)


def imports_of(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("engine", ("batchgen.simulator", "batchgen.cli", "batchgen.export")),
    ("provider", ("batchgen.engine", "batchgen.storage", "batchgen.cli", "batchgen.simulator")),
    ("storage", ("batchgen.engine", "batchgen.provider", "batchgen.cli", "batchgen.simulator",
                 "batchgen.export")),
    ("manifest", ("batchgen.engine", "batchgen.storage", "batchgen.cli", "batchgen.simulator",
                  "batchgen.provider.client", "batchgen.provider.channel")),
    ("simulator", ("batchgen.engine", "batchgen.storage", "batchgen.cli", "batchgen.manifest")),
    ("view", ("batchgen.engine", "batchgen.provider", "batchgen.cli", "batchgen.simulator")),
    ("export", ("batchgen.engine", "batchgen.provider", "batchgen.cli", "batchgen.simulator",
                "httpx", "anyio")),
])
def test_no_package_imports_a_layer_above_or_beside_it(package: str, forbidden: tuple[str, ...]) -> None:
    bad = {m for m in imports_of(PACKAGE / package) if m.startswith(forbidden)}
    assert not bad, f"batchgen/{package} imports {sorted(bad)}"


def test_the_command_off_a_terminal_loads_no_bar_and_no_other_command_line_tool(tmp_path: Path) -> None:
    """A run whose output goes to a pipe (a cluster job, a script) starts without rich (the
    live bar is for terminals) and without httpx's command-line tool (click, pygments), and
    skips the scan of every installed package's metadata for pydantic plugins."""
    manifest = Path(__file__).resolve().parents[1] / "manifests" / "demo.yaml"
    code = ("import atexit, json, os, sys\n"
            "atexit.register(lambda: print(json.dumps([sorted(sys.modules),"
            " os.environ.get('PYDANTIC_DISABLE_PLUGINS')]), file=sys.stderr))\n"
            "sys.argv = ['batchgen', *sys.argv[1:]]\n"
            "from batchgen.cli import main\n"
            "sys.exit(main())\n")
    out = subprocess.run([sys.executable, "-c", code, "run", str(manifest), "--simulate",
                          "--output", str(tmp_path / "out"), "--max-jobs", "1"],
                         capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"})
    assert out.returncode == 0, out.stderr
    modules, plugins = json.loads(out.stderr.strip().splitlines()[-1])
    assert "batchgen.engine.runner" in modules and "httpx" in modules   # it did run
    assert not {m.split(".")[0] for m in modules} & {"rich", "click", "pygments"}
    assert plugins == "__all__"
