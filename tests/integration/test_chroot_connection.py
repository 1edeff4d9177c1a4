"""kata.osbuilder.chroot: API mounts exist inside, never outside; nothing survives a failure or a kill.

A busybox rootfs is enough for what needs no Python (ansible's raw module); file transfer runs
through dd inside the rootfs, so absolute links in the tree resolve inside it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "run", "var", "etc", "root"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    shutil.copy(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "cat", "dd", "sleep", "ls", "grep", "mkdir", "rm", "echo", "true", "chmod", "env"):
        os.symlink("busybox", root / "bin" / applet)
    os.symlink("/run", root / "var/run")  # absolute, as in Debian
    os.symlink("/etc/host-file", root / "etc/escape")  # would point at the builder's /etc outside
    return root


def adhoc(root: Path, module: str, args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ansible", "all", "-i", f"{root},", "-c", "kata.osbuilder.chroot",
                           "-m", module, "-a", args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def mounts_under(path: Path) -> list[str]:
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    return [m for m in out.splitlines() if m.startswith(str(path))]


def processes_naming(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if str(path) in l and "pytest" not in l]


def sleepers() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.strip().endswith("sleep 300")]


def test_mounts_inside_and_none_left(rootfs):
    r = adhoc(rootfs, "raw", "cat /proc/self/mounts; ls /dev/null /dev/pts; echo pid=$$")
    assert r.returncode == 0, r.stdout + r.stderr
    inside = r.stdout
    for target in (" /proc proc", " /sys sysfs", " /dev ", " /dev/pts devpts"):
        assert target in inside, f"{target!r} not mounted inside:\n{inside}"
    assert "pid=1\n" in inside  # the command is PID 1 of its own PID namespace: its children die with it
    assert mounts_under(rootfs) == []


def test_failing_command_leaves_nothing(rootfs):
    r = adhoc(rootfs, "raw", "sleep 1 & exit 3")
    assert r.returncode != 0
    assert mounts_under(rootfs) == []
    time.sleep(1.5)
    assert processes_naming(rootfs) == []


def test_killed_run_leaves_nothing(rootfs):
    proc = subprocess.Popen(["ansible", "all", "-i", f"{rootfs},", "-c", "kata.osbuilder.chroot", "-m", "raw",
                             "-a", "sleep 300 & sleep 300"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not sleepers():
            time.sleep(0.2)
        assert sleepers(), "the command never started"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole ansible run, as a kill -9 of make would
    finally:
        proc.wait()
    time.sleep(1)
    assert mounts_under(rootfs) == []
    assert sleepers() == [], "processes survived the kill"


def test_put_and_fetch_resolve_links_inside(rootfs, tmp_path):
    host_file = Path("/etc/host-file")
    assert not host_file.exists()
    # script copies the file in with put_file and runs it; no Python needed in the rootfs
    play = tmp_path / "play.yml"
    play.write_text(f"""
- hosts: all
  gather_facts: false
  tasks:
    - name: Run a script that writes through absolute links
      ansible.builtin.script: {tmp_path / 'writer.sh'}
""")
    (tmp_path / "writer.sh").write_text(f"#!/bin/sh\ncat > /var/run/written <<'EOF'\npayload\nEOF\necho x > /etc/escape\n")
    r = subprocess.run(["ansible-playbook", "-i", f"{rootfs},", "-c", "kata.osbuilder.chroot", str(play)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (rootfs / "run/written").read_text() == "payload\n"
    assert not host_file.exists(), "a write through an absolute link escaped to the builder"
    assert (rootfs / "etc/host-file").read_text() == "x\n"
    assert mounts_under(rootfs) == []
