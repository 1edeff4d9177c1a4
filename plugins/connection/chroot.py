# Copyright: kata.osbuilder contributors
# Apache License 2.0
"""Connection plugin: run tasks inside a rootfs directory, with /proc, /sys, /dev, /dev/pts mounted."""
from __future__ import annotations

DOCUMENTATION = r"""
name: chroot
short_description: Run tasks inside a guest rootfs being built, with proc, sys and dev mounted
description:
  - Runs commands and copies files into a rootfs directory on the builder, as C(chroot) does, and
    gives every command the mounts a package manager or maintainer script expects,
    C(/proc), C(/sys), C(/dev) and C(/dev/pts).
  - The mounts live in a private mount namespace made for each command (C(unshare --mount)),
    so they exist for exactly as long as the command does. Nothing is ever left mounted on the
    builder, whether the task succeeds, fails, or the run is interrupted or killed.
  - Each command also gets its own PID namespace, so a daemon a maintainer script starts in the
    rootfs ends with the command instead of running on in the builder.
  - Files are moved with C(dd) inside the chroot, so absolute symlinks in the rootfs are resolved
    inside it and never point a write at the builder's own files.
  - Needs root on the builder (mount namespaces and chroot).
  - B(Remote builders.) With O(builder) set, the rootfs is a directory on another machine, reached
    over SSH. This plugin wraps C(ansible.builtin.ssh) and runs on the builder exactly the argv it
    runs locally (C(unshare ... chroot ROOT sh -c CMD)), so a remote rootfs gets the same private
    mount and PID namespace per command. C(put_file) copies the file with the ssh plugin (sftp/scp)
    to a temporary file on the builder, then C(dd) inside the chroot reads it and the temporary file
    is removed in the same command; C(fetch_file) is the reverse. The builder needs C(unshare),
    C(chroot) and C(mount) and its SSH user must be root.
  - The collection's playbooks set O(builder) from the builder's inventory variables
    (C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_ssh_private_key_file),
    C(ansible_ssh_common_args), ...), see C(playbooks/builders.yml); without it (the default) the
    rootfs is on the controller.
author: kata.osbuilder contributors
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description: Path of the rootfs directory on the builder.
    type: string
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  executable:
    description: Shell inside the rootfs that runs the commands.
    type: string
    default: /bin/sh
    vars:
      - name: ansible_executable
  mounts:
    description: Which API filesystems to mount into the rootfs for each command.
    type: list
    elements: string
    default: [proc, sys, dev]
    vars:
      - name: kata_chroot_mounts
  builder:
    description:
      - Empty (the default) when the rootfs is on the machine Ansible runs on.
      - Otherwise the SSH settings of the builder that holds the rootfs, as a dict with the keys
        C(host) (required), C(port), C(user), C(private_key_file), C(ssh_args), C(ssh_common_args),
        C(ssh_extra_args), C(host_key_checking), C(control_path_dir), C(timeout) (the options of
        C(ansible.builtin.ssh) of the same names, C(user) being C(remote_user)), and C(tmp_dir),
        the builder directory for files in transit (default C(/tmp)).
    type: dict
    default: {}
    vars:
      - name: kata_chroot_builder
"""

EXAMPLES = r"""
- name: Provision a rootfs
  hosts: rootfs
  connection: kata.osbuilder.chroot
  gather_facts: false
  tasks:
    - name: Runs inside the rootfs
      ansible.builtin.command: cat /etc/os-release
      changed_when: false

# A rootfs on a remote builder (what playbooks/builders.yml sets up for builders reached over SSH).
- name: Reach a rootfs on a builder
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Add a remote rootfs
      ansible.builtin.add_host:
        name: /var/lib/kata-osbuilder/work/debian-aarch64-agent/rootfs
        ansible_connection: kata.osbuilder.chroot
        kata_chroot_builder:
          host: 192.0.2.10
          user: root
          private_key_file: ~/.ssh/builder_ed25519
"""

import os
import shlex
import shutil
import subprocess
import uuid
import ctypes
import signal
import threading
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import BUFSIZE, ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

display = Display()

# Runs as: sh -c SETUP osb-chroot ROOT MOUNTS EXECUTABLE -c CMD (inside a private mount namespace).
_SETUP = r"""
set -e
root=$1; mounts=$2; shift 2
for m in $mounts; do
  case $m in
    proc) mkdir -p "$root/proc"; mount -t proc -o nosuid,nodev,noexec proc "$root/proc" ;;
    sys)  mkdir -p "$root/sys";  mount -t sysfs -o nosuid,nodev,noexec,ro sysfs "$root/sys" ;;
    dev)  mkdir -p "$root/dev";  mount --rbind /dev "$root/dev" ;;
  esac
done
exec chroot "$root" "$@"
"""

_KNOWN_MOUNTS = ("proc", "sys", "dev")

