#!/usr/bin/python
# SPDX-License-Identifier: Apache-2.0
"""Ansible module kata.osbuilder.gpt_image: a directory in, a raw bootable disk image out."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpt_image
short_description: Build a raw, partitioned guest disk image from a directory, without loop devices
description:
  - Turns a root filesystem directory into a raw disk image with one root partition, like
    Kata Containers' osbuilder C(image_builder.sh), but without loop devices, mounts or root
    privileges (ext4 is made with C(mke2fs -d -E offset=) straight into the image, erofs with
    C(mkfs.erofs) into a side file that is copied into place skipping holes).
  - The partition table (GPT or MBR) and the optional NVDIMM/DAX header are written in Python.
  - The output is reproducible. Disk GUID, partition GUID, filesystem UUID and the ext4
    directory hash seed come from O(seed); every inode gets the timestamp O(epoch) and, with
    O(force_root_owner), uid/gid 0. The same tree gives the same sha256.
  - The image is built in a hidden temporary file next to O(dest) and renamed over it only
    when the bytes differ, so O(dest) is never half-written; the temporary file is always removed.
  - In check mode the image is still built in a temporary file (only that tells whether it
    would differ) and then discarded.
version_added: "0.1.0"
author: kata.osbuilder contributors
options:
  src:
    description: Directory holding the root filesystem. It is only read, never modified.
    type: path
    required: true
  dest:
    description: Image file to write. Must not be inside O(src); its directory must exist.
    type: path
    required: true
  fs_type:
    description:
      - Root filesystem. C(ext4) is read-write; C(erofs) is read-only and compressed with
        O(erofs_compression).
      - C(xfs) is not offered, because mkfs.xfs can neither write at an offset nor populate
        hard links without mounting the filesystem (which needs root and a loop device).
    type: str
    choices: [ext4, erofs]
    default: ext4
  table:
    description: Partition table of the disk, C(gpt) (protective MBR, primary and backup header) or C(msdos).
    type: str
    choices: [gpt, msdos]
    default: gpt
  size:
    description:
      - Total image size, in bytes or with a binary suffix (C(512M), C(2G)). A multiple of the
        size alignment. When too small, the module fails and names the size that would fit.
      - Unset, the size is computed from the content (apparent size rounded up to the block size
        per file, directories, inodes, journal and other ext4 metadata, reserved blocks) plus
        O(root_free_space), rounded up to O(size_alignment_mb).
    type: str
  root_free_space:
    description:
      - Free space in MiB left in the root filesystem for unprivileged users, like osbuilder's
        C(ROOT_FREE_SPACE). Ignored for erofs (read-only).
    type: int
    default: 0
  size_alignment_mb:
    description:
      - The image size is a multiple of this many MiB (osbuilder always rounds to 128 MiB).
        Must be even with O(dax_header). Slack from rounding goes to the root filesystem.
    type: int
    default: 2
  block_size:
    description: Filesystem block size. erofs supports 4096 only.
    type: int
    choices: [1024, 2048, 4096]
    default: 4096
  label:
    description: Filesystem label (ext4) and GPT partition name, at most 16 bytes.
    type: str
    default: rootfs
  partition_type_guid:
    description:
      - GPT partition type GUID of the root partition. The default is the generic Linux
        filesystem type; C(4f68bce3-e8cd-4db1-96e7-fbcaf984b709) marks an x86-64 root partition.
      - Ignored with O(table=msdos) (type 0x83).
    type: str
    default: 0fc63daf-8483-4772-8e79-3d69d8477de4
  seed:
    description:
      - String from which the disk GUID, partition GUID, MBR disk signature, filesystem UUID and
        ext4 hash seed are derived (uuid5 of seed and purpose). Images built with the same seed
        share these identifiers; give each distinct image its own seed when that matters.
    type: str
    default: kata.osbuilder
  epoch:
    description:
      - Timestamp (seconds since 1970) given to every inode (atime, ctime, mtime, crtime) and to
        the filesystem's own times. The source tree is not touched.
      - Unset, C(SOURCE_DATE_EPOCH) from the module's environment, else the newest mtime in O(src).
    type: int
  force_root_owner:
    description: Make every file owned by uid 0 / gid 0 in the image (the source keeps its owners).
    type: bool
    default: true
  dax_header:
    description:
      - Write osbuilder's NVDIMM layout so that the image boots both as a block device
        (C(root=/dev/vda1), C(/dev/nvme0n1p1)) and as an NVDIMM namespace (C(root=/dev/pmem0p1)).
      - The outer table's partition starts at 3 MiB; a 4096-byte C(nd_pfn_sb) info block
        (signature C(NVDIMM_PFN_INFO), version 1.2, mode RAM, dataoff and align 2 MiB,
        fletcher64 checksum) sits at byte 4096; at 2 MiB an MBR describes the same partition
        from the namespace's point of view (start 1 MiB). With O(table=gpt) the primary GPT
        entry array starts at LBA 16 so that it does not overlap the info block.
      - Like osbuilder's default (C(SKIP_DAX_HEADER=no)), it is on unless turned off.
    type: bool
    default: true
  reserved_percent:
    description: ext4 blocks reserved for root, in percent (osbuilder uses 3).
    type: int
    default: 3
  erofs_compression:
    description: mkfs.erofs compressor (C(lz4hc), C(lz4)); empty for none.
    type: str
    default: lz4hc
  verity:
    description:
      - Measured rootfs (osbuilder's C(MEASURED_ROOTFS=yes)). Partition 1 holds the filesystem,
        partition 2 (named C(verity)) its dm-verity hash tree, made with
        C(veritysetup format --no-superblock), sha256, 4 KiB data and hash blocks, on plain side
        files (no loop device). The salt is derived from O(seed), so the root hash is
        reproducible (osbuilder's is random).
      - The filesystem must be mounted read-only; the returned RV(verity.kernel_cmdline) does.
    type: bool
    default: false
  verity_disk:
    description:
      - The disk as the guest sees it (C(/dev/vda) for virtio-blk, C(/dev/nvme0n1), C(/dev/pmem0));
        only used to write the partition names into RV(verity.kernel_cmdline).
    type: str
    default: /dev/vda
requirements:
  - cryptsetup-bin (veritysetup) for O(verity)
  - e2fsprogs >= 1.43 (mke2fs -d, debugfs, dumpe2fs) for ext4
  - erofs-utils for erofs
notes:
  - Needs no loop devices, mounts or root privileges; files the build user cannot read fail the build.
  - Memory use is bounded; images are sparse files and are hashed and copied in 4 MiB chunks.
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Build the guest image from the rootfs (GPT, ext4, DAX header)
  kata.osbuilder.gpt_image:
    src: /var/lib/osbuilder/rootfs-debian
    dest: /var/lib/osbuilder/kata-containers.img
    root_free_space: 64
    seed: "{{ inventory_hostname }}-debian"

- name: A read-only erofs image on an MBR disk, no NVDIMM header
  kata.osbuilder.gpt_image:
    src: /var/lib/osbuilder/rootfs-alpine
    dest: /srv/images/alpine.img
    fs_type: erofs
    table: msdos
    dax_header: false
"""

