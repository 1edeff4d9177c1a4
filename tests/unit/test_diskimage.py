"""Tests of the image assembly: validation, sizing, layout, reproducibility, atomicity."""
from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import dax, diskimage, gpt
from ansible_collections.kata.osbuilder.plugins.module_utils.diskimage import ImageError, MiB, Spec

EPOCH = 1_700_000_000


def make_tree(root: Path, order: int = 1) -> Path:
    """A small rootfs-like tree; `order` flips the creation order (same content)."""
    root.mkdir()
    items = [("sbin/init", b"#!/bin/sh\n"), ("etc/hostname", b"kata\n"), ("usr/lib/big", b"x" * 300_000),
             ("usr/share/empty", b""), ("etc/motd", b"hello\n" * 100)]
    for rel, data in items[::order]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "bin").symlink_to("usr/bin")
    os.link(root / "etc/motd", root / "etc/motd.hard")
    for d in ("dev", "proc", "sys"):
        (root / d).mkdir()
    return root


@pytest.fixture()
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def spec(src: Path, dest: Path, **kw) -> Spec:
    kw.setdefault("epoch", EPOCH)
    return Spec(src=src, dest=dest, **kw)


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize("kw, message", [
    (dict(src=Path("/nonexistent")), "does not exist"),
    (dict(fs_type="btrfs"), "unknown fs_type 'btrfs'"),
    (dict(table="bsd"), "unknown table"),
    (dict(seed=""), "seed must be"),
    (dict(seed="a\nb"), "seed must be"),
    (dict(size=3 * MiB + 1), "must be a positive multiple"),
    (dict(size_alignment=3 * MiB), "even size_alignment_mb"),
    (dict(fs_type="erofs", block_size=1024), "block_size 1024"),
    (dict(label="x" * 17), "longer than 16 bytes"),
])
def test_bad_input_is_refused_in_one_line(tree, tmp_path, kw, message):
    s = spec(tree, tmp_path / "out.img")
    for k, v in kw.items():
        setattr(s, k, v)
    with pytest.raises(ImageError, match=message) as e:
        diskimage.build(s)
    assert "\n" not in str(e.value)
    assert list(tmp_path.glob(".out.img*")) == []


def test_erofs_refuses_255_byte_names(tree, tmp_path):
    (tree / ("n" * 255)).write_bytes(b"")
    with pytest.raises(ImageError, match="fails on 255-byte names: .*/n{255}$"):
        diskimage.build(spec(tree, tmp_path / "e.img", fs_type="erofs"))
    assert diskimage.build(spec(tree, tmp_path / "x.img"))["changed"]  # ext4 takes them


def test_dest_that_is_a_directory_is_refused(tree, tmp_path):
    (tmp_path / "d.img").mkdir()
    with pytest.raises(ImageError, match="exists and is not a regular file"):
        diskimage.build(spec(tree, tmp_path / "d.img"))


def test_dest_inside_src_is_refused(tree):
    with pytest.raises(ImageError, match="is inside src"):
        diskimage.build(spec(tree, tree / "sub" / "x.img"))


def test_too_small_size_names_the_size_that_fits(tree, tmp_path):
    with pytest.raises(ImageError, match=r"size 4194304 is too small .*: (\d+) bytes \(\d+ MiB\) would fit") as e:
        diskimage.build(spec(tree, tmp_path / "o.img", size=4 * MiB, root_free_space=8))
    fits = int(str(e.value).split(": ")[1].split()[0])
    r = diskimage.build(spec(tree, tmp_path / "o.img", size=fits, root_free_space=8))
    assert r["size"] == fits


def test_parse_size():
    assert diskimage.parse_size("512M") == 512 * MiB
    assert diskimage.parse_size("2GiB") == 2 << 30
    assert diskimage.parse_size(4096) == 4096 and diskimage.parse_size(None) is None
    with pytest.raises(ImageError):
        diskimage.parse_size("lots")


def test_ids_are_derived_from_the_seed():
    a, b = diskimage.derive_ids("x"), diskimage.derive_ids("y")
    assert a == diskimage.derive_ids("x") and a != b
    assert len({a.disk_guid, a.partition_guid, a.fs_uuid, a.hash_seed}) == 4


