"""Bad input is refused with one exact line before any work: table-driven, through make.

Every case runs `make <target> VAR=...` with an output dir and a ROOTFS_DIR of its own, then
checks the message (ANSIBLE_CALLBACK_RESULT_FORMAT=json puts it on one line), that no bootstrap or
later task ran, that the output dir and the rootfs dir are as before, and that it took seconds.
The cases run three at a time (each is an ansible-playbook start-up, about 5 s).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.support.build import REPO, WORK, make

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the pipeline needs root")
AGENT = REPO / "build" / "ref-agent" / os.uname().machine / "kata-ref-agent"
DISTROS = ", ".join(sorted(p.stem for p in (REPO / "roles/bootstrap/vars").glob("*.yml")))
OK = dict(AGENT_SOURCE_BIN=str(AGENT))

CASES = [
    # (id, target, variables, exact message)
    ("unknown-distro", "initrd", dict(OK, DISTRO="nosuch"), f"Unknown distro 'nosuch'; known: {DISTROS}"),
    ("unknown-arch", "initrd", dict(OK, ARCH="mips"), "ARCH=mips is not one of x86_64, aarch64, ppc64le, s390x (several: comma-separated)"),
    ("no-agent", "initrd", {}, "No agent given: set AGENT_SOURCE_BIN=<kata-agent binary>, AGENT_TARBALL=<tarball> or AGENT_SOURCE_DIR=<kata-containers tree> (make ref-agent builds a reference agent for trying it out)"),
    ("two-agents", "initrd", dict(OK, AGENT_TARBALL=str(AGENT)), "Give one agent source, not AGENT_SOURCE_BIN and AGENT_TARBALL"),
    ("agent-missing", "initrd", dict(AGENT_SOURCE_BIN="/nonexistent/kata-agent"), "Agent source /nonexistent/kata-agent does not exist"),
    ("agent-is-dir", "initrd", dict(AGENT_SOURCE_BIN="/usr"), "AGENT_SOURCE_BIN /usr is not a file"),
    ("agent-not-elf", "initrd", dict(AGENT_SOURCE_BIN=str(REPO / "Makefile")), f"AGENT_SOURCE_BIN {REPO}/Makefile is not an ELF binary"),
    ("agent-wrong-arch", "initrd", dict(OK, ARCH="aarch64"), f"AGENT_SOURCE_BIN {AGENT} is built for x86_64, not aarch64"),
    ("agent-sha-format", "initrd", dict(OK, AGENT_SHA256="xyz"), "AGENT_SHA256=xyz is not 64 hex digits"),
    ("rootfs-dir-root", "initrd", dict(OK, ROOTFS_DIR="/"), f"ROOTFS_DIR / must be a directory below the work dir {WORK}, not a system directory"),
    ("rootfs-dir-usr", "initrd", dict(OK, ROOTFS_DIR="/usr"), f"ROOTFS_DIR /usr must be a directory below the work dir {WORK}, not a system directory"),
    ("rootfs-dir-outside", "initrd", dict(OK, ROOTFS_DIR="/srv/rootfs"), f"ROOTFS_DIR /srv/rootfs must be a directory below the work dir {WORK}, not a system directory"),
    ("rootfs-dir-dotdot", "initrd", dict(OK, ROOTFS_DIR=f"{WORK}/../../../../etc"), f"ROOTFS_DIR /etc must be a directory below the work dir {WORK}, not a system directory"),
    ("erofs-free-space", "image", dict(OK, FS_TYPE="erofs", ROOT_FREE_SPACE="10"), "FS_TYPE=erofs is read-only: ROOT_FREE_SPACE must be 0"),
    ("free-space-word", "image", dict(OK, ROOT_FREE_SPACE="lots"), "ROOT_FREE_SPACE=lots is not a number of MiB"),
    ("free-space-negative", "image", dict(OK, ROOT_FREE_SPACE="-1"), "ROOT_FREE_SPACE=-1 is not a number of MiB"),
    ("fs-btrfs", "image", dict(OK, FS_TYPE="btrfs"), "FS_TYPE=btrfs is not one of ext4, erofs"),
    ("fs-xfs", "image", dict(OK, FS_TYPE="xfs"), "FS_TYPE=xfs is not one of ext4, erofs (xfs images need loop devices; use ext4 or erofs)"),
    ("compression", "initrd", dict(OK, INITRD_COMPRESSION="bzip2"), "INITRD_COMPRESSION=bzip2 is not one of gzip, zstd, xz, lz4, none"),
    ("build-method", "initrd", dict(OK, BUILD_METHOD="kiwi"), "BUILD_METHOD=kiwi is not one of distro, dracut"),
    ("agent-init-word", "initrd", dict(OK, AGENT_INIT="maybe"), "AGENT_INIT=maybe must be yes or no"),
    ("dax-word", "image", dict(OK, SKIP_DAX_HEADER="perhaps"), "SKIP_DAX_HEADER=perhaps must be yes or no"),
    ("measured-word", "image", dict(OK, MEASURED_ROOTFS="sure"), "MEASURED_ROOTFS=sure must be yes or no"),
    ("selinux-agent-init", "initrd", dict(OK, AGENT_INIT="yes", SELINUX="yes"), "AGENT_INIT=yes with SELINUX=yes: SELinux needs systemd as init"),
    ("selinux-debian", "image", dict(OK, SELINUX="yes"), "SELINUX=yes is not supported for debian (no policy is installed)"),
    ("measured-initrd", "initrd", dict(OK, AGENT_INIT="yes", MEASURED_ROOTFS="yes"), "MEASURED_ROOTFS=yes needs an image (make image): an initrd has no partition to measure"),
    ("measured-dracut", "image", dict(OK, MEASURED_ROOTFS="yes", BUILD_METHOD="dracut"), "MEASURED_ROOTFS=yes needs BUILD_METHOD=distro"),
    ("extra-pkg-name", "image", dict(OK, EXTRA_PKGS="vim;reboot"), "EXTRA_PKGS: vim;reboot is not a package name"),
    ("extra-pkg-upper", "image", dict(OK, EXTRA_PKGS="curl Vim"), "EXTRA_PKGS: Vim is not a package name"),
    ("kmod-dir", "image", dict(OK, KERNEL_MODULES_DIR="/nonexistent/modules"), "KERNEL_MODULES_DIR /nonexistent/modules is not a directory"),
    ("hooks", "image", dict(OK, GUEST_HOOKS_TARBALL="/nonexistent/hooks.tar"), "GUEST_HOOKS_TARBALL /nonexistent/hooks.tar is not a file"),
    ("policy", "image", dict(OK, AGENT_POLICY_FILE="/nonexistent/policy.rego"), "AGENT_POLICY_FILE /nonexistent/policy.rego is not a file"),
    ("release", "initrd", dict(OK, OS_VERSION="hamm"), None),  # message lists the known releases: checked by prefix
    ("disk-space", "image", dict(OK, MIN_FREE_SPACE_MB="999999999"), None),
    ("min-space-word", "image", dict(OK, MIN_FREE_SPACE_MB="some"), "MIN_FREE_SPACE_MB=some is not a number of MiB"),
]
PREFIX = {
    "release": r"Release 'hamm' of debian is not known; known: \S",
    "disk-space": rf"Only \d+ MiB free for {WORK}, need 999999999 \(MIN_FREE_SPACE_MB\)$",
}
# Tasks of roles that do work: none of them may have started.
WORK_TASKS = re.compile(r"TASK \[kata\.osbuilder\.(bootstrap|agent|init|extras|finalize|pack|dracut) :")


def listing(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.lstat().st_size, int(p.lstat().st_mtime)) for p in path.rglob("*"))


def run_case(case, base: Path) -> dict:
    name, target, variables, _ = case
    out = base / name / "out"
    out.mkdir(parents=True)
    (out / "kept.img").write_bytes(b"an earlier artifact")
    variables = dict(variables)
    variables.setdefault("ROOTFS_DIR", str(WORK / "test-bad-input" / name / "rootfs"))
    before = listing(out)
    start = time.monotonic()
    r = make(target, out, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1"}, timeout=300,
             **variables)
    seconds = time.monotonic() - start
    fatal = [json.loads(line.split("=> ", 1)[1]) for line in r.stdout.splitlines()
             if line.startswith("fatal: ") and "=> {" in line]
    return dict(rc=r.returncode, stdout=r.stdout, stderr=r.stderr, seconds=seconds, fatal=fatal,
                before=before, after=listing(out), rootfs=Path(variables["ROOTFS_DIR"]))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = {case[0]: pool.submit(run_case, case, base) for case in CASES}
        return {name: f.result() for name, f in futures.items()}


def test_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_in_one_line_before_any_work(results, case):
    name, _, _, message = case
    r = results[name]
    assert r["rc"] != 0, r["stdout"][-2000:]
    assert len(r["fatal"]) == 1, r["stdout"][-3000:] + r["stderr"][-1000:]
    msg = r["fatal"][0]["msg"]
    assert "\n" not in msg
    if message is None:
        assert re.match(PREFIX[name], msg), msg
    else:
        assert msg == message
    assert not WORK_TASKS.search(r["stdout"]), "work started: " + ", ".join(sorted(set(WORK_TASKS.findall(r["stdout"]))))
    assert r["after"] == r["before"], "the output dir changed"
    assert not r["rootfs"].exists() or r["rootfs"].resolve() in (Path("/"), Path("/usr"), Path("/etc"))
    assert r["seconds"] < 60, f"took {r['seconds']:.0f} s"
