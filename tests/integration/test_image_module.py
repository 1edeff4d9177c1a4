"""kata.osbuilder.gpt_image through real Ansible (ad-hoc, from the checkout's ansible.cfg)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not shutil.which("ansible"), reason="ansible-core not installed")


def ansible(args: str, *extra: str) -> tuple[str, dict, subprocess.CompletedProcess]:
    """Run the module ad hoc with one-line output; returns (status, result, process)."""
    proc = subprocess.run(["ansible", "localhost", "-o", "-m", "kata.osbuilder.gpt_image",
                           "-a", args, *extra], cwd=REPO, capture_output=True, text=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("localhost | "))
    status, _, payload = line[len("localhost | "):].partition(" => ")
    return status, json.loads(payload), proc


@pytest.fixture()
def tree(tmp_path) -> Path:
    src = tmp_path / "src"
    (src / "sbin").mkdir(parents=True)
    (src / "sbin" / "init").write_bytes(b"#!/bin/sh\n")
    (src / "etc").mkdir()
    (src / "etc" / "os-release").write_text("ID=test\n")
    return src


def test_changed_then_unchanged(tree, tmp_path):
    dest = tmp_path / "out" / "root.img"
    dest.parent.mkdir()
    args = f"src={tree} dest={dest} seed=module-test epoch=1700000000 root_free_space=4"
    status, first, _ = ansible(args)
    assert status == "CHANGED" and first["changed"]
    assert first["size"] == dest.stat().st_size and first["partition_offset"] == 3 << 20
    status, second, _ = ansible(args)
    assert status == "SUCCESS" and not second["changed"]
    assert second["sha256"] == first["sha256"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["root.img"]


def test_check_mode_writes_nothing(tree, tmp_path):
    dest = tmp_path / "root.img"
    status, result, _ = ansible(f"src={tree} dest={dest} fs_type=erofs table=msdos", "--check")
    assert status == "CHANGED" and result["changed"] and result["fs_type"] == "erofs"
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("args, message", [
    ("src={tmp}/missing dest={tmp}/x.img", "src {tmp}/missing does not exist or is not a directory"),
    ("src={tmp}/src dest={tmp}/src/x.img", "dest {tmp}/src/x.img is inside src {tmp}/src"),
    ("src={tmp}/src dest={tmp}/x.img size=2M", "size 2097152 is too small for {tmp}/src: "),
    ("src={tmp}/src dest={tmp}/x.img partition_type_guid=nope", "partition_type_guid 'nope' is not a GUID"),
    ("src={tmp}/src dest={tmp}/x.img size=many", "size 'many' is not a number"),
])
def test_bad_input_fails_with_one_line(tree, tmp_path, args, message):
    status, result, proc = ansible(args.format(tmp=tmp_path))
    assert proc.returncode != 0 and status.startswith("FAILED")
    assert message.format(tmp=tmp_path) in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "x.img").exists()


def test_unknown_fs_type_is_refused_by_argument_spec(tree, tmp_path):
    status, result, _ = ansible(f"src={tree} dest={tmp_path}/x.img fs_type=btrfs")
    assert status.startswith("FAILED") and "fs_type" in result["msg"] and "btrfs" in result["msg"]


def test_ansible_doc():
    proc = subprocess.run(["ansible-doc", "kata.osbuilder.gpt_image"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for word in ("dax_header", "root_free_space", "seed", "partition_offset", "EXAMPLES"):
        assert word in proc.stdout
    meta = subprocess.run(["ansible-doc", "--json", "kata.osbuilder.gpt_image"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    doc = json.loads(meta)["kata.osbuilder.gpt_image"]["doc"]
    assert doc["options"]["fs_type"]["choices"] == ["ext4", "erofs"]
