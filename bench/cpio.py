"""Bench: cpio_archive vs upstream's `find . | cpio -H newc -o | gzip -9` on a Debian minbase.

Run as root (mmdebstrap needs it and the network to Debian's archive): python3 bench/cpio.py
The rootfs is made in this run and its work directory removed at the end, also on failure.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import minbase_rootfs, sh, table, timed, workdir  # noqa: E402
from ansible_collections.kata.osbuilder.plugins.module_utils import cpio  # noqa: E402

UPSTREAM = "find . | cpio -H newc -o --quiet | gzip -9 > {out}"
# mode -> (compression, max time ratio, max size ratio) against upstream
TARGETS = {"default (gzip)": ("gzip", 0.35, 1.02), "fast (zstd)": ("zstd", 0.10, 0.75)}


def measure_upstream(root: Path, out: Path) -> tuple[float, int]:
    """Time and size of upstream's pipeline."""
    seconds = sh(UPSTREAM.format(out=out), cwd=root)
    return seconds, out.stat().st_size


def measure_ours(root: Path, out: Path, compression: str) -> tuple[float, dict]:
    """Time and result of cpio_archive (default level, mtimes clamped to 0)."""
    return timed(cpio.build, root, out, compression=compression, mtime=0)


def rows_for(root: Path, wd: Path) -> list[tuple]:
    """Measure upstream once and every mode of ours; one row per mode."""
    up_time, up_size = measure_upstream(root, wd / "upstream.cpio.gz")
    rows = [("upstream gzip -9", "gzip", "-", f"{up_time:.2f}", up_size, "1.00", "1.00", "-", "-")]
    for mode, (compression, max_time, max_size) in TARGETS.items():
        seconds, result = measure_ours(root, wd / f"ours.{compression}", compression)
        t_ratio, s_ratio = seconds / up_time, result["size"] / up_size
        met = "yes" if t_ratio <= max_time and s_ratio <= max_size else "NO"
        rows.append((f"cpio_archive {mode}", f"{result['compressor']} -{result['level']}",
                     result["entries"], f"{seconds:.2f}", result["size"], f"{t_ratio:.3f}",
                     f"{s_ratio:.3f}", f"<={max_time} / <={max_size}", met))
    return rows


def main() -> int:
    wd = workdir()
    try:
        rows = rows_for(minbase_rootfs(wd), wd)
    finally:
        shutil.rmtree(wd)
    print(table(rows, ("what", "compressor", "entries", "seconds", "bytes", "time x",
                       "size x", "target (time/size)", "met")))
    return 0 if all(r[-1] != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
