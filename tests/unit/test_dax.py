"""Unit tests of the nd_pfn_sb writer against the kernel's struct layout and checksum."""
from __future__ import annotations

import random
import struct

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import dax

MiB = 1 << 20


def reference_fletcher64(data: bytes) -> int:
    """Independent transcription of nd_fletcher64(): u32 lo32 wraps, u64 hi32 does not
    (until the final shift truncates to 64 bits)."""
    lo32, hi32 = 0, 0
    for i in range(0, len(data), 4):
        lo32 = (lo32 + int.from_bytes(data[i:i + 4], "little")) % 2**32
        hi32 = (hi32 + lo32) % 2**64
    return (hi32 << 32 | lo32) % 2**64


def test_fields_at_kernel_offsets():
    sb = dax.nd_pfn_sb()
    assert len(sb) == 4096
    assert sb[0:16] == b"NVDIMM_PFN_INFO\0"
    assert sb[16:48] == bytes(32)  # uuid and parent_uuid: null for a label-less namespace
    flags, major, minor, dataoff, npfns, mode = struct.unpack_from("<IHHQQI", sb, 48)
    assert (flags, major, minor, dataoff, npfns, mode) == (0, 1, 2, 2 * MiB, 0, 1)
    start_pad, end_trunc, align = struct.unpack_from("<III", sb, 76)
    assert (start_pad, end_trunc, align) == (0, 0, 2 * MiB)
    assert sb[88:4088] == bytes(4000)


def test_checksum_matches_independent_fletcher64():
    sb = dax.nd_pfn_sb()
    (stored,) = struct.unpack_from("<Q", sb, 4088)
    assert stored == reference_fletcher64(sb[:4088] + bytes(8))
    assert dax.parse_nd_pfn_sb(sb)["checksum_ok"]


def test_fletcher64_on_random_blocks():
    rng = random.Random(1)
    for _ in range(5):
        block = bytes(rng.getrandbits(8) for _ in range(4096))
        assert dax.fletcher64(block) == reference_fletcher64(block)
    assert dax.fletcher64(b"\xff" * 4096) == reference_fletcher64(b"\xff" * 4096)


def test_corruption_is_detected():
    sb = bytearray(dax.nd_pfn_sb())
    sb[60] ^= 1
    assert not dax.parse_nd_pfn_sb(bytes(sb))["checksum_ok"]


def test_parse_roundtrip_and_bad_values():
    info = dax.parse_nd_pfn_sb(dax.nd_pfn_sb(dataoff=4 * MiB, align=2 * MiB, npfns=9))
    assert (info["dataoff"], info["align"], info["npfns"], info["version"]) == (4 * MiB, 2 * MiB, 9, (1, 2))
    with pytest.raises(ValueError):
        dax.nd_pfn_sb(dataoff=3 * MiB, align=2 * MiB)
    with pytest.raises(ValueError):
        dax.nd_sb_checksum(b"short")
