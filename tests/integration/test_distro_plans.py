"""Every distro's bootstrap, as the role would run it: exact command lines, downloads, repository
and key configuration (bootstrap_dry_run writes the plan instead of running it; no network).

One playbook run covers all distros (one inventory host each, in parallel). Preflight's refusals
(Clear Linux, unknown distro or release) and Alpine's own are checked through the real playbook.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DISTROS = ["ubuntu", "centos", "fedora", "openeuler", "opensuse", "alpine"]
SHA = "ab" * 32

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: kata.osbuilder.bootstrap
      vars:
        bootstrap_distro: "{{ inventory_hostname }}"
        bootstrap_arch: "{{ plan_arch }}"
        bootstrap_init: agent
        bootstrap_rootfs_dir: "%(tmp)s/work/{{ inventory_hostname }}/rootfs"
        bootstrap_cache_dir: "%(tmp)s/cache"
"""


def run_plans(tmp: Path, arch: str = "x86_64", hosts=DISTROS, extra=()):
    (tmp / "play.yml").write_text(PLAY % {"tmp": tmp})
    r = subprocess.run(["ansible-playbook", "-i", ",".join(hosts) + ",", "-c", "local", "-f", "6",
                        "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", "bootstrap_dry_run=true",
                        "-e", f"plan_arch={arch}", "-e", json.dumps({"bootstrap_apk_static_sha256": {f"3.22/{arch}": SHA}}),
                        *extra, str(tmp / "play.yml")], cwd=REPO, capture_output=True, text=True, timeout=600)
    return r


def load(tmp: Path, distro: str):
    entry = next(p for p in (tmp / "cache/bootstrap").glob(f"{distro}-*") if not p.name.endswith(".partial"))
    plan = json.loads((entry / "bootstrap/plan.json").read_text())
    conf = str(entry) + ".partial/bootstrap"
    root = str(entry) + ".partial/rootfs"

    def norm(s: str) -> str:
        s = s.replace(conf, "<conf>").replace(root, "<root>")
        return re.sub(r"/tmp/kata-gnupg\.[^/\s]+", "<gnupg>", s)
    cmds = [" ".join(norm(a) for a in c["argv"]) + "".join(f" [{k}={norm(v)}]" for k, v in sorted(c.get("env", {}).items()))
            for c in plan["commands"]]
    downloads = [(d["url"], norm(d["dest"]), d.get("checksum", "")) for d in plan["downloads"]]
    return entry, cmds, downloads


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plans")
    r = run_plans(tmp)
    assert r.returncode == 0, r.stdout[-4000:]
    return tmp


def test_ubuntu(plans):
    entry, cmds, downloads = load(plans, "ubuntu")
    fpr = "F6ECB3762474EDA9D21B7022871920D1991BC93C"
    gpg = "gpg --batch --quiet --no-autostart --homedir <gnupg>"
    if Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg").exists():
        src = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        assert downloads == []
    else:
        src = "<conf>/keys.asc"
        assert downloads == [(f"https://keyserver.ubuntu.com/pks/lookup?op=get&options=mr&search=0x{fpr}", src, "")]
    assert cmds[:3] == [f"{gpg} --import {src}", f"{gpg} --list-keys {fpr}", f"{gpg} --output <conf>/ubuntu-keyring.gpg --export {fpr}"]
    assert cmds[3] == (
        "mmdebstrap --quiet --mode=root --variant=minbase --architectures=amd64 --components=main "
        "--keyring=<conf>/ubuntu-keyring.gpg --include=apt,ca-certificates,chrony,cryptsetup-bin,e2fsprogs,iptables,libseccomp2,python3 "
        "--aptopt=APT::Install-Recommends \"false\" --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-exclude=/usr/share/man/* "
        "--dpkgopt=path-exclude=/usr/share/info/* --dpkgopt=path-exclude=/usr/share/locale/* --dpkgopt=path-exclude=/usr/share/lintian/* "
        "noble <root> http://archive.ubuntu.com/ubuntu")
    assert len(cmds) == 4


def _dnf(distro, release, packages):
    return (f"dnf --assumeyes --quiet --config=<conf>/dnf.conf --installroot=<root> --releasever={release} --forcearch=x86_64 "
            f"--noplugins --nodocs --setopt=install_weak_deps=False install {packages} [HOME=<conf>/home]")


