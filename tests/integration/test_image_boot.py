"""Boot gpt_image images under QEMU TCG: as NVMe disks and, with the DAX header, as NVDIMMs.

The root filesystem holds only the reference agent as /sbin/init (plus dev, proc, sys); it
prints READY with the fstype of / and powers off.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import diskimage
from tests.support import vm
from tests.support.helper_initramfs import helper_initramfs

pytestmark = pytest.mark.boot
POWEROFF = "kata_ref_agent.poweroff"


def build(src: Path, dest: Path, **kw) -> dict:
    return diskimage.build(diskimage.Spec(src=src, dest=dest, epoch=1_700_000_000, **kw))


def assert_ready(boot: vm.Boot, fstype: str) -> None:
    assert not boot.timed_out, boot.console[-3000:]
    assert boot.ready, boot.console[-3000:]
    assert boot.ready.group(1) == "1" and boot.ready.group(3) == fstype


@pytest.mark.parametrize("table", ["gpt", "msdos"])
def test_ext4_boots_from_nvme(kernel, agent_tree, tmp_path, table):
    img = tmp_path / "root.img"
    build(agent_tree, img, table=table, dax_header=False)
    boot = vm.boot(kernel, nvme=img, append=f"root=/dev/nvme0n1p1 ro rootwait {POWEROFF}")
    assert_ready(boot, "ext4")


@pytest.mark.parametrize("table", ["gpt", "msdos"])
def test_dax_image_boots_from_nvme_and_as_nvdimm(kernel, agent_tree, tmp_path, table):
    img = tmp_path / "dax.img"
    build(agent_tree, img, table=table, dax_header=True)
    boot = vm.boot(kernel, nvme=img, append=f"root=/dev/nvme0n1p1 ro rootwait {POWEROFF}")
    assert_ready(boot, "ext4")

    initrd = helper_initramfs(kernel, tmp_path / "initrd.gz", modules=["nfit", "nd_pmem"])
    boot = vm.boot(kernel, nvdimm=img, initrd=initrd,
                   append=f"root=/dev/pmem0p1 rootflags=dax {POWEROFF}")
    assert_ready(boot, "ext4")
    assert "nd_pmem pfn0." in boot.console  # the namespace was claimed through our nd_pfn_sb
    assert " pmem0: p1" in boot.console      # and its partition table (at 2 MiB) was read
    assert "mounted /dev/pmem0p1 (auto, ro,dax)" in boot.console


def test_erofs_boots_from_nvme_with_helper_initramfs(kernel, agent_tree, tmp_path):
    img = tmp_path / "erofs.img"
    build(agent_tree, img, fs_type="erofs")
    initrd = helper_initramfs(kernel, tmp_path / "initrd.gz", modules=["erofs"])
    boot = vm.boot(kernel, nvme=img, initrd=initrd,
                   append=f"root=/dev/nvme0n1p1 rootfstype=erofs {POWEROFF}")
    assert_ready(boot, "erofs")


def test_helper_initramfs_is_reproducible(kernel, tmp_path):
    a = helper_initramfs(kernel, tmp_path / "a.gz", modules=["nfit", "nd_pmem", "erofs"])
    b = helper_initramfs(kernel, tmp_path / "b.gz", modules=["nfit", "nd_pmem", "erofs"])
    assert a.read_bytes() == b.read_bytes()
