"""Deterministic newc ("070701") cpio writer for Linux initramfs images.

Pure Python (no Ansible imports): the module kata.osbuilder.cpio_archive is a thin wrapper.

What comes out:
- Entries sorted bytewise by their path (a parent is a prefix of its children, so parents come
  first); paths are relative ("usr/bin/x"), the source directory itself (".") is never stored.
- Inode numbers renumbered 1, 2, ... in archive order; device numbers of the source filesystem
  are stored as 0:0. Regular files hard-linked inside the tree share one inode number and carry
  nlink = links inside the tree; their data is stored once, with the last link (earlier ones have
  filesize 0), as GNU cpio and the kernel expect. Other types are never grouped as hard links.
- Directory nlink is 2 + number of subdirectories, so it does not depend on the filesystem.
- Owners are 0:0 unless keep_owner; mtimes are clamped to min(mtime, clamp) when a clamp is given.
- The archive ends with TRAILER!!! and is zero-padded to a multiple of 512 bytes.

Everything is streamed: headers and file data (read in chunks) go through a small buffer into the
compressor; the compressed bytes are hashed and written to a temporary file next to dest, which
replaces dest atomically only when the bytes differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import zlib

MAGIC = b"070701"
TRAILER = b"TRAILER!!!"
BLOCK = 512
CHUNK = 1 << 20
MAX_FIELD = 0xFFFFFFFF
HEADER = MAGIC + b"%08X" * 13
SHOW_UNREADABLE = 5
ZSTD_WINDOW_LOG = 26  # 64 MiB: long-distance matching finds duplicate libraries across the tree

# compression -> (lowest level, highest level, default level); "none" takes no level.
LEVELS = {"gzip": (1, 9, 6), "zstd": (1, 19, 6), "xz": (0, 9, 6), "lz4": (1, 12, 9)}
COMPRESSIONS = tuple(LEVELS) + ("none",)

EXTRA_TYPES = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
               "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}
EXTRA_DEFAULT_MODE = {"dir": 0o755, "symlink": 0o777, "char": 0o600, "block": 0o600, "fifo": 0o644}
EXTRA_KEYS = {"file": {"src"}, "symlink": {"target"}, "char": {"major", "minor"},
              "block": {"major", "minor"}, "dir": set(), "fifo": set()}
EXTRA_COMMON_KEYS = {"path", "type", "mode", "uid", "gid"}


class CpioError(Exception):
    """A one-line, user-facing reason why the archive cannot be built."""


@dataclasses.dataclass(slots=True)
class Entry:
    """One archive member. `src` is where a regular file's data is read from."""

    path: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0
    target: bytes = b""
    src: bytes | None = None
    link_key: tuple[int, int] | None = None  # (st_dev, st_ino) of a regular file with st_nlink > 1
    ino: int = 0
    nlink: int = 1


# ----------------------------------------------------------------------------- small helpers


def show(path: bytes | str) -> str:
    """Render a path for a one-line message (undecodable bytes and control characters escaped)."""
    text = path.decode("utf-8", "backslashreplace") if isinstance(path, bytes) else path
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clamp_mtime(mtime: int, clamp: int | None) -> int:
    """Clamp a timestamp to the archive's range and to `clamp` (SOURCE_DATE_EPOCH semantics)."""
    if clamp is not None:
        mtime = min(mtime, clamp)
    return max(0, min(mtime, MAX_FIELD))