# builder key -> ansible.builtin.ssh option
_SSH_OPTIONS = {"host": "host", "port": "port", "user": "remote_user", "private_key_file": "private_key_file",
                "ssh_args": "ssh_args", "ssh_common_args": "ssh_common_args", "ssh_extra_args": "ssh_extra_args",
                "host_key_checking": "host_key_checking", "control_path_dir": "control_path_dir", "timeout": "timeout"}

# Run on a remote builder before the first command: is the rootfs there and can we enter it?
_REMOTE_CHECK = r"""
root=$1; sh=$2
[ "$(id -u)" = 0 ] || { echo "the SSH user $(id -un) is not root"; exit 3; }
for t in unshare chroot mount dd; do command -v "$t" >/dev/null 2>&1 || { echo "'$t' not found (util-linux, coreutils)"; exit 3; }; done
[ -d "$root" ] || { echo "$root is not a directory"; exit 3; }
[ -e "$root/$sh" ] || [ -L "$root/$sh" ] || { echo "$root has no /$sh"; exit 3; }
realpath -- "$root"
"""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker that started it dies (PR_SET_PDEATHSIG).

    unshare --kill-child passes that on to the namespace's first process, and the kernel then
    ends every process in the namespace.
    """
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _end_with_run(proc: subprocess.Popen, run_pid: int) -> None:
    """Kill PROC when the ansible run that started this worker is gone (the worker is orphaned)."""
    while proc.poll() is None:
        if os.getppid() != run_pid:
            proc.kill()
            return
        time.sleep(0.5)


def chroot_argv(root: str, mounts: list[str], executable: str, cmd: str) -> list[str]:
    """The builder-side argv that runs CMD in ROOT with MOUNTS, in a mount namespace of its own."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", _SETUP,
            "osb-chroot", root, " ".join(mounts), executable, "-c", cmd]


