#!/usr/bin/env python3
"""bench: BUILD_METHOD=dracut vs the distro method, agent-as-init initrds, same reference agent.

Both are built with make into fresh trees (a new ROOTFS_DIR each, so neither reuses an earlier
build; the distro method still starts from its bootstrap cache, as a second build on a builder
does), in the same run. Prints, per method, the initrd size and the build wall time, then boots
each once under QEMU TCG and prints the time to the agent's READY line.

  python3 bench/dracut.py [--rounds N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.support import vm  # noqa: E402

WORK = Path("/var/lib/kata-osbuilder/work")


def build(method: str, agent: Path, dest: Path, tree: Path) -> float:
    args = ["make", "-s", "-C", str(REPO), "initrd", f"BUILD_METHOD={method}", "AGENT_INIT=yes",
            f"AGENT_SOURCE_BIN={agent}", f"IMAGES_BUILD_DEST={dest}", f"ROOTFS_DIR={tree}"]
    if method == "dracut":
        args.append(f"DRACUT_OVERLAY_DIR={tree.parent / 'overlay'}")
    start = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True)
    took = time.monotonic() - start
    if r.returncode != 0:
        sys.exit(f"{method} build failed:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="builds per method (interleaved)")
    ap.add_argument("--no-boot", action="store_true")
    opts = ap.parse_args()
    agent = vm.ref_agent()
    kernel = None if opts.no_boot else vm.debian_kernel()
    times: dict[str, list[float]] = {"distro": [], "dracut": []}
    sizes: dict[str, int] = {}
    boots: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-dracut."))
    trees = []
    try:
        for i in range(opts.rounds):
            for method in ("distro", "dracut"):
                tree = WORK / f"bench-{method}-{os.getpid()}-{i}" / "rootfs"
                trees.append(tree.parent)
                dest = scratch / f"{method}-{i}"
                times[method].append(build(method, agent, dest, tree))
                initrd = dest / "kata-containers-initrd.img"
                sizes[method] = initrd.stat().st_size
                if kernel and method not in boots:
                    b = vm.boot(kernel, initrd=initrd, append="kata_ref_agent.poweroff", timeout=180)
                    boots[method] = b.seconds if b.ready else float("nan")
    finally:
        for t in trees:
            shutil.rmtree(t, ignore_errors=True)
            Path(str(t) + ".dracut").unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'method':<8} {'initrd bytes':>13} {'MiB':>7} {'build s (median)':>17} {'boot to READY s':>16}")
    for method in ("distro", "dracut"):
        boot = f"{boots[method]:.2f}" if method in boots else "-"
        print(f"{method:<8} {sizes[method]:>13} {sizes[method] / 2**20:>7.2f} {statistics.median(times[method]):>17.1f} {boot:>16}")
    print(f"bench dracut: dracut initrd {sizes['dracut']} B in {statistics.median(times['dracut']):.1f} s, "
          f"distro initrd {sizes['distro']} B in {statistics.median(times['distro']):.1f} s "
          f"(AGENT_INIT=yes, same agent, rounds={opts.rounds})")


if __name__ == "__main__":
    main()
