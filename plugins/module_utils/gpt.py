"""Pure-Python partition-table writers: GPT (protective MBR, primary and backup header) and MBR.

Nothing here touches a device: each function returns (offset, bytes) pieces that the caller
writes into a (sparse) image file. All sizes are in bytes unless a name says `lba`.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import uuid
import zlib

SECTOR = 512
GPT_ENTRY_SIZE = 128
GPT_ENTRIES = 128
GPT_ENTRY_SECTORS = GPT_ENTRIES * GPT_ENTRY_SIZE // SECTOR  # 32
GPT_HEADER_SIZE = 92
GPT_SIGNATURE = b"EFI PART"
GPT_REVISION = 0x00010000
LINUX_FS_GUID = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
MBR_LINUX = 0x83
MBR_PROTECTIVE = 0xEE
MBR_BOOT_SIGNATURE = b"\x55\xaa"


@dataclasses.dataclass(frozen=True)
class Partition:
    """One partition: byte offset and byte length (both multiples of SECTOR)."""
    start: int
    size: int
    type_guid: uuid.UUID = LINUX_FS_GUID
    guid: uuid.UUID = uuid.UUID(int=0)
    name: str = ""
    mbr_type: int = MBR_LINUX

    @property
    def first_lba(self) -> int:
        return self.start // SECTOR

    @property
    def last_lba(self) -> int:
        return (self.start + self.size) // SECTOR - 1


def gpt_tail_bytes() -> int:
    """Bytes the backup GPT (entries + header) takes at the end of a disk."""
    return (GPT_ENTRY_SECTORS + 1) * SECTOR


def _check_sectors(*values: int) -> None:
    for v in values:
        if v % SECTOR:
            raise ValueError(f"{v} is not a multiple of {SECTOR}")


def _chs(lba: int) -> bytes:
    """Cylinder/head/sector triple for an LBA (255 heads, 63 sectors; clamped like fdisk)."""
    heads, sectors = 255, 63
    cyl = lba // (heads * sectors)
    if cyl > 1023:
        return b"\xfe\xff\xff"
    head = (lba // sectors) % heads
    sec = lba % sectors + 1
    return bytes([head, ((cyl >> 2) & 0xC0) | sec, cyl & 0xFF])


def mbr_entry(boot: bool, ptype: int, first_lba: int, sectors: int) -> bytes:
    """A 16-byte MBR partition record (sizes saturate at 2**32-1 sectors)."""
    first = min(first_lba, 0xFFFFFFFF)
    count = min(sectors, 0xFFFFFFFF)
    last = first_lba + sectors - 1
    return struct.pack("<B3sB3sII", 0x80 if boot else 0, _chs(first_lba), ptype, _chs(last),
                       first, count)


def mbr_sector(entries: list[bytes], disk_signature: int = 0) -> bytes:
    """A 512-byte MBR with up to four partition records and the 0x55AA signature."""
    if len(entries) > 4:
        raise ValueError("an MBR holds at most four partitions")
    table = b"".join(entries).ljust(64, b"\0")
    return bytes(440) + struct.pack("<IH", disk_signature, 0) + table + MBR_BOOT_SIGNATURE


def msdos_table(partitions: list[Partition], disk_signature: int = 0) -> list[tuple[int, bytes]]:
    """The pieces of an MBR (msdos) label: a single sector at offset 0."""
    for p in partitions:
        _check_sectors(p.start, p.size)
    records = [mbr_entry(False, p.mbr_type, p.first_lba, p.size // SECTOR) for p in partitions]
    return [(0, mbr_sector(records, disk_signature))]


def protective_mbr(disk_size: int) -> bytes:
    """The protective MBR of a GPT disk: one 0xEE record covering LBA 1 to the end."""
    return mbr_sector([mbr_entry(False, MBR_PROTECTIVE, 1, disk_size // SECTOR - 1)])


def gpt_entry(p: Partition) -> bytes:
    """A 128-byte GPT partition entry (GUIDs in their mixed-endian on-disk form)."""
    name = p.name.encode("utf-16-le")
    if len(name) > 72:
        raise ValueError(f"partition name {p.name!r} is longer than 36 UTF-16 units")
    return struct.pack("<16s16sQQQ72s", p.type_guid.bytes_le, p.guid.bytes_le,
                       p.first_lba, p.last_lba, 0, name)


def gpt_entries(partitions: list[Partition]) -> bytes:
    """The whole partition entry array (GPT_ENTRIES slots, unused ones zero)."""
    if len(partitions) > GPT_ENTRIES:
        raise ValueError(f"at most {GPT_ENTRIES} partitions")
    return b"".join(gpt_entry(p) for p in partitions).ljust(GPT_ENTRIES * GPT_ENTRY_SIZE, b"\0")


def gpt_header(*, my_lba: int, alternate_lba: int, first_usable: int, last_usable: int,
               disk_guid: uuid.UUID, entries_lba: int, entries_crc: int) -> bytes:
    """A GPT header sector with its CRC32 computed over the 92 header bytes."""
    def pack(crc: int) -> bytes:
        return struct.pack("<8sIIIIQQQQ16sQIII", GPT_SIGNATURE, GPT_REVISION, GPT_HEADER_SIZE,
                           crc, 0, my_lba, alternate_lba, first_usable, last_usable,
                           disk_guid.bytes_le, entries_lba, GPT_ENTRIES, GPT_ENTRY_SIZE,
                           entries_crc)
    header = pack(zlib.crc32(pack(0)))
    return header.ljust(SECTOR, b"\0")


def gpt_table(disk_size: int, partitions: list[Partition], disk_guid: uuid.UUID,
              entries_lba: int = 2) -> list[tuple[int, bytes]]:
    """The pieces of a GPT label: protective MBR, primary header+entries, backup entries+header.

    entries_lba moves the primary entry array (like `sgdisk -j`), e.g. past the NVDIMM info
    block at byte 4096. Partitions must lie inside the usable LBA range.
    """
    _check_sectors(disk_size)
    last_lba = disk_size // SECTOR - 1
    first_usable = entries_lba + GPT_ENTRY_SECTORS
    last_usable = last_lba - GPT_ENTRY_SECTORS - 1
    if entries_lba < 2 or first_usable > last_usable:
        raise ValueError(f"disk of {disk_size} bytes is too small for a GPT")
    for p in partitions:
        _check_sectors(p.start, p.size)
        if p.size <= 0 or p.first_lba < first_usable or p.last_lba > last_usable:
            raise ValueError(f"partition at {p.start}+{p.size} outside the usable area")
    entries = gpt_entries(partitions)
    crc = zlib.crc32(entries)
    common = dict(first_usable=first_usable, last_usable=last_usable, disk_guid=disk_guid,
                  entries_crc=crc)
    backup_entries_lba = last_lba - GPT_ENTRY_SECTORS
    primary = gpt_header(my_lba=1, alternate_lba=last_lba, entries_lba=entries_lba, **common)
    backup = gpt_header(my_lba=last_lba, alternate_lba=1, entries_lba=backup_entries_lba, **common)
    return [(0, protective_mbr(disk_size)), (SECTOR, primary),
            (entries_lba * SECTOR, entries), (backup_entries_lba * SECTOR, entries),
            (last_lba * SECTOR, backup)]


def write_pieces(fd: int, pieces: list[tuple[int, bytes]]) -> None:
    """Write (offset, bytes) pieces into an open file descriptor."""
    for offset, data in pieces:
        os.pwrite(fd, data, offset)