@pytest.mark.parametrize("distro,release,repos,key,dbpath", [
    ("centos", "9", [("baseos", "https://mirror.stream.centos.org/9-stream/BaseOS/x86_64/os/"),
                     ("appstream", "https://mirror.stream.centos.org/9-stream/AppStream/x86_64/os/")],
     "https://www.centos.org/keys/RPM-GPG-KEY-CentOS-Official-SHA256", "/var/lib/rpm"),
    ("fedora", "42", [("fedora", "https://dl.fedoraproject.org/pub/fedora/linux/releases/42/Everything/x86_64/os/"),
                      ("updates", "https://dl.fedoraproject.org/pub/fedora/linux/updates/42/Everything/x86_64/")],
     "https://src.fedoraproject.org/rpms/fedora-repos/raw/rawhide/f/RPM-GPG-KEY-fedora-42-primary", "/usr/lib/sysimage/rpm"),
    ("openeuler", "24.03-LTS-SP1", [("OS", "https://repo.openeuler.org/openEuler-24.03-LTS-SP1/OS/x86_64/"),
                                    ("everything", "https://repo.openeuler.org/openEuler-24.03-LTS-SP1/everything/x86_64/"),
                                    ("update", "https://repo.openeuler.org/openEuler-24.03-LTS-SP1/update/x86_64/")],
     "https://repo.openeuler.org/openEuler-24.03-LTS-SP1/OS/x86_64/RPM-GPG-KEY-openEuler", "/var/lib/rpm"),
])
def test_dnf_distros(plans, distro, release, repos, key, dbpath):
    entry, cmds, downloads = load(plans, distro)
    keyfile = "<conf>/keys/00-" + key.rsplit("/", 1)[1]
    assert downloads == [(key, keyfile, "")]
    assert cmds == [_dnf(distro, release, "chrony iptables libseccomp python3")]
    conf = (entry / "bootstrap/dnf.conf").read_text().replace(str(entry) + ".partial/bootstrap", "<conf>")
    main, *sections = conf.split("\n\n")
    assert main.splitlines() == ["[main]", "gpgcheck=1", "localpkg_gpgcheck=1", "install_weak_deps=False", "keepcache=False",
                                 "tsflags=nodocs", "skip_if_unavailable=False", "reposdir=/nonexistent/kata-osbuilder"]
    assert [s.strip().splitlines() for s in sections] == [
        [f"[{rid}]", f"name={rid}", f"baseurl={url}", "enabled=1", "gpgcheck=1", "repo_gpgcheck=0", f"gpgkey=file://{keyfile}"]
        for rid, url in repos]
    assert (entry / "bootstrap/home/.rpmmacros").read_text() == f"%_dbpath {dbpath}\n"


def test_opensuse(plans):
    entry, cmds, downloads = load(plans, "opensuse")
    key = "https://download.opensuse.org/distribution/leap/15.6/repo/oss/repodata/repomd.xml.key"
    assert downloads == [(key, "<conf>/keys/00-repomd.xml.key", "")]
    assert cmds == [
        "rpm --root <root> --initdb [HOME=<conf>/home]",
        "rpm --root <root> --import <conf>/keys/00-repomd.xml.key [HOME=<conf>/home]",
        "zypper --root <root> --non-interactive --reposd-dir <conf>/repos.d --cache-dir <conf>/cache install --no-recommends "
        "--auto-agree-with-licenses chrony iptables libseccomp2 python311 [HOME=<conf>/home] [ZYPP_CONF=<conf>/zypp.conf]"]
    repos = {p.name: p.read_text() for p in (entry / "bootstrap/repos.d").iterdir()}
    assert sorted(repos) == ["repo-oss.repo", "repo-update.repo"]
    assert repos["repo-oss.repo"].splitlines() == [
        "[repo-oss]", "name=repo-oss", "baseurl=https://download.opensuse.org/distribution/leap/15.6/repo/oss/", "enabled=1",
        "autorefresh=0", "type=rpm-md", "gpgcheck=1", "repo_gpgcheck=1", "pkg_gpgcheck=1"]
    assert "baseurl=https://download.opensuse.org/update/leap/15.6/oss/" in repos["repo-update.repo"]
    assert "arch = x86_64" in (entry / "bootstrap/zypp.conf").read_text()
    assert (entry / "bootstrap/home/.rpmmacros").read_text() == "%_dbpath /usr/lib/sysimage/rpm\n"


