#!/usr/bin/env python3
"""Bench the Debian pipeline: cold and warm `make initrd`, initrd size, boot-to-agent times.

Cold: an empty bootstrap cache and work dir (mmdebstrap from Debian's registry included).
Warm: the same command again (nothing changed: the rootfs is reused, the initrd unchanged).
Boot: guest uptime at the agent's READY line, for the built initrd and for a kernel-only baseline
(an initrd holding just the reference agent as /init), and for the systemd disk image.
Targets (issue 3): cold <= 60 s, warm <= 15 s, initrd <= 15 MB, boot <= baseline + 0.5 s,
systemd image agent line <= 6 s guest uptime. QEMU runs TCG here (no KVM), which slows the kernel.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, table, workdir  # noqa: E402
from tests.support import vm  # noqa: E402

SYSTEMD_ARGS = ("systemd.unit=kata-containers.target systemd.mask=systemd-networkd.service "
                "systemd.mask=systemd-networkd.socket")


def playbook(name: str, work: Path, agent: Path, *extra: str) -> float:
    args = ["ansible-playbook", f"playbooks/{name}.yml", "-e", f"agent_source_bin={agent}",
            "-e", f"work_dir={work / 'work'}", "-e", f"cache_dir={work / 'cache'}",
            "-e", f"images_build_dest={work / 'out'}", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: {name} failed:\n{r.stdout[-3000:]}")
    return time.perf_counter() - t0


def boot_uptimes(kernel: vm.Kernel, rounds: int, **kw) -> list[float]:
    out = []
    for _ in range(rounds):
        b = vm.boot(kernel, timeout=300, **kw)
        if not b.ready:
            sys.exit("bench: no READY line:\n" + b.console[-2000:])
        out.append(b.guest_uptime)
    return out


def baseline_initrd(agent: Path, dest: Path) -> Path:
    tree = dest / "baseline"
    tree.mkdir()
    shutil.copy(agent, tree / "init")
    img = dest / "baseline.img"
    subprocess.run(f"cd {tree} && find . | cpio -H newc -o -R 0:0 --quiet | gzip -9 > {img}", shell=True, check=True)
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="boots per artifact")
    ap.add_argument("--no-image", action="store_true", help="skip the systemd image")
    args = ap.parse_args()

    work = workdir()
    try:
        kernel = vm.debian_kernel()
        agent = vm.ref_agent()
        cold = playbook("initrd", work, agent, "-e", "agent_init=true")
        warm = playbook("initrd", work, agent, "-e", "agent_init=true")
        initrd = work / "out" / "kata-containers-initrd.img"
        size = initrd.stat().st_size

        base = boot_uptimes(kernel, args.rounds, initrd=baseline_initrd(agent, work),
                            append="kata_ref_agent.poweroff")
        ours = boot_uptimes(kernel, args.rounds, initrd=initrd, append="kata_ref_agent.poweroff")
        rows = [
            ("make initrd, cold", f"{cold:.1f} s", "<= 60 s", "yes" if cold <= 60 else "no"),
            ("make initrd, warm", f"{warm:.1f} s", "<= 15 s", "yes" if warm <= 15 else "no"),
            ("initrd size (gzip)", f"{size / 1e6:.2f} MB", "<= 15 MB", "yes" if size <= 15e6 else "no"),
            ("boot to agent, kernel-only initrd", f"{statistics.median(base):.2f} s", "-", "-"),
            ("boot to agent, Debian initrd", f"{statistics.median(ours):.2f} s",
             f"<= {statistics.median(base) + 0.5:.2f} s",
             "yes" if statistics.median(ours) <= statistics.median(base) + 0.5 else "no"),
        ]
        if not args.no_image:
            image_time = playbook("image", work, agent, "-e", "agent_init=false")
            image = work / "out" / "kata-containers.img"
            sysd = boot_uptimes(kernel, args.rounds, nvme=image,
                                append=f"root=/dev/nvme0n1p1 ro rootwait {SYSTEMD_ARGS} kata_ref_agent.poweroff")
            rows += [
                ("make image (systemd), cold for its base", f"{image_time:.1f} s", "-", "-"),
                ("image size", f"{image.stat().st_size / 2**20:.0f} MiB", "-", "-"),
                ("systemd image, agent line (uptime)", f"{statistics.median(sysd):.2f} s", "<= 6 s",
                 "yes" if statistics.median(sysd) <= 6 else "no"),
            ]
        print(f"Debian pipeline on {Path('/proc/cpuinfo').read_text().count('processor')} cores, "
              f"QEMU TCG, kernel {kernel.version}, medians of {args.rounds} boots")
        print(table(rows, ("what", "measured", "target", "met")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
