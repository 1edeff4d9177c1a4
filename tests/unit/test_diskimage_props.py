"""Property tests: random trees (odd and long names, symlinks, hard links, device nodes, empty
and large files) give images that sgdisk/sfdisk, e2fsck or fsck.erofs accept and that hold
exactly the tree."""
from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kata.osbuilder.plugins.module_utils import diskimage
from ansible_collections.kata.osbuilder.plugins.module_utils.diskimage import MiB, Spec

EPOCH = 1_650_000_000
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

short_names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                      min_size=1, max_size=12)
long_names = st.text("abcXYZ019 -_.~", min_size=180, max_size=254)  # erofs-utils 1.5: < 255
names = st.one_of(short_names, long_names).filter(
    lambda n: n not in (".", "..") and len(os.fsencode(n)) <= 255)
leaves = st.one_of(
    st.binary(max_size=3000).map(lambda b: ("file", b)),
    st.integers(0, 3 * MiB).map(lambda n: ("large", n)),
    st.just(("file", b"")),
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
            min_size=1, max_size=120).map(lambda t: ("symlink", t)),
    st.sampled_from([("chr", 1, 3), ("blk", 7, 0), ("fifo",)]),
)
trees = st.recursive(leaves, lambda kids: st.dictionaries(names, kids, max_size=5), max_leaves=14)
roots = st.dictionaries(names, trees, min_size=1, max_size=6)


def materialize(node, path: Path, files: list[Path]) -> None:
    """Create the drawn tree on disk; regular files are collected for hard links."""
    if isinstance(node, dict):
        path.mkdir()
        for name, child in node.items():
            materialize(child, path / name, files)
        return
    kind = node[0]
    if kind == "file":
        path.write_bytes(node[1])
        files.append(path)
    elif kind == "large":
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * (node[1] // 256) + b"z" * (node[1] % 256))
        files.append(path)
    elif kind == "symlink":
        path.symlink_to(node[1])
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        fmt = stat.S_IFCHR if kind == "chr" else stat.S_IFBLK
        os.mknod(path, fmt | 0o640, os.makedev(node[1], node[2]))


def build_tree(root_spec: dict, hardlinks: list[int], base: Path) -> Path:
    src = base / "src"
    files: list[Path] = []
    materialize(root_spec, src, files)
    for i, pick in enumerate(hardlinks):
        if files:
            os.link(files[pick % len(files)], src / f"hardlink-{i}")
    return src


def walk(root: Path) -> dict[str, tuple]:
    """Relative path -> comparable description (type, content/target/device, mode bits)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st_.st_mode):
                out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st_.st_mode))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                out[rel] = ("special", stat.S_IFMT(st_.st_mode), st_.st_rdev)
    return out


def regular_and_links(entries: dict) -> dict:
    return {k: v for k, v in entries.items() if v[0] in ("file", "link")}


def check_table(img: Path, spec: Spec, r: dict) -> None:
    if spec.table == "gpt":
        out = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True).stdout
        assert "No problems found" in out, out
    else:
        out = subprocess.run(["sfdisk", "-d", str(img)], capture_output=True, text=True).stdout
        assert f"start={r['partition_offset'] // 512:>12}" in out, out


def debugfs_stat(img: Path, offset: int, rel: str) -> str:
    """debugfs `stat` of a path; its parser takes "" for a quote inside a quoted name."""
    quoted = '"/' + rel.replace('"', '""') + '"'
    return subprocess.run(["debugfs", "-R", f"stat {quoted}", f"{img}?offset={offset}"],
                          capture_output=True, text=True, check=True).stdout


def check_ext4(img: Path, src: Path, r: dict, work: Path) -> None:
    device = f"{img}?offset={r['partition_offset']}"
    fsck = subprocess.run(["e2fsck", "-fn", device], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    out = work / "rdump"
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump / {out}", device], capture_output=True, check=True)
    expected = walk(src)
    assert regular_and_links(walk(out)) == regular_and_links(expected)
    for rel, desc in expected.items():
        if desc[0] == "special":
            info = debugfs_stat(img, r["partition_offset"], rel)
            kind = {stat.S_IFCHR: "character special", stat.S_IFBLK: "block special",
                    stat.S_IFIFO: "FIFO"}[desc[1]]
            assert f"Type: {kind}" in info
    for link in src.glob("hardlink-*"):
        info = debugfs_stat(img, r["partition_offset"], link.name)
        assert "Links: 1" not in info and "User:     0" in info and f"0x{EPOCH:08x}" in info


def check_erofs(img: Path, src: Path, r: dict, work: Path) -> None:
    part = work / "part.erofs"
    with open(img, "rb") as f_in, open(part, "wb") as f_out:
        f_in.seek(r["partition_offset"])
        f_out.write(f_in.read(r["partition_size"]))
    out = work / "extract"
    fsck = subprocess.run(["fsck.erofs", f"--extract={out}", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert walk(out) == walk(src)


@pytest.mark.parametrize("fs_type", ["ext4", "erofs"])
@SETTINGS
@given(root=roots, hardlinks=st.lists(st.integers(0, 50), max_size=3),
       table=st.sampled_from(["gpt", "msdos"]), dax_header=st.booleans(),
       free=st.integers(0, 6), longest=st.booleans())
def test_random_trees_make_valid_images(fs_type, root, hardlinks, table, dax_header, free, longest):
    with tempfile.TemporaryDirectory(prefix="gpt-props.") as tmp:
        if fs_type == "ext4" and longest:  # ext4 takes 255-byte names (erofs-utils 1.5 does not)
            root = {**root, "y" * 255: ("file", b"longest")}
        base = Path(tmp)
        src = build_tree(root, hardlinks, base)
        spec = Spec(src=src, dest=base / "disk.img", fs_type=fs_type, table=table,
                    dax_header=dax_header, root_free_space=free, epoch=EPOCH)
        r = diskimage.build(spec)
        img = base / "disk.img"
        assert img.stat().st_size == r["size"] and r["size"] % (2 * MiB) == 0
        check_table(img, spec, r)
        (check_ext4 if fs_type == "ext4" else check_erofs)(img, src, r, base)
