"""A test initramfs that opens a dm-verity root from the kernel's `dm-mod.create=` line.

Kata's runtime boots a measured rootfs with `dm-mod.create="dm-verity,,,ro,<table>"
root=/dev/dm-0`; the kernel's dm-init sets the device up before mounting root. dm-init only
exists when device-mapper is built in, and the Debian cloud kernel the tests boot has dm-mod and
dm-verity as modules. So this initramfs does in userspace what dm-init does in the kernel: it
loads dm-mod and dm-verity (and what they depend on) and runs `dm-create`
(tests/support/dm_create.c, a static musl program issuing DM_DEV_CREATE / DM_TABLE_LOAD /
DM_DEV_SUSPEND), which reads the same dm-mod.create= value from /proc/cmdline. The command line
under test is the one gpt_image returns, unchanged; the kernel itself verifies every block.

Everything else (busybox, module closure, cpio packing) comes from helper_initramfs.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support import vm
from tests.support.helper_initramfs import BUSYBOX, _install_module, module_closure, pack

SOURCE = Path(__file__).with_name("dm_create.c")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/helper-modules); do
    insmod "/lib/modules/$m" || echo "verity-initramfs: insmod $m failed"
done
/bin/dm-create || { echo "verity-initramfs: dm-create failed"; exit 1; }
root= fstype=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
    esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -o ro ${fstype:+-t "$fstype"} "$root" /newroot || {
    echo "verity-initramfs: mount $root failed"; dmesg | tail -5; exit 1; }
echo "verity-initramfs: mounted $root (${fstype:-auto}, ro)"
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
"""


def dm_create(dest: Path) -> Path:
    """Compile dm_create.c statically (musl-gcc) into dest."""
    cc = shutil.which("musl-gcc") or "gcc"
    subprocess.run([cc, "-Os", "-Wall", "-Wextra", "-Werror", "-static", "-s", "-o", str(dest), str(SOURCE)],
                   check=True, capture_output=True)
    return dest


def verity_initramfs(kernel: vm.Kernel, dest: Path, modules: tuple[str, ...] = ("dm_mod", "dm_verity")) -> Path:
    """Build the initramfs for `kernel` into dest."""
    with tempfile.TemporaryDirectory(prefix="verity-initramfs.") as tmp:
        root = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "newroot", "etc", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        dm_create(root / "bin" / "dm-create")
        names = [_install_module(ko, root / "lib/modules") for ko in module_closure(kernel.modules, list(modules))]
        (root / "etc/helper-modules").write_text("\n".join(names) + "\n")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        pack(root, dest)
    return dest
