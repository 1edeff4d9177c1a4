"""dnf and zypper bootstraps for real, against a small signed rpm repository made here.

No CentOS, Fedora or openSUSE archive is reachable from the test machines, so the test makes its
own: rpmbuild packages (below), a throwaway GPG key that signs every package (and, for zypper, the
repository metadata), createrepo_c metadata laid out as the distro's mirror is (so the vars file's
repository paths are the ones used), served by `python3 -m http.server` on 127.0.0.1 and ended by
its PID. The playbooks run with PACKAGE_MIRROR and the key variable pointed there; gpgcheck stays on.

What the packages are (honestly): not CentOS's. `filesystem` and `setup` (usr-merged layout,
/etc/passwd), `glibc` (the builder's own glibc and the libraries the builder's Python needs),
`busybox` (the builder's static busybox as /bin/sh and the applets Ansible's chroot work uses),
`python3` (the builder's Python 3.11 and its standard library, so the chroot play's modules run),
`libseccomp` (the builder's libseccomp.so.2), `iptables-nft` (provides `iptables`; a stub file) and
`chrony` (a stub config with a %post scriptlet that must run in the root with busybox's sh).
So this proves: the repository/key configuration the role writes, dnf --installroot and
zypper --root installing signed packages (and refusing a tampered one), the rpm database where
the distro wants it, the agent/init/extras roles over chroot, finalize's rpm family (minimal
closure from the rpm database; full profile's rpm -e of the build-only packages), pack, and a
boot of the result to the reference agent. It does not prove that CentOS's real packages install.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.support import vm

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("rpmbuild", "rpmsign", "createrepo_c", "dnf", "zypper", "gpg", "rpm")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="builds need root"),
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="needs " + ", ".join(TOOLS) + " (make deps-apt: rpm createrepo-c dnf zypper)"),
              pytest.mark.skipif(os.uname().machine != "x86_64", reason="the packages carry the builder's x86_64 files")]

PY = "python3.11"
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "dist-packages",
               "site-packages", "__pycache__", "config-3.11-x86_64-linux-gnu"}


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def _libs(paths: list[Path]) -> set[str]:
    """The builder's shared libraries these ELF files load (ldd), symlinks resolved."""
    found = set()
    for p in paths:
        r = subprocess.run(["ldd", str(p)], capture_output=True, text=True)
        for m in re.finditer(r"(/\S+\.so[^\s]*)", r.stdout):
            found.add(m.group(1))
    return found


def _spec(name: str, version: str, files: dict[str, str], *, requires=(), provides=(), links=None,
          dirs=(), post: str = "", prereq=()) -> str:
    """A spec that installs FILES (dest -> builder source) and LINKS (dest -> target) as they are."""
    links = links or {}
    install = ["mkdir -p %{buildroot}"]
    for dest, src in sorted(files.items()):
        install.append(f"install -D -m 0755 '{src}' '%{{buildroot}}{dest}'" if os.access(src, os.X_OK)
                       else f"install -D -m 0644 '{src}' '%{{buildroot}}{dest}'")
    for d in dirs:
        install.append(f"mkdir -p '%{{buildroot}}{d}'")
    for dest, target in sorted(links.items()):
        install.append(f"mkdir -p \"$(dirname '%{{buildroot}}{dest}')\" && ln -sfn '{target}' '%{{buildroot}}{dest}'")
    listing = [f'"{p}"' for p in sorted(files)] + [f'%dir "{d}"' for d in dirs] + [f'"{p}"' for p in sorted(links)]
    return textwrap.dedent("""\
        Name: {name}
        Version: {version}
        Release: 1
        Summary: kata.osbuilder test package {name}
        License: MIT
        BuildArch: x86_64
        AutoReqProv: no
        {requires}
        {provides}
        {prereq}
        %description
        Test package for kata.osbuilder's dnf/zypper bootstrap tests.
        %install
        {install}
        {post}
        %files
        {listing}
        """).format(name=name, version=version, install="\n".join(install), listing="\n".join(listing),
                    requires="\n".join(f"Requires: {r}" for r in requires),
                    provides="\n".join(f"Provides: {p}" for p in provides),
                    prereq="\n".join(f"Requires(post): {r}" for r in prereq),
                    post=f"%post\n{post}" if post else "")


