"""Turn a directory into a raw, partitioned, bootable disk image without loop devices or mounts.

The filesystem is made by userspace tools straight into a sparse image file (ext4 with
`mke2fs -d -E offset=`, erofs into a side file copied into place hole-aware), the partition
tables and the optional NVDIMM info block are written by gpt.py / dax.py. Everything that
would differ between two builds of the same tree (GUIDs, UUIDs, hash seed, timestamps,
owners) is derived from a seed and an epoch, so the same tree gives the same bytes.

The image is built in a temporary file next to the destination and renamed into place.

With `verity`, the image is a measured rootfs as Kata's osbuilder makes it (MEASURED_ROOTFS):
partition 1 holds the filesystem, partition 2 its dm-verity hash tree (`veritysetup format
--no-superblock`, sha256, 4 KiB blocks, run on plain side files: no loop device). The salt comes
from the seed, so the root hash is reproducible too (osbuilder's salt is random).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path

from ansible_collections.kata.osbuilder.plugins.module_utils import dax, gpt

MiB = 1 << 20
FS_TYPES = ("ext4", "erofs")
TABLES = ("gpt", "msdos")
PART_START = 1 * MiB            # first partition without the DAX header (as osbuilder)
DAX_NAMESPACE_DATA = 2 * MiB    # nd_pfn_sb dataoff: where /dev/pmem0 begins in the image
DAX_PART_START = 3 * MiB        # first partition with the DAX header (as osbuilder)
DAX_GPT_ENTRIES_LBA = 16        # primary GPT entries moved past the info block at 4..8 KiB
EXT4_INODE_SIZE = 256
EXT4_DESC_SIZE = 64
SEED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/kata-containers/osbuilder#gpt_image")
COPY_CHUNK = 4 * MiB


class ImageError(Exception):
    """A problem with the input or the build, reported to the user as one line."""


@dataclasses.dataclass
class Spec:
    """What to build (see the module documentation for each option)."""
    src: Path
    dest: Path
    fs_type: str = "ext4"
    table: str = "gpt"
    size: int | None = None
    root_free_space: int = 0          # MiB
    size_alignment: int = 2 * MiB
    block_size: int = 4096
    label: str = "rootfs"
    partition_type_guid: uuid.UUID = gpt.LINUX_FS_GUID
    seed: str = "kata.osbuilder"
    epoch: int | None = None
    force_root_owner: bool = True
    dax_header: bool = True
    reserved_percent: int = 3
    erofs_compression: str = "lz4hc"
    verity: bool = False
    verity_disk: str = "/dev/vda"     # the disk as the guest sees it, for the kernel command line


@dataclasses.dataclass
class TreeStats:
    """What a directory needs on ext4: data blocks and inodes, plus its newest mtime."""
    inodes: int = 1
    blocks: int = 0
    apparent_bytes: int = 0
    newest_mtime: int = 0
    longest_name: int = 0           # bytes
    longest_name_path: str = ""
    all_root: bool = True           # every entry already owned by uid 0 / gid 0


@dataclasses.dataclass(frozen=True)
class Ids:
    """Identifiers derived from the seed."""
    disk_guid: uuid.UUID
    partition_guid: uuid.UUID
    fs_uuid: uuid.UUID
    hash_seed: uuid.UUID
    mbr_signature: int
    verity_partition_guid: uuid.UUID | None = None
    verity_salt: str = ""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things go in the image (bytes)."""
    size: int
    part_start: int
    part_size: int
    hash_start: int = 0             # verity: the hash partition (0: none)
    hash_size: int = 0


# ---------------------------------------------------------------- validation and inputs

