"""Property tests: random trees round-trip through GNU cpio and bsdtar; output is deterministic."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.kata.osbuilder.plugins.module_utils import cpio
from tests.unit.test_cpio import DECOMPRESS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and owners need root")

CLAMP = 1_600_000_000
COMPRESSIONS = ["gzip", "zstd", "xz", "lz4", "none"]
PIECES = [b"a", b"B", b"0", b" ", b"\n", b"\t", b"-", b".", b"\xc3\xa9", b"\xe2\x98\x83",
          b"\xff", b"\xfe", b"\\", b"*"]
NAMES = (st.lists(st.sampled_from(PIECES), min_size=1, max_size=10).map(b"".join)
         .filter(lambda n: n not in (b".", b"..")))
LONG_NAMES = st.integers(90, 255).map(lambda n: (b"\xc3\xa9long" * 60)[:n - 1] + b"x")
FILE_MODES = [0o644, 0o755, 0o600, 0o400, 0o4755, 0o2755, 0o6711, 0o1644, 0o000]
DIR_MODES = [0o755, 0o700, 0o1777, 0o2775, 0o555]
KINDS = ["file", "file", "big", "dir", "dir", "longdir", "symlink", "hardlink", "char", "block",
         "fifo"]


@dataclasses.dataclass
class Node:
    """One path of a generated tree."""

    path: bytes
    kind: str
    mode: int = 0
    data: bytes = b""
    target: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    mtime: int = 0


@st.composite
def trees(draw) -> list[Node]:
    """A random tree as a list of nodes, parents before children."""
    nodes: list[Node] = []
    dirs, files, taken = [b""], [], set()
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(KINDS))
        parent = draw(st.sampled_from(dirs))
        name = draw(LONG_NAMES if kind == "longdir" else NAMES)
        path = parent + b"/" + name if parent else name
        if path in taken or len(path) > 1500:  # stay well below PATH_MAX
            continue
        taken.add(path)
        node = Node(path, kind, mtime=draw(st.integers(0, 2_000_000_000)))
        if kind in ("dir", "longdir"):
            node.mode = draw(st.sampled_from(DIR_MODES))
            dirs.append(path)
        elif kind == "file":
            node.mode, node.data = draw(st.sampled_from(FILE_MODES)), draw(st.binary(max_size=70))
            files.append(node)
        elif kind == "big":
            size = draw(st.integers(100_000, 2_500_000))
            node.mode, node.data = 0o644, random.Random(size).randbytes(size)
            files.append(node)
        elif kind == "hardlink":
            if not files:
                continue
            node.target = draw(st.sampled_from(files)).path
        elif kind == "symlink":
            node.target = draw(st.lists(NAMES, min_size=1, max_size=3).map(b"/".join))
        elif kind in ("char", "block"):
            node.mode = draw(st.sampled_from([0o600, 0o666, 0o620]))
            node.rdev = (draw(st.integers(0, 4095)), draw(st.integers(0, 0xFFFFF)))
        else:
            node.mode = draw(st.sampled_from([0o644, 0o600]))
        nodes.append(node)
    return nodes


LONG = b"\xc3\xa9" * 100  # 200 bytes: the paths below are longer than 255
EVERY_KIND = [
    Node(LONG, "longdir", 0o755), Node(LONG + b"/" + LONG, "longdir", 0o1777),
    Node(LONG + b"/" + LONG + b"/new\nline \xff", "file", 0o4755, b"data", mtime=5),
    Node(b"big", "big", 0o644, random.Random(1).randbytes(3_000_001), mtime=2_000_000_000),
    Node(b"hard", "hardlink", target=b"big"), Node(b"d", "dir", 0o2775),
    Node(b"d/hard2", "hardlink", target=LONG + b"/" + LONG + b"/new\nline \xff"),
    Node(b"d/sym", "symlink", target=b"../big"), Node(b"d/tty", "char", 0o620, rdev=(4, 1)),
    Node(b"d/nvme", "block", 0o660, rdev=(259, 0xFFFFF)), Node(b"d/fifo", "fifo", 0o600),
    Node(b"d/empty", "file", 0o000),
]


def create(root: Path, nodes: list[Node], order: list[int], mtime_shift: int = 0) -> None:
    """Create the tree under root, nodes taken in `order` (parents before children),
    hard links last; then modes and mtimes (+ mtime_shift), deepest first."""
    base = os.fsencode(root)
    os.mkdir(base)
    for node in sorted((nodes[i] for i in order), key=lambda n: n.kind == "hardlink"):
        full = base + b"/" + node.path
        if node.kind in ("dir", "longdir"):
            os.mkdir(full)
        elif node.kind in ("file", "big"):
            with open(full, "wb") as f:
                f.write(node.data)
        elif node.kind == "hardlink":
            os.link(base + b"/" + node.target, full)
        elif node.kind == "symlink":
            os.symlink(node.target, full)
        elif node.kind in ("char", "block"):
            kind = stat.S_IFCHR if node.kind == "char" else stat.S_IFBLK
            os.mknod(full, kind | 0o600, os.makedev(*node.rdev))
        else:
            os.mkfifo(full)
    for node in sorted(nodes, key=lambda n: -n.path.count(b"/")):
        full = base + b"/" + node.path
        if node.kind not in ("symlink", "hardlink"):
            os.chmod(full, node.mode)
        os.utime(full, (node.mtime + mtime_shift,) * 2, follow_symlinks=False)


def creation_orders(nodes: list[Node], seed: int) -> tuple[list[int], list[int]]:
    """The generated order and a shuffled one that still puts parents first."""
    shuffled = list(range(len(nodes)))
    random.Random(seed).shuffle(shuffled)
    shuffled.sort(key=lambda i: nodes[i].path.count(b"/"))
    return list(range(len(nodes))), shuffled


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Everything the archive must keep, per relative path (hard links as sorted path groups)."""
    base = os.fsencode(root)
    found, by_ino = {}, {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st_ = os.lstat(full)
            found[rel] = st_
            if stat.S_ISREG(st_.st_mode):
                by_ino.setdefault(st_.st_ino, []).append(rel)
    result = {}
    for rel, st_ in found.items():
        mode, full = st_.st_mode, os.path.join(base, rel)
        entry = [stat.S_IFMT(mode)]
        if not stat.S_ISLNK(mode):
            entry.append(stat.S_IMODE(mode))
        if stat.S_ISREG(mode):
            group = sorted(by_ino[st_.st_ino])
            with open(full, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            entry += [st_.st_size, digest, tuple(group) if len(group) > 1 else None,
                      min(int(st_.st_mtime), CLAMP)]
        elif stat.S_ISLNK(mode):
            entry.append(os.readlink(full))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            entry.append((os.major(st_.st_rdev), os.minor(st_.st_rdev)))
        result[rel] = tuple(entry)
    return result


def run(argv: list[str], **kwargs) -> bytes:
    """Run a tool; on failure the assertion shows its stderr."""
    proc = subprocess.run(argv, capture_output=True, **kwargs)
    assert proc.returncode == 0, f"{argv[0]}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def extract_gnu_cpio(raw: bytes, dest: Path) -> None:
    dest.mkdir()
    run(["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames"], input=raw, cwd=dest)


def extract_bsdtar(archive: Path, dest: Path) -> None:
    """-P: names are kept as they are (else bsdtar strips a leading backslash, as on Windows)."""
    dest.mkdir()
    run(["bsdtar", "-xpPf", str(archive), "-C", str(dest)], env={**os.environ, "LC_ALL": "C"})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=trees(), compression=st.sampled_from(COMPRESSIONS))
@example(nodes=EVERY_KIND, compression="gzip")
def test_round_trip_through_gnu_cpio_and_bsdtar(nodes: list[Node], compression: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="cpio-props."))
    try:
        create(work / "src", nodes, list(range(len(nodes))))
        archive = work / "out.img"
        cpio.build(work / "src", archive, compression=compression, mtime=CLAMP, environ={})
        expected = snapshot(work / "src")
        raw = run(DECOMPRESS[compression] + [str(archive)])
        extract_gnu_cpio(raw, work / "gnu")
        assert snapshot(work / "gnu") == expected
        extract_bsdtar(archive, work / "bsd")
        assert snapshot(work / "bsd") == expected
    finally:
        shutil.rmtree(work)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=trees(), seed=st.integers(0, 2**32), shift=st.integers(1, 10**8))
@example(nodes=EVERY_KIND, seed=3, shift=7)
def test_same_tree_same_bytes_whatever_creation_order_and_times(nodes, seed, shift) -> None:
    work = Path(tempfile.mkdtemp(prefix="cpio-props."))
    try:
        first, second = creation_orders(nodes, seed)
        create(work / "a", nodes, first, mtime_shift=CLAMP)  # every time above the clamp
        create(work / "b", nodes, second, mtime_shift=CLAMP + shift)
        for compression in COMPRESSIONS:
            one = cpio.build(work / "a", work / f"a.{compression}", compression=compression,
                             environ={"SOURCE_DATE_EPOCH": str(CLAMP)})
            two = cpio.build(work / "b", work / f"b.{compression}", compression=compression,
                             environ={"SOURCE_DATE_EPOCH": str(CLAMP)})
            assert one["sha256"] == two["sha256"], compression
    finally:
        shutil.rmtree(work)
