"""Bit-identical rebuilds: SOURCE_DATE_EPOCH set, the same (cached) bootstrap base, two fresh work
dirs (ROOTFS_DIR under the work dir) built at different wall-clock times give the same rootfs tar,
initrd, measured image and root hash.

Both builds provision from the cached base (a fresh work dir is never "current"); what they
write with current times or random ids must be pinned by the finalize role.
"""
from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.support.audit import audit_image, audit_initrd, audit_rootfs
from tests.support.build import WORK, make, rootfs_tar, sha256, tree_differences

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]
EPOCH = "1700000000"


def build_once(name: str, tmp_path, ref_agent) -> dict:
    rootfs = WORK / "test-repro" / name / "rootfs"
    shutil.rmtree(rootfs.parent, ignore_errors=True)
    dest = tmp_path / name
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    common = dict(AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent), ROOTFS_DIR=str(rootfs))
    r = make("initrd", dest, env=env, **common)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    r = make("image", dest, env=env, MEASURED_ROOTFS="yes", **common)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    tar = rootfs_tar(rootfs, tmp_path / f"{name}.tar", int(EPOCH))
    return dict(rootfs=rootfs, dest=dest, tar=sha256(tar),
                initrd=sha256(dest / "kata-containers-initrd.img"),
                image=sha256(dest / "kata-containers.img"),
                root_hash=(dest / "root_hash_vanilla.txt").read_text(),
                cmdline=(dest / "kata-containers.img.cmdline").read_text())


def test_two_builds_are_bit_identical(tmp_path, ref_agent):
    a = build_once("a", tmp_path, ref_agent)
    time.sleep(2)  # another wall-clock second, at least
    b = build_once("b", tmp_path, ref_agent)
    diffs = tree_differences(a["rootfs"], b["rootfs"])
    assert not diffs, diffs
    for key in ("tar", "initrd", "image", "root_hash", "cmdline"):
        assert a[key] == b[key], f"{key} differs: {a[key]} / {b[key]}"
    # what these builds made passes the audit too
    assert audit_rootfs(a["rootfs"], initrd=True) == []
    assert audit_initrd(a["dest"] / "kata-containers-initrd.img") == []
    assert audit_image(a["dest"] / "kata-containers.img", 3 << 20) == []
    for name in ("a", "b"):
        shutil.rmtree(WORK / "test-repro" / name, ignore_errors=True)
        (WORK / "test-repro" / name / "rootfs.provisioned").unlink(missing_ok=True)
