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
"""

import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import BUFSIZE, ConnectionBase
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

    def _connect(self):
        if self._connected:
            return self
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

    def _popen(self, cmd: str, stdin=subprocess.PIPE) -> subprocess.Popen:
        self._connect()
        argv = chroot_argv(self.root, self.get_option("mounts"), self.get_option("executable"), cmd)
        display.vvvv(f"EXEC {shlex.join(argv[-2:])}", host=self.root)
        return subprocess.Popen([to_bytes(a, errors="surrogate_or_strict") for a in argv],
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self.root)
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
        proc = self._popen(f"dd if={shlex.quote(in_path)} bs={BUFSIZE} status=none", stdin=subprocess.DEVNULL)
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as dst:
            for chunk in iter(lambda: proc.stdout.read(BUFSIZE), b""):
                dst.write(chunk)
        stderr = proc.stderr.read()
        proc.wait()
        if proc.returncode != 0:
            raise AnsibleError(f"kata.osbuilder.chroot: failed to fetch {in_path}: {stderr.decode(errors='replace').strip()}")

    def close(self):
        # Nothing to release: mounts die with each command's namespace.
        super().close()
        self._connected = False
