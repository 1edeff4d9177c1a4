#!/usr/bin/python
"""Ansible module kata.osbuilder.cpio_archive: pack a directory into a kernel initramfs."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cpio_archive
short_description: Pack a directory into a reproducible initramfs (newc cpio, compressed)
description:
  - Writes C(src) as a newc ("070701") cpio archive the Linux kernel unpacks as initramfs,
    compressed with gzip, zstd, xz, lz4 or not at all.
  - Entries are sorted bytewise by path (parents first, the top directory itself is not stored),
    inode numbers are renumbered, hard links are kept (data stored once, with the last link),
    owners are 0:0 unless O(keep_owner), and mtimes are clamped to O(mtime) or the
    E(SOURCE_DATE_EPOCH) environment variable. The same tree gives the same bytes.
  - The archive is streamed into the compressor and written to a temporary file next to
    O(dest), which replaces O(dest) atomically only when its sha256 differs.
  - Refuses, before writing anything, a missing or non-directory O(src), a O(dest) inside
    O(src), unreadable paths in O(src), an unknown compression, a bad level or a bad extra entry.
version_added: "0.1.0"
author:
  - kata.osbuilder contributors
options:
  src:
    description: Directory to pack. Symlinks in it are stored as symlinks, never followed.
    type: path
    required: true
  dest:
    description: Initramfs file to write (mode 0644). Its directory must exist and must not be inside O(src).
    type: path
    required: true
  compression:
    description:
      - V(gzip) uses pigz with all cores when installed, else Python's zlib (the bytes differ
        between the two; RV(compressor) tells which one ran).
      - V(zstd) runs C(zstd -T0 --long=26) (output independent of the core count; the kernel
        needs a 64 MiB window buffer while unpacking).
      - V(xz) runs C(xz --check=crc32 --lzma2=preset=LEVEL,dict=1MiB) single-threaded, as
        multi-threaded xz output depends on the thread count.
      - V(lz4) runs C(lz4 -l) (legacy format, the one the kernel reads).
    type: str
    choices: [gzip, zstd, xz, lz4, none]
    default: gzip
  level:
    description:
      - Compression level. Defaults are gzip 6, zstd 6, xz 6, lz4 9.
      - Ranges are gzip 1-9, zstd 1-19, xz 0-9, lz4 1-12. Not allowed with O(compression=none).
    type: int
  mtime:
    description:
      - Clamp every mtime to at most this many seconds since the epoch.
      - When unset, E(SOURCE_DATE_EPOCH) is used if set; otherwise mtimes are kept.
    type: int
  keep_owner:
    description: Store the real uid and gid instead of 0:0.
    type: bool
    default: false
  extra_entries:
    description:
      - Entries added to the archive without touching O(src). One replaces the entry of the same
        path from O(src) (and all below it when it replaces a directory with something else).
        Missing parent directories are added with mode 0755.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Path inside the archive, such as V(dev/console). Leading slashes are ignored.
        type: str
        required: true
      type:
        description: Kind of entry.
        type: str
        required: true
        choices: [file, dir, symlink, char, block, fifo]
      mode:
        description:
          - Permission bits, including setuid, setgid and sticky (for example V(0600) or V("4755")).
          - Defaults are dir 0755, symlink 0777, char and block 0600, fifo 0644,
            file the mode of O(extra_entries[].src).
        type: raw
      uid:
        description: Owner uid.
        type: int
        default: 0
      gid:
        description: Owner gid.
        type: int
        default: 0
      src:
        description: Host file whose content a V(file) entry gets.
        type: path
      target:
        description: Target of a V(symlink) entry.
        type: str
      major:
        description: Device major number of a V(char) or V(block) entry.
        type: int
      minor:
        description: Device minor number of a V(char) or V(block) entry.
        type: int
notes:
  - No root is needed to pack (except to read root-only files); device nodes in O(src) are stored as they are.
  - Regular files over 4 GiB cannot be stored in newc.
  - In check mode the archive is built and hashed in memory-bounded streaming, but nothing is written.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Pack the guest rootfs as a zstd initrd with a console node and /init
  kata.osbuilder.cpio_archive:
    src: /var/lib/osbuilder/rootfs
    dest: /var/lib/osbuilder/kata-containers-initrd.img
    compression: zstd
    mtime: 0
    extra_entries:
      - {path: init, type: symlink, target: /usr/bin/kata-agent}
      - {path: dev/console, type: char, major: 5, minor: 1, mode: "0600"}

- name: Reproducible gzip initrd (mtimes clamped to SOURCE_DATE_EPOCH)
  kata.osbuilder.cpio_archive:
    src: /var/lib/osbuilder/rootfs
    dest: /tmp/initrd.img
  environment:
    SOURCE_DATE_EPOCH: "1700000000"
"""

RETURN = r"""
sha256:
  description: sha256 of the (compressed) archive.
  returned: success
  type: str
  sample: 3bcd636f752bac2b17926cb084b0ee9c3b7f2fb3c652f911ea9f527681e7e3b6
size:
  description: Size of the archive in bytes.
  returned: success
  type: int
  sample: 44955232
entries:
  description: Number of cpio entries, not counting the trailer.
  returned: success
  type: int
  sample: 8742
compression:
  description: The compression format.
  returned: success
  type: str
  sample: gzip
level:
  description: The compression level used (null for none).
  returned: success
  type: int
  sample: 6
compressor:
  description: What compressed the archive, one of pigz, zlib, zstd, xz, lz4, none.
  returned: success
  type: str
  sample: pigz
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kata.osbuilder.plugins.module_utils.cpio import (
    COMPRESSIONS, EXTRA_TYPES, CpioError, build)

EXTRA_ENTRY_SPEC = {
    "path": {"type": "str", "required": True},
    "type": {"type": "str", "required": True, "choices": list(EXTRA_TYPES)},
    "mode": {"type": "raw"},
    "uid": {"type": "int", "default": 0},
    "gid": {"type": "int", "default": 0},
    "src": {"type": "path"},
    "target": {"type": "str"},
    "major": {"type": "int"},
    "minor": {"type": "int"},
}

ARGUMENT_SPEC = {
    "src": {"type": "path", "required": True},
    "dest": {"type": "path", "required": True},
    "compression": {"type": "str", "default": "gzip", "choices": list(COMPRESSIONS)},
    "level": {"type": "int"},
    "mtime": {"type": "int"},
    "keep_owner": {"type": "bool", "default": False},
    "extra_entries": {"type": "list", "elements": "dict", "default": [], "options": EXTRA_ENTRY_SPEC},
}


def main() -> None:
    """Parse arguments, build the archive, report."""
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        result = build(params["src"], params["dest"], compression=params["compression"],
                       level=params["level"], mtime=params["mtime"],
                       keep_owner=params["keep_owner"], extra_entries=params["extra_entries"],
                       check_mode=module.check_mode)
    except CpioError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
