"""BUILD_METHOD=dracut end to end: make initrd / image / rootfs from the builder's OS with dracut,
booted under QEMU TCG with the Debian cloud kernel and the reference agent.

The agent-as-init initrd boots straight into the agent. The systemd-as-init initrd is built with
DRACUT_KVERSION of the cloud kernel (its modules are not installed on the builder: DRACUT_KMODDIR)
and DRACUT_DRIVERS=virtio_blk; systemd-modules-load loads the driver from etc/modules-load.d and
the agent (a service of kata-containers.target) sees /sys/module/virtio_blk. No virtio disk is
attached, so nothing else would load it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import vm

REPO = Path(__file__).resolve().parents[2]
WORK = Path("/var/lib/kata-osbuilder/work")

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="builds need root"),
              pytest.mark.skipif(shutil.which("dracut") is None, reason="needs dracut")]


def make(target: str, dest: Path, env: dict | None = None, **variables: str) -> subprocess.CompletedProcess:
    args = ["make", "-s", "-C", str(REPO), target, f"IMAGES_BUILD_DEST={dest}", "BUILD_METHOD=dracut"]
    args += [f"{k}={v}" for k, v in variables.items()]
    environ = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    environ.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=1200, env=environ)


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def recap_changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1]))


def fatal_lines(output: str) -> list[str]:
    """The one-line messages of failed tasks."""
    return re.findall(r"^\[ERROR\]: Task failed: Action failed: (.*)$", output, re.M)


def sha256(path: Path) -> str:
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def extract(initrd: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(initrd), "-C", str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def agent_initrd(tmp_path_factory, ref_agent):
    dest = tmp_path_factory.mktemp("dracut-agent")
    ok(make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent)))
    return dest / "kata-containers-initrd.img"


@pytest.fixture(scope="module")
def systemd_kmod_initrd(tmp_path_factory, ref_agent, kernel):
    dest = tmp_path_factory.mktemp("dracut-systemd")
    ok(make("initrd", dest, AGENT_INIT="no", AGENT_SOURCE_BIN=str(ref_agent), DRACUT_KVERSION=kernel.version,
            DRACUT_KMODDIR=str(kernel.modules), DRACUT_DRIVERS="virtio_blk"))
    return dest / "kata-containers-initrd.img"


# --- agent as init -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.boot
def test_agent_init_initrd_boots_to_agent(agent_initrd, kernel):
    result = vm.boot(kernel, initrd=agent_initrd, append="kata_ref_agent.poweroff", timeout=180)
    assert result.ready, result.console[-2000:]
    assert result.ready.group(1) == "1", "the agent must be PID 1"
    assert result.ready.group(3) == "rootfs"


@pytest.mark.slow
def test_agent_init_initrd_content(agent_initrd, ref_agent, tmp_path):
    root = extract(agent_initrd, tmp_path / "x")
    assert os.readlink(root / "init") == "/usr/bin/kata-agent"
    assert os.readlink(root / "usr/sbin/init") == "/usr/bin/kata-agent"
    assert (root / "usr/bin/kata-agent").stat().st_mode & 0o111
    assert not (root / "usr/lib/systemd/systemd").exists(), "the agent is init: no systemd in the initrd"
    assert not list((root / "usr/lib").glob("modules/*")), "no DRACUT_KVERSION: --no-kernel"
    recorded = (agent_initrd.parent / (agent_initrd.name + ".sha256")).read_text().split()
    assert recorded == [sha256(agent_initrd), agent_initrd.name]
    assert agent_initrd.stat().st_size < 5 * 1024 * 1024


@pytest.mark.slow
def test_unchanged_dracut_build_is_reused(agent_initrd, ref_agent):
    before = sha256(agent_initrd)
    again = make("initrd", agent_initrd.parent, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent))
    ok(again)
    assert "dracut not run again" in again.stdout
    assert recap_changed(again.stdout) == 0
    assert sha256(agent_initrd) == before


@pytest.mark.slow
def test_two_builds_give_the_same_bytes(agent_initrd, ref_agent, tmp_path):
    """Separate overlay, tree and output: dracut really runs twice (no SOURCE_DATE_EPOCH set)."""
    digests = []
    try:
        for n in ("a", "b"):
            dest = tmp_path / n
            r = make("initrd", dest, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent),
                     ROOTFS_DIR=str(WORK / f"dracut-repro-{n}" / "rootfs"), DRACUT_OVERLAY_DIR=str(tmp_path / f"overlay-{n}"))
            ok(r)
            assert "dracut not run again" not in r.stdout
            digests.append(sha256(dest / "kata-containers-initrd.img"))
    finally:
        for n in ("a", "b"):
            shutil.rmtree(WORK / f"dracut-repro-{n}", ignore_errors=True)
    assert digests[0] == digests[1]
    assert digests[0] == sha256(agent_initrd), "the default overlay and tree give the same bytes too"


# --- systemd as init, kernel modules -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.boot
def test_systemd_initrd_loads_listed_driver(systemd_kmod_initrd, kernel):
    result = vm.boot(kernel, initrd=systemd_kmod_initrd, timeout=300,
                     append="kata_ref_agent.poweroff kata_ref_agent.check=/sys/module/virtio_blk,/sys/module/nfit")
    assert result.ready, result.console[-3000:]
    assert result.ready.group(1) != "1", "systemd is PID 1, the agent its service"
    assert "Reached target kata-containers.target" in re.sub(r"\x1b\[[0-9;]*m|…", "", result.console) or \
        "Kata Containers Agent Target" in result.console
    assert "Finished systemd-modules-load.service" in re.sub(r"\x1b\[[0-9;]*m", "", result.console) or \
        "Load Kernel Modules" in result.console
    # virtio_blk is listed (loaded by systemd-modules-load); nfit is in the kernel's tree but not listed.
    assert result.checks() == {"/sys/module/virtio_blk": "present", "/sys/module/nfit": "absent"}


@pytest.mark.slow
def test_systemd_initrd_content(systemd_kmod_initrd, kernel, tmp_path):
    root = extract(systemd_kmod_initrd, tmp_path / "x")
    assert os.readlink(root / "init").endswith("lib/systemd/systemd")
    assert (root / "usr/lib/systemd/system/kata-agent.service").is_file()
    assert os.readlink(root / "etc/systemd/system/basic.target.wants/kata-containers.target") == \
        "/usr/lib/systemd/system/kata-containers.target"
    assert (root / "usr/lib/systemd/system/tmp.mount").is_file(), "kata-containers.target requires tmp.mount"
    assert "virtio_blk" in (root / "etc/modules-load.d/kata-drivers.conf").read_text().split()
    kos = sorted(p.name for p in (root / "usr/lib/modules" / kernel.version).rglob("*.ko*"))
    assert "virtio_blk.ko" in kos
    assert len(kos) <= 8, f"drivers= is exclusive: only the listed drivers and their dependencies, got {kos}"
    assert (root / "usr/lib/modules" / kernel.version / "modules.dep").is_file()
    assert not (kernel.modules / "modules.dep").exists(), "the user's modules tree is left untouched"


# --- image and rootfs ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.boot
def test_dracut_image_boots_to_agent(tmp_path, ref_agent, kernel):
    ok(make("image", tmp_path, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent), SKIP_DAX_HEADER="yes"))
    image = tmp_path / "kata-containers.img"
    result = vm.boot(kernel, nvme=image, timeout=180, append="root=/dev/nvme0n1p1 ro rootwait kata_ref_agent.poweroff")
    assert result.ready, result.console[-3000:]
    assert result.ready.group(1) == "1"
    assert result.ready.group(3) == "ext4"


@pytest.mark.slow
def test_dracut_rootfs_is_the_extracted_tree(tmp_path, ref_agent):
    ok(make("rootfs", tmp_path, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent)))
    tree = WORK / "dracut-x86_64-agent" / "rootfs"
    assert (tree / "usr/bin/kata-agent").read_bytes()[:4] == b"\x7fELF"
    assert os.readlink(tree / "usr/sbin/init") == "/usr/bin/kata-agent"
    assert not (WORK / "debian-x86_64-agent" / "rootfs.dracut").exists(), "the distro tree is not touched"


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variables, expected", [
    ({"DRACUT_KVERSION": "9.9.9-none"}, r"^DRACUT_KVERSION=9\.9\.9-none: no modules for it on the builder"),
    ({"DRACUT_KMODDIR": "/nonexistent/lib/modules/9.9.9"}, r"^DRACUT_KMODDIR /nonexistent/lib/modules/9\.9\.9 is not a lib/modules"),
    ("kernel-drivers", r"^DRACUT_DRIVERS: no_such_driver not in kernel"),
])
def test_bad_input_fails_in_one_line_before_work(variables, expected, tmp_path, ref_agent, kernel):
    if variables == "kernel-drivers":
        variables = {"DRACUT_KVERSION": kernel.version, "DRACUT_KMODDIR": str(kernel.modules),
                     "DRACUT_DRIVERS": "virtio_blk no_such_driver"}
    r = make("initrd", tmp_path, AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent), **variables)
    assert r.returncode != 0
    msgs = fatal_lines(r.stdout)
    assert len(msgs) == 1 and re.search(expected, msgs[0]), r.stdout[-3000:]
    assert "kata.osbuilder.dracut" not in r.stdout, "nothing was built"
    assert not (tmp_path / "kata-containers-initrd.img").exists()


@pytest.mark.slow
def test_missing_dracut_fails_in_one_line(tmp_path, ref_agent):
    """PATH without dracut: a directory of links to everything else in /usr/bin."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for p in Path("/usr/bin").iterdir():
        if p.name != "dracut":
            (farm / p.name).symlink_to(p)
    path = [d for d in os.environ["PATH"].split(":") if d and not (Path(d) / "dracut").exists()]
    r = make("initrd", tmp_path / "out", env={"PATH": ":".join(path + [str(farm)])},
             AGENT_INIT="yes", AGENT_SOURCE_BIN=str(ref_agent))
    assert r.returncode != 0
    msgs = fatal_lines(r.stdout)
    assert msgs == ["BUILD_METHOD=dracut needs dracut on the builder (apt-get install dracut-core)"], r.stdout[-3000:]


# --- the role's molecule scenario ----------------------------------------------------------------------

@pytest.mark.slow
def test_molecule_scenario(ref_agent):
    if shutil.which("molecule") is None:
        pytest.skip("molecule not installed")
    r = subprocess.run(["molecule", "--base-config", str(REPO / "tests/molecule/molecule.yml"), "test"],
                       cwd=REPO / "roles/dracut", capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    assert re.search(r"idempotence: Executed: Successful", out), out[-3000:]