def resolve_level(compression: str, level: int | None) -> int | None:
    """Validate compression and level; return the level to use (None for "none")."""
    if compression not in COMPRESSIONS:
        raise CpioError(f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")
    if compression == "none":
        if level is not None:
            raise CpioError("level cannot be set with compression none")
        return None
    low, high, default = LEVELS[compression]
    if level is None:
        return default
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise CpioError(f"bad level {level!r} for {compression}: use {low}..{high}")
    return level


def parse_epoch(value: str | int | None, what: str) -> int | None:
    """Parse an mtime clamp (option or SOURCE_DATE_EPOCH) as a non-negative integer or None."""
    if value is None or value == "":
        return None
    try:
        epoch = int(value)
    except (TypeError, ValueError):
        raise CpioError(f"{what} must be an integer number of seconds, got {value!r}") from None
    if epoch < 0:
        raise CpioError(f"{what} must not be negative, got {epoch}")
    return epoch


# ----------------------------------------------------------------------------- source tree


def _entry_from_stat(rel: bytes, full: bytes, st: os.stat_result, keep_owner: bool,
                     clamp: int | None) -> Entry:
    """Make the archive entry for one lstat()ed path of the tree."""
    mode = st.st_mode
    entry = Entry(path=rel, mode=mode, mtime=clamp_mtime(st.st_mtime_ns // 1_000_000_000, clamp))
    if keep_owner:
        entry.uid, entry.gid = st.st_uid, st.st_gid
    if stat.S_ISREG(mode):
        entry.size, entry.src = st.st_size, full
        if st.st_nlink > 1:
            entry.link_key = (st.st_dev, st.st_ino)
    elif stat.S_ISLNK(mode):
        entry.target = os.readlink(full)
        entry.size = len(entry.target)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        entry.rdevmajor, entry.rdevminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return entry


def scan_tree(src: bytes, keep_owner: bool = False,
              clamp: int | None = None) -> tuple[list[Entry], list[bytes]]:
    """Walk `src` without following symlinks (one lstat per path).

    Returns the entries (unsorted) and the relative paths that cannot be read: directories that
    cannot be listed, paths that cannot be lstat()ed, regular files without read permission.
    """
    entries: list[Entry] = []
    unreadable: list[bytes] = []
    pending = [b""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(os.path.join(src, rel_dir) if rel_dir else src) as it:
                children = list(it)
        except OSError:
            unreadable.append(rel_dir)
            continue
        prefix = rel_dir + b"/" if rel_dir else b""
        for child in children:
            rel = prefix + child.name
            try:
                entry = _entry_from_stat(rel, child.path, child.stat(follow_symlinks=False),
                                         keep_owner, clamp)
            except OSError:
                unreadable.append(rel)
                continue
            if stat.S_ISDIR(entry.mode):
                pending.append(rel)
            elif entry.src is not None and not os.access(child.path, os.R_OK):
                unreadable.append(rel)
            entries.append(entry)
    return entries, unreadable


# ----------------------------------------------------------------------------- extra entries


def _normalize(path) -> bytes:
    """An extra entry's archive path: relative, no empty or "." parts, no ".."."""
    raw = os.fsencode(path) if isinstance(path, (str, bytes)) else b""
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if not parts or b".." in parts:
        raise ValueError(f"path {path!r} must name something inside the archive, without '..'")
    return b"/".join(parts)


def _int_field(spec: dict, key: str, default: int, high: int = MAX_FIELD) -> int:
    """An integer field of an extra entry (strings of digits accepted, as YAML may give them)."""
    value = spec.get(key)
    if value is None:
        return default
    try:
        number = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= number <= high:
        raise ValueError(f"{key} must be within 0..{high}, got {value!r}")
    return number


def _mode_field(spec: dict, default: int) -> int:
    """Permission bits: an int, or a string of octal digits such as "0600" or "4755"."""
    value = spec.get("mode")
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValueError(f"mode must be octal digits, got {spec['mode']!r}") from None
    return _int_field({"mode": value}, "mode", default, 0o7777)


def _extra_file(spec: dict, entry: Entry, clamp: int | None) -> None:
    """Fill a type=file extra entry from its host source file."""
    src = os.fsencode(spec["src"])
    try:
        st = os.stat(src)
    except OSError as exc:
        raise ValueError(f"src {show(src)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"src {show(src)} is not a regular file")
    if not os.access(src, os.R_OK):
        raise ValueError(f"src {show(src)} is not readable")
    entry.src, entry.size = os.path.realpath(src), st.st_size  # read with O_NOFOLLOW
    entry.mtime = clamp_mtime(st.st_mtime_ns // 1_000_000_000, clamp)
    entry.mode = stat.S_IFREG | _mode_field(spec, stat.S_IMODE(st.st_mode))


def parse_extra(spec: dict, clamp: int | None = None) -> Entry:
    """Turn one extra entry spec (a dict) into an Entry; raises ValueError on bad input.

    Keys: path, type (file|dir|symlink|char|block|fifo), mode, uid, gid, and by type:
    src (file), target (symlink), major and minor (char, block). None values count as absent.
    """
    if not isinstance(spec, dict):
        raise ValueError("must be a mapping")
    given = {k for k, v in spec.items() if v is not None}
    kind = spec.get("type")
    if kind not in EXTRA_TYPES:
        raise ValueError(f"type must be one of {', '.join(EXTRA_TYPES)}, got {kind!r}")
    allowed = EXTRA_COMMON_KEYS | EXTRA_KEYS[kind]
    if given - allowed:
        raise ValueError(f"{', '.join(sorted(given - allowed))} not valid for type {kind}")
    if EXTRA_KEYS[kind] - given:
        raise ValueError(f"type {kind} needs {', '.join(sorted(EXTRA_KEYS[kind] - given))}")
    entry = Entry(path=_normalize(spec.get("path")), mode=EXTRA_TYPES[kind],
                  uid=_int_field(spec, "uid", 0), gid=_int_field(spec, "gid", 0),
                  mtime=clamp_mtime(0, clamp))
    if kind == "file":
        _extra_file(spec, entry, clamp)
        return entry
    entry.mode |= _mode_field(spec, EXTRA_DEFAULT_MODE[kind])
    if kind == "symlink":
        entry.target = os.fsencode(spec["target"])
        if not entry.target:
            raise ValueError("target must not be empty")
        entry.size = len(entry.target)
    elif kind in ("char", "block"):
        entry.rdevmajor = _int_field(spec, "major", 0)
        entry.rdevminor = _int_field(spec, "minor", 0)
    return entry


def parse_extras(specs, clamp: int | None = None) -> list[Entry]:
    """Parse all extra entries; the error names the first bad one (1-based) in one line."""
    if specs is None:
        return []
    if not isinstance(specs, (list, tuple)):
        raise CpioError("extra_entries must be a list")
    entries, seen = [], set()
    for number, spec in enumerate(specs, 1):
        label = show(str(spec.get("path"))) if isinstance(spec, dict) else "?"
        try:
            entry = parse_extra(spec, clamp)
        except ValueError as exc:
            raise CpioError(f"bad extra entry #{number} ({label}): {exc}") from None
        if entry.path in seen:
            raise CpioError(f"bad extra entry #{number} ({label}): path given twice")
        seen.add(entry.path)
        entries.append(entry)
    return entries


def merge_extras(tree: list[Entry], extras: list[Entry], clamp: int | None = None) -> list[Entry]:
    """Overlay extra entries on the tree; return all entries sorted bytewise by path.

    An extra entry replaces the tree entry of the same path (and, when a directory is replaced
    by something else, everything below it). Missing parent directories are added (0755).
    """
    by_path = {entry.path: entry for entry in tree}
    for extra in extras:
        old = by_path.get(extra.path)
        if old is not None and stat.S_ISDIR(old.mode) and not stat.S_ISDIR(extra.mode):
            below = extra.path + b"/"
            by_path = {p: e for p, e in by_path.items() if not p.startswith(below)}
        by_path[extra.path] = extra
        parts = extra.path.split(b"/")
        for depth in range(1, len(parts)):
            parent = b"/".join(parts[:depth])
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry(path=parent, mode=stat.S_IFDIR | 0o755,
                                        mtime=clamp_mtime(0, clamp))
            elif not stat.S_ISDIR(existing.mode):
                raise CpioError(f"bad extra entry {show(extra.path)}: parent {show(parent)} "
                                "is not a directory")
    return sorted(by_path.values(), key=lambda entry: entry.path)


# ----------------------------------------------------------------------------- layout


def number_inodes(entries: list[Entry]) -> None:
    """Give sorted entries inode numbers 1.. and newc nlink/filesize (hard links, directories)."""
    groups: dict[tuple[int, int], list[Entry]] = {}
    subdirs: dict[bytes, int] = {}
    for entry in entries:
        if entry.link_key is not None:
            groups.setdefault(entry.link_key, []).append(entry)
        if stat.S_ISDIR(entry.mode):
            parent = entry.path.rpartition(b"/")[0]
            subdirs[parent] = subdirs.get(parent, 0) + 1
    next_ino = 1
    for entry in entries:
        group = groups.get(entry.link_key) if entry.link_key is not None else None
        if group is not None and len(group) > 1:
            if entry is group[0]:
                for member in group:
                    member.ino, member.nlink = next_ino, len(group)
                    if member is not group[-1]:
                        member.size = 0
                next_ino += 1
            continue
        entry.ino, next_ino = next_ino, next_ino + 1
        entry.nlink = 2 + subdirs.get(entry.path, 0) if stat.S_ISDIR(entry.mode) else 1


def plan(src: bytes, extras: list[Entry], keep_owner: bool = False,
         clamp: int | None = None) -> list[Entry]:
    """Scan the tree, refuse unreadable paths, overlay extras, and lay out the archive."""
    tree, unreadable = scan_tree(src, keep_owner, clamp)
    if unreadable:
        unreadable.sort()
        names = ", ".join(show(p or b".") for p in unreadable[:SHOW_UNREADABLE])
        more = len(unreadable) - SHOW_UNREADABLE
        raise CpioError(f"cannot read {len(unreadable)} path(s) under {show(src)}: {names}"
                        + (f" (and {more} more)" if more > 0 else ""))
    entries = merge_extras(tree, extras, clamp)
    too_big = [e.path for e in entries if e.size > MAX_FIELD]
    if too_big:
        raise CpioError(f"newc cannot hold files of 4 GiB or more: {show(too_big[0])}")
    number_inodes(entries)
    return entries


# ----------------------------------------------------------------------------- newc stream


def header(entry: Entry) -> bytes:
    """The 110-byte newc header, the NUL-terminated name and its padding to 4 bytes."""
    name = entry.path + b"\0"
    head = HEADER % (entry.ino, entry.mode, entry.uid, entry.gid, entry.nlink, entry.mtime,
                     entry.size, 0, 0, entry.rdevmajor, entry.rdevminor, len(name), 0)
    return head + name + b"\0" * (-(len(head) + len(name)) % 4)


def _copy_file(entry: Entry, buf: bytearray, out) -> bytearray:
    """Append exactly entry.size bytes of the file to buf, flushing full chunks to out."""
    try:
        fd = os.open(entry.src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            remaining = entry.size
            while remaining:
                data = os.read(fd, min(remaining, CHUNK))
                if not data:
                    raise CpioError(f"{show(entry.src)} shrank while being archived")
                buf += data
                remaining -= len(data)
                if len(buf) >= CHUNK:
                    out.write(buf)
                    buf = bytearray()
        finally:
            os.close(fd)
    except OSError as exc:
        raise CpioError(f"cannot read {show(entry.src)}: {exc.strerror}") from None
    return buf


def write_newc(entries: list[Entry], out) -> int:
    """Stream the archive to out.write() in chunks of about CHUNK bytes; returns its length."""
    buf = bytearray()
    total = 0
    for entry in entries:
        head = header(entry)
        pad = -entry.size % 4
        buf += head
        if entry.size:
            if entry.src is not None:
                buf = _copy_file(entry, buf, out)
            else:
                buf += entry.target
            buf += b"\0" * pad
        total += len(head) + entry.size + pad
        if len(buf) >= CHUNK:
            out.write(buf)
            buf = bytearray()
    head = header(Entry(path=TRAILER, mode=0, nlink=1))
    total += len(head)
    buf += head + b"\0" * (-total % BLOCK)
    out.write(buf)
    return total + (-total % BLOCK)


# ----------------------------------------------------------------------------- compressors


class HashingOutput:
    """Final byte sink: counts and sha256-hashes what it gets, writes it to fd unless None."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data) -> None:
        self.size += len(data)
        self.sha256.update(data)
        if self.fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]


class ZlibCompressor:
    """gzip in process (zlib, gzip header with mtime 0): the fallback when pigz is missing."""

    def __init__(self, level: int, output: HashingOutput):
        self.output = output
        self.zobj = zlib.compressobj(level, zlib.DEFLATED, 31)

    def write(self, data) -> None:
        self.output.write(self.zobj.compress(data))

    def close(self) -> None:
        self.output.write(self.zobj.flush())

    def abort(self) -> None:
        """Nothing to stop."""


class PassThrough:
    """compression none."""

    def __init__(self, output: HashingOutput):
        self.write = output.write

    def close(self) -> None:
        """Nothing buffered."""

    def abort(self) -> None:
        """Nothing to stop."""


class ProcessCompressor:
    """An external compressor: we write its stdin, a thread drains its stdout into output."""

    def __init__(self, argv: list[str], output: HashingOutput):
        self.argv = argv
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errors, close_fds=True)
        self.drain_error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, args=(output,), daemon=True)
        self.thread.start()

    def _drain(self, output: HashingOutput) -> None:
        try:
            for data in iter(lambda: self.proc.stdout.read(CHUNK), b""):
                output.write(data)
        except BaseException as exc:  # reported by close()
            self.drain_error = exc
            self.proc.kill()

    def _failure(self) -> CpioError:
        self.errors.seek(0)
        detail = " ".join(self.errors.read(2000).decode("utf-8", "replace").split())
        return CpioError(f"{self.argv[0]} failed (exit {self.proc.returncode})"
                         + (f": {detail}" if detail else ""))

    def write(self, data) -> None:
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.proc.wait()
            raise self._failure() from None

    def close(self) -> None:
        """Finish the stream; raise CpioError if the compressor or the output failed."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.thread.join()
        try:
            if self.drain_error is not None:
                raise CpioError(f"writing output failed: {self.drain_error}")
            if self.proc.returncode != 0:
                raise self._failure()
        finally:
            self.errors.close()

    def abort(self) -> None:
        """Stop the compressor (by its own PID) and wait for it and the drain thread."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.thread.join()
        self.errors.close()


def compressor_argv(compression: str, level: int | None) -> tuple[str, list[str] | None]:
    """The compressor's name and command line (None: done in process).

    gzip uses pigz (all cores; the bytes do not depend on the core count, but differ from
    zlib's) and falls back to Python's zlib. zstd -T0 output does not depend on the number
    of workers. xz runs single-threaded: its multi-threaded output depends on the thread
    count the machine allows. lz4 uses the legacy frame format, the only one the kernel reads.
    """
    if compression == "none":
        return "none", None
    if compression == "gzip":
        return ("pigz", ["pigz", "-n", f"-{level}", "-c"]) if shutil.which("pigz") else ("zlib", None)
    argv = {
        "zstd": ["zstd", f"-{level}", f"--long={ZSTD_WINDOW_LOG}", "-T0", "-q", "-c"],
        "xz": ["xz", "--check=crc32", f"--lzma2=preset={level},dict=1MiB", "-T1", "-q", "-c"],
        "lz4": ["lz4", "-l", f"-{level}", "-q", "-c"],
    }[compression]
    if not shutil.which(argv[0]):
        raise CpioError(f"compression {compression} needs the {argv[0]} program, not found in PATH")
    return argv[0], argv


def open_compressor(compression: str, level: int | None, output: HashingOutput):
    """Start the compressor for `compression`; returns (compressor object, its name)."""
    name, argv = compressor_argv(compression, level)
    if argv is not None:
        return ProcessCompressor(argv, output), name
    if compression == "gzip":
        return ZlibCompressor(level, output), name
    return PassThrough(output), name


def stream(entries: list[Entry], compression: str, level: int | None,
           fd: int | None) -> tuple[HashingOutput, str]:
    """Write the compressed archive to fd (or only hash it when fd is None)."""
    output = HashingOutput(fd)
    compressor, name = open_compressor(compression, level, output)
    try:
        write_newc(entries, compressor)
        compressor.close()
    except BaseException:
        compressor.abort()
        raise
    return output, name


# ----------------------------------------------------------------------------- files


def file_sha256(path: bytes) -> str | None:
    """sha256 of a regular file, or None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    try:
        for data in iter(lambda: os.read(fd, CHUNK), b""):
            digest.update(data)
    finally:
        os.close(fd)
    return digest.hexdigest()


def check_paths(src: bytes, dest: bytes) -> None:
    """Refuse a missing or non-directory src, an unusable dest, or a dest inside src."""
    if not os.path.exists(src):
        raise CpioError(f"src {show(src)} does not exist")
    if not os.path.isdir(src):
        raise CpioError(f"src {show(src)} is not a directory")
    if os.path.isdir(dest):
        raise CpioError(f"dest {show(dest)} is a directory")
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise CpioError(f"directory of dest {show(dest)} does not exist")
    real_src, real_parent = os.path.realpath(src), os.path.realpath(parent)
    if real_parent == real_src or real_parent.startswith(real_src.rstrip(b"/") + b"/"):
        raise CpioError(f"dest {show(dest)} is inside src {show(src)}")


def _replace(tmp: bytes, dest: bytes) -> None:
    """fsync tmp, make it 0644, rename it over dest and fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o644)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, dest)
    dir_fd = os.open(os.path.dirname(os.path.abspath(dest)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def build(src, dest, *, compression: str = "gzip", level: int | None = None,
          mtime: int | None = None, keep_owner: bool = False, extra_entries=None,
          check_mode: bool = False, environ=None) -> dict:
    """Pack src into the initramfs dest. Returns changed, sha256, size, entries, compression,
    level and compressor. The mtime clamp is `mtime`, else SOURCE_DATE_EPOCH from environ.

    All input is checked before anything is written; CpioError carries a one-line reason.
    In check mode nothing is written: the archive is only built and hashed.
    """
    src, dest = os.fsencode(src), os.fsencode(dest)
    environ = os.environ if environ is None else environ
    level = resolve_level(compression, level)
    clamp = parse_epoch(mtime, "mtime")
    if clamp is None:
        clamp = parse_epoch(environ.get("SOURCE_DATE_EPOCH"), "SOURCE_DATE_EPOCH")
    check_paths(src, dest)
    extras = parse_extras(extra_entries, clamp)
    compressor_argv(compression, level)  # fail early when the program is missing
    entries = plan(src, extras, keep_owner, clamp)

    if check_mode:
        output, name = stream(entries, compression, level, None)
        changed = output.sha256.hexdigest() != file_sha256(dest)
    else:
        output, name, changed = _write_atomically(entries, compression, level, dest)
    return {"changed": changed, "sha256": output.sha256.hexdigest(), "size": output.size,
            "entries": len(entries), "compression": compression, "level": level,
            "compressor": name}


def _write_atomically(entries: list[Entry], compression: str, level: int | None,
                      dest: bytes) -> tuple[HashingOutput, str, bool]:
    """Build into a temp file next to dest; replace dest only when the bytes differ."""
    directory, base = os.path.split(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=b"." + base + b".%d." % os.getpid(), suffix=b".tmp")
    try:
        try:
            output, name = stream(entries, compression, level, fd)
        finally:
            os.close(fd)
        changed = output.sha256.hexdigest() != file_sha256(dest)
        if changed:
            _replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return output, name, changed
