#!/usr/bin/env python3
"""Boot a built initrd or image under QEMU TCG with a Debian cloud kernel; show the agent's line.

  tools/boot.py --initrd build/kata-containers-initrd.img
  tools/boot.py --image build/kata-containers.img            (systemd image, from NVMe)
Exit status 0 when the agent printed its READY line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import vm  # noqa: E402

SYSTEMD_ARGS = ("systemd.unit=kata-containers.target systemd.mask=systemd-networkd.service "
                "systemd.mask=systemd-networkd.socket")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--initrd", type=Path)
    what.add_argument("--image", type=Path)
    ap.add_argument("--append", default="", help="more kernel command line")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--quiet", action="store_true", help="print only the agent's lines")
    args = ap.parse_args()

    kernel = vm.debian_kernel()
    append = f"kata_ref_agent.poweroff {args.append}"
    if args.initrd:
        result = vm.boot(kernel, initrd=args.initrd, append=append, timeout=args.timeout)
    else:
        result = vm.boot(kernel, nvme=args.image, timeout=args.timeout,
                         append=f"root=/dev/nvme0n1p1 ro rootwait {SYSTEMD_ARGS} {append}")
    lines = result.console.splitlines()
    shown = [l for l in lines if "kata-ref-agent" in l] if args.quiet else lines[-15:]
    print("\n".join(shown))
    if result.ready:
        print(f"boot: agent ready after {result.guest_uptime:.2f} s guest uptime "
              f"({result.seconds:.1f} s wall, QEMU TCG, kernel {kernel.version})")
        return 0
    print("boot: the agent's READY line never came" + (" (timed out)" if result.timed_out else ""), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
