"""The NVDIMM "pfn" info block (Linux `struct nd_pfn_sb`) that Kata's osbuilder puts at 4 KiB.

With it a raw image attached as an NVDIMM namespace becomes /dev/pmem0 whose data starts at
`dataoff` (2 MiB), so a second partition table at 2 MiB describes the root filesystem from
the namespace's point of view. Layout and checksum follow drivers/nvdimm/pfn.h and
nd_sb_checksum()/nd_fletcher64() in the kernel, values follow Kata's nsdax.gpl.c.
"""
from __future__ import annotations

import struct

PFN_SIG = b"NVDIMM_PFN_INFO\0"
PFN_INFO_OFFSET = 4096  # the kernel reads the info block at namespace offset SZ_4K
PFN_SB_SIZE = 4096
PFN_MODE_RAM = 1
PFN_MODE_PMEM = 2
MiB = 1 << 20
# signature, uuid, parent_uuid, flags, version major/minor, dataoff, npfns, mode,
# start_pad, end_trunc, align, page_size, page_struct_size; then padding and checksum.
_FIELDS = struct.Struct("<16s16s16sIHHQQIIIIIH")
_CHECKSUM_OFFSET = PFN_SB_SIZE - 8


def fletcher64(data: bytes) -> int:
    """nd_fletcher64(): 32-bit little-endian words, 32-bit low sum, 64-bit high sum."""
    lo = hi = 0
    for (word,) in struct.iter_unpack("<I", data):
        lo = (lo + word) & 0xFFFFFFFF
        hi += lo
    return ((hi << 32) | lo) & 0xFFFFFFFFFFFFFFFF


def nd_sb_checksum(block: bytes) -> int:
    """nd_sb_checksum(): fletcher64 of the 4 KiB block with its checksum field zeroed."""
    if len(block) != PFN_SB_SIZE:
        raise ValueError(f"an info block is {PFN_SB_SIZE} bytes, got {len(block)}")
    return fletcher64(block[:_CHECKSUM_OFFSET] + bytes(8))


def nd_pfn_sb(dataoff: int = 2 * MiB, align: int = 2 * MiB, mode: int = PFN_MODE_RAM,
              npfns: int = 0, version: tuple[int, int] = (1, 2)) -> bytes:
    """A 4096-byte nd_pfn_sb as nsdax.gpl.c writes it: zero UUIDs (a label-less namespace
    has a null parent UUID), no start_pad/end_trunc, and the checksum in the last 8 bytes."""
    if dataoff % align or dataoff < 2 * PFN_SB_SIZE:
        raise ValueError(f"dataoff {dataoff} must be a multiple of align {align} and >= 8 KiB")
    head = _FIELDS.pack(PFN_SIG, bytes(16), bytes(16), 0, version[0], version[1], dataoff, npfns,
                        mode, 0, 0, align, 0, 0)
    block = head.ljust(PFN_SB_SIZE, b"\0")
    return block[:_CHECKSUM_OFFSET] + struct.pack("<Q", nd_sb_checksum(block))


def parse_nd_pfn_sb(block: bytes) -> dict:
    """Decode an info block (for tests and checks); includes whether its checksum is valid."""
    (sig, uuid_, parent, flags, major, minor, dataoff, npfns, mode, start_pad, end_trunc, align,
     page_size, page_struct_size) = _FIELDS.unpack_from(block)
    (checksum,) = struct.unpack_from("<Q", block, _CHECKSUM_OFFSET)
    return dict(signature=sig, uuid=uuid_, parent_uuid=parent, flags=flags,
                version=(major, minor), dataoff=dataoff, npfns=npfns, mode=mode,
                start_pad=start_pad, end_trunc=end_trunc, align=align, page_size=page_size,
                page_struct_size=page_struct_size, checksum=checksum,
                checksum_ok=checksum == nd_sb_checksum(block))
