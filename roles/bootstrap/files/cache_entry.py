"""Bootstrap cache entries: clear stale partial ones, check a complete one, record its manifest.

    python3 cache_entry.py check <entry>    -> prints what it removed, then 'ok' or 'missing'
    python3 cache_entry.py seal <entry>     -> adds the manifest to <entry>.partial/complete
    python3 cache_entry.py owner <entry>    -> writes <entry>.partial/.owner (the build's pid)

The manifest is a digest of every path's name, type, mode, owner, size and link target, plus the
file count and total size: one walk of the tree (no file content is read), so checking an entry
costs a fraction of a second. It catches missing, added, renamed, truncated or re-permissioned
files (an interrupted copy, a `rm` in the cache, a full disk); it does not catch a byte changed in
place with the same size, which only a content hash (seconds, not milliseconds) would.

A partial entry belongs to the build (ansible-playbook process) that started it, recorded as
`<pid> <pid namespace> <start time>`; one whose build is gone (same PID namespace, and that pid is
not running or started at another time) was interrupted and is removed. An owner in another PID
namespace (a builder in a container) or unknown (no local ansible-playbook: a remote builder)
cannot be checked: such an entry is only removed once it is six hours old.
"""
import hashlib
import json
import os
import shutil
import stat
import sys
import time


def manifest(root):
    h = hashlib.sha256()
    files = size = 0
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + names):
            path = os.path.join(top, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            rel = os.path.relpath(path, root)
            h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0{st.st_uid}:{st.st_gid}\0"
                     f"{st.st_size if stat.S_ISREG(st.st_mode) else 0}\0{link}\n".encode("utf-8", "surrogateescape"))
            files += 1
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return f"sha256:{h.hexdigest()} files={files} bytes={size}"


def build_pid():
    """pid of the ansible-playbook process this runs under, or '' (walks /proc parents)."""
    pid = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return ""
        if any(os.path.basename(a) == b"ansible-playbook" for a in cmd[:2]):
            return str(pid)
        pid = ppid
    return ""


def identity(pid):
    """'<pid> <pid namespace> <start time>' of a running process, or '' when it is not running."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        return f"{pid} {ns} {start}"
    except (OSError, IndexError):
        return ""


def gone(owner):
    """True only when the owner can be checked from here and is not running any more."""
    fields = owner.split()
    if len(fields) != 3 or not fields[0].isdigit():
        return False
    if fields[1] != os.readlink("/proc/self/ns/pid"):
        return False  # another PID namespace: cannot tell
    return identity(fields[0]) != owner


def remove(path):
    gone = f"{path}.removing.{os.getpid()}"
    os.rename(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def check(entry):
    parent = os.path.dirname(entry)
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        path = os.path.join(parent, name)
        if ".removing." in name:
            shutil.rmtree(path, ignore_errors=True)
            continue
        if not name.endswith(".partial"):
            continue
        try:
            with open(os.path.join(path, ".owner")) as f:
                owner = f.read().strip()
        except OSError:
            owner = ""
        old = time.time() - os.lstat(path).st_mtime > 6 * 3600
        if gone(owner) or old:
            remove(path)
            print(f"removed stale {path} (its build {owner or '?'} is gone)")
    complete = os.path.join(entry, "complete")
    if not os.path.isfile(complete):
        print("missing")
        return
    try:
        with open(complete) as f:
            data = json.load(f)
        want = data.get("manifest", "")
    except (OSError, ValueError):
        data, want = None, ""
    have = manifest(os.path.join(entry, "rootfs"))
    if data is not None and "manifest" not in data:  # made before manifests: adopt it once
        data["manifest"] = have
        with open(complete + ".tmp", "w") as f:
            json.dump(data, f, indent=4, sort_keys=True)
            f.write("\n")
        os.replace(complete + ".tmp", complete)
        print(f"adopted {entry}: {have}")
        want = have
    if want == have:
        print("ok")
        return
    remove(entry)
    print(f"corrupt {entry}: its tree is {have}, recorded {want or 'nothing'}; bootstrapping it again")
    print("missing")


def seal(entry):
    partial = entry + ".partial"
    complete = os.path.join(partial, "complete")
    with open(complete) as f:
        data = json.load(f)
    data["manifest"] = manifest(os.path.join(partial, "rootfs"))
    with open(complete + ".tmp", "w") as f:
        json.dump(data, f, indent=4, sort_keys=True)
        f.write("\n")
    os.replace(complete + ".tmp", complete)
    print(data["manifest"])


def orphans(needle):
    """Kill Ansible workers left by a killed build: ansible-playbook processes whose parent is
    gone (reparented to pid 1; a worker is its own session leader, so killing make's process
    group misses it, and it can block for ever writing its result to the dead playbook) and
    whose command line names `needle` (this build's rootfs or output dir)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and any(os.path.basename(a) == b"ansible-playbook" for a in cmd[:2]) \
                and any(needle.encode() in a for a in cmd):
            try:
                os.kill(int(pid), 9)
                print(f"killed orphaned worker {pid} of a killed build")
            except OSError:
                pass


def owner(entry):
    with open(os.path.join(entry + ".partial", ".owner"), "w") as f:
        pid = build_pid()
        f.write((identity(pid) if pid else "") + "\n")


if __name__ == "__main__":
    {"check": check, "seal": seal, "owner": owner, "orphans": orphans}[sys.argv[1]](sys.argv[2])
