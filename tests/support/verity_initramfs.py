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
from tests.support.helper_initramfs import helper_initramfs

SOURCE = Path(__file__).with_name("dm_create.c")



def dm_create(dest: Path) -> Path:
    """Compile dm_create.c statically (musl-gcc) into dest."""
    cc = shutil.which("musl-gcc") or "gcc"
    subprocess.run([cc, "-Os", "-Wall", "-Wextra", "-Werror", "-static", "-s", "-o", str(dest), str(SOURCE)],
                   check=True, capture_output=True)
    return dest


def verity_initramfs(kernel: vm.Kernel, dest: Path, modules: tuple[str, ...] = ("dm_mod", "dm_verity")) -> Path:
    """Build the initramfs for `kernel` into dest: the helper initramfs plus dm-create."""
    with tempfile.TemporaryDirectory(prefix="verity-initramfs.") as tmp:
        tool = dm_create(Path(tmp) / "dm-create")
        return helper_initramfs(kernel, dest, list(modules), binaries={"dm-create": tool},
                                setup='/bin/dm-create || { echo "verity-initramfs: dm-create failed"; exit 1; }')
