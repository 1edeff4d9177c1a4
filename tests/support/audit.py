"""Audit of what a guest artifact must not carry, shared by every test that builds one.

audit_rootfs(tree) for a rootfs directory (or an extracted initrd); audit_image(img) reads an
image's filesystem without mounting it (ext4 via debugfs rdump, erofs via fsck.erofs --extract)
and audits that; audit_initrd(initrd) extracts with bsdtar. Each returns the list of problems.
"""
from __future__ import annotations

import re
import stat
import subprocess
import tempfile
from pathlib import Path

import yaml

SETUID_ALLOWED = {"/usr/bin/su", "/usr/bin/mount", "/usr/bin/umount", "/usr/bin/passwd", "/usr/bin/chfn",
                  "/usr/bin/chsh", "/usr/bin/gpasswd", "/usr/bin/newgrp", "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
                  "/usr/bin/expiry", "/usr/bin/chage", "/usr/sbin/unix_chkpwd"}


def audit_rootfs(root: Path, *, initrd: bool, metadata: bool = True) -> list[str]:
    """What a guest must not carry; returns the problems found. metadata=False skips the
    osbuilder.yaml and package manifest checks (for the tests' tiny hand-made trees)."""
    problems = []
    for pattern in ("etc/ssh/ssh_host_*", "root/.ansible*", "root/.*_history", "**/*.kata-osb.tmp",
                    "tmp/*", "var/tmp/*", "etc/.pwd.lock"):
        problems += [f"host or build leftover: {p.relative_to(root)}" for p in root.glob(pattern)]
    for pattern in ("usr/bin/python3*", "usr/lib/python3*", "usr/local/lib/python3*"):
        problems += [f"python left: {p}" for p in root.glob(pattern)]
    for d in ("var/lib/apt/lists", "var/cache/apt"):
        left = [p for p in (root / d).rglob("*") if p.is_file() and p.name != "lock"] if (root / d).exists() else []
        problems += [f"package cache/list left: {p}" for p in left[:5]]
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or (resolv.exists() and resolv.read_bytes().strip()):
        problems.append("etc/resolv.conf is not empty")
    machine_id = root / "etc/machine-id"
    if machine_id.exists() and machine_id.read_bytes().strip():
        problems.append("etc/machine-id holds an id")
    if (root / "etc/hostname").exists():
        problems.append("etc/hostname left from the builder")
    shadow = root / "etc/shadow"
    if shadow.exists():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 1 and fields[1] not in ("*", "!", "!*", "", "!!") and not fields[1].startswith("!"):
                problems.append(f"password hash for {fields[0]}")
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        mode = p.lstat().st_mode
        if mode & (stat.S_ISUID | stat.S_ISGID):
            inside = "/" + str(p.relative_to(root))
            if inside not in SETUID_ALLOWED:
                problems.append(f"setuid/setgid not allowed: {inside}")
    if not metadata:
        return problems
    meta = yaml.safe_load((root / "var/lib/osbuilder/osbuilder.yaml").read_text())
    for key in ("osbuilder", "rootfs-creation-time", "description", "file-format-version", "architecture",
                "base-distro", "agent"):
        if key not in meta:
            problems.append(f"osbuilder.yaml lacks {key}")
    if meta.get("file-format-version") != "0.0.2":
        problems.append("osbuilder.yaml file-format-version is not 0.0.2")
    for key in ("name", "version", "packages"):
        if key not in meta.get("base-distro", {}):
            problems.append(f"osbuilder.yaml base-distro lacks {key}")
    for key in ("url", "name", "version", "agent-is-init-daemon"):
        if key not in meta.get("agent", {}):
            problems.append(f"osbuilder.yaml agent lacks {key}")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(meta.get("rootfs-creation-time"))):
        problems.append(f"rootfs-creation-time is not a timestamp: {meta.get('rootfs-creation-time')}")
    if not (root / "var/lib/osbuilder/packages.txt").read_text().strip():
        problems.append("empty package manifest")
    if not (root / "var/lib").is_dir():
        problems.append("/var/lib is gone")
    return problems


def audit_initrd(initrd: Path, *, metadata: bool = True) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="audit.") as tmp:
        subprocess.run(["bsdtar", "-xpf", str(initrd), "-C", tmp], check=True)
        return audit_rootfs(Path(tmp), initrd=True, metadata=metadata)


def audit_image(image: Path, offset: int, fs_type: str = "ext4", *, metadata: bool = True) -> list[str]:
    """Audit the filesystem at byte offset `offset` of a raw image."""
    with tempfile.TemporaryDirectory(prefix="audit.") as tmp:
        root = Path(tmp) / "root"
        if fs_type == "erofs":
            part = Path(tmp) / "fs"
            with open(image, "rb") as f, open(part, "wb") as o:
                f.seek(offset)
                o.write(f.read())
            subprocess.run(["fsck.erofs", f"--extract={root}", str(part)], check=True, capture_output=True)
        else:
            root.mkdir()
            subprocess.run(["debugfs", "-R", f"rdump / {root}", f"{image}?offset={offset}"],
                           check=True, capture_output=True)
        return audit_rootfs(root, initrd=False, metadata=metadata)