def build_packages(work: Path) -> list[Path]:
    stub = work / "stub"
    stub.mkdir()
    (stub / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stub / "group").write_text("root:x:0:\n")
    (stub / "iptables").write_text("fake iptables for kata.osbuilder tests\n")
    (stub / "chrony.conf").write_text("pool 2.centos.pool.ntp.org iburst\n")
    python = Path(os.path.realpath(f"/usr/bin/{PY}"))
    stdlib = Path(f"/usr/lib/{PY}")
    py_files = {}
    for p in stdlib.rglob("*"):
        rel = p.relative_to(stdlib)
        if p.is_dir() or p.is_symlink() or any(part in SKIP_STDLIB for part in rel.parts) or p.suffix == ".pyc":
            continue
        py_files[f"/usr/lib/{PY}/{rel}"] = str(p)
    py_files[f"/usr/bin/{PY}"] = str(python)
    libs = _libs([python] + [Path(v) for k, v in py_files.items() if k.endswith(".so")])
    glibc = {}
    for lib in libs:
        real = os.path.realpath(lib)
        if "ld-linux" in lib:
            glibc["/usr/lib64/ld-linux-x86-64.so.2"] = real
        else:
            glibc[f"/usr/lib/x86_64-linux-gnu/{Path(lib).name}"] = real
    busybox = shutil.which("busybox")
    applets = run(busybox, "--list").stdout.split()
    seccomp = next(Path("/usr/lib/x86_64-linux-gnu").glob("libseccomp.so.2*"))
    specs = {
        "filesystem": _spec("filesystem", "3.18", {}, dirs=["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/etc", "/var/lib", "/root", "/tmp", "/proc", "/sys", "/dev", "/run"],
                            links={"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}),
        "setup": _spec("setup", "2.13.7", {"/etc/passwd": stub / "passwd", "/etc/group": stub / "group"}, requires=["filesystem"]),
        "glibc": _spec("glibc", "2.36", glibc, requires=["filesystem", "setup"], provides=["libc.so.6()(64bit)"]),
        "busybox": _spec("busybox", "1.35.0", {"/usr/bin/busybox": busybox},
                         links={f"/usr/bin/{a}": "busybox" for a in applets if a not in ("init", "linuxrc", "busybox")},
                         requires=["filesystem"], provides=["/bin/sh"]),
        "python3": _spec("python3", "3.11.2", py_files, links={"/usr/bin/python3": PY},
                         requires=["libc.so.6()(64bit)"], provides=["python311", "python3.11"]),
        "libseccomp": _spec("libseccomp", "2.5.4", {f"/usr/lib/x86_64-linux-gnu/{seccomp.name}": os.path.realpath(seccomp)},
                            requires=["glibc"], provides=["libseccomp2"]),
        "iptables-nft": _spec("iptables-nft", "1.8.9", {"/usr/sbin/iptables": stub / "iptables"},
                              requires=["glibc"], provides=["iptables"]),
        "chrony": _spec("chrony", "4.3", {"/etc/chrony.conf": stub / "chrony.conf"}, requires=["glibc", "/bin/sh"],
                        prereq=["/bin/sh"], post="mkdir -p /var/lib/chrony && echo \"post ran in $(cat /proc/1/comm 2>/dev/null || echo root)\" > /var/lib/chrony/post-ran"),
    }
    top = work / "rpmbuild"
    for name, spec in specs.items():
        f = work / f"{name}.spec"
        f.write_text(spec)
        run("rpmbuild", "-bb", "--quiet", f"--define=_topdir {top}", "--define=_binary_payload w1.gzdio",
            "--define=__os_install_post %{nil}", "--define=_build_id_links none", "--define=debug_package %{nil}", f)
    return sorted((top / "RPMS").rglob("*.rpm"))


@pytest.fixture(scope="module")
def signed_repo(tmp_path_factory):
    """{url, key_url, root, gnupg}: the served tree, with CentOS's and openSUSE's layouts."""
    work = tmp_path_factory.mktemp("rpmrepo")
    gnupg = work / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(gnupg)]
    server = None
    try:
        run(*gpg, "--passphrase", "", "--quick-gen-key", "kata.osbuilder test <test@example.invalid>", "rsa2048", "sign", "never")
        rpms = build_packages(work)
        run("rpmsign", "--addsign", "--define=__gpg /usr/bin/gpg", "--define=_gpg_name kata.osbuilder test", f"--define=_gpg_path {gnupg}", *rpms, stdin=subprocess.DEVNULL)
        root = work / "www"
        layouts = {"centos": [root / "9-stream/BaseOS/x86_64/os", root / "9-stream/AppStream/x86_64/os"],
                   "opensuse": [root / "tumbleweed/repo/oss"]}
        for dirs in layouts.values():
            for i, d in enumerate(dirs):
                (d / "Packages").mkdir(parents=True)
                if i == 0:  # the first repository has the packages, the others are empty
                    for r in rpms:
                        shutil.copy(r, d / "Packages" / r.name)
                run("createrepo_c", "--quiet", d)
                run(*gpg, "--armor", "--detach-sign", "--output", d / "repodata/repomd.xml.asc", d / "repodata/repomd.xml")
                run(*gpg, "--armor", "--export", "--output", d / "repodata/repomd.xml.key")
        run(*gpg, "--armor", "--export", "--output", root / "RPM-GPG-KEY-kata-test")
        server = subprocess.Popen(["python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"], cwd=root,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = server.stdout.readline()
        port = int(re.search(r"port (\d+)", line).group(1))
        url = f"http://127.0.0.1:{port}"
        yield {"url": url, "key_url": f"{url}/RPM-GPG-KEY-kata-test", "root": root, "rpms": rpms, "gnupg": gnupg}
    finally:
        if server is not None:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "all"], capture_output=True)


