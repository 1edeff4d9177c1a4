"""The agent role's sources and checks, through the real pipeline: AGENT_TARBALL with a checksum,
a wrong checksum, and an agent built for another architecture."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import vm

REPO = Path(__file__).resolve().parents[2]
ROOTFS = "/var/lib/kata-osbuilder/work/test-agent-sources/rootfs"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]


def initrd(dest: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ansible-playbook", "playbooks/initrd.yml", "-e", "agent_init=true",
                           "-e", f"rootfs_dir={ROOTFS}", "-e", f"images_build_dest={dest}", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})


def failure_message(output: str) -> str:
    """The msg of the last failed task (results printed as JSON, so it is one line)."""
    fatal = [l for l in output.splitlines() if l.startswith("fatal:")]
    assert fatal, output[-1500:]
    return json.loads(fatal[-1].split("=>", 1)[1])["msg"]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory, ref_agent) -> Path:
    d = tmp_path_factory.mktemp("tarball")
    (d / "usr/bin").mkdir(parents=True)
    shutil.copy(ref_agent, d / "usr/bin/kata-agent")
    out = d / "kata-static-agent.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", str(out), "-C", str(d), "usr"], check=True)
    return out


@pytest.mark.boot
def test_tarball_with_checksum_boots(tarball, tmp_path, kernel):
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    r = initrd(tmp_path, "-e", f"agent_tarball={tarball}", "-e", f"agent_sha256={digest}")
    assert r.returncode == 0, r.stdout[-3000:]
    boot = vm.boot(kernel, initrd=tmp_path / "kata-containers-initrd.img", append="kata_ref_agent.poweroff")
    assert boot.ready and boot.ready.group(1) == "1", boot.console[-1500:]


def test_wrong_checksum_is_refused(tarball, tmp_path):
    r = initrd(tmp_path, "-e", f"agent_tarball={tarball}", "-e", "agent_sha256=" + "0" * 64)
    assert r.returncode != 0
    msg = failure_message(r.stdout)
    assert "Agent checksum mismatch" in msg and str(tarball) in msg and "expected " + "0" * 64 in msg, msg
    assert not (tmp_path / "kata-containers-initrd.img").exists()


def test_agent_for_another_architecture_is_refused(ref_agent, tmp_path):
    foreign = tmp_path / "kata-agent"
    data = bytearray(ref_agent.read_bytes())
    data[18:20] = (0xB7).to_bytes(2, "little")  # e_machine = EM_AARCH64
    foreign.write_bytes(bytes(data))
    r = initrd(tmp_path / "out", "-e", f"agent_source_bin={foreign}")
    assert r.returncode != 0
    msg = failure_message(r.stdout)
    assert msg == f"AGENT_SOURCE_BIN {foreign} is built for aarch64, not {os.uname().machine}", msg
    assert not (tmp_path / "out" / "kata-containers-initrd.img").exists()
