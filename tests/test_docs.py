"""Every code block of the docs runs.

Each fenced block of docs/*.md whose info string is

  * ``python``: is run as a script, by this interpreter (so on Paddle 3.3 and 2.6 under
    ``make test``), in a fresh process, in an empty temporary directory;
  * ``python fluid-1.8``: is a fluid 1.8 program, run the same way by the fluid 1.8.5 venv
    ``.oracle-venv`` (``bash benchmarks/fluid_setup.sh``), and skipped where that is absent;
  * anything else (``text``, ``bash``, ``diff``, none): is not code to run.

docs/options.md is left out: its examples are doctests, run by tests/test_options.py.

Also checked: no other ``python ...`` marker is used (a typo would silently skip a block), the
``diff`` block of docs/migration.md is the diff of its fluid program and its Paddle program, and
the README links the API and migration pages.
"""
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ORACLE = ROOT / ".oracle-venv" / "bin" / "python"
DOCTESTED = {"options.md"}  # run by tests/test_options.py
FENCE = re.compile(r"^```([^`\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
PYTHON, FLUID = "python", "python fluid-1.8"
TIMEOUT = 600


def fenced_blocks(path):
    """(line of the opening fence, info string, code) of every fenced block of a markdown file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in FENCE.finditer(text)]


def doc_files():
    return sorted(p for p in DOCS.glob("*.md") if p.name not in DOCTESTED)


def runnable(kind):
    return [pytest.param(path, line, code, id=f"{path.name}:{line}")
            for path in doc_files() for line, info, code in fenced_blocks(path) if info == kind]


def run_script(python, code, tmp_path, name):
    script = tmp_path / name
    script.write_text(code)
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # the block sees what a user's script sees
    result = subprocess.run([str(python), str(script)], cwd=tmp_path, env=env, timeout=TIMEOUT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, f"{name} failed (exit {result.returncode}):\n{result.stdout}"
    return result.stdout


def test_blocks_found():
    """The collection is not silently empty, and every block marked python is one of the two
    known kinds."""
    kinds = {info for path in doc_files() for _, info, _ in fenced_blocks(path)}
    assert {PYTHON, FLUID} <= kinds
    unknown = {k for k in kinds if k.startswith("python") and k not in (PYTHON, FLUID)}
    assert not unknown, f"unknown python block markers {unknown}: use '{PYTHON}' or '{FLUID}'"


@pytest.mark.parametrize("path, line, code", runnable(PYTHON))
def test_python_block(path, line, code, tmp_path):
    run_script(sys.executable, code, tmp_path, f"{path.stem}_line{line}.py")


@pytest.mark.parametrize("path, line, code", runnable(FLUID))
def test_fluid_block(path, line, code, tmp_path):
    if not ORACLE.exists():
        pytest.skip(f"no fluid 1.8.5 interpreter at {ORACLE.relative_to(ROOT)} "
                    "(create it with: bash benchmarks/fluid_setup.sh)")
    run_script(ORACLE, code, tmp_path, f"{path.stem}_line{line}.py")


def test_migration_diff_is_current():
    """The diff shown in docs/migration.md is that of its fluid and Paddle programs."""
    blocks = fenced_blocks(DOCS / "migration.md")
    kinds = [info for _, info, _ in blocks]
    before = blocks[kinds.index(FLUID)][2]
    after = blocks[kinds.index(FLUID) + 1][2]
    assert kinds[kinds.index(FLUID) + 1] == PYTHON
    shown = blocks[kinds.index("diff")][2]
    expected = "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "fluid 1.8",
                                              "Paddle 2.6 / 3.3", n=0, lineterm=""))
    assert shown.rstrip("\n") == expected, "regenerate the diff block of docs/migration.md"


def test_readme_links_docs():
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/api.md", "docs/migration.md"):
        assert f"]({page})" in readme, f"README.md does not link {page}"
