"""Measured rootfs (MEASURED_ROOTFS=yes): dm-verity hash tree in partition 2, booted with the
kernel command line gpt_image returns; a flipped byte in the data partition must stop the boot.

The root is a tiny tree with the reference agent as /sbin/init (the feature is the image layer).
The Debian cloud kernel has device-mapper as a module, so dm-mod.create= is acted on by the
test initramfs (tests/support/verity_initramfs.py, a userspace dm-init), see there why.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import diskimage
from tests.support import vm
from tests.support.verity_initramfs import verity_initramfs

POWEROFF = "kata_ref_agent.poweroff"
DISK = "/dev/nvme0n1"


@pytest.fixture(scope="module")
def initramfs(kernel, tmp_path_factory) -> Path:
    return verity_initramfs(kernel, tmp_path_factory.mktemp("vinit") / "verity-initramfs.gz",
                            modules=("dm_mod", "dm_verity", "erofs"))


def build(src: Path, dest: Path, **kw) -> dict:
    return diskimage.build(diskimage.Spec(src=src, dest=dest, epoch=1_700_000_000, verity=True,
                                          verity_disk=DISK, **kw))


def partition(img: Path, offset: int, size: int, out: Path) -> Path:
    with open(img, "rb") as f, open(out, "wb") as o:
        f.seek(offset)
        o.write(f.read(size))
    return out


def test_layout_root_hash_file_and_veritysetup_verify(agent_tree, tmp_path):
    img = tmp_path / "m.img"
    r = build(agent_tree, img, dax_header=False)
    v = r["verity"]
    assert re.fullmatch(r"root_hash=[0-9a-f]{64},salt=[0-9a-f]{64},data_blocks=\d+,data_block_size=4096,"
                        r"hash_block_size=4096", v["root_hash_line"])
    assert v["data_blocks"] * 4096 == r["partition_size"] and v["hash_offset"] >= r["partition_offset"] + r["partition_size"]
    table = subprocess.run(["sfdisk", "-d", str(img)], capture_output=True, text=True, check=True).stdout
    assert 'name="rootfs"' in table and 'name="verity"' in table
    data = partition(img, r["partition_offset"], r["partition_size"], tmp_path / "data")
    hashes = partition(img, v["hash_offset"], v["hash_size"], tmp_path / "hash")
    ok = subprocess.run(["veritysetup", "verify", "--no-superblock", f"--salt={v['salt']}",
                         f"--data-blocks={v['data_blocks']}", str(data), str(hashes), v["root_hash"]],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    with open(data, "r+b") as f:
        f.seek(4096 * (v["data_blocks"] // 2) + 7)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    bad = subprocess.run(["veritysetup", "verify", "--no-superblock", f"--salt={v['salt']}",
                          f"--data-blocks={v['data_blocks']}", str(data), str(hashes), v["root_hash"]],
                         capture_output=True, text=True)
    assert bad.returncode != 0


def test_root_hash_is_reproducible_and_follows_the_seed(agent_tree, tmp_path):
    a = build(agent_tree, tmp_path / "a.img")
    b = build(agent_tree, tmp_path / "b.img")
    c = build(agent_tree, tmp_path / "c.img", seed="other")
    assert a["sha256"] == b["sha256"] and a["verity"]["root_hash"] == b["verity"]["root_hash"]
    assert c["verity"]["salt"] != a["verity"]["salt"] and c["verity"]["root_hash"] != a["verity"]["root_hash"]


def agent_block(img: Path, part_offset: int) -> int:
    """Byte offset in the image of the first data block of /sbin/init (ext4, via debugfs)."""
    out = subprocess.run(["debugfs", "-R", "bmap /sbin/init 0", f"{img}?offset={part_offset}"],
                         capture_output=True, text=True, check=True).stdout
    return part_offset + int(out.split()[0]) * 4096


@pytest.mark.boot
@pytest.mark.parametrize("fs_type", ["ext4", "erofs"])
def test_measured_image_boots_with_its_cmdline(kernel, agent_tree, initramfs, tmp_path, fs_type):
    img = tmp_path / "m.img"
    r = build(agent_tree, img, fs_type=fs_type, dax_header=False)
    cmdline = r["verity"]["kernel_cmdline"]
    assert cmdline.startswith('dm-mod.create="dm-verity,,,ro,0 ') and cmdline.endswith(f"root=/dev/dm-0 rootfstype={fs_type} ro")
    boot = vm.boot(kernel, nvme=img, initrd=initramfs, append=f"{cmdline} {POWEROFF}", timeout=120)
    assert boot.ready, boot.console[-3000:]
    assert boot.ready.group(1) == "1" and boot.ready.group(3) == fs_type
    assert "dm-create: dm-verity ready (verity ro" in boot.console
    assert "mounted /dev/dm-0" in boot.console


@pytest.mark.boot
def test_flipped_byte_in_the_data_partition_stops_the_boot(kernel, agent_tree, initramfs, tmp_path):
    img = tmp_path / "m.img"
    r = build(agent_tree, img, dax_header=False)
    at = agent_block(img, r["partition_offset"]) + 100
    with open(img, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))
    boot = vm.boot(kernel, nvme=img, initrd=initramfs, append=f"{r['verity']['kernel_cmdline']} {POWEROFF}", timeout=120)
    assert not boot.ready, "a corrupted agent must not run"
    assert re.search(r"device-mapper: verity: \d+:\d+: data block \d+ is corrupted", boot.console), boot.console[-3000:]
    assert "Input/output error" in boot.console
    # the same image unflipped boots (control)
    with open(img, "r+b") as f:
        f.seek(at)
        f.write(b)
    assert vm.boot(kernel, nvme=img, initrd=initramfs, append=f"{r['verity']['kernel_cmdline']} {POWEROFF}",
                   timeout=120).ready
