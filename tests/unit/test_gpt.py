"""Unit tests of the pure partition-table writers (field by field, CRCs recomputed here)."""
from __future__ import annotations

import struct
import subprocess
import uuid
import zlib

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import gpt

MiB = 1 << 20
DISK = 64 * MiB
DISK_GUID = uuid.UUID("12345678-1234-5678-9abc-def012345678")
PART = gpt.Partition(start=MiB, size=32 * MiB, guid=uuid.UUID(int=7), name="rootfs")


def image(pieces, size=DISK) -> bytearray:
    buf = bytearray(size)
    for off, data in pieces:
        buf[off:off + len(data)] = data
    return buf


def header(buf: bytes, lba: int) -> dict:
    names = ("sig rev hsize crc res my alt first last guid entries_lba n esize ecrc").split()
    return dict(zip(names, struct.unpack_from("<8sIIIIQQQQ16sQIII", buf, lba * 512)))


def test_protective_mbr():
    buf = image(gpt.gpt_table(DISK, [PART], DISK_GUID))
    assert buf[510:512] == b"\x55\xaa"
    status, ptype, first, count = struct.unpack_from("<B3xB3xII", buf, 446)
    assert (status, ptype, first, count) == (0, 0xEE, 1, DISK // 512 - 1)
    assert buf[462:510] == bytes(48)  # the other three records are empty


def test_primary_header_fields_and_crc():
    buf = image(gpt.gpt_table(DISK, [PART], DISK_GUID))
    h = header(buf, 1)
    last = DISK // 512 - 1
    assert h["sig"] == b"EFI PART" and h["rev"] == 0x10000 and h["hsize"] == 92
    assert (h["my"], h["alt"], h["entries_lba"]) == (1, last, 2)
    assert (h["first"], h["last"]) == (34, last - 33)
    assert (h["n"], h["esize"]) == (128, 128)
    assert uuid.UUID(bytes_le=h["guid"]) == DISK_GUID
    raw = bytearray(buf[512:512 + 92])
    raw[16:20] = bytes(4)
    assert zlib.crc32(raw) == h["crc"]
    assert zlib.crc32(buf[1024:1024 + 128 * 128]) == h["ecrc"]
    assert buf[512 + 92:1024] == bytes(512 - 92)


def test_backup_header_is_last_lba_and_mirrors_primary():
    buf = image(gpt.gpt_table(DISK, [PART], DISK_GUID))
    last = DISK // 512 - 1
    p, b = header(buf, 1), header(buf, last)
    assert (b["my"], b["alt"], b["entries_lba"]) == (last, 1, last - 32)
    assert b["ecrc"] == p["ecrc"] and b["guid"] == p["guid"]
    assert buf[(last - 32) * 512:last * 512] == buf[1024:1024 + 16384]


def test_entry_layout():
    buf = image(gpt.gpt_table(DISK, [PART], DISK_GUID))
    tguid, pguid, first, last, attrs, name = struct.unpack_from("<16s16sQQQ72s", buf, 1024)
    assert uuid.UUID(bytes_le=tguid) == gpt.LINUX_FS_GUID
    assert tguid[:4] == bytes.fromhex("af3dc60f")  # mixed-endian on disk
    assert uuid.UUID(bytes_le=pguid) == PART.guid
    assert (first, last, attrs) == (2048, 2048 + 32 * 2048 - 1, 0)
    assert name.decode("utf-16-le").rstrip("\0") == "rootfs"
    assert buf[1024 + 128:1024 + 16384] == bytes(16384 - 128)


def test_moved_entry_array():
    buf = image(gpt.gpt_table(DISK, [gpt.Partition(3 * MiB, 8 * MiB)], DISK_GUID, entries_lba=16))
    h = header(buf, 1)
    assert (h["entries_lba"], h["first"]) == (16, 48)
    assert buf[4096:8192] == bytes(4096)  # room for the NVDIMM info block
    assert zlib.crc32(buf[8192:8192 + 16384]) == h["ecrc"]


@pytest.mark.parametrize("bad", [gpt.Partition(512, MiB), gpt.Partition(MiB, DISK),
                                 gpt.Partition(MiB + 1, MiB)])
def test_rejects_partitions_outside_usable_area(bad):
    with pytest.raises(ValueError):
        gpt.gpt_table(DISK, [bad], DISK_GUID)


def test_msdos_table():
    (off, sector), = gpt.msdos_table([PART], disk_signature=0xDEADBEEF)
    assert off == 0 and len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", sector, 440)[0] == 0xDEADBEEF
    status, chs_first, ptype, chs_last, first, count = struct.unpack_from("<B3sB3sII", sector, 446)
    assert (status, ptype, first, count) == (0, 0x83, 2048, 32 * 2048)
    assert chs_first == bytes([32, 33, 0])  # LBA 2048 = C0 H32 S33, as fdisk writes it


def test_chs_saturates_beyond_1024_cylinders():
    assert gpt._chs(1024 * 255 * 63) == b"\xfe\xff\xff"


def test_sgdisk_and_sfdisk_agree(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(image(gpt.gpt_table(DISK, [PART], DISK_GUID)))
    out = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True).stdout
    assert "No problems found" in out
    info = subprocess.run(["sgdisk", "-i", "1", str(img)], capture_output=True, text=True).stdout
    assert "First sector: 2048" in info and "Partition name: 'rootfs'" in info
    assert str(PART.guid).upper() in info and str(gpt.LINUX_FS_GUID).upper() in info
    mbr = tmp_path / "mbr.img"
    mbr.write_bytes(image(gpt.msdos_table([PART], 1)))
    dump = subprocess.run(["sfdisk", "-d", str(mbr)], capture_output=True, text=True).stdout
    assert "start=        2048, size=       65536, type=83" in dump
