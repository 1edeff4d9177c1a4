"""Work on a guest rootfs from the builder's side, with chroot semantics for paths.

No Ansible imports: unit tests call these directly. Paths given as "inside the rootfs" are resolved
the way the guest would resolve them: an absolute symlink in the tree points into the rootfs, never
at the builder's own files.
"""
from __future__ import annotations

import fnmatch
import os
import stat

MAX_SYMLINKS = 40

# What no guest needs: documentation, manuals, translations, package caches and lists, logs.
DEFAULT_PRUNE = [
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/i18n/*",
    "/usr/share/lintian/*",
    "/usr/share/linda/*",
    "/var/cache/apt/*",
    "/var/cache/debconf/*-old",
    "/var/lib/apt/lists/*",
    "/var/cache/ldconfig/*",
    "/var/log/*",
    "/root/.ansible",
    "/root/.cache",
    "/tmp/*",
    "/var/tmp/*",
]


class RootfsError(ValueError):
    """A path or tree that cannot be worked on as asked."""


def resolve(root: str, path: str, follow_last: bool = False) -> str:
    """Map PATH inside ROOT to a builder path, resolving symlinks as the guest would.

    The last component is not followed unless follow_last is set, so removing a symlink removes
    the link, not what it points to.
    """
    root = os.path.realpath(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, name)
        last = not parts
        if (not last or follow_last) and os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise RootfsError(f"too many symlinks resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(name)
    return os.path.join(root, *resolved)


def remove(root: str, paths: list[str]) -> tuple[int, int]:
    """Remove files, links and (recursively) directories given as paths inside ROOT.

    Returns (entries removed, bytes freed). Missing paths are skipped.
    """
    count = freed = 0
    for path in paths:
        target = resolve(root, path)
        if target == os.path.realpath(root):
            raise RootfsError(f"refusing to remove the rootfs itself ({path})")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            c, f = _rmtree(target)
            count, freed = count + c, freed + f
        else:
            os.unlink(target)
            count, freed = count + 1, freed + st.st_size
    return count, freed


def _rmtree(top: str) -> tuple[int, int]:
    count = freed = 0
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames + dirnames:  # os.walk lists a link to a directory among dirnames
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(p)
            else:
                freed += st.st_size
                os.unlink(p)
            count += 1
    os.rmdir(top)
    return count + 1, freed


def split_dirs(root: str, paths: list[str]) -> tuple[list[str], list[str]]:
    """Split paths inside ROOT into (non-directories, directories); other lines are dropped.

    A link to a directory (usr-merged /bin, say) counts as a directory: removing it would cut off
    everything below it.
    """
    files, dirs = [], []
    for path in paths:
        if not path.startswith("/"):
            continue  # e.g. dpkg's "diverted by" notes
        host = resolve(root, path)
        if os.path.isdir(resolve(root, path, follow_last=True)):
            dirs.append(path)
        else:
            files.append(path)
    return files, dirs


def expand(root: str, patterns: list[str]) -> list[str]:
    """Paths inside ROOT matching glob patterns (C(*), C(?), C([..]) in any component)."""
    found: list[str] = []
    for pattern in patterns:
        matches = [""]
        for part in [p for p in pattern.split("/") if p]:
            nxt = []
            for base in matches:
                if not any(c in part for c in "*?["):
                    nxt.append(f"{base}/{part}")
                    continue
                host = resolve(root, base or "/", follow_last=True)
                if os.path.isdir(host):
                    nxt.extend(f"{base}/{n}" for n in sorted(os.listdir(host)) if fnmatch.fnmatchcase(n, part))
            matches = nxt
        found.extend(m for m in matches if os.path.lexists(resolve(root, m)))
    return found


def remove_empty_dirs(root: str, dirs: list[str]) -> int:
    """Remove the given directories (inside ROOT) and their parents while they are empty."""
    removed = 0
    for d in sorted(set(dirs), key=lambda p: p.count("/"), reverse=True):
        while d and d != "/":
            host = resolve(root, d)
            if os.path.islink(host) or not os.path.isdir(host) or os.listdir(host):
                break
            os.rmdir(host)
            removed += 1
            d = os.path.dirname(d)
    return removed


def clamp_mtimes(root: str, epoch: int) -> int:
    """Set every mtime (and atime) newer than EPOCH to EPOCH, links included. Returns the count."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.lstat(p).st_mtime > epoch:
                os.utime(p, (epoch, epoch), follow_symlinks=False)
                changed += 1
    if os.lstat(root).st_mtime > epoch:
        os.utime(root, (epoch, epoch))
        changed += 1
    return changed


def write_file(root: str, path: str, content: str, mode: int = 0o644) -> bool:
    """Write CONTENT at PATH inside ROOT (replacing a link there). Returns True when it changed."""
    target = resolve(root, path)
    data = content.encode()
    try:
        if not os.path.islink(target):
            with open(target, "rb") as f:
                if f.read() == data and stat.S_IMODE(os.stat(target).st_mode) == mode:
                    return False
    except FileNotFoundError:
        pass
    if os.path.islink(target):
        os.unlink(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = target + ".kata-osb.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, target)
    return True


def symlink(root: str, path: str, target: str) -> bool:
    """Make PATH inside ROOT a symlink to TARGET (replacing what is there). True when it changed."""
    host = resolve(root, path)
    if os.path.islink(host) and os.readlink(host) == target:
        return False
    if os.path.lexists(host):
        remove(root, [path])
    os.symlink(target, host)
    return True


def tree_size(root: str) -> tuple[int, int]:
    """(apparent bytes, entries) of the tree."""
    total = entries = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
        entries += len(dirnames) + len(filenames)
    return total, entries


SYSTEMD_BINARIES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")


def init_info(root: str) -> dict:
    """What /sbin/init is in ROOT: its resolved path inside the rootfs, and whether it is systemd."""
    root = os.path.realpath(root)
    host = resolve(root, "/sbin/init", follow_last=True)
    inside = "/" + os.path.relpath(host, root) if host != root else "/"
    systemd = [p for p in SYSTEMD_BINARIES if os.path.exists(resolve(root, p, follow_last=True))]
    systemd_real = {resolve(root, p, follow_last=True) for p in systemd}
    return {
        "init": inside,
        "init_exists": os.path.isfile(host) and os.access(host, os.X_OK),
        "init_is_systemd": host in systemd_real,
        "systemd": systemd[0] if systemd else "",
    }
