"""Debian guest end to end: make initrd / make image with the collection's roles, then boot them.

These build real rootfs trees (mmdebstrap from Debian's registry, as root) and boot the artifacts
under QEMU TCG with a Debian cloud kernel and the reference agent.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import vm
from tests.support.audit import audit_rootfs

REPO = Path(__file__).resolve().parents[2]
WORK = Path("/var/lib/kata-osbuilder/work")
SYSTEMD_ARGS = ("systemd.unit=kata-containers.target systemd.mask=systemd-networkd.service "
                "systemd.mask=systemd-networkd.socket")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]


def make(target: str, dest: Path, **variables: str) -> subprocess.CompletedProcess:
    args = ["make", "-s", "-C", str(REPO), target, f"IMAGES_BUILD_DEST={dest}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, capture_output=True, text=True, timeout=1200)


def recap_changed(output: str) -> int:
    """Sum of changed= over the PLAY RECAP lines."""
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1]))


def extract_initrd(initrd: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(initrd), "-C", str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def agent_initrd(tmp_path_factory, ref_agent):
    dest = tmp_path_factory.mktemp("initrd")
    r = make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return dest / "kata-containers-initrd.img"


@pytest.fixture(scope="module")
def systemd_image(tmp_path_factory, ref_agent):
    dest = tmp_path_factory.mktemp("image")
    r = make("image", dest, AGENT_INIT="no", AGENT_SOURCE_BIN=str(ref_agent))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return dest / "kata-containers.img"


@pytest.mark.boot
def test_agent_init_initrd_boots_to_agent(agent_initrd, kernel):
    result = vm.boot(kernel, initrd=agent_initrd, append="kata_ref_agent.poweroff", timeout=180)
    assert result.ready, result.console[-2000:]
    assert result.ready.group(1) == "1", "the agent must be PID 1"
    assert result.ready.group(3) == "rootfs"


def test_agent_init_initrd_size_and_checksum(agent_initrd):
    size = agent_initrd.stat().st_size
    assert size <= 15 * 1024 * 1024, f"initrd is {size} bytes, over 15 MB"
    digest = subprocess.run(["sha256sum", str(agent_initrd)], capture_output=True, text=True, check=True).stdout.split()[0]
    recorded = (agent_initrd.parent / (agent_initrd.name + ".sha256")).read_text().split()
    assert recorded == [digest, agent_initrd.name]


def test_agent_init_initrd_audit(agent_initrd, tmp_path):
    root = extract_initrd(agent_initrd, tmp_path / "x")
    assert os.readlink(root / "init") == "/usr/bin/kata-agent"
    assert os.readlink(root / "usr/sbin/init") == "/usr/bin/kata-agent"
    assert audit_rootfs(root, initrd=True) == []
    meta = yaml.safe_load((root / "var/lib/osbuilder/osbuilder.yaml").read_text())
    assert meta["agent"]["agent-is-init-daemon"] == "yes"
    assert meta["base-distro"]["name"] == "Debian"


@pytest.mark.boot
def test_systemd_image_boots_to_agent(systemd_image, kernel):
    result = vm.boot(kernel, nvme=systemd_image, timeout=300,
                     append=f"root=/dev/nvme0n1p1 ro rootwait {SYSTEMD_ARGS} kata_ref_agent.poweroff")
    assert result.ready, result.console[-3000:]
    assert result.ready.group(1) != "1", "systemd is PID 1, the agent its service"
    assert result.ready.group(3) == "ext4"
    assert "Reached target kata-containers.target" in result.console
    assert "Started kata-agent.service" in result.console


def test_systemd_rootfs_audit(systemd_image):
    root = WORK / "debian-x86_64-systemd" / "rootfs"
    assert audit_rootfs(root, initrd=False) == []
    units = root / "usr/lib/systemd/system"
    assert (units / "kata-agent.service").is_file() and (units / "kata-containers.target").is_file()
    assert os.readlink(root / "etc/systemd/system/basic.target.wants/kata-containers.target").endswith("kata-containers.target")
    assert not (units / "systemd-journald.service").exists(), "units the guest never needs are deleted"
    chrony = (root / "etc/chrony/chrony.conf").read_text()
    assert "refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0" in chrony and "makestep 1 -1" in chrony
    assert not re.search(r"^\s*(server|pool)\s", chrony, re.M)


def test_unchanged_build_is_reused_and_changed_agent_rebuilds(agent_initrd, ref_agent, tmp_path):
    dest = agent_initrd.parent
    before = agent_initrd.read_bytes()
    again = make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent))
    assert again.returncode == 0, again.stdout[-2000:]
    assert "not provisioned again" in again.stdout and recap_changed(again.stdout) == 0
    assert agent_initrd.read_bytes() == before

    other = tmp_path / "kata-agent"  # the same source built with other flags: other bytes
    subprocess.run(["make", "-s", "-C", str(REPO / "tools/ref-agent"), f"OUT={other}", "CFLAGS=-O2 -Wall"], check=True)
    assert other.read_bytes() != ref_agent.read_bytes()
    changed = make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(other))
    assert changed.returncode == 0, changed.stdout[-2000:]
    assert "not provisioned again" not in changed.stdout
    assert agent_initrd.read_bytes() != before
    root = extract_initrd(agent_initrd, tmp_path / "x")
    assert (root / "usr/bin/kata-agent").read_bytes() != ref_agent.read_bytes()
    # put the reference build back for the other tests in the session
    assert make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent)).returncode == 0
