"""Ubuntu guest end to end: mmdebstrap from Ubuntu's archive, the same agent/init/finalize roles as
Debian, an agent-as-init initrd booted under QEMU TCG to the reference agent's line.

Skips (with the reason) when the archive does not answer within a few seconds. The archive keys
come from the ubuntu-keyring package fetched from the same archive; the bootstrap role keeps only
the pinned fingerprint from it (vars/ubuntu.yml), so an unverified download cannot add trust.
"""
from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support import vm

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = os.environ.get("KATA_OSB_UBUNTU_MIRROR", "http://archive.ubuntu.com/ubuntu")
KEYRING_DEB = "pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]


def _reachable() -> str:
    try:
        with urllib.request.urlopen(f"{ARCHIVE}/dists/noble/Release", timeout=5) as r:
            head = r.read(200).decode(errors="replace")
        return "" if "Ubuntu" in head else f"{ARCHIVE} answered, but not with an Ubuntu Release file"
    except OSError as e:
        return f"Ubuntu archive {ARCHIVE} not reachable from here ({e})"


@pytest.fixture(scope="module")
def ubuntu_initrd(tmp_path_factory, ref_agent):
    why = _reachable()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("ubuntu")
    deb = tmp / "ubuntu-keyring.deb"
    with urllib.request.urlopen(f"{ARCHIVE}/{KEYRING_DEB}", timeout=30) as r:
        deb.write_bytes(r.read())
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "k")], check=True)
    keyring = tmp / "k/usr/share/keyrings/ubuntu-archive-keyring.gpg"
    # the keyring is an extra var (-e wins over the role's parameters): slip it into the playbook command
    r = subprocess.run(["make", "-s", "-C", str(REPO), "initrd", "DISTRO=ubuntu", "AGENT_INIT=yes", f"ARCH={os.uname().machine}",
                        # own cache and work dirs: nothing shared with other builds running on the machine
                        f"ANSIBLE_PLAYBOOK=ansible-playbook -e bootstrap_keyring={keyring} -e cache_dir={tmp}/cache -e work_dir={tmp}/work",
                        f"AGENT_SOURCE_BIN={ref_agent}", f"IMAGES_BUILD_DEST={tmp}"],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return tmp / "kata-containers-initrd.img"


@pytest.mark.boot
def test_ubuntu_initrd_boots_to_agent(ubuntu_initrd, kernel):
    result = vm.boot(kernel, initrd=ubuntu_initrd, append="kata_ref_agent.poweroff", timeout=180)
    assert result.ready, result.console[-2000:]
    assert result.ready.group(1) == "1", "the agent must be PID 1"


def test_ubuntu_initrd_is_ubuntu_and_finalized(ubuntu_initrd, tmp_path):
    root = tmp_path / "x"
    root.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(ubuntu_initrd), "-C", str(root)], check=True)
    meta = yaml.safe_load((root / "var/lib/osbuilder/osbuilder.yaml").read_text())
    assert meta["base-distro"]["name"] == "Ubuntu" and meta["base-distro"]["version"] == "noble"
    assert "Ubuntu" in (root / "usr/lib/os-release").read_text()
    assert not list(root.glob("usr/bin/python3*")) and not (root / "var/lib/dpkg").exists()
    manifest = (root / "var/lib/osbuilder/packages.txt").read_text()
    assert "libseccomp2\t" in manifest and "iptables\t" in manifest