def playbook(kind: str, tmp: Path, agent: Path, repo: dict, *extra: str) -> subprocess.CompletedProcess:
    args = ["ansible-playbook", f"playbooks/{kind}.yml", "-e", "arch=x86_64", "-e", f"agent_source_bin={agent}", "-e", "agent_init=true",
            "-e", f"package_mirror={repo['url']}", "-e", '{"bootstrap_gpg_keys": {"*": ["%s"]}}' % repo["key_url"],
            "-e", f"work_dir={tmp}/work", "-e", f"cache_dir={tmp}/cache", "-e", f"images_build_dest={tmp}/out", *extra]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)


def rootfs_of(tmp: Path, distro: str) -> Path:
    return next((tmp / "work").glob(f"{distro}-*-agent/rootfs"))


@pytest.fixture(scope="module")
def centos_build(signed_repo, ref_agent, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("centos")
    r = playbook("initrd", tmp, ref_agent, signed_repo, "-e", "distro=centos")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def test_dnf_bootstrap_config_and_database(centos_build):
    entry = next((centos_build / "cache/bootstrap").glob("centos-9-x86_64-*[0-9a-f]"))
    conf = (entry / "bootstrap/dnf.conf").read_text()
    assert "gpgcheck=1" in conf and "gpgcheck=0" not in conf.replace("repo_gpgcheck=0", "")
    assert re.search(r"baseurl=http://127\.0\.0\.1:\d+/9-stream/BaseOS/x86_64/os/", conf)
    assert re.search(r"baseurl=http://127\.0\.0\.1:\d+/9-stream/AppStream/x86_64/os/", conf)
    base = entry / "rootfs"
    # EL9 keeps its rpm database in /var/lib/rpm (not the builder's $HOME/.rpmdb), with our key imported
    q = run("rpm", "--root", base, "--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n").stdout.split()
    assert {"chrony", "glibc", "python3", "iptables-nft", "libseccomp", "busybox", "gpg-pubkey"} <= set(q)
    assert not (base / "root/.rpmdb").exists()
    assert (base / "var/lib/chrony/post-ran").read_text().startswith("post ran"), "the %post scriptlet ran in the root"


def test_dnf_minimal_rootfs_finalized_with_rpm_family(centos_build):
    root = rootfs_of(centos_build, "centos")
    manifest = (root / "var/lib/osbuilder/packages.txt").read_text()
    kept = sorted(line.split("\t")[0] for line in manifest.splitlines())
    assert kept == ["filesystem", "glibc", "iptables-nft", "libseccomp", "setup"]
    assert not (root / "usr/bin/python3.11").exists() and not list(root.glob("usr/lib/python3*"))
    assert not (root / "usr/bin/busybox").exists() and not (root / "usr/bin/sh").exists()
    assert not (root / "var/lib/rpm").exists() and not (root / "etc/chrony.conf").exists()
    assert (root / "usr/sbin/iptables").exists() and (root / "usr/bin/kata-agent").exists()
    meta = yaml.safe_load((root / "var/lib/osbuilder/osbuilder.yaml").read_text())
    assert meta["base-distro"]["name"] == "Centos" and meta["base-distro"]["version"] == "9"


@pytest.mark.boot
def test_dnf_initrd_boots_to_agent(centos_build, kernel):
    result = vm.boot(kernel, initrd=centos_build / "out/kata-containers-initrd.img", append="kata_ref_agent.poweroff", timeout=180)
    assert result.ready, result.console[-2000:]
    assert result.ready.group(1) == "1"


def test_dnf_full_profile_erases_build_packages(centos_build, signed_repo, ref_agent):
    r = playbook("rootfs", centos_build, ref_agent, signed_repo, "-e", "distro=centos", "-e", "rootfs_profile=full")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    root = rootfs_of(centos_build, "centos")
    q = run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\n").stdout.split()
    assert "python3" not in q and {"chrony", "busybox", "glibc"} <= set(q), q
    assert not (root / "usr/bin/python3.11").exists()
    assert "python3" not in (root / "var/lib/osbuilder/packages.txt").read_text()


def test_dnf_refuses_a_package_signed_by_another_key(signed_repo, ref_agent, tmp_path):
    other = tmp_path / "gnupg"
    other.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(other)]
    try:
        run(*gpg, "--passphrase", "", "--quick-gen-key", "not trusted <x@example.invalid>", "rsa2048", "sign", "never")
        run(*gpg, "--armor", "--export", "--output", tmp_path / "other.key")
    finally:
        subprocess.run(["gpgconf", "--homedir", str(other), "--kill", "all"], capture_output=True)
    r = playbook("rootfs", tmp_path, ref_agent, {**signed_repo, "key_url": str(tmp_path / "other.key")}, "-e", "distro=centos")
    assert r.returncode != 0
    assert re.search(r"(?i)gpg|signature|public key|not signed", r.stdout), r.stdout[-2000:]


