"""A tiny test initramfs: busybox-static plus a few kernel modules, mounting root= and switching to it.

Used to boot images whose root needs modules the cloud kernel does not build in (NVDIMM:
nfit, libnvdimm, nd_pmem; erofs; virtio_blk). /init loads the modules (dependencies first),
reads root=, rootfstype= and rootflags= from the kernel command line, waits for the root
device, mounts it read-only and switch_roots to /sbin/init. On any failure it exits, so the
kernel panics and QEMU (-no-reboot, panic=-1) ends at once instead of timing out.

Packed with GNU cpio (newc, sorted, owners 0, --reproducible) and gzip -n.
"""
from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/helper-modules); do
    insmod "/lib/modules/$m" || echo "helper-initramfs: insmod $m failed"
done
@SETUP@
root= fstype= flags=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
        rootflags=*) flags="${arg#rootflags=}" ;;
    esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$root" ] || { echo "helper-initramfs: no root device $root"; ls /dev; exit 1; }
mkdir -p /newroot
mount -o "ro${flags:+,$flags}" ${fstype:+-t "$fstype"} "$root" /newroot || {
    echo "helper-initramfs: mount $root failed"; dmesg | tail -20; exit 1; }
echo "helper-initramfs: mounted $root (${fstype:-auto}, ro${flags:+,$flags})"
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
"""


def _module_index(moddir: Path) -> dict[str, Path]:
    """Module name (with '_') -> file, for every .ko/.ko.xz under the kernel's module dir."""
    index = {}
    for ko in moddir.rglob("*.ko*"):
        name = ko.name.split(".ko")[0].replace("-", "_")
        index[name] = ko
    return index


def _depends(ko: Path) -> list[str]:
    out = subprocess.run(["modinfo", "-F", "depends", str(ko)], capture_output=True, text=True,
                         check=True).stdout.strip()
    return [d.replace("-", "_") for d in out.split(",") if d]


def module_closure(moddir: Path, wanted: list[str]) -> list[Path]:
    """The wanted modules and their dependencies (from modinfo), dependencies first.

    Names that are built into the kernel (modules.builtin) are skipped.
    """
    index = _module_index(moddir)
    builtin_file = moddir / "modules.builtin"
    builtin = {Path(line).name.split(".ko")[0].replace("-", "_")
               for line in builtin_file.read_text().split()} if builtin_file.exists() else set()
    ordered: list[Path] = []

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in builtin or index.get(name) in ordered:
            return
        if name not in index:
            raise FileNotFoundError(f"module {name} not in {moddir}")
        for dep in _depends(index[name]):
            visit(dep)
        ordered.append(index[name])

    for name in wanted:
        visit(name)
    return ordered


def _install_module(ko: Path, libdir: Path) -> str:
    """Copy a module into the initramfs, decompressing .ko.xz; returns its file name."""
    name = ko.name.split(".ko")[0] + ".ko"
    data = ko.read_bytes()
    (libdir / name).write_bytes(lzma.decompress(data) if ko.name.endswith(".xz") else data)
    return name


def pack(root: Path, dest: Path) -> None:
    """GNU cpio newc archive of root (sorted, owners 0, mtimes 0, reproducible), gzipped."""
    for path in [root, *root.rglob("*")]:
        os.utime(path, (0, 0), follow_symlinks=False)
    cmd = ("find . -mindepth 1 -print0 | LC_ALL=C sort -z | "
           "cpio --null --quiet -o -H newc --reproducible -R 0:0 | gzip -9n")
    with open(dest, "wb") as out:
        subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=root, stdout=out, check=True)


def helper_initramfs(kernel, dest: Path, modules: list[str], binaries: dict[str, Path] | None = None,
                     setup: str = "") -> Path:
    """Build the initramfs for `kernel` (tests.support.vm.Kernel) with `modules` into dest.

    binaries are copied to /bin/<name>; setup is shell run after the modules load, before the
    root device is awaited (a failing line stops the boot).
    """
    with tempfile.TemporaryDirectory(prefix="helper-initramfs.") as tmp:
        root = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "newroot", "etc", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for name, path in (binaries or {}).items():
            shutil.copy2(path, root / "bin" / name)
        names = [_install_module(ko, root / "lib/modules")
                 for ko in module_closure(kernel.modules, modules)]
        (root / "etc/helper-modules").write_text("\n".join(names) + "\n")
        (root / "init").write_text(INIT.replace("@SETUP@", setup))
        (root / "init").chmod(0o755)
        pack(root, dest)
    return dest
