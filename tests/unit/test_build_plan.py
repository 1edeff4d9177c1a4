"""kata.osbuilder.build_plan: which builder builds which architecture."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kata.osbuilder.plugins.filter.build_plan import build_plan

REPO = Path(__file__).resolve().parents[2]
GROUPS = {"all": ["localhost", "x1", "a1", "a2"], "local": ["localhost"], "builders_x86_64": ["x1"],
          "builders_aarch64": ["a1", "a2"]}


def test_one_arch_is_built_by_the_first_native_builder_under_its_own_name():
    assert build_plan("aarch64", GROUPS) == [
        {"name": "a1", "builder": "a1", "arch": "aarch64", "native": True, "subdir": ""}]


def test_no_arch_is_the_local_builder():
    assert build_plan("", GROUPS) == [{"name": "localhost", "builder": "localhost", "arch": "", "native": False, "subdir": ""}]
    assert build_plan("", {})[0]["builder"] == "localhost"


def test_several_archs_get_one_host_and_one_output_dir_each():
    plan = build_plan("x86_64, arm64,s390x", GROUPS)
    assert [(p["name"], p["builder"], p["native"], p["subdir"]) for p in plan] == [
        ("x1-x86_64", "x1", True, "x86_64"), ("a1-aarch64", "a1", True, "aarch64"),
        ("localhost-s390x", "localhost", False, "s390x")]


def test_use_qemu_user_true_sends_everything_to_the_local_builder():
    plan = build_plan(["x86_64", "aarch64"], GROUPS, use_qemu_user="yes")
    assert {p["builder"] for p in plan} == {"localhost"}
    assert [p["name"] for p in plan] == ["localhost-x86_64", "localhost-aarch64"]


def test_kata_builder_host_builds_everything():
    assert build_plan("aarch64", GROUPS, builder_host="x1")[0]["builder"] == "x1"


@pytest.mark.parametrize("bad", ["maybe", "2"])
def test_bad_use_qemu_user_is_one_line(bad):
    with pytest.raises(AnsibleFilterError, match="use_qemu_user must be auto, true or false"):
        build_plan("aarch64", GROUPS, use_qemu_user=bad)


def test_the_same_arch_twice_is_built_once():
    assert [p["arch"] for p in build_plan("aarch64,arm64,aarch64", GROUPS)] == ["aarch64"]


def test_example_inventory_has_a_group_per_architecture():
    out = subprocess.run(["ansible-inventory", "-i", str(REPO / "inventories/example"), "--graph"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for group in ("local", "builders_x86_64", "builders_aarch64", "builders_ppc64le", "builders_s390x"):
        assert f"@{group}:" in out
