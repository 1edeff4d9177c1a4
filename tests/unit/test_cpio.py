"""Unit tests of the newc writer in module_utils/cpio.py (no Ansible needed)."""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from ansible_collections.kata.osbuilder.plugins.module_utils import cpio

REPO = Path(__file__).resolve().parents[2]
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"], "xz": ["xz", "-dc"],
              "lz4": ["lz4", "-dcq"], "none": ["cat"]}


@dataclasses.dataclass
class Member:
    """One parsed newc entry (an independent reading of the format, for the tests)."""

    name: bytes
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    data: bytes
    offset: int


def parse_newc(raw: bytes) -> list[Member]:
    """Parse a whole uncompressed newc archive; checks magic, alignment, trailer and padding."""
    members, pos = [], 0
    while True:
        assert raw[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(raw[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, check = fields[11], fields[12]
        assert check == 0
        name_end = pos + 110 + namesize
        assert raw[name_end - 1] == 0, "name not NUL-terminated"
        name = raw[pos + 110:name_end - 1]
        data_at = name_end + (-name_end % 4)
        assert raw[name_end:data_at] == b"\0" * (data_at - name_end)
        data = raw[data_at:data_at + fields[6]]
        end = data_at + fields[6]
        next_pos = end + (-end % 4)
        assert raw[end:next_pos] == b"\0" * (next_pos - end)
        if name == b"TRAILER!!!":
            assert len(raw) % 512 == 0 and set(raw[next_pos:]) <= {0}
            return members
        members.append(Member(name, *fields[:11], data=data, offset=pos))
        pos = next_pos


def decompress(path: Path, compression: str) -> bytes:
    """Decompress an archive with the reference tool for its format."""
    return subprocess.run(DECOMPRESS[compression] + [str(path)], check=True,
                          capture_output=True).stdout


def pack(src: Path, dest: Path, **kwargs) -> tuple[dict, list[Member]]:
    """build() an uncompressed archive (unless told) and parse it."""
    kwargs.setdefault("compression", "none")
    kwargs.setdefault("environ", {})
    result = cpio.build(src, dest, **kwargs)
    return result, parse_newc(decompress(dest, kwargs["compression"]))


def by_name(members: list[Member]) -> dict[bytes, Member]:
    return {m.name: m for m in members}


@pytest.fixture
def tmp_path():
    """A temp dir removed right after the test (pytest's own is kept for later runs)."""
    path = Path(tempfile.mkdtemp(prefix="cpio-unit."))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "etc" / "hostname").write_bytes(b"kata\n")
    (root / "usr" / "bin" / "tool").write_bytes(b"x" * 5)
    (root / "empty").write_bytes(b"")
    os.symlink("usr/bin/tool", root / "link")
    return root


# ----------------------------------------------------------------------------- format


def test_headers_padding_and_trailer(tree: Path, tmp_path: Path) -> None:
    result, members = pack(tree, tmp_path / "a.cpio", mtime=0)
    raw = (tmp_path / "a.cpio").read_bytes()
    assert result["size"] == len(raw) and len(raw) % 512 == 0
    assert result["entries"] == len(members) == 7
    for m in members:
        assert m.offset % 4 == 0
        assert (m.devmajor, m.devminor, m.uid, m.gid, m.mtime) == (0, 0, 0, 0, 0)
    tool = by_name(members)[b"usr/bin/tool"]
    assert tool.data == b"xxxxx" and tool.mode == stat.S_IFREG | 0o644 and tool.nlink == 1
    link = by_name(members)[b"link"]
    assert stat.S_ISLNK(link.mode) and link.data == b"usr/bin/tool" and link.filesize == 12
    assert by_name(members)[b"empty"].filesize == 0


def test_header_bytes_exact() -> None:
    entry = cpio.Entry(path=b"ab", mode=stat.S_IFREG | 0o755, size=3, ino=7, nlink=1, mtime=16,
                       rdevmajor=5, rdevminor=1)
    fields = [7, 0o100755, 0, 0, 1, 16, 3, 0, 0, 5, 1, 3, 0]
    expected = b"070701" + b"".join(b"%08X" % f for f in fields) + b"ab\0" + b"\0" * 3
    assert cpio.header(entry) == expected and len(expected) == 116  # 110 + 3, padded to 4


def test_sorted_bytewise_parents_first_no_dot(tree: Path, tmp_path: Path) -> None:
    (tree / "a b").mkdir()
    (tree / "a").mkdir()
    (tree / "a" / "z").write_bytes(b"")
    (tree / "\xe9t\xe9").write_bytes(b"")
    _, members = pack(tree, tmp_path / "a.cpio")
    names = [m.name for m in members]
    assert names == sorted(names)
    assert b"." not in names and not any(n.startswith(b"./") or n.startswith(b"/") for n in names)
    seen = set()
    for name in names:
        parent = name.rpartition(b"/")[0]
        assert not parent or parent in seen
        seen.add(name)


def test_inodes_sequential_and_directory_nlink(tree: Path, tmp_path: Path) -> None:
    _, members = pack(tree, tmp_path / "a.cpio")
    assert [m.ino for m in members] == list(range(1, len(members) + 1))
    assert by_name(members)[b"usr"].nlink == 3  # usr, usr/bin
    assert by_name(members)[b"usr/bin"].nlink == 2


def test_hard_links_share_inode_data_with_last(tree: Path, tmp_path: Path) -> None:
    (tree / "h1").write_bytes(b"shared")
    os.link(tree / "h1", tree / "etc" / "h2")
    os.link(tree / "h1", tree / "z3")
    os.link(tree / "h1", tmp_path / "outside")  # counts on disk, not in the archive
    _, members = pack(tree, tmp_path / "a.cpio")
    links = [m for m in members if m.name in (b"etc/h2", b"h1", b"z3")]
    assert [m.name for m in links] == [b"etc/h2", b"h1", b"z3"]
    assert len({m.ino for m in links}) == 1
    assert all(m.nlink == 3 for m in links)
    assert [m.filesize for m in links] == [0, 0, 6] and links[-1].data == b"shared"
    inos = [m.ino for m in members]
    assert sorted(set(inos)) == list(range(1, len(set(inos)) + 1))


def test_single_link_in_tree_is_plain_file(tree: Path, tmp_path: Path) -> None:
    os.link(tree / "empty", tmp_path / "other")
    _, members = pack(tree, tmp_path / "a.cpio")
    assert by_name(members)[b"empty"].nlink == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_devices_fifos_sockets(tree: Path, tmp_path: Path) -> None:
    os.mknod(tree / "console", stat.S_IFCHR | 0o600, os.makedev(5, 1))
    os.mknod(tree / "disk", stat.S_IFBLK | 0o660, os.makedev(259, 70000))
    os.chmod(tree / "disk", 0o660)  # mknod applies the umask
    os.mkfifo(tree / "fifo", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "sock"))
    sock.close()
    _, members = pack(tree, tmp_path / "a.cpio")
    named = by_name(members)
    assert (named[b"console"].mode, named[b"console"].rdevmajor, named[b"console"].rdevminor) \
        == (stat.S_IFCHR | 0o600, 5, 1)
    assert (named[b"disk"].mode, named[b"disk"].rdevmajor, named[b"disk"].rdevminor) \
        == (stat.S_IFBLK | 0o660, 259, 70000)
    assert named[b"fifo"].mode == stat.S_IFIFO | 0o640 and named[b"fifo"].filesize == 0
    assert stat.S_ISSOCK(named[b"sock"].mode)


def test_setuid_setgid_sticky_modes(tree: Path, tmp_path: Path) -> None:
    os.chmod(tree / "usr" / "bin" / "tool", 0o4755)
    os.chmod(tree / "etc" / "hostname", 0o2640)
    os.chmod(tree / "usr", 0o1777)
    _, members = pack(tree, tmp_path / "a.cpio")
    named = by_name(members)
    assert named[b"usr/bin/tool"].mode == stat.S_IFREG | 0o4755
    assert named[b"etc/hostname"].mode == stat.S_IFREG | 0o2640
    assert named[b"usr"].mode == stat.S_IFDIR | 0o1777


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_forced_to_root_unless_kept(tree: Path, tmp_path: Path) -> None:
    os.lchown(tree / "etc" / "hostname", 1234, 5678)
    _, members = pack(tree, tmp_path / "a.cpio")
    assert (by_name(members)[b"etc/hostname"].uid, by_name(members)[b"etc/hostname"].gid) == (0, 0)
    _, members = pack(tree, tmp_path / "b.cpio", keep_owner=True)
    assert (by_name(members)[b"etc/hostname"].uid, by_name(members)[b"etc/hostname"].gid) == (1234, 5678)


def test_mtime_clamp_option_env_and_none(tree: Path, tmp_path: Path) -> None:
    os.utime(tree / "empty", (1000, 1000))
    os.utime(tree / "etc" / "hostname", (3000, 3000))
    _, members = pack(tree, tmp_path / "a.cpio", mtime=2000)
    assert by_name(members)[b"empty"].mtime == 1000
    assert by_name(members)[b"etc/hostname"].mtime == 2000
    _, members = pack(tree, tmp_path / "b.cpio", environ={"SOURCE_DATE_EPOCH": "1500"})
    assert by_name(members)[b"empty"].mtime == 1000
    assert by_name(members)[b"etc/hostname"].mtime == 1500
    _, members = pack(tree, tmp_path / "c.cpio", mtime=2500, environ={"SOURCE_DATE_EPOCH": "1500"})
    assert by_name(members)[b"etc/hostname"].mtime == 2500  # the option wins
    _, members = pack(tree, tmp_path / "d.cpio")
    assert by_name(members)[b"etc/hostname"].mtime == 3000


# ----------------------------------------------------------------------------- extra entries


def test_extra_entries_added_and_replacing(tree: Path, tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_bytes(b"from host")
    os.chmod(host, 0o750)
    os.symlink(host, tmp_path / "host-link")
    extras = [
        {"path": "/init", "type": "symlink", "target": "/sbin/init"},
        {"path": "dev/console", "type": "char", "major": 5, "minor": 1, "mode": 0o600},
        {"path": "etc/hostname", "type": "file", "src": str(tmp_path / "host-link")},
        {"path": "usr", "type": "file", "src": str(host), "mode": "0644"},
        {"path": "run/lock", "type": "dir", "mode": "1777"},
        {"path": "fifo", "type": "fifo"},
        {"path": "sda", "type": "block", "major": 8, "minor": 0, "uid": 6, "gid": 7,
         "src": None},
    ]
    _, members = pack(tree, tmp_path / "a.cpio", extra_entries=extras, mtime=10)
    named = by_name(members)
    assert named[b"init"].data == b"/sbin/init" and stat.S_ISLNK(named[b"init"].mode)
    assert named[b"dev"].mode == stat.S_IFDIR | 0o755  # missing parent added
    assert (named[b"dev/console"].mode, named[b"dev/console"].rdevmajor,
            named[b"dev/console"].rdevminor) == (stat.S_IFCHR | 0o600, 5, 1)
    assert named[b"etc/hostname"].data == b"from host"
    assert named[b"etc/hostname"].mode == stat.S_IFREG | 0o750
    assert named[b"usr"].mode == stat.S_IFREG | 0o644
    assert not any(n.startswith(b"usr/") for n in named)  # replaced directory's content dropped
    assert named[b"run/lock"].mode == stat.S_IFDIR | 0o1777
    assert named[b"fifo"].mode == stat.S_IFIFO | 0o644
    assert (named[b"sda"].uid, named[b"sda"].gid, named[b"sda"].rdevmajor) == (6, 7, 8)
    assert all(m.mtime <= 10 for m in members)
    assert [m.name for m in members] == sorted(named)
    assert not (tree / "init").exists() and not (tree / "dev").exists()


@pytest.mark.parametrize("extra, reason", [
    ({"path": "x", "type": "pipe"}, "type must be one of"),
    ({"path": "x", "type": "symlink"}, "type symlink needs target"),
    ({"path": "x", "type": "char", "major": 5}, "type char needs minor"),
    ({"path": "x", "type": "dir", "target": "y"}, "target not valid for type dir"),
    ({"path": "../x", "type": "dir"}, "without '..'"),
    ({"path": "/", "type": "dir"}, "must name something"),
    ({"path": "x", "type": "dir", "mode": "rwx"}, "mode must be octal"),
    ({"path": "x", "type": "dir", "mode": 0o17777}, "mode must be within"),
    ({"path": "x", "type": "file", "src": "/nonexistent/file"}, "No such file"),
    ({"path": "x", "type": "file", "src": "/"}, "is not a regular file"),
    ({"path": "etc/hostname/x", "type": "dir"}, "parent etc/hostname is not a directory"),
    ("dev/console", "must be a mapping"),
])
def test_bad_extra_entry(tree: Path, tmp_path: Path, extra, reason: str) -> None:
    with pytest.raises(cpio.CpioError, match="bad extra entry") as err:
        cpio.build(tree, tmp_path / "a.img", extra_entries=[extra], environ={})
    assert reason in str(err.value) and "\n" not in str(err.value)
    assert os.listdir(tmp_path) == ["root"]


def test_duplicate_extra_entry(tree: Path, tmp_path: Path) -> None:
    extras = [{"path": "d", "type": "dir"}, {"path": "/d/", "type": "dir"}]
    with pytest.raises(cpio.CpioError, match=r"#2 .*given twice"):
        cpio.build(tree, tmp_path / "a.img", extra_entries=extras, environ={})


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("compression, level, reason", [
    ("bzip2", None, "unknown compression 'bzip2'"),
    ("gzip", 0, "bad level 0 for gzip: use 1..9"),
    ("zstd", 20, "bad level 20 for zstd"),
    ("xz", -1, "bad level -1 for xz"),
    ("none", 3, "level cannot be set"),
    ("gzip", "6", "bad level '6'"),
])
def test_bad_compression_or_level(tree: Path, tmp_path: Path, compression, level, reason) -> None:
    with pytest.raises(cpio.CpioError, match=reason):
        cpio.build(tree, tmp_path / "a.img", compression=compression, level=level, environ={})
    assert not (tmp_path / "a.img").exists()


def test_bad_paths(tree: Path, tmp_path: Path) -> None:
    cases = [
        (tmp_path / "missing", tmp_path / "a.img", "does not exist"),
        (tree / "empty", tmp_path / "a.img", "is not a directory"),
        (tree, tree / "etc" / "a.img", "is inside src"),
        (tree, tree / "a.img", "is inside src"),
        (tree, tmp_path, "is a directory"),
        (tree, tmp_path / "nodir" / "a.img", "directory of dest"),
        (tree, tmp_path / "via-link" / "a.img", "is inside src"),
    ]
    os.symlink(tree / "usr", tmp_path / "via-link")
    for src, dest, reason in cases:
        with pytest.raises(cpio.CpioError, match=reason):
            cpio.build(src, dest, environ={})
    with pytest.raises(cpio.CpioError, match="SOURCE_DATE_EPOCH must be an integer"):
        cpio.build(tree, tmp_path / "a.img", environ={"SOURCE_DATE_EPOCH": "soon"})
    assert not list(tmp_path.rglob("*.img*"))


SYSTEM_PYTHON = "/usr/bin/python3"  # reachable by user nobody, unlike a Python under /root
UNREADABLE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.kata.osbuilder.plugins.module_utils import cpio
try:
    cpio.build(sys.argv[2], sys.argv[3], environ={})
except cpio.CpioError as exc:
    print(exc)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_unreadable_paths_named_before_writing() -> None:
    base = Path(tempfile.mkdtemp(prefix="cpio-unreadable."))
    try:
        os.chmod(base, 0o777)
        root = base / "root"
        (root / "locked").mkdir(parents=True)
        for i in range(7):
            (root / f"secret{i}").write_bytes(b"x")
            os.chmod(root / f"secret{i}", 0o600)
        (root / "fine").write_bytes(b"ok")
        os.chmod(root / "locked", 0o700)
        os.chmod(root, 0o755)
        out = subprocess.run([SYSTEM_PYTHON, "-c", UNREADABLE_SCRIPT, str(REPO / ".collections"),
                              str(root), str(base / "a.img")], user=65534, capture_output=True,
                             text=True, check=True).stdout
        assert out.count("\n") == 1
        assert out.startswith(f"cannot read 8 path(s) under {root}: locked, secret0, secret1, "
                              "secret2, secret3 (and 3 more)")
        assert sorted(os.listdir(base)) == ["root"]
    finally:
        shutil.rmtree(base)


# ----------------------------------------------------------------------------- output file


@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz", "lz4", "none"])
def test_every_compression_holds_the_same_archive(tree: Path, tmp_path: Path, compression) -> None:
    raw = (tmp_path / "raw.cpio")
    cpio.build(tree, raw, compression="none", mtime=0, environ={})
    result = cpio.build(tree, tmp_path / "a.img", compression=compression, mtime=0, environ={})
    assert decompress(tmp_path / "a.img", compression) == raw.read_bytes()
    assert result["compression"] == compression
    assert result["compressor"] == {"gzip": "pigz"}.get(compression, compression)


def test_kernel_specific_container_formats(tree: Path, tmp_path: Path) -> None:
    cpio.build(tree, tmp_path / "a.xz", compression="xz", environ={})
    info = subprocess.run(["xz", "--robot", "-lvv", str(tmp_path / "a.xz")], check=True,
                          capture_output=True, text=True).stdout
    assert "\tCRC32\t" in info and "CRC64" not in info
    cpio.build(tree, tmp_path / "a.lz4", compression="lz4", environ={})
    assert (tmp_path / "a.lz4").read_bytes()[:4] == bytes.fromhex("02214c18")  # legacy frame


def test_zlib_fallback_without_pigz(tree: Path, tmp_path: Path, monkeypatch) -> None:
    real_which = cpio.shutil.which
    monkeypatch.setattr(cpio.shutil, "which", lambda n: None if n == "pigz" else real_which(n))
    result = cpio.build(tree, tmp_path / "a.gz", mtime=0, environ={})
    cpio.build(tree, tmp_path / "raw", compression="none", mtime=0, environ={})
    assert result["compressor"] == "zlib"
    assert decompress(tmp_path / "a.gz", "gzip") == (tmp_path / "raw").read_bytes()


def test_missing_compressor_program(tree: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(cpio.CpioError, match="needs the zstd program"):
        cpio.build(tree, tmp_path / "a.img", compression="zstd", environ={})


def test_changed_then_unchanged_and_check_mode(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "a.img"
    first = cpio.build(tree, dest, check_mode=True, mtime=0, environ={})
    assert first["changed"] and not dest.exists()
    second = cpio.build(tree, dest, mtime=0, environ={})
    assert second["changed"] and second["sha256"] == first["sha256"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    inode = dest.stat().st_ino
    third = cpio.build(tree, dest, mtime=0, environ={})
    assert not third["changed"] and dest.stat().st_ino == inode
    assert not cpio.build(tree, dest, check_mode=True, mtime=0, environ={})["changed"]
    (tree / "new").write_bytes(b"n")
    assert cpio.build(tree, dest, check_mode=True, mtime=0, environ={})["changed"]
    assert dest.stat().st_ino == inode
    assert sorted(os.listdir(tmp_path)) == ["a.img", "root"]


def test_failed_compressor_leaves_no_temp_and_dest_intact(tree: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    dest = tmp_path / "a.img"
    dest.write_bytes(b"old")
    monkeypatch.setattr(cpio, "compressor_argv",
                        lambda c, l: ("sh", ["sh", "-c", "head -c 10 >/dev/null; echo boom >&2; exit 3"]))
    (tree / "big").write_bytes(os.urandom(3 << 20))
    with pytest.raises(cpio.CpioError, match="sh failed .exit 3.: boom"):
        cpio.build(tree, dest, environ={})
    assert dest.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.img", "root"]


def test_file_vanishing_while_packing_is_a_one_line_error(tree: Path) -> None:
    entries = cpio.plan(os.fsencode(tree), [])
    (tree / "usr" / "bin" / "tool").unlink()
    with pytest.raises(cpio.CpioError, match=r"^cannot read .*/usr/bin/tool: No such file"):
        cpio.write_newc(entries, open(os.devnull, "wb"))


@pytest.mark.parametrize("compression, argv", [
    ("gzip", ["pigz", "-n", "-6", "-c", "-p", "{}"]),
    ("zstd", ["zstd", "-6", "--long=26", "-q", "-c", "-T{}"]),
])
def test_output_does_not_depend_on_worker_count(tree: Path, tmp_path: Path, monkeypatch,
                                                compression: str, argv: list[str]) -> None:
    (tree / "blob").write_bytes(random.Random(0).randbytes(3 << 20) * 2)
    digests = set()
    for workers in (1, 2, 4):
        command = [arg.format(workers) for arg in argv]
        monkeypatch.setattr(cpio, "compressor_argv", lambda c, l: (command[0], command))
        digests.add(cpio.build(tree, tmp_path / f"a{workers}", compression=compression,
                               environ={})["sha256"])
    assert len(digests) == 1


def test_file_shrinking_while_packing_is_an_error(tree: Path, tmp_path: Path) -> None:
    entries = cpio.plan(os.fsencode(tree), [])
    (tree / "usr" / "bin" / "tool").write_bytes(b"x")
    with pytest.raises(cpio.CpioError, match="shrank"):
        cpio.write_newc(entries, open(os.devnull, "wb"))


def test_large_file_streams_in_chunks(tree: Path, tmp_path: Path) -> None:
    blob = os.urandom(3 * cpio.CHUNK + 3)
    (tree / "blob").write_bytes(blob)
    writes: list[int] = []

    class Sink:
        def write(self, data) -> None:
            writes.append(len(data))

    cpio.write_newc(cpio.plan(os.fsencode(tree), []), Sink())
    assert max(writes) <= 2 * cpio.CHUNK
    _, members = pack(tree, tmp_path / "a.cpio")
    assert by_name(members)[b"blob"].data == blob