def test_zypper_bootstrap_and_pipeline(signed_repo, ref_agent, tmp_path):
    r = playbook("rootfs", tmp_path, ref_agent, signed_repo, "-e", "distro=opensuse", "-e", "os_version=tumbleweed")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    entry = next((tmp_path / "cache/bootstrap").glob("opensuse-tumbleweed-x86_64-*[0-9a-f]"))
    repo = (entry / "bootstrap/repos.d/repo-oss.repo").read_text()
    assert re.search(r"baseurl=http://127\.0\.0\.1:\d+/tumbleweed/repo/oss/", repo)
    assert "gpgcheck=1" in repo and "repo_gpgcheck=1" in repo and "pkg_gpgcheck=1" in repo
    q = run("rpm", "--root", entry / "rootfs", "--dbpath", "/usr/lib/sysimage/rpm", "-qa", "--qf", "%{NAME}\n").stdout.split()
    assert {"chrony", "python3", "libseccomp", "iptables-nft"} <= set(q)
    root = rootfs_of(tmp_path, "opensuse")
    kept = sorted(line.split("\t")[0] for line in (root / "var/lib/osbuilder/packages.txt").read_text().splitlines())
    assert kept == ["filesystem", "glibc", "iptables-nft", "libseccomp", "setup"]
    assert not (root / "usr/lib/sysimage/rpm").exists() and not (root / "usr/bin/python3.11").exists()
