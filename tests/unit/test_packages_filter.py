"""The finalize role's package filters: rpm and apk databases as graphs, closures, autoremove."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kata.osbuilder.plugins.filter import packages as pk

RPM_DUMP = "\n".join([
    "filesystem\tN\t3.18-8.el9\tx86_64",
    "filesystem\tF\t/usr",
    "filesystem\tF\t/usr/bin",
    "glibc\tN\t2.34-100.el9\tx86_64",
    "glibc\tR\tfilesystem",
    "glibc\tR\trpmlib(CompressedFileNames)",
    "glibc\tP\tlibc.so.6()(64bit)",
    "glibc\tF\t/usr/lib64/libc.so.6",
    "bash\tN\t5.1.8-9.el9\tx86_64",
    "bash\tR\tlibc.so.6()(64bit)",
    "bash\tF\t/usr/bin/bash",
    "python3\tN\t3.9.18-3.el9\tx86_64",
    "python3\tR\t/usr/bin/bash",
    "python3\tR\tpython3-libs(x86-64)",
    "python3-libs\tN\t3.9.18-3.el9\tx86_64",
    "python3-libs\tP\tpython3-libs(x86-64)",
    "python3-libs\tR\t(glibc if filesystem)",
    "python3-libs\tF\t/usr/lib64/python3.9/os.py",
    "iptables-nft\tN\t1.8.10-2.el9\tx86_64",
    "iptables-nft\tP\tiptables",
    "iptables-nft\tR\tlibc.so.6()(64bit)",
    "iptables-nft\tR\tlibnftnl >= 1.2",
    "libnftnl\tN\t1.2.6-4.el9\tx86_64",
    "libnftnl\tR\tglibc",
    "",
])

APK_DB = """C:Q1abc=
P:musl
V:1.2.5-r0
A:x86_64
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
R:libc.musl-x86_64.so.1

P:busybox
V:1.36.1-r29
A:x86_64
D:so:libc.musl-x86_64.so.1
p:/bin/sh cmd:sh=1.36.1-r29
F:bin
R:busybox
R:sh

P:python3
V:3.12.3-r1
A:x86_64
D:/bin/sh so:libc.musl-x86_64.so.1 libffi>=3.4 !py3-old
F:usr/bin
R:python3
F:usr/lib/python3.12
R:os.py

P:libffi
V:3.4.6-r0
A:x86_64
D:so:libc.musl-x86_64.so.1

P:iptables
V:1.8.10-r3
A:x86_64
D:so:libc.musl-x86_64.so.1 libnftnl~1.2
F:sbin
R:iptables

P:libnftnl
V:1.2.6-r0
A:x86_64
D:musl
"""


def test_rpm_graph_parses_every_kind():
    g = pk.rpm_graph(RPM_DUMP)
    assert sorted(g) == ["bash", "filesystem", "glibc", "iptables-nft", "libnftnl", "python3", "python3-libs"]
    assert g["glibc"] == {"version": "2.34-100.el9", "arch": "x86_64", "requires": ["filesystem", "rpmlib(CompressedFileNames)"],
                          "provides": ["libc.so.6()(64bit)"], "files": ["/usr/lib64/libc.so.6"]}


def test_rpm_closure_resolves_names_provides_files_and_rich_deps():
    g = pk.rpm_graph(RPM_DUMP)
    # 'iptables' is a capability, not a package name: its provider is the root
    assert pk.pkg_closure(g, ["iptables"]) == ["filesystem", "glibc", "iptables-nft", "libnftnl"]
    # /usr/bin/bash is a file requirement; (glibc if filesystem) names both
    assert pk.pkg_closure(g, ["python3"]) == ["bash", "filesystem", "glibc", "python3", "python3-libs"]
    assert pk.pkg_closure(g, ["not-installed"]) == []


def test_rpm_autoremove_keeps_what_others_need():
    g = pk.rpm_graph(RPM_DUMP)
    # bash is only there for python3; glibc and filesystem are needed by iptables too
    assert pk.pkg_autoremove(g, ["python3"]) == ["bash", "python3", "python3-libs"]
    assert pk.pkg_autoremove(g, []) == []


def test_apk_graph_and_closure():
    g = pk.apk_graph(APK_DB)
    assert g["python3"]["requires"] == ["/bin/sh", "so:libc.musl-x86_64.so.1", "libffi>=3.4"]
    assert g["python3"]["files"] == ["/usr/bin", "/usr/bin/python3", "/usr/lib/python3.12", "/usr/lib/python3.12/os.py"]
    assert g["musl"]["files"] == ["/lib", "/lib/ld-musl-x86_64.so.1", "/lib/libc.musl-x86_64.so.1"]
    assert pk.pkg_closure(g, ["iptables"]) == ["iptables", "libnftnl", "musl"]
    assert pk.pkg_closure(g, ["python3"]) == ["busybox", "libffi", "musl", "python3"]
    assert pk.pkg_autoremove(g, ["python3"]) == ["busybox", "libffi", "python3"]


def test_files_and_manifest():
    g = pk.apk_graph(APK_DB)
    assert pk.pkg_files(g, ["busybox", "nope"]) == ["/bin", "/bin/busybox", "/bin/sh"]
    assert pk.pkg_manifest(g, ["musl", "iptables", "nope"]) == "iptables\t1.8.10-r3\tx86_64\nmusl\t1.2.5-r0\tx86_64\n"


def test_closure_needs_a_graph():
    with pytest.raises(AnsibleFilterError):
        pk.pkg_closure("not a graph", ["x"])
