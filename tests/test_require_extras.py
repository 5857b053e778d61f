"""conftest's COSTLINE_REQUIRE_EXTRAS guard: a skip for a missing import fails the run in CI.

Runs a real inner pytest session (a subprocess, with this suite's conftest) over: a module skipped
at import, a test that skips for a missing import, a test that skips for another reason, and a test
whose program is missing (conftest.missing_binary, as the SeaweedFS and PostgreSQL fixtures call it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

MODULE_LEVEL = '''
import pytest
pytest.importorskip("costline_no_such_extra_module")

def test_never_runs():
    pass
'''

IN_TEST = '''
import pytest

def test_needs_an_extra():
    pytest.importorskip("costline_no_such_extra_either")

def test_skips_for_another_reason():
    pytest.skip("no Chromium here")
'''


MISSING_BINARY = '''
import pytest
from conftest import missing_binary

@pytest.fixture
def weed():
    missing_binary("the SeaweedFS `weed` binary is not installed")

def test_needs_weed(weed):
    pass
'''


def _run(tmp_path: Path, require: str | None, *files: str) -> tuple[str, int]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    for i, text in enumerate(files):
        (tmp_path / f"test_inner_{i}.py").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "COSTLINE_REQUIRE_EXTRAS"}
    if require is not None:
        env["COSTLINE_REQUIRE_EXTRAS"] = require
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    return proc.stdout + proc.stderr, proc.returncode


def _count(out: str, what: str) -> int:
    m = re.search(rf"(\d+) {what}", out.strip().splitlines()[-1])
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("require", [None])
def test_without_the_flag_missing_extras_skip(tmp_path: Path, require: str | None) -> None:
    out, rc = _run(tmp_path, require, MODULE_LEVEL, IN_TEST)
    assert rc == 0, out
    assert _count(out, "skipped") == 3 and _count(out, "failed") == 0, out


def test_with_the_flag_a_skip_inside_a_test_fails_and_names_the_module(tmp_path: Path) -> None:
    out, rc = _run(tmp_path, "1", IN_TEST)
    assert rc == 1, out
    assert _count(out, "failed") == 1 and _count(out, "skipped") == 1, out  # the Chromium skip stays a skip
    assert "costline_no_such_extra_either" in out and "COSTLINE_REQUIRE_EXTRAS=1" in out


def test_with_the_flag_a_module_level_importorskip_fails_collection(tmp_path: Path) -> None:
    out, rc = _run(tmp_path, "1", MODULE_LEVEL)
    assert rc != 0, out
    assert _count(out, "error") == 1 and "costline_no_such_extra_module" in out, out


def test_a_missing_binary_skips_without_the_flag(tmp_path: Path) -> None:
    out, rc = _run(tmp_path, None, MISSING_BINARY)
    assert rc == 0, out
    assert _count(out, "skipped") == 1 and _count(out, "error") == 0, out


def test_with_the_flag_a_missing_binary_fails_and_says_why(tmp_path: Path) -> None:
    out, rc = _run(tmp_path, "1", MISSING_BINARY)
    assert rc == 1, out
    assert _count(out, "error") == 1 and _count(out, "skipped") == 0, out  # the fixture fails: setup error
    assert "the SeaweedFS `weed` binary is not installed (COSTLINE_REQUIRE_EXTRAS=1" in out, out
