"""Shared bench helpers: a Debian minbase rootfs made in this run, timing, table printing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".collections"))
sys.path.insert(0, str(REPO))


def minbase_rootfs(workdir: Path, suite: str = "bookworm") -> Path:
    """Bootstrap a Debian minbase rootfs with mmdebstrap (its built-in default mirror)."""
    root = workdir / "minbase"
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", suite, str(root)],
                   check=True)
    return root


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def sh(cmd: str, cwd: Path | None = None) -> float:
    """Run a shell pipeline, return its wall time."""
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, check=True)
    return time.perf_counter() - t0


def workdir() -> Path:
    base = Path(os.environ.get("KATA_OSB_BENCH_DIR", tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix="kata-osb-bench.", dir=base))


def table(rows: list[tuple], headers: tuple) -> str:
    cols = list(zip(*([headers] + [tuple(str(c) for c in r) for r in rows])))
    widths = [max(len(c) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
