"""Every Python snippet of the README's "Embedding in Python" and "pytest plugin" sections runs as
written: scripts in a fresh interpreter in an empty directory, test files through pytest in a
project that has nothing but the installed package (as a new user would run them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

uringmq = pytest.importorskip("uringmq")

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("Embedding in Python", "pytest plugin")


def snippets() -> list[str]:
    text = README.read_text()
    found = []
    for title in SECTIONS:
        section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert section, f"README has no section {title!r}"
        found += re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    return found


SCRIPTS = [s for s in snippets() if not re.search(r"^def test_", s, re.M)]
TEST_FILES = [s for s in snippets() if re.search(r"^def test_", s, re.M)]


def test_the_sections_have_snippets_of_both_kinds():
    assert SCRIPTS and TEST_FILES


@pytest.mark.parametrize("code", SCRIPTS, ids=[f"script{i + 1}" for i in range(len(SCRIPTS))])
def test_readme_script_runs(code: str, tmp_path: Path):
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("code", TEST_FILES, ids=[f"test_file{i + 1}" for i in range(len(TEST_FILES))])
def test_readme_test_file_passes(code: str, pytester: pytest.Pytester):
    pytester.makepyfile(test_readme=code)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= len(re.findall(r"^def test_", code, re.M))
