"""kata.osbuilder.cpio_archive through real Ansible (ad-hoc), run from the checkout."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = "kata.osbuilder.cpio_archive"


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="cpio-module."))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def tree(workdir: Path) -> Path:
    root = workdir / "root"
    (root / "sbin").mkdir(parents=True)
    (root / "sbin" / "agent").write_bytes(b"#!/bin/sh\n")
    return root


def ansible(args: dict, *flags: str) -> tuple[int, dict]:
    """Run the module ad hoc on localhost; returns (exit code, the host's JSON result),
    the result with "status" added (SUCCESS, CHANGED, FAILED!)."""
    env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(["ansible", "localhost", "-m", MODULE, "-a", json.dumps(args), *flags],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r"^localhost \| ([A-Z]+!?) => ", proc.stdout, re.M)
    assert found, f"no result in:\n{proc.stdout}\n{proc.stderr}"
    result = json.JSONDecoder().raw_decode(proc.stdout, found.end())[0]
    return proc.returncode, {**result, "status": found.group(1)}


def test_changed_then_unchanged_and_check_mode(tree: Path, workdir: Path) -> None:
    dest = workdir / "initrd.img"
    args = {"src": str(tree), "dest": str(dest), "compression": "zstd", "mtime": 0,
            "extra_entries": [{"path": "init", "type": "symlink", "target": "/sbin/agent"},
                              {"path": "dev/console", "type": "char", "major": 5, "minor": 1,
                               "mode": "0600"}]}
    rc, checked = ansible(args, "--check")
    assert rc == 0 and checked["changed"] is True and not dest.exists()
    rc, first = ansible(args)
    assert rc == 0 and first["changed"] is True
    assert first["sha256"] == checked["sha256"] and first["size"] == dest.stat().st_size
    assert (first["entries"], first["compression"], first["compressor"], first["level"]) \
        == (5, "zstd", "zstd", 6)
    rc, second = ansible(args)
    assert rc == 0 and second["changed"] is False and second["sha256"] == first["sha256"]
    rc, checked = ansible(args, "--check")
    assert rc == 0 and checked["changed"] is False
    assert sorted(os.listdir(workdir)) == ["initrd.img", "root"]


@pytest.mark.parametrize("args, message", [
    ({"src": "/nonexistent", "dest": "{w}/a.img"}, "src /nonexistent does not exist"),
    ({"src": "{w}/root", "dest": "{w}/root/a.img"}, "dest {w}/root/a.img is inside src {w}/root"),
    ({"src": "{w}/root", "dest": "{w}/a.img", "compression": "gzip", "level": 12},
     "bad level 12 for gzip: use 1..9"),
    ({"src": "{w}/root", "dest": "{w}/a.img",
      "extra_entries": [{"path": "dev/console", "type": "char", "major": 5}]},
     "bad extra entry #1 (dev/console): type char needs minor"),
])
def test_bad_input_fails_with_one_line(tree: Path, workdir: Path, args: dict, message: str) -> None:
    args = json.loads(json.dumps(args).replace("{w}", str(workdir)))
    rc, result = ansible(args)
    assert rc != 0 and result["status"] == "FAILED!"
    assert result["msg"] == message.replace("{w}", str(workdir))
    assert sorted(os.listdir(workdir)) == ["root"]


def test_unknown_compression_refused_by_argument_spec(tree: Path, workdir: Path) -> None:
    rc, result = ansible({"src": str(tree), "dest": str(workdir / "a"), "compression": "bzip2"})
    assert rc != 0 and result["status"] == "FAILED!"
    assert "compression" in result["msg"] and "\n" not in result["msg"]


def test_ansible_doc() -> None:
    proc = subprocess.run(["ansible-doc", MODULE], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PAGER": "cat"})
    assert proc.returncode == 0, proc.stderr
    assert "extra_entries" in proc.stdout and "SOURCE_DATE_EPOCH" in proc.stdout
    doc = subprocess.run(["ansible-doc", "--json", MODULE], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert json.loads(doc)[MODULE]["return"]["sha256"]["type"] == "str"
