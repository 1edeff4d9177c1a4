#!/usr/bin/python
# Copyright: kata.osbuilder contributors
# Apache License 2.0
from __future__ import annotations

DOCUMENTATION = r"""
module: elf_info
short_description: Tell which architecture an ELF binary is for, and check it against a target
description:
  - Reads the ELF header of O(path) and returns its architecture (in C(uname -m) terms), word size,
    byte order and whether it is statically linked.
  - With O(expect_arch), fails with one line when the binary is for another architecture; the
    agent role uses it so an x86_64 agent never lands in an aarch64 guest.
version_added: 0.1.0
author: kata.osbuilder contributors
options:
  path:
    description: The file to read.
    type: path
    required: true
  expect_arch:
    description: Fail unless the binary is for this architecture.
    type: str
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Check the agent is built for the guest
  kata.osbuilder.elf_info:
    path: /tmp/kata-agent
    expect_arch: aarch64
"""

RETURN = r"""
arch:
  description: Architecture, as C(uname -m) names it.
  returned: success
  type: str
  sample: x86_64
bits:
  description: 32 or 64.
  returned: success
  type: int
endian:
  description: little or big.
  returned: success
  type: str
static:
  description: True when the file has no program interpreter.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kata.osbuilder.plugins.module_utils.elf import NotElf, elf_info


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True), expect_arch=dict(type="str")),
        supports_check_mode=True,
    )
    path, expect = module.params["path"], module.params["expect_arch"]
    try:
        info = elf_info(path)
    except (OSError, NotElf) as e:
        module.fail_json(msg=f"{path}: {getattr(e, 'strerror', None) or e}")
    if expect and info["arch"] != expect:
        module.fail_json(msg=f"{path} is built for {info['arch']}, the guest is {expect}", **info)
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