RETURN = r"""
dest:
  description: Path of the image.
  returned: always
  type: str
size:
  description: Image size in bytes.
  returned: success
  type: int
  sample: 54525952
sha256:
  description: sha256 of the image.
  returned: success
  type: str
partition_offset:
  description: Byte offset of the root partition in the image (3 MiB with dax_header, else 1 MiB).
  returned: success
  type: int
partition_size:
  description: Root partition (and filesystem) size in bytes.
  returned: success
  type: int
namespace_offset:
  description: Byte offset where the NVDIMM namespace data (/dev/pmem0) begins; null without dax_header.
  returned: success
  type: int
content_bytes:
  description: Apparent size of the files in src.
  returned: success
  type: int
epoch:
  description: Timestamp given to every inode.
  returned: success
  type: int
fs_type:
  description: Filesystem made.
  returned: success
  type: str
table:
  description: Partition table written.
  returned: success
  type: str
dax_header:
  description: Whether the NVDIMM layout was written.
  returned: success
  type: bool
disk_guid:
  description: GPT disk GUID (null with table=msdos).
  returned: success
  type: str
disk_signature:
  description: MBR disk signature (null with table=gpt).
  returned: success
  type: str
partition_guid:
  description: GPT partition GUID (null with table=msdos).
  returned: success
  type: str
fs_uuid:
  description: Filesystem UUID.
  returned: success
  type: str
verity:
  description:
    - With O(verity), the hash tree (null without) - C(root_hash), C(salt), C(data_blocks),
      C(data_block_size), C(hash_block_size), C(hash_offset) and C(hash_size) (bytes in the image),
      C(data_device), C(hash_device), C(root_hash_line) (osbuilder's C(root_hash_<variant>.txt)
      content) and C(kernel_cmdline) (C(dm-mod.create="dm-verity,,,ro,0 <sectors> verity 1 <data>
      <hash> 4096 4096 <blocks> 0 sha256 <root hash> <salt>" root=/dev/dm-0 rootfstype=... ro)).
  returned: success
  type: dict
"""