@pytest.mark.parametrize("fs_type", ["ext4", "erofs"])
@pytest.mark.parametrize("dax_header", [True, False])
def test_same_tree_gives_same_bytes(tmp_path, fs_type, dax_header):
    """Two trees with equal content made in a different order, at different times."""
    a = make_tree(tmp_path / "a", 1)
    b = make_tree(tmp_path / "b", -1)
    os.utime(b / "etc/motd", (1, 1))
    ra = diskimage.build(spec(a, tmp_path / "a.img", fs_type=fs_type, dax_header=dax_header))
    rb = diskimage.build(spec(b, tmp_path / "b.img", fs_type=fs_type, dax_header=dax_header))
    assert ra["sha256"] == rb["sha256"] == diskimage.sha256_file(tmp_path / "b.img")


def test_different_seed_changes_ids(tree, tmp_path):
    r1 = diskimage.build(spec(tree, tmp_path / "1.img", seed="one"))
    r2 = diskimage.build(spec(tree, tmp_path / "2.img", seed="two"))
    assert r1["disk_guid"] != r2["disk_guid"] and r1["fs_uuid"] != r2["fs_uuid"]
    blkid = run("dumpe2fs", "-h", f"{tmp_path / '1.img'}?offset={r1['partition_offset']}").stdout
    assert r1["fs_uuid"] in blkid


def test_unchanged_and_check_mode(tree, tmp_path):
    dest = tmp_path / "img"
    assert diskimage.build(spec(tree, dest), check_mode=True)["changed"]
    assert not dest.exists()
    assert diskimage.build(spec(tree, dest))["changed"]
    inode = dest.stat().st_ino
    assert not diskimage.build(spec(tree, dest))["changed"]
    assert dest.stat().st_ino == inode  # not replaced
    assert not diskimage.build(spec(tree, dest), check_mode=True)["changed"]
    assert diskimage.build(spec(tree, dest, label="other"), check_mode=True)["changed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "src"]


def test_failed_build_leaves_nothing_behind(tree, tmp_path, monkeypatch):
    dest = tmp_path / "img"
    dest.write_bytes(b"old")
    def fail(*args):
        raise ImageError("debugfs failed (1): simulated")
    monkeypatch.setattr(diskimage, "normalize_ext4", fail)
    with pytest.raises(ImageError, match="simulated"):
        diskimage.build(spec(tree, dest))
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "src"]


def test_free_space_is_available_and_size_is_tight(tree, tmp_path):
    free_mib = 40
    r = diskimage.build(spec(tree, tmp_path / "f.img", root_free_space=free_mib))
    info = run("dumpe2fs", "-h", f"{tmp_path / 'f.img'}?offset={r['partition_offset']}").stdout
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines())}
    avail = (int(field["Free blocks"]) - int(field["Reserved block count"])) * 4096
    assert avail >= free_mib * MiB
    # a few MiB of ext4 metadata (journal, inode tables) at most on top of content + free + alignment
    assert r["size"] <= r["content_bytes"] + free_mib * MiB + 2 * MiB + 12 * MiB


@pytest.mark.parametrize("table", ["gpt", "msdos"])
def test_dax_layout_matches_osbuilder(tree, tmp_path, table):
    img = tmp_path / "dax.img"
    r = diskimage.build(spec(tree, img, table=table))
    data = img.read_bytes()
    assert r["partition_offset"] == 3 * MiB and r["size"] % (2 * MiB) == 0
    info = dax.parse_nd_pfn_sb(data[4096:8192])
    assert info["signature"] == b"NVDIMM_PFN_INFO\0" and info["checksum_ok"]
    assert (info["dataoff"], info["align"], info["mode"], info["version"]) == (2 * MiB, 2 * MiB, 1, (1, 2))
    inner = data[2 * MiB:2 * MiB + 512]
    _, _, ptype, _, first, count = struct.unpack_from("<B3sB3sII", inner, 446)
    assert (ptype, first * 512, count * 512) == (0x83, 1 * MiB, r["partition_size"])
    if table == "gpt":
        assert "No problems found" in run("sgdisk", "-v", str(img)).stdout
        assert "First sector: 6144" in run("sgdisk", "-i", "1", str(img)).stdout
    else:
        assert "start=        6144" in run("sfdisk", "-d", str(img)).stdout
    ns = tmp_path / "namespace.img"  # what /dev/pmem0 shows: the image from dataoff on
    ns.write_bytes(data[2 * MiB:])
    assert "start=        2048" in run("sfdisk", "-d", str(ns)).stdout
    assert run("e2fsck", "-fn", f"{ns}?offset={MiB}").returncode == 0
    assert run("e2fsck", "-fn", f"{img}?offset={3 * MiB}").returncode == 0


