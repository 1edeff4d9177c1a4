"""A remote builder: an sshd in a network namespace, reached through an inventory.

The builder gets its own work directory (REMOTE_ROOT), so the rootfs lives only "over there"; the
bootstrap cache is shared with the local builds for speed (it is keyed on its inputs). The initrd is
built there over kata.osbuilder.chroot's SSH mode, fetched back to the controller and booted.
Nothing stays: the build removes its remote work, the fixture kills the sshd by PID, deletes the
namespace and the veth pair, and removes REMOTE_ROOT.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import netns, vm

REPO = Path(__file__).resolve().parents[2]
REMOTE_ROOT = Path("/var/lib/kata-osbuilder/remote-test")
REMOTE_WORK = REMOTE_ROOT / "work"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and builds need root"),
    pytest.mark.skipif(not (shutil.which("ip") and os.path.exists(netns.SSHD)), reason="needs iproute2 and openssh-server"),
]


@pytest.fixture(scope="module")
def builder():
    shutil.rmtree(REMOTE_ROOT, ignore_errors=True)
    with netns.remote_builder() as b:
        yield b
    # nothing left on either side
    assert not os.path.exists(f"/proc/{b.sshd_pid}") or "sshd" not in Path(f"/proc/{b.sshd_pid}/cmdline").read_text()
    assert b.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not b.dir.exists()
    shutil.rmtree(REMOTE_ROOT, ignore_errors=True)


def write_inventory(path: Path, b: netns.Builder, *, port: int | None = None, group: str = "builders_x86_64") -> Path:
    host = {
        "ansible_host": b.address, "ansible_port": port or b.port, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(b.key), "ansible_ssh_args": b.ssh_args(),
        "ansible_python_interpreter": "/usr/bin/python3",
        "builder_work_dir": str(REMOTE_WORK),
    }
    inv = {"all": {"children": {group: {"hosts": {"remote1": host}}}}}
    path.write_text(yaml.safe_dump(inv))
    return path


def play(playbook: str, inventory: Path, dest: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    args = ["ansible-playbook", "-i", str(inventory), f"playbooks/{playbook}", "-e", f"images_build_dest={dest}", *extra]
    env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}  # one result per line
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def fatal_msgs(output: str) -> list[str]:
    """The msg of every failed task (not the ignored ones)."""
    return [json.loads(m).get("msg", "") for m in re.findall(r"^fatal: \[[^\]]+\]: FAILED! => (\{.*\})$", output, re.M)]


@pytest.fixture(scope="module")
def remote_initrd(builder, ref_agent, tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    inv = write_inventory(d / "hosts.yml", builder)
    r = play("initrd.yml", inv, d / "out", "-e", "arch=x86_64", "-e", "agent_init=true",
             "-e", f"agent_source_bin={ref_agent}")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return d / "out" / "kata-containers-initrd.img", r.stdout


@pytest.mark.slow
def test_initrd_is_built_on_the_remote_builder_and_fetched(remote_initrd):
    initrd, out = remote_initrd
    recap = out.split("PLAY RECAP")[-1]
    assert re.search(r"^remote1\s+: ok=\d+ .*failed=0", recap, re.M), recap
    # the rootfs host was reached through the builder, and finalize ran on it
    assert "debian-x86_64-agent/rootfs -> remote1(10." in out
    assert str(REMOTE_WORK) in out, "the rootfs lives in the builder's work dir"
    digest = subprocess.run(["sha256sum", str(initrd)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert (initrd.parent / (initrd.name + ".sha256")).read_text().split() == [digest, initrd.name]
    meta = yaml.safe_load((initrd.parent / (initrd.name + ".osbuilder.yaml")).read_text())
    assert meta["agent"]["agent-is-init-daemon"] == "yes" and meta["architecture"] == "x86_64"
    # the builder's work is gone (the bootstrap cache is a cache and stays)
    assert not REMOTE_WORK.exists(), list(REMOTE_WORK.rglob("*"))[:5]


@pytest.mark.slow
@pytest.mark.boot
def test_remote_initrd_boots_to_the_agent(remote_initrd, kernel):
    result = vm.boot(kernel, initrd=remote_initrd[0], append="kata_ref_agent.poweroff", timeout=180)
    assert result.ready, result.console[-2000:]
    assert result.ready.group(1) == "1"


def _fails_before_work(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    msgs = fatal_msgs(r.stdout)
    assert len(msgs) == 1, r.stdout[-3000:]
    assert "kata.osbuilder.bootstrap" not in r.stdout and "kata.osbuilder.preflight" not in r.stdout, "no work started"
    return msgs[0]


def test_unreachable_builder_is_one_line(builder, ref_agent, tmp_path):
    inv = write_inventory(tmp_path / "hosts.yml", builder, port=2299)  # nothing listens there
    msg = _fails_before_work(play("initrd.yml", inv, tmp_path / "out", "-e", "arch=x86_64", "-e", "agent_init=true",
                                  "-e", f"agent_source_bin={ref_agent}", timeout=120))
    assert re.match(rf"Builder remote1 \(root@{re.escape(builder.address)}:2299\) is unreachable: .*refused", msg), msg


def test_builder_missing_tools_is_one_line(builder, ref_agent, tmp_path):
    inv = write_inventory(tmp_path / "hosts.yml", builder, port=builder.port_bare)  # PATH without util-linux
    msg = _fails_before_work(play("initrd.yml", inv, tmp_path / "out", "-e", "arch=x86_64", "-e", "agent_init=true",
                                  "-e", f"agent_source_bin={ref_agent}", timeout=120))
    assert msg.startswith(f"Builder remote1 (root@{builder.address}:{builder.port_bare}) lacks unshare, chroot, mount"), msg


def test_builder_of_the_wrong_architecture_is_one_line(builder, ref_agent, tmp_path):
    inv = write_inventory(tmp_path / "hosts.yml", builder, group="builders_aarch64")
    msg = _fails_before_work(play("initrd.yml", inv, tmp_path / "out", "-e", "arch=aarch64", "-e", "agent_init=true",
                                  "-e", f"agent_source_bin={ref_agent}", timeout=120))
    assert msg == f"Builder remote1 (root@{builder.address}:{builder.port}) is in builders_aarch64 but is x86_64", msg


def test_no_builder_for_the_architecture_is_one_line(builder, ref_agent, tmp_path):
    inv = write_inventory(tmp_path / "hosts.yml", builder)
    msg = _fails_before_work(play("initrd.yml", inv, tmp_path / "out", "-e", "arch=s390x", "-e", "use_qemu_user=false",
                                  "-e", "agent_init=true", "-e", f"agent_source_bin={ref_agent}", timeout=120))
    assert msg.startswith("No builder for s390x: the inventory has no host in builders_s390x and localhost is x86_64"), msg


def test_chroot_connection_over_ssh_moves_files_inside_the_rootfs(builder, tmp_path):
    """put_file/fetch_file go through a builder temp file and dd inside the chroot: an absolute
    symlink in the rootfs resolves inside it, and no transit file stays on the builder."""
    root = tmp_path / "rootfs"
    for d in ("bin", "etc", "tmp", "outside"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox" if os.path.exists("/bin/busybox") else shutil.which("busybox"), root / "bin" / "busybox")
    for tool in ("sh", "dd", "cat", "ls"):
        os.symlink("busybox", root / "bin" / tool)
    os.symlink("/etc/target", root / "etc" / "link")   # absolute: must land in the rootfs's /etc/target
    transit = tmp_path / "transit"
    transit.mkdir()
    src = tmp_path / "payload"
    src.write_bytes(os.urandom(300_000))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {str(root): {
        "ansible_connection": "kata.osbuilder.chroot",
        "kata_chroot_builder": {"host": builder.address, "port": builder.port, "user": "root",
                                "private_key_file": str(builder.key), "ssh_args": builder.ssh_args(),
                                "tmp_dir": str(transit)}}}}}))
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "put", "ansible.builtin.raw": "true"},
        {"name": "pid", "ansible.builtin.raw": "echo pid=$$; cat /proc/1/cmdline | tr '\\0' ' '", "register": "pid"},
        {"name": "show", "ansible.builtin.debug": {"var": "pid.stdout"}},
    ]}]))
    r = subprocess.run(["ansible-playbook", "-i", str(inv), str(pb)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "pid=2" in r.stdout or "pid=1" in r.stdout, "each command runs in its own PID namespace"
    # put_file and fetch_file through the plugin itself
    code = f"""
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader, init_plugin_loader
init_plugin_loader([{str(REPO / '.collections')!r}])
c = connection_loader.get('kata.osbuilder.chroot', PlayContext())
c.set_options(direct={{'remote_addr': {str(root)!r}, 'mounts': [],
    'builder': {{'host': {builder.address!r}, 'port': {builder.port}, 'user': 'root',
                 'private_key_file': {str(builder.key)!r}, 'ssh_args': {builder.ssh_args()!r}, 'tmp_dir': {str(transit)!r}}}}})
c.put_file({str(src)!r}, '/etc/link')
c.fetch_file('/etc/target', {str(tmp_path / 'back')!r})
try:
    c.fetch_file('/no/such/file', {str(tmp_path / 'none')!r})
except Exception as e:
    print('ERR', e)
c.close()
"""
    r = subprocess.run(["python3", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "etc" / "target").read_bytes() == src.read_bytes()
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert "ERR kata.osbuilder.chroot: failed to fetch /no/such/file from builder" in r.stdout, r.stdout
    assert list(transit.iterdir()) == [], "transit files are removed on the builder"
