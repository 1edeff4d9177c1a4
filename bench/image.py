"""Bench: kata.osbuilder.gpt_image against osbuilder's loop-device way, on a Debian minbase rootfs.

The rootfs is bootstrapped in this run (mmdebstrap; needs root and the package registry).
The loop way is image_builder.sh's: qemu-img create, parted mklabel msdos + mkpart from 1 MiB,
losetup + partx -a, mkfs.ext4 -b 4096 + tune2fs -m 3, mount, cp -a, sync, umount, partx -d,
losetup -d (timed once as the brief lists it and once with image_builder.sh's fsck.ext4 -D -y);
its size is osbuilder's (probe loop + free space, rounded up to 128 MiB). Rounds are
interleaved; medians and the fastest run are shown. Mounts, loop devices and files are
released in `finally`, also on failure.

Run: python3 bench/image.py [--free-mib N] [--repeats N]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import minbase_rootfs, table, timed, workdir  # noqa: E402

from ansible_collections.kata.osbuilder.plugins.module_utils import diskimage  # noqa: E402

MiB = 1 << 20
OSBUILDER_ALIGN_MB = 128


def du_bytes(path: Path, apparent: bool) -> int:
    flag = "--apparent-size" if apparent else "--block-size=1"
    out = subprocess.run(["du", "-s", "-x", "--block-size=1", flag, str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def ext4_avail_mb(size_mb: int, workdir: Path) -> int:
    """df's 'avail' of a fresh mkfs.ext4 -b 4096 + tune2fs -m 3 filesystem of size_mb MiB."""
    probe = workdir / "probe.ext4"
    try:
        sh("truncate", "-s", f"{size_mb}M", str(probe))
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", str(probe))
        sh("tune2fs", "-m", "3", str(probe))
        f = ext4_fields(probe, 0)
        return (f["Free blocks"] - f["Reserved block count"]) * f["Block size"] // MiB
    finally:
        probe.unlink(missing_ok=True)


