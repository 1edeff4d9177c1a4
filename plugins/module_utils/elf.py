"""Read what an ELF file is built for (no Ansible imports: unit tests call it directly)."""
from __future__ import annotations

import struct

# e_machine -> the architecture names the collection uses (uname -m).
MACHINES = {
    0x3E: "x86_64",
    0xB7: "aarch64",
    0x15: "ppc64le",  # EM_PPC64; endianness decides ppc64 vs ppc64le
    0x16: "s390x",
    0x03: "i386",
    0x28: "arm",
    0xF3: "riscv64",
}


class NotElf(ValueError):
    """The file is not an ELF object."""


def elf_info(path: str) -> dict:
    """Architecture, class, endianness, and whether the file is linked statically."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 20 or ident[:4] != b"\x7fELF":
            raise NotElf(f"{path} is not an ELF file")
        bits = {1: 32, 2: 64}.get(ident[4])
        endian = {1: "<", 2: ">"}.get(ident[5])
        if bits is None or endian is None:
            raise NotElf(f"{path} has an unknown ELF class or byte order")
        (e_type, e_machine) = struct.unpack_from(endian + "HH", ident, 16)
        arch = MACHINES.get(e_machine, f"unknown-{e_machine:#x}")
        if e_machine == 0x15 and endian == ">":
            arch = "ppc64"
        interp = _has_interp(f, endian, bits)
    return {
        "arch": arch,
        "bits": bits,
        "endian": "little" if endian == "<" else "big",
        "type": {2: "exec", 3: "dyn"}.get(e_type, str(e_type)),
        "static": not interp,
    }


def _has_interp(f, endian: str, bits: int) -> bool:
    """True when a PT_INTERP program header exists (a dynamically linked executable)."""
    f.seek(0)
    head = f.read(64)
    if bits == 64:
        e_phoff, = struct.unpack_from(endian + "Q", head, 32)
        e_phentsize, e_phnum = struct.unpack_from(endian + "HH", head, 54)
    else:
        e_phoff, = struct.unpack_from(endian + "I", head, 28)
        e_phentsize, e_phnum = struct.unpack_from(endian + "HH", head, 42)
    f.seek(e_phoff)
    table = f.read(e_phentsize * e_phnum)
    for i in range(e_phnum):
        p_type, = struct.unpack_from(endian + "I", table, i * e_phentsize)
        if p_type == 3:  # PT_INTERP
            return True
    return False