import uuid
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kata.osbuilder.plugins.module_utils.diskimage import (
    MiB, ImageError, Spec, build, parse_size)

ARGUMENT_SPEC = dict(
    src=dict(type="path", required=True),
    dest=dict(type="path", required=True),
    fs_type=dict(type="str", default="ext4", choices=["ext4", "erofs"]),
    table=dict(type="str", default="gpt", choices=["gpt", "msdos"]),
    size=dict(type="str"),
    root_free_space=dict(type="int", default=0),
    size_alignment_mb=dict(type="int", default=2),
    block_size=dict(type="int", default=4096, choices=[1024, 2048, 4096]),
    label=dict(type="str", default="rootfs"),
    partition_type_guid=dict(type="str", default="0fc63daf-8483-4772-8e79-3d69d8477de4"),
    seed=dict(type="str", default="kata.osbuilder"),
    epoch=dict(type="int"),
    force_root_owner=dict(type="bool", default=True),
    dax_header=dict(type="bool", default=True),
    reserved_percent=dict(type="int", default=3),
    erofs_compression=dict(type="str", default="lz4hc"),
    verity=dict(type="bool", default=False),
    verity_disk=dict(type="str", default="/dev/vda"),
)


def spec_from_params(p: dict) -> Spec:
    """Translate module parameters into a diskimage.Spec (raises ImageError on bad values)."""
    try:
        type_guid = uuid.UUID(p["partition_type_guid"])
    except ValueError:
        raise ImageError(f"partition_type_guid {p['partition_type_guid']!r} is not a GUID") from None
    return Spec(src=Path(p["src"]), dest=Path(p["dest"]), fs_type=p["fs_type"], table=p["table"],
                size=parse_size(p["size"]), root_free_space=p["root_free_space"],
                size_alignment=p["size_alignment_mb"] * MiB, block_size=p["block_size"],
                label=p["label"], partition_type_guid=type_guid, seed=p["seed"],
                epoch=p["epoch"], force_root_owner=p["force_root_owner"],
                dax_header=p["dax_header"], reserved_percent=p["reserved_percent"],
                erofs_compression=p["erofs_compression"], verity=p["verity"],
                verity_disk=p["verity_disk"])


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = build(spec_from_params(module.params), check_mode=module.check_mode)
    except ImageError as e:
        module.fail_json(msg=str(e), dest=module.params["dest"])
    except OSError as e:  # e.g. no space left in dest's directory
        module.fail_json(msg=f"building {module.params['dest']} failed: {e}", dest=module.params["dest"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
