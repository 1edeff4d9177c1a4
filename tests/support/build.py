"""Running the pipeline with make from the tests, and small helpers around its artifacts."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path("/var/lib/kata-osbuilder/work")
CACHE = Path("/var/cache/kata-osbuilder")


def make_args(target: str, dest: Path, **variables: str) -> list[str]:
    args = ["make", "-s", "-C", str(REPO), target, f"IMAGES_BUILD_DEST={dest}"]
    return args + [f"{k}={v}" for k, v in variables.items()]


def make(target: str, dest: Path, env: dict | None = None, timeout: float = 1200, **variables: str):
    return subprocess.run(make_args(target, dest, **variables), capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rootfs_tar(root: Path, dest: Path, epoch: int) -> Path:
    """A deterministic tar of a rootfs: sorted names, numeric owners 0, mtimes clamped, no
    atime/ctime, pax headers without pid-dependent names (GNU tar)."""
    subprocess.run(["tar", "--sort=name", f"--mtime=@{epoch}", "--clamp-mtime", "--owner=0", "--group=0",
                    "--numeric-owner", "--format=pax",
                    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    "-C", str(root), "-cf", str(dest), "."], check=True)
    return dest


def tree_differences(a: Path, b: Path, limit: int = 20) -> list[str]:
    """Paths whose type, mode, owner, size, mtime, link target or content differ (first `limit`)."""
    out = subprocess.run(["diff", "-r", "--no-dereference", "-q", str(a), str(b)], capture_output=True, text=True).stdout
    found = [line for line in out.splitlines() if "special file while" not in line]
    for top, dirs, files in os.walk(a):
        for name in dirs + files:
            pa = Path(top) / name
            pb = b / pa.relative_to(a)
            try:
                sa, sb = pa.lstat(), pb.lstat()
            except FileNotFoundError:
                continue
            if (sa.st_mode, sa.st_uid, sa.st_gid, int(sa.st_mtime)) != (sb.st_mode, sb.st_uid, sb.st_gid, int(sb.st_mtime)):
                found.append(f"metadata differs: {pa.relative_to(a)} mtime {int(sa.st_mtime)} / {int(sb.st_mtime)}")
    return found[:limit]