def parse_size(value) -> int | None:
    """Bytes from an int or a string like '512M', '1GiB', '2048' (binary units)."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ImageError(f"size {value!r} is not a number of bytes or like 512M / 2G")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


def validate(spec: Spec) -> None:
    """Refuse bad input before any work, with one line naming the problem."""
    validate_paths(spec.src, spec.dest)
    validate_options(spec)


def validate_paths(src: Path, dest: Path) -> None:
    """src must be a directory; dest a (possibly missing) file outside it, in an existing directory."""
    if not src.is_dir():
        raise ImageError(f"src {src} does not exist or is not a directory")
    real = dest.resolve()
    if real == src.resolve() or src.resolve() in real.parents:
        raise ImageError(f"dest {dest} is inside src {src}")
    if not real.parent.is_dir():
        raise ImageError(f"directory of dest {dest} does not exist")
    if real.exists() and not real.is_file():
        raise ImageError(f"dest {dest} exists and is not a regular file")


def validate_options(spec: Spec) -> None:
    """Filesystem, table, sizes, seed and label."""
    if spec.fs_type not in FS_TYPES:
        raise ImageError(f"unknown fs_type {spec.fs_type!r} (choose from {', '.join(FS_TYPES)})")
    if spec.table not in TABLES:
        raise ImageError(f"unknown table {spec.table!r} (choose from {', '.join(TABLES)})")
    if spec.block_size not in (1024, 2048, 4096) or (spec.fs_type == "erofs" and spec.block_size != 4096):
        raise ImageError(f"block_size {spec.block_size} not supported for {spec.fs_type}")
    if not isinstance(spec.seed, str) or not spec.seed or len(spec.seed) > 256 or not spec.seed.isprintable():
        raise ImageError("seed must be a printable string of 1 to 256 characters")
    if spec.size_alignment <= 0 or spec.size_alignment % MiB:
        raise ImageError("size alignment must be a positive number of MiB")
    if spec.dax_header and spec.size_alignment % (2 * MiB):
        raise ImageError("dax_header needs an image size aligned to 2 MiB (even size_alignment_mb)")
    if spec.root_free_space < 0 or not 0 <= spec.reserved_percent < 50:
        raise ImageError("root_free_space must be >= 0 and reserved_percent in 0..49")
    if spec.size is not None and (spec.size <= 0 or spec.size % spec.size_alignment):
        raise ImageError(f"size {spec.size} must be a positive multiple of {spec.size_alignment} bytes")
    if len(spec.label.encode()) > 16:
        raise ImageError(f"label {spec.label!r} is longer than 16 bytes")
    if spec.verity and not re.fullmatch(r"/dev/[A-Za-z0-9_./-]+", spec.verity_disk or ""):
        raise ImageError(f"verity_disk {spec.verity_disk!r} is not a /dev path")


def check_tree(spec: Spec, stats: TreeStats) -> None:
    """Refuse trees the chosen mkfs is known to choke on (with the offending path)."""
    if spec.fs_type == "erofs" and stats.longest_name >= 255:
        raise ImageError(f"mkfs.erofs (erofs-utils 1.5) fails on 255-byte names: {stats.longest_name_path}")


def derive_ids(seed: str) -> Ids:
    """GUIDs/UUIDs as uuid5(namespace, seed + ':' + purpose); the MBR signature from sha256."""
    def one(purpose: str) -> uuid.UUID:
        return uuid.uuid5(SEED_NAMESPACE, f"{seed}:{purpose}")
    sig = int.from_bytes(hashlib.sha256(f"{seed}:mbr".encode()).digest()[:4], "little")
    salt = hashlib.sha256(f"{seed}:verity-salt".encode()).hexdigest()
    return Ids(one("disk"), one("partition"), one("filesystem"), one("ext4-hash-seed"), sig,
               one("verity-partition"), salt)


def resolve_epoch(spec: Spec, stats: TreeStats) -> int:
    """The timestamp of every inode: the option, else SOURCE_DATE_EPOCH, else the newest mtime."""
    if spec.epoch is not None:
        return spec.epoch
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        if not env.isdigit():
            raise ImageError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds")
        return int(env)
    return stats.newest_mtime


# ---------------------------------------------------------------- sizing

def _dir_blocks(names: list[str], block_size: int) -> int:
    """Blocks of an ext4 directory: entries padded to 4 bytes, blocks filled to ~3/4 (htree)."""
    used = 24 + sum(8 + (len(os.fsencode(n)) + 3) // 4 * 4 for n in names)
    blocks = max(1, math.ceil(used / (block_size * 3 // 4)))
    return blocks + (1 if blocks > 1 else 0)


def _file_blocks(size: int, block_size: int) -> int:
    """Data blocks of a file plus an extent block per 4 full-length (128 MiB) extents beyond 4."""
    blocks = -(-size // block_size)
    return blocks + max(0, -(-blocks // 32768) - 4)


def _count_inode(stats: TreeStats, st: os.stat_result, block_size: int) -> None:
    """Add one inode (seen for the first time) and the blocks its data needs."""
    stats.inodes += 1
    stats.apparent_bytes += st.st_size
    if stat.S_ISREG(st.st_mode):
        stats.blocks += _file_blocks(st.st_size, block_size)
    elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:  # longer targets leave the inode
        stats.blocks += 1


def scan_tree(src: Path, block_size: int) -> TreeStats:
    """Walk src without following symlinks; hard links count once."""
    stats = TreeStats()
    seen: set[tuple[int, int]] = set()
    stack = [src]
    while stack:
        names = []
        with os.scandir(stack.pop()) as it:
            for entry in it:
                names.append(entry.name)
                if len(os.fsencode(entry.name)) > stats.longest_name:
                    stats.longest_name, stats.longest_name_path = len(os.fsencode(entry.name)), entry.path
                st = entry.stat(follow_symlinks=False)
                stats.newest_mtime = max(stats.newest_mtime, int(st.st_mtime))
                stats.all_root = stats.all_root and st.st_uid == 0 and st.st_gid == 0
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(entry.path))
                elif st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                _count_inode(stats, st, block_size)
        stats.blocks += _dir_blocks(names, block_size)
    return stats


def journal_blocks(total_blocks: int) -> int:
    """mke2fs's default journal size (ext2fs_default_journal_size, in 4 KiB blocks)."""
    for limit, size in ((2048, 0), (32768, 1024), (256 * 1024, 4096), (512 * 1024, 8192),
                        (4096 * 1024, 16384), (8192 * 1024, 32768), (16384 * 1024, 65536),
                        (32768 * 1024, 131072)):
        if total_blocks < limit:
            return size
    return 262144


