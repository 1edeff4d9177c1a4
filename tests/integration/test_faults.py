"""Fault tolerance: builds killed (SIGINT, SIGKILL) at many points of every phase, and a failing
task, leave no mount, loop device, network namespace or process behind, never a partial artifact
at the output path, and the next run succeeds with the same bytes.

Runs on the warm bootstrap cache with its own ROOTFS_DIR. Kill points: while re-provisioning
(an option change makes the rootfs stale: bootstrap copy, agent, init, finalize) and while a
reused rootfs is packed (preflight, cache check, pack). SOURCE_DATE_EPOCH makes every complete
artifact the same bytes, so anything else at the output path would be a partial one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.audit import audit_initrd
from tests.support.build import WORK, make, make_args, sha256

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]
ROOTFS = WORK / "test-faults" / "rootfs"
ENV = {"SOURCE_DATE_EPOCH": "1700000000"}
PROVISION_KILLS = [(1.0, signal.SIGINT), (2.5, signal.SIGKILL), (4, signal.SIGINT), (6, signal.SIGKILL),
                   (9, signal.SIGINT), (13, signal.SIGKILL), (18, signal.SIGINT), (25, signal.SIGKILL),
                   (33, signal.SIGINT), (42, signal.SIGKILL)]
REUSE_KILLS = [(0.5, signal.SIGKILL), (2, signal.SIGINT), (3.5, signal.SIGKILL), (5, signal.SIGINT),
               (6.5, signal.SIGKILL), (7.5, signal.SIGINT), (8.5, signal.SIGKILL), (9.5, signal.SIGINT),
               (10.5, signal.SIGKILL), (12, signal.SIGINT)]


def leaks(wait: float = 10) -> list[str]:
    """Mounts, loop devices, network namespaces left by the killed build (right after the kill,
    give or take a task's end), processes separately (see processes())."""
    deadline = time.monotonic() + wait
    while True:
        found = [f for f in _leaks() if not f.startswith("process ")]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def processes() -> set[int]:
    """Processes whose command line names the test's work dir. An Ansible worker is a session
    leader of its own: a SIGKILL to make's process group orphans it, and it may block for ever
    writing its result to the dead playbook. The next run ends such orphans (bootstrap role)."""
    return {int(f.split()[1].rstrip(":")) for f in _leaks() if f.startswith("process ")}


def _leaks() -> list[str]:
    found = []
    mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout.split()
    found += [f"mount {m}" for m in mounts if str(ROOTFS.parent) in m]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in loops.splitlines() if str(ROOTFS.parent) in line]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {n}" for n in netns.splitlines() if "kata" in n]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(ROOTFS.parent) in cmd and int(pid) != os.getpid():
            found.append(f"process {pid}: {cmd[:160]}")
    return found


def run_and_kill(dest: Path, delay: float, sig: int, good: str | None, **variables) -> str:
    """Start make in its own process group, kill the group after delay; return what the output
    path held at any moment that was not the complete artifact."""
    bad: list[str] = []
    out = dest / "kata-containers-initrd.img"
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                if out.exists() and good and sha256(out) != good:
                    bad.append("partial artifact at the output path")
            except FileNotFoundError:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    proc = subprocess.Popen(make_args("initrd", dest, AGENT_INIT="yes", ROOTFS_DIR=str(ROOTFS), **variables),
                            env=dict(os.environ, **ENV), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # children reparented to init exit with their namespaces
    stop.set()
    t.join()
    return ";".join(sorted(set(bad)))


def test_killed_builds_leave_nothing_and_rerun_succeeds(tmp_path, ref_agent):
    dest = tmp_path / "out"
    agent = dict(AGENT_SOURCE_BIN=str(ref_agent))
    r = make("initrd", dest, env=ENV, AGENT_INIT="yes", ROOTFS_DIR=str(ROOTFS), **agent)
    assert r.returncode == 0, r.stdout[-3000:]
    good = sha256(dest / "kata-containers-initrd.img")
    kills = 0
    orphans: set[int] = set()
    # reused rootfs: preflight, cache check, pack
    for delay, sig in REUSE_KILLS:
        assert run_and_kill(dest, delay, sig, good, **agent) == ""
        kills += 1
        assert leaks() == [], f"after a kill at {delay}s"
        orphans |= processes()
    # a stale rootfs (another AGENT_VERSION): bootstrap copy, agent, init, extras, finalize
    for delay, sig in PROVISION_KILLS:
        assert run_and_kill(dest, delay, sig, None, AGENT_VERSION=f"fault-{delay}", **agent) == ""
        kills += 1
        assert leaks() == [], f"after a kill at {delay}s while provisioning"
        orphans |= processes()
        out = dest / "kata-containers-initrd.img"
        assert not out.exists() or sha256(out) == good or (dest / "kata-containers-initrd.img.sha256").read_text().split()[0] == sha256(out)
    assert kills >= 20
    # a failing task: an agent tarball that is not one
    bogus = tmp_path / "agent.tar.gz"
    bogus.write_bytes(b"not a tarball")
    r = make("initrd", dest, env=ENV, AGENT_INIT="yes", ROOTFS_DIR=str(ROOTFS), AGENT_TARBALL=str(bogus))
    assert r.returncode != 0
    assert leaks() == []
    # the next run succeeds, gives the same bytes, and nothing stale is left
    r = make("initrd", dest, env=ENV, AGENT_INIT="yes", ROOTFS_DIR=str(ROOTFS), **agent)
    assert r.returncode == 0, r.stdout[-3000:]
    assert sha256(dest / "kata-containers-initrd.img") == good
    assert (dest / "kata-containers-initrd.img.sha256").read_text().split()[0] == good
    assert sorted(p.name for p in dest.iterdir()) == ["kata-containers-initrd.img", "kata-containers-initrd.img.sha256"]
    assert not Path(str(ROOTFS) + ".new").exists()
    assert leaks() == [] and processes() == set()
    assert not [pid for pid in orphans if Path(f"/proc/{pid}").exists()], "orphans outlived the next run"
    print(f"{kills} kills, {len(orphans)} orphaned Ansible workers ended by the next run")
    assert audit_initrd(dest / "kata-containers-initrd.img") == []