class Connection(ConnectionBase):
    """Local chroot with per-command, namespace-scoped API mounts."""

    transport = "kata.osbuilder.chroot"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def __init__(self, play_context, *args, **kwargs):
        super().__init__(play_context, *args, **kwargs)
        self.root = None
        self._init_args = args
        self._ssh = None  # the wrapped ansible.builtin.ssh connection, remote builders only
        self._where = "the builder"
        # Ansible runs a task in a worker process in a session of its own: when the run is killed
        # the worker lives on. Commands here end when the run (the worker's parent) does.
        self._run_pid = os.getppid()

    def _connect(self):
        if self._connected:
            return self
        builder = self.get_option("builder") or {}
        if builder:
            return self._connect_remote(builder)
        root = self.get_option("remote_addr")
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot needs root on the builder to enter {root}")
        if not os.path.isdir(root):
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: {root} is not a directory")
        sh = os.path.join(root, self.get_option("executable").lstrip("/"))
        if not os.path.lexists(sh):
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: {root} has no {self.get_option('executable')}")
        for tool in ("unshare", "chroot", "mount"):
            if not shutil.which(tool):
                raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: '{tool}' not found on the builder (util-linux, coreutils)")
        unknown = [m for m in self.get_option("mounts") if m not in _KNOWN_MOUNTS]
        if unknown:
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: unknown mounts {unknown}, known: {list(_KNOWN_MOUNTS)}")
        self.root = os.path.realpath(root)
        display.vvv(f"CHROOT {self.root}", host=self.root)
        self._connected = True
        return self

    def _connect_remote(self, builder: dict):
        root = self.get_option("remote_addr")
        unknown = sorted(set(builder) - set(_SSH_OPTIONS) - {"tmp_dir"})
        if unknown or not builder.get("host"):
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: builder needs a host and knows {sorted(_SSH_OPTIONS)} + tmp_dir"
                                           f"{', not ' + ', '.join(unknown) if unknown else ''}")
        bad = [m for m in self.get_option("mounts") if m not in _KNOWN_MOUNTS]
        if bad:
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: unknown mounts {bad}, known: {list(_KNOWN_MOUNTS)}")
        ssh = connection_loader.get("ansible.builtin.ssh", self._play_context, *self._init_args, shell=self._shell)
        ssh.set_options(direct={_SSH_OPTIONS[k]: v for k, v in builder.items()
                                if k in _SSH_OPTIONS and v not in (None, "")})
        self._ssh = ssh
        self._tmp_dir = builder.get("tmp_dir") or "/tmp"
        self._where = f"builder {builder['host']}"
        sh = self.get_option("executable").lstrip("/")
        rc, out, err = self._ssh_run(shlex.join(["sh", "-c", _REMOTE_CHECK, "osb-check", root, sh]))
        text = (out or err).decode(errors="replace").strip()
        if rc != 0:
            raise AnsibleConnectionFailure(f"kata.osbuilder.chroot: {self._where}: {text.splitlines()[-1] if text else f'exit {rc}'}")
        self.root = text.splitlines()[-1]
        display.vvv(f"CHROOT {self.root} ON {builder['host']}", host=self.root)
        self._connected = True
        return self

    def _ssh_run(self, cmd: str, in_data: bytes | None = None):
        """One command through the wrapped ssh connection (no tty, no become)."""
        return self._ssh.exec_command(cmd, in_data=in_data, sudoable=False)

    def _remote_chroot_cmd(self, cmd: str) -> str:
        return shlex.join(chroot_argv(self.root, self.get_option("mounts"), self.get_option("executable"), cmd))

    def _popen(self, cmd: str, stdin=subprocess.PIPE) -> subprocess.Popen:
        self._connect()
        argv = chroot_argv(self.root, self.get_option("mounts"), self.get_option("executable"), cmd)
        display.vvvv(f"EXEC {shlex.join(argv[-2:])}", host=self.root)
        proc = subprocess.Popen([to_bytes(a, errors="surrogate_or_strict") for a in argv],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_die_with_parent)
        threading.Thread(target=_end_with_run, args=(proc, self._run_pid), daemon=True).start()
        return proc

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self.root)
        self._connect()
        if self._ssh:
            return self._ssh_run(self._remote_chroot_cmd(cmd), in_data=in_data)
        proc = self._popen(cmd)
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    @staticmethod
    def _inside(path: str) -> str:
        return os.path.normpath(path if path.startswith("/") else "/" + path)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        out_path = self._inside(out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.root)
        self._connect()
        if self._ssh:
            return self._put_remote(in_path, out_path)
        try:
            src = open(to_bytes(in_path, errors="surrogate_or_strict"), "rb")
        except OSError as e:
            raise AnsibleError(f"kata.osbuilder.chroot: cannot read {in_path}: {e.strerror}")
        with src:
            proc = self._popen(f"dd of={shlex.quote(out_path)} bs={BUFSIZE} status=none", stdin=src)
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise AnsibleError(f"kata.osbuilder.chroot: failed to put {in_path} to {out_path}: {stderr.decode(errors='replace').strip()}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        in_path = self._inside(in_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.root)
        self._connect()
        if self._ssh:
            return self._fetch_remote(in_path, out_path)
        proc = self._popen(f"dd if={shlex.quote(in_path)} bs={BUFSIZE} status=none", stdin=subprocess.DEVNULL)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
            for chunk in iter(lambda: proc.stdout.read(BUFSIZE), b""):
                dst.write(chunk)
        stderr = proc.stderr.read()
        proc.wait()
        if proc.returncode != 0:
            raise AnsibleError(f"kata.osbuilder.chroot: failed to fetch {in_path}: {stderr.decode(errors='replace').strip()}")

    def _transit(self) -> str:
        return f"{self._tmp_dir.rstrip('/')}/.kata-chroot.{uuid.uuid4().hex}"

    def _put_remote(self, in_path, out_path):
        if not os.path.isfile(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleError(f"kata.osbuilder.chroot: cannot read {in_path}")
        tmp = self._transit()
        try:
            self._ssh.put_file(in_path, tmp)
        except AnsibleError as e:
            self._ssh_run(f"rm -f -- {shlex.quote(tmp)}")
            raise AnsibleError(f"kata.osbuilder.chroot: failed to copy {in_path} to {self._where}: {e}") from e
        dd = self._remote_chroot_cmd(f"dd of={shlex.quote(out_path)} bs={BUFSIZE} status=none")
        q = shlex.quote(tmp)
        rc, _, err = self._ssh_run(f"{dd} < {q}; rc=$?; rm -f -- {q}; exit $rc")
        if rc != 0:
            raise AnsibleError(f"kata.osbuilder.chroot: failed to put {in_path} to {out_path} on {self._where}: "
                               f"{err.decode(errors='replace').strip()}")

    def _fetch_remote(self, in_path, out_path):
        tmp = self._transit()
        q = shlex.quote(tmp)
        dd = self._remote_chroot_cmd(f"dd if={shlex.quote(in_path)} bs={BUFSIZE} status=none")
        rc, _, err = self._ssh_run(f"umask 077; {dd} > {q} || {{ rc=$?; rm -f -- {q}; exit $rc; }}")
        if rc != 0:
            raise AnsibleError(f"kata.osbuilder.chroot: failed to fetch {in_path} from {self._where}: "
                               f"{err.decode(errors='replace').strip()}")
        try:
            self._ssh.fetch_file(tmp, out_path)
        finally:
            self._ssh_run(f"rm -f -- {q}")

    def reset(self):
        if self._ssh:
            self._ssh.reset()

    def close(self):
        # Nothing to release: mounts die with each command's namespace (here or on the builder).
        if self._ssh:
            self._ssh.close()
            self._ssh = None
        super().close()
        self._connected = False