def osbuilder_size_mb(rootfs: Path, free_mib: int, workdir: Path) -> int:
    """image_builder.sh's calculate_img_size: the first du + 10*i MiB disk whose fresh ext4
    (partition 1 MiB..-1 MiB) has more than du MiB available, + 2 MiB reserved +
    ROOT_FREE_SPACE, rounded up to 128 MiB. (Upstream probes with loop devices and mounts.)"""
    rootfs_mb = -(-du_bytes(rootfs, apparent=False) // MiB)
    for i in range(1, 21):
        disk = rootfs_mb + 10 * i
        if ext4_avail_mb(disk - 2, workdir) > rootfs_mb:
            break
    size = disk + 2 + free_mib
    return -(-size // OSBUILDER_ALIGN_MB) * OSBUILDER_ALIGN_MB


def sh(*cmd: str) -> str:
    """Run a command; on failure raise with its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def release_loop(device: str) -> None:
    """Drop the partition nodes (udev may hold them a moment after umount) and detach."""
    for _ in range(20):
        if subprocess.run(["partx", "-d", device], capture_output=True).returncode == 0:
            break
        subprocess.run(["udevadm", "settle"], capture_output=True)
        time.sleep(0.25)
    subprocess.run(["losetup", "-d", device], check=False)


def loop_way(rootfs: Path, img: Path, size_mb: int, fsck: bool = False) -> None:
    """osbuilder's create_disk + setup_loop_device + format_loop + mount/cp/umount, and with
    fsck the `fsck.ext4 -D -y` that create_rootfs_image runs before detaching."""
    mnt = Path(tempfile.mkdtemp(prefix="osb-mnt.", dir=img.parent))
    device = mounted = None
    try:
        sh("qemu-img", "create", "-q", "-f", "raw", str(img), f"{size_mb}M")
        sh("parted", "-s", "-a", "optimal", str(img), "--", "mklabel", "msdos",
           "mkpart", "primary", "ext4", "1M", "-1M")
        device = sh("losetup", "-f", "--show", str(img))
        sh("partx", "-a", device)
        part = f"{device}p1"
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", part)
        sh("tune2fs", "-m", "3", part)
        sh("mount", part, str(mnt))
        mounted = mnt
        subprocess.run(f"cp -a '{rootfs}'/* '{mnt}'", shell=True, check=True)
        sh("sync")
        sh("umount", str(mnt))
        mounted = None
        if fsck:
            subprocess.run(["fsck.ext4", "-D", "-y", part], capture_output=True)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mounted)])
        if device:
            release_loop(device)
        mnt.rmdir()


def ext4_fields(img: Path, offset: int) -> dict[str, int]:
    """Numeric superblock fields of the image's ext4 (dumpe2fs -h)."""
    out = sh("dumpe2fs", "-h", f"{img}?offset={offset}")
    return {k: int(v) for k, v in re.findall(r"^([A-Za-z ]+):\s+(\d+)$", out, re.M)}


def used_fs_bytes(img: Path, offset: int) -> int:
    """Bytes in use (data + metadata) in the image's ext4."""
    f = ext4_fields(img, offset)
    return (f["Block count"] - f["Free blocks"]) * f["Block size"]


def reserved_bytes(img: Path, offset: int) -> int:
    f = ext4_fields(img, offset)
    return f["Reserved block count"] * f["Block size"]


def avail_bytes(img: Path, offset: int) -> int:
    """What df would call available: free minus reserved blocks."""
    f = ext4_fields(img, offset)
    return (f["Free blocks"] - f["Reserved block count"]) * f["Block size"]


def fresh_build(spec: diskimage.Spec) -> dict:
    """A full gpt_image build into a missing dest (as the loop way always starts afresh)."""
    spec.dest.unlink(missing_ok=True)
    return diskimage.build(spec)


def interleaved(repeats: int, methods: dict) -> dict[str, tuple[float, float, object]]:
    """Run every method once per round (so page-cache and writeback effects hit all alike);
    returns name -> (median seconds, fastest seconds, last result)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            t, last[name] = timed(fn)
            times[name].append(t)
    return {name: (statistics.median(times[name]), min(times[name]), last[name]) for name in methods}


GPT_DAX, GPT_PLAIN = "gpt_image (gpt, dax_header)", "gpt_image (gpt, no dax)"
LOOP, LOOP_FSCK = "loop way (brief's steps)", "loop way + fsck.ext4 -D (image_builder.sh)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--free-mib", type=int, default=64, help="ROOT_FREE_SPACE / root_free_space")
    ap.add_argument("--repeats", type=int, default=5, help="rounds (medians reported)")
    args = ap.parse_args()
    work = workdir()
    try:
        t_rootfs, rootfs = timed(minbase_rootfs, work)
        apparent, allocated = du_bytes(rootfs, True), du_bytes(rootfs, False)
        t_sizing, size_mb = timed(osbuilder_size_mb, rootfs, args.free_mib, work)
        imgs = {GPT_DAX: work / "gpt-dax.img", GPT_PLAIN: work / "gpt.img", LOOP: work / "loop.img",
                LOOP_FSCK: work / "loop-fsck.img"}
        specs = {name: diskimage.Spec(src=rootfs, dest=imgs[name], root_free_space=args.free_mib,
                                      dax_header=name == GPT_DAX) for name in (GPT_DAX, GPT_PLAIN)}
        runs = interleaved(args.repeats, {
            GPT_DAX: lambda: fresh_build(specs[GPT_DAX]),
            GPT_PLAIN: lambda: fresh_build(specs[GPT_PLAIN]),
            LOOP: lambda: loop_way(rootfs, imgs[LOOP], size_mb),
            LOOP_FSCK: lambda: loop_way(rootfs, imgs[LOOP_FSCK], size_mb, fsck=True)})
        rows = [(name, f"{t:.2f}", f"{fastest:.2f}", imgs[name].stat().st_size // MiB,
                 du_bytes(imgs[name], False) // MiB) for name, (t, fastest, _) in runs.items()]
        rows.append((LOOP_FSCK + " + sizing probes", f"{runs[LOOP_FSCK][0] + t_sizing:.2f}",
                     f"{runs[LOOP_FSCK][1] + t_sizing:.2f}", size_mb, ""))
        print(f"rootfs: Debian minbase, {apparent / MiB:.1f} MiB apparent, {allocated / MiB:.1f} MiB "
              f"allocated, bootstrapped in {t_rootfs:.1f} s; root_free_space {args.free_mib} MiB; "
              f"median of {args.repeats} interleaved rounds")
        print(table(rows, ("method", "median s", "fastest s", "image MiB", "allocated MiB")))
        t_gpt, _, r = runs[GPT_PLAIN]
        print(f"speed: gpt_image/loop = {t_gpt / runs[LOOP][0]:.2f} against the brief's steps, "
              f"{t_gpt / (runs[LOOP_FSCK][0] + t_sizing):.2f} against image_builder.sh with its fsck and "
              f"sizing probes (<= 1: no slower; gpt_image's times include its sizing and sha256)")
        report_size(imgs[GPT_PLAIN], r, args.free_mib, apparent, size_mb)
        print(f"osbuilder image: {size_mb} MiB, available to users {avail_bytes(imgs[LOOP], MiB) / MiB:.1f} MiB; "
              f"its sizing probes (mkfs on files here, loop+mount upstream) took {t_sizing:.2f} s")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report_size(img: Path, r: dict, free_mib: int, apparent: int, osbuilder_mb: int) -> None:
    """Is the image <= content + free space + alignment? Content is what the filesystem holds
    (file data in blocks + ext4 metadata such as journal and inode tables) plus the 3 %
    reserved blocks osbuilder also keeps; the free space must really be available."""
    used = used_fs_bytes(img, r["partition_offset"])
    reserved = reserved_bytes(img, r["partition_offset"])
    bound = used + reserved + free_mib * MiB + 2 * MiB + r["partition_offset"] + (34 * 512)
    avail = avail_bytes(img, r["partition_offset"])
    print(f"size: image {r['size'] / MiB:.1f} MiB <= content {used / MiB:.1f} MiB + reserved "
          f"{reserved / MiB:.1f} MiB + free {free_mib} MiB + alignment 2 MiB + tables "
          f"{(r['partition_offset'] + 34 * 512) / MiB:.1f} MiB = {bound / MiB:.1f} MiB: "
          f"{'yes' if r['size'] <= bound else 'NO'}; available to users {avail / MiB:.1f} MiB "
          f"(asked {free_mib})")
    print(f"overshoot over apparent content + free: gpt_image {(r['size'] - apparent) / MiB - free_mib:.1f} MiB, "
          f"osbuilder {(osbuilder_mb * MiB - apparent) / MiB - free_mib:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