def test_alpine(plans):
    entry, cmds, downloads = load(plans, "alpine")
    keys = ["4a6a0840", "5261cecb", "6165ee59"]
    assert downloads == [
        ("https://dl-cdn.alpinelinux.org/alpine/v3.22/main/x86_64/apk-tools-static-2.14.9-r2.apk", "<conf>/apk-tools-static.apk", f"sha256:{SHA}")
    ] + [(f"https://alpinelinux.org/keys/alpine-devel@lists.alpinelinux.org-{k}.rsa.pub",
          f"<conf>/keys/{i:02d}-alpine-devel@lists.alpinelinux.org-{k}.rsa.pub", "") for i, k in enumerate(keys)]
    assert cmds == [
        "tar --warning=no-unknown-keyword -xzf <conf>/apk-tools-static.apk -C <conf> sbin/apk.static",
        "<conf>/sbin/apk.static --arch x86_64 --root <root> --keys-dir <conf>/keys --repositories-file <root>/etc/apk/repositories "
        "--update-cache --initdb --no-progress --no-cache add alpine-base bash ip6tables iptables libseccomp python3"]
    assert not any("allow-untrusted" in c for c in cmds)
    assert (entry / "rootfs/etc/apk/repositories").read_text() == (
        "https://dl-cdn.alpinelinux.org/alpine/v3.22/main\nhttps://dl-cdn.alpinelinux.org/alpine/v3.22/community\n")


def test_other_architecture_and_mirror(tmp_path):
    r = run_plans(tmp_path, "aarch64", ["ubuntu", "fedora", "alpine"], ["-e", "bootstrap_mirror=http://mirror.example.test/x/"])
    assert r.returncode == 0, r.stdout[-3000:]
    assert load(tmp_path, "ubuntu")[1][3].endswith("noble <root> http://mirror.example.test/x")
    assert "--architectures=arm64" in load(tmp_path, "ubuntu")[1][3]
    assert "--forcearch=aarch64" in load(tmp_path, "fedora")[1][0]
    entry = load(tmp_path, "fedora")[0]
    assert "baseurl=http://mirror.example.test/x/releases/42/Everything/aarch64/os/" in (entry / "bootstrap/dnf.conf").read_text()
    assert load(tmp_path, "alpine")[2][0][0] == "http://mirror.example.test/x/v3.22/main/aarch64/apk-tools-static-2.14.9-r2.apk"
    assert "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub" in load(tmp_path, "alpine")[2][-1][0]


def _rootfs_play(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ansible-playbook", "playbooks/rootfs.yml", "-e", "agent_source_bin=/bin/true", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["-e", "distro=clearlinux"], "Clear Linux was discontinued upstream"),
    (["-e", "distro=gentoo"], "Unknown distro 'gentoo'; known: alpine, centos, clearlinux, debian, fedora, openeuler, opensuse, ubuntu"),
    (["-e", "distro=ubuntu", "-e", "os_version=bionic"], "Release 'bionic' of ubuntu is not known; known: jammy, noble"),
    (["-e", "distro=openeuler", "-e", "arch=s390x"], "Architecture 's390x' is not supported for openeuler; supported: x86_64, aarch64"),
])
def test_preflight_refusals(args, message):
    r = _rootfs_play(*args)
    assert r.returncode != 0
    assert message in r.stdout, r.stdout[-2000:]


def test_alpine_refusals(tmp_path):
    r = run_plans(tmp_path, hosts=["alpine"], extra=["-e", '{"bootstrap_apk_static_sha256": {}}'])
    assert r.returncode != 0 and "Set bootstrap_apk_static_sha256" in r.stdout
    (tmp_path / "play.yml").write_text((tmp_path / "play.yml").read_text().replace("bootstrap_init: agent", "bootstrap_init: systemd"))
    r = subprocess.run(["ansible-playbook", "-i", "alpine,", "-c", "local", "-e", "ansible_python_interpreter=/usr/bin/python3",
                        "-e", "bootstrap_dry_run=true", "-e", "plan_arch=x86_64", str(tmp_path / "play.yml")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Alpine has no systemd: build it with the agent as init (AGENT_INIT=yes)" in r.stdout


def test_list_distros():
    out = subprocess.run(["python3", "tools/list-distros.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert re.search(r"^clearlinux\s+not buildable: Clear Linux was discontinued upstream", out, re.M)
    for d in DISTROS + ["debian"]:
        assert re.search(rf"^{d}\s+", out, re.M), out
    assert re.search(r"^ubuntu\s+default noble", out, re.M)
