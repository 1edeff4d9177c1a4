"""A foreign architecture on the x86_64 builder through qemu-user-static (binfmt_misc), and two
architectures built in parallel in one run.

mmdebstrap --architectures=arm64 fetches arm64 packages and runs their maintainer scripts under
qemu-user; provisioning runs Ansible's modules inside the arm64 rootfs the same way. The agent is
the reference agent cross-built for aarch64 (gcc-aarch64-linux-gnu); an x86_64 agent is refused.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import vm

REPO = Path(__file__).resolve().parents[2]
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# Own rootfs trees (other tests build the same x86_64 agent rootfs in the default work dir); the
# bootstrap cache is shared.
WORK = Path("/var/lib/kata-osbuilder/foreign-test/work")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds need root"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the foreign architecture here is aarch64 on x86_64"),
    pytest.mark.skipif(not shutil.which("qemu-aarch64-static"), reason="needs qemu-user-static"),
]


def play(playbook: str, *extra: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    return subprocess.run(["ansible-playbook", f"playbooks/{playbook}", "-e", f"work_dir={WORK}", *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def fatal_msgs(output: str) -> list[str]:
    return [json.loads(m).get("msg", "") for m in re.findall(r"^fatal: \[[^\]]+\]: FAILED! => (\{.*\})$", output, re.M)]


def elf_machine(path: Path) -> int:
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", path
    return int.from_bytes(data[18:20], "little")


@pytest.fixture(scope="module", autouse=True)
def own_work_dir():
    yield
    shutil.rmtree(WORK.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def aarch64_agent() -> Path:
    if not shutil.which("aarch64-linux-gnu-gcc"):
        pytest.skip("needs gcc-aarch64-linux-gnu (make deps-apt)")
    return vm.ref_agent("aarch64")


@pytest.fixture(scope="module")
def two_arch_initrds(aarch64_agent, ref_agent, tmp_path_factory):
    """x86_64 natively and aarch64 through qemu-user, in parallel, in one run."""
    dest = tmp_path_factory.mktemp("multiarch")
    agent = str(REPO / "build" / "ref-agent") + "/{{ kata_build_arch }}/kata-ref-agent"
    r = play("initrd.yml", "-e", "arch=x86_64,aarch64", "-e", "agent_init=true", "-e", f"agent_source_bin={agent}",
             "-e", f"images_build_dest={dest}")
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
    return dest, r.stdout


@pytest.mark.slow
def test_two_architectures_in_one_run(two_arch_initrds):
    dest, out = two_arch_initrds
    recap = out.split("PLAY RECAP")[-1]
    for host in ("localhost-x86_64", "localhost-aarch64"):
        assert re.search(rf"^{host}\s+: ok=\d+ .*failed=0", recap, re.M), recap
    # one play over both builds: the same task ran for both hosts (in parallel, forks)
    bootstrap = out.split("TASK [kata.osbuilder.bootstrap : Look for a complete cache entry]")[1].split("TASK [")[0]
    assert "localhost-x86_64" in bootstrap and "localhost-aarch64" in bootstrap
    for arch in ("x86_64", "aarch64"):
        initrd = dest / arch / "kata-containers-initrd.img"
        digest = subprocess.run(["sha256sum", str(initrd)], capture_output=True, text=True, check=True).stdout.split()[0]
        assert (dest / arch / "kata-containers-initrd.img.sha256").read_text().split()[0] == digest


@pytest.mark.slow
def test_aarch64_rootfs_is_aarch64(two_arch_initrds, tmp_path):
    dest, out = two_arch_initrds
    assert "Make qemu-user run the build's binaries through binfmt_misc" in out
    assert (BINFMT / "qemu-aarch64").exists()
    root = tmp_path / "x"
    root.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(dest / "aarch64" / "kata-containers-initrd.img"), "-C", str(root)], check=True)
    assert elf_machine(root / "usr/bin/kata-agent") == 183          # EM_AARCH64
    libc = next(root.glob("usr/lib/aarch64-linux-gnu/libc.so.6"))
    assert elf_machine(libc) == 183
    assert not list(root.glob("usr/lib/x86_64-linux-gnu/libc.so*"))
    meta = yaml.safe_load((root / "var/lib/osbuilder/osbuilder.yaml").read_text())
    assert meta["architecture"] == "aarch64"
    pkgs = (root / "var/lib/osbuilder/packages.txt").read_text()
    assert "\tarm64\n" in pkgs and "\tamd64\n" not in pkgs


def test_x86_64_agent_for_an_aarch64_guest_is_refused(ref_agent, tmp_path):
    r = play("rootfs.yml", "-e", "arch=aarch64", "-e", "agent_init=true", "-e", f"agent_source_bin={ref_agent}",
             timeout=300)
    assert r.returncode != 0
    msgs = fatal_msgs(r.stdout)
    assert len(msgs) == 1, r.stdout[-3000:]
    assert re.search(rf"{re.escape(str(ref_agent))} is built for x86_64, (not|the guest is) aarch64", msgs[0]), msgs
    assert "Bootstrap with mmdebstrap" not in r.stdout


def test_foreign_architecture_without_qemu_user_is_refused(aarch64_agent):
    r = play("rootfs.yml", "-e", "arch=aarch64", "-e", "use_qemu_user=false", "-e", "agent_init=true",
             "-e", f"agent_source_bin={aarch64_agent}", timeout=300)
    assert r.returncode != 0
    assert fatal_msgs(r.stdout) == [
        "No builder for aarch64: the inventory has no host in builders_aarch64 and localhost is x86_64 "
        "(use_qemu_user=true builds it there through qemu-user-static)"], r.stdout[-3000:]