def test_explicit_size_partition_fills_disk(tree, tmp_path):
    img = tmp_path / "s.img"
    r = diskimage.build(spec(tree, img, size=64 * MiB, dax_header=False))
    assert img.stat().st_size == 64 * MiB
    assert r["partition_offset"] + r["partition_size"] + gpt.gpt_tail_bytes() <= 64 * MiB
    assert 64 * MiB - r["partition_offset"] - r["partition_size"] - gpt.gpt_tail_bytes() < 4096
    assert os.stat(img).st_blocks * 512 < 40 * MiB  # sparse


def test_owner_and_times_are_normalized(tree, tmp_path):
    os.chown(tree / "etc/hostname", 1234, 5678)
    img = tmp_path / "o.img"
    r = diskimage.build(spec(tree, img))
    out = run("debugfs", "-R", "stat /etc/hostname", f"{img}?offset={r['partition_offset']}").stdout
    assert "User:     0   Group:     0" in out
    assert out.count(f"0x{EPOCH:08x}:00000000") == 4  # ctime, atime, mtime, crtime
    assert (tree / "etc/hostname").stat().st_uid == 1234  # the source is untouched
    kept = diskimage.build(spec(tree, tmp_path / "k.img", force_root_owner=False))
    out = run("debugfs", "-R", "stat /etc/hostname", f"{tmp_path / 'k.img'}?offset={kept['partition_offset']}").stdout
    assert "User:  1234   Group:  5678" in out


def test_epoch_defaults_to_source_date_epoch_then_newest_mtime(tree, tmp_path, monkeypatch):
    os.utime(tree / "etc/motd", (1_600_000_000, 1_600_000_000))
    for p in tree.rglob("*"):
        os.utime(p, (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    os.utime(tree / "sbin/init", (1_650_000_000, 1_650_000_000))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert diskimage.build(Spec(src=tree, dest=tmp_path / "a.img"))["epoch"] == 1_650_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567")
    assert diskimage.build(Spec(src=tree, dest=tmp_path / "b.img"))["epoch"] == 1234567


def test_sizing_model_against_mke2fs_for_many_small_files(tmp_path):
    src = tmp_path / "many"
    for d in range(30):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(200):
            (src / f"d{d:02}" / f"file-with-a-longish-name-{f}").write_bytes(b"y" * (f * 37))
    r = diskimage.build(spec(src, tmp_path / "m.img"))
    assert run("e2fsck", "-fn", f"{tmp_path / 'm.img'}?offset={r['partition_offset']}").returncode == 0


def test_scan_tree_counts_hard_links_once(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 5000)  # 2 blocks
    os.link(src / "a", src / "b")
    (src / "short").symlink_to("a")
    (src / "long").symlink_to("t" * 80)  # 1 block
    stats = diskimage.scan_tree(src, 4096)
    assert stats.inodes == 1 + 3  # root, a/b, short, long
    assert stats.blocks == 2 + 1 + 1  # data, long symlink, root directory
    assert stats.apparent_bytes == 5000 + 1 + 80


def test_ext4_geometry_building_blocks():
    assert diskimage.journal_blocks(1000) == 0 and diskimage.journal_blocks(70_000) == 4096
    assert diskimage._backup_groups(10) == 6  # superblock copies in groups 0, 1, 3, 5, 7, 9
