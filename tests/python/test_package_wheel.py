"""What a package registry and its users see: a stripped native library, complete metadata, an
abi3 wheel, and an sdist that holds everything the build needs."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tarfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

uringmq = pytest.importorskip("uringmq")

REPO = Path(__file__).resolve().parents[2]


def section_names(path: Path) -> list:
    """The section names of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = sections[shstrndx][4]
    names = []
    for name_off, *_ in sections:
        start = strtab_off + name_off
        names.append(data[start:data.index(b"\0", start)].decode())
    return names


def test_native_library_is_stripped():
    from uringmq import _uringmq

    names = section_names(Path(_uringmq.__file__))
    assert ".symtab" not in names and not any(n.startswith(".debug_") for n in names), names


def test_metadata_is_complete():
    md = distribution("uringmq").metadata
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Documentation"} <= set(urls)
    classifiers = md.get_all("Classifier") or []
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Programming Language :: Python :: 3.9" in classifiers
    assert md["License"] == "Apache-2.0" or md["License-Expression"] == "Apache-2.0"
    assert md["Requires-Python"] == ">=3.9"
    assert md["Description-Content-Type"].startswith("text/markdown")
    assert "pytest plugin" in (md.get_payload() or md["Description"] or "")


def test_wheel_is_abi3():
    wheel = distribution("uringmq").read_text("WHEEL") or ""
    tags = [l.split(": ", 1)[1] for l in wheel.splitlines() if l.startswith("Tag: ")]
    assert tags and all("-abi3-" in t and t.startswith("cp39-") for t in tags), tags


@pytest.mark.skipif(shutil.which("maturin") is None and not (Path(sys.executable).parent / "maturin").exists(),
                    reason="maturin is not installed")
def test_sdist_holds_the_whole_workspace(tmp_path):
    maturin = shutil.which("maturin") or str(Path(sys.executable).parent / "maturin")
    subprocess.run([maturin, "sdist", "--out", str(tmp_path)], cwd=REPO, check=True, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("uringmq-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ["pyproject.toml", "Cargo.toml", "Cargo.lock", "python/README.md", "python/uringmq/__init__.py",
                   "python/uringmq/py.typed", "python/src/lib.rs", "core/broker/src/lib.rs", "core/codec/src/lib.rs",
                   "PKG-INFO"]:
        assert needed in names, f"{needed} missing from the sdist"
