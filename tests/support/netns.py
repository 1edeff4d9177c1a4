"""A "remote builder" for the tests: a network namespace with its own sshd, reached over a veth pair.

The namespace shares the filesystem with the controller, so the tests give the builder its own
work and output directories to make "remote" real. Everything started here is released on exit,
also on failure: the sshd is killed by its PID, the namespace and the veth pair are deleted and the
temporary directory (keys, config) is removed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclasses.dataclass(frozen=True)
class Builder:
    netns: str
    address: str          # the builder's address inside its namespace
    port: int             # sshd's port (as root, full PATH)
    port_bare: int        # a second port whose sessions get PATH without python3/unshare/chroot
    key: Path             # the controller's private key (authorized on the builder)
    known_hosts: Path
    sshd_pid: int
    dir: Path

    def ssh_args(self) -> str:
        return (f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=no -o IdentitiesOnly=yes "
                f"-o ControlMaster=auto -o ControlPersist=30s -o ControlPath={self.dir}/cp-%C")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _wait_port(netns: str, address: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd in {netns} did not listen on {address}:{port}")


@contextlib.contextmanager
def remote_builder(octet: int = 231):
    """Yield a Builder at 10.<octet>.0.2, reached from the controller's 10.<octet>.0.1."""
    tag = f"{os.getpid() % 100000}"
    netns, host_if, ns_if = f"kosb-{tag}", f"kosbh{tag}", f"kosbn{tag}"
    host_ip, ns_ip = f"10.{octet}.0.1", f"10.{octet}.0.2"
    d = Path(tempfile.mkdtemp(prefix="kosb-sshd."))
    proc = None
    made_netns = made_link = False
    try:
        os.chmod(d, 0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key"))
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        bare = d / "bare-bin"   # the tools a half-installed builder has: a shell and coreutils, no python3/unshare
        bare.mkdir()
        for tool in ("sh", "id", "uname", "cat", "test", "printf", "mkdir", "rm", "realpath", "mktemp", "echo", "ls"):
            path = shutil.which(tool)
            if path:
                os.symlink(path, bare / tool)
        (d / "sshd_config").write_text(
            f"ListenAddress {ns_ip}\nPort 22\nPort 2222\nHostKey {d}/host_key\nPidFile none\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "MaxSessions 50\nMaxStartups 50\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            f"Match LocalPort 2222\n  SetEnv PATH={bare}\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory

        _run("ip", "netns", "add", netns)
        made_netns = True
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        made_link = True
        _run("ip", "link", "set", ns_if, "netns", netns)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", netns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _run("ip", "netns", "exec", netns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        _run(SSHD, "-t", "-f", str(d / "sshd_config"))
        # ip netns exec execs sshd: the PID we hold is sshd's own.
        proc = subprocess.Popen(["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(d / "sshd.log", "wb"))
        _wait_port(netns, ns_ip, 22)
        _wait_port(netns, ns_ip, 2222)
        yield Builder(netns=netns, address=ns_ip, port=22, port_bare=2222, key=d / "client_key",
                      known_hosts=d / "known_hosts", sshd_pid=proc.pid, dir=d)
    finally:
        # ssh control masters the run left (ControlPersist) end first, so their sessions do too
        for sock in d.glob("cp-*"):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        if made_netns:
            # sessions of that sshd still alive: processes we started (through it), ended by PID
            left = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
            for pid in left:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
        if made_link:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        if made_netns:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
