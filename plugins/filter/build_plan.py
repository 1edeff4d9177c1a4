# Copyright: kata.osbuilder contributors
# Apache License 2.0
"""Filter: which builder builds which architecture (playbooks/builders.yml)."""
from __future__ import annotations

DOCUMENTATION = r"""
name: build_plan
short_description: Pick a builder for each architecture asked for
description:
  - Returns one entry per architecture in the input (a list, or a comma-separated string; empty means the
    local builder's own architecture), each naming the inventory host that builds it.
  - A host of the group C(builders_<arch>) builds its own architecture natively. Without one, the local
    builder (first host of the group C(local), else C(localhost)) builds it, through qemu-user when the
    architecture is foreign, unless O(use_qemu_user) is false. O(use_qemu_user=true) sends every
    architecture to the local builder. O(builder_host) (C(kata_builder_host)) names the builder outright.
  - Fails with one line when an architecture has no builder.
options:
  _input:
    description: The architectures (C(arch)).
    type: raw
    required: true
  groups:
    description: The inventory's C(groups).
    type: dict
    required: true
  use_qemu_user:
    description: C(auto), true or false.
    type: raw
    default: auto
  builder_host:
    description: An inventory host that builds every architecture asked for.
    type: str
    default: ""
"""

RETURN = r"""
_value:
  description: A list of dicts with C(name) (the build's inventory host, the builder itself for one
    architecture, C(<builder>-<arch>) for several), C(builder), C(arch) (empty for the
    builder's own), C(native) (the builder comes from C(builders_<arch>)) and C(subdir) (output subdirectory,
    empty for a single architecture).
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "ppc64el": "ppc64le"}


def _archs(value) -> list[str]:
    if value is None:
        return [""]
    items = value.split(",") if isinstance(value, str) else list(value)
    archs = []
    for a in (str(i).strip() for i in items):
        a = ALIASES.get(a, a)
        if a not in archs:
            archs.append(a)
    return [a for a in archs if a] or [""]


def _bool_or_auto(value):
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("", "auto"):
        return "auto"
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise AnsibleFilterError(f"use_qemu_user must be auto, true or false, not {value!r}")


def build_plan(arch, groups, use_qemu_user="auto", builder_host=""):
    qemu = _bool_or_auto(use_qemu_user)
    archs = _archs(arch)
    local = (groups.get("local") or ["localhost"])[0]
    plan = []
    for a in archs:
        native = [h for h in groups.get(f"builders_{a}", [])] if a else []
        if builder_host:
            builder, is_native = builder_host, False
        elif native and qemu is not True:
            builder, is_native = native[0], True
        else:
            # the local builder: native when it is of that architecture, else qemu-user (builders.yml
            # checks which, and stops when qemu-user is off)
            builder, is_native = local, False
        plan.append({"name": f"{builder}-{a}" if len(archs) > 1 else builder, "builder": builder, "arch": a,
                     "native": is_native, "subdir": a if len(archs) > 1 else ""})
    names = [p["name"] for p in plan]
    if len(set(names)) != len(names):
        raise AnsibleFilterError(f"Ask for each architecture once, not {arch!r}")
    return plan


class FilterModule:
    def filters(self):
        return {"build_plan": build_plan}