def _backup_groups(groups: int) -> int:
    """Groups holding a superblock copy with sparse_super: 0, 1 and powers of 3, 5, 7."""
    found = {0, 1}
    for base in (3, 5, 7):
        g = base
        while g < groups:
            found.add(g)
            g *= base
    return len([g for g in found if g < groups])


def ext4_metadata_blocks(total: int, inodes: int, block_size: int) -> int:
    """Blocks mke2fs spends on metadata for a filesystem of `total` blocks and `inodes` inodes."""
    per_group = 8 * block_size
    groups = -(-total // per_group)
    desc_per_block = block_size // EXT4_DESC_SIZE
    gdt = -(-groups // desc_per_block)
    reserved_gdt = min(block_size // 4, -(-min(total * 1024, 2**32) // per_group // desc_per_block))
    copies = _backup_groups(groups)
    inode_tables = -(-inodes * EXT4_INODE_SIZE // block_size) + groups * 2
    journal = journal_blocks(total) * 4096 // block_size
    return copies * (1 + gdt + reserved_gdt) + 2 * groups + inode_tables + journal + 8


def ext4_geometry(stats: TreeStats, free_bytes: int, block_size: int,
                  reserved_percent: int) -> tuple[int, int]:
    """(filesystem bytes, inode count) for the tree plus free_bytes left to non-root users."""
    inodes = stats.inodes + 16 + stats.inodes // 10 + free_bytes // 16384
    inodes = -(-inodes // 16) * 16
    payload = stats.blocks + -(-free_bytes // block_size) + 4  # + lost+found
    total = payload
    for _ in range(6):  # metadata depends on the total; converges in a few rounds
        needed = payload + ext4_metadata_blocks(total, inodes, block_size)
        needed += needed // 400 + 64  # allocator slack
        total = -(-needed * 100 // (100 - reserved_percent))
    return total * block_size, inodes


VERITY_BLOCK = 4096
VERITY_HASHES_PER_BLOCK = VERITY_BLOCK // 32    # sha256


def verity_hash_bytes(data_blocks: int) -> int:
    """Size of a superblock-less sha256 hash tree over data_blocks 4 KiB blocks (every level
    rounded up to whole blocks, as veritysetup lays it out)."""
    total, level = 0, data_blocks
    while True:
        level = -(-level // VERITY_HASHES_PER_BLOCK)
        total += level
        if level <= 1:
            return max(total, 1) * VERITY_BLOCK


def plan_layout(spec: Spec, fs_bytes: int) -> Layout:
    """Image size and partition placement; the partition fills whatever alignment rounds up.

    With verity the data partition is the filesystem rounded up to 1 MiB, the hash partition
    follows it, and alignment slack goes to the hash partition (the data must not change size
    once it is hashed).
    """
    start = DAX_PART_START if spec.dax_header else PART_START
    tail = gpt.gpt_tail_bytes() if spec.table == "gpt" else 0
    if spec.verity:
        data = -(-fs_bytes // MiB) * MiB
        hash_start = start + data
        hash_min = -(-verity_hash_bytes(data // VERITY_BLOCK) // MiB) * MiB
        needed = hash_start + hash_min + tail
        fits = -(-needed // spec.size_alignment) * spec.size_alignment
        size = spec.size or fits
        if size < needed:
            raise ImageError(f"size {size} is too small for {spec.src} with its hash tree: {fits} bytes "
                             f"({fits // MiB} MiB) would fit")
        hash_size = (size - hash_start - tail) // VERITY_BLOCK * VERITY_BLOCK
        return Layout(size=size, part_start=start, part_size=data, hash_start=hash_start,
                      hash_size=hash_size)
    needed = start + fs_bytes + tail
    fits = -(-needed // spec.size_alignment) * spec.size_alignment
    size = spec.size or fits
    if size < needed:
        raise ImageError(f"size {size} is too small for {spec.src}: {fits} bytes "
                         f"({fits // MiB} MiB) would fit")
    if spec.table == "msdos" and size // gpt.SECTOR > 0xFFFFFFFF:
        raise ImageError("msdos tables address at most 2 TiB; use table=gpt")
    part_size = (size - start - tail) // spec.block_size * spec.block_size
    return Layout(size=size, part_start=start, part_size=part_size)


# ---------------------------------------------------------------- filesystems

def _run(cmd: list[str], env: dict | None = None) -> str:
    """Run a tool; its failure becomes an ImageError with the tool's last stderr line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise ImageError(f"{cmd[0]} not found; install it on the build host") from None
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise ImageError(f"{cmd[0]} failed ({proc.returncode}): {lines[-1].strip()}")
    return proc.stdout


def _fake_time_env(epoch: int) -> dict:
    """Environment for the tools: e2fsprogs' clock fixed at epoch, no SOURCE_DATE_EPOCH (it
    would switch mkfs.erofs back to clamping) and no private mke2fs.conf."""
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch))
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("MKE2FS_CONFIG", None)
    return env


def make_ext4(image: Path, layout: Layout, spec: Spec, ids: Ids, inodes: int, epoch: int) -> None:
    """mke2fs -d straight into the image at the partition's byte offset.

    Discard (the default) punches the filesystem's range of the fresh sparse file, which
    mke2fs knows reads back as zeros, so it skips zeroing inode tables and journal and still
    marks the inode tables as zeroed (no lazy init in the guest).
    """
    blocks = layout.part_size // spec.block_size
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(spec.block_size), "-N", str(inodes),
          "-m", str(spec.reserved_percent), "-L", spec.label, "-U", str(ids.fs_uuid),
          "-E", f"offset={layout.part_start},hash_seed={ids.hash_seed},root_owner=0:0",
          "-d", str(spec.src), str(image), str(blocks)], env=_fake_time_env(epoch))


def _ranges(text: str):
    """(lo, hi) pairs from dumpe2fs range lists like '12-40, 45, 50-60'."""
    for part in filter(None, (r.strip() for r in text.split(","))):
        lo, _, hi = part.partition("-")
        yield int(lo), int(hi or lo)


def used_inodes(device: str):
    """Yield the inode numbers in use: root, then every allocated one from the first
    non-reserved inode on, group by group from dumpe2fs's free-inode ranges."""
    out = _run(["dumpe2fs", device])
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", out, re.M).group(1))
    first = int(re.search(r"^First inode:\s+(\d+)", out, re.M).group(1))
    yield 2
    for group, free in enumerate(re.findall(r"^\s+Free inodes: ?(.*)$", out, re.M)):
        nxt = max(first, group * per_group + 1)
        for lo, hi in _ranges(free):
            yield from range(nxt, lo)
            nxt = max(nxt, hi + 1)
        yield from range(nxt, (group + 1) * per_group + 1)


def normalize_ext4(image: Path, offset: int, epoch: int, force_root_owner: bool) -> None:
    """Set every inode's timestamps to epoch (and owner to root) with one debugfs batch.

    mke2fs -d copies atime/ctime/mtime (seconds only) and owners from the source; rewriting
    them in the image keeps the source tree untouched. crtime already comes from
    E2FSPROGS_FAKE_TIME (tests check all four times and their nanoseconds).
    """
    device = f"{image}?offset={offset}"
    fields = [f"{t} {epoch}" for t in ("atime", "ctime", "mtime")]
    if force_root_owner:
        fields += ["uid 0", "gid 0"]
    with tempfile.NamedTemporaryFile("w", dir=image.parent, prefix=".debugfs.", suffix=".cmd") as f:
        for ino in used_inodes(device):
            f.writelines(f"sif <{ino}> {field}\n" for field in fields)
        f.flush()
        out = _run(["debugfs", "-w", "-f", f.name, device], env=_fake_time_env(epoch))
    if "rror" in out:
        raise ImageError(f"debugfs: {out.strip().splitlines()[-1]}")


def make_erofs(spec: Spec, ids: Ids, epoch: int, workdir: Path) -> Path:
    """mkfs.erofs into a side file (it cannot write at an offset); returns that file.

    -T alone only clamps newer mtimes; --ignore-mtime after it gives every inode the epoch.
    erofs-utils 1.5 has no volume label option, so the label only names the partition.
    """
    out = workdir / "rootfs.erofs"
    cmd = ["mkfs.erofs", "--quiet", "-T", str(epoch), "--ignore-mtime", "-U", str(ids.fs_uuid)]
    if spec.force_root_owner:
        cmd.append("--all-root")
    if spec.erofs_compression:
        cmd.append(f"-z{spec.erofs_compression}")
    _run(cmd + [str(out), str(spec.src)], env=_fake_time_env(epoch))
    return out


def copy_sparse(src: Path, fd: int, offset: int) -> None:
    """Copy src into fd at offset, skipping holes (SEEK_DATA/SEEK_HOLE), in bounded chunks."""
    with open(src, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < end:
            try:
                data = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:  # no more data
                break
            hole = os.lseek(f.fileno(), data, os.SEEK_HOLE)
            while data < hole:
                chunk = os.pread(f.fileno(), min(COPY_CHUNK, hole - data), data)
                os.pwrite(fd, chunk, offset + data)
                data += len(chunk)
            pos = hole


# ---------------------------------------------------------------- tables and assembly

def table_pieces(spec: Spec, layout: Layout, ids: Ids) -> list[tuple[int, bytes]]:
    """Partition table(s) and, with dax_header, the info block and the namespace's MBR."""
    parts = [gpt.Partition(start=layout.part_start, size=layout.part_size,
                           type_guid=spec.partition_type_guid, guid=ids.partition_guid,
                           name=spec.label)]
    if layout.hash_size:
        parts.append(gpt.Partition(start=layout.hash_start, size=layout.hash_size,
                                   type_guid=gpt.LINUX_FS_GUID, guid=ids.verity_partition_guid,
                                   name="verity"))
    if spec.table == "gpt":
        entries_lba = DAX_GPT_ENTRIES_LBA if spec.dax_header else 2
        pieces = gpt.gpt_table(layout.size, parts, ids.disk_guid, entries_lba=entries_lba)
    else:
        pieces = gpt.msdos_table(parts, ids.mbr_signature)
    if spec.dax_header:
        inner = [dataclasses.replace(p, start=p.start - DAX_NAMESPACE_DATA) for p in parts]
        pieces.append((dax.PFN_INFO_OFFSET, dax.nd_pfn_sb(DAX_NAMESPACE_DATA, DAX_NAMESPACE_DATA)))
        pieces += [(DAX_NAMESPACE_DATA + off, data)
                   for off, data in gpt.msdos_table(inner, ids.mbr_signature)]
    return pieces


# ---------------------------------------------------------------- dm-verity (measured rootfs)

def make_verity(data: Path, hash_file: Path, data_blocks: int, salt: str) -> dict:
    """veritysetup format --no-superblock on plain files; returns what it printed, parsed."""
    out = _run(["veritysetup", "format", "--no-superblock", "--hash=sha256",
                f"--data-block-size={VERITY_BLOCK}", f"--hash-block-size={VERITY_BLOCK}",
                f"--data-blocks={data_blocks}", f"--salt={salt}", str(data), str(hash_file)])
    fields = dict(re.findall(r"^([A-Za-z ]+):\s*(\S+)\s*$", out, re.M))
    try:
        info = dict(root_hash=fields["Root hash"], salt=fields["Salt"],
                    data_blocks=int(fields["Data blocks"]),
                    data_block_size=int(fields["Data block size"]),
                    hash_block_size=int(fields["Hash block size"]))
    except (KeyError, ValueError):
        raise ImageError(f"veritysetup format printed no root hash: {out.strip()[-200:]}") from None
    if info["salt"] != salt or info["data_blocks"] != data_blocks:
        raise ImageError(f"veritysetup used salt {info['salt']} / {info['data_blocks']} blocks, "
                         f"not {salt} / {data_blocks}")
    return info


def partition_device(disk: str, number: int) -> str:
    """/dev/vda + 1 -> /dev/vda1; /dev/nvme0n1 + 1 -> /dev/nvme0n1p1 (as the kernel names them)."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def root_hash_line(info: dict) -> str:
    """osbuilder's root_hash_<variant>.txt line."""
    return ("root_hash={root_hash},salt={salt},data_blocks={data_blocks},"
            "data_block_size={data_block_size},hash_block_size={hash_block_size}".format(**info))


def verity_cmdline(info: dict, disk: str, fs_type: str) -> str:
    """The kernel command line that opens the verity device at boot (dm-init, as Kata's runtime
    builds it from the root hash file) and mounts it read-only as the root."""
    sectors = info["data_blocks"] * info["data_block_size"] // 512
    table = (f"0 {sectors} verity 1 {partition_device(disk, 1)} {partition_device(disk, 2)} "
             f"{info['data_block_size']} {info['hash_block_size']} {info['data_blocks']} 0 sha256 "
             f"{info['root_hash']} {info['salt']}")
    return f'dm-mod.create="dm-verity,,,ro,{table}" root=/dev/dm-0 rootfstype={fs_type} ro'


def assemble_verity(spec: Spec, tmp: Path, workdir: Path, stats: TreeStats, epoch: int,
                    ids: Ids) -> tuple[Layout, dict]:
    """Filesystem into a side file, its hash tree into another, both copied into the image."""
    erofs_image = make_erofs(spec, ids, epoch, workdir) if spec.fs_type == "erofs" else None
    fs_bytes, inodes = fs_bytes_needed(spec, stats, erofs_image)
    layout = plan_layout(spec, fs_bytes)
    data = erofs_image or workdir / "rootfs.ext4"
    with open(data, "ab") as f:
        os.truncate(f.fileno(), layout.part_size)
    if erofs_image is None:
        make_ext4(data, dataclasses.replace(layout, part_start=0), spec, ids, inodes, epoch)
        normalize_ext4(data, 0, epoch, spec.force_root_owner and not stats.all_root)
    hash_file = workdir / "verity.hash"
    info = make_verity(data, hash_file, layout.part_size // VERITY_BLOCK, ids.verity_salt)
    if hash_file.stat().st_size > layout.hash_size:
        raise ImageError(f"hash tree of {hash_file.stat().st_size} bytes does not fit {layout.hash_size}")
    with open(tmp, "r+b") as f:
        os.truncate(f.fileno(), layout.size)
        copy_sparse(data, f.fileno(), layout.part_start)
        copy_sparse(hash_file, f.fileno(), layout.hash_start)
        gpt.write_pieces(f.fileno(), table_pieces(spec, layout, ids))
        os.fsync(f.fileno())
    return layout, info


def sha256_file(path: Path) -> str:
    """Streamed sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(COPY_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _same_file_content(a: Path, b: Path, digest: str) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and sha256_file(b) == digest


def fs_bytes_needed(spec: Spec, stats: TreeStats, erofs_image: Path | None) -> tuple[int, int]:
    """(minimum filesystem bytes, ext4 inode count) for the spec's filesystem."""
    if erofs_image is not None:
        size = erofs_image.stat().st_size
        return -(-size // spec.block_size) * spec.block_size, 0
    return ext4_geometry(stats, spec.root_free_space * MiB, spec.block_size, spec.reserved_percent)


def assemble(spec: Spec, tmp: Path, workdir: Path, stats: TreeStats, epoch: int, ids: Ids) -> Layout:
    """Build the whole image into tmp; returns where the partition went."""
    erofs_image = make_erofs(spec, ids, epoch, workdir) if spec.fs_type == "erofs" else None
    fs_bytes, inodes = fs_bytes_needed(spec, stats, erofs_image)
    layout = plan_layout(spec, fs_bytes)
    with open(tmp, "r+b") as f:
        os.truncate(f.fileno(), layout.size)
    if erofs_image is None:
        make_ext4(tmp, layout, spec, ids, inodes, epoch)
        chown = spec.force_root_owner and not stats.all_root  # mke2fs -d copied the owners
        normalize_ext4(tmp, layout.part_start, epoch, chown)
    with open(tmp, "r+b") as f:
        if erofs_image is not None:
            copy_sparse(erofs_image, f.fileno(), layout.part_start)
        gpt.write_pieces(f.fileno(), table_pieces(spec, layout, ids))
        os.fsync(f.fileno())
    return layout


def build(spec: Spec, check_mode: bool = False) -> dict:
    """Build spec.dest atomically; returns facts about the image and whether it changed.

    The image is made as a hidden temporary file in dest's directory and renamed over dest
    only when its bytes differ; the temporary file is removed on every path. In check mode
    the image is still built (that is the only way to know whether it would differ) but
    dest is left alone.
    """
    validate(spec)
    stats = scan_tree(spec.src, spec.block_size)
    check_tree(spec, stats)
    epoch = resolve_epoch(spec, stats)
    ids = derive_ids(spec.seed)
    dest = spec.dest
    # .<name>.<pid>.*: the pack role removes those whose process is gone (a killed build)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    workdir = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=".d"))
    info = None
    try:
        if spec.verity:
            layout, info = assemble_verity(spec, tmp, workdir, stats, epoch, ids)
        else:
            layout = assemble(spec, tmp, workdir, stats, epoch, ids)
        digest = sha256_file(tmp)
        changed = not _same_file_content(tmp, dest, digest)
        if changed and not check_mode:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return dict(changed=changed, dest=str(dest), size=layout.size, sha256=digest,
                fs_type=spec.fs_type, table=spec.table, dax_header=spec.dax_header,
                partition_offset=layout.part_start, partition_size=layout.part_size,
                namespace_offset=DAX_NAMESPACE_DATA if spec.dax_header else None,
                content_bytes=stats.apparent_bytes, epoch=epoch,
                disk_guid=str(ids.disk_guid) if spec.table == "gpt" else None,
                disk_signature=None if spec.table == "gpt" else f"0x{ids.mbr_signature:08x}",
                partition_guid=str(ids.partition_guid) if spec.table == "gpt" else None,
                fs_uuid=str(ids.fs_uuid), verity=verity_result(spec, layout, info))


def verity_result(spec: Spec, layout: Layout, info: dict | None) -> dict | None:
    """What the module returns about the hash tree (None without verity)."""
    if info is None:
        return None
    return dict(info, root_hash_line=root_hash_line(info), hash_offset=layout.hash_start,
                hash_size=layout.hash_size,
                data_device=partition_device(spec.verity_disk, 1),
                hash_device=partition_device(spec.verity_disk, 2),
                kernel_cmdline=verity_cmdline(info, spec.verity_disk, spec.fs_type))
