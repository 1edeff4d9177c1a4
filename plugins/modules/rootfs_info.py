#!/usr/bin/python
# Copyright: kata.osbuilder contributors
# Apache License 2.0
from __future__ import annotations

DOCUMENTATION = r"""
module: rootfs_info
short_description: Tell what a guest rootfs boots into, resolving links as the guest would
description:
  - Reads a rootfs directory on the builder and reports what C(/sbin/init) is, whether it is
    systemd, where systemd is, and the tree's size.
  - Links are resolved inside the rootfs, so an absolute link such as C(/sbin/init -> /usr/bin/kata-agent)
    is judged by the guest's file, not the builder's.
version_added: 0.1.0
author: kata.osbuilder contributors
options:
  root:
    description: The rootfs directory.
    type: path
    required: true
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Read the rootfs
  kata.osbuilder.rootfs_info:
    root: /var/lib/kata-osbuilder/work/debian-x86_64-agent/rootfs
  register: info
"""

RETURN = r"""
init:
  description: Where /sbin/init leads inside the rootfs.
  returned: success
  type: str
  sample: /usr/bin/kata-agent
init_exists:
  description: That path is an executable file.
  returned: success
  type: bool
init_is_systemd:
  description: /sbin/init is systemd.
  returned: success
  type: bool
systemd:
  description: Path of the systemd binary inside the rootfs, empty when there is none.
  returned: success
  type: str
size_bytes:
  description: Apparent size of the tree.
  returned: success
  type: int
entries:
  description: Entries in the tree.
  returned: success
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kata.osbuilder.plugins.module_utils import rootfs


def main():
    module = AnsibleModule(argument_spec=dict(root=dict(type="path", required=True)), supports_check_mode=True)
    root = module.params["root"]
    if not os.path.isdir(root):
        module.fail_json(msg=f"rootfs {root} is not a directory")
    try:
        info = rootfs.init_info(root)
        size, entries = rootfs.tree_size(root)
    except (OSError, rootfs.RootfsError) as e:
        module.fail_json(msg=f"reading {root}: {e}")
    module.exit_json(changed=False, size_bytes=size, entries=entries, **info)


if __name__ == "__main__":
    main()
